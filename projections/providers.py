"""providers: each provider with its qualifications; reports with their time to
resolution; and the compliance figures computed from these and the other read tables.

The figures are computed at read time, over indexes by provider, because account
status depends on the moment of reading (suspensions lapse without an event).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import Cursor
from psycopg.rows import DictRow

from ledger.log import LoggedEvent
from ledger.ruleset import Ruleset
from projections.accounts import status_sql
from projections.base import Projection, Statement, actor_id, actor_role

DDL = (
    """CREATE TABLE IF NOT EXISTS providers (
        provider_id uuid PRIMARY KEY,
        code text NOT NULL,
        name text NOT NULL,
        licence_ref text NOT NULL,
        registered_at timestamptz NOT NULL,
        qualifications jsonb NOT NULL DEFAULT '[]',
        position bigint NOT NULL,
        last_position bigint NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS reports (
        report_id uuid PRIMARY KEY,
        post_id uuid NOT NULL,
        account_id uuid NOT NULL,
        provider_id uuid NOT NULL,
        reason text NOT NULL,
        reported_at timestamptz NOT NULL,
        outcome text,
        resolved_at timestamptz,
        handler_id text,
        handler_role text,
        seconds_to_resolve double precision,
        position bigint NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS reports_open ON reports (provider_id) WHERE resolved_at IS NULL",
    "CREATE INDEX IF NOT EXISTS reports_resolved ON reports (provider_id, seconds_to_resolve)"
    " WHERE resolved_at IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS reports_post ON reports (post_id)",
)


def registered(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    p = e.payload
    yield (
        "INSERT INTO providers (provider_id, code, name, licence_ref, registered_at,"
        " position, last_position) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (
            e.originator_id,
            p["code"],
            p["name"],
            p["licence_ref"],
            e.timestamp,
            e.position,
            e.position,
        ),
    )


def qualified(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    entry = {**e.payload, "recorded_at": e.timestamp.isoformat()}
    yield (
        "UPDATE providers SET qualifications = qualifications || jsonb_build_array(%s::jsonb),"
        " last_position = %s WHERE provider_id = %s",
        (json.dumps(entry), e.position, e.originator_id),
    )


def reported(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    yield (
        "INSERT INTO reports (report_id, post_id, account_id, provider_id, reason, reported_at,"
        " position) SELECT %s, post_id, account_id, provider_id, %s, %s, %s"
        " FROM posts WHERE post_id = %s",
        (e.payload["report_id"], e.payload["reason"], e.timestamp, e.position, e.originator_id),
    )


def resolved(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    p = e.payload
    yield (
        "UPDATE reports SET outcome = %s, resolved_at = %s, handler_id = %s, handler_role = %s,"
        " seconds_to_resolve = %s WHERE report_id = %s",
        (
            p["outcome"],
            e.timestamp,
            actor_id(e),
            actor_role(e),
            p["seconds_to_resolve"],
            p["report_id"],
        ),
    )


PROVIDERS = Projection(
    name="providers",
    version=1,
    tables=("providers", "reports"),
    ddl=DDL,
    depends_on=("posts",),
    handlers={
        "Provider.Registered": registered,
        "Provider.QualificationRecorded": qualified,
        "Post.Reported": reported,
        "Post.ReportResolved": resolved,
    },
)

FIGURES_SQL = f"""
SELECT p.provider_id, p.code, p.name, p.licence_ref, p.registered_at, p.qualifications,
  a.accounts, a.by_kind, a.by_status, a.verified, a.public, a.public_reviewed, a.public_filed,
  s.by_level, s.by_issuer_role,
  r.open_reports, r.p50, r.p95
FROM providers p
CROSS JOIN LATERAL (
  SELECT coalesce(sum(n), 0)::bigint AS accounts,
    coalesce(jsonb_object_agg(kind, n) FILTER (WHERE kind IS NOT NULL), '{{}}') AS by_kind,
    (SELECT coalesce(jsonb_object_agg(status, n), '{{}}') FROM (
       SELECT {status_sql()} AS status, count(*) AS n FROM accounts
       WHERE provider_id = p.provider_id GROUP BY 1) st) AS by_status,
    sum(verified)::bigint AS verified, sum(public)::bigint AS public,
    sum(public_reviewed)::bigint AS public_reviewed, sum(public_filed)::bigint AS public_filed
  FROM (
    SELECT kind, count(*) AS n, count(*) FILTER (WHERE verified) AS verified,
      count(*) FILTER (WHERE kind = 'public') AS public,
      count(*) FILTER (WHERE kind = 'public' AND review_outcome IS NOT NULL) AS public_reviewed,
      count(*) FILTER (WHERE kind = 'public' AND filed_at IS NOT NULL) AS public_filed
    FROM accounts WHERE provider_id = p.provider_id GROUP BY kind) k
) a
CROSS JOIN LATERAL (
  SELECT
    (SELECT coalesce(jsonb_object_agg(level, n), '{{}}') FROM (SELECT level, count(*) AS n
       FROM sanctions WHERE provider_id = p.provider_id GROUP BY level) l) AS by_level,
    (SELECT coalesce(jsonb_object_agg(issuer_role, n), '{{}}') FROM (SELECT issuer_role,
       count(*) AS n FROM sanctions WHERE provider_id = p.provider_id GROUP BY issuer_role) i)
       AS by_issuer_role
) s
CROSS JOIN LATERAL (
  SELECT
    (SELECT count(*) FROM reports WHERE provider_id = p.provider_id AND resolved_at IS NULL)
      AS open_reports,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds_to_resolve) AS p50,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY seconds_to_resolve) AS p95
  FROM reports WHERE provider_id = p.provider_id AND resolved_at IS NOT NULL
) r
WHERE %(all)s OR p.provider_id = ANY(%(ids)s)
ORDER BY p.code
"""


def provider_figures(
    cur: Cursor[DictRow], now: datetime, provider_ids: Sequence[UUID] | None = None
) -> list[dict[str, Any]]:
    """Compliance figures per provider, as of `now` (which decides lapsed suspensions)."""
    cur.execute(FIGURES_SQL, figures_params(now, provider_ids))
    return shape_figures(cur.fetchall())


def figures_params(now: datetime, provider_ids: Sequence[UUID] | None) -> dict[str, Any]:
    return {"now": now, "all": provider_ids is None, "ids": list(provider_ids or [])}


def shape_figures(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        accounts = row["accounts"] or 0
        public = row["public"] or 0
        out.append(
            {
                **{k: row[k] for k in ("provider_id", "code", "name", "licence_ref")},
                "registered_at": row["registered_at"],
                "qualifications": row["qualifications"],
                "accounts": accounts,
                "accounts_by_kind": row["by_kind"],
                "accounts_by_status": row["by_status"],
                "share_verified": _share(row["verified"], accounts),
                "share_public_reviewed": _share(row["public_reviewed"], public),
                "share_public_filed": _share(row["public_filed"], public),
                "sanctions_by_level": row["by_level"],
                "sanctions_by_issuer_role": row["by_issuer_role"],
                "open_reports": row["open_reports"],
                "resolution_seconds_p50": row["p50"],
                "resolution_seconds_p95": row["p95"],
            }
        )
    return out


def _share(part: int | None, whole: int) -> float | None:
    return round((part or 0) / whole, 4) if whole else None
