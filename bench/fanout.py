"""Subscription fan-out: what N live subscribers cost one API process, with the shared
delivery path (api/graphql/fanout.py: one rendering and one serialised payload per event
and selection) against one strawberry execution per subscriber per event
(LEDGER_COMPILE_SUBSCRIPTIONS=0), measured in the same run.

For each point (`--subscribers`, default 100 and 1000) and each path, a fresh `ledger
serve` (one API process, the projector and sealer in child processes, as shipped) on
loopback; a client process opens the subscriptions over graphql-transport-ws,
`--per-connection` of them multiplexed on each WebSocket (default 10: 1,000 subscribers
on 100 connections; offering permessage-deflate, as browsers do, unless `--no-deflate`),
all a regulator's `sanctionEvents` with the same selection. Once every subscription has
received a warm-up event, this process imposes sanctions straight through the ledger
(not through the API) at `--rate` a second (default 20) for `--seconds` (default 15).

Figures per run: delivery latency, from `execute` returning in this process to the
message's arrival in the client (CLOCK_MONOTONIC, system-wide), p50/p99/max over every
delivery of the measured writes; deliveries missing (not there 30 s after the last write)
or doubled; and the server process's
CPU (user + system from /proc/<pid>/stat) over the writing window, in cores. The client
process runs on the same machine and competes for its cores.

    python -m bench.fanout [--subscribers 100,1000] [--seconds 15] [--rate 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from api.auth import create_token, revoke_token
from bench.api import (
    ROOT,
    VAULT_KEY,
    Server,
    expect,
    free_port,
    lines_of,
    prepare,
    server_env,
    start,
    wait_ready,
)
from bench.common import Writer, log, quantile
from ledger import Actor, Database, Ledger, Role
from ledger import commands as c
from ledger.vault import Vault

SCHEMA = "bench_fanout"
REGULATOR = Actor("bench-fanout-inspector", Role.REGULATOR)
SUBSCRIPTION = (
    "subscription($after: Position) { sanctionEvents(after: $after) {"
    " position cursor type originatorId at actor { id role } payload } }"
)
PATHS = {"shared": "1", "per-subscriber": "0"}


# ----- the client process ---------------------------------------------------------------


class Received:
    """Per subscription, the positions received and when."""

    def __init__(self, subscriptions: int) -> None:
        self.positions: list[list[int]] = [[] for _ in range(subscriptions)]
        self.times: list[list[float]] = [[] for _ in range(subscriptions)]
        self.errors: list[str] = []
        self.waiting = subscriptions  # subscriptions without an item yet
        self.live = asyncio.Event()
        self.unopened = subscriptions  # subscriptions not yet sent
        self.opened = asyncio.Event()

    def note(self, k: int, message: str, at: float) -> None:
        start = message.find('"position":"')
        if start < 0:
            self.errors.append(message[:300])
            return
        start += len('"position":"')
        if not self.positions[k]:
            self.waiting -= 1
            if self.waiting == 0:
                self.live.set()
        self.positions[k].append(int(message[start : message.index('"', start)]))
        self.times[k].append(at)


async def connection(
    url: str, token: str, after: int, first: int, count: int, got: Received, opening: Any,
    deflate: bool,
) -> None:  # fmt: skip
    from websockets.asyncio.client import connect
    from websockets.typing import Subprotocol

    await opening.acquire()  # a few sign-ins at a time, as clients arrive over time
    try:
        ws = await connect(
            url, subprotocols=[Subprotocol("graphql-transport-ws")], ping_interval=None,
            open_timeout=120, max_size=None, compression="deflate" if deflate else None,
        )  # fmt: skip
        await ws.send(json.dumps({"type": "connection_init", "payload": {"token": token}}))
        ack = json.loads(await ws.recv())
        if ack.get("type") != "connection_ack":
            raise RuntimeError(f"no connection_ack: {ack}")
        for k in range(first, first + count):
            payload = {"query": SUBSCRIPTION, "variables": {"after": str(after)}}
            await ws.send(json.dumps({"id": str(k), "type": "subscribe", "payload": payload}))
        got.unopened -= count
        if got.unopened == 0:
            got.opened.set()
    finally:
        opening.release()
    async with ws:
        async for message in ws:
            at = time.monotonic()  # first, before any parsing
            assert isinstance(message, str)
            if message.startswith('{"id":"') and '"type":"next"' in message[:40]:
                got.note(int(message[7 : message.index('"', 7)]), message, at)
            elif '"type":"ping"' not in message:
                got.errors.append(message[:300])


async def client(
    url: str, token: str, after: int, subscriptions: int, per: int, deflate: bool
) -> None:
    """`subscribed`, then `live` once every subscription has an item; on `stop <json>`
    (position -> commit time) waits for those positions and prints the figures."""
    got = Received(subscriptions)
    opening = asyncio.Semaphore(5)
    tasks = [
        asyncio.create_task(
            connection(url, token, after, k, min(per, subscriptions - k), got, opening, deflate)
        )
        for k in range(0, subscriptions, per)
    ]
    await asyncio.wait_for(first_of(got.opened.wait(), tasks), 300)
    print("subscribed", flush=True)
    waiting = asyncio.create_task(report_waiting(got))
    await asyncio.wait_for(first_of(got.live.wait(), tasks), 180)
    waiting.cancel()
    print("live", flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    commits = {int(p): t for p, t in json.loads(line.split(" ", 1)[1]).items()}
    last = max(commits)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(p and p[-1] >= last for p in got.positions):
        await asyncio.sleep(0.1)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(figures(got, commits)), flush=True)


async def report_waiting(got: Received) -> None:
    while True:
        await asyncio.sleep(10)
        print(f"client: {got.waiting} subscriptions without an event yet", file=sys.stderr)


async def first_of(waiting: Any, tasks: list[asyncio.Task[None]]) -> None:
    waiter = asyncio.ensure_future(waiting)
    while not waiter.done():
        await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done() and task.exception() is not None:
                waiter.cancel()
                raise task.exception()  # type: ignore[misc]


def figures(got: Received, commits: dict[int, float]) -> dict[str, Any]:
    latencies, missing, doubled = [], 0, 0
    for positions, times in zip(got.positions, got.times, strict=True):
        seen = [p for p in positions if p in commits]
        doubled += len(seen) - len(set(seen))
        missing += len(commits.keys() - set(seen))
        latencies += [t - commits[p] for p, t in zip(positions, times, strict=True) if p in commits]
    return {
        "latencies": latencies,
        "missing": missing,
        "doubled": doubled,
        "errors": got.errors[:5],
    }


# ----- the run --------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    path: str
    subscribers: int
    rate: float  # sanctions a second achieved
    p50: float  # seconds
    p99: float
    worst: float
    cores: float  # the server's CPU over the writing window
    missing: int
    doubled: int
    errors: list[str]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(db: Database, tmp: Path, path: str) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1"]  # fmt: skip
    env = server_env(db, SCHEMA, tmp)
    env["LEDGER_COMPILE_SUBSCRIPTIONS"] = PATHS[path]
    # What is measured is the steady state: subscribing 1,000 at once may take a while.
    env["LEDGER_WS_INIT_TIMEOUT"] = "120"
    server = start(f"ledger-{path}", command, env, tmp, port)
    wait_ready(server, "GET", "/readyz")
    return server


class Sanctions:
    """Sanctions imposed by a regulator on a few accounts of this run, in turn."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.writer = Writer(ledger, accounts=10, prefix="bench-fanout")
        self.count = 0

    def impose(self) -> tuple[int, float]:
        """One sanction: its position, and when `execute` returned."""
        self.count += 1
        account: UUID = self.writer.accounts[self.count % len(self.writer.accounts)]
        command = c.ImposeSanction(
            actor=REGULATOR, idempotency_key=self.writer.key(), account_id=account,
            level="warning", rule_ids=("art.9",), reason=f"bench sanction {self.count}",
        )  # fmt: skip
        result = self.ledger.execute(command)
        assert result.position is not None
        return result.position, time.monotonic()


