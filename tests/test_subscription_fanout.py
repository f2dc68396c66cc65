"""The shared delivery path of subscriptions (api.graphql.fanout) against strawberry's,
its reference: for both subscription fields, every role, both transports and varied
selections, a subscriber over each path (LEDGER_COMPILE_SUBSCRIPTIONS on, then off)
replays from a cursor and follows live events, hostile payload text included, and the
two receive the same bytes. Errors that end a stream are the same too, and a client
resuming from its last cursor gets every event exactly once."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import httpx
import pytest
from prometheus_client import REGISTRY
from websockets.asyncio.client import ClientConnection, connect

from ledger import Ledger
from ledger import commands as c
from tests.api_server import ApiServer, free_port
from tests.cold import ColdProcess
from tests.world import REGULATOR, World, sha

SETTING = "LEDGER_COMPILE_SUBSCRIPTIONS"
FULL = "position cursor type originatorId originatorVersion at actor { id role providerId } payload"
SANCTIONS = {
    "plain": (
        "subscription($after: Position, $provider: ID) {"
        f" sanctionEvents(after: $after, providerId: $provider) {{ {FULL} }} }}"
    ),
    "aliases, fragments, __typename": (
        "subscription Named($after: Position) { s: sanctionEvents(after: $after) {"
        " __typename p: position ...F actor { __typename who: id role } } }"
        " fragment F on LogEvent { cursor originatorId c2: cursor payload }"
    ),
    "@include and @skip": (
        "subscription($after: Position, $full: Boolean!, $lean: Boolean!) {"
        " sanctionEvents(after: $after) { position originatorId payload @include(if: $full)"
        " at @skip(if: $lean) ... on LogEvent @include(if: $full) { type cursor } } }"
    ),
}
EVENTS = {
    "plain": f"subscription($after: Position) {{ events(after: $after) {{ {FULL} }} }}",
    "types, aliases, fragments": (
        "subscription($after: Position, $types: [String!]) {"
        " e: events(after: $after, types: $types) { ... on LogEvent { __typename position }"
        " ...G } } fragment G on LogEvent { originatorId kind: type payload actor { id } }"
    ),
    "@skip": (
        "subscription($after: Position, $lean: Boolean!) { events(after: $after) {"
        " position originatorId payload @skip(if: $lean) type @skip(if: $lean) } }"
    ),
}
# The marker becomes a lone surrogate; the last is beyond ASCII (escaped over the WebSocket).
HOSTILE = ["nul \x00 here", "marker-surrogate", "Łódź ✓ \u2028 \U0001f600"]
LARGE = "x" * 1_000_000


@dataclass
class Stream:
    """One subscription's raw frames (WebSocket text messages, or SSE events)."""

    name: str
    frames: list[str] = field(default_factory=list)
    closer: Callable[[], Awaitable[None]] | None = None


def hostile_sanction(world: World, account: UUID, reason: str) -> None:
    """An event as an older release could have stored it: text the commands now refuse."""
    command = c.ImposeSanction(
        actor=REGULATOR, idempotency_key=world.key(), account_id=account, level="warning",
        rule_ids=("art.9",), reason="placeholder",
    )  # fmt: skip
    object.__setattr__(command, "reason", reason)
    world.ledger.execute(command)


async def open_ws(server: ApiServer, token: str, query: str, variables: dict[str, Any]) -> Any:
    ws = await connect(server.ws_url, subprotocols=["graphql-transport-ws"], max_size=2**24)
    await ws.send(json.dumps({"type": "connection_init", "payload": {"token": token}}))
    assert json.loads(await ws.recv())["type"] == "connection_ack"
    payload = {"query": query, "variables": variables}
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
    return ws


async def ws_frames(ws: ClientConnection, stream: Stream) -> None:
    async for message in ws:
        assert isinstance(message, str)
        stream.frames.append(message)
        if json.loads(message)["type"] in ("complete", "error"):
            return


async def open_sse(
    client: httpx.AsyncClient, server: ApiServer, token: str, query: str, variables: Any
) -> AsyncIterator[bytes]:
    request = client.build_request(
        "POST", server.url, json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
    )  # fmt: skip
    response = await client.send(request, stream=True)
    assert response.status_code == 200, await response.aread()
    return response.aiter_raw()


async def sse_frames(chunks: AsyncIterator[bytes], stream: Stream) -> None:
    buffered = b""
    async for chunk in chunks:
        buffered += chunk
        *events, buffered = buffered.split(b"\n\n")
        for event in events:
            if event != b":":  # a heartbeat
                stream.frames.append(event.decode())
            if event.startswith(b"event: complete"):
                return


@dataclass
class Case:
    field: str
    selection: str
    role: str
    transport: str
    query: str
    variables: dict[str, Any]


