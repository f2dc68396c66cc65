"""The reads the console's charts need (issue 24): weekly trends per provider, computed in
SQL over the read tables (projections/trends.py) and confined as every read is."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import strawberry
from strawberry.types import Info

from api.graphql.context import Context
from api.graphql.errors import bad_input
from api.graphql.reads import parse_id, rows, visible_provider
from projections import trends

Ctx = Info[Context, None]
MAX_WEEKS = 104


@strawberry.type(description="A count in one week (weeks start Monday 00:00 UTC).")
class WeekCount:
    week: datetime
    key: str = strawberry.field(description="A level, an outcome or a status.")
    count: int


@strawberry.type(description="Reports opened and resolved in one week.")
class ReportWeek:
    week: datetime
    opened: int
    resolved: int


@strawberry.type(
    description="Weekly series for the console's charts, from `since` to `until` (the next"
    " whole minute, so that the same question within a minute gets the same answer)."
)
class Trends:
    since: datetime
    until: datetime
    sanctions_by_level: list[WeekCount] = strawberry.field(
        description="Sanctions imposed per week, by level."
    )
    reports: list[ReportWeek] = strawberry.field(
        description="Reports opened and reports resolved per week (weeks with neither left out)."
    )
    appeals: list[WeekCount] = strawberry.field(
        description="Appeals lodged (key `lodged`) and decided (`upheld`, `overturned`) per week."
    )
    accounts_by_status: list[WeekCount] = strawberry.field(
        description="Accounts registered by each week's end, by their status then (the last"
        " week ends now); every week carries every status, zeros included."
    )


@strawberry.type(description="Who the request's token speaks for.")
class Viewer:
    name: str
    role: str
    provider_id: strawberry.ID | None = strawberry.field(
        description="The provider a provider's token is confined to (null: sees every one)."
    )


def _counts(found: list[dict[str, Any]], key: str) -> list[WeekCount]:
    return [WeekCount(week=r["week"], key=r[key], count=r["n"]) for r in found]


def _report_week(r: dict[str, Any]) -> ReportWeek:
    return ReportWeek(week=r["week"], opened=r["opened"], resolved=r["resolved"])


@strawberry.type
class ConsoleQuery:
    @strawberry.field(description="Who your token speaks for: its name, role and provider.")
    def viewer(self, info: Ctx) -> Viewer:
        principal = info.context.who()
        provider = principal.provider_id
        return Viewer(
            name=principal.name,
            role=principal.role.value,
            provider_id=None if provider is None else strawberry.ID(str(provider)),
        )

    @strawberry.field(
        description="Weekly trends over the last `weeks` weeks (1 to 104), for one provider or"
        " every provider visible to you (a provider sees only its own)."
    )
    async def trends(
        self, info: Ctx, weeks: int = 12, provider_id: strawberry.ID | None = None
    ) -> Trends:
        if not 1 <= weeks <= MAX_WEEKS:
            raise bad_input(f"weeks must be from 1 to {MAX_WEEKS}, not {weeks}")
        principal = info.context.who()
        wanted = None if provider_id is None else parse_id(provider_id, "providerId")
        mine = visible_provider(principal)
        provider = mine if wanted is None else wanted
        state = info.context.state
        now = trends.next_minute(state.ledger.clock())
        since = trends.week_of(now) - timedelta(days=7 * (weeks - 1))
        empty = mine is not None and provider != mine  # another provider's: nothing
        if empty:
            return Trends(since=since, until=now, sanctions_by_level=[], reports=[],
                          appeals=[], accounts_by_status=[])  # fmt: skip
        params = trends.params(since, now, provider)
        sanctions, reports, appeals, registered, restricted = [
            await rows(state, sql, params)
            for sql in (trends.SANCTIONS_SQL, trends.REPORTS_SQL, trends.APPEALS_SQL,
                        trends.REGISTERED_SQL, trends.RESTRICTED_SQL)
        ]  # fmt: skip
        statuses = trends.accounts_by_status(trends.weeks(since, now), registered, restricted)
        return Trends(
            since=since,
            until=now,
            sanctions_by_level=_counts(sanctions, "level"),
            reports=[_report_week(r) for r in reports],
            appeals=_counts(appeals, "outcome"),
            accounts_by_status=_counts(statuses, "status"),
        )
