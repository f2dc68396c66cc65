"""The ASGI app uvicorn runs. A request to /graphql over HTTP takes the lean path: one
pass, in plain ASGI, that gives it its record and request id, checks the body limit,
waits for a minimum position, looks the response cache up, answers (api.http: a
compiled read is sent as PostgreSQL wrote it), and logs and counts it. Everything else
(the WebSocket, /healthz, /readyz, /metrics, GraphiQL's assets, the lifespan) goes to
the Starlette app, with its middleware, as before."""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.applications import Starlette
from starlette.types import Message, Receive, Scope, Send

from api import auth, logs, metrics
from api.admission import RETRY_HEADERS, Overloaded, refusal_body
from api.cache import ResponseCache, look_up, send_entry
from api.graphql.errors import UNAVAILABLE
from api.http import GraphQLHttp, encode
from api.incoming import Incoming, Reply, reply
from api.state import DATABASE_FAULTS, ApiState, DatabaseUnavailable, min_position_refusal

log = logging.getLogger("ledger.api")
PATH = "/graphql"
MAX_BODY_BYTES = 1 << 20
MIN_POSITION = b"x-ledger-min-position"
FAULTS = (DatabaseUnavailable, *DATABASE_FAULTS)


def too_large() -> Reply:
    error = {"message": "request body too large", "extensions": {"code": "PAYLOAD_TOO_LARGE"}}
    return reply(encode({"errors": [error]}), 413, "application/json")


def body_too_large(length: bytes | None) -> bool:
    """By Content-Length, before the body is read."""
    return length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES)


def failure(exc: Exception, request_id: str) -> Reply:
    """What the Starlette app's exception handlers answer."""
    if isinstance(exc, FAULTS):
        error = {"message": DatabaseUnavailable.message, "extensions": UNAVAILABLE}
        return reply(encode({"errors": [error]}), 503, "application/json", {"Retry-After": "1"})
    if isinstance(exc, Overloaded):
        return reply(encode(refusal_body()), 503, "application/json", RETRY_HEADERS)
    log.error("request %s: unexpected error", request_id, exc_info=exc)
    logs.note_outcome("INTERNAL")
    error = {
        "message": f"internal error (request id {request_id})",
        "extensions": {"code": "INTERNAL"},
    }
    return reply(encode({"errors": [error]}), 500, "application/json")  # X-Request-Id: added


class Front:
    def __init__(
        self, app: Starlette, http: GraphQLHttp, cache: ResponseCache | None, state: ApiState
    ) -> None:
        self.app = app
        self.http = http
        self.cache = cache
        self.ledger_state = state

    @property
    def state(self) -> Any:
        """The Starlette app's state (`ledger_state`: the ApiState)."""
        return self.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        record = logs.RequestRecord(logs.new_id(), "http", scope["method"], PATH)
        scope.setdefault("state", {})["request_id"] = record.id
        request_id = (b"x-request-id", record.id.encode())

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), request_id]
                record.status = message["status"]
            await send(message)

        token = logs.REQUEST.set(record)
        try:
            await self._serve(Incoming.of(scope, receive), sending)
        except Exception as exc:
            if record.status is not None:  # the answer had begun: uvicorn logs it
                logs.note_outcome("INTERNAL")
                raise
            await failure(exc, record.id)(scope, receive, sending)
        finally:
            record.seconds = time.perf_counter() - record.started
            try:
                logs.log_request(record)
                metrics.observe_request(record)
            finally:
                logs.REQUEST.reset(token)

    async def _serve(self, request: Incoming, send: Send) -> None:
        scope, receive = request.scope, request.receive
        if body_too_large(request.headers.get(b"content-length")):
            await too_large()(scope, receive, send)
            return
        position = request.headers.get(MIN_POSITION)
        if position is not None:
            refused = await min_position_refusal(self.ledger_state, position)
            if refused is not None:
                await refused(scope, receive, send)
                return
        if request.method == "POST":
            await request.read_body()
            if self.cache is not None:
                keeping = await self._cached(request, send)
                if keeping is None:
                    return
                send = keeping
        response = await self.http.answer(request)
        await response(scope, request.receive, send)

    async def _cached(self, request: Incoming, send: Send) -> Send | None:
        """None: answered from the cache; else where to send the answer (kept on a miss)."""
        assert self.cache is not None
        seen = await look_up(self.ledger_state, auth.bearer(request.header(b"authorization")))
        request.scope["state"]["seen"] = seen  # the caller, known (api.http)
        key = self.cache.key(request.body, request.headers, seen)
        if key is None:
            return send
        entry = self.cache.found(key)
        if entry is not None:
            await send_entry(send, entry)
            return None
        return self.cache.keeping(key, send)
