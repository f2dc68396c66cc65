"""providers: each provider with its qualifications; reports with their time to
resolution; and the compliance figures read from counters the projections keep.

Counts are kept per provider in the transaction of their events: accounts by kind,
eventual status, verified, reviewed and filed (`accounts`), sanctions by level and
issuer role (`sanctions`), open and resolved reports (here). Status at a moment takes
the eventual counts and undoes the lapses still to come (`by_status_sql`). The exact
percentiles of time to resolution come from a histogram of resolution times in
geometric buckets (`resolution_buckets`): its cumulative counts name the bucket that
holds a rank, and the reports index (provider, bucket, seconds) is read from that
bucket's start, so the cost is the number of buckets plus the rank within its bucket,
not the number of reports.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import Cursor
from psycopg.rows import DictRow

from ledger.log import LoggedEvent
from ledger.ruleset import Ruleset
from projections.accounts import by_status_sql, shard
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
        resolution_bucket int,
        position bigint NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS reports_resolved ON reports"
    " (provider_id, resolution_bucket, seconds_to_resolve) WHERE resolution_bucket IS NOT NULL",
    "DROP INDEX IF EXISTS reports_post",  # read by nothing
    # figure: open, resolved (with a time to resolution); split over shards by report,
    # as account_figures is.
    """CREATE TABLE IF NOT EXISTS report_figures (
        provider_id uuid NOT NULL,
        figure text NOT NULL,
        shard smallint NOT NULL,
        n bigint NOT NULL,
        PRIMARY KEY (provider_id, figure, shard))""",
    """CREATE TABLE IF NOT EXISTS resolution_buckets (
        provider_id uuid NOT NULL,
        bucket int NOT NULL,
        n bigint NOT NULL,
        PRIMARY KEY (provider_id, bucket))""",
)

# Bucket bounds in seconds: 0, then 16 buckets per doubling from 1 s to 2^32 s, each
# under 4.5% wide. Any non-decreasing map from seconds to buckets keeps the order of
# (bucket, seconds) that of seconds; bisect over sorted bounds is one.
BUCKET_BOUNDS = (0.0, *(2 ** (i / 16) for i in range(32 * 16 + 1)))


def resolution_bucket(seconds: float | None) -> int | None:
    return None if seconds is None else bisect.bisect_right(BUCKET_BOUNDS, seconds)


def _report_counts(sign: int) -> tuple[str, ...]:
    """Add (sign 1) or take out (-1) a report's contribution to its provider's figures."""
    return (
        "INSERT INTO report_figures AS f (provider_id, figure, shard, n)"
        f" SELECT provider_id, x.figure, {shard('report_id')}, {sign}"
        " FROM reports CROSS JOIN LATERAL (VALUES"
        " ('open', resolved_at IS NULL), ('resolved', resolution_bucket IS NOT NULL))"
        " x(figure, counts) WHERE report_id = %s AND counts"
        " ON CONFLICT (provider_id, figure, shard) DO UPDATE SET n = f.n + EXCLUDED.n",
        "INSERT INTO resolution_buckets AS b (provider_id, bucket, n)"
        f" SELECT provider_id, resolution_bucket, {sign} FROM reports"
        " WHERE report_id = %s AND resolution_bucket IS NOT NULL"
        " ON CONFLICT (provider_id, bucket) DO UPDATE SET n = b.n + EXCLUDED.n",
    )


# Recount the figures from the reports rows (bulk loads; tests).
RECOUNT = (
    "DELETE FROM report_figures",
    "DELETE FROM resolution_buckets",
    "INSERT INTO report_figures (provider_id, figure, shard, n) SELECT provider_id, x.figure,"
    f" {shard('report_id')}, count(*) FROM reports CROSS JOIN LATERAL (VALUES"
    " ('open', resolved_at IS NULL), ('resolved', resolution_bucket IS NOT NULL))"
    " x(figure, counts) WHERE counts GROUP BY 1, 2, 3",
    "INSERT INTO resolution_buckets (provider_id, bucket, n) SELECT provider_id,"
    " resolution_bucket, count(*) FROM reports WHERE resolution_bucket IS NOT NULL"
    " GROUP BY 1, 2",
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
    for query in _report_counts(1):
        yield query, (e.payload["report_id"],)


def resolved(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    p = e.payload
    for query in _report_counts(-1):
        yield query, (p["report_id"],)
    yield (
        "UPDATE reports SET outcome = %s, resolved_at = %s, handler_id = %s, handler_role = %s,"
        " seconds_to_resolve = %s, resolution_bucket = %s WHERE report_id = %s",
        (
            p["outcome"],
            e.timestamp,
            actor_id(e),
            actor_role(e),
            p["seconds_to_resolve"],
            resolution_bucket(p["seconds_to_resolve"]),
            p["report_id"],
        ),
    )
    for query in _report_counts(1):
        yield query, (p["report_id"],)


PROVIDERS = Projection(
    name="providers",
    version=3,
    tables=("providers", "reports", "report_figures", "resolution_buckets"),
    ddl=DDL,
    depends_on=("posts",),
    handlers={
        "Provider.Registered": registered,
        "Provider.QualificationRecorded": qualified,
        "Post.Reported": reported,
        "Post.ReportResolved": resolved,
    },
)


def _percentile(fraction: float) -> str:
    """SQL for percentile_cont(fraction) of the provider's times to resolution, given
    `r.resolved` of them: the two values around the rank, read from the bucket that
    holds it and the next bucket that holds any, interpolated as percentile_cont does.
    (OFFSET 0 keeps `v` a subquery, so the pair is read once, not once per use.)"""
    return f"""(SELECT CASE WHEN v.frac = 0 OR v.pair[2] IS NULL THEN v.pair[1]
    ELSE v.pair[1] + (v.pair[2] - v.pair[1]) * v.frac END
  FROM (SELECT k.pos - k.rank AS frac, ARRAY(
      SELECT seconds_to_resolve FROM reports
      WHERE provider_id = p.provider_id AND resolution_bucket IS NOT NULL
        AND resolution_bucket BETWEEN b.bucket AND b.next
      ORDER BY resolution_bucket, seconds_to_resolve OFFSET k.rank - b.before LIMIT 2) AS pair
    FROM (SELECT x.pos, floor(x.pos)::bigint AS rank
      FROM (SELECT {fraction}::float8 * (r.resolved - 1) AS pos) x) k
    CROSS JOIN LATERAL (SELECT bucket, next, total - n AS before FROM (
        SELECT bucket, n, sum(n) OVER w AS total, coalesce(lead(bucket) OVER w, bucket) AS next
        FROM resolution_buckets WHERE provider_id = p.provider_id AND n > 0
        WINDOW w AS (ORDER BY bucket)) c
      WHERE total > k.rank ORDER BY bucket LIMIT 1) b
    WHERE r.resolved > 0 OFFSET 0) v)"""


FIGURES_SQL = f"""
SELECT p.provider_id, p.code, p.name, p.licence_ref, p.registered_at, p.qualifications,
  a.accounts, a.by_kind, {by_status_sql("p.provider_id")} AS by_status,
  CASE WHEN a.accounts > 0 THEN a.verified END AS verified,
  CASE WHEN a.accounts > 0 THEN a.public END AS public,
  CASE WHEN a.accounts > 0 THEN a.public_reviewed END AS public_reviewed,
  CASE WHEN a.accounts > 0 THEN a.public_filed END AS public_filed,
  s.by_level, s.by_issuer_role,
  r.open_reports, {_percentile(0.5)} AS p50, {_percentile(0.95)} AS p95
