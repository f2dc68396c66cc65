"""Subscriptions: replay what committed after the cursor, then continue live, in log
order, each item carrying its position as the cursor to resume from. The handover
deduplicates by position, so a client resuming from its last cursor gets every event
exactly once."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, Callable
from uuid import UUID

import strawberry
from strawberry.types import Info

from api.auth import Principal
from api.graphql.context import Context
from api.graphql.errors import ApiError, bad_input
from api.graphql.queries import log_event, owners_of
from api.graphql.reads import parse_id, rows
from api.graphql.scalars import Position
from api.graphql.types import LogEvent
from api.live import PAGE, SlowSubscriber
from api.state import ApiState, DatabaseUnavailable
from ledger.domain import EVENT_TYPES
from ledger.log import LoggedEvent

Ctx = Info[Context, None]
SANCTION_TYPES = (
    "Account.SanctionImposed",
    "Account.SanctionLifted",
    "Account.SanctionAppealed",
    "Account.AppealDecided",
)
OWNER_TABLES = ("accounts", "posts", "providers")


def _cursor(after: int | None) -> int:
    return 0 if after is None else int(after)


async def _projected(state: ApiState, position: int) -> None:
    """Wait until the tables that say who owns what have reached `position`."""
    timeout = float(os.environ.get("LEDGER_PROJECTION_WAIT", "10"))
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await rows(
            state,
            "SELECT min(position) AS p FROM projection_positions WHERE name = ANY(%(n)s)",
            {"n": list(OWNER_TABLES)},
        )
        if found and found[0]["p"] is not None and found[0]["p"] >= position:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise ApiError("PROJECTION_LAG", "the read side is behind; resubscribe shortly")
        await asyncio.sleep(0.01)


async def owned(state: ApiState, events: list[LoggedEvent], provider: UUID) -> set[int]:
    """The positions of the events about what `provider` owns, once the read side knows."""
    if not events:
        return set()
    await _projected(state, events[-1].position)
    owner = await owners_of(state, list({e.originator_id for e in events}))
    return {e.position for e in events if owner.get(e.originator_id) == provider}


def _owned_by(context: Context, provider: UUID | None) -> Callable[[list[LoggedEvent]], object]:
    async def keep(events: list[LoggedEvent]) -> list[LoggedEvent]:
        if provider is None or not events:
            return events
        mine = await owned(context.state, events, provider)
        return [e for e in events if e.position in mine]

    return keep


def sanction_filter(
    principal: Principal, provider_id: str | None
) -> tuple[tuple[str, ...], UUID | None]:
    """The types and the provider a `sanctionEvents` subscription follows (or its error)."""
    provider = parse_id(provider_id, "providerId") if provider_id else None
    if not principal.sees_everything:
        if provider is not None and provider != principal.provider_id:
            raise ApiError("NOT_FOUND", "no such provider")
        provider = principal.provider_id
    return SANCTION_TYPES, provider


def events_filter(
    principal: Principal, types: list[str] | None
) -> tuple[tuple[str, ...], UUID | None]:
    """The types and the provider an `events` subscription follows (or its error)."""
    unknown = sorted(set(types or ()) - set(EVENT_TYPES))
    if unknown:
        raise bad_input(f"unknown event types {unknown}")
    return tuple(types or ()), None if principal.sees_everything else principal.provider_id


async def _stream(
    context: Context, after: int, types: tuple[str, ...], provider: UUID | None
) -> AsyncGenerator[LogEvent, None]:
    state = context.state
    keep = _owned_by(context, provider)
    wanted = set(types)
    last = after
    subscriber = None
    try:
        while True:
            page = await state.log_page(last, PAGE, types)
            for e in await keep(page):  # type: ignore[misc]
                yield log_event(e)
            if page:
                last = page[-1].position
            if len(page) < PAGE:
                if subscriber is not None:
                    break
                # Subscribe, then read once more: nothing falls between the two.
                subscriber = state.extras["broadcaster"].subscribe()
        while True:
            events = [
                e
                for e in await subscriber.next_events()
                if e.position > last and (not wanted or e.type in wanted)
            ]
            if not events:
                continue
            kept = await keep(events)  # type: ignore[misc]
            last = events[-1].position
            for e in kept:
                yield log_event(e)
    except (ApiError, SlowSubscriber, DatabaseUnavailable) as e:
        raise ended(e, last) from None
    finally:
        if subscriber is not None:
            state.extras["broadcaster"].unsubscribe(subscriber)



def ended(e: ApiError | SlowSubscriber | DatabaseUnavailable, last: int) -> ApiError:
    """The error that ends a stream, with the cursor of the last event sent: the client
    resumes from it and misses nothing."""
    if isinstance(e, SlowSubscriber):
        return ApiError("SLOW_SUBSCRIBER", str(e), cursor=str(last))
    if isinstance(e, DatabaseUnavailable):
        return ApiError("STORAGE_UNAVAILABLE", DatabaseUnavailable.message, cursor=str(last))
    if e.code == "PROJECTION_LAG":
        return ApiError(e.code, e.message, cursor=str(last))
    return e

@strawberry.type
class Subscription:
    @strawberry.subscription(description="Sanction events, replayed from the cursor, then live.")
    async def sanction_events(
        self, info: Ctx, after: Position | None = None, provider_id: strawberry.ID | None = None
    ) -> AsyncGenerator[LogEvent, None]:
        types, provider = sanction_filter(info.context.who(), provider_id)
        async for item in _stream(info.context, _cursor(after), types, provider):
            yield item

    @strawberry.subscription(description="Every event (providers: their own), then live.")
    async def events(
        self, info: Ctx, after: Position | None = None, types: list[str] | None = None
    ) -> AsyncGenerator[LogEvent, None]:
        wanted, provider = events_filter(info.context.who(), types)
        async for item in _stream(info.context, _cursor(after), wanted, provider):
            yield item
