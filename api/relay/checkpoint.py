"""The relay's checkpoint and what it reads beside the log, in PostgreSQL (no nats-py).

`relay_positions` has one row per stream: the last log position in the stream and that
message's stream sequence, moved only after JetStream acknowledged the publish, and the
figures the metrics show. The row is locked (FOR UPDATE) for a whole step, publish
included, so two relays on one stream take turns, as two projectors do."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import Connection, errors, sql
from psycopg.rows import dict_row

DDL = """CREATE TABLE IF NOT EXISTS relay_positions (
    stream text PRIMARY KEY,
    position bigint NOT NULL DEFAULT 0,
    sequence bigint NOT NULL DEFAULT 0,
    publishes bigint NOT NULL DEFAULT 0,
    duplicates bigint NOT NULL DEFAULT 0,
    reconciled bigint NOT NULL DEFAULT 0,
    stream_bytes bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now())"""

# The read models that say who owns what (api.graphql.subscriptions.OWNER_TABLES).
OWNER_PROJECTIONS = ("accounts", "posts", "providers")

OWNERS = """SELECT provider_id AS id, code FROM providers WHERE provider_id = ANY(%(ids)s)
    UNION ALL SELECT a.account_id, p.code FROM accounts a JOIN providers p USING (provider_id)
        WHERE a.account_id = ANY(%(ids)s)
    UNION ALL SELECT s.post_id, p.code FROM posts s JOIN providers p USING (provider_id)
        WHERE s.post_id = ANY(%(ids)s)"""

# The size of the first signed tree head that holds each event's leaf.
SEALED = """SELECT l.position, (SELECT min(h.tree_size) FROM tree_heads h
    WHERE h.tree_size > l.leaf_index) AS size
    FROM merkle_leaves l WHERE l.position = ANY(%s)"""


@dataclass(frozen=True)
class Checkpoint:
    position: int  # the last log position in the stream
    sequence: int  # its stream sequence (0: the stream holds nothing)


@dataclass(frozen=True)
class Progress:
    """What one step adds to the row's figures."""

    publishes: int = 0
    duplicates: int = 0
    reconciled: int = 0
    stream_bytes: int | None = None


def setup(conn: Connection[Any], stream: str) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.relay'))")
        conn.execute(DDL)
        conn.execute(
            "INSERT INTO relay_positions (stream) VALUES (%s) ON CONFLICT DO NOTHING", (stream,)
        )


def lock(conn: Connection[Any], stream: str) -> Checkpoint:
    """The stream's checkpoint, its row locked until the transaction ends."""
    row = conn.execute(
        "SELECT position, sequence FROM relay_positions WHERE stream = %s FOR UPDATE", (stream,)
    ).fetchone()
    if row is None:
        raise LookupError(f"no relay checkpoint for stream {stream}: run the relay's setup")
    return Checkpoint(int(row[0]), int(row[1]))


def store(conn: Connection[Any], stream: str, at: Checkpoint, progress: Progress) -> None:
    conn.execute(
        "UPDATE relay_positions SET position = %s, sequence = %s, publishes = publishes + %s,"
        " duplicates = duplicates + %s, reconciled = reconciled + %s,"
        " stream_bytes = coalesce(%s, stream_bytes), updated_at = now() WHERE stream = %s",
        (at.position, at.sequence, progress.publishes, progress.duplicates,
         progress.reconciled, progress.stream_bytes, stream),
    )  # fmt: skip


def reset(conn: Connection[Any], stream: str) -> None:
    conn.execute(
        "UPDATE relay_positions SET position = 0, sequence = 0, stream_bytes = 0,"
        " updated_at = now() WHERE stream = %s",
        (stream,),
    )


def owners_ready(conn: Connection[Any]) -> int:
    """The position up to which the read side knows who owns what."""
    row = conn.execute(
        "SELECT min(position) FROM projection_positions WHERE name = ANY(%s)",
        (list(OWNER_PROJECTIONS),),
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def owners(conn: Connection[Any], ids: list[UUID | str]) -> dict[UUID | str, str]:
    """The provider code of each originator the read side knows."""
    rows = conn.execute(OWNERS, {"ids": ids}).fetchall()
    return {r[0]: r[1] for r in rows}


def sealed_sizes(conn: Connection[Any], positions: list[int]) -> dict[int, int]:
    """The signed tree size each sealed event is in (an event not yet in a head: absent)."""
    try:
        with conn.transaction():  # a savepoint: no sealer yet is not an error
            rows = conn.execute(SEALED, (positions,)).fetchall()
    except errors.UndefinedTable:
        return {}
    return {int(r[0]): int(r[1]) for r in rows if r[1] is not None}


@dataclass(frozen=True)
class RelayStatus:
    stream: str
    position: int
    sequence: int
    head: int
    publishes: int
    duplicates: int
    reconciled: int
    stream_bytes: int
    updated_at: datetime

    @property
    def lag_events(self) -> int:
        return max(0, self.head - self.position)


def status(conn: Connection[Any], schema: str, events_table: sql.Composable) -> list[RelayStatus]:
    """Every relay's row (none when no relay ever ran)."""
    exists = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}".relay_positions',)
    ).fetchone()
    if not exists or not exists[0]:
        return []
    query = sql.SQL(
        "SELECT r.*, (SELECT coalesce(max(notification_id), 0) FROM {e}) AS head"
        " FROM {s}.relay_positions r ORDER BY stream"
    ).format(e=events_table, s=sql.Identifier(schema))
    rows = conn.cursor(row_factory=dict_row).execute(query).fetchall()
    return [RelayStatus(**row) for row in rows]
