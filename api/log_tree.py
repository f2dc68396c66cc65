"""The log's C2SP tlog-tiles tree over HTTP, under /log/ (c2sp.org/tlog-tiles).

- ``/log/checkpoint``: the latest signed checkpoint with every cosignature held, no-cache.
- ``/log/tile/<L>/<N>[.p/<W>]``: exactly W x 32 bytes, immutable, with a strong ETag.
- ``/log/tile/entries/<N>[.p/<W>]``: entry bundles, for auditors' and regulators' tokens
  (an entry is a whole event; see docs/tamper-evidence.md).
- ``/log/keys``: the log's verifier key (``origin+hex8+base64``), one a line.
- ``/log/checkpoints/index`` (the sizes of every checkpoint signed, one a line) and
  ``/log/checkpoints/<size>``: every checkpoint ever signed, with its cosignatures, so an
  auditor checks each against the previous ones. Not in C2SP: the ledger's own addition.

Tiles and the checkpoint are public: they reveal hashes only. A malformed path answers
400, a tile beyond the latest checkpoint 404; neither ever carries a body of the wrong
length.

Full hash tiles never change, so each API process keeps the last `LEDGER_TILE_CACHE`
served (default 2,048, 16 MiB) and answers them without the database. It serves one only
while the latest checkpoint covers it: the checkpoint's size and root are read again at
most once a second, and a log whose latest checkpoint shrank or changed (a database
restored from an older backup, a rewritten log) empties the cache.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import time

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from api import auth
from api.graphql.compiler.cache import Lru
from api.state import ApiState
from ledger.actors import Role
from ledger.database import data_dir
from ledger.signing import Signer
from ledger.tlog.checkpoint import MAX_SIZE
from ledger.tlog.tiles import (
    ENTRIES,
    MAX_ENTRY_BYTES,
    Tile,
    TilePathError,
    encode_bundle,
    parse_tile_path,
)
from projections import tlog

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")
IMMUTABLE = "public, max-age=31536000, immutable"
OCTETS = "application/octet-stream"
READERS_OF_ENTRIES = frozenset({Role.AUDITOR, Role.REGULATOR})


class Latest:
    """The latest checkpoint's size, read at most once a second; on a checkpoint that
    shrank or changed, the tile cache is emptied."""

    LATEST = "SELECT tree_size, root_hash FROM checkpoints ORDER BY tree_size DESC LIMIT 1"

    def __init__(self, state: ApiState, cache: Lru[tuple[bytes, str]]) -> None:
        self.state, self.cache = state, cache
        self.head: tuple[int, bytes] = (0, b"")
        self.read_at = -1.0

    async def size(self) -> int:
        now = time.monotonic()
        if now - self.read_at >= 1.0:
            rows = await self.state.fetch(self.LATEST)
            head = (int(rows[0]["tree_size"]), bytes(rows[0]["root_hash"])) if rows else (0, b"")
            if head[0] < self.head[0] or (head[0] == self.head[0] and head != self.head):
                self.cache.entries.clear()
            self.head, self.read_at = head, now
        return self.head[0]


def routes(state: ApiState) -> list[BaseRoute]:
    vkeys = Signer.from_environment(data_dir()).checkpoint_signer().vkey + "\n"
    cache: Lru[tuple[bytes, str]] = Lru(int(os.environ.get("LEDGER_TILE_CACHE", "2048")))
    latest = Latest(state, cache)

    async def keys(request: Request) -> Response:
        return PlainTextResponse(vkeys, headers={"Cache-Control": "no-cache"})

    async def checkpoint(request: Request) -> Response:
        rows = await state.fetch(tlog.LATEST.format(where=""))
        if not rows:
            return _text(404, "no checkpoint is signed yet\n")
        body = tlog.with_cosignatures(rows[0]["note"], rows[0]["cosigned"])
        return PlainTextResponse(body, headers={"Cache-Control": "no-cache"})

    async def tile(request: Request) -> Response:
        try:
            found = parse_tile_path("tile/" + request.path_params["path"])
        except TilePathError as e:
            return _text(400, f"{e}\n")
        if found.leaves_needed() > MAX_SIZE:
            return _text(404, f"{found.path} is beyond any tree\n")
        if found.level == ENTRIES:
            return await entries(request, found)
        kept = cache.get(found) if found.full else None
        if kept is not None and found.leaves_needed() <= await latest.size():
            return _immutable(request, *kept)
        query, params = tlog.tile_query(found)
        rows = await state.fetch(query, params)
        body = tlog.tile_bytes(rows, found)
        if body is None:
            return _text(404, f"{found.path} is beyond the latest checkpoint\n")
        tagged = (body, _etag(body))
        if found.full:
            cache.put(found, tagged)
        return _immutable(request, *tagged)

    async def entries(request: Request, bundle: Tile) -> Response:
        principal = await state.principal(auth.bearer(request.headers.get("authorization")))
        if principal is None:
            return _text(401, "entry bundles need an auditor's or a regulator's token\n",
                         {"WWW-Authenticate": "Bearer"})  # fmt: skip
        if principal.role not in READERS_OF_ENTRIES:
            return _text(403, "entry bundles are for auditors and regulators\n")
        query, params = tlog.entries_query(state.ledger.store.events_table, bundle)
        rows = await state.fetch(query, params)
        found = tlog.entries_of(rows, bundle)
        if found is None:
            return _text(404, f"{bundle.path} is beyond the latest checkpoint\n")
        if any(len(e) > MAX_ENTRY_BYTES for e in found):
            return _text(
                501,
                f"{bundle.path} holds an event of more than {MAX_ENTRY_BYTES}"
                " bytes, recorded before the limit: no bundle can carry it\n",
            )
        body = encode_bundle(found)
        if "gzip" in request.headers.get("accept-encoding", ""):
            packed = gzip.compress(body, 6)
            return _immutable(request, packed, _etag(packed), {"Content-Encoding": "gzip"})
        return _immutable(request, body, _etag(body))

    async def checkpoints_index(request: Request) -> Response:
        rows = await state.fetch("SELECT tree_size FROM checkpoints ORDER BY tree_size")
        body = "".join(f"{r['tree_size']}\n" for r in rows)
        return PlainTextResponse(body, headers={"Cache-Control": "no-cache"})

    async def checkpoint_of_size(request: Request) -> Response:
        text = request.path_params["size"]
        if not _DECIMAL.fullmatch(text) or int(text) >= 1 << 63:
            return _text(400, "a checkpoint's size is a decimal with no leading zeros\n")
        where = "WHERE c.tree_size = %s"
        rows = await state.fetch(tlog.LATEST.format(where=where), (int(text),))
        if not rows:
            return _text(404, f"no checkpoint of size {text}\n")
        body = tlog.with_cosignatures(rows[0]["note"], rows[0]["cosigned"])
        # Cosignatures may still arrive: revalidate.
        return PlainTextResponse(body, headers={"Cache-Control": "no-cache"})

    return [
        Route("/log/checkpoint", checkpoint),
        Route("/log/keys", keys),
        Route("/log/checkpoints/index", checkpoints_index),
        Route("/log/checkpoints/{size}", checkpoint_of_size),
        Route("/log/tile/{path:path}", tile),
        Route("/log/{rest:path}", nothing),  # and no redirect to an added slash
    ]


async def nothing(request: Request) -> Response:
    return _text(404, "no such resource in the log\n")


def _etag(body: bytes) -> str:
    """A strong validator: the body's digest."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _immutable(
    request: Request, body: bytes, etag: str, headers: dict[str, str] | None = None
) -> Response:
    common = {"ETag": etag, "Cache-Control": IMMUTABLE, **(headers or {})}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=common)
    return Response(body, media_type=OCTETS, headers=common)


def _text(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return PlainTextResponse(message, status_code=status, headers=headers)
