"""Where each projection has got to: its row in `projection_positions`, written in the
same transaction as its tables (exactly once). Status and lag; waiting for a position."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import Connection, sql
from psycopg.rows import dict_row, tuple_row

DDL = """CREATE TABLE IF NOT EXISTS projection_positions (
    name text PRIMARY KEY,
    position bigint NOT NULL DEFAULT 0,
    version int NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS projection_failures (
    projection text NOT NULL,
    position bigint NOT NULL,
    error text NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, position))"""

# The dead letters: an event a projection could not apply, skipped so the rest goes on.
RECORD_FAILURE = """INSERT INTO projection_failures (projection, position, error)
    VALUES (%s, %s, %s) ON CONFLICT (projection, position)
    DO UPDATE SET error = excluded.error, failed_at = now()"""


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    position: int
    head: int
    lag_events: int
    # Age of the oldest event not yet projected (0 when caught up).
    lag_seconds: float
    updated_at: datetime | None
    # Events recorded as dead letters: skipped because they could not be applied.
    failures: int = 0

    @property
    def healthy(self) -> bool:
        return self.failures == 0


def read_positions(
    conn: Connection[Any], schema: str, names: list[str] | None = None, share_lock: bool = False
) -> dict[str, int]:
    """Every projection's position, or those of `names` (0 for one not set up yet);
    `share_lock` holds them still until the transaction ends."""
    query = "SELECT name, position FROM {}.projection_positions"
    if names is not None:
        query += " WHERE name = ANY(%s)"
    if share_lock:
        query += " FOR SHARE"
    cur = conn.cursor(row_factory=tuple_row)
    rows = cur.execute(
        sql.SQL(query).format(sql.Identifier(schema)), (names,) if names is not None else None
    )
    found = {str(name): int(pos) for name, pos in rows.fetchall()}
    return found if names is None else {n: found.get(n, 0) for n in names}


def status(
    conn: Connection[object], schema: str, events_table: sql.Composable
) -> list[ProjectionStatus]:
    cur = conn.cursor(row_factory=dict_row)
    head = cur.execute(
        sql.SQL("SELECT coalesce(max(notification_id), 0) AS head FROM {}").format(events_table)
    ).fetchone()["head"]  # type: ignore[index]
    rows = cur.execute(
        sql.SQL(
            "SELECT name, position, updated_at, (SELECT count(*) FROM {s}.projection_failures f"
            " WHERE f.projection = p.name) AS failures"
            " FROM {s}.projection_positions p ORDER BY name"
        ).format(s=sql.Identifier(schema))
    ).fetchall()
    now = datetime.now(UTC)
    out = []
    for row in rows:
        lag_seconds = 0.0
        if row["position"] < head:
            oldest = cur.execute(
                sql.SQL(
                    "SELECT (convert_from(state, 'UTF8')::json #>> '{{timestamp,_data_}}')"
                    "::timestamptz AS at FROM {} WHERE notification_id > %s"
                    " ORDER BY notification_id LIMIT 1"
                ).format(events_table),
                (row["position"],),
                prepare=False,
            ).fetchone()
            if oldest and oldest["at"]:
                lag_seconds = max(0.0, (now - oldest["at"]).total_seconds())
        out.append(
            ProjectionStatus(
                row["name"],
                row["position"],
                head,
                head - row["position"],
                lag_seconds,
                row["updated_at"],
                row["failures"],
            )
        )
    return out


class ProjectionTimeout(TimeoutError):
    pass


def wait_for(
    conn: Connection[object],
    schema: str,
    position: int,
    names: list[str] | None = None,
    timeout: float = 5.0,
) -> None:
    """Return once the projections (all when `names` is None) have reached `position`;
    raise ProjectionTimeout after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        positions = read_positions(conn, schema, names)
        if not conn.autocommit:
            conn.commit()
        if positions and min(positions.values()) >= position:
            return
        if time.monotonic() >= deadline:
            behind = {n: p for n, p in positions.items() if p < position}
            raise ProjectionTimeout(
                f"projections {sorted(behind)} did not reach position {position}"
                f" within {timeout:g} s"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
