"""What a running API process holds: the database, the ledger (write side), an async
pool for the read tables (a hot standby's when `LEDGER_READ_DATABASE_URL` is set, with a
second pool to the primary beside it), a thread pool for the event store's blocking
calls, each behind a gate that sheds what cannot be served in time (api.admission), a
connection of its own for health checks (api.health), and the live fan-out of new
events."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import UUID

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.responses import JSONResponse

from api import auth, logs
from api.admission import Gate
from api.health import HealthLine
from ledger.application import Ledger
from ledger.database import POOL_TIMEOUT_S, Database
from ledger.log import LoggedEvent

T = TypeVar("T")
log = logging.getLogger("ledger.api")

# What a lost, restarted or unreachable database looks like, from the pool, from psycopg
# and from the event store (which has retried already).
DATABASE_FAULTS = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout,
                   OperationalError, InterfaceError)  # fmt: skip


class DatabaseUnavailable(Exception):
    """The database could not be reached: clients see STORAGE_UNAVAILABLE and retry."""

    message = "the database is unavailable; retry shortly"

    @property
    def extensions(self) -> dict[str, Any]:
        """graphql-core gives an error raised in a resolver these: a WebSocket's result
        is sent before ErrorPolicy sees it (it carried GRAPHQL_VALIDATION_FAILED)."""
        return {"code": "STORAGE_UNAVAILABLE", "retryable": True}


class ReplicaBehind(Exception):
    """The read tables did not reach a position a client asked for in time: clients see
    REPLICA_BEHIND and retry (or read again without the position)."""

    def __init__(self, position: int, reached: int, timeout: float) -> None:
        self.position, self.reached, self.timeout = position, reached, timeout
        super().__init__(
            f"the read side has reached position {reached}, not {position},"
            f" within {timeout:g} s; retry shortly"
        )


# The lowest position of every read model (and the sealer): what a read may rely on.
READ_POSITION = "SELECT coalesce(min(position), -1) AS position FROM projection_positions"


@dataclass
class ApiState:
    database: Database
    ledger: Ledger
    schema: str
    pool: AsyncConnectionPool  # the read tables: the standby's when a replica is set
    executor: ThreadPoolExecutor
    max_lag_events: int = 10_000
    public_key: str = ""  # the tree-head signing key, hex
    extras: dict[str, Any] = field(default_factory=dict)
    # The primary's pool when `pool` reads a hot standby (None: `pool` is the primary's).
    primary_pool: AsyncConnectionPool | None = None
    read_wait: float = 5.0  # seconds a read waits for a position it was given
    # Health checks' own connections (the standby's, then the primary's with a replica).
    health_lines: list[HealthLine] = field(default_factory=list)
    overload_wait: float = 0.25  # seconds a request waits for a slot before OVERLOADED
    overload_queue: int = 0  # requests that may wait for a slot of one gate (0: no bound)
    gates: dict[str, Gate] = field(init=False)

    def __post_init__(self) -> None:
        slots = {"read": self.pool.max_size, "executor": self.executor._max_workers}
        if self.primary_pool is not None:
            slots["primary"] = self.primary_pool.max_size
        self.gates = {
            name: Gate(name, n, self.overload_wait, self.overload_queue)
            for name, n in slots.items()
        }

    @property
    def replica(self) -> bool:
        """Whether reads go to a standby."""
        return self.primary_pool is not None

    @property
    def pools(self) -> list[AsyncConnectionPool]:
        return [self.pool] if self.primary_pool is None else [self.pool, self.primary_pool]

    async def blocking(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking call (the event store's) off the event loop, on a thread of
        the executor's gate (Overloaded when none comes in time), held until the call
        returns, even when the caller has stopped waiting for it."""
        loop = asyncio.get_running_loop()
        gate = self.gates["executor"]
        await gate.enter()
        # In the request's context, so what the call logs or counts names the request.
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        try:
            done = self.executor.submit(call)
        except BaseException:
            gate.leave()
            raise
        done.add_done_callback(functools.partial(_leave_from_thread, loop, gate))
        try:
            return await asyncio.wrap_future(done)
        except DATABASE_FAULTS as exc:
            log.warning("event store unavailable: %s", type(exc).__name__)
            raise DatabaseUnavailable from None

    async def principal(self, token: str | None) -> auth.Principal | None:
        """Who holds this bearer token (None: no token, or unknown or revoked)."""
        if not token:
            return None
        found = await self.fetch(auth.PRINCIPAL, (auth.token_hash(token),))
        return auth.Principal.from_row(found[0]) if found else None

    async def fetch(
        self, query: Any, params: Any = None, *, primary: bool = False
    ) -> list[dict[str, Any]]:
        """Rows from the read tables (the standby's, with a replica, unless `primary`).
        A connection the server closed (a restart, a terminated backend) is dropped and
        the query tried once more on a fresh one."""
        pool = self.primary_pool if primary and self.primary_pool is not None else self.pool
        async with self.gates["read" if pool is self.pool else "primary"].slot():
            for attempt in (1, 2):
                try:
                    async with pool.connection() as conn:
                        cur = await conn.execute(query, params)
                        return await cur.fetchall()  # type: ignore[return-value]
                except DATABASE_FAULTS as exc:
                    log.warning(
                        "read tables unavailable (attempt %d): %s", attempt, type(exc).__name__
                    )
                    if attempt == 2 or isinstance(exc, PoolTimeout):  # no connection to be had
                        raise DatabaseUnavailable from None
                    await pool.check()
        raise AssertionError("unreachable")

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A connection of the read pool, through its gate (Overloaded when none comes
        in time); the database's faults are the caller's to handle."""
        async with self.gates["read"].slot(), self.pool.connection() as conn:
            yield conn

    async def health_fetch(self, query: Any, *, primary: bool = False) -> list[dict[str, Any]]:
        """Rows read on a health check's own connection (the primary's with `primary`
        and a replica): not behind the requests, so it answers while they queue."""
        line = self.health_lines[-1] if primary else self.health_lines[0]
        try:
            return await line.fetch(query)
        except DATABASE_FAULTS as exc:
            log.warning("health check: database unavailable: %s", type(exc).__name__)
            raise DatabaseUnavailable from None

    async def wait_for_position(self, position: int, timeout: float | None = None) -> int:
        """Return once every projection in the read tables (the standby's, with a
        replica: replayed there, then projected) has reached `position`; raise
        ReplicaBehind after `timeout` (`read_wait`) seconds. Returns the position read."""
        timeout = self.read_wait if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.002
        while True:
            (row,) = await self.fetch(READ_POSITION)
            reached = int(row["position"])
            if reached >= position:
                return reached
            if loop.time() >= deadline:
                raise ReplicaBehind(position, reached, timeout)
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            delay = min(delay * 2, 0.05)

    async def log_page(
        self,
        after: int,
        limit: int,
        types: Sequence[str] = (),
        originator_id: UUID | None = None,
    ) -> list[LoggedEvent]:
        """Up to `limit` events after a position, read off the event loop."""
        return await self.blocking(_log_page, self.ledger, after, limit, types, originator_id)


def _leave_from_thread(loop: asyncio.AbstractEventLoop, gate: Gate, _: Future[Any]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop has closed: nothing waits any more
        loop.call_soon_threadsafe(gate.leave)


def _log_page(
    ledger: Ledger, after: int, limit: int, types: Sequence[str], originator_id: UUID | None
) -> list[LoggedEvent]:
    return list(ledger.read_log(after, types=types, originator_id=originator_id, limit=limit))


def session_settings(schema: str) -> sql.Composed:
    """How the API's connections read: the ledger's schema, and a plan made with the
    values of each execution even for a statement psycopg has prepared (after 5 runs).
    A generic plan does not know a LIMIT, a cursor or a moment, and may scan a table
    that an index would read a page of (api/graphql/compiler's statements above all).
    No JIT: a request reads a page, and a statement costed past `jit_above_cost` (a
    compiled one with several subqueries) spent 40 ms compiling to save microseconds."""
    return sql.SQL(
        "SET search_path TO {}; SET plan_cache_mode = force_custom_plan; SET jit = off"
    ).format(sql.Identifier(schema))


def make_pool(database: Database | str, schema: str, size: int) -> AsyncConnectionPool:
    """An async pool to a database (or a conninfo: a standby's), rows as dicts."""

    async def configure(conn: AsyncConnection[Any]) -> None:
        await conn.execute(session_settings(schema))

    return AsyncConnectionPool(
        database if isinstance(database, str) else database.conninfo,
        min_size=1,
        max_size=size,
        kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": 5},
        configure=configure,
        open=False,
        timeout=POOL_TIMEOUT_S,
    )


# ----- read replicas -------------------------------------------------------------------

MIN_POSITION_HEADER = "x-ledger-min-position"


async def min_position_refusal(state: ApiState, raw: bytes) -> JSONResponse | None:
    """Read your writes: a request with `X-Ledger-Min-Position: <position>` (the position
    a mutation answered) waits until the read tables have reached it, on the standby
    with a replica, on the primary without one, before anything reads them (the response
    cache included, whose key then holds the new position). Past `state.read_wait`
    seconds it is answered, 200 in application/json, with the error REPLICA_BEHIND.
    None: the position is reached; else the answer (a bad header: 400)."""
    text = raw.decode("latin-1").strip()
    if not text.isdigit() or len(text) > 19:
        message = f"X-Ledger-Min-Position must be a position (digits), not {text[:30]!r}"
        return _error_response("BAD_REQUEST", message, status=400)
    try:
        await state.wait_for_position(int(text))
    except ReplicaBehind as e:
        log.info("read refused: %s", e)
        details = {"position": str(e.position), "reached": str(e.reached)}
        return _error_response("REPLICA_BEHIND", str(e), retryable=True, details=details)
    return None


def _error_response(code: str, message: str, status: int = 200, **extensions: Any) -> JSONResponse:
    logs.note_outcome(code)
    error = {"message": message, "extensions": {"code": code, **extensions}}
    body: dict[str, Any] = {"errors": [error]}
    if status == 200:  # as a GraphQL answer in application/json: `data` null
        body = {"data": None, **body}
    headers = {"Retry-After": "1"} if extensions.get("retryable") else {}
    return JSONResponse(body, status_code=status, headers=headers)


REPLICA_STATUS = (
    "SELECT pg_is_in_recovery() AS standby,"
    " CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END AS paused,"
    " extract(epoch FROM now() - pg_last_xact_replay_timestamp()) AS replayed_ago,"
    " (SELECT coalesce(max(notification_id), 0) FROM {e}) AS head"
)


async def replica_status(state: ApiState) -> dict[str, Any]:
    """The standby beside the primary: both answer (else DatabaseUnavailable), and how
    far the standby's log is behind the primary's (events), whether its replay is
    paused, and seconds since it replayed a transaction (grows while the primary idles)."""
    query = sql.SQL(REPLICA_STATUS).format(e=state.ledger.store.events_table)
    head = sql.SQL("SELECT coalesce(max(notification_id), 0) AS head FROM {e}").format(
        e=state.ledger.store.events_table
    )
    (standby,), (primary,) = await asyncio.gather(
        state.health_fetch(query), state.health_fetch(head, primary=True)
    )
    ago = standby["replayed_ago"]
    return {
        "standby": bool(standby["standby"]),
        "lag_events": max(0, primary["head"] - standby["head"]),
        "replay_paused": bool(standby["paused"]),
        "replayed_seconds_ago": None if ago is None else round(float(ago), 3),
    }


def prepare_tables(database: Database, schema: str) -> None:
    with database.connect() as conn:
        auth.create_schema(conn, schema)
        conn.commit()
