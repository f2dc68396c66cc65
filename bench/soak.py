"""A soak: `ledger serve` under the mixed load of issue 26 for `--minutes` (10), sampled
every few seconds, then checked.

The server is a separate process (`python -m api.cli serve`, one worker, its projector and
sealer) on a free loopback port, on an embedded PostgreSQL of this run's own
(LEDGER_DATABASE_URL when set: a schema of its own there, dropped at the end), after
`ledger demo --accounts 500`. The load, from this process on one asyncio loop, all to
127.0.0.1:

- writes, `--writes` (20) a second on a fixed schedule: half `imposeSanction` (a
  regulator's warning) on 100 accounts, half `publishPost` (their provider's token) on 100
  others, each with an idempotency key of its own, retried with it until acknowledged;
- reads, `--reads` (50) a second: account(id), the wide account, accounts(100) and
  sanctions(20) pages of every filter, history(100), providers, drawn at random from the
  requests of bench/api.py (every account, every page of every filter), so the response
  cache answers few of them;
- `--subscribers` (50) `events` subscriptions over graphql-transport-ws from the log's
  head. `--resuming` (10) of them close their connection every `--resume-every` seconds
  or so (45) and subscribe again from the last cursor they received; the others hold one
  subscription for the whole run (what grows with a subscription's age shows there),
  resuming only when the server ends it.

Every `--sample-seconds` (5): the server's RSS and open file descriptors (with its
children's, from /proc), its database connections (pg_stat_activity) and the longest GC
pause its /metrics reports (`ledger_gc_pause_seconds`, when it has it). A table gives a row
per minute: RSS, descriptors, connections, read p50/p99, writes acknowledged, deliveries
and their latency, resumptions, the longest GC pause.

At the end the writes stop, the subscribers get a minute to reach the log's head, and the
log is read directly. The exit status is 1, with a FAIL line naming the rule, when the
RSS grows more than 10% after warm-up, when the read p99 drifts more than 1.5x (not judged
while it stays under 50 ms), when an acknowledged write is not in the log exactly once,
or when a subscriber missed, doubled or reordered an event of its window (see
bench/soak_checks.py for the windows).

    python -m bench.soak [--minutes 10] [--writes 20] [--reads 50] [--subscribers 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import httpx
from psycopg import sql

from api.auth import create_token
from bench.api import (
    READS,
    VAULT_KEY,
    Call,
    Server,
    data_set,
    server_env,
    start_ledger,
    traffic_for,
)
from bench.common import log, server_name, server_version
from bench.soak_checks import (
    P99_FLOOR_S,
    Verdict,
    Windows,
    deliveries_rule,
    p99_rule,
    rss_rule,
    writes_rule,
)
from bench.soak_load import REASON, Record, Subscriber, Target, clock, reads, write, writes
from bench.soak_samples import (
    Connections,
    Sample,
    Scrape,
    cpu_seconds,
    gc_pause_scrape,
    longest_pause,
    open_fds,
    process_tree,
    rss_bytes,
)
from bench.soak_table import LEGEND, cells, header, line, row, rows, table
from ledger import Database, Ledger
from ledger.demo import PROVIDERS
from ledger.domain import ids
from ledger.log import LoggedEvent
from ledger.vault import Vault

ROOT = Path(__file__).resolve().parent.parent
READ_WEIGHTS = {"account": 3, "wide": 2, "accounts": 2, "history": 2, "sanctions": 2,
                "providers": 1}  # fmt: skip
TARGETS = 100  # accounts of each kind of write
CATCH_UP = 60.0  # seconds the subscribers get to reach the log's head after the writes
WRITTEN = ("Account.SanctionImposed", "Post.Published")


@dataclass
class Setup:
    server: Server
    token: str  # a regulator's
    calls: dict[str, list[Call]]
    targets: list[Target]
    start: int  # the log's head before the load: every subscriber's window starts after it
    app_name: str  # the server's application_name in pg_stat_activity


@dataclass
class Run:
    rec: Record
    subscribers: list[Subscriber]
    samples: list[Sample]
    idle: Sample | None  # before the load
    head: int = 0  # the log's head once the writes have stopped
    server_exited: str | None = None
    client_cpu: float | None = None  # this process's share of one core during the load


# ----- setting up -------------------------------------------------------------------------


def load_demo(env: dict[str, str], accounts: int) -> None:
    log(f"ledger demo --accounts {accounts}")
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "demo", "--accounts", str(accounts)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"ledger demo failed: {done.stderr.strip()[-2000:]}")
    log(done.stdout.strip())


def tokens(db: Database, schema: str) -> tuple[str, dict[UUID, str]]:
    """A regulator's token, and a token for each demo provider."""
    with db.connect() as conn:
        _, regulator = create_token(conn, schema, "regulator", None, "soak")
        providers = {
            ids.provider_id(code): create_token(
                conn, schema, "provider", ids.provider_id(code), f"soak-{code}"
            )[1]
            for code, _ in PROVIDERS
        }
    return regulator, providers