FROM providers p
CROSS JOIN LATERAL (
  SELECT coalesce(sum(n) FILTER (WHERE figure = 'kind'), 0)::bigint AS accounts,
    coalesce(jsonb_object_agg(value, n) FILTER (WHERE figure = 'kind' AND n > 0), '{{}}')
      AS by_kind,
    coalesce(sum(n) FILTER (WHERE figure = 'verified'), 0)::bigint AS verified,
    coalesce(sum(n) FILTER (WHERE figure = 'kind' AND value = 'public'), 0)::bigint AS public,
    coalesce(sum(n) FILTER (WHERE figure = 'public_reviewed'), 0)::bigint AS public_reviewed,
    coalesce(sum(n) FILTER (WHERE figure = 'public_filed'), 0)::bigint AS public_filed
  FROM (SELECT figure, value, sum(n)::bigint AS n FROM account_figures
    WHERE provider_id = p.provider_id GROUP BY figure, value) f
) a
CROSS JOIN LATERAL (
  SELECT
    coalesce(jsonb_object_agg(value, n) FILTER (WHERE figure = 'level' AND n > 0), '{{}}')
      AS by_level,
    coalesce(jsonb_object_agg(value, n) FILTER (WHERE figure = 'issuer_role' AND n > 0), '{{}}')
      AS by_issuer_role
  FROM (SELECT figure, value, sum(n)::bigint AS n FROM sanction_figures
    WHERE provider_id = p.provider_id GROUP BY figure, value) f
) s
CROSS JOIN LATERAL (
  SELECT coalesce(sum(n) FILTER (WHERE figure = 'open'), 0)::bigint AS open_reports,
    coalesce(sum(n) FILTER (WHERE figure = 'resolved'), 0)::bigint AS resolved
  FROM report_figures WHERE provider_id = p.provider_id
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
