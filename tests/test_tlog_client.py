"""An independent client (tests/tlog_client.py, written from the specifications, sharing
no code with the server) walks the /log/ tree of a log of more than 100,000 events: it
verifies the checkpoint, every entry against its tile, 1,000 inclusion proofs (first,
last and powers-of-two edges among them) and the consistency of every stored checkpoint
with the next, and finds GraphQL's proofs equal to its own, hash for hash."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from api.app import create_app
from ledger import Database, Ledger
from projections.sealer import Sealer
from tests.api_server import free_port
from tests.test_integrity import run_ledger, sql_conn, write_some
from tests.tlog_client import (
    Source,
    Tiles,
    entries,
    leaf_hash,
    open_checkpoint,
    parse_vkey,
    verify_consistency,
    verify_inclusion,
)

SIZES = (65_536, 70_000, 100_000 + 257)  # checkpoints beside the first, small one

GRAPHQL_PROOFS = """query ($p: Position!, $s: Position!, $from: Position!) {
  inclusionProof(position: $p, treeSize: $s) { index proof }
  consistencyProof(fromSize: $from, toSize: $s) { proof } }"""


def grow_to(database: Database, schema: str, size: int) -> None:
    """Copies of the log's first events, under new aggregate ids, up to `size` events:
    the bulk path to a large log (the tree does not read what an event says)."""
    with sql_conn(database, schema) as conn:
        conn.execute(
            "INSERT INTO ledger_events (originator_id, originator_version, topic, state)"
            " SELECT md5(e.originator_id::text || '/' || %(n)s || '/' || g)::uuid,"
            " e.originator_version, e.topic, e.state FROM generate_series(1, %(n)s) g,"
            " (SELECT * FROM ledger_events WHERE notification_id <= 50) e"
            " ORDER BY g, e.notification_id"
            " LIMIT %(n)s - (SELECT max(notification_id) FROM ledger_events)",
            {"n": size},
        )


@contextmanager
def serving(database: Database, ledger: Ledger, schema: str) -> Iterator[str]:
    """The API (without followers: the log is sealed already) on a free port; its URL."""
    port = free_port()
    app = create_app(database, ledger, schema)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)
    assert not thread.is_alive()


def edges(size: int, count: int, seed: int = 23) -> list[int]:
    """The first and last leaves, both sides of every power of two, then random ones."""
    wanted = {0, size - 1}
    power = 1
    while power < size:
        wanted |= {i for i in (power - 1, power, power + 1) if i < size}
        power <<= 1
    rng = random.Random(seed)
    while len(wanted) < count:
        wanted.add(rng.randrange(size))
    return sorted(wanted)


@pytest.mark.timeout(900)
def test_an_independent_client_verifies_a_log_of_100000_events(
    ledger: Ledger, database: Database, schema: str, data_dir: Path
) -> None:
    write_some(ledger, 20)
    sealer = Sealer(ledger, database, schema, page_size=5000)
    sealer.setup()
    sizes = [sealer.sign_now()]
    for size in SIZES:
        grow_to(database, schema, size)
        sizes.append(sealer.sign_now())
    sealer.close()
    assert sizes[1:] == list(SIZES)
    vkey = run_ledger(database, schema, "keys").stdout.split()[1]
    key = parse_vkey(vkey)

    with serving(database, ledger, schema) as base:
        from api.auth import create_token

        with database.connect() as conn:
            auditor = create_token(conn, schema, "auditor", None, "client")[1]
        source = Source(f"{base}/log/", auditor)
        latest = open_checkpoint(source.get("checkpoint").decode(), key)
        assert latest.size == sizes[-1]
        stored = [int(s) for s in source.get("checkpoints/index").split()]
        # The sealer signs once a second while it catches up: more sizes than asked for.
        assert set(sizes) <= set(stored) and stored == sorted(stored)
        checkpoints = [open_checkpoint(source.get(f"checkpoints/{s}").decode(), key)
                       for s in stored]  # fmt: skip
        tiles = Tiles(source, latest.size)
        assert tiles.mth(0, latest.size) == latest.root

        # Every entry hashes to its leaf in the level-0 tiles.
        for n in range(0, latest.size, 256):
            width = min(256, latest.size - n)
            for i, entry in enumerate(entries(source, n // 256, width)):
                assert leaf_hash(entry) == tiles.node(0, n + i), n + i
                assert entry.startswith(b"ledger-event-v1\n%d\n" % (n + i + 1))

        checked = edges(latest.size, 1000)
        assert len(checked) == 1000
        for index in checked:
            proof = tiles.inclusion(index, 0, latest.size)
            assert verify_inclusion(tiles.node(0, index), index, latest.size, proof, latest.root)
            assert not verify_inclusion(tiles.node(0, index ^ 1), index, latest.size, proof,
                                        latest.root)  # fmt: skip

        for old, new in itertools.pairwise(checkpoints):
            assert tiles.mth(0, old.size) == old.root
            proof = tiles.consistency(old.size, 0, new.size)
            assert verify_consistency(old.size, new.size, old.root, new.root, proof)
            assert not verify_consistency(old.size, new.size, old.root, bytes(32), proof)

        # GraphQL's proofs are the client's, hash for hash.
        import httpx

        for index in checked[:: len(checked) // 20]:
            for old in checkpoints[:-1:3]:
                got = httpx.post(f"{base}/graphql", headers={"Authorization": f"Bearer {auditor}"},
                                 json={"query": GRAPHQL_PROOFS, "variables": {
                                     "p": index + 1, "s": latest.size, "from": old.size}},
                                 timeout=30).json()  # fmt: skip
                assert "errors" not in got, got
                data: dict[str, Any] = got["data"]
                assert data["inclusionProof"]["index"] == index
                mine = tiles.inclusion(index, 0, latest.size)
                assert data["inclusionProof"]["proof"] == [h.hex() for h in mine]
                theirs = data["consistencyProof"]["proof"]
                assert theirs == [h.hex() for h in tiles.consistency(old.size, 0, latest.size)]
        source.close()