def candidates(
    db: Database, schema: str, regulator: str, providers: dict[UUID, str]
) -> tuple[list[Target], list[Target]]:
    """Accounts to sanction, and accounts that may publish, in a shuffled order."""
    query = sql.SQL(
        "SELECT account_id, provider_id, verified AND (kind <> 'public'"
        " OR review_outcome = 'approved') FROM {} ORDER BY position"
    ).format(sql.Identifier(schema, "accounts"))
    with db.connect() as conn:
        found = conn.execute(query).fetchall()
    random.Random(7).shuffle(found)
    sanctions = [Target("sanction", str(a), regulator) for a, _, _ in found]
    posts = [Target("post", str(a), providers[p]) for a, p, ok in found if ok and p in providers]
    return sanctions, posts


async def usable(url: str, found: Sequence[Target], want: int) -> list[Target]:
    """The first `want` of `found` that a write is accepted on (it is then written)."""
    rec = Record(clock())
    kept: list[Target] = []
    async with httpx.AsyncClient() as client:
        for i in range(0, len(found), 10):
            batch = found[i : i + 10]
            keys = [f"soak-probe:{uuid.uuid4().hex}" for _ in batch]
            await asyncio.gather(
                *(write(client, url, t, k, rec) for t, k in zip(batch, keys, strict=True))
            )
            kept += [t for t, k in zip(batch, keys, strict=True) if k in rec.acked]
            if len(kept) >= want:
                break
    return kept[:want]


def log_head(db: Database, schema: str) -> int:
    query = sql.SQL("SELECT max(notification_id) FROM {}").format(
        sql.Identifier(schema, "ledger_events")
    )
    with db.connect() as conn:
        row = conn.execute(query).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def wait_projected(db: Database, schema: str, head: int, timeout: float = 600) -> None:
    """Until every projection (and the sealer) has reached `head`: /readyz allows a lag."""
    query = sql.SQL("SELECT min(position) FROM {}").format(
        sql.Identifier(schema, "projection_positions")
    )
    deadline = clock() + timeout
    with db.connect(autocommit=True) as conn:
        while True:
            row = conn.execute(query).fetchone()
            if row and row[0] is not None and row[0] >= head:
                return
            if clock() > deadline:
                raise RuntimeError(f"the projections did not reach {head} in {timeout:.0f} s")
            time.sleep(0.2)


def set_up(args: argparse.Namespace, db: Database, schema: str, tmp: Path) -> Setup:
    load_demo(server_env(db, schema, tmp), args.accounts)
    regulator, providers = tokens(db, schema)
    app_name = f"ledger-soak-{uuid.uuid4().hex[:8]}"
    log("starting ledger serve (with its projector) and waiting for /readyz")
    server = start_ledger(db, schema, tmp, projector=True, env={"PGAPPNAME": app_name})
    try:
        wait_projected(db, schema, log_head(db, schema))
        data = data_set(db, schema)
        log(f"reads: every account and every page of every filter ({len(data.accounts)} accounts)")
        calls = {read: traffic_for(server, read, data, regulator)[0] for read in READS}
        sanctions, posts = candidates(db, schema, regulator, providers)
        url = server.url + "/graphql"
        publishing = asyncio.run(usable(url, posts, TARGETS))
        taken = {t.account for t in publishing}
        others = [t for t in sanctions if t.account not in taken]
        targets = publishing + asyncio.run(usable(url, others, TARGETS))
        if not targets:
            raise RuntimeError("no account takes a sanction or a post")
        start = log_head(db, schema)
    except BaseException:
        server.stop()
        raise
    return Setup(server, regulator, calls, targets, start, app_name)


