"""A request to /graphql over HTTP as the lean path reads it (api.front): the ASGI scope's
headers parsed once, the body read once, and a Starlette `Request` made only when
strawberry answers. And `Reply`, a response sent as two ASGI messages, with the headers
Starlette's `Response` would send."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send


@dataclass
class Incoming:
    scope: Scope
    receive: Receive
    headers: dict[bytes, bytes]  # names in lower case; the first of a repeated header
    body: bytes = b""

    @classmethod
    def of(cls, scope: Scope, receive: Receive) -> Incoming:
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name, value)
        return cls(scope, receive, headers)

    @property
    def method(self) -> str:
        return str(self.scope["method"])

    def header(self, name: bytes) -> str | None:
        """As Starlette reads headers: Latin-1, so any byte decodes."""
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")

    @cached_property
    def query_params(self) -> dict[str, str]:
        """As Starlette's `request.query_params` turned into a dict: the last value of a
        repeated name."""
        raw = self.scope.get("query_string", b"").decode("latin-1")
        return dict(parse_qsl(raw, keep_blank_values=True))

    async def read_body(self) -> bytes:
        chunks = []
        while True:
            message = await self.receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                self.body = b"".join(chunks)
                return self.body

    @cached_property
    def request(self) -> Request:
        """A Starlette request over the body already read (strawberry's context holds one),
        then the client's own messages (a stream listens for the disconnect)."""
        return Request(self.scope, replay(self.body, self.receive))


def replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def loads(raw: bytes | str) -> Any:
    """JSON as `json.loads` reads it, fast: orjson first, and what it refuses (a lone
    surrogate, an integer past 64 bits, NaN) read again by `json`, which decides."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


@dataclass(frozen=True, slots=True)
class Reply:
    """A whole response, called as a Starlette `Response` is."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


def reply(
    body: bytes = b"",
    status: int = 200,
    media: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """The headers in Starlette's order: the given ones, content-length, content-type."""
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    if not (status < 200 or status in (204, 304)):
        raw.append((b"content-length", str(len(body)).encode()))
    if media is not None:
        raw.append((b"content-type", media.encode("latin-1")))
    return Reply(status, raw, body)
