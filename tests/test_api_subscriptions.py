"""Subscriptions over a real WebSocket (graphql-transport-ws): replay then live, resume
from a cursor, a slow client, a client that never initialises, and authentication."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from websockets.asyncio.client import connect as connect_async
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from ledger import Ledger
from tests.api_server import ApiServer
from tests.world import World

SANCTIONS = """subscription($after: Position, $provider: ID) {
  sanctionEvents(after: $after, providerId: $provider) { position cursor type originatorId } }"""
PAYLOADS = """subscription($after: Position, $types: [String!]) {
  events(after: $after, types: $types) { position cursor originatorId actor { id } payload } }"""
EVENTS = """subscription($after: Position, $types: [String!]) {
  events(after: $after, types: $types) { position cursor type } }"""


@contextmanager
def subscription(
    server: ApiServer, token: str | None, query: str, **variables: Any
) -> Iterator[ClientConnection]:
    with connect(server.ws_url, subprotocols=["graphql-transport-ws"], open_timeout=10) as ws:
        ws.send(
            json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
        )
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
        ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": query, "variables": variables},
                }
            )
        )
        yield ws


def receive(ws: ClientConnection, n: int, timeout: float = 15) -> list[dict[str, Any]]:
    items = []
    while len(items) < n:
        message = json.loads(ws.recv(timeout=timeout))
        assert message["type"] == "next", message
        assert "errors" not in message["payload"], message
        items.append(next(iter(message["payload"]["data"].values())))
    return items


def positions(ledger: Ledger, types: tuple[str, ...]) -> list[int]:
    return [e.position for e in ledger.read_log(types=types)]


SANCTION_TYPES = ("Account.SanctionImposed", "Account.SanctionLifted",
                  "Account.SanctionAppealed", "Account.AppealDecided")  # fmt: skip


def test_replay_then_live_under_concurrent_writes(server: ApiServer, ledger: Ledger) -> None:
    world = World(ledger)
    accounts = [world.account() for _ in range(3)]
    for a in accounts:
        world.sanction(a, "warning")
    token = server.token("regulator")
    with subscription(server, token, SANCTIONS) as ws:
        replayed = receive(ws, 3)

        def write() -> None:
            for a in accounts:
                for _ in range(4):
                    world.sanction(a, "warning")

        writer = threading.Thread(target=write)
        writer.start()
        live = receive(ws, 12)
        writer.join()
    got = [int(i["position"]) for i in replayed + live]
    assert got == positions(ledger, SANCTION_TYPES)
    assert all(i["cursor"] == i["position"] for i in replayed + live)


def test_resume_from_the_last_cursor_gets_each_event_once(
    server: ApiServer, ledger: Ledger
) -> None:
    world = World(ledger)
    account = world.account()
    token = server.token("auditor")
    for _ in range(3):
        world.post(account)
    with subscription(server, token, EVENTS, types=["Post.Published"]) as ws:
        first = receive(ws, 3)
    for _ in range(4):  # written while disconnected
        world.post(account)
    with subscription(
        server, token, EVENTS, types=["Post.Published"], after=first[-1]["cursor"]
    ) as ws:
        rest = receive(ws, 4)
        world.post(account)
        rest += receive(ws, 1)
    got = [int(i["position"]) for i in first + rest]
    assert got == positions(ledger, ("Post.Published",))


class StalledClient:
    """A subscriber that stops reading: a small receive window, a short frame queue."""

    def __init__(self, server: ApiServer, token: str, query: str, **variables: Any) -> None:
        self.subscribed = threading.Event()
        self.stop = threading.Event()
        args = (server, token, query, variables)
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run(*args)))
        self.thread.start()
        assert self.subscribed.wait(10)

    async def _run(self, server: ApiServer, token: str, query: str, variables: Any) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.connect(("127.0.0.1", int(server.ws_url.split(":")[-1].split("/")[0])))
        async with connect_async(
            server.ws_url, sock=sock, subprotocols=["graphql-transport-ws"], max_queue=4
        ) as ws:
            init = {"authorization": f"Bearer {token}"}
            await ws.send(json.dumps({"type": "connection_init", "payload": init}))
            await ws.recv()
            payload = {"query": query, "variables": variables}
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
            self.subscribed.set()
            await asyncio.get_running_loop().run_in_executor(None, self.stop.wait)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)


def test_a_stalled_client_does_not_hold_up_others(server: ApiServer, ledger: Ledger) -> None:
    world = World(ledger)
    account = world.account()
    token = server.token("auditor")
    total = 6000  # megabytes of payloads: more than the kernel buffers between the two
    published = ["Post.Published"]
    stalled = StalledClient(server, token, PAYLOADS, types=published)
    try:
        with subscription(server, token, EVENTS, types=published) as fast:
            got: list[Any] = []
            reader = threading.Thread(target=lambda: got.extend(receive(fast, total, 60)))
            reader.start()
            for _ in range(total // 200):
                world.ledger.submit([_publish(world, account) for _ in range(200)])
            reader.join(120)
        assert [int(i["position"]) for i in got] == positions(ledger, ("Post.Published",))
    finally:
        stalled.close()


def test_past_its_buffer_a_subscriber_is_cut_off_and_resumes(
    server: ApiServer, ledger: Ledger
) -> None:
    world = World(ledger)
    account = world.account()
    token = server.token("auditor")
    published = ["Post.Published"]
    broadcaster = server.state.extras["broadcaster"]
    with subscription(server, token, EVENTS, types=published) as roomy:
        world.post(account)
        first = receive(roomy, 1)
        broadcaster.buffer_limit = 100  # for subscribers from now on
        with subscription(server, token, EVENTS, types=published) as small:
            assert receive(small, 1) == first
            world.ledger.submit([_publish(world, account) for _ in range(150)])
            message = json.loads(small.recv(timeout=15))
            assert receive(roomy, 150)[-1]["position"] == str(ledger.head())
    errors = (
        message["payload"] if isinstance(message["payload"], list) else message["payload"]["errors"]
    )
    assert errors[0]["extensions"] == {
        "code": "SLOW_SUBSCRIBER",
        "details": {"cursor": first[0]["cursor"]},
    }
    assert "resubscribe" in errors[0]["message"]
    with subscription(server, token, EVENTS, types=published, after=first[0]["cursor"]) as again:
        rest = receive(again, 150)
    assert [int(i["position"]) for i in first + rest] == positions(ledger, ("Post.Published",))


def _publish(world: World, account: Any) -> Any:
    from ledger import commands as c
    from tests.world import sha

    ref = f"p{world.key()}"
    return c.PublishPost(
        actor=world.ops, idempotency_key=world.key(), account_id=account, ref=ref,
        origin="original", category="other", content_sha256=sha(ref),
    )  # fmt: skip


def test_a_client_that_never_initialises_is_closed(
    server: ApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        connect(server.ws_url, subprotocols=["graphql-transport-ws"]) as ws,
        pytest.raises(ConnectionClosed) as closed,
    ):
        ws.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4408


def test_a_bad_token_is_refused_at_connection_init(server: ApiServer) -> None:
    with connect(server.ws_url, subprotocols=["graphql-transport-ws"]) as ws:
        ws.send(
            json.dumps({"type": "connection_init", "payload": {"authorization": "Bearer nope"}})
        )
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    assert "UNAUTHENTICATED" in closed.value.rcvd.reason


def test_a_provider_receives_only_its_own_sanctions(server: ApiServer, ledger: Ledger) -> None:
    world = World(ledger)
    mine, theirs = world.account(), world.account(ops=world.rival_ops)
    world.sanction(theirs, "warning")
    world.sanction(mine, "warning")
    world.sanction(theirs, "warning")
    world.sanction(mine, "warning")
    token = server.token("provider", world.provider)
    with subscription(server, token, SANCTIONS) as ws:
        got = receive(ws, 2)
        world.sanction(theirs, "warning")
        world.sanction(mine, "warning")
        got += receive(ws, 1)
    assert {i["originatorId"] for i in got} == {str(mine)}
    with subscription(server, token, SANCTIONS, provider=str(world.rival)) as ws:
        message = json.loads(ws.recv(timeout=10))
    assert message["type"] in ("error", "next")
    assert "NOT_FOUND" in json.dumps(message)