# ----- the run ------------------------------------------------------------------------------


async def scrape_metrics(client: httpx.AsyncClient, url: str) -> str:
    token = os.environ.get("LEDGER_METRICS_TOKEN", "").strip()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = await client.get(url + "/metrics", headers=headers, timeout=5)
    except httpx.HTTPError:
        return ""
    return response.text if response.status_code == 200 else ""


class Sampler:
    """Samples the server every `every` seconds into `run.samples`."""

    def __init__(self, setup: Setup, db: Database, run: Run, every: float) -> None:
        self.server, self.run, self.every = setup.server, run, every
        self.connections = Connections(db.conninfo, setup.app_name)
        self.previous: Scrape | None = None

    async def sample(self, client: httpx.AsyncClient) -> Sample:
        pids = process_tree(self.server.process.pid)
        rss, fds, cpu = rss_bytes(pids), open_fds(pids), cpu_seconds(pids)
        connections = await asyncio.to_thread(self.connections.count)
        scrape = gc_pause_scrape(await scrape_metrics(client, self.server.url))
        pause = longest_pause(self.previous, scrape)
        self.previous = scrape
        return Sample(self.run.rec.now(), rss, fds, connections, cpu, pause)

    async def loop(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient() as client:
            while not stop.is_set():
                if self.server.process.poll() is not None:
                    self.run.server_exited = f"exit status {self.server.process.returncode}"
                    return
                self.run.samples.append(await self.sample(client))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.every)

    def close(self) -> None:
        self.connections.close()


async def progress(args: argparse.Namespace, run: Run) -> None:
    """Each row of the table on stderr as its period ends."""
    log(header())
    duration = args.minutes * 60
    k = 0
    while k * args.row_seconds < duration:
        end = min((k + 1) * args.row_seconds, duration)
        await asyncio.sleep(max(0.0, end - run.rec.now()))
        log(line(cells(row(k * args.row_seconds, end, run.samples, run.rec, run.subscribers))))
        k += 1


async def catch_up(subscribers: Sequence[Subscriber], head: int, timeout: float) -> None:
    deadline = clock() + timeout
    while clock() < deadline and any(s.last() < head for s in subscribers):
        await asyncio.sleep(0.2)


async def load(args: argparse.Namespace, setup: Setup, db: Database, ledger: Ledger) -> Run:
    url = setup.server.url + "/graphql"
    ws_url = url.replace("http://", "ws://")
    run = Run(Record(clock()), [], [], None)
    run.subscribers = [
        Subscriber(
            n, ws_url, setup.token, setup.start, args.resume_every if n < args.resuming else None
        )
        for n in range(args.subscribers)
    ]
    tasks = [asyncio.create_task(s.run(run.rec)) for s in run.subscribers]
    deadline = clock() + 120
    while not all(s.sessions for s in run.subscribers) and clock() < deadline:
        await asyncio.sleep(0.1)
    sampler = Sampler(setup, db, run, args.sample_seconds)
    try:
        async with httpx.AsyncClient() as client:
            run.idle = await sampler.sample(client)
        run.rec.t0 = clock()
        cpu_before = os.times()
        stop = asyncio.Event()
        sampling = asyncio.create_task(sampler.loop(stop))
        rows_shown = asyncio.create_task(progress(args, run))
        duration = args.minutes * 60
        run_id = uuid.uuid4().hex[:8]
        await asyncio.gather(
            writes(url, setup.targets, args.writes, duration, run.rec, run_id),
            reads(url, setup.calls, READ_WEIGHTS, args.reads, duration, run.rec, run_id),
        )
        cpu_after = os.times()
        used = cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system
        run.client_cpu = used / run.rec.now()
        run.head = await asyncio.to_thread(ledger.head)
        log(f"load done; the subscribers catch up to position {run.head}")
        await catch_up(run.subscribers, run.head, CATCH_UP)
        stop.set()
        await sampling
        rows_shown.cancel()
        if setup.server.process.poll() is not None and run.server_exited is None:
            run.server_exited = f"exit status {setup.server.process.returncode}"
    finally:
        for s in run.subscribers:
            s.stop.set()
        await asyncio.wait(tasks, timeout=35)
        for t in tasks:
            t.cancel()
        sampler.close()
    return run


