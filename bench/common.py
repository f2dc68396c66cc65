"""What the benchmarks share: the demo data set, progress and logging on stderr, reading the
log a page at a time, accounts and posts written for a run, paced writes and watching a
position follow them."""

from __future__ import annotations

import bisect
import hashlib
import itertools
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import Notification
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from ledger import Actor, Database, Ledger, Role
from ledger import commands as c
from ledger.demo import PROVIDERS, DemoClock, run_demo
from ledger.domain import ids
from ledger.ruleset import Agreement
from ledger.vault import Vault

MARKER = "bench_dataset"  # a table in the data schema, written once the demo is loaded
DEMO_SEED = 7  # the demo clock's seed
LIVE_ACCOUNTS = 20  # accounts registered for a run's live write load


def fixed_key(name: str) -> bytes:
    """A fixed vault key: a kept data set stays readable, and its idempotency records
    consistent."""
    return hashlib.sha256(name.encode()).digest()


def in_scratch_schema(run: Callable[[Database, str], None]) -> None:
    """`run(db, schema)` on a schema of its own, dropped afterwards: on LEDGER_DATABASE_URL's
    server, else on an embedded one in a temporary folder."""
    import os
    import tempfile
    from pathlib import Path

    url = os.environ.get("LEDGER_DATABASE_URL") or None
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as tmp, Database(url, Path(tmp)) as db:
        db.create_schema(schema)
        try:
            run(db, schema)
        finally:
            db.drop_schema(schema)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def quantiles(values: Sequence[float]) -> list[float]:
    """The 99 percentiles (inclusive method; a single value is its own percentile)."""
    return statistics.quantiles(list(values) * 2, n=100, method="inclusive")  # * 2: n may be 1


def quantile(values: Sequence[float], q: int) -> float:
    """The q-th percentile (inclusive method; a single value is its own percentile)."""
    return quantiles(values)[q - 1]


def server_name(db: Database) -> str:
    """`embedded`, or the server's host:port."""
    params = conninfo_to_dict(db.conninfo)
    return "embedded" if db.embedded else f"{params.get('host')}:{params.get('port')}"


def server_version(db: Database) -> str:
    with db.connect() as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


class Progress:
    """A progress line on stderr, redrawn at most a few times a second."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.started = time.perf_counter()
        self.shown = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if now - self.shown < 0.5 and done < total:
            return
        self.shown = now
        elapsed = now - self.started
        eta = elapsed * (total - done) / done if done else 0.0
        print(
            f"\r  {self.what}: {done}/{total} ({elapsed:.0f} s, ~{eta:.0f} s left)   ",
            end="",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        print(file=sys.stderr, flush=True)


# ----- the data set ------------------------------------------------------------------


def loaded_accounts(db: Database, schema: str) -> int | None:
    """The demo size of the complete data set in `schema`, or None."""
    with db.connect() as conn:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [f"{schema}.{MARKER}"]).fetchone()
        if not (row and row[0]):
            return None
        row = conn.execute(
            sql.SQL("SELECT accounts FROM {}").format(sql.Identifier(schema, MARKER))
        ).fetchone()
    return int(row[0]) if row else None


def load_demo(
    db: Database,
    schema: str,
    accounts: int,
    key: bytes,
    then: Callable[[Ledger], object] | None = None,
) -> bool:
    """The demo data set of `accounts` accounts in `schema`, loaded through `Ledger.submit`
    with the demo's clock unless a complete one of that size is there already (True: it
    was). `then` runs on the ledger after a load, before the data set is marked complete."""
    if loaded_accounts(db, schema) == accounts:
        log(f"reusing the data set in schema {schema}")
        return True
    db.drop_schema(schema)  # another size, or an interrupted load: start again
    ledger = Ledger.open(db, schema, clock=DemoClock(accounts, seed=DEMO_SEED), vault=Vault(key))
    try:
        log(f"loading the demo data set, {accounts} accounts, into schema {schema}")
        progress = Progress("accounts")
        started = time.perf_counter()
        commands = run_demo(ledger.submit, ledger.ruleset, accounts, progress)
        progress.close()
        seconds = time.perf_counter() - started
        log(f"loaded {commands} commands, {ledger.head()} events in {seconds:.0f} s")
        if then is not None:
            then(ledger)
    finally:
        ledger.close()
    marker = sql.Identifier(schema, MARKER)
    with db.connect() as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (accounts int NOT NULL, loaded_at timestamptz"
                " NOT NULL DEFAULT now())"
            ).format(marker)
        )
        conn.execute(sql.SQL("INSERT INTO {} (accounts) VALUES (%s)").format(marker), [accounts])
    return False


# ----- reading the log -----------------------------------------------------------------


def pages(
    conn: psycopg.Connection[Any], query: sql.SQL | sql.Composed, page: int
) -> Iterator[list[tuple[Any, ...]]]:
    """Rows of `query` (keyed on its first column, `> %s ... LIMIT %s`), a page at a time."""
    after = -1
    while rows := conn.execute(query, (after, page)).fetchall():
        yield rows
        after = rows[-1][0]


def events_query(events_table: sql.Composable) -> sql.Composed:
    """The log's rows in order, as the projector reads them: `pages` of this are the log."""
    return sql.SQL(
        "SELECT notification_id, originator_id, originator_version, topic, state FROM {}"
        " WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
    ).format(events_table)


