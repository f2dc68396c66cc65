"""The C2SP log's figures: tiles served per second from /log/ against a static file server
serving the export of the same log, in the same run; `ledger export`; and `ledger audit`'s
hash checks, in entries a second.

Setup: a scratch schema with `--events` synthetic events (states of 32 to 1,300 bytes),
their tree hashed in memory and copied into the sealer's tables, and checkpoints signed
at four sizes. `ledger export` writes the tree into a folder; `ledger audit --no-replay`
checks every entry, tile and checkpoint of it. Then `ledger serve --no-projector` (one
API process unless `--workers`) and `python -m http.server` on that folder are loaded in
turn by wrk with 32 connections, each round asking random tiles (full level-0 tiles
mostly, level-1 and -2 tiles and the partial tiles of every checkpoint size besides):
three rounds each, alternating; medians.

`--quick`: 100,000 events and 5-second rounds. Needs wrk (`apt-get install wrk`).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.common import events_query, fixed_key, log, notification, pages
from bench.integrity import copy_tree, hash_tree
from ledger import Database, Ledger
from ledger.proofcheck import event_leaf_data
from ledger.signing import Signer
from ledger.tlog.tiles import tiles_for_size
from ledger.vault import Vault
from projections import tlog
from projections.sealer import Sealer

ROOT = Path(__file__).resolve().parent.parent
TOPICS = [
    "ledger.domain.account:Account.Registered",
    "ledger.domain.post:Post.Published",
    "ledger.domain.account:Account.SanctionImposed",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def build_log(database: Database, schema: str, events: int) -> int:
    """`events` synthetic events and their sealed tree; checkpoints at four sizes."""
    ledger = Ledger.open(database, schema, vault=Vault(fixed_key("bench-tlog")))
    Sealer(ledger, database, schema).setup()
    started = time.perf_counter()
    with database.connect(schema, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO ledger_events (originator_id, originator_version, topic, state)"
            " SELECT md5(g::text)::uuid, 1, (%s::text[])[1 + g %% 3],"
            " convert_to('{\"n\":\"' || repeat(md5(g::text), 1 + g %% 40) || '\"}', 'UTF8')"
            " FROM generate_series(1, %s) g",
            (TOPICS, events),
        )
        data = [
            event_leaf_data(n.id, str(n.originator_id), n.originator_version, n.topic, n.state)
            for page in pages(conn, events_query(ledger.store.events_table), 20_000)
            for n in map(notification, page)
        ]
        levels = hash_tree(data)
        copy_tree(conn, levels)
        conn.execute(
            "UPDATE projection_positions SET position = %s WHERE name = 'merkle'", (events,)
        )
        signer = Signer.from_environment(Path(os.environ["LEDGER_DATA_DIR"])).checkpoint_signer()
        from ledger.merkle import MerkleTree
        from projections.sealer import PgNodeStore

        tree = MerkleTree(PgNodeStore(conn))
        for size in sorted({events // 3, events // 2 + 7, events - 1000, events}):
            with conn.transaction():
                tlog.sign(conn, signer, size, tree.root(size))
    ledger.close()
    log(f"built a log of {events} events in {time.perf_counter() - started:.0f} s")
    return events


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if done.returncode != 0:
        raise SystemExit(f"ledger {args[0]} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def wait_for(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url}: the server exited")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url}: no answer in 60 s")


def tile_paths(size: int, sizes: list[int], count: int = 5000) -> list[str]:
    """Random tiles: full level-0 ones mostly, and every other tile a client fetches."""
    full = [t for t in tiles_for_size(size) if t.level == 0 and t.full]
    others = [t for t in tiles_for_size(size) if t.level > 0 or not t.full]
    others += [t for s in sizes for t in tiles_for_size(s) if not t.full]
    rng = random.Random(7)
    chosen = [rng.choice(full) if rng.random() < 0.9 else rng.choice(others) for _ in range(count)]
    return [t.path for t in chosen]


def wrk(url: str, script: Path, seconds: int, connections: int) -> float:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if found is None or errors is not None:
        raise SystemExit(f"wrk against {url}:\n{out}")
    return float(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=10, help="per wrk round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="ledger serve's API processes")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.seconds = 100_000, 5
    if shutil.which("wrk") is None:
        raise SystemExit("bench.tlog needs wrk: apt-get install wrk")
    folder = Path(tempfile.mkdtemp(prefix="bench-tlog-"))
    os.environ["LEDGER_DATA_DIR"] = str(folder / "data")
    database = Database().start()
    schema = f"bench_tlog_{os.getpid()}"
    servers: list[subprocess.Popen[bytes]] = []
    try:
        log(f"load average before: {load_average()}")
        build_log(database, schema, args.events)
        env = {**os.environ, "LEDGER_DATABASE_URL": database.conninfo, "LEDGER_SCHEMA": schema}
        export = folder / "export"
        started = time.perf_counter()
        cli(env, "export", str(export))
        export_seconds = time.perf_counter() - started
        vkey = cli(env, "keys").split()[1]
        started = time.perf_counter()
        audited = cli(env, "audit", str(export), "--key", vkey, "--no-replay")
        audit_seconds = time.perf_counter() - started
        if "OK:" not in audited:
            raise SystemExit(f"the audit failed:\n{audited}")
        ours, static = free_port(), free_port()
        servers.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "api.cli",
                    "serve",
                    "--port",
                    str(ours),
                    "--workers",
                    str(args.workers),
                    "--no-projector",
                ],
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        servers.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "http.server",
                    str(static),
                    "--bind",
                    "127.0.0.1",
                    "--directory",
                    str(export),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_for(f"http://127.0.0.1:{ours}/log/checkpoint", servers[0])
        wait_for(f"http://127.0.0.1:{static}/checkpoint", servers[1])
        sizes = [int(s) for s in (export / "checkpoints" / "index").read_text().split()]
        paths = tile_paths(args.events, sizes)
        for path in paths[:50]:  # the same bytes from both
            with (
                urllib.request.urlopen(f"http://127.0.0.1:{ours}/log/{path}") as a,
                urllib.request.urlopen(f"http://127.0.0.1:{static}/{path}") as b,
            ):
                assert a.read() == b.read(), path
        rates: dict[str, list[float]] = {"ledger /log/": [], "http.server": []}
        for _ in range(args.rounds):
            for name, base in (("ledger /log/", "/log/"), ("http.server", "/")):
                script = folder / f"{name.split()[0]}.lua"
                quoted = ",".join(f'"{base}{p}"' for p in paths)
                script.write_text(
                    f"paths = {{{quoted}}}\n"
                    "request = function()\n"
                    '  return wrk.format("GET", paths[math.random(#paths)])\nend\n'
                )
                port = ours if name.startswith("ledger") else static
                rates[name].append(
                    wrk(f"http://127.0.0.1:{port}", script, args.seconds, args.connections)
                )
                log(f"  {name}: {rates[name][-1]:.0f} tiles/s")
        mine, theirs = (statistics.median(rates[k]) for k in ("ledger /log/", "http.server"))
        rate = re.search(r"\((\d+)/s\)", audited)
        print(
            f"bench.tlog: {args.events} events, {len(sizes)} checkpoints; load average"
            f" {load_average()} (a shared machine: figures from a loaded one)"
        )
        print(f"export:  {export_seconds:.1f} s ({args.events / export_seconds:.0f} events/s)")
        print(
            f"audit:   {audit_seconds:.1f} s wall, hash checks {rate.group(1) if rate else '?'}"
            f" entries/s (goal >= 50,000)"
        )
        print(
            f"tiles/s, {args.connections} connections, {args.workers} API process(es),"
            f" median of {args.rounds} rounds of {args.seconds} s:"
        )
        for name, median in (("ledger /log/", mine), ("http.server", theirs)):
            rounds = ", ".join(f"{r:.0f}" for r in rates[name])
            print(f"  {name:<13} {median:8.0f}   (rounds: {rounds})")
        print(f"  ratio         {mine / theirs:8.2f}x  (goal >= 0.5x)")
    finally:
        for process in servers:
            process.send_signal(signal.SIGTERM)
        for process in servers:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        database.drop_schema(schema)
        database.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
