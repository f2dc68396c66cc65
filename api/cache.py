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
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from graphql import OperationType, parse
from graphql.error import GraphQLError
from starlette.types import Message, Send

from api import auth, logs, metrics
from api.auth import Principal
from api.incoming import loads
from api.state import ApiState

LOOKUP = (
    "SELECT (SELECT coalesce(min(position), -1) FROM projection_positions) AS position,"
    " t.token_id, t.name, t.role, t.provider_id FROM (SELECT 1) one"
    " LEFT JOIN api_tokens t ON t.token_hash = %s AND t.revoked_at IS NULL"
)


def read_only(body: bytes) -> bool:
    """Whether a request body holds one query operation (and nothing else)."""
    try:
        query = loads(body)["query"]
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


Entry = tuple[list[tuple[bytes, bytes]], bytes, Any]


class ResponseCache:
    """Used by api.front for a POST: `look_up` (the principal and the position, one round
    trip), then `key`, then `found` (a hit: the answer to send) or `keeping` (a miss: the
    answer kept as it is sent)."""

    def __init__(self, state: ApiState, size: int = 2000) -> None:
        self.state = state
        self.size = size
        # headers, body, and the operation's name and type (for the request's log line)
        self.entries: OrderedDict[bytes, Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def key(self, body: bytes, headers: dict[bytes, bytes], seen: Seen) -> bytes | None:
        """The entry's key; None: not to be cached (no valid token, not one query)."""
        if seen.principal is None or not read_only(body):
            return None
        return hashlib.sha256(
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

    def found(self, key: bytes) -> Entry | None:
        """The kept answer (a hit), or None (a miss); counted either way."""
        cached = self.entries.get(key)
        if cached is None:
            self.misses += 1
            metrics.cache_lookup(hit=False)
            return None
        self.hits += 1
        metrics.cache_lookup(hit=True)
        self.entries.move_to_end(key)
        logs.note(operation=cached[2][0], operation_type=cached[2][1])
        return cached

    def keeping(self, key: bytes, send: Send) -> Callable[[Message], Awaitable[None]]:
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


async def send_entry(send: Send, entry: Entry) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": entry[0]})
    await send({"type": "http.response.body", "body": entry[1]})
