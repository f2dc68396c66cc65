"""Queries: read tables for the present, the event store for the past and the raw log."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import strawberry
from strawberry.types import Info

from api.auth import Principal
from api.graphql.context import Context
from api.graphql.errors import ApiError, bad_input
from api.graphql.reads import (
    Where,
    keyset_page,
    page_size,
    parse_id,
    rows,
    text_filter,
    visible_provider,
)
from api.graphql.scalars import Position
from api.graphql.selects import ACCOUNT_SELECT, POST_SELECT
from api.graphql.types import (
    Account,
    AccountAsOf,
    AccountStatus,
    Actor,
    Connection,
    Edge,
    FlaggedPost,
    HistoryEntry,
    LedgerStatus,
    LogEvent,
    PageInfo,
    Post,
    ProjectionLag,
    Provider,
    Sanction,
)
from api.state import ApiState
from ledger.domain import EVENT_TYPES
from ledger.errors import LedgerError
from ledger.log import LoggedEvent
from ledger.views import account_view
from projections.accounts import status_filter_sql
from projections.positions import status as projection_status
from projections.providers import FIGURES_SQL, figures_params, shape_figures

Ctx = Info[Context, None]


def _confine(info: Ctx, where: Where, column: str = "provider_id") -> Where:
    """Confine to the principal's provider; bind `now`, the ledger's clock."""
    where.params["now"] = info.context.state.ledger.clock()
    return confine(info.context.who(), where, column)


def confine(principal: Principal, where: Where, column: str = "provider_id") -> Where:
    """Confine to the principal's provider (a provider sees only its own rows)."""
    return where.when(visible_provider(principal), f"{column} = %(mine)s", "mine")


@strawberry.input(
    description="Which accounts to list; every field given must hold (a provider always"
    " sees its own accounts only). `status` is the status at the moment of the query, a"
    " lapsed suspension counting as lapsed."
)
class AccountFilter:
    provider_id: strawberry.ID | None = None
    status: AccountStatus | None = None
    category: str | None = None
    kind: str | None = None
    verified: bool | None = None
    marked: bool | None = None


@strawberry.input(
    description="Which sanctions to list; every field given must hold. `imposedSince` is"
    " inclusive, `imposedUntil` exclusive; `appealState` is none, pending, upheld or"
    " overturned."
)
class SanctionFilter:
    provider_id: strawberry.ID | None = None
    account_id: strawberry.ID | None = None
    level: str | None = None
    issuer_role: str | None = None
    appeal_state: str | None = None
    imposed_since: datetime | None = None
    imposed_until: datetime | None = None


@strawberry.input(
    description="Which flagged posts to list; every field given must hold. `since` is"
    " inclusive and `until` exclusive, on the moment the post crossed its threshold;"
    " `removed` true lists only posts removed since, false only those still up."
)
class FlaggedPostFilter:
    provider_id: strawberry.ID | None = None
    account_id: strawberry.ID | None = None
    metric: str | None = None
    removed: bool | None = None
    since: datetime | None = None
    until: datetime | None = None


def _id(value: strawberry.ID | None, what: str) -> UUID | None:
    return None if value is None else parse_id(value, what)


# ----- each read's WHERE, shared by the resolvers and the compiled path ------------------
# (api/graphql/compiler): each adds its clauses to `where` and checks the input as it goes.


def account_where(where: Where, id: str) -> Where:
    return where.add("account_id = %(id)s", id=parse_id(id))


def post_where(where: Where, id: str) -> Where:
    return where.add("post_id = %(id)s", id=parse_id(id))


def accounts_where(where: Where, f: AccountFilter | None) -> Where:
    f = f or AccountFilter()
    where.when(_id(f.provider_id, "providerId"), "provider_id = %(provider)s", "provider")
    where.when(text_filter(f.category, "filter.category"), "category = %(category)s", "category")
    where.when(text_filter(f.kind, "filter.kind"), "kind = %(kind)s", "kind")
    where.when(f.verified, "verified = %(verified)s", "verified")
    where.when(f.marked, "marked = %(marked)s", "marked")
    if f.status is not None:
        where.add(status_filter_sql(f.status.value))
    return where


def history_where(
    where: Where, account_id: str, since: datetime | None, until: datetime | None
) -> Where:
    where.add("account_id = %(account)s", account=parse_id(account_id))
    return where.when(since, "at >= %(since)s", "since").when(until, "at < %(until)s", "until")


def sanctions_where(where: Where, f: SanctionFilter | None) -> Where:
    f = f or SanctionFilter()
    where.when(_id(f.provider_id, "providerId"), "provider_id = %(provider)s", "provider")
    where.when(_id(f.account_id, "accountId"), "account_id = %(account)s", "account")
    where.when(text_filter(f.level, "filter.level"), "level = %(level)s", "level")
    where.when(text_filter(f.issuer_role, "filter.issuerRole"), "issuer_role = %(role)s", "role")
    where.when(
        text_filter(f.appeal_state, "filter.appealState"), "appeal_state = %(appeal)s", "appeal"
    )
    where.when(f.imposed_since, "imposed_at >= %(since)s", "since")
    return where.when(f.imposed_until, "imposed_at < %(until)s", "until")


