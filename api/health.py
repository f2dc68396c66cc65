"""A connection of its own for the health checks (`/readyz`, `/metrics`' read side), so
that they answer while every connection of the API's pools is taken, and tell a database
that refuses connections at once rather than after a pool's wait."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from ledger.database import CONNECT_TIMEOUT_S

# What says the connection is gone (a restart, a terminated backend, a stopped server).
LOST = (psycopg.OperationalError, psycopg.InterfaceError)


class HealthLine:
    """One connection, made on first use and again after it fails; checks take turns
    on it (each is one short statement). A check given up on (a timeout) drops it: it
    may be mid-statement."""

    def __init__(self, conninfo: str, settings: sql.Composed) -> None:
        self.conninfo, self.settings = conninfo, settings
        self.conn: AsyncConnection[Any] | None = None
        self.lock = asyncio.Lock()

    async def fetch(self, query: Any) -> list[dict[str, Any]]:
        """Rows of one statement; psycopg's error when the database cannot be reached
        (a kept connection that broke is replaced once)."""
        async with self.lock:
            for attempt in (1, 2):
                kept = self.conn is not None
                try:
                    conn = await self._connection()
                    cur = await conn.execute(query)
                    return await cur.fetchall()
                except LOST:
                    await self.close()
                    if not kept or attempt == 2:
                        raise
                except asyncio.CancelledError:
                    await self.close()
                    raise
        raise AssertionError("unreachable")

    async def _connection(self) -> AsyncConnection[Any]:
        if self.conn is None or self.conn.closed:
            conn = await AsyncConnection.connect(
                self.conninfo, autocommit=True, row_factory=dict_row,
                connect_timeout=CONNECT_TIMEOUT_S,
            )  # fmt: skip
            await conn.execute(self.settings)
            self.conn = conn
        return self.conn

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
