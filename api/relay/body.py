"""A relayed message's body and headers.

The body is the `LogEvent` JSON the API serves: the compiled subscription renderer (the
one `events` subscribers share, api.graphql.compiler.events) with every field selected,
serialised as the HTTP and SSE transports do (api.http.encode: UTF-8, or `\\u` escapes
for a document holding a lone surrogate). So a consumer reads the same bytes a GraphQL
subscriber reads inside `{"data":{"events":...}}`."""

from __future__ import annotations

from functools import lru_cache
from typing import cast

from graphql import get_operation_ast, parse
from graphql.execution.values import VariableValues

from api.graphql.compiler.events import Renderer, renderer
from api.graphql.compiler.plan import select
from api.graphql.queries import log_event
from api.http import encode
from ledger.log import LoggedEvent

SELECTION = (
    "position cursor type originatorId originatorVersion at actor { id role providerId } payload"
)
DOCUMENT = f"subscription {{ events {{ {SELECTION} }} }}"

POSITION = "Ledger-Position"
TYPE = "Ledger-Type"
ORIGINATOR_ID = "Ledger-Originator-Id"
ORIGINATOR_VERSION = "Ledger-Originator-Version"
SEALED_SIZE = "Ledger-Sealed-Tree-Size"
OMITTED = "Ledger-Payload-Omitted"
MSG_ID = "Nats-Msg-Id"
EXPECTED_LAST_SEQUENCE = "Nats-Expected-Last-Sequence"


@lru_cache(maxsize=1)
def _renderer() -> Renderer:
    from api.graphql.schema import schema

    compiled = schema._schema
    document = parse(DOCUMENT)
    operation = get_operation_ast(document)
    root = compiled.subscription_type
    assert operation is not None and root is not None
    (field,) = select(compiled, document, operation, cast(VariableValues, {}), root)
    return renderer(field, root)


def body(event: LoggedEvent) -> bytes:
    """The event as the API serves it, byte for byte."""
    return encode(_renderer().data(log_event(event))["data"]["events"])


def without_payload(event: LoggedEvent) -> bytes:
    """The body of an event too large for the server: its payload null (the header
    `Ledger-Payload-Omitted` says so, and the API serves it whole)."""
    shown = _renderer().data(log_event(event))["data"]["events"]
    return encode({**shown, "payload": None})


def headers(event: LoggedEvent, sealed_size: int | None) -> dict[str, str]:
    found = {
        MSG_ID: str(event.position),
        POSITION: str(event.position),
        TYPE: event.type,
        ORIGINATOR_ID: str(event.originator_id),
        ORIGINATOR_VERSION: str(event.originator_version),
    }
    if sealed_size is not None:
        found[SEALED_SIZE] = str(sealed_size)
    return found