def cases(world: World, after: str) -> list[Case]:
    found = []
    for (name, documents), role, transport in itertools.product(
        (("sanctionEvents", SANCTIONS), ("events", EVENTS)),
        ("regulator", "auditor", "provider", "rival"),
        ("ws", "sse"),
    ):
        for selection, query in documents.items():
            variables: dict[str, Any] = {"after": after, "full": True, "lean": True}
            variables = {k: v for k, v in variables.items() if f"${k}" in query}
            if "$types" in query:
                variables["types"] = ["Account.SanctionImposed", "Post.Published"]
            if "$provider" in query and role == "regulator":
                variables["provider"] = str(world.provider)
            found.append(Case(name, selection, role, transport, query, variables))
    return found


def compiled_count() -> float:
    sample = {"path": "compiled", "reason": "none"}
    return REGISTRY.get_sample_value("ledger_graphql_operations_total", sample) or 0.0


class Subscribers:
    """Subscriptions of every case over one path, and what they receive."""

    def __init__(self, server: ApiServer, tokens: dict[str, str], path: str) -> None:
        self.server, self.tokens, self.path = server, tokens, path
        self.pumps: list[asyncio.Task[None]] = []
        self.streams: list[Stream] = []

    async def open(self, client: httpx.AsyncClient, all_cases: list[Case]) -> None:
        for case in all_cases:
            stream = Stream(f"{self.path} {case}")
            self.streams.append(stream)
            token = self.tokens[case.role]
            if case.transport == "ws":
                ws = await open_ws(self.server, token, case.query, case.variables)
                pump = ws_frames(ws, stream)
                stream.closer = ws.close
            else:
                chunks = await open_sse(client, self.server, token, case.query, case.variables)
                pump = sse_frames(chunks, stream)
            self.pumps.append(asyncio.create_task(pump))

    async def read(self, idle: float) -> None:
        """Wait until nothing has arrived for `idle` seconds."""
        while True:
            count = sum(len(s.frames) for s in self.streams)
            await asyncio.sleep(idle)
            if count == sum(len(s.frames) for s in self.streams):
                return

    async def close(self) -> None:
        for pump in self.pumps:
            pump.cancel()
        for stream in self.streams:
            if stream.closer is not None:
                await stream.closer()


def delivered(stream: Stream) -> list[dict[str, Any]]:
    """The subscription field's value in each `next` of a stream."""
    found = []
    for frame in stream.frames:
        message = json.loads(frame.split("data: ", 1)[-1] if frame.startswith("event") else frame)
        payload = message.get("payload", message) if "type" in message else message
        if isinstance(payload, dict) and payload.get("data"):
            found.append(next(iter(payload["data"].values())))
    return found


def the_world(ledger: Ledger) -> tuple[World, list[UUID], list[UUID]]:
    world = World(ledger)
    mine = [world.account() for _ in range(2)]
    theirs = [world.account(ops=world.rival_ops) for _ in range(2)]
    for account in (*mine, *theirs):
        world.sanction(account, "warning")
    return world, mine, theirs


def write_live(world: World, mine: list[UUID], theirs: list[UUID]) -> None:
    """Sanctions and posts (whose ids join their provider's list) on both sides."""
    for accounts, ops in ((mine, world.ops), (theirs, world.rival_ops)):
        for account in list(accounts):
            world.sanction(account, "warning")
            accounts.append(world.post(account, ops=ops))
    for text in HOSTILE:
        hostile_sanction(world, mine[0], text)
        hostile_sanction(world, theirs[0], text)
    # Large, within what one log entry holds (a command's event is at most 65,535 bytes).
    hostile_sanction(world, mine[0], "y" * 60_000)


async def both_paths(
    server: ApiServer, monkeypatch: pytest.MonkeyPatch, world: World, all_cases: list[Case],
    tokens: dict[str, str], live: Callable[[], None],
) -> tuple[Subscribers, Subscribers]:  # fmt: skip
    shared, reference = (Subscribers(server, tokens, p) for p in ("shared", "strawberry"))
    async with httpx.AsyncClient(timeout=60) as client:
        before = compiled_count()
        monkeypatch.setenv(SETTING, "1")
        await shared.open(client, all_cases)
        await shared.read(1.0)  # the replays: each has planned its path by now
        monkeypatch.setenv(SETTING, "0")
        await reference.open(client, all_cases)
        await reference.read(1.0)
        assert compiled_count() - before == len(all_cases)
        await asyncio.to_thread(live)
        await asyncio.to_thread(server.settle)
        await asyncio.gather(shared.read(3.0), reference.read(3.0))
        await shared.close()
        await reference.close()
    return shared, reference


