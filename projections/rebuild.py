"""Rebuilding projections from position zero, and checking live tables against a
fresh rebuild in a scratch schema."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from psycopg import Connection, sql

from ledger.application import Ledger
from ledger.database import Database
from projections.base import Projection
from projections.bulk import BulkProjector
from projections.folds.run import APART, fold_into, foldable
from projections.positions import read_positions
from projections.runner import Projector

Progress = Callable[[int, int], None]  # (position, head)


def rebuild(
    ledger: Ledger,
    database: Database,
    projections: Sequence[Projection],
    schema: str | None = None,
    progress: Progress | None = None,
    fold: bool = True,
) -> int:
    """Replay the whole log into fresh tables, then swap them in; return events read.

    The fresh tables are unlogged and without their indexes while the log is replayed,
    then logged and indexed before the swap. They are filled by folding
    (`projections.folds`: every read model's rows kept in memory over one read of the
    log, then written with COPY) when every projection asked for has a fold and `fold`
    is true; otherwise, or when an event is beyond the folds or anything else stops them,
    in bulk
    (`projections.bulk`: the projections' own statements, set-based where they can be).

    The live tables stay as they were until the swap, one transaction that holds the
    live position rows (a running projector waits), applies the last events and moves
    the fresh tables into place. A rebuild that fails leaves the live tables untouched.
    """
    live = Projector(ledger, database, schema, projections)
    scratch = f"ledger_rebuild_{uuid.uuid4().hex[:10]}"
    fresh = BulkProjector(ledger, database, scratch, projections)
    try:
        live.setup()
        folding = fold and foldable(projections)
        # The read model folded apart streams its rows in while the rest is folded:
        # logged as they come, not rewritten to be logged at the end.
        fresh.setup(logged=(APART,) if folding else ())
        head = ledger.head()
        on_page = (lambda pos: progress(pos, head)) if progress else None
        folded = fold_into(fresh, head, on_page) if folding else None
        events = folded if folded is not None else fresh.catch_up(progress=on_page)
        fresh.finish()
        conn = fresh.conn
        with conn.transaction():
            _lock_positions(conn, live.schema, projections)
            events += fresh.catch_up()
            _swap(conn, scratch, live.schema, projections)
        return events
    finally:
        live.close()
        fresh.close()
        database.drop_schema(scratch)


def _lock_positions(
    conn: Connection[object], schema: str, projections: Sequence[Projection]
) -> None:
    conn.execute(
        sql.SQL("SELECT 1 FROM {}.projection_positions WHERE name = ANY(%s) FOR UPDATE").format(
            sql.Identifier(schema)
        ),
        ([p.name for p in projections],),
    )


def _swap(
    conn: Connection[object], scratch: str, live: str, projections: Sequence[Projection]
) -> None:
    names = [p.name for p in projections]
    for table in (t for p in projections for t in p.tables):
        conn.execute(
            sql.SQL("DROP TABLE IF EXISTS {}.{} CASCADE").format(
                sql.Identifier(live), sql.Identifier(table)
            )
        )
        conn.execute(
            sql.SQL("ALTER TABLE {}.{} SET SCHEMA {}").format(
                sql.Identifier(scratch), sql.Identifier(table), sql.Identifier(live)
            )
        )
    conn.execute(
        sql.SQL(
            "UPDATE {live}.projection_positions l SET position = s.position,"
            " version = s.version, updated_at = now() FROM {scratch}.projection_positions s"
            " WHERE l.name = s.name AND l.name = ANY(%s)"
        ).format(live=sql.Identifier(live), scratch=sql.Identifier(scratch)),
        (names,),
    )
    conn.execute(
        sql.SQL("DELETE FROM {}.projection_failures WHERE projection = ANY(%s)").format(
            sql.Identifier(live)
        ),
        (names,),
    )
    conn.execute(
        sql.SQL("INSERT INTO {}.projection_failures SELECT * FROM {}.projection_failures").format(
            sql.Identifier(live), sql.Identifier(scratch)
        )
    )


@dataclass
class Difference:
    table: str
    only_live: list[tuple[object, ...]] = field(default_factory=list)
    only_rebuilt: list[tuple[object, ...]] = field(default_factory=list)
    count: int = 0


def verify(
    ledger: Ledger,
    database: Database,
    projections: Sequence[Projection],
    schema: str | None = None,
    progress: Progress | None = None,
    shown: int = 10,
) -> list[Difference]:
    """Rebuild into a scratch schema up to the live positions and compare row by row.

    The live position rows are share-locked while the scratch copy catches up to them
    and the tables are compared, so the live projector waits rather than moving on.
    """
    live_schema = schema or ledger.store.datastore.schema or "public"
    scratch = f"ledger_verify_{uuid.uuid4().hex[:10]}"
    scratch_projector = BulkProjector(ledger, database, scratch, projections)
    live = database.connect()
    try:
        scratch_projector.setup()
        names = [p.name for p in projections]
        first = read_positions(live, live_schema, names)
        live.commit()
        head = ledger.head()
        scratch_projector.catch_up(
            until=first, progress=(lambda pos: progress(pos, head)) if progress else None
        )
        scratch_projector.finish(indexes=False)
        with live.transaction():
            at = read_positions(live, live_schema, names, share_lock=True)
            scratch_projector.catch_up(until=at)
            return [
                d
                for p in projections
                for table in p.tables
                if (d := _compare(live, live_schema, scratch, table, shown)).count
            ]
    finally:
        live.close()
        scratch_projector.close()
        database.drop_schema(scratch)


def _compare(conn: object, live: str, scratch: str, table: str, shown: int) -> Difference:
    """The rows of `table` found in one schema and not the other. A counter's row of zero
    (the figures' tables, column `n`) counts nothing: a rebuild by folding recounts the
    figures and has none, the projector keeps them once a count has gone up and down."""
    diff = Difference(table)
    counter = conn.execute(  # type: ignore[attr-defined]
        "SELECT 1 FROM information_schema.columns"
        " WHERE table_schema = %s AND table_name = %s AND column_name = 'n'",
        (scratch, table),
    ).fetchone()
    where = sql.SQL(" WHERE n <> 0" if counter else "")
    for a, b, bucket in ((live, scratch, diff.only_live), (scratch, live, diff.only_rebuilt)):
        query = sql.SQL("SELECT * FROM {}.{}{w} EXCEPT ALL SELECT * FROM {}.{}{w}").format(
            sql.Identifier(a),
            sql.Identifier(table),
            sql.Identifier(b),
            sql.Identifier(table),
            w=where,
        )
        rows = conn.execute(query).fetchall()  # type: ignore[attr-defined]
        diff.count += len(rows)
        bucket.extend(rows[:shown])
    return diff
