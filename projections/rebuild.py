"""Rebuilding projections from position zero, and checking live tables against a
fresh rebuild in a scratch schema."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from psycopg import sql

from ledger.application import Ledger
from ledger.database import Database
from projections.base import Projection
from projections.positions import read_positions
from projections.runner import Projector

Progress = Callable[[int, int], None]  # (position, head)


def rebuild(
    ledger: Ledger,
    database: Database,
    projections: Sequence[Projection],
    schema: str | None = None,
    progress: Progress | None = None,
) -> int:
    """Empty the projections and replay the whole log into them; return events read."""
    projector = Projector(ledger, database, schema, projections)
    try:
        projector.setup()
        projector.reset()
        head = ledger.head()
        return projector.catch_up(progress=(lambda pos: progress(pos, head)) if progress else None)
    finally:
        projector.close()


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
    scratch_projector = Projector(ledger, database, scratch, projections)
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
    diff = Difference(table)
    for a, b, bucket in ((live, scratch, diff.only_live), (scratch, live, diff.only_rebuilt)):
        query = sql.SQL("SELECT * FROM {}.{} EXCEPT ALL SELECT * FROM {}.{}").format(
            sql.Identifier(a), sql.Identifier(table), sql.Identifier(b), sql.Identifier(table)
        )
        rows = conn.execute(query).fetchall()  # type: ignore[attr-defined]
        diff.count += len(rows)
        bucket.extend(rows[:shown])
    return diff