def flagged_where(where: Where, f: FlaggedPostFilter | None) -> Where:
    f = f or FlaggedPostFilter()
    where.when(_id(f.provider_id, "providerId"), "provider_id = %(provider)s", "provider")
    where.when(_id(f.account_id, "accountId"), "account_id = %(account)s", "account")
    where.when(text_filter(f.metric, "filter.metric"), "metric = %(metric)s", "metric")
    where.when(f.since, "crossed_at >= %(since)s", "since")
    where.when(f.until, "crossed_at < %(until)s", "until")
    if f.removed is not None:
        where.add("removed_at IS NOT NULL" if f.removed else "removed_at IS NULL")
    return where


def provider_ids_for(principal: Principal, provider_id: UUID) -> list[UUID]:
    """The provider `provider(id)` reads: none when the principal may not see it."""
    return [provider_id] if principal.may_see(provider_id) else []


def providers_for(principal: Principal) -> list[UUID] | None:
    """The providers `providers` reads (None: every one)."""
    mine = visible_provider(principal)
    return [mine] if mine else None


@strawberry.type
class Query:
    @strawberry.field(description="An account's current state (null when not visible).")
    async def account(self, info: Ctx, id: strawberry.ID) -> Account | None:
        where = _confine(info, account_where(Where(), id))
        found = await select(info, ACCOUNT_SELECT, where)
        return Account.of(found[0]) if found else None

    @strawberry.field(description="Accounts, filtered, in registration order.")
    async def accounts(
        self,
        info: Ctx,
        filter: AccountFilter | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[Account]:
        where = accounts_where(_confine(info, Where()), filter)
        return await keyset_page(
            info.context.state,
            kind="account",
            select=ACCOUNT_SELECT,
            where=where,
            first=first,
            after=after,
            make=Account.of,
        )

    @strawberry.field(description="An account as it stood at a log position or a moment.")
    async def account_as_of(
        self,
        info: Ctx,
        id: strawberry.ID,
        position: Position | None = None,  # type: ignore[valid-type]
        at: datetime | None = None,
    ) -> AccountAsOf | None:
        if (position is None) == (at is None):
            raise bad_input("give exactly one of position and at")
        if at is not None and at.tzinfo is None:
            raise bad_input("at must carry a time zone")
        account_id = parse_id(id)
        if not await _visible(info, "accounts", "account_id", account_id):
            return None
        state = info.context.state
        ledger = state.ledger
        try:
            if position is not None:
                account = await state.blocking(ledger.account_at, account_id, position=position)
                now = account.modified_on
            else:
                account = await state.blocking(ledger.account_at, account_id, at=at)
                now = at
        except LedgerError as e:
            if e.code in ("ACCOUNT_NOT_FOUND", "NOT_FOUND_AT_POSITION"):
                return None
            raise ApiError(e.code, e.message) from None
        view = account_view(account, ledger.ruleset, now)
        return AccountAsOf(
            id=strawberry.ID(str(account_id)),
            as_of_position=position,
            as_of_time=now,
            version=account.version,
            status=AccountStatus(view["status"]),
            state=view,
        )

    @strawberry.field(description="An account's compliance history, in log order.")
    async def history(
        self,
        info: Ctx,
        account_id: strawberry.ID,
        first: int | None = None,
        after: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Connection[HistoryEntry]:
        where = _confine(info, history_where(Where(), account_id, since, until))
        return await keyset_page(
            info.context.state,
            kind="history",
            select="SELECT * FROM history",
            where=where,
            first=first,
            after=after,
            make=HistoryEntry.of,
        )

    @strawberry.field(description="Sanctions, filtered, in the order they were imposed.")
    async def sanctions(
        self,
        info: Ctx,
        filter: SanctionFilter | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[Sanction]:
        where = sanctions_where(_confine(info, Where()), filter)
        return await keyset_page(
            info.context.state,
            kind="sanction",
            select="SELECT * FROM sanctions",
            where=where,
            first=first,
            after=after,
            make=Sanction.of,
        )

    @strawberry.field(description="A provider with its compliance figures.")
    async def provider(self, info: Ctx, id: strawberry.ID) -> Provider | None:
        provider_id = parse_id(id)
        provider_ids = provider_ids_for(info.context.who(), provider_id)
        if not provider_ids:
            return None
        found = await _figures(info, provider_ids)
        return found[0] if found else None

    @strawberry.field(description="Every provider visible to you, with compliance figures.")
    async def providers(self, info: Ctx) -> list[Provider]:
        return await _figures(info, providers_for(info.context.who()))

    @strawberry.field(description="Posts whose reach crossed a threshold.")
    async def flagged_posts(
        self,
        info: Ctx,
        filter: FlaggedPostFilter | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[FlaggedPost]:
        where = flagged_where(_confine(info, Where()), filter)
        return await keyset_page(
            info.context.state,
            kind="flagged",
            select="SELECT * FROM flagged_posts",
            where=where,
            first=first,
            after=after,
            make=FlaggedPost.of,
        )

    @strawberry.field(description="A post (null when not visible).")
    async def post(self, info: Ctx, id: strawberry.ID) -> Post | None:
        where = _confine(info, post_where(Where(), id))
        found = await rows(info.context.state, f"{POST_SELECT} WHERE {where.sql()}", where.params)
        return Post.of(found[0]) if found else None

    @strawberry.field(description="The raw event log, in order (providers see their own).")
    async def events(
        self,
        info: Ctx,
        after: Position | None = None,  # type: ignore[valid-type]
        first: int | None = None,
        types: list[str] | None = None,
        originator_id: strawberry.ID | None = None,
    ) -> Connection[LogEvent]:
        principal = info.context.who()
        size = page_size(first)
        unknown = sorted(set(types or ()) - set(EVENT_TYPES))
        if unknown:
            raise bad_input(f"unknown event types {unknown}")
        origin = _id(originator_id, "originatorId")
        state = info.context.state
        start = after or 0
        events: list[LoggedEvent] = []
        while len(events) <= size:
            batch = await state.log_page(start, size + 1, types or (), origin)
            if not batch:
                break
            start = batch[-1].position
            events.extend(await visible_events(info.context, batch))
            if principal.sees_everything:
                break
        page = events[:size]
        edges = [Edge(cursor=str(e.position), node=log_event(e)) for e in page]
        return Connection(
            edges=edges,
            page_info=PageInfo(
                has_next_page=len(events) > size, end_cursor=edges[-1].cursor if edges else None
            ),
        )

    @strawberry.field(description="The log's head and each projection's lag.")
    async def ledger_status(self, info: Ctx) -> LedgerStatus:
        info.context.who()
        state = info.context.state

        def read() -> tuple[int, list[Any]]:
            with state.database.connect() as conn:
                return state.ledger.head(), projection_status(
                    conn, state.schema, state.ledger.store.events_table
                )

        head, lags = await state.blocking(read)
        return LedgerStatus(
            head=head,
            projections=[
                ProjectionLag(
                    name=p.name,
                    position=p.position,
                    lag_events=p.lag_events,
                    lag_seconds=p.lag_seconds,
                    failures=p.failures,
                )
                for p in lags
            ],
        )


async def select(info: Ctx, query: str, where: Where) -> list[dict[str, Any]]:
    return await rows(info.context.state, f"{query} WHERE {where.sql()}", where.params)


async def _visible(info: Ctx, table: str, column: str, value: UUID) -> bool:
    where = _confine(info, Where().add(f"{column} = %(id)s", id=value))
    found = await rows(
        info.context.state, f"SELECT 1 FROM {table} WHERE {where.sql()}", where.params
    )
    return bool(found)


async def _figures(info: Ctx, provider_ids: list[UUID] | None) -> list[Provider]:
    found = await rows(
        info.context.state,
        FIGURES_SQL,
        figures_params(info.context.state.ledger.clock(), provider_ids),
    )
    return [Provider.of(f) for f in shape_figures(found)]


async def owners(context: Context, ids: list[UUID]) -> dict[UUID, UUID | None]:
    """The provider each aggregate (provider, account or post) belongs to."""
    return await owners_of(context.state, ids)


async def owners_of(state: ApiState, ids: list[UUID]) -> dict[UUID, UUID | None]:
    found = await rows(
        state,
        "SELECT provider_id AS id, provider_id FROM providers WHERE provider_id = ANY(%(ids)s)"
        " UNION ALL SELECT account_id, provider_id FROM accounts WHERE account_id = ANY(%(ids)s)"
        " UNION ALL SELECT post_id, provider_id FROM posts WHERE post_id = ANY(%(ids)s)",
        {"ids": ids},
    )
    return {r["id"]: r["provider_id"] for r in found}


async def visible_events(context: Context, events: list[LoggedEvent]) -> list[LoggedEvent]:
    principal = context.who()
    if principal.sees_everything:
        return events
    owner = await owners(context, list({e.originator_id for e in events}))
    return [e for e in events if owner.get(e.originator_id) == principal.provider_id]


def log_event(e: LoggedEvent) -> LogEvent:
    return LogEvent(
        position=e.position,
        cursor=str(e.position),
        type=e.type,
        originator_id=strawberry.ID(str(e.originator_id)),
        originator_version=e.originator_version,
        at=e.timestamp,
        actor=Actor.of(e.actor),
        payload=_redact(e.payload),
    )


def _redact(payload: dict[str, Any]) -> dict[str, Any]:
    """Identity never leaves through the API, not even sealed."""
    if "identity" in payload:
        return {**payload, "identity": "[sealed]"}
    return payload
