"""The projector: follows the notification log and keeps the read tables.

Each step takes a page of events after the lowest position among its projections, and
in one transaction applies each event to every projection that has not yet seen it,
then moves their positions: the writes and the positions commit together or not at
all, so an event is applied exactly once however the process dies. The position rows
are locked for the step, so two projectors on one schema take turns instead of both
applying an event.

`follow` catches up, then waits on LISTEN for new events (with a poll as a safety net).
A lost connection (killed backend, restarted server) is logged and both connections are
made anew with backoff; the positions say where to resume.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import psycopg
from eventsourcing.persistence import Notification
from psycopg import sql

from ledger.application import Ledger
from ledger.database import Database, one_line
from ledger.log import LoggedEvent
from ledger.store import log_page
from projections import positions
from projections.base import Projection, Statement, storable
from projections.registry import resolve

log = logging.getLogger("ledger.projector")


def page_size_from_env() -> int:
    value = os.environ.get("LEDGER_PROJECTION_PAGE", "1000")
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"LEDGER_PROJECTION_PAGE must be a positive whole number, not {value!r}")
    return int(value)


POLL_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 1.0


@dataclass(frozen=True)
class Step:
    events: int  # events read from the log this step
    position: int  # the lowest position among the projections after it


class Projector:
    def __init__(
        self,
        ledger: Ledger,
        database: Database,
        schema: str | None = None,
        projections: Sequence[Projection] | None = None,
        page_size: int | None = None,
    ) -> None:
        self.ledger = ledger
        self.database = database
        self.source_schema = ledger.store.datastore.schema or "public"
        self.schema = schema or self.source_schema
        self.projections = tuple(projections) if projections is not None else resolve()
        self.page_size = page_size or page_size_from_env()
        self.channel = ledger.store.channel_name
        self.events_table = ledger.store.events_table
        self._conn: psycopg.Connection[object] | None = None

    # ----- connections and tables -------------------------------------------------

    def connect(self, **kwargs: object) -> psycopg.Connection[object]:
        conn = self.database.connect(self.schema, application_name="ledger-projector", **kwargs)
        conn.execute("SET lock_timeout = '5s'")
        conn.commit()
        return conn

    @property
    def conn(self) -> psycopg.Connection[object]:
        if self._conn is None or self._conn.closed:
            self._conn = self.connect()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def setup(self) -> None:
        """Create the tables and position rows; rebuild a projection whose version changed."""
        self.database.create_schema(self.schema)
        conn = self.conn
        with conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.projections'))"
            )
            conn.execute(positions.DDL)
            stored = dict(
                conn.execute("SELECT name, version FROM projection_positions").fetchall()  # type: ignore[arg-type]
            )
            for p in self.projections:
                if p.name in stored and stored[p.name] != p.version:
                    log.warning(
                        "projection %s: version %s -> %s, rebuilding from zero",
                        p.name,
                        stored[p.name],
                        p.version,
                    )
                    self._drop(conn, p)
                for statement in p.ddl:
                    conn.execute(statement)  # type: ignore[arg-type]
                conn.execute(
                    "INSERT INTO projection_positions (name, position, version) VALUES (%s, 0, %s)"
                    " ON CONFLICT (name) DO NOTHING",
                    (p.name, p.version),
                )

    def reset(self) -> None:
        """Empty the projections' tables and move them back to position zero."""
        conn = self.conn
        with conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.projections'))"
            )
            for p in self.projections:
                self._drop(conn, p)
                for statement in p.ddl:
                    conn.execute(statement)  # type: ignore[arg-type]

    @staticmethod
    def _drop(conn: psycopg.Connection[object], p: Projection) -> None:
        for table in p.tables:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(table)))
        conn.execute(
            "UPDATE projection_positions SET position = 0, version = %s, updated_at = now()"
            " WHERE name = %s",
            (p.version, p.name),
        )
        conn.execute("DELETE FROM projection_failures WHERE projection = %s", (p.name,))

    # ----- the work ---------------------------------------------------------------

    def step(self, until: dict[str, int] | None = None) -> Step:
        """Apply one page of events; `until` caps each projection's position.

        A page that fails for any reason but a lost connection is applied again event
        by event, and what still fails goes to the dead letters."""
        try:
            return self._step(until, careful=False)
        except psycopg.OperationalError:
            raise
        except Exception as exc:
            log.warning("projector: a page failed (%s); applying it event by event", one_line(exc))
            return self._step(until, careful=True)

    def _step(self, until: dict[str, int] | None, careful: bool) -> Step:
        conn = self.conn
        names = [p.name for p in self.projections]
        with conn.transaction():
            at = dict(
                conn.execute(  # type: ignore[arg-type]
                    "SELECT name, position FROM projection_positions WHERE name = ANY(%s)"
                    " ORDER BY name FOR UPDATE",
                    (names,),
                ).fetchall()
            )
            cap = {n: (until or {}).get(n, 2**62) for n in names}
            active = [p for p in self.projections if at[p.name] < cap[p.name]]
            if not active:
                return Step(0, min(at.values()))
            start = min(at[p.name] for p in active)
            limit = min(self.page_size, max(cap[p.name] for p in active) - start)
            page = self._read(conn, start, limit)
            apply = self._apply_one_by_one if careful else self._apply
            apply(conn, page, active, at, cap)
            if page:
                last = page[-1].id
                for p in active:
                    moved = min(last, cap[p.name])
                    if moved > at[p.name]:
                        conn.execute(
                            "UPDATE projection_positions SET position = %s, updated_at = now()"
                            " WHERE name = %s",
                            (moved, p.name),
                        )
                        at[p.name] = moved
        return Step(len(page), min(at.values()))

    def _read(self, conn: psycopg.Connection[object], after: int, limit: int) -> list[Notification]:
        return log_page(conn, self.events_table, after, limit)

    def _apply(
        self,
        conn: psycopg.Connection[object],
        page: list[Notification],
        active: Sequence[Projection],
        at: dict[str, int],
        cap: dict[str, int],
    ) -> None:
        # Statements are grouped by projection, in dependency order (a projection reads
        # only rows its dependencies wrote for earlier or the same events), and runs of
        # one statement go out as one executemany.
        statements: dict[str, list[Statement]] = {p.name: [] for p in active}
        for n, wanting in self._wanted(page, active, at, cap):
            event = self._event(n)
            for p in wanting:
                statements[p.name].extend(p.statements(event, self.ledger.ruleset))
        with conn.pipeline(), conn.cursor() as cur:
            for p in active:
                for query, group in itertools.groupby(statements[p.name], key=lambda s: s[0]):
                    cur.executemany(query, [params for _, params in group])  # type: ignore[arg-type]

    def _apply_one_by_one(
        self,
        conn: psycopg.Connection[object],
        page: list[Notification],
        active: Sequence[Projection],
        at: dict[str, int],
        cap: dict[str, int],
    ) -> None:
        """Apply each event to each projection in a savepoint of its own; one that fails
        is recorded as a dead letter and skipped, so no stored event stops the read side."""
        for n, wanting in self._wanted(page, active, at, cap):
            for p in wanting:
                try:
                    with conn.transaction(), conn.cursor() as cur:
                        for query, params in p.statements(self._event(n), self.ledger.ruleset):
                            cur.execute(query, params)  # type: ignore[arg-type]
                except psycopg.OperationalError:
                    raise
                except Exception as exc:
                    log.error("projection %s: event %s failed: %s", p.name, n.id, one_line(exc))
                    conn.execute(positions.RECORD_FAILURE, (p.name, n.id, one_line(exc)[:2000]))

    @staticmethod
    def _wanted(
        page: list[Notification],
        active: Sequence[Projection],
        at: dict[str, int],
        cap: dict[str, int],
    ) -> Iterator[tuple[Notification, list[Projection]]]:
        for n in page:
            wanting = [
                p for p in active if at[p.name] < n.id <= cap[p.name] and n.topic in p.handlers
            ]
            if wanting:
                yield n, wanting

    def _event(self, n: Notification) -> LoggedEvent:
        event = LoggedEvent.from_notification(n, self.ledger.mapper.to_domain_event(n))
        return storable(event, n.state)

    def catch_up(
        self,
        until: dict[str, int] | None = None,
        progress: Callable[[int], None] | None = None,
        stop: threading.Event | None = None,
    ) -> int:
        """Apply pages until every projection is at the head (or at `until`); return how
        many events were read."""
        total = 0
        while stop is None or not stop.is_set():
            done = self.step(until)
            total += done.events
            if progress:
                progress(done.position)
            if done.events == 0:
                break
        return total

    def follow(self, stop: threading.Event, on_ready: Callable[[], None] | None = None) -> None:
        """Keep the projections live until `stop` is set; recover from lost connections."""
        backoff = 0.1
        while not stop.is_set():
            try:
                with self.database.connect(
                    autocommit=True, application_name="ledger-projector-listen"
                ) as listener:
                    listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self.setup()
                    self.catch_up(stop=stop)
                    if on_ready:
                        on_ready()
                        on_ready = None
                    backoff = 0.1
                    while not stop.is_set():
                        for _ in listener.notifies(timeout=POLL_SECONDS, stop_after=1):
                            pass
                        self.catch_up(stop=stop)
            except psycopg.errors.LockNotAvailable:
                log.info("projector: positions are locked by another projector; waiting")
                stop.wait(backoff)
            except Exception as exc:  # never die: log, reconnect with backoff, resume
                if isinstance(exc, psycopg.OperationalError):
                    log.warning("projector: database connection lost (%s)", one_line(exc))
                else:
                    log.exception("projector: unexpected failure")
                log.info("projector: reconnecting in %.1f s", backoff)
                self.close()
                stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            else:
                break
        self.close()


def run_until_stopped(projector: Projector, stop: threading.Event) -> None:
    """`ledger project`: follow, logging progress once caught up."""
    started = time.monotonic()

    def ready() -> None:
        log.info("projector: caught up in %.1f s; following the log", time.monotonic() - started)

    projector.follow(stop, ready)
