"""GraphQL over WebSocket (graphql-transport-ws), served by strawberry's handler with
sign-in that accepts what real clients send, and every error given a code."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any

from graphql import GraphQLError
from starlette.websockets import WebSocketDisconnect
from strawberry import Schema
from strawberry.asgi import GraphQL
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)

from api import auth, logs, metrics
from api.admission import Overloaded
from api.graphql import fanout
from api.graphql.compiler import Fallback
from api.graphql.context import Context
from api.graphql.errors import coded
from api.state import ApiState, DatabaseUnavailable

TRY_AGAIN_LATER = 1013


def token_in(payload: Any) -> str | None:
    """The token in a connection_init payload: `authorization` (any case, with or
    without `Bearer`), `token`, or `headers: {Authorization}`."""
    if not isinstance(payload, dict):
        return None
    for key, value in payload.items():
        if not isinstance(value, str) or not value.strip():
            continue
        if key.lower() == "authorization":
            return auth.bearer(value) or value.strip()
        if key.lower() == "token":
            return value.strip()
    return token_in(payload.get("headers"))


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """Sign in at connection_init; a missing or bad token closes with 4401 and a reason."""

    async def handle_connection_init(self, message: Any) -> None:
        token = token_in(message.get("payload")) or auth.bearer(
            self.context.request.headers.get("authorization")
        )
        try:
            principal = await self.context.state.principal(token)
        except (DatabaseUnavailable, Overloaded) as e:
            # 1013, "try again later": clients reconnect (graphql-ws retries it), and the
            # reason carries the code an operation would have got.
            code = "OVERLOADED" if isinstance(e, Overloaded) else "STORAGE_UNAVAILABLE"
            await self.websocket.close(code=TRY_AGAIN_LATER, reason=f"{code}: {e.message}")
            return
        if principal is None:
            reason = "UNAUTHENTICATED: a valid token is required" if token else (
                "UNAUTHENTICATED: send a token in connection_init (authorization or token)"
            )  # fmt: skip
            await self.websocket.close(code=4401, reason=reason)
            return
        self.context.principal = principal
        # graphql-ws allows a null or absent payload; strawberry wants an object.
        payload = message.get("payload")
        await super().handle_connection_init(
            {**message, "payload": payload if isinstance(payload, dict) else {}}
        )

    @staticmethod
    def _get_pre_execution_close_reason(error: GraphQLError) -> str | None:
        # A syntax error or an unknown operation is that operation's error, answered
        # with an `error` message; closing would end the client's other subscriptions.
        return None

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        """A subscription the shared path can deliver goes there; the rest to strawberry."""
        feed = fanout.plan(
            self.context.state,
            operation.query,
            operation.variables,
            operation.operation_name,
            self.context.principal,
        )
        metrics.operation_path(feed)
        if isinstance(feed, Fallback):
            await super().run_operation(operation)
            return
        with metrics.operation_record():
            logs.note_operation(feed.operation)
            logs.note_principal(self.context.principal)
            try:
                await self._deliver(operation, feed)
            except (WebSocketDisconnect, WebSocketDisconnected):
                return
            await operation.send_operation_message({"id": operation.id, "type": "complete"})

    async def _deliver(self, operation: Operation[Context, None], feed: fanout.Feed) -> None:
        # strawberry's message is json.dumps(separators=(",", ":")) of {"id", "type",
        # "payload"}: the same bytes, spliced around the payload every subscriber shares.
        head = '{"id":' + json.dumps(operation.id) + ',"type":"next","payload":'
        send = self.websocket.ws.send_text  # type: ignore[attr-defined]
        try:
            async for payload in fanout.payloads(self.context.state, feed, ws_payload):
                await send(head + payload + "}")
        except (WebSocketDisconnect, WebSocketDisconnected):
            raise
        except Exception as error:
            failed = fanout.failure(error)
            logs.note_outcome(failed["extensions"]["code"])
            next_error = {"data": None, "errors": [failed]}
            await self.send_message({"id": operation.id, "type": "next", "payload": next_error})

    async def send_message(self, message: Any) -> None:
        if message.get("type") == "error":
            message["payload"] = [coded(e) for e in message["payload"]]
        elif message.get("type") == "next" and message["payload"].get("errors"):
            message["payload"]["errors"] = [coded(e) for e in message["payload"]["errors"]]
        await super().send_message(message)


def ws_payload(payload: dict[str, Any]) -> str:
    """A `next` message's payload as strawberry's encode_json writes it."""
    return json.dumps(payload, separators=(",", ":"))


class WebSocketGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI app, used for the WebSocket only (HTTP is api.http's)."""

    graphql_transport_ws_handler_class = TransportWSHandler

    def __init__(self, schema: Schema, state: ApiState) -> None:
        super().__init__(
            schema,
            graphql_ide=None,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            connection_init_wait_timeout=timedelta(
                seconds=float(os.environ.get("LEDGER_WS_INIT_TIMEOUT", "10"))
            ),
        )
        self.state = state

    async def get_context(self, request: Any, response: Any) -> Context:
        return Context(state=self.state, request=request, response=response)
