"""Append throughput of the ledger, against a raw psycopg ceiling measured in the same run.

Measured, on one fresh PostgreSQL schema:

- ledger (a): `Ledger.execute` of one `PublishPost` per transaction;
- ledger (b): `Ledger.submit` of batches of `--batch` (100) `PublishPost` commands, one
  transaction per batch.

The commands publish on accounts registered, verified, signed and approved beforehand
(round-robin over `ACCOUNTS` of them), each with a fresh idempotency key. A `PublishPost`
reads its idempotency key and its account in one pipelined round trip (the account
brought forward from memory), and appends one `Post.Published` event plus one idempotency
row; that the post is new, the event table's key checks at insert.

The baseline does the same appends with raw psycopg: rows of the mean size of the ledger's
stored `state` (measured on the events written in the warm-up), into a table of the shape
of the ledger's events table (same columns, keys, index and storage options), one row or a
batch of rows per transaction, in the transaction the library runs: `LOCK TABLE ... IN
EXCLUSIVE MODE`, `NOTIFY`, one multi-row `INSERT ... RETURNING notification_id`, pipelined
on one connection. The ledger does all of that and more (reads, validation, serialisation,
the idempotency row, a connection pool), so the baseline is the ceiling of this write
pattern on this server, and ledger/raw is the share of that ceiling the ledger reaches.

Each measurement runs `--repeats` times, interleaved so that drift on the server (table
growth, checkpoints) falls on all of them alike; the median rate is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import re
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from psycopg import sql

from bench.common import approved_account, publish_post, quantiles, server_name
from ledger import Actor, Database, Ledger, Role
from ledger import commands as c
from ledger.importer import run_import, to_line
from ledger.vault import Vault

REGULATOR = Actor("bench-regulator", Role.REGULATOR)
ACCOUNTS = 20
TOPIC = "Post.Published"


class Publisher:
    """A provider with approved accounts, and fresh `PublishPost` commands for them."""

    def __init__(self, ledger: Ledger, accounts: int = ACCOUNTS) -> None:
        self.ledger = ledger
        self.serial = itertools.count()
        provider = self.run(
            c.RegisterProvider, REGULATOR, code="bench", name="Bench", licence_ref="L-bench"
        )["provider_id"]
        self.ops = Actor("bench-ops", Role.PROVIDER, UUID(provider))
        self.accounts = [self._account() for _ in range(accounts)]

    def run(
        self, command: type[c.Command], actor: Actor | None = None, **args: Any
    ) -> dict[str, Any]:
        """Execute `command` as `actor` (default: the provider's operator); its value."""
        key = f"k{next(self.serial)}"
        actor = actor or self.ops
        return self.ledger.execute(command(actor=actor, idempotency_key=key, **args)).value

    def _account(self) -> UUID:
        handle = f"bench{next(self.serial)}"
        agreement = self.ledger.ruleset.agreement
        return approved_account(self.run, self.ops, agreement, handle)

    def commands(self, n: int) -> list[c.Command]:
        out: list[c.Command] = []
        for _ in range(n):
            i = next(self.serial)
            account = self.accounts[i % len(self.accounts)]
            out.append(publish_post(self.ops, f"k{i}", account, f"post-{i}"))
        return out


class RawTable:
    """A table of the shape of the ledger's events table, appended to as the library does."""

    def __init__(self, db: Database, schema: str, payload: int, create: bool = True) -> None:
        self.payload = payload
        self.conn = db.connect(autocommit=True)
        table = sql.Identifier(schema, "raw_events")
        if create:
            self._create(table)
        self.lock = sql.SQL("LOCK TABLE {t} IN EXCLUSIVE MODE").format(t=table)
        self.notify = sql.SQL("NOTIFY {c}").format(c=sql.Identifier(f"{schema}_raw_events"))
        self.insert = sql.SQL(
            "INSERT INTO {t} (originator_id, originator_version, topic, state)"
            " SELECT * FROM unnest(%s::uuid[], %s::bigint[], %s::text[], %s::bytea[])"
            " RETURNING notification_id"
        ).format(t=table)

    def _create(self, table: sql.Composable) -> None:
        self.conn.execute(
            sql.SQL(
                "CREATE TABLE {t} (originator_id uuid NOT NULL, originator_version bigint NOT NULL,"
                " topic text, state bytea, notification_id bigserial,"
                " PRIMARY KEY (originator_id, originator_version))"
                " WITH (autovacuum_enabled = true, autovacuum_vacuum_threshold = 100000000,"
                " autovacuum_vacuum_scale_factor = 0.5, autovacuum_analyze_threshold = 1000,"
                " autovacuum_analyze_scale_factor = 0.01)"
            ).format(t=table)
        )
        self.conn.execute(
            sql.SQL(
                "CREATE UNIQUE INDEX raw_events_notification_id ON {t} (notification_id)"
            ).format(t=table)
        )

    def rows(self, n: int) -> list[tuple[UUID, int, str, bytes]]:
        return [(uuid.uuid4(), 1, TOPIC, os.urandom(self.payload)) for _ in range(n)]

    def append(self, rows: Sequence[tuple[UUID, int, str, bytes]]) -> None:
        with self.conn.pipeline() as pipeline, self.conn.transaction():
            self.conn.execute(self.lock, prepare=True)
            self.conn.execute(self.notify, prepare=True)
            cursor = self.conn.execute(
                self.insert, [list(col) for col in zip(*rows, strict=True)], prepare=True
            )
            pipeline.sync()
            assert len(cursor.fetchall()) == len(rows)


def timed(
    append: Callable[[Any], object], items: Sequence[Any], batch: int
) -> tuple[float, list[float]]:
    """Append items `batch` at a time: (total seconds, seconds per call)."""
    latencies: list[float] = []
    start = time.perf_counter()
    for i in range(0, len(items), batch):
        t = time.perf_counter()
        append(items[i : i + batch])
        latencies.append(time.perf_counter() - t)
    return time.perf_counter() - start, latencies


def mean_state_size(db: Database, ledger: Ledger, after: int) -> tuple[float, int]:
    with db.connect() as conn:
        row = conn.execute(
            sql.SQL(
                "SELECT avg(octet_length(state))::float8, count(*) FROM {e}"
                " WHERE notification_id > %s AND topic = %s"
            ).format(e=ledger.store.events_table),
            [after, TOPIC],
        ).fetchone()
    assert row is not None and row[1] > 0
    return row[0], row[1]


def benchmark(args: argparse.Namespace, db: Database, schema: str) -> None:
    with contextlib.ExitStack() as cleanup:
        ledger = Ledger(db.eventsourcing_env(schema), vault=Vault(os.urandom(32)))
        cleanup.callback(ledger.close)
        publisher = Publisher(ledger)

        def single(commands: list[c.Command]) -> object:
            return ledger.execute(commands[0])

        n, batch = args.commands, args.batch
        # Warm-up: connections, prepared statements, caches; and the payload size.
        start = ledger.head()
        timed(single, publisher.commands(batch), 1)
        timed(ledger.submit, publisher.commands(batch), batch)
        payload, _ = mean_state_size(db, ledger, start)
        raw = RawTable(db, schema, round(payload))
        cleanup.callback(raw.conn.close)
        timed(raw.append, raw.rows(batch), 1)
        timed(raw.append, raw.rows(batch), batch)

        start = ledger.head()
        rates: dict[str, list[float]] = {k: [] for k in ("la", "ra", "lb", "rb")}
        lat: dict[str, list[float]] = {"la": [], "ra": []}
        for _ in range(args.repeats):
            for key, append, items, per_tx in (
                ("la", single, publisher.commands(n), 1),
                ("ra", raw.append, raw.rows(n), 1),
                ("lb", ledger.submit, publisher.commands(n), batch),
                ("rb", raw.append, raw.rows(n), batch),
            ):
                seconds, latencies = timed(append, items, per_tx)
                rates[key].append(n / seconds)
                if key in lat:
                    lat[key].extend(latencies)
        state_size, events = mean_state_size(db, ledger, start)

    print(f"PublishPost append benchmark - PostgreSQL {server_name(db)}, schema {schema}")
    print(
        f"{args.repeats} repeats x {n} commands each; {ACCOUNTS} accounts; raw payload "
        f"{round(payload)} B (ledger state: {state_size:.0f} B mean over {events} events)\n"
    )

    def cell(key: str) -> str:
        return f"{statistics.median(rates[key]):.0f} ({min(rates[key]):.0f}-{max(rates[key]):.0f})"

    print(f"{'median (min-max)':<24}{'ledger cmd/s':>18}{'raw rows/s':>22}{'ledger/raw':>12}")
    for label, a, b in (
        ("(a) 1 per transaction", "la", "ra"),
        (f"(b) {batch} per transaction", "lb", "rb"),
    ):
        ratio = statistics.median(rates[a]) / statistics.median(rates[b])
        print(f"{label:<24}{cell(a):>18}{cell(b):>22}{ratio:>12.2f}")
    print(f"\n{'(a) latency':<24}{'p50 ms':>18}{'p99 ms':>22}")
    for label, key in (("ledger execute", "la"), ("raw transaction", "ra")):
        q = quantiles(lat[key])
        print(f"{label:<24}{q[49] * 1000:>18.2f}{q[98] * 1000:>22.2f}")


def concurrently(clients: int, work: Callable[[int], list[float]]) -> tuple[float, list[float]]:
    """Run work(client) in `clients` threads: (seconds, every call's latency)."""
    latencies: list[list[float]] = [[] for _ in range(clients)]

    def run(i: int) -> None:
        latencies[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, [x for xs in latencies for x in xs]


def concurrency(args: argparse.Namespace, db: Database, schema: str) -> None:
    """Ledger.execute and the raw one-row ceiling at each client count; ledger import
    against raw 100-row batches."""
    ledger = Ledger(db.eventsourcing_env(schema), vault=Vault(os.urandom(32)))
    publisher = Publisher(ledger, accounts=64)
    start = ledger.head()
    timed(lambda cs: ledger.execute(cs[0]), publisher.commands(50), 1)
    payload, _ = mean_state_size(db, ledger, start)
    raws = [RawTable(db, schema, round(payload), create=i == 0) for i in range(max(args.clients))]
    n = args.commands
    print(f"\n{'clients':<9}{'ledger cmd/s':>14}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'raw rows/s':>13}{'p99 ms':>9}{'ledger/raw':>12}{'groups':>9}")  # fmt: skip
    for clients in args.clients:
        per = n // clients
        work = [publisher.commands(per) for _ in range(clients)]
        groups, members = ledger.group_commit.groups, ledger.group_commit.members

        def execute(i: int, work: list[list[c.Command]] = work) -> list[float]:
            return timed(lambda cs: ledger.execute(cs[0]), work[i], 1)[1]

        seconds, lat = concurrently(clients, execute)
        per_group = (ledger.group_commit.members - members) / max(
            1, ledger.group_commit.groups - groups
        )
        rows = [raws[i].rows(per) for i in range(clients)]
        raw_seconds, raw_lat = concurrently(
            clients, lambda i, rows=rows: timed(raws[i].append, rows[i], 1)[1]
        )
        rate, raw_rate = per * clients / seconds, per * clients / raw_seconds
        q, rq = quantiles(lat), quantiles(raw_lat)
        print(f"{clients:<9}{rate:>14.0f}{q[49] * 1000:>9.1f}{q[98] * 1000:>9.1f}"
              f"{raw_rate:>13.0f}{rq[98] * 1000:>9.1f}{rate / raw_rate:>12.2f}"
              f"{per_group:>9.1f}")  # fmt: skip
    lines = [to_line(cmd) for cmd in publisher.commands(n)]
    started = time.perf_counter()
    report = run_import(ledger, lines, batch=args.batch)
    import_rate = report.recorded / (time.perf_counter() - started)
    rows = raws[0].rows(n)
    raw_seconds, _ = timed(raws[0].append, rows, args.batch)
    raw_rate = n / raw_seconds
    print(f"\nledger import ({args.batch} per transaction): {import_rate:.0f} cmd/s;"
          f" raw {args.batch}-row batches {raw_rate:.0f} rows/s;"
          f" ratio {import_rate / raw_rate:.2f}")  # fmt: skip
    for raw in raws:
        raw.conn.close()
    ledger.close()


PUBLISH_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
local accounts = {{{accounts}}}
local n = 0
local query = 'mutation($a: ID!, $k: String!) {{ publishPost(input: {{accountId: $a, ref: $k,'
  .. ' origin: \\\\"original\\\\", category: \\\\"other\\\\", contentSha256: \\\\"{sha}\\\\"}},'
  .. ' idempotencyKey: $k) {{ {selection} }} }}'
request = function()
  n = n + 1
  local body = '{{"query": "' .. query .. '", "variables": {{"a": "' .. accounts[n % #accounts + 1]
    .. '", "k": "{prefix}-' .. n .. '"}}}}'
  return wrk.format(nil, nil, nil, body)
end
"""


def graphql_writes(args: argparse.Namespace, db: Database, schema: str) -> None:
    """publishPost over HTTP (wrk) against `ledger serve`, at each client count; every
    request a new post with a fresh idempotency key, round-robin over 64 accounts. With
    one worker the projector and the sealer share its process; with two they run in the
    parent, and each worker group-commits on its own."""
    from api.auth import create_token
    from bench.api import VAULT_KEY, WRK_DONE, start_ledger, wrk

    ledger = Ledger(db.eventsourcing_env(schema), vault=Vault(VAULT_KEY))
    publisher = Publisher(ledger, accounts=64)
    with db.connect() as conn:
        token = create_token(conn, schema, "provider", publisher.ops.provider_id, "b")[1]
    accounts = ", ".join(f'"{a}"' for a in publisher.accounts)
    print(f"\n{'GraphQL publishPost':<22}{'workers':>8}{'cmd/s':>8}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'recorded':>10}{'request ms':>12}{'submit ms':>11}")  # fmt: skip
    for workers in (1, 2):
        with tempfile.TemporaryDirectory(prefix="ledger-bench-") as tmp:
            server = start_ledger(db, schema, Path(tmp), projector=True, workers=workers)
            try:
                for clients in args.clients:
                    script = Path(tmp) / f"publish-{clients}.lua"
                    lua = PUBLISH_LUA.format(token=token, accounts=accounts, sha="a" * 64,
                                             prefix=f"w{workers}-{clients}",
                                             selection="__typename")  # fmt: skip
                    script.write_text(lua + WRK_DONE)
                    head, before = ledger.head(), server_seconds(server)
                    run = wrk(server.url + "/graphql", script, clients, args.seconds)
                    recorded = ledger.head() - head
                    after = server_seconds(server)
                    request = mean_ms(before["request"], after["request"])
                    submit = mean_ms(before["submit"], after["submit"])
                    print(f"{clients:<22}{workers:>8}{run.rate:>8.0f}{run.p50:>9.1f}"
                          f"{run.p99:>9.1f}{recorded:>10}{request:>12.2f}"
                          f"{submit:>11.2f}")  # fmt: skip
            finally:
                server.stop()
    ledger.close()


SECONDS = {
    "request": re.compile(
        r'^ledger_request_duration_seconds_(sum|count)\{[^}]*transport="http"[^}]*\} (\S+)$',
        re.MULTILINE,
    ),
    "submit": re.compile(
        r'^ledger_command_duration_seconds_(sum|count)\{command="PublishPost"\} (\S+)$',
        re.MULTILINE,
    ),
}


def server_seconds(server: Any) -> dict[str, tuple[float, float]]:
    """Seconds the server spent answering GraphQL requests over HTTP, and inside
    `Ledger.submit` for PublishPost, each as (sum, count) from its /metrics: the means'
    difference over a run is what GraphQL, HTTP and the hand-off to a thread cost."""
    from bench.api import http

    status, raw = http("GET", server.url + "/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics: HTTP {status}: {raw[:200]!r}")
    out = {}
    for name, pattern in SECONDS.items():
        found = pattern.findall(raw.decode())
        total = {kind: sum(float(v) for k, v in found if k == kind) for kind in ("sum", "count")}
        out[name] = (total["sum"], total["count"])
    return out


def mean_ms(before: tuple[float, float], after: tuple[float, float]) -> float:
    count = after[1] - before[1]
    return 1000 * (after[0] - before[0]) / count if count else float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.append",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--commands",
        type=int,
        default=2000,
        help="commands per repeat and measurement (default 2000)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="repeats (default 5)")
    parser.add_argument(
        "--batch", type=int, default=100, help="commands per transaction in (b) (default 100)"
    )
    parser.add_argument(
        "--clients",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[1, 16, 64],
        help="client counts for the concurrency table (default 1,16,64)",
    )
    parser.add_argument("--seconds", type=int, default=8, help="seconds per wrk run (default 8)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 200 commands x 2")
    args = parser.parse_args(argv)
    if args.quick:
        args.commands, args.repeats, args.seconds = 200, 2, 4
    if min(args.commands, args.repeats, args.batch) < 1:
        parser.error("--commands, --repeats and --batch must be at least 1")

    url = os.environ.get("LEDGER_DATABASE_URL") or None
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as tmp, Database(url, Path(tmp)) as db:
        db.create_schema(schema)
        try:
            benchmark(args, db, schema)
        finally:
            db.drop_schema(schema)
        for section in (concurrency, graphql_writes):
            db.create_schema(schema)  # afresh: the same provider and keys again
            try:
                section(args, db, schema)
            finally:
                db.drop_schema(schema)


if __name__ == "__main__":
    main()