def notification(row: tuple[Any, ...]) -> Notification:
    """A row of `events_query` as the store's `Notification`."""
    return Notification(
        id=row[0],
        originator_id=row[1],
        originator_version=row[2],
        topic=row[3],
        state=bytes(row[4]),
    )


def events_per_second(run: Callable[[], int]) -> tuple[float, int]:
    """Time `run`, which returns how many events it handled: (events/s, events)."""
    start = time.perf_counter()
    n = run()
    return n / (time.perf_counter() - start), n


# ----- accounts and posts ----------------------------------------------------------------


def approved_account(
    run: Callable[..., dict[str, Any]], ops: Actor, agreement: Agreement, handle: str
) -> UUID:
    """A public account registered under `ops`'s provider, then verified, signed and
    approved; `run(command, **args)` executes a command as `ops` and returns its value."""
    value = run(
        c.RegisterAccount,
        provider_id=ops.provider_id,
        handle=handle,
        kind="public",
        category="enterprise",
    )
    account = UUID(value["account_id"])
    run(
        c.VerifyIdentity,
        account_id=account,
        real_name="Li Lei",
        id_number="110101199003070011",
        method="id_card",
    )
    run(
        c.SignAgreement,
        account_id=account,
        agreement_id=agreement.id,
        version=agreement.version,
        text_sha256=agreement.sha256,
        baselines=agreement.baselines,
    )
    run(c.ReviewAccount, account_id=account, outcome="approved", reason="ok")
    return account


def publish_post(ops: Actor, key: str, account: UUID, ref: str) -> c.PublishPost:
    """A new original post on `account`, its content hash that of `ref`."""
    return c.PublishPost(
        actor=ops,
        idempotency_key=key,
        account_id=account,
        ref=ref,
        origin="original",
        category="other",
        content_sha256=hashlib.sha256(ref.encode()).hexdigest(),
    )


class Writer:
    """Accounts registered, verified, signed and approved for this run under a demo
    provider, and a stream of new posts on them, round-robin."""

    def __init__(
        self, ledger: Ledger, accounts: int = LIVE_ACCOUNTS, prefix: str = "bench"
    ) -> None:
        self.ledger = ledger
        self.prefix = prefix  # of idempotency keys and handles
        self.run_id = uuid.uuid4().hex[:8]
        self.serial = itertools.count()
        code = PROVIDERS[0][0]
        self.ops = Actor(f"{code}-compliance", Role.PROVIDER, ids.provider_id(code))
        self.accounts = [self._account() for _ in range(accounts)]

    def key(self) -> str:
        return f"{self.prefix}:{self.run_id}:{next(self.serial)}"

    def run(self, command: type[c.Command], **args: Any) -> dict[str, Any]:
        return self.ledger.execute(
            command(actor=self.ops, idempotency_key=self.key(), **args)
        ).value

    def _account(self) -> UUID:
        handle = f"{self.prefix}-{self.run_id}-{next(self.serial)}"
        return approved_account(self.run, self.ops, self.ledger.ruleset.agreement, handle)

    def post(self, account: UUID) -> c.PublishPost:
        """A new post on `account`, its idempotency key for a ref."""
        key = self.key()
        return publish_post(self.ops, key, account, key)

    def commands(self, n: int) -> list[c.Command]:
        """`n` new posts, on the accounts in turn from the first."""
        return [self.post(self.accounts[i % len(self.accounts)]) for i in range(n)]


