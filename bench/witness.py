"""Checkpoint-to-cosigned latency with two witnesses, beside the witness protocol's own
round trip measured in the same run.

Setup: a scratch schema with the sealer's tables (`projections.sealer.MERKLE`: the tree,
`checkpoints`, `cosignatures`), two `ledger witness serve` processes on loopback, each with
its own key and SQLite file, and the witnessing worker (`projections.witnessing`, as
`ledger project --only witnesses` runs it) in a thread of this process.

1. Pipeline: `--checkpoints` times, a random number of synthetic leaves (log-uniform,
   1 to 2,000) is appended to the tree, then a checkpoint of the new size is signed and
   stored as the sealer does (`projections.tlog.sign`, in a transaction of its own, so
   `signed_at` is when it becomes visible), then a random pause (0.3 to 1.2 s;
   the sealer signs at most once a second). Latency per checkpoint and witness: the
   cosignature row's `received_at` minus the checkpoint's `signed_at` (both PostgreSQL
   clocks, so no polling error); "both" is the later of the two. A checkpoint the worker
   skipped (a newer one came first) has no cosignature and is not counted.
2. Baseline: the same checkpoints, with their consistency proofs, sent by this process
   straight to a third, fresh witness, one after the other: the protocol's round trip
   (HTTP on loopback, signature and proof checks, the SQLite commit) with no worker poll
   and no database write.

The worker wakes on the notification a trigger sends when a checkpoint commits.

`--quick`: 20 checkpoints. Prints medians, p99 and the load average.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.common import log, quantile
from ledger import Database
from ledger.merkle import MerkleTree
from ledger.tlog.note import Ed25519Signer
from ledger.tlog.witness_client import WitnessEndpoint, add_checkpoint, parse_witnesses
from projections import tlog
from projections.sealer import MERKLE, PgNodeStore
from projections.witnessing import Witnessing

ORIGIN = "bench.ledger.example/witness"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WitnessServer:
    def __init__(self, directory: Path, name: str, log_vkey: str) -> None:
        self.directory = directory
        self.port = free_port()
        directory.mkdir(parents=True)
        key = directory / "witness.key"
        self.vkey = self._cli("keygen", name, "--key-file", str(key)).strip()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "witness", "serve", "--key-file", str(key),
             "--database", str(directory / "state.sqlite3"), "--log", log_vkey,
             "--listen", f"127.0.0.1:{self.port}"],
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.url + "/", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"witness {name} did not start") from None
                time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @staticmethod
    def _cli(*args: str) -> str:
        command = [sys.executable, "-m", "api.cli", "witness", *args]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def sign_next(conn: psycopg.Connection[Any], signer: Ed25519Signer, size: int, grow: int) -> int:
    """Append `grow` synthetic leaves and sign a checkpoint of the new size; the size."""
    tree = MerkleTree(PgNodeStore(conn))
    leaves = [os.urandom(32) for _ in range(grow)]
    with conn.transaction():
        nodes = tree.append(leaves, size)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO merkle_leaves (leaf_index, position, hash) VALUES (%s, %s, %s)",
                [(size + i, size + i + 1, h) for i, h in enumerate(leaves)],
            )
        PgNodeStore(conn).put_many(nodes)
    size += grow
    root = tree.root(size)
    # Signed in a transaction of its own, so that `signed_at` (its start) is when the
    # checkpoint becomes visible, give or take the insert.
    with conn.transaction():
        tlog.sign(conn, signer, size, root)
    return size


LATENCIES = """SELECT c.tree_size, s.witness,
    extract(epoch FROM s.received_at - c.signed_at) AS seconds
    FROM checkpoints c JOIN cosignatures s USING (tree_size) ORDER BY c.tree_size"""


def pipeline(
    conn: psycopg.Connection[Any], signer: Ed25519Signer, count: int, rng: random.Random
) -> list[int]:
    size, sizes = 0, []
    for i in range(count):
        grow = max(1, int(math.exp(rng.uniform(0, math.log(2000)))))
        size = sign_next(conn, signer, size, grow)
        sizes.append(size)
        time.sleep(rng.uniform(0.3, 1.2))
        if (i + 1) % 10 == 0:
            log(f"  {i + 1}/{count} checkpoints")
    time.sleep(2.0)  # the last cosignatures
    return sizes


def baseline(conn: psycopg.Connection[Any], endpoint: WitnessEndpoint) -> list[float]:
    tree = MerkleTree(PgNodeStore(conn))
    held, seconds = 0, []
    for size, note in tlog.all_checkpoints(conn):
        started = time.perf_counter()
        add_checkpoint(endpoint, note, size, held, tree.consistency_proof)
        seconds.append(time.perf_counter() - started)
        held = size
    return seconds


def summary(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"p50 {statistics.median(ms):7.1f} ms   p99 {quantile(ms, 99):7.1f} ms   n={len(ms)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="20 checkpoints")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    count = 20 if args.quick else args.checkpoints
    rng = random.Random(args.seed)
    schema = f"bench_witness_{os.getpid()}"
    folder = Path(tempfile.mkdtemp(prefix="bench-witness-"))
    database = Database().start()
    signer = Ed25519Signer(ORIGIN, Ed25519PrivateKey.generate())
    servers: list[WitnessServer] = []
    stop = threading.Event()
    try:
        database.create_schema(schema)
        with database.connect(schema, autocommit=True) as conn:
            for statement in MERKLE.ddl:
                conn.execute(statement)  # type: ignore[arg-type]
            for i in range(3):
                servers.append(WitnessServer(folder / f"w{i}", f"bench.witness/w{i}", signer.vkey))
            pair = parse_witnesses(" ".join(f"{s.vkey}={s.url}" for s in servers[:2]))
            worker = Witnessing(database, schema, pair)
            thread = threading.Thread(target=worker.follow, args=(stop,))
            thread.start()
            log(f"pipeline: {count} checkpoints, two witnesses; load average {load_average()}")
            pipeline(conn, signer, count, rng)
            stop.set()
            thread.join()
            rows = conn.execute(LATENCIES).fetchall()
            log("baseline: the same checkpoints straight to a third witness")
            (direct,) = parse_witnesses(f"{servers[2].vkey}={servers[2].url}")
            floor = baseline(conn, direct)
        by_size: dict[int, list[float]] = {}
        per_witness: dict[str, list[float]] = {}
        for size, witness, seconds in rows:
            by_size.setdefault(size, []).append(float(seconds))
            per_witness.setdefault(witness, []).append(float(seconds))
        both = [max(v) for v in by_size.values() if len(v) == 2]
        print(f"checkpoint-to-cosigned latency, {count} checkpoints, leaves per checkpoint"
              " log-uniform 1-2000, 0.3-1.2 s apart; database "
              f"{'embedded' if database.embedded else 'external'}")  # fmt: skip
        for witness, values in sorted(per_witness.items()):
            print(f"  {witness:<22} {summary(values)}")
        print(f"  {'both witnesses':<22} {summary(both)}")
        print(f"  {'baseline: round trip':<22} {summary(floor)}   (one witness, no worker)")
        print(f"  skipped by the worker: {count - len(by_size)} of {count} checkpoints")
        print(f"  load average {load_average()} (a shared, loaded machine: compare ratios)")
    finally:
        stop.set()
        for s in servers:
            s.stop()
        database.drop_schema(schema)
        database.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
