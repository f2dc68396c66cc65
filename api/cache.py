"""A response cache for read-only GraphQL requests.

The key is the request body (query, variables, operation), the principal, the lowest
projection position and the second of the ledger's clock: any new projected event moves
the position and so misses the cache, and an answer that depends on the time (a
suspension lapsing) is reused for at most the rest of its second. One round trip per
request fetches both the principal and the position. Only answers without errors are
kept; mutations and subscriptions are never cached.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from graphql import OperationType, parse
from graphql.error import GraphQLError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import auth, logs, metrics
from api.auth import Principal
from api.state import ApiState

LOOKUP = (
    "SELECT (SELECT coalesce(min(position), -1) FROM projection_positions) AS position,"
    " t.token_id, t.name, t.role, t.provider_id FROM (SELECT 1) one"
    " LEFT JOIN api_tokens t ON t.token_hash = %s AND t.revoked_at IS NULL"
)


def read_only(body: bytes) -> bool:
    """Whether a request body holds one query operation (and nothing else)."""
    try:
        query = json.loads(body)["query"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return False
    return isinstance(query, str) and _one_query(query)


# By the document, not the body: requests differ in their variables, not their text.
@lru_cache(maxsize=1000)
def _one_query(query: str) -> bool:
    try:
        document = parse(query)
    except (GraphQLError, RecursionError):
        return False
    operations = [d for d in document.definitions if hasattr(d, "operation")]
    return len(operations) == 1 and operations[0].operation is OperationType.QUERY


@dataclass(frozen=True)
class Seen:
    principal: Principal | None
    position: int


async def look_up(state: ApiState, token: str | None) -> Seen:
    (row,) = await state.fetch(LOOKUP, (auth.token_hash(token or ""),))
    principal = None
    if token and row["token_id"] is not None:
        principal = Principal.from_row(row)
    logs.note_principal(principal)
    return Seen(principal, row["position"])


class ResponseCache:
    def __init__(self, app: ASGIApp, state: ApiState, size: int = 2000) -> None:
        self.app = app
        self.state = state
        self.size = size
        # headers, body, and the operation's name and type (for the request's log line)
        self.entries: OrderedDict[bytes, tuple[list[tuple[bytes, bytes]], bytes, Any]] = (
            OrderedDict()
        )
        self.hits = 0
        self.misses = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        headers = dict(scope["headers"])
        # Latin-1, as Starlette reads headers: any byte decodes, a bad token is unknown.
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        seen = await look_up(self.state, auth.bearer(authorization))
        scope.setdefault("state", {})["seen"] = seen
        if seen.principal is None or not read_only(body):
            await self.app(scope, _replay(body, receive), send)
            return
        key = hashlib.sha256(
            b"\0".join(
                [
                    body,
                    headers.get(b"accept", b""),
                    headers.get(b"content-type", b""),
                    seen.principal.token_id.encode(),
                    str(seen.position).encode(),
                    str(int(self.state.ledger.clock().timestamp())).encode(),
                ]
            )
        ).digest()
        cached = self.entries.get(key)
        if cached is not None:
            self.hits += 1
            metrics.cache_lookup(hit=True)
            self.entries.move_to_end(key)
            logs.note(operation=cached[2][0], operation_type=cached[2][1])
            await _send_response(send, cached[0], cached[1])
            return
        self.misses += 1
        metrics.cache_lookup(hit=False)
        await self.app(scope, _replay(body, receive), self._keeping(key, send))

    def _keeping(self, key: bytes, send: Send) -> Callable[[Message], Awaitable[None]]:
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def keep(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body") and start.get("status") == 200:
                    body = b"".join(chunks)
                    if b'"errors"' not in body:
                        operation = logs.operation()
                        self.entries[key] = (list(start.get("headers", [])), body, operation)
                        if len(self.entries) > self.size:
                            self.entries.popitem(last=False)
            await send(message)

        return keep


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body already read, then the client's own messages (a disconnect, when it
    comes: a streamed answer listens for it)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _send_response(send: Send, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
