"""The JetStream relay, side by side with its baselines in one run.

1. Throughput on a large log (the demo data set, `--accounts`): `ledger relay --rebuild`'s
   path (read, decode, render, publish with a window of async publishes, checkpoint)
   against raw nats-py async publishing of the same subjects, bodies and headers, rendered
   beforehand (`nats bench`-style, from Python). Medians of `--repeats`.
2. NATS subscribers fed by `ledger serve --relay`, against GraphQL subscribers of
   `ledger serve` (bench.fanout's client: graphql-transport-ws, 10 subscriptions a
   connection), at two points: commit -> subscriber latency at `--rate` sanctions/s
   (default 200) with `--latency-subscribers` (default 10), and at `--subscribers`
   (default 1,000) and `--fanout-rate` (default 20: 20,000 deliveries a second, what one
   Python client process keeps up with), the CPU, in cores over the writing window, of
   the ledger's PostgreSQL primary (the postmaster and its backends) and of `ledger
   serve` with its child processes (projector, sealer, relay).

Each side runs a fresh nats-server (JetStream, own port, temporary store) and a fresh
`ledger serve --workers 1`. The subscriber processes run on the same machine.

    python -m bench.relay [--quick] [--accounts N] [--subscribers N] [--rate R]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg import sql

from api.auth import create_token, revoke_token
from api.relay.relay import Message, Relay
from bench import fanout
from bench.api import (
    ROOT,
    VAULT_KEY,
    expect,
    free_port,
    lines_of,
    prepare,
    server_env,
    start,
    wait_ready,
)
from bench.common import log, quantile
from ledger import Database, Ledger
from ledger.vault import Vault

THROUGHPUT_SCHEMA = "bench_relay"
NATS = shutil.which("nats-server") or "/usr/sbin/nats-server"


# ----- a nats-server of the run's own ----------------------------------------------------


@contextlib.contextmanager
def nats_server(tmp: Path) -> Iterator[str]:
    port = free_port()
    store = Path(tempfile.mkdtemp(prefix="nats-", dir=tmp))
    config = store / "nats.conf"
    config.write_text(f"listen: 127.0.0.1:{port}\nmax_payload: 8MB\n"
                      f'jetstream {{ store_dir: "{store}" }}\n')  # fmt: skip
    process = subprocess.Popen([NATS, "-c", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("nats-server did not start") from None
            time.sleep(0.05)
    try:
        yield f"nats://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(30)
        shutil.rmtree(store, ignore_errors=True)


# ----- 1. throughput ----------------------------------------------------------------------


async def rendered(relay: Relay) -> tuple[list[Message], float]:
    """Every event's message, as the relay renders it, and the seconds it took."""
    await relay.open()
    messages: list[Message] = []
    started = time.perf_counter()
    while page := relay.expected(messages[-1].position if messages else 0):
        messages += page
    return messages, time.perf_counter() - started


async def raw_publish(relay: Relay, messages: list[Message]) -> float:
    """Publish the same messages with nats-py alone into a fresh stream; seconds."""
    await relay.open()
    js = relay.js
    with contextlib.suppress(Exception):
        await js.delete_stream(relay.stream)
    await relay._create_stream()
    started = time.perf_counter()
    futures = [
        await js.publish_async(m.subject, m.body, headers=m.headers, wait_stall=30)
        for m in messages
    ]
    await asyncio.gather(*futures)
    return time.perf_counter() - started


async def relay_rebuild(relay: Relay) -> float:
    started = time.perf_counter()
    await relay.rebuild()
    return time.perf_counter() - started


async def one_repeat(relay: Relay) -> tuple[int, dict[str, float]]:
    """The events, and each path's events a second."""
    try:
        messages, seconds = await rendered(relay)
        events = len(messages)
        raw = await raw_publish(relay, messages)
        del messages
        rebuilt = await relay_rebuild(relay)
    finally:
        await relay.close()
    return events, {"render": events / seconds, "raw": events / raw, "relay": events / rebuilt}


def throughput(args: argparse.Namespace, db: Database, tmp: Path) -> dict[str, Any]:
    prepare(db, THROUGHPUT_SCHEMA, args.accounts)
    ledger = Ledger.open(db, THROUGHPUT_SCHEMA, vault=Vault(VAULT_KEY))
    rates: dict[str, list[float]] = {"render": [], "raw": [], "relay": []}
    events = 0
    try:
        with nats_server(tmp) as url:
            for repeat in range(args.repeats):
                log(f"throughput: repeat {repeat + 1} of {args.repeats}")
                relay = Relay(ledger, db, url, "LEDGER", page_size=20_000, window=8_000)
                events, found = asyncio.run(one_repeat(relay))
                for key, rate in found.items():
                    rates[key].append(rate)
    finally:
        ledger.close()
    return {"events": events, "rates": rates}