# ----- checking and reporting ---------------------------------------------------------------


def logged_writes(events: Sequence[LoggedEvent]) -> dict[str, list[int]]:
    """Idempotency key -> the positions of the events of the soak's writes in `events`:
    a sanction names its key in its reason, a post is its key as its ref."""
    out: dict[str, list[int]] = {}
    for e in events:
        if e.type == "Account.SanctionImposed":
            key = str(e.payload.get("reason", "")).removeprefix(REASON)
        else:
            key = str(e.payload.get("ref", ""))
        if key.startswith("soak:"):
            out.setdefault(key, []).append(e.position)
    return out


def verdicts(args: argparse.Namespace, run: Run, ledger: Ledger, start: int) -> list[Verdict]:
    windows = Windows.of(args.minutes * 60)
    window = [e for e in ledger.read_log(start) if e.position <= run.head]
    expected = [e.position for e in window]
    logged = logged_writes([e for e in window if e.type in WRITTEN])
    found = [
        rss_rule([(s.at, s.rss) for s in run.samples], windows),
        p99_rule(run.rec.reads, windows, floor=args.p99_floor_ms / 1000),
        writes_rule(run.rec.acked, logged),
        deliveries_rule(expected, {s.name: list(s.positions) for s in run.subscribers}),
    ]
    exited = run.server_exited
    found.append(Verdict("the server ran to the end", exited is None, exited or "it did"))
    return found


def report(
    args: argparse.Namespace, db: Database, schema: str, setup: Setup, run: Run,
    results: list[Verdict], load_average: tuple[float, float],
) -> None:  # fmt: skip
    windows = Windows.of(args.minutes * 60)
    rec = run.rec
    kinds = Counter(t.kind for t in setup.targets)
    print(
        f"Soak: ledger serve (one worker, with its projector) on PostgreSQL"
        f" {server_version(db)} ({server_name(db)}), schema {schema}, `ledger demo --accounts"
        f" {args.accounts}` ({setup.start} events before the load)"
    )
    print(
        f"{args.minutes:g} min of load: {args.writes:g} writes/s ({kinds['sanction']} accounts"
        f" sanctioned, {kinds['post']} publishing), {args.reads:g} reads/s"
        f" ({', '.join(f'{k} {len(v)}' for k, v in setup.calls.items())} requests to draw"
        f" from), {args.subscribers} `events` subscribers ({min(args.resuming, args.subscribers)}"
        f" resuming every ~{args.resume_every:g} s); a sample every {args.sample_seconds:g} s"
    )
    print(
        f"load average (1 min) {load_average[0]:.2f} at the start, {load_average[1]:.2f} at"
        f" the end, on {os.cpu_count()} cores shared with whatever else runs: figures are noisy"
    )
    if run.idle is not None:
        print(
            f"before the load: RSS {run.idle.rss / 2**20:.0f} MB, {run.idle.fds} fds,"
            f" {run.idle.connections} database connections"
        )
    print()
    print(table(rows(args.minutes * 60, args.row_seconds, run.samples, rec, run.subscribers)))
    print()
    print(LEGEND)
    print()
    print(
        f"windows: warm-up 0-{windows.warmup:.0f} s, baseline {windows.baseline[0]:.0f}-"
        f"{windows.baseline[1]:.0f} s, final {windows.final[0]:.0f}-{windows.final[1]:.0f} s"
    )
    print(
        f"writes: {len(rec.acked)} acknowledged, {len(rec.abandoned)} abandoned, "
        f"{rec.skipped['writes']} not sent (too many waiting); answers {dict(rec.write_answers)}"
    )
    print(
        f"reads: {len(rec.reads)} answered, {sum(rec.read_failures.values())} failed"
        f" {dict(rec.read_failures) or ''}"
    )
    if run.client_cpu is not None:
        print(f"this process (the clients): {run.client_cpu:.0%} of a core during the load")
    ends: Counter[str] = Counter()
    for s in run.subscribers:
        ends.update(s.ends)
    print(
        f"subscribers: {sum(len(s.positions) for s in run.subscribers)} deliveries,"
        f" {sum(len(s.sessions) for s in run.subscribers)} subscriptions, sessions ended by"
        f" {dict(ends.most_common()) or 'nothing'}; log head {run.head}"
    )
    errors = server_errors(setup.server)
    print(f"server log: {len(errors)} ERROR lines or tracebacks")
    for text in list(dict.fromkeys(errors))[:5]:
        print(f"  {text[:160]}")
    print()
    for v in results:
        print(f"  {v.line()}")
    failed = [v.rule for v in results if not v.ok]
    print()
    print(f"SOAK FAILED: {'; '.join(failed)}" if failed else "soak passed: every rule held")


