"""Folding the whole log into a `BulkProjector`'s fresh tables (see `projections.folds`).

The log is read up to the head it had when the fold began, in pages, by a thread that
also decodes (`projections.decode`), so the server's work on the next page overlaps the
folding of this one. Each event goes to every fold that handles its type, in dependency
order (a fold reads only the rows of the folds before it).

History, a row per event and the most work, is folded in a second process when other
read models are rebuilt with it, so the two halves share the machine's cores: that
process reads and decodes the log itself, learns who owns each account and post from
the events that create them (`OwnersFold`), and streams its rows into the table with one
COPY as it goes, committing when done.

This process then writes every other fold's rows with COPY, runs each fold's closing SQL
(the figures recounted from the rows) and moves the positions to the head, in one
transaction. A fold that raises anywhere leaves the tables empty and returns None: the
caller then takes the bulk path from position zero.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from ledger.database import CONNECT_TIMEOUT_S
from ledger.log import LoggedEvent
from ledger.ruleset import Ruleset
from projections.base import Projection
from projections.bulk import BulkProjector
from projections.folds import FOLDS
from projections.folds.base import Apply, Fold, Unfoldable

log = logging.getLogger("ledger.rebuild")
PAGE = 20_000
APART = "history"  # the read model folded in a process of its own
Decode = Callable[[int, UUID, int, str, bytes], LoggedEvent]


def foldable(projections: Sequence[Projection]) -> bool:
    return all(p.name in FOLDS for p in projections)


def fold_into(
    projector: BulkProjector, head: int, progress: Callable[[int], None] | None = None
) -> int | None:
    """Fold the log up to `head` into the projector's fresh tables, which must be empty at
    position 0; return the events read, or None when an event is beyond the folds or
    anything else stops them (nothing kept)."""
    names = [p.name for p in projector.projections]
    apart = APART in names and len(names) > 1 and projector.decoder.plain
    here = [name for name in names if not (apart and name == APART)]
    history = _HistoryApart(projector, head) if apart else None
    # What the folds keep lives until they are written: the cyclic collector would only
    # walk it again and again as it grows.
    collecting = gc.isenabled()
    gc.disable()
    try:
        read, folds = _fold(projector, here, head, progress)
        _write(projector.conn, folds, head, names, history)
        return read
    except Exception as exc:  # any surprise sends the rebuild the bulk way
        log.warning("rebuild: folding stopped (%s); rebuilding in bulk", exc)
    finally:
        if collecting:
            gc.enable()
        if history is not None:
            history.stop()
    _empty(projector)
    return None


def _fold(
    projector: BulkProjector,
    names: Sequence[str],
    head: int,
    progress: Callable[[int], None] | None,
) -> tuple[int, list[Fold]]:
    folds = _folds(projector.ledger.ruleset, names)
    by_type = routes(folds)
    read = 0
    query, decode = _query(projector), projector.decoder.decode_row
    pages = log_pages(projector.database.conninfo, query, head, decode)
    try:
        for page in pages:
            fold_page(page, by_type)
            read += len(page)
            if progress:
                progress(page[-1].position)
    finally:
        pages.close()
    return read, folds


def _folds(ruleset: Ruleset, names: Iterable[str]) -> list[Fold]:
    folds: dict[str, Fold] = {}
    for name in names:
        folds[name] = FOLDS[name](ruleset, folds)
    return list(folds.values())


def routes(folds: Iterable[Fold]) -> dict[str, list[Apply]]:
    routes: dict[str, list[Apply]] = {}
    for fold in folds:
        for topic, apply in fold.handlers.items():
            routes.setdefault(topic, []).append(apply)
    return routes


def fold_page(page: Sequence[LoggedEvent], by_type: dict[str, list[Apply]]) -> None:
    """Each event to every fold that handles its type (`routes`), in their order."""
    for event in page:
        oid = str(event.originator_id)
        for apply in by_type.get(event.type, ()):
            apply(event, oid)


def copy_into(table: sql.Composable, columns: Sequence[str]) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN").format(
        table, sql.SQL(", ").join(map(sql.Identifier, columns))
    )


def _query(projector: BulkProjector) -> str:
    query = sql.SQL(
        "SELECT notification_id, originator_id, originator_version, topic, state FROM {}"
        " WHERE notification_id > %s AND notification_id <= %s"
        " ORDER BY notification_id LIMIT %s"
    ).format(projector.events_table)
    return query.as_string(projector.conn)


def log_pages(
    conninfo: str, query: str, head: int, decode: Decode
) -> Generator[list[LoggedEvent], None, None]:
    """The decoded log up to `head`, a page at a time, the next read while this one is
    folded."""
    with (
        psycopg.connect(conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn,
        ThreadPoolExecutor(1, thread_name_prefix="ledger-fold-read") as pool,
    ):
        cursor = conn.cursor(binary=True)

        def page_after(after: int) -> list[LoggedEvent]:
            rows = cursor.execute(query, (after, head, PAGE))
            return [decode(*row) for row in rows]

        ahead = pool.submit(page_after, 0)
        while page := ahead.result():
            ahead = pool.submit(page_after, page[-1].position)
            yield page


# ----- history, in a process of its own --------------------------------------------------


class _HistoryApart:
    """`python -m projections.folds.apart` folding history into the projector's schema;
    its job in its environment (which only its user can read: the conninfo is in it)."""

    def __init__(self, projector: BulkProjector, head: int) -> None:
        job = {
            "conninfo": projector.database.conninfo,
            "schema": projector.schema,
            "query": _query(projector),
            "head": head,
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "projections.folds.apart"],
            env={**os.environ, "LEDGER_FOLD_JOB": json.dumps(job)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.output: tuple[bytes, bytes] | None = None

    def result(self) -> int:
        out, err = self.output = self.process.communicate()
        if self.process.returncode != 0:
            raise Unfoldable(f"history, in its own process: {err.decode(errors='replace')[-500:]}")
        return int(out)

    def stop(self) -> None:
        """Stopped and waited for: its rows, committed or not, are in the tables or never."""
        if self.output is None:
            self.process.kill()
            self.output = self.process.communicate()


# ----- writing ----------------------------------------------------------------------------


def _write(
    conn: psycopg.Connection[Any],
    folds: Sequence[Fold],
    head: int,
    names: list[str],
    history: _HistoryApart | None,
) -> None:
    """The folds' rows, their closing SQL and the positions, in one transaction, which
    commits once history's process has committed its rows (while it is still folding,
    these are being written)."""
    with conn.transaction():
        for fold in folds:
            for table, rows in fold.rows().items():
                copy = copy_into(sql.Identifier(table), fold.columns[table])
                with conn.cursor().copy(copy) as out:
                    for row in rows:
                        out.write_row(row)
        for fold in folds:
            for query, params in fold.statements_after():
                conn.execute(query, params)
        if history is not None:
            history.result()
        conn.execute(
            "UPDATE projection_positions SET position = %s, updated_at = now()"
            " WHERE name = ANY(%s)",
            (head, names),
        )


def _empty(projector: BulkProjector) -> None:
    """Every table of the projector's projections emptied (the fold wrote some)."""
    conn = projector.conn
    conn.rollback()
    with conn.transaction():
        for table in (t for p in projector.projections for t in p.tables):
            conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(table)))