# ----- 2. latency and CPU with many consumers -------------------------------------------------


async def nats_client(url: str, after: int, subscribers: int, per: int) -> None:
    """bench.fanout's client protocol over NATS: `subscribed`, `live`, then on `stop
    <json>` the figures. Core subscriptions to every provider's sanctions."""
    import nats

    got = fanout.Received(subscribers)
    connections = []
    for first in range(0, subscribers, per):
        nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
        connections.append(nc)
        for k in range(first, min(first + per, subscribers)):
            await nc.subscribe("ledger.*.Account.SanctionImposed", cb=noter(got, k, after))
    got.opened.set()
    print("subscribed", flush=True)
    await asyncio.wait_for(got.live.wait(), 180)
    print("live", flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    commits = {int(p): t for p, t in json.loads(line.split(" ", 1)[1]).items()}
    last = max(commits)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(p and p[-1] >= last for p in got.positions):
        await asyncio.sleep(0.1)
    for nc in connections:
        await nc.close()
    print(json.dumps(fanout.figures(got, commits)), flush=True)


def noter(got: fanout.Received, k: int, after: int) -> Any:
    async def note(m: Any) -> None:
        at = time.monotonic()
        if int(m.headers["Ledger-Position"]) > after:
            got.note(k, m.data.decode(), at)

    return note


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children (those alive now)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def postmaster(db: Database) -> int:
    with db.connect() as conn:
        row = conn.execute("SHOW data_directory").fetchone()
    assert row is not None
    return int((Path(row[0]) / "postmaster.pid").read_text().split()[0])


@dataclass(frozen=True)
class Side:
    name: str
    subscribers: int
    rate: float
    p50: float
    p99: float
    postgres_cores: float
    ledger_cores: float
    missing: int
    doubled: int
    errors: list[str]


def run_side(
    args: argparse.Namespace, db: Database, tmp: Path, token: str, side: str, url: str,
    subscribers: int,
) -> Side:  # fmt: skip
    port = free_port()
    relay = ["--relay"] if side == "relay" else []
    command = [sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1", *relay]  # fmt: skip
    env = server_env(db, fanout.SCHEMA, tmp)
    env.update(LEDGER_NATS_URL=url, LEDGER_WS_INIT_TIMEOUT="120")
    server = start(f"ledger-{side}", command, env, tmp, port)
    wait_ready(server, "GET", "/readyz")
    ledger = Ledger.open(db, fanout.SCHEMA, vault=Vault(VAULT_KEY))
    child: subprocess.Popen[str] | None = None
    try:
        sanctions = fanout.Sanctions(ledger)
        after = str(ledger.head())
        if side == "relay":
            client = ["--nats-client", url]
        else:
            ws = server.url.replace("http://", "ws://") + "/graphql"
            client = ["-m", "bench.fanout", "--client", ws, "--per-connection", "10"]
        child = subprocess.Popen(
            [sys.executable, *(["-m", "bench.relay"] if side == "relay" else []), *client,
             "--after", after, "--subscribers", str(subscribers)],
            cwd=ROOT, env=dict(os.environ, BENCH_FANOUT_TOKEN=token),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            stderr=(tmp / f"client-{side}-{subscribers}.log").open("w"),
        )  # fmt: skip
        assert child.stdin is not None and child.stdout is not None
        lines = lines_of(child.stdout)
        fanout.wait_until_live(lines, sanctions)
        pg = postmaster(db)
        pg_before, ledger_before, began = tree_cpu(pg), tree_cpu(server.process.pid), time.time()
        commits, rate, _ = fanout.write(args, sanctions, server.process.pid)
        elapsed = time.time() - began
        pg_cores = (tree_cpu(pg) - pg_before) / elapsed
        ledger_cores = (tree_cpu(server.process.pid) - ledger_before) / elapsed
        child.stdin.write("stop " + json.dumps(commits) + "\n")
        child.stdin.flush()
        result = json.loads(expect(lines, "{", 90))
    finally:
        if child is not None:
            if child.poll() is None:
                child.terminate()
            child.wait(10)
        ledger.close()
        server.stop()
    latencies = result["latencies"] or [float("nan")]
    return Side(side, subscribers, rate, quantile(latencies, 50), quantile(latencies, 99), pg_cores,
                ledger_cores, result["missing"], result["doubled"], result["errors"])  # fmt: skip


def consumers(args: argparse.Namespace, db: Database, tmp: Path) -> list[Side]:
    prepare(db, fanout.SCHEMA, 100)
    with db.connect() as conn:
        token_id, token = create_token(conn, fanout.SCHEMA, "regulator", None, "bench-relay")
    sides = []
    try:
        points = ((args.latency_subscribers, args.rate), (args.subscribers, args.fanout_rate))
        for subscribers, rate in points:
            for side in ("relay", "graphql"):
                log(f"consumers: {subscribers} {side} subscribers at {rate:g}/s")
                paced = argparse.Namespace(**{**vars(args), "rate": rate})
                with db.connect() as conn:  # each nats-server is new: so is the stream
                    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(
                        sql.Identifier(fanout.SCHEMA, "relay_positions")))  # fmt: skip
                with nats_server(tmp) as url:
                    sides.append(run_side(paced, db, tmp, token, side, url, subscribers))
                log(f"  {sides[-1]}")
    finally:
        with db.connect() as conn:
            revoke_token(conn, fanout.SCHEMA, token_id)
    return sides


# ----- the report -------------------------------------------------------------------------


def report_throughput(found: dict[str, Any], load: float) -> None:
    rates = found["rates"]
    median = {k: statistics.median(v) for k, v in rates.items()}
    print(f"\nJetStream relay; load average {load:.2f} at start"
          " (a 2-core machine shared with other work: figures are noisy)")  # fmt: skip
    print(f"\n1. throughput, {found['events']} events (the demo log), medians of "
          f"{len(rates['relay'])} (min-max)")  # fmt: skip
    for label, key in (("render only (read, decode, LogEvent JSON)", "render"),
                       ("raw nats-py async publish (baseline)", "raw"),
                       ("ledger relay --rebuild", "relay")):  # fmt: skip
        v = rates[key]
        print(f"  {label:<44}{median[key]:>10.0f} events/s  ({min(v):.0f}-{max(v):.0f})"
              f"{median[key] / median['raw']:>7.2f}x raw", flush=True)  # fmt: skip


def report_sides(sides: list[Side], load: tuple[float, float]) -> None:
    print("\n2. commit -> subscriber latency, and CPU in cores over the writing window")
    print(f"  {'side':<34}{'subs':>6}{'writes/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'PG cores':>10}"
          f"{'ledger cores':>14}  missing/doubled")  # fmt: skip
    for s in sides:
        label = {"relay": "NATS via ledger serve --relay", "graphql": "GraphQL subscriptions"}
        print(f"  {label[s.name]:<34}{s.subscribers:>6}{s.rate:>9.1f}"
              f"{s.p50 * 1000:>8.1f}{s.p99 * 1000:>8.1f}"
              f"{s.postgres_cores:>10.2f}{s.ledger_cores:>14.2f}"
              f"  {s.missing}/{s.doubled}")  # fmt: skip
        for error in s.errors:
            print(f"    error: {error}")
    print(f"load average {load[0]:.2f} at start, {load[1]:.2f} at end")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.relay", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true",
                        help="small: 300 accounts, 1 repeat, 100 subscribers, 5 s")  # fmt: skip
    parser.add_argument("--accounts", type=int, default=3000,
                        help="demo accounts for the throughput log (default 3000)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--subscribers", type=int, default=1000,
                        help="subscribers of the CPU point (default 1000)")  # fmt: skip
    parser.add_argument("--fanout-rate", type=float, default=20,
                        help="sanctions a second at the CPU point (default 20)")  # fmt: skip
    parser.add_argument("--latency-subscribers", type=int, default=10,
                        help="subscribers of the latency point (default 10)")  # fmt: skip
    parser.add_argument("--rate", type=float, default=200,
                        help="sanctions a second at the latency point (default 200)")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=15, help="seconds of writes")
    parser.add_argument("--skip", choices=("throughput", "consumers"), help=argparse.SUPPRESS)
    parser.add_argument("--nats-client", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--after", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.nats_client is not None:
        asyncio.run(nats_client(args.nats_client, args.after, args.subscribers, 10))
        return
    if args.quick:
        args.accounts, args.repeats, args.subscribers, args.seconds = 300, 1, 100, 5
    load_at_start = os.getloadavg()[0]
    with Database() as db, tempfile.TemporaryDirectory(prefix="ledger-bench-relay-") as name:
        tmp = Path(name)
        if args.skip != "throughput":
            report_throughput(throughput(args, db, tmp), load_at_start)
        if args.skip != "consumers":
            load = os.getloadavg()[0]
            report_sides(consumers(args, db, tmp), (load, os.getloadavg()[0]))


if __name__ == "__main__":
    main()
