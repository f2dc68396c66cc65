"""Catch-up throughput and live lag of the projections, against raw reads of the log and
the commit latency of the same writes, measured in the same run.

The data set is the demo (`ledger demo`) scaled to `--accounts` (15,000: about 500,000
events; `--quick`: 1,500, about 50,000), loaded through `Ledger.submit` with the demo's
simulated clock into the schema `bench_projections_<accounts>`. Loading takes minutes, so
`--keep` leaves that schema in place and the next run reuses it; by default it is dropped
at the end. (The live measurement below appends to it, so a kept data set grows by a few
thousand events per run: the header gives the count of each run.)

Catch-up, each `--repeats` times, interleaved so that drift falls on all alike:

- raw read: the notifications paged with plain psycopg, 1,000 per query, as the
  projector reads them (`notification_id > %s ORDER BY notification_id LIMIT 1000`);
- read + decode: the same, and each row made a domain event by the ledger's mapper;
- rebuild by folding: `projections.rebuild.rebuild` of every projection into a scratch
  schema, as `ledger rebuild` runs it: each read model's rows folded in memory over one
  read of the log, written with COPY, indexed, swapped in (`projections.folds`);
- rebuild in bulk: the same with `fold=False`, the projections' own statements replayed a
  page a transaction, set-based where they can be (`projections.bulk`), as before folds.

Live lag: a steady write load of `--rate` commands/s for `--seconds` s (`PublishPost` and
`RecordReach`, alternating, on accounts registered for the run under a demo provider),
paced on a fixed schedule. First without a projector: the commit latency of
`Ledger.execute`, the baseline. Then again with a `Projector` following the log in a
background thread of this process (on the scratch schema the rebuild left at the head):
per command, the time from `execute` returning to the lowest projection position reaching
the command's position, read from another connection every `--poll-ms` ms. A position is
timed when the poll that first sees it returns, so the lag is exact to about one poll
interval. The projector shares this process (and its GIL) with the writer, as in a
single-process deployment; `ledger project` runs it in a process of its own.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import resource
import statistics
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from bench import common
from bench.common import (
    LIVE_ACCOUNTS,
    PositionWatch,
    Progress,
    events_per_second,
    events_query,
    fixed_key,
    load_demo,
    log,
    notification,
    paced,
    pages,
    quantiles,
    server_name,
    server_version,
)
from ledger import Database, Ledger
from ledger import commands as c
from ledger.domain import ids
from ledger.vault import Vault
from projections.base import Projection
from projections.rebuild import rebuild
from projections.registry import resolve
from projections.runner import Projector

PAGE = 1000
VAULT_KEY = fixed_key("bench.projections")


# ----- the data set ------------------------------------------------------------------


def topics(db: Database, ledger: Ledger) -> dict[str, int]:
    with db.connect() as conn:
        rows = conn.execute(
            sql.SQL("SELECT topic, count(*) FROM {} GROUP BY topic").format(
                ledger.store.events_table
            )
        ).fetchall()
    return {str(topic): int(n) for topic, n in rows}


# ----- catch-up ------------------------------------------------------------------------


def read_raw(conn: psycopg.Connection[Any], ledger: Ledger) -> int:
    return sum(len(rows) for rows in pages(conn, events_query(ledger.store.events_table), PAGE))


def read_decode(conn: psycopg.Connection[Any], ledger: Ledger) -> int:
    mapper, n = ledger.mapper, 0
    for rows in pages(conn, events_query(ledger.store.events_table), PAGE):
        for r in rows:
            mapper.to_domain_event(notification(r))
        n += len(rows)
    return n


def project(
    db: Database, ledger: Ledger, chosen: Sequence[Projection], schema: str, fold: bool = True
) -> int:
    progress = Progress("rebuild, events")
    try:
        return rebuild(ledger, db, chosen, schema=schema, progress=progress, fold=fold)
    finally:
        progress.close()


def cpu_with_children() -> float:
    """CPU seconds of this process and of its children that have ended (history's)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


# ----- live lag ------------------------------------------------------------------------


class Writer(common.Writer):
    """Accounts registered for this run under a demo provider, and a stream of commands
    for them: a new post, then more reach on an earlier one, and so on."""

    def __init__(self, ledger: Ledger, accounts: int = LIVE_ACCOUNTS) -> None:
        super().__init__(ledger, accounts)
        self.views: dict[UUID, int] = {}
        for cmd in self.publish(accounts):  # every account has a post to record reach on
            self.ledger.execute(cmd)

    def publish(self, n: int) -> list[c.Command]:
        out: list[c.Command] = []
        for _ in range(n):
            cmd = self.post(self.accounts[len(self.views) % len(self.accounts)])
            self.views[ids.post_id(cmd.account_id, cmd.idempotency_key)] = 0
            out.append(cmd)
        return out

    def commands(self, n: int) -> list[c.Command]:
        posts = itertools.cycle(list(self.views))
        out: list[c.Command] = []
        for i in range(n):
            if i % 2 == 0:
                out.extend(self.publish(1))
                continue
            post = next(posts)
            self.views[post] += 100
            views = self.views[post]
            out.append(
                c.RecordReach(
                    actor=self.ops,
                    idempotency_key=self.key(),
                    post_id=post,
                    views=views,
                    reposts=views // 20,
                )
            )
        return out


@dataclass(frozen=True)
class Live:
    commands: int  # per phase
    rate_alone: float  # commands/s achieved without a projector
    rate_followed: float  # and with one
    commit_alone: list[float]  # seconds in `execute`, without a projector
    commit_followed: list[float]  # and with one
    lag: list[float]  # seconds from commit to projected
    poll: float  # mean seconds between polls of the positions


def live(
    args: argparse.Namespace,
    db: Database,
    ledger: Ledger,
    projector_ledger: Ledger,
    chosen: Sequence[Projection],
    read_schema: str,
) -> Live:
    writers = [Writer(ledger, max(1, LIVE_ACCOUNTS // args.writers)) for _ in range(args.writers)]
    n = round(args.rate * args.seconds)

    def streams(total: int) -> list[list[c.Command]]:
        w = len(writers)
        return [x.commands(total // w + (k < total % w)) for k, x in enumerate(writers)]

    paced(ledger, streams(round(args.rate)), args.rate)  # warm-up: one second of the load
    log(f"live: {n} commands at {args.rate:g}/s without a projector")
    baseline, baseline_rate, _ = paced(ledger, streams(n), args.rate)

    projector = Projector(projector_ledger, db, read_schema, chosen)
    stop, ready = threading.Event(), threading.Event()
    failed: list[BaseException] = []

    def follow() -> None:
        try:
            projector.follow(stop, ready.set)
        except BaseException as e:
            failed.append(e)
        finally:
            ready.set()

    follower = threading.Thread(target=follow, name="projector", daemon=True)
    watch = PositionWatch(db, read_schema, args.poll_ms / 1000)
    follower.start()
    try:
        ready.wait()
        if failed:
            raise failed[0]
        watch.start()
        log(f"live: {n} commands at {args.rate:g}/s with a projector following")
        written, written_rate, _ = paced(ledger, streams(n), args.rate)
        last, deadline = written[-1].position, time.perf_counter() + 30
        while watch.reached() < last and time.perf_counter() < deadline and not failed:
            time.sleep(0.01)
    finally:
        watch.stop.set()
        stop.set()
        if watch.is_alive():
            watch.join()
        follower.join()
    if failed:
        raise failed[0]
    lags = [watch.lag(w) for w in written]
    seen = [x for x in lags if x is not None]
    if len(seen) < len(lags):
        log(f"warning: {len(lags) - len(seen)} positions not projected within 30 s")
    return Live(
        n,
        baseline_rate,
        written_rate,
        [w.latency for w in baseline],
        [w.latency for w in written],
        seen,
        watch.mean_interval(),
    )


# ----- the run -------------------------------------------------------------------------


def benchmark(args: argparse.Namespace, db: Database, schema: str, read_schema: str) -> None:
    load_demo(db, schema, args.accounts, VAULT_KEY)
    chosen = resolve()
    with contextlib.ExitStack() as cleanup:
        ledger = Ledger.open(db, schema, vault=Vault(VAULT_KEY))
        cleanup.callback(ledger.close)
        projector_ledger = Ledger.open(db, schema, vault=Vault(VAULT_KEY))
        cleanup.callback(projector_ledger.close)
        conn = db.connect(autocommit=True)
        cleanup.callback(conn.close)

        events = ledger.head()
        counts = topics(db, ledger)
        handled = {t for p in chosen for t in p.handlers}
        projected = sum(n for t, n in counts.items() if t in handled)

        # Warm-up: connections, prepared statements, the server's cache.
        read_raw(conn, ledger)
        read_decode(conn, ledger)
        rates: dict[str, list[float]] = {"raw": [], "decode": [], "project": [], "bulk": []}
        reads: dict[str, set[int]] = {k: set() for k in rates}
        # The rebuilding process's own CPU per event: what is left is the server's (and,
        # on a loaded machine, waiting for a core).
        cpu: dict[str, list[float]] = {"project": [], "bulk": []}
        for repeat in range(args.repeats):
            log(f"catch-up: repeat {repeat + 1} of {args.repeats}")
            for key, run in (
                ("raw", lambda: read_raw(conn, ledger)),
                ("decode", lambda: read_decode(conn, ledger)),
                ("project", lambda: project(db, ledger, chosen, read_schema)),
                ("bulk", lambda: project(db, ledger, chosen, read_schema, fold=False)),
            ):
                started = cpu_with_children()
                rate, n = events_per_second(run)
                if key in cpu:
                    cpu[key].append((cpu_with_children() - started) / n)
                rates[key].append(rate)
                reads[key].add(n)
        assert all(r == {events} for r in reads.values()), reads
        result = live(args, db, ledger, projector_ledger, chosen, read_schema)

    print(
        f"Projection benchmark - PostgreSQL {server_version(db)} {server_name(db)}, schema {schema}"
    )
    print(
        f"{events} events ({args.accounts} demo accounts, {len(counts)} event types); "
        f"{projected} of them handled by some of the {len(chosen)} projections "
        f"({', '.join(p.name for p in chosen)})\n"
    )

    raw = statistics.median(rates["raw"])

    def cell(key: str) -> str:
        r = rates[key]
        return f"{statistics.median(r):.0f} ({min(r):.0f}-{max(r):.0f})"

    print(f"catch-up, {args.repeats} repeats, whole log, {PAGE} a page")
    print(f"{'median (min-max)':<36}{'events/s':>24}{'seconds':>10}{'/raw':>8}")
    for label, key in (
        ("raw read (psycopg)", "raw"),
        ("read + decode (mapper)", "decode"),
        ("rebuild by folding, all", "project"),
        ("rebuild in bulk (no folds), all", "bulk"),
    ):
        median = statistics.median(rates[key])
        print(f"{label:<36}{cell(key):>24}{events / median:>10.1f}{median / raw:>8.2f}")
    for key, label in (("project", "by folding"), ("bulk", "in bulk")):
        per_event = statistics.median(cpu[key])
        print(
            f"rebuild {label}: {per_event * 1e6:.0f} us of CPU per event in this process and"
            f" the processes it ran (median), a ceiling of {1 / per_event:.0f} events/s on one"
            " core for its Python alone"
        )
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")

    print(
        f"\nlive: {result.commands} commands (PublishPost/RecordReach alternating) at "
        f"{args.rate:g}/s for {args.seconds:g} s from {args.writers} writer threads;\n"
        f"achieved {result.rate_alone:.0f}/s without, {result.rate_followed:.0f}/s with the"
        f" projector; positions polled every {result.poll * 1000:.2f} ms (mean)"
    )
    print(f"{'':<36}{'p50 ms':>12}{'p99 ms':>12}{'max ms':>10}")
    for label, values in (
        ("commit, no projector (baseline)", result.commit_alone),
        ("commit, projector following", result.commit_followed),
        ("commit -> projected (lag)", result.lag),
    ):
        q = quantiles(values)
        print(f"{label:<36}{q[49] * 1000:>12.2f}{q[98] * 1000:>12.2f}{max(values) * 1000:>10.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.projections",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--accounts",
        type=int,
        default=15_000,
        help="demo accounts (default 15000: about 500,000 events)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="catch-up repeats (default 3)")
    parser.add_argument(
        "--rate", type=float, default=200, help="live write load, commands/s (default 200)"
    )
    parser.add_argument(
        "--seconds", type=float, default=20, help="live write load, seconds per phase (default 20)"
    )
    parser.add_argument(
        "--writers", type=int, default=4, help="live: writer threads sharing the load (default 4)"
    )
    parser.add_argument(
        "--poll-ms", type=float, default=1.0, help="live: position poll interval, ms (default 1)"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the data set schema for the next run, which reuses it",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 1500 accounts (~50,000 events), 1 repeat, 5 s live",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.accounts, args.repeats, args.seconds = 1_500, 1, 5
    if min(args.accounts, args.repeats, args.writers, args.rate, args.seconds, args.poll_ms) <= 0:
        parser.error(
            "--accounts, --repeats, --writers, --rate, --seconds and --poll-ms must be positive"
        )

    schema = f"bench_projections_{args.accounts}"
    read_schema = f"bench_projections_read_{uuid.uuid4().hex[:12]}"
    with Database() as db:
        try:
            benchmark(args, db, schema, read_schema)
        finally:
            db.drop_schema(read_schema)
            if not args.keep:
                db.drop_schema(schema)


if __name__ == "__main__":
    main()
