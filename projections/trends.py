"""Weekly trends for the console's charts, computed in SQL over the read tables:
sanctions imposed per week by level, reports opened and resolved per week, appeals
lodged and decided per week by outcome, and accounts by status at the end of each week.

Weeks start on Monday 00:00 UTC (PostgreSQL's `date_trunc('week', ...)` in the read
sessions' UTC). Every statement takes `%(since)s` (the first week's start is the week of
it), `%(now)s` (the ledger's clock: the last week ends there) and `%(provider)s` (one
provider's id, or NULL for all of them: the caller confines it)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

_PROVIDER = "(%(provider)s::uuid IS NULL OR provider_id = %(provider)s::uuid)"
_S_PROVIDER = _PROVIDER.replace("provider_id", "s.provider_id")

SANCTIONS_SQL = f"""SELECT date_trunc('week', imposed_at) AS week, level, count(*) AS n
    FROM sanctions
    WHERE imposed_at >= date_trunc('week', %(since)s::timestamptz)
      AND imposed_at < %(now)s AND {_PROVIDER}
    GROUP BY 1, 2 ORDER BY 1, 2"""

REPORTS_SQL = f"""SELECT week, sum(opened)::bigint AS opened, sum(resolved)::bigint AS resolved
    FROM (SELECT date_trunc('week', reported_at) AS week, 1 AS opened, 0 AS resolved
            FROM reports WHERE reported_at >= date_trunc('week', %(since)s::timestamptz)
            AND reported_at < %(now)s AND {_PROVIDER}
          UNION ALL
          SELECT date_trunc('week', resolved_at), 0, 1
            FROM reports WHERE resolved_at >= date_trunc('week', %(since)s::timestamptz)
            AND resolved_at < %(now)s AND {_PROVIDER}) r
    GROUP BY 1 ORDER BY 1"""

APPEALS_SQL = f"""SELECT week, outcome, count(*) AS n
    FROM (SELECT date_trunc('week', appealed_at) AS week, 'lodged' AS outcome
            FROM sanctions WHERE appealed_at >= date_trunc('week', %(since)s::timestamptz)
            AND appealed_at < %(now)s AND {_PROVIDER}
          UNION ALL
          SELECT date_trunc('week', appeal_decided_at), appeal_state
            FROM sanctions WHERE appeal_decided_at >= date_trunc('week', %(since)s::timestamptz)
            AND appeal_decided_at < %(now)s AND appeal_state IN ('upheld', 'overturned')
            AND {_PROVIDER}) a
    GROUP BY 1, 2 ORDER BY 1, 2"""

# Registrations per week since the start (a running sum gives the accounts at each week's
# end), and, at each week's end, each account's harshest sanction then in force.
REGISTERED_SQL = f"""SELECT date_trunc('week', registered_at) AS week, count(*) AS n
    FROM accounts WHERE registered_at < %(now)s AND {_PROVIDER} GROUP BY 1 ORDER BY 1"""

RESTRICTED_SQL = f"""WITH ends AS (
      SELECT w AS week, least(w + interval '7 days', %(now)s::timestamptz) AS at
      FROM generate_series(date_trunc('week', %(since)s::timestamptz),
                           %(now)s::timestamptz, interval '1 week') AS w),
    worst AS (
      SELECT e.week, s.account_id, max(array_position(%(ladder)s::text[], s.level)) AS rank
      FROM ends e JOIN sanctions s ON s.imposed_at <= e.at
        AND (s.lifted_at IS NULL OR s.lifted_at > e.at)
        AND (s.expires_at IS NULL OR s.expires_at > e.at)
        AND NOT (s.appeal_state = 'overturned' AND s.appeal_decided_at <= e.at)
      WHERE s.level = ANY(%(ladder)s::text[]) AND {_S_PROVIDER}
      GROUP BY 1, 2)
    SELECT week, (%(ladder)s::text[])[rank] AS status, count(*) AS n
    FROM worst GROUP BY 1, 2 ORDER BY 1, 2"""

# The statuses a sanction level leaves an account in, harshest last (a warning leaves it
# active); the ledger's ruleset names its levels so.
RESTRICTING = ("publishing_restricted", "updates_suspended", "closed")


def params(since: datetime, now: datetime, provider: Any) -> dict[str, Any]:
    return {"since": since, "now": now, "provider": provider, "ladder": list(RESTRICTING)}


def week_of(moment: datetime) -> datetime:
    """The start of the (UTC, Monday) week holding `moment`, as `date_trunc` has it."""
    day = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday())


def next_minute(moment: datetime) -> datetime:
    """The first whole minute at or after `moment`: the end of the series, stable for a
    minute, so that a page asked again gets the same answer (HTTP caches revalidate: 304)."""
    floor = moment.replace(second=0, microsecond=0)
    return floor if floor == moment else floor + timedelta(minutes=1)


def weeks(since: datetime, now: datetime) -> list[datetime]:
    """Every week from the one holding `since` to the one holding `now`."""
    out, week = [], week_of(since)
    while week <= now:
        out.append(week)
        week += timedelta(days=7)
    return out


def accounts_by_status(
    weeks: Sequence[datetime],
    registered: Sequence[dict[str, Any]],
    restricted: Sequence[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Per week: the accounts registered by its end, by status at its end."""
    worst: dict[tuple[datetime, str], int] = {(r["week"], r["status"]): r["n"] for r in restricted}
    out: list[dict[str, Any]] = []
    total, regs = 0, sorted(registered, key=lambda r: r["week"])
    i = 0
    for week in weeks:
        while i < len(regs) and regs[i]["week"] <= week:
            total += regs[i]["n"]
            i += 1
        counts = {status: worst.get((week, status), 0) for status in RESTRICTING}
        out.append({"week": week, "status": "active", "n": total - sum(counts.values())})
        out.extend({"week": week, "status": s, "n": n} for s, n in counts.items())
    return out
