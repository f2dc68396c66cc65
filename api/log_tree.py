"""The log's C2SP tlog-tiles tree over HTTP, under /log/ (c2sp.org/tlog-tiles).

- ``/log/checkpoint``: the latest signed checkpoint with every cosignature held, no-cache.
- ``/log/tile/<L>/<N>[.p/<W>]``: exactly W x 32 bytes, immutable, with a strong ETag.
- ``/log/tile/entries/<N>[.p/<W>]``: entry bundles, for auditors' and regulators' tokens
  (an entry is a whole event; see docs/tamper-evidence.md).
- ``/log/checkpoints/index`` (the sizes of every checkpoint signed, one a line) and
  ``/log/checkpoints/<size>``: every checkpoint ever signed, with its cosignatures, so an
  auditor checks each against the previous ones. Not in C2SP: the ledger's own addition.

Tiles and the checkpoint are public: they reveal hashes only. A malformed path answers
400, a tile beyond the latest checkpoint 404; neither ever carries a body of the wrong
length.
"""

from __future__ import annotations

import gzip
import hashlib
import re

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from api import auth
from api.state import ApiState
from ledger.actors import Role
from ledger.tlog.checkpoint import MAX_SIZE
from ledger.tlog.tiles import ENTRIES, Tile, TilePathError, encode_bundle, parse_tile_path
from projections import tlog

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")
IMMUTABLE = "public, max-age=31536000, immutable"
OCTETS = "application/octet-stream"
READERS_OF_ENTRIES = frozenset({Role.AUDITOR, Role.REGULATOR})


def routes(state: ApiState) -> list[BaseRoute]:
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
        query, params = tlog.tile_query(found)
        rows = await state.fetch(query, params)
        body = tlog.tile_bytes(rows, found)
        if body is None:
            return _text(404, f"{found.path} is beyond the latest checkpoint\n")
        return _immutable(request, body)

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
        body = encode_bundle(found)
        if "gzip" in request.headers.get("accept-encoding", ""):
            return _immutable(request, gzip.compress(body, 6), {"Content-Encoding": "gzip"})
        return _immutable(request, body)

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
        Route("/log/checkpoints/index", checkpoints_index),
        Route("/log/checkpoints/{size}", checkpoint_of_size),
        Route("/log/tile/{path:path}", tile),
        Route("/log/{rest:path}", nothing),  # and no redirect to an added slash
    ]


async def nothing(request: Request) -> Response:
    return _text(404, "no such resource in the log\n")


def _immutable(request: Request, body: bytes, headers: dict[str, str] | None = None) -> Response:
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    common = {"ETag": etag, "Cache-Control": IMMUTABLE, **(headers or {})}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=common)
    return Response(body, media_type=OCTETS, headers=common)


def _text(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return PlainTextResponse(message, status_code=status, headers=headers)