def run_point(
    args: argparse.Namespace, db: Database, tmp: Path, token: str, path: str, subscribers: int
) -> Point:
    server = start_server(db, tmp, path)
    ledger = Ledger.open(db, SCHEMA, vault=Vault(VAULT_KEY))
    child: subprocess.Popen[str] | None = None
    try:
        sanctions = Sanctions(ledger)
        ws_url = server.url.replace("http://", "ws://") + "/graphql"
        child = subprocess.Popen(
            [sys.executable, "-m", "bench.fanout", "--client", ws_url, "--after",
             str(ledger.head()), "--subscribers", str(subscribers),
             "--per-connection", str(args.per_connection),
             *(["--no-deflate"] if args.no_deflate else [])],
            cwd=ROOT, env=dict(os.environ, BENCH_FANOUT_TOKEN=token),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert child.stdin is not None and child.stdout is not None
        lines = lines_of(child.stdout)
        wait_until_live(lines, sanctions)
        commits, rate, cores = write(args, sanctions, server.process.pid)
        child.stdin.write("stop " + json.dumps(commits) + "\n")
        child.stdin.flush()
        result = json.loads(expect(lines, "{", 90))
    except (RuntimeError, OSError, queue.Empty) as e:
        tail = server.log_tail(int(os.environ.get("BENCH_FANOUT_LOG_LINES", "30")))
        raise RuntimeError(f"{path}, {subscribers} subscribers: {e}\n{tail}") from e
    finally:
        if child is not None:
            if child.poll() is None:
                child.terminate()
            child.wait(10)
        ledger.close()
        server.stop()
    latencies = result["latencies"] or [float("nan")]
    return Point(
        path, subscribers, rate, quantile(latencies, 50), quantile(latencies, 99),
        max(latencies), cores, result["missing"], result["doubled"], result["errors"],
    )  # fmt: skip


def wait_until_live(lines: queue.Queue[str], sanctions: Sanctions) -> None:
    """Once the client says every subscription is open, write sanctions until it reports
    the first one delivered (the warm-up), then until it says it is live."""
    expect(lines, "subscribed", 300)
    deadline = time.monotonic() + 120
    while lines.empty() and time.monotonic() < deadline:  # warm-up
        sanctions.impose()
        time.sleep(1)
    expect(lines, "live", 5)


def write(
    args: argparse.Namespace, sanctions: Sanctions, pid: int
) -> tuple[dict[int, float], float, float]:
    """Sanctions at `--rate` for `--seconds`: their commit times, the rate achieved and the
    server's CPU in cores over the window."""
    n = int(args.rate * args.seconds)
    commits: dict[int, float] = {}
    cpu_before, start_at = cpu_seconds(pid), time.monotonic() + 0.05
    for i in range(n):
        delay = start_at + i / args.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        position, committed = sanctions.impose()
        commits[position] = committed
    elapsed = time.monotonic() - start_at
    cores = (cpu_seconds(pid) - cpu_before) / elapsed
    return commits, n / elapsed, cores


def report(points: list[Point], load: tuple[float, float]) -> None:
    print()
    print(f"subscription fan-out, one API process (`ledger serve`; its projector and sealer"
          " in child processes);"
          f" load average {load[0]:.2f} at start, {load[1]:.2f} at end; 2-core machine"
          " shared with other work, so figures are noisy")  # fmt: skip
    head = f"{'subscribers':>11}  {'path':<15}{'writes/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
    print(head + f"{'max ms':>9}{'CPU cores':>11}  missing/doubled")
    for p in points:
        print(
            f"{p.subscribers:>11}  {p.path:<15}{p.rate:>9.1f}{p.p50 * 1000:>9.1f}"
            f"{p.p99 * 1000:>9.1f}{p.worst * 1000:>9.1f}{p.cores:>11.2f}  {p.missing}/{p.doubled}"
        )
        for error in p.errors:
            print(f"{'':>13}error: {error}")
    goal = [p for p in points if p.path == "shared" and p.subscribers >= 1000]
    for p in goal:
        met = p.p99 < 0.1 and p.cores < 1.0
        print(f"goal (1,000 at 20/s: p99 < 100 ms, under one core): {'met' if met else 'NOT met'}"
              f" at {p.subscribers} subscribers")  # fmt: skip


def benchmark(args: argparse.Namespace, db: Database) -> None:
    prepare(db, SCHEMA, args.accounts)
    with db.connect() as conn:
        token_id, token = create_token(conn, SCHEMA, "regulator", None, "bench-fanout")
    load_at_start = os.getloadavg()[0]
    points = []
    try:
        with tempfile.TemporaryDirectory(prefix="ledger-bench-fanout-") as name:
            for subscribers in args.subscribers:
                for path in args.paths:
                    log(f"fan-out: {subscribers} subscribers, {path} path")
                    points.append(run_point(args, db, Path(name), token, path, subscribers))
    finally:
        with db.connect() as conn:
            revoke_token(conn, SCHEMA, token_id)
    report(points, (load_at_start, os.getloadavg()[0]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fanout", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument(
        "--subscribers", type=lambda text: [int(x) for x in text.split(",")], default=[100, 1000],
        help="subscriber counts to measure, comma-separated (default 100,1000)",
    )  # fmt: skip
    parser.add_argument("--no-deflate", action="store_true",
                        help="clients do not offer permessage-deflate (browsers do)")  # fmt: skip
    parser.add_argument("--per-connection", type=int, default=10,
                        help="subscriptions per WebSocket (default 10)")  # fmt: skip
    parser.add_argument("--rate", type=float, default=20, help="sanctions a second (default 20)")
    parser.add_argument("--seconds", type=float, default=15, help="seconds of writes (default 15)")
    parser.add_argument("--accounts", type=int, default=100, help="demo accounts (default 100)")
    parser.add_argument(
        "--paths", type=lambda text: text.split(","), default=list(PATHS),
        help="the paths to measure (default shared,per-subscriber)",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the schema for the next run")
    parser.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--after", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client is not None:
        token = os.environ["BENCH_FANOUT_TOKEN"]
        (count,) = args.subscribers
        deflate = not args.no_deflate
        asyncio.run(client(args.client, token, args.after, count, args.per_connection, deflate))
        return
    if min(*args.subscribers, args.per_connection, args.rate, args.seconds, args.accounts) <= 0:
        parser.error("every figure must be positive")
    with Database() as db:
        try:
            benchmark(args, db)
        finally:
            if not args.keep:
                with contextlib.suppress(Exception):
                    db.drop_schema(SCHEMA)


if __name__ == "__main__":
    main()
