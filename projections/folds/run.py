"""Folding the whole log into a `BulkProjector`'s fresh tables (see `projections.folds`).

The log is read once, in pages, by a thread that also decodes (`projections.decode`), so
the server's work on the next page overlaps this thread's folding. Each event goes to
every fold that handles its type, in dependency order (a fold reads only the rows of the
folds before it). Then, in one transaction: every fold's rows are written with COPY,
each fold's closing SQL runs (the figures recounted from the rows), and the positions
move to the last event read. A fold that raises leaves the tables empty and returns
None: the caller then takes the bulk path from position zero.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from psycopg import sql

from ledger.log import LoggedEvent
from projections.base import Projection
from projections.bulk import BulkProjector
from projections.folds import FOLDS
from projections.folds.base import Apply, Fold

log = logging.getLogger("ledger.rebuild")
PAGE = 20_000


def foldable(projections: Sequence[Projection]) -> bool:
    return all(p.name in FOLDS for p in projections)


def fold_into(
    projector: BulkProjector, progress: Callable[[int], None] | None = None
) -> int | None:
    """Fold the log into the projector's fresh tables, which must be empty at position 0;
    return the events read, or None when an event is beyond the folds (nothing written)."""
    ruleset = projector.ledger.ruleset
    folds: dict[str, Fold] = {}
    for p in projector.projections:
        folds[p.name] = FOLDS[p.name](ruleset, folds)
    routes = _routes(folds.values())
    read, last = 0, 0
    pages = _pages(projector)
    try:
        for page in pages:
            for event in page:
                oid = str(event.originator_id)
                for apply in routes.get(event.type, ()):
                    apply(event, oid)
            read += len(page)
            last = page[-1].position
            if progress:
                progress(last)
    except Exception as exc:  # any surprise sends the rebuild the bulk way
        log.warning("rebuild: an event is beyond the folds (%s); rebuilding in bulk", exc)
        return None
    finally:
        pages.close()
    try:
        _write(projector.conn, folds.values(), last)
    except psycopg.Error as exc:
        projector.conn.rollback()
        log.warning("rebuild: writing the folded rows failed (%s); rebuilding in bulk", exc)
        return None
    return read


def _routes(folds: Sequence[Fold] | Any) -> dict[str, list[Apply]]:
    routes: dict[str, list[Apply]] = {}
    for fold in folds:
        for topic, apply in fold.handlers.items():
            routes.setdefault(topic, []).append(apply)
    return routes


def _pages(projector: BulkProjector) -> Iterator[list[LoggedEvent]]:
    """The decoded log, a page at a time, the next page read while this one is folded."""
    decode = projector.decoder.decode_row
    query = sql.SQL(
        "SELECT notification_id, originator_id, originator_version, topic, state FROM {}"
        " WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
    ).format(projector.events_table)
    with (
        projector.database.connect(projector.schema, autocommit=True) as conn,
        ThreadPoolExecutor(1, thread_name_prefix="ledger-fold-read") as pool,
    ):
        cursor = conn.cursor(binary=True)

        def page_after(after: int) -> list[LoggedEvent]:
            return [decode(*row) for row in cursor.execute(query, (after, PAGE))]

        ahead = pool.submit(page_after, 0)
        while page := ahead.result():
            ahead = pool.submit(page_after, page[-1].position)
            yield page


def _write(conn: psycopg.Connection[Any], folds: Sequence[Fold] | Any, last: int) -> None:
    with conn.transaction():
        for fold in folds:
            for table, rows in fold.rows().items():
                copy = sql.SQL("COPY {} ({}) FROM STDIN").format(
                    sql.Identifier(table),
                    sql.SQL(", ").join(map(sql.Identifier, fold.columns[table])),
                )
                with conn.cursor().copy(copy) as out:
                    for row in rows:
                        out.write_row(row)
        for fold in folds:
            for query, params in fold.statements_after():
                conn.execute(query, params)
        conn.execute(
            "UPDATE projection_positions SET position = %s, updated_at = now()"
            " WHERE name = ANY(%s)",
            (last, [fold.name for fold in folds]),
        )