def test_the_shared_path_sends_what_strawberry_sends(
    server: ApiServer, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    world, mine, theirs = the_world(ledger)
    for text in HOSTILE:  # in the replay too
        hostile_sanction(world, mine[1], text)
        hostile_sanction(world, theirs[1], text)
    hostile_sanction(world, mine[1], "marker-large")
    with server.database.connect(server.schema, autocommit=True) as conn:
        # JSON may spell a lone surrogate as an escape; the log decodes it into Python text.
        # The megabyte goes in the same way: ledger.execute hangs on an event that large
        # (psycopg's pipeline, in the event store's insert).
        for marker, text in (("marker-surrogate", "lone \\ud800 surrogate"),
                             ("marker-large", LARGE)):  # fmt: skip
            conn.execute(
                "UPDATE ledger_events SET state = convert_to(replace(convert_from(state,"
                " 'UTF8'), %s, %s), 'UTF8')",
                (marker, text),
            )
    after = str(ledger.head() - 5)  # a cursor: the replay is the hostile events
    tokens = {
        "regulator": server.token("regulator"),
        "auditor": server.token("auditor"),
        "provider": server.token("provider", world.provider),
        "rival": server.token("provider", world.rival),
    }
    all_cases = cases(world, after)
    shared, reference = asyncio.run(
        both_paths(server, monkeypatch, world, all_cases, tokens,
                   lambda: write_live(world, mine, theirs))
    )  # fmt: skip
    for case, got, expected in zip(all_cases, shared.streams, reference.streams, strict=True):
        assert len(expected.frames) >= 4, (case, expected.frames[:2])  # replay and live
        assert got.frames == expected.frames, case
        owners = {"provider": set(map(str, mine)), "rival": set(map(str, theirs))}
        if case.role in owners:
            assert {s["originatorId"] for s in delivered(got)} <= owners[case.role], case
    assert any(LARGE in f for s in shared.streams for f in s.frames)
    for escaped in ("\\u0000", "\\ud800"):  # as JSON escapes, over both transports
        assert any(escaped in f for s in shared.streams for f in s.frames)


PUBLISHED = (
    "subscription($after: Position, $types: [String!]) {"
    " events(after: $after, types: $types) { position cursor type } }"
)


def publish(world: World, account: UUID) -> c.PublishPost:
    ref = f"p{world.key()}"
    return c.PublishPost(
        actor=world.ops, idempotency_key=world.key(), account_id=account, ref=ref,
        origin="original", category="other", content_sha256=sha(ref),
    )  # fmt: skip


async def resumed(server: ApiServer, token: str, cursor: str, count: int) -> list[str]:
    ws = await open_ws(server, token, PUBLISHED, {"after": cursor, "types": ["Post.Published"]})
    stream = Stream("resumed")
    pump = asyncio.create_task(ws_frames(ws, stream))
    while len(stream.frames) < count and not pump.done():
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # nothing more may come
    pump.cancel()
    await ws.close()
    return [item["position"] for item in delivered(stream)]


def test_a_slow_subscriber_is_cut_off_alike_and_resumes_exactly_once(
    server: ApiServer, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(ledger)
    account = world.account()
    world.post(account)
    token = server.token("auditor")
    variables = {"types": ["Post.Published"]}
    all_cases = [Case("events", "slow", "auditor", t, PUBLISHED, variables) for t in ("ws", "sse")]
    server.state.extras["broadcaster"].buffer_limit = 100  # for subscribers from now on
    shared, reference = asyncio.run(
        both_paths(server, monkeypatch, world, all_cases, {"auditor": token},
                   lambda: ledger.submit([publish(world, account) for _ in range(150)]))
    )  # fmt: skip
    for got, expected in zip(shared.streams, reference.streams, strict=True):
        assert got.frames == expected.frames
        assert "SLOW_SUBSCRIBER" in got.frames[-2] and "complete" in got.frames[-1], got.frames
    (first,) = delivered(shared.streams[0])
    error = json.loads(shared.streams[0].frames[-2])["payload"]["errors"][0]
    assert error["extensions"]["details"] == {"cursor": first["cursor"]}
    server.state.extras["broadcaster"].buffer_limit = 10_000
    monkeypatch.setenv(SETTING, "1")
    rest = asyncio.run(resumed(server, token, first["cursor"], 150))
    published = [e.position for e in ledger.read_log(types=("Post.Published",))]
    assert [int(p) for p in [first["position"], *rest]] == published


def test_ledger_serve_declines_per_subscriber_compression(cold: ColdProcess) -> None:
    """permessage-deflate compresses each message in each connection's own context: with
    it, every event would be compressed once per subscriber (LEDGER_WS_DEFLATE=1: on)."""

    async def extensions(url: str) -> list[Any]:
        async with connect(url.replace("http", "ws"), subprotocols=["graphql-transport-ws"],
                           compression="deflate") as ws:  # fmt: skip
            assert ws.response is not None
            return ws.response.headers.get_all("Sec-WebSocket-Extensions")

    with cold.serve(free_port()) as url:
        assert asyncio.run(extensions(url)) == []
