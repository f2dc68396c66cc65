"""What a running API process holds: the database, the ledger (write side), an async
pool for the read tables, a thread pool for the event store's blocking calls, and the
live fan-out of new events."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import UUID

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from api import auth
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


@dataclass
class ApiState:
    database: Database
    ledger: Ledger
    schema: str
    pool: AsyncConnectionPool
    executor: ThreadPoolExecutor
    max_lag_events: int = 10_000
    public_key: str = ""  # the tree-head signing key, hex
    extras: dict[str, Any] = field(default_factory=dict)

    async def blocking(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking call (the event store's) off the event loop."""
        loop = asyncio.get_running_loop()
        # In the request's context, so what the call logs or counts names the request.
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        try:
            return await loop.run_in_executor(self.executor, call)
        except DATABASE_FAULTS as exc:
            log.warning("event store unavailable: %s", type(exc).__name__)
            raise DatabaseUnavailable from None

    async def principal(self, token: str | None) -> auth.Principal | None:
        """Who holds this bearer token (None: no token, or unknown or revoked)."""
        if not token:
            return None
        found = await self.fetch(auth.PRINCIPAL, (auth.token_hash(token),))
        return auth.Principal.from_row(found[0]) if found else None

    async def fetch(self, query: Any, params: Any = None) -> list[dict[str, Any]]:
        """Rows from the read tables. A connection the server closed (a restart, a
        terminated backend) is dropped and the query tried once more on a fresh one."""
        for attempt in (1, 2):
            try:
                async with self.pool.connection() as conn:
                    cur = await conn.execute(query, params)
                    return await cur.fetchall()  # type: ignore[return-value]
            except DATABASE_FAULTS as exc:
                log.warning("read tables unavailable (attempt %d): %s", attempt, type(exc).__name__)
                if attempt == 2 or isinstance(exc, PoolTimeout):  # no connection to be had
                    raise DatabaseUnavailable from None
                await self.pool.check()
        raise AssertionError("unreachable")

    async def log_page(
        self,
        after: int,
        limit: int,
        types: Sequence[str] = (),
        originator_id: UUID | None = None,
    ) -> list[LoggedEvent]:
        """Up to `limit` events after a position, read off the event loop."""
        return await self.blocking(_log_page, self.ledger, after, limit, types, originator_id)


def _log_page(
    ledger: Ledger, after: int, limit: int, types: Sequence[str], originator_id: UUID | None
) -> list[LoggedEvent]:
    return list(ledger.read_log(after, types=types, originator_id=originator_id, limit=limit))


def make_pool(database: Database, schema: str, size: int) -> AsyncConnectionPool:
    async def configure(conn: AsyncConnection[Any]) -> None:
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))

    return AsyncConnectionPool(
        database.conninfo,
        min_size=1,
        max_size=size,
        kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": 5},
        configure=configure,
        open=False,
        timeout=POOL_TIMEOUT_S,
    )


def prepare_tables(database: Database, schema: str) -> None:
    with database.connect() as conn:
        auth.create_schema(conn, schema)
        conn.commit()
