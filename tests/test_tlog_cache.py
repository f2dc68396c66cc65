"""The tiles each API process keeps in memory: served by `ledger serve` in a second
process, across a restart of the database, and dropped once the latest checkpoint no
longer covers them (a database restored from an older backup)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from ledger import Database, Ledger
from projections.sealer import Sealer
from tests.api_server import free_port
from tests.cluster import Cluster, own_cluster_fixtures
from tests.cold import ColdProcess
from tests.test_integrity import write_some

cluster, database = own_cluster_fixtures()


def eventually(check: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_cached_tiles_across_a_restart_and_a_shrunk_log(
    cluster: Cluster, database: Database, ledger: Ledger, schema: str, cold: ColdProcess,
    data_dir: Path,
) -> None:  # fmt: skip
    world = write_some(ledger, 2)
    sealer = Sealer(ledger, database, schema)
    sealer.setup()
    small = sealer.sign_now()
    while ledger.head() < 300:
        write_some(ledger, 5, world)
    large = sealer.sign_now()
    sealer.close()
    assert small < 256 <= large
    port = free_port()
    with cold.serve(port):
        base = f"http://127.0.0.1:{port}/log/"
        first = httpx.get(base + "tile/0/000", timeout=10)
        assert first.status_code == 200 and len(first.content) == 8192
        cluster.restart()
        eventually(lambda: httpx.get(base + "checkpoint", timeout=10).status_code == 200)
        again = httpx.get(base + "tile/0/000", timeout=10)
        assert again.content == first.content and again.headers["etag"] == first.headers["etag"]
        # The log restored to before size 256: its checkpoints no longer cover the tile.
        with database.connect(schema, autocommit=True) as conn:
            conn.execute("ALTER TABLE checkpoints DISABLE TRIGGER USER")
            conn.execute("DELETE FROM checkpoints WHERE tree_size > %s", (small,))
            conn.execute("ALTER TABLE checkpoints ENABLE TRIGGER USER")
        eventually(lambda: httpx.get(base + "tile/0/000", timeout=10).status_code == 404)
        assert httpx.get(base + f"tile/0/000.p/{small}", timeout=10).status_code == 200
