"""Webhook endpoints over GraphQL: a provider's endpoints (never a secret), their delivery
state and their attempt log, for regulators, auditors and the endpoint's own provider.
Another provider's endpoints answer as ids that do not exist."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
import strawberry
from strawberry.types import Info

from api.graphql.context import Context
from api.graphql.errors import ApiError
from api.graphql.reads import Where, keyset_page, page_bounds, parse_id, rows
from api.graphql.scalars import Position
from api.graphql.types import Connection, PageInfo
from ledger import errors
from projections.webhooks import STATE

Ctx = Info[Context, None]


@strawberry.type(description="One delivery attempt (the body is not kept: it is in the log).")
class WebhookAttempt:
    id: strawberry.ID
    position: Position  # type: ignore[valid-type]
    webhook_id: str
    attempt: int
    at: datetime
    status: int | None = strawberry.field(description="The HTTP status; null on an error.")
    error: str | None = strawberry.field(
        description="The error class when no status came: timeout, connect_error, url_refused…"
    )
    latency_ms: float
    key_ids: list[str] = strawberry.field(description="The keys that signed it.")

    @classmethod
    def of(cls, r: dict[str, Any]) -> WebhookAttempt:
        return cls(
            id=strawberry.ID(str(r["id"])), position=r["position"], webhook_id=r["msg_id"],
            attempt=r["attempt"], at=r["at"], status=r["status"], error=r["error"],
            latency_ms=r["latency_ms"], key_ids=list(r["key_ids"]),
        )  # fmt: skip


@strawberry.type(description="Where delivery to an endpoint stands (from `ledger deliver`).")
class WebhookDeliveryState:
    cursor: Position | None = strawberry.field(  # type: ignore[valid-type]
        description="The last log position acknowledged by the receiver."
    )
    enqueued: Position  # type: ignore[valid-type]
    lag: int = strawberry.field(description="Deliveries not yet acknowledged.")
    oldest_pending_position: Position | None  # type: ignore[valid-type]
    oldest_pending_seconds: float | None = strawberry.field(
        description="Seconds since the first attempt of the oldest pending delivery."
    )
    failing_since: datetime | None
    paused: bool
    paused_reason: str | None


@strawberry.type(description="A webhook endpoint of a provider (its secret is never shown).")
class WebhookEndpoint:
    id: strawberry.ID
    provider_id: strawberry.ID
    url: str
    event_types: list[str]
    description: str
    status: str = strawberry.field(description="active, paused or deleted.")
    paused_reason: str | None
    public_key: str = strawberry.field(description="Ed25519 public key (`whpk_…`), scheme v1a.")
    key_id: strawberry.ID
    registered_at: datetime
    updated_at: datetime

    @strawberry.field(description="Delivery state; null until `ledger deliver` has seen it.")
    async def state(self, info: Ctx) -> WebhookDeliveryState | None:
        try:
            found = await rows(info.context.state, STATE, {"endpoints": [UUID(self.id)]})
        except psycopg.errors.UndefinedTable:
            return None
        if not found:
            return None
        r = found[0]
        return WebhookDeliveryState(
            cursor=r["acknowledged"], enqueued=r["enqueued"], lag=r["pending"],
            oldest_pending_position=r["oldest_pending"],
            oldest_pending_seconds=r["oldest_pending_seconds"],
            failing_since=r["failing_since"], paused=r["status"] == "paused",
            paused_reason=r["paused_reason"],
        )  # fmt: skip

    @strawberry.field(description="The attempt log, oldest first, paged.")
    async def attempts(
        self, info: Ctx, first: int | None = None, after: str | None = None
    ) -> Connection[WebhookAttempt]:
        try:
            return await keyset_page(
                info.context.state,
                kind="webhook-attempt",
                select="SELECT * FROM webhook_attempts",
                where=Where().add("endpoint_id = %(endpoint)s", endpoint=UUID(self.id)),
                first=first,
                after=after,
                make=WebhookAttempt.of,
                key="id",
            )
        except psycopg.errors.UndefinedTable:  # no `ledger deliver` has run yet
            page_bounds("webhook-attempt", first, after)  # bad arguments still refused
            return Connection(edges=[], page_info=PageInfo(has_next_page=False, end_cursor=None))

    @classmethod
    def of(cls, provider_id: UUID, e: dict[str, Any]) -> WebhookEndpoint:
        return cls(
            id=strawberry.ID(e["id"]), provider_id=strawberry.ID(str(provider_id)),
            url=e["url"], event_types=list(e["event_types"]), description=e["description"],
            status=e["status"], paused_reason=e["paused_reason"], public_key=e["public_key"],
            key_id=strawberry.ID(e["key_id"]), registered_at=e["registered_at"],
            updated_at=e["updated_at"],
        )  # fmt: skip


async def _endpoints(info: Ctx, provider_id: strawberry.ID | None) -> tuple[UUID, list[Any]]:
    principal = info.context.who()
    if provider_id is None and principal.provider_id is None:
        raise ApiError("BAD_USER_INPUT", "providerId is required")
    provider = parse_id(provider_id, "providerId") if provider_id else principal.provider_id
    assert provider is not None
    if not principal.may_see(provider):
        raise ApiError("NOT_FOUND", "no such provider")
    state = info.context.state
    try:
        found = await state.blocking(state.ledger.get_provider, provider)
    except errors.ProviderNotFound:
        raise ApiError("NOT_FOUND", "no such provider") from None
    webhooks = getattr(found, "webhooks", {})
    return provider, [e for e in webhooks.values() if e["status"] != "deleted"]


@strawberry.type
class WebhookQuery:
    @strawberry.field(
        description="A provider's webhook endpoints (a provider: its own, by default)."
    )
    async def webhook_endpoints(
        self, info: Ctx, provider_id: strawberry.ID | None = None
    ) -> list[WebhookEndpoint]:
        provider, found = await _endpoints(info, provider_id)
        return [WebhookEndpoint.of(provider, e) for e in found]

    @strawberry.field(description="One webhook endpoint (null when not visible).")
    async def webhook_endpoint(
        self, info: Ctx, id: strawberry.ID, provider_id: strawberry.ID | None = None
    ) -> WebhookEndpoint | None:
        endpoint = str(parse_id(id, "id"))
        try:
            provider, found = await _endpoints(info, provider_id)
        except ApiError:
            return None
        return next((WebhookEndpoint.of(provider, e) for e in found if e["id"] == endpoint), None)
