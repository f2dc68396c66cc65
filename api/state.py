"""What a running API process holds: the database, the ledger (write side), an async
pool for the read tables, a thread pool for the event store's blocking calls, and the
live fan-out of new events."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import UUID

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from api import auth
from ledger.application import Ledger
from ledger.database import Database
from ledger.log import LoggedEvent

T = TypeVar("T")


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
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

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
        timeout=10,
    )


def prepare_tables(database: Database, schema: str) -> None:
    with database.connect() as conn:
        auth.create_schema(conn, schema)
        conn.commit()
