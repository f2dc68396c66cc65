"""The /log/ tree over HTTP (C2SP tlog-tiles), read with httpx: the checkpoint, tiles,
entry bundles, their headers, and every malformed path answered 400 or 404, never 500."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ledger import Database, Ledger
from ledger.database import data_dir
from ledger.signing import Signer
from ledger.tlog.checkpoint import open_checkpoint
from ledger.tlog.note import verifier_from_key
from ledger.tlog.tiles import decode_bundle
from projections.sealer import Sealer
from tests.api_server import ApiServer, running_api
from tests.test_integrity import sql_conn, write_some


@pytest.fixture
def log(
    ledger: Ledger, database: Database, schema: str, data_dir: Path
) -> Iterator[tuple[ApiServer, str, int]]:
    """A server whose log holds 300 events or more, sealed; its base URL and size."""
    world = write_some(ledger, 25)
    while ledger.head() < 300:
        write_some(ledger, 5, world)
    sealer = Sealer(ledger, database, schema)
    sealer.setup()
    size = sealer.sign_now()
    sealer.close()
    with running_api(ledger, database, schema) as api:
        yield api, api.url.removesuffix("/graphql") + "/log/", size


def test_the_checkpoint_is_signed_uncached_and_carries_cosignatures(
    log: tuple[ApiServer, str, int], database: Database, schema: str
) -> None:
    _api, base, size = log
    got = httpx.get(base + "checkpoint")
    assert got.status_code == 200
    assert got.headers["content-type"] == "text/plain; charset=utf-8"
    assert got.headers["cache-control"] == "no-cache"
    checkpoint, _ = open_checkpoint(got.text, [verifier_from_key(checkpoint_vkey())])
    assert checkpoint.size >= size
    line = "— witness.example AAAAAQ" + "A" * 90 + "=="
    with sql_conn(database, schema) as conn:
        conn.execute(
            "INSERT INTO cosignatures (tree_size, witness, line) VALUES (%s, %s, %s)",
            (checkpoint.size, "witness.example", line),
        )
    again = httpx.get(base + "checkpoint").text
    assert again == got.text + line + "\n"
    assert httpx.get(base + "checkpoints/index").text.split() == [str(checkpoint.size)]
    assert httpx.get(base + f"checkpoints/{checkpoint.size}").text == again


def checkpoint_vkey() -> str:
    return Signer.from_environment(data_dir()).checkpoint_signer().vkey


def test_tiles_are_exact_immutable_and_match_the_entries(
    log: tuple[ApiServer, str, int],
) -> None:
    api, base, size = log
    assert size >= 300
    full = httpx.get(base + "tile/0/000")
    assert full.status_code == 200 and len(full.content) == 256 * 32
    assert full.headers["content-type"] == "application/octet-stream"
    assert full.headers["cache-control"] == "public, max-age=31536000, immutable"
    etag = full.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    cached = httpx.get(base + "tile/0/000", headers={"If-None-Match": etag})
    assert cached.status_code == 304 and cached.content == b""
    width = size - 256
    partial = httpx.get(base + f"tile/0/001.p/{width}")
    assert partial.status_code == 200 and len(partial.content) == width * 32
    level1 = httpx.get(base + "tile/1/000.p/1")
    assert level1.status_code == 200 and len(level1.content) == 32

    auditor = api.token("auditor")
    bundle = httpx.get(base + "tile/entries/000", headers={"Authorization": f"Bearer {auditor}"})
    assert bundle.status_code == 200
    assert bundle.headers["content-encoding"] == "gzip"  # httpx asks for it, and inflates
    entries = decode_bundle(bundle.content)
    assert len(entries) == 256
    leaves = b"".join(hashlib.sha256(b"\x00" + e).digest() for e in entries)
    assert leaves == full.content
    assert entries[0].startswith(b"ledger-event-v1\n1\n")
    plain = httpx.get(base + "tile/entries/000", headers={
        "Authorization": f"Bearer {auditor}", "Accept-Encoding": "identity"})  # fmt: skip
    assert "content-encoding" not in plain.headers and decode_bundle(plain.content) == entries


def test_entries_are_for_auditors_and_regulators(log: tuple[ApiServer, str, int]) -> None:
    api, base, _ = log
    assert httpx.get(base + "tile/entries/000").status_code == 401
    provider = api.token("provider", provider=uuid.uuid4())
    for token, status in (("not-a-token", 401), (provider, 403), (api.token("regulator"), 200)):
        got = httpx.get(base + "tile/entries/000", headers={"Authorization": f"Bearer {token}"})
        assert got.status_code == status, got.text


MALFORMED = [
    "tile/00/000", "tile/0/0000", "tile/0/00", "tile/0/x000/000", "tile/0/000.p/0",
    "tile/0/000.p/256", "tile/0/000.p/007", "tile/0/001/000", "tile/0/x001", "tile/64/000",
    "tile/100/000", "tile/-1/000", "tile/0/000.p", "tile/0/000.p/", "tile/entries/0000",
    "tile/entries/000.p/0", "tile/entries/000.p/256", "tile/0/%00%00%00", "tile/0/%ED%A0%80",
    "tile/0/" + "x999/" * 10 + "999", "tile/data/000", "tile/", "tile", "tile/0/000/",
    "tile/0/" + "9" * 10_000, "checkpoints/00", "checkpoints/-1", "checkpoints/x",
    "checkpoints/99999999999999999999", "checkpoints/9223372036854775808",
]  # fmt: skip
BEYOND = [
    "tile/0/002", "tile/0/001", "tile/1/000", "tile/0/999", "tile/2/000.p/1",
    "tile/0/x999/x999/x999/x999/x999/x999/999", "tile/entries/001", "tile/63/000.p/1",
    "checkpoints/5", "checkpoints/9223372036854775807",
]  # fmt: skip


@pytest.mark.parametrize("bad", [False, True])
def test_malformed_and_unsigned_paths_get_400_or_404(
    log: tuple[ApiServer, str, int], bad: bool
) -> None:
    api, base, size = log
    auditor = {"Authorization": f"Bearer {api.token('auditor')}"}
    paths = MALFORMED if bad else [*BEYOND, f"tile/0/001.p/{size - 255}"]
    with httpx.Client(headers=auditor) as client:
        for path in paths:
            got = client.get(base + path)
            assert got.status_code in ((400, 404) if bad else (404,)), (path, got.status_code)
            assert got.headers["content-type"].startswith("text/plain"), path
            assert "Traceback" not in got.text


def test_base64_root_is_the_trees_root(log: tuple[ApiServer, str, int]) -> None:
    api, base, _size = log
    text = httpx.get(base + "checkpoint").text
    root = base64.b64decode(text.split("\n")[2])
    head = api.data("{ treeHead { treeSize rootHash } }", api.token("auditor"))["treeHead"]
    assert head["rootHash"] == root.hex()