def server_errors(server: Server) -> list[str]:
    try:
        lines = server.log_path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [x for x in lines if " ERROR " in x or x.startswith(("ERROR", "Traceback"))]


def soak(args: argparse.Namespace, db: Database, schema: str, tmp: Path) -> bool:
    load_at_start = os.getloadavg()[0]
    setup = set_up(args, db, schema, tmp)
    ledger = Ledger.open(db, schema, vault=Vault(VAULT_KEY))
    try:
        log(
            f"soak: {args.minutes:g} min on {setup.server.url}, {len(setup.targets)} write"
            f" targets, {args.subscribers} subscribers from position {setup.start}"
        )
        run = asyncio.run(load(args, setup, db, ledger))
        results = verdicts(args, run, ledger, setup.start)
    finally:
        ledger.close()
        setup.server.stop()
    report(args, db, schema, setup, run, results, (load_at_start, os.getloadavg()[0]))
    return all(v.ok for v in results)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--minutes", type=float, default=10.0, help="minutes of load (default 10)")
    add("--writes", type=float, default=20.0, help="writes a second (default 20)")
    add("--reads", type=float, default=50.0, help="reads a second (default 50)")
    add("--subscribers", type=int, default=50, help="events subscribers (default 50)")
    add("--accounts", type=int, default=500, help="demo accounts (default 500)")
    add("--resuming", type=int, default=10, help="subscribers that resume (default 10)")
    add("--resume-every", type=float, default=45.0, help="seconds between resumptions (~45)")
    add("--sample-seconds", type=float, default=5.0, help="seconds between samples (default 5)")
    add("--row-seconds", type=float, default=60.0, help="seconds per table row (default 60)")
    add(
        "--p99-floor-ms", type=float, default=P99_FLOOR_S * 1000,
        help="read p99 drift is not judged under this (default 50 ms)",
    )  # fmt: skip
    add("--keep", action="store_true", help="keep the run's directory and schema")
    args = parser.parse_args(argv)
    positive = ("minutes", "writes", "reads", "subscribers", "accounts", "resume_every",
                "sample_seconds", "row_seconds")  # fmt: skip
    if min(getattr(args, name) for name in positive) <= 0 or args.resuming < 0:
        parser.error("every figure must be positive (--resuming may be 0)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    schema = f"soak_{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix="ledger-soak-"))
    try:
        # LEDGER_DATABASE_URL when set, else an embedded server in this run's directory.
        with Database(None, tmp / "db") as db:
            try:
                ok = soak(args, db, schema, tmp)
            except KeyboardInterrupt:
                log("interrupted")
                return 130
            finally:
                if not args.keep:
                    db.drop_schema(schema)
    finally:
        if args.keep:
            log(f"kept {tmp} (the server's log, the embedded database) and schema {schema}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
