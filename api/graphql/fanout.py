"""Subscriptions delivered at a price per event, not per subscriber.

A subscription to `sanctionEvents` or `events` whose document, variables and arguments
the compiler accepts becomes a Feed: a renderer of its selection (api.graphql.compiler.
events), its cursor, its types and its confinement. Live events come from the
broadcaster in batches (api.live.Batch) that carry what subscribers share: the events a
provider owns, looked up once per batch and provider, and each renderer's serialised
payload of each event, rendered once for every subscriber of the same selection and
transport. A subscriber's own work per event is the filter, the splice of the shared
payload into its message, and the send. Everything else goes to strawberry as before
(LEDGER_COMPILE_SUBSCRIPTIONS=0: everything), with the same answers."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar
from uuid import UUID

from graphql import (
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    get_operation_ast,
    parse,
)
from graphql.execution.values import VariableValues, get_variable_values

from api.auth import Principal
from api.graphql.compiler import Fallback
from api.graphql.compiler.events import Renderer, renderer
from api.graphql.compiler.plan import select
from api.graphql.compiler.sql import Unsupported
from api.graphql.errors import ApiError, shape_error
from api.graphql.queries import log_event
from api.graphql.subscriptions import ended, events_filter, owned, sanction_filter
from api.live import PAGE, Batch, SlowSubscriber
from api.state import ApiState, DatabaseUnavailable
from ledger.log import LoggedEvent

log = logging.getLogger("ledger.api.fanout")
SETTING = "LEDGER_COMPILE_SUBSCRIPTIONS"
T = TypeVar("T")
Encode = Callable[[dict[str, Any]], T]


@dataclass(frozen=True)
class Feed:
    """A subscription the shared path delivers."""

    renderer: Renderer
    operation: OperationDefinitionNode
    after: int
    types: tuple[str, ...]
    provider: UUID | None  # None: sees every event of its types


@lru_cache(maxsize=1000)
def _parsed(query: str, max_tokens: int) -> DocumentNode | None:
    try:
        return parse(query, max_tokens=max_tokens)
    except GraphQLError:
        return None


def plan(
    state: ApiState,
    query: str,
    variables: dict[str, Any] | None,
    operation_name: str | None,
    principal: Principal | None,
) -> Feed | Fallback:
    """The feed of a subscription operation, or why strawberry should answer it (which
    it then does with its own errors: bad arguments, validation, another provider)."""
    if os.environ.get(SETTING, "1") != "1":
        return Fallback("disabled")
    compiler = state.extras["compiler"]
    document = _parsed(query, compiler.max_tokens) if isinstance(query, str) else None
    operation = get_operation_ast(document, operation_name) if document else None
    if document is None or operation is None:
        return Fallback("invalid")
    if operation.operation is not OperationType.SUBSCRIPTION:
        return Fallback(operation.operation.value)
    if principal is None:
        return Fallback("unauthenticated")
    name = operation.name.value if operation.name else None
    problem = compiler.problem(query, name, document)
    if problem is not None:
        return Fallback(problem)
    if variables is not None and not isinstance(variables, dict):
        return Fallback("variables")
    coerced = get_variable_values(
        compiler.schema, operation.variable_definitions or (), variables or {}
    )
    if isinstance(coerced, list):
        return Fallback("variables")
    return _feed(compiler.schema, document, operation, coerced, principal)


def _feed(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: VariableValues,
    principal: Principal,
) -> Feed | Fallback:
    """A valid subscription's feed, if the resolver would accept its arguments and the
    renderer knows its selection."""
    root = schema.subscription_type
    assert root is not None
    selections = select(schema, document, operation, variables, root)
    if len(selections) != 1:
        return Fallback("shape")
    (field,) = selections
    try:
        args = field.arguments(variables)
        if field.name == "sanctionEvents":
            types, provider = sanction_filter(principal, args.get("providerId"))
        elif field.name == "events":
            types, provider = events_filter(principal, args.get("types"))
        else:
            return Fallback("field")
        shown = renderer(field, root)
    except GraphQLError:  # ApiError included: strawberry answers with it
        return Fallback("arguments")
    except Unsupported:
        return Fallback("field")
    after = args.get("after")
    return Feed(shown, operation, 0 if after is None else int(after), types, provider)


async def payloads(state: ApiState, feed: Feed, encode: Encode[T]) -> AsyncIterator[T]:
    """`{"data": ...}` of each event the feed delivers, as `encode` serialised it:
    the replay from the cursor (this subscriber's), then live events (shared)."""
    last = feed.after
    broadcaster = state.extras["broadcaster"]
    subscriber = None
    try:
        while True:
            page = await state.log_page(last, PAGE, feed.types)
            mine = None if feed.provider is None else await owned(state, page, feed.provider)
            for e in page:
                if mine is None or e.position in mine:
                    yield encode(feed.renderer.data(log_event(e)))
            if page:
                last = page[-1].position
            if len(page) < PAGE:
                if subscriber is not None:
                    break
                # Subscribe, then read once more: nothing falls between the two.
                subscriber = broadcaster.subscribe()
        wanted = set(feed.types)
        while True:
            for batch, e in await subscriber.next_deliveries():
                if e.position <= last or (wanted and e.type not in wanted):
                    continue
                if feed.provider is None or e.position in await _owned(state, batch, feed):
                    yield _rendered(batch, feed.renderer, encode, e)
                last = e.position
    except (ApiError, SlowSubscriber, DatabaseUnavailable) as e:
        raise ended(e, last) from None
    finally:
        if subscriber is not None:
            broadcaster.unsubscribe(subscriber)


async def _owned(state: ApiState, batch: Batch, feed: Feed) -> set[int]:
    provider = feed.provider
    assert provider is not None
    found: set[int] = await batch.once(
        ("owned", provider), lambda: owned(state, batch.events, provider)
    )
    return found


def _rendered(batch: Batch, shown: Renderer, encode: Encode[T], event: LoggedEvent) -> T:
    """One event's payload for every subscriber of this selection and transport."""
    done: dict[int, T] | None = batch.memo.get((shown, encode))
    if done is None:
        done = batch.memo[(shown, encode)] = {}
    found = done.get(event.position)
    if found is None:
        found = done[event.position] = encode(shown.data(log_event(event)))
    return found


def failure(error: Exception) -> dict[str, Any]:
    """The formatted error that ends a stream, as strawberry's path gives it: an error of
    the source stream, so without a location or path; a database fault is
    STORAGE_UNAVAILABLE, anything unexpected INTERNAL."""
    if not isinstance(error, GraphQLError):
        error = GraphQLError(str(error), original_error=error)
    return dict(shape_error(error).formatted)
