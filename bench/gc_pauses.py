"""Garbage collection pauses of `ledger serve` under subscription load: the collector as
Python leaves it (the baseline, LEDGER_GC_FREEZE=0) against the server's own settings
(api/collector.py: start-up frozen, LEDGER_GC_THRESHOLDS), measured in the same run.

The data set is the demo (`--accounts`, 200) in the schema `bench_gc`, loaded once and
kept (as bench.api's). Each configuration starts `ledger serve` (with its projector),
opens `--subscribers` (100) graphql-transport-ws clients in a separate process, each
subscribed to every event (`events`, a regulator token), and for `--seconds` (60)
publishes `--rate` (20) posts a second from this process while a thread reads (`accounts`,
`sanctions`, `providers`, in turn) at `--reads` (50) a second. The figures come from the
server's /metrics (`ledger_gc_pause_seconds`, `ledger_gc_pause_longest_seconds`): full
(generation 2) collections, their longest and mean pause, the longest young one, and the
server's resident memory (its /proc status) at the end. `--quick`: 20 subscribers,
15 seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from api.auth import create_token
from bench.api import (
    ROOT,
    VAULT_KEY,
    Server,
    free_port,
    http,
    prepare,
    server_env,
    start,
    wait_ready,
)
from bench.common import Writer, log
from ledger import Database, Ledger
from ledger.vault import Vault

SCHEMA = "bench_gc"
SUBSCRIPTION = "subscription($after: Position) { events(after: $after) { position type at } }"
READS = (
    "{ accounts(first: 50) { edges { node { id handle status postCount } } } }",
    "{ sanctions(first: 20) { edges { node { id level imposedAt } } } }",
    "{ providers { code accounts } }",
)
CONFIGURATIONS = {"python's defaults (baseline)": {"LEDGER_GC_FREEZE": "0"}, "ledger": {}}


@dataclass(frozen=True)
class Pauses:
    full: int  # generation 2 collections
    longest_full: float
    mean_full: float
    longest_young: float
    rss_mb: float
    delivered: int


async def subscribers(url: str, token: str, after: int, clients: int) -> None:
    """The client process: `clients` subscriptions, counting what they receive until a
    line on stdin; then prints the count."""
    from websockets.asyncio.client import connect
    from websockets.typing import Subprotocol

    received = [0]

    async def client() -> None:
        async with connect(
            url, subprotocols=[Subprotocol("graphql-transport-ws")], max_size=None
        ) as ws:
            init = {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
            await ws.send(json.dumps(init))
            await ws.recv()
            payload = {"query": SUBSCRIPTION, "variables": {"after": str(after)}}
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
            print("subscribed", flush=True)
            async for _ in ws:
                received[0] += 1

    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for task in tasks:
        task.cancel()
    print(received[0], flush=True)


def reader(url: str, token: str, rate: float, stop: threading.Event) -> None:
    for i in range(10**9):
        if stop.wait(1 / rate):
            return
        http("POST", url, json.dumps({"query": READS[i % len(READS)]}).encode(), token)


def figure(text: str, name: str, generation: str) -> float:
    found = re.search(rf'^{name}\{{generation="{generation}"\}} (\S+)$', text, re.MULTILINE)
    return float(found[1]) if found else 0.0


def resident_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(found[1]) / 1024 if found else 0.0


def serve(db: Database, env: dict[str, str], tmp: Path) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1"]  # fmt: skip
    server = start("ledger", command, env, tmp, port)
    wait_ready(server, "GET", "/readyz")
    return server


def measure(args: argparse.Namespace, db: Database, token: str, settings: dict[str, str]) -> Pauses:
    with tempfile.TemporaryDirectory(prefix="ledger-bench-gc-") as name:
        server = serve(db, {**server_env(db, SCHEMA, Path(name)), **settings}, Path(name))
        ledger = Ledger.open(db, SCHEMA, vault=Vault(VAULT_KEY))
        stop = threading.Event()
        try:
            return load(args, server, ledger, token, stop)
        finally:
            stop.set()
            ledger.close()
            server.stop()


def load(
    args: argparse.Namespace, server: Server, ledger: Ledger, token: str, stop: threading.Event
) -> Pauses:
    writer = Writer(ledger, 5, prefix="bench-gc")
    ws_url = server.url.replace("http://", "ws://") + "/graphql"
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.gc_pauses", "--subscribe", ws_url,
         "--after", str(ledger.head()), "--subscribers", str(args.subscribers)],
        cwd=ROOT, env=dict(os.environ, BENCH_GC_TOKEN=token),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    for _ in range(args.subscribers):
        assert child.stdout.readline().startswith("subscribed")
    threading.Thread(
        target=reader, args=(server.url + "/graphql", token, args.reads, stop), daemon=True
    ).start()
    started = time.monotonic()
    for i in range(int(args.seconds * args.rate)):
        time.sleep(max(0.0, started + i / args.rate - time.monotonic()))
        ledger.execute(writer.post(writer.accounts[i % len(writer.accounts)]))
    time.sleep(1)
    stop.set()
    rss = resident_mb(server.process.pid)
    text = http("GET", server.url + "/metrics")[1].decode()
    child.stdin.write("stop\n")
    child.stdin.flush()
    delivered = int(child.stdout.readline())
    child.wait(10)
    count = figure(text, "ledger_gc_pause_seconds_count", "2")
    total = figure(text, "ledger_gc_pause_seconds_sum", "2")
    return Pauses(
        full=int(count),
        longest_full=figure(text, "ledger_gc_pause_longest_seconds", "2"),
        mean_full=total / count if count else 0.0,
        longest_young=max(figure(text, "ledger_gc_pause_longest_seconds", g) for g in "01"),
        rss_mb=rss,
        delivered=delivered,
    )


def report(args: argparse.Namespace, results: dict[str, Pauses]) -> None:
    print(f"\n## GC pauses: `ledger serve`, {args.subscribers} subscribers to every event,"
          f" {args.rate:g} posts/s, {args.reads:g} reads/s, {args.seconds} s each\n")  # fmt: skip
    print("| collector | full collections | longest full | mean full | longest young"
          " | RSS at end | deliveries |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, p in results.items():
        ms = [
            f"{seconds * 1000:.1f} ms" for seconds in (p.longest_full, p.mean_full, p.longest_young)
        ]
        print(f"| {name} | {p.full} | {' | '.join(ms)} | {p.rss_mb:.0f} MB | {p.delivered} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gc_pauses",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--accounts", type=int, default=200, help="demo accounts (default 200)")
    parser.add_argument("--subscribers", type=int, default=100, help="clients (default 100)")
    parser.add_argument("--rate", type=float, default=20, help="posts a second (default 20)")
    parser.add_argument("--reads", type=float, default=50, help="reads a second (default 50)")
    parser.add_argument("--seconds", type=int, default=60, help="per configuration (default 60)")
    parser.add_argument("--quick", action="store_true", help="20 subscribers, 15 s")
    parser.add_argument("--subscribe", help=argparse.SUPPRESS)
    parser.add_argument("--after", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.subscribe:
        token = os.environ["BENCH_GC_TOKEN"]
        asyncio.run(subscribers(args.subscribe, token, args.after, args.subscribers))
        return
    if args.quick:
        args.subscribers, args.seconds = 20, 15
    with Database() as db:
        prepare(db, SCHEMA, args.accounts)
        with db.connect() as conn:
            token = create_token(conn, SCHEMA, "regulator", None, "bench-gc")[1]
        results = {}
        for name, settings in CONFIGURATIONS.items():
            log(f"gc pauses: {name}")
            results[name] = measure(args, db, token, settings)
    report(args, results)


if __name__ == "__main__":
    main()