# ----- paced writes and a position following them ----------------------------------------


@dataclass(frozen=True)
class Written:
    committed: float  # perf_counter when `execute` returned
    latency: float  # seconds in `execute`
    position: int  # the log position of the command's last event


def paced(
    ledger: Ledger, streams: Sequence[Sequence[c.Command]], rate: float
) -> tuple[list[Written], float, float]:
    """Execute the streams, a thread each, on one fixed schedule of `rate` commands a second
    in all (a late command goes at once); return each command's timing, the rate achieved
    and the start of the schedule."""
    w = len(streams)
    done: list[list[Written]] = [[] for _ in streams]
    failed: list[BaseException] = []
    start = time.perf_counter() + 0.01

    def work(k: int) -> None:
        try:
            for i, cmd in enumerate(streams[k]):
                delay = start + (i * w + k) / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                t = time.perf_counter()
                result = ledger.execute(cmd)
                end = time.perf_counter()
                assert result.position is not None and not result.replayed
                done[k].append(Written(end, end - t, result.position))
        except BaseException as e:
            failed.append(e)

    threads = [threading.Thread(target=work, args=(k,), name=f"writer-{k}") for k in range(w)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        raise failed[0]
    written = sorted(itertools.chain.from_iterable(done), key=lambda x: x.position)
    return written, len(written) / (max(x.committed for x in written) - start), start


class Seen(threading.Thread):
    """A thread that watches a position grow; keeps (time seen, position) at each change."""

    def __init__(self, db: Database, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.db = db
        self.times: list[float] = []
        self.positions: list[int] = []
        self.checks = 0
        self.span = (0.0, 0.0)
        self.stop = threading.Event()
        self.ready = threading.Event()

    def record(self, position: int) -> None:
        seen = time.perf_counter()
        self.checks += 1
        if not self.positions or position > self.positions[-1]:
            self.times.append(seen)
            self.positions.append(position)

    def reached(self) -> int:
        return self.positions[-1] if self.positions else 0

    def mean_interval(self) -> float:
        return (self.span[1] - self.span[0]) / max(self.checks, 1)

    def lag(self, w: Written) -> float | None:
        """Seconds from a commit to the first check that saw its position (None: never)."""
        i = bisect.bisect_left(self.positions, w.position)
        return max(0.0, self.times[i] - w.committed) if i < len(self.times) else None

    def wait_for(self, position: int, timeout: float = 30) -> None:
        deadline = time.perf_counter() + timeout
        while self.reached() < position and time.perf_counter() < deadline and self.is_alive():
            time.sleep(0.01)


class PositionWatch(Seen):
    """Polls a position in `schema`'s `projection_positions` every `interval` seconds: the
    named projection's, or (`name` None) the lowest of them."""

    def __init__(self, db: Database, schema: str, interval: float, name: str | None = None) -> None:
        super().__init__(db, "position-watch")
        self.interval = interval
        table = sql.Identifier(schema, "projection_positions")
        if name is None:
            self.query = sql.SQL("SELECT min(position) FROM {}").format(table)
        else:
            self.query = sql.SQL("SELECT position FROM {} WHERE name = {}").format(
                table, sql.Literal(name)
            )

    def run(self) -> None:
        with self.db.connect(autocommit=True) as conn:
            started = time.perf_counter()
            self.ready.set()
            while not self.stop.is_set():
                row = conn.execute(self.query, prepare=True).fetchone()
                self.record(int(row[0]) if row and row[0] is not None else 0)
                time.sleep(self.interval)
            self.span = (started, time.perf_counter())
