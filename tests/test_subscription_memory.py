"""Subscriptions that run for days: one held open over tens of thousands of events
leaves the server's memory flat (no per-event state outlives its event), and a
connection's later operations do not see what its earlier ones loaded."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import resource
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx
import pytest
from websockets.sync.client import ClientConnection

from ledger import Actor, Ledger, Role
from ledger import commands as c
from tests.api_server import ApiServer
from tests.test_api_subscriptions import subscription
from tests.world import World

EVENTS = "subscription($after: Position) { events(after: $after) { position cursor type } }"
SYSTEM = Actor("reach-counter", Role.SYSTEM)
BATCH = 1000
WARM_UP = 10_000
MEASURED = 50_000
CHUNK = 5_000  # written, then received, then measured: within a subscriber's buffer
# What the measured events may add, all of them. Before the fix each event left about
# 1.2 KB behind: 70 MB and a million blocks here. After it, samples vary by some 20,000
# blocks (what is in flight when one is taken) and under 1 MB.
BOUND_BLOCKS = 100_000
BOUND_MB = 8


class Reach:
    """Writes events fast: batches of RecordReach commands over a few posts."""

    def __init__(self, ledger: Ledger, posts: list[UUID]) -> None:
        self.ledger = ledger
        self.posts = posts
        self.views = 0
        self.keys = 0

    def write(self, n: int) -> None:
        for _ in range(n // BATCH):
            self.ledger.submit([self._command(i) for i in range(BATCH)])

    def _command(self, i: int) -> c.Command:
        self.keys += 1
        if i % len(self.posts) == 0:
            self.views += 1
        return c.RecordReach(
            actor=SYSTEM,
            idempotency_key=f"reach{self.keys}",
            post_id=self.posts[i % len(self.posts)],
            views=self.views,
            reposts=0,
        )


Positions = Iterator[int]


@contextlib.contextmanager
def over_websocket(server: ApiServer, token: str, after: int) -> Iterator[Positions]:
    with subscription(server, token, EVENTS, after=str(after)) as ws:

        def positions() -> Positions:
            while True:
                message = json.loads(ws.recv(timeout=30))
                assert message["type"] == "next", message
                yield int(message["payload"]["data"]["events"]["position"])

        yield positions()


@contextlib.contextmanager
def over_sse(server: ApiServer, token: str, after: int) -> Iterator[Positions]:
    body = {"query": EVENTS, "variables": {"after": str(after)}}
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    with httpx.stream("POST", server.url, json=body, headers=headers, timeout=30) as response:
        assert response.status_code == 200, response.read()

        def positions() -> Positions:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    data = json.loads(line[6:])
                    assert "errors" not in data, data
                    yield int(data["data"]["events"]["position"])

        yield positions()


def drain(positions: Positions, until: int, last: int) -> int:
    """Receive events up to position `until`, each once and in order; the last position."""
    while last < until:
        position = next(positions)
        assert position > last, (position, last)
        last = position
    return last


@dataclass(frozen=True)
class Memory:
    """The process's memory after a full collection: blocks Python's allocator has lent
    out (every object below 512 bytes), and resident bytes once the C allocator has
    handed back what it holds free (glibc). Resident memory alone would miss a leak
    that refills what an earlier test freed."""

    blocks: int
    resident: int

    @classmethod
    def now(cls) -> Memory:
        gc.collect()
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/statm") as statm:
            resident = int(statm.read().split()[1]) * resource.getpagesize()
        return cls(sys.getallocatedblocks(), resident)


@pytest.mark.parametrize("feed", [over_websocket, over_sse], ids=["websocket", "sse"])
def test_memory_stays_flat_over_fifty_thousand_events(
    server: ApiServer, ledger: Ledger, feed: Callable[..., Any]
) -> None:
    """The server runs in this process (tests/api_server.py): its memory is ours."""
    world = World(ledger)
    reach = Reach(ledger, [world.post(world.account()) for _ in range(10)])
    last = ledger.head()
    reach.write(CHUNK)  # replayed (SSE answers once there is an event to send)
    with feed(server, server.token("regulator"), last) as positions:
        samples = []
        for written in range(2 * CHUNK, WARM_UP + MEASURED + 1, CHUNK):
            reach.write(CHUNK)  # live, with the subscriber reading behind
            last = drain(positions, ledger.head(), last)
            if written >= WARM_UP:
                server.settle()
                samples.append(Memory.now())
    blocks = [s.blocks - samples[0].blocks for s in samples]
    resident = [round((s.resident - samples[0].resident) / 1e6, 1) for s in samples]
    print(f"\nevery {CHUNK} events, blocks grown {blocks}, resident MB grown {resident}")
    assert blocks[-1] < BOUND_BLOCKS, f"blocks grew {blocks} over {MEASURED} events"
    assert resident[-1] < BOUND_MB, f"resident MB grew {resident} over {MEASURED} events"


POST_ACCOUNT = "query($id: ID!) { post(id: $id) { account { activeSanctions { level } } } }"


def answer(ws: ClientConnection, op: str) -> dict[str, Any]:
    """The one result of query `op` on the open connection."""
    message = json.loads(ws.recv(timeout=10))
    assert message["type"] == "next" and "errors" not in message["payload"], message
    assert json.loads(ws.recv(timeout=10)) == {"id": op, "type": "complete"}
    data: dict[str, Any] = message["payload"]["data"]
    return data


def test_each_operation_on_a_connection_loads_afresh(server: ApiServer, ledger: Ledger) -> None:
    """A connection lives for days: what one operation's DataLoaders loaded is neither
    kept for the connection's life nor served, stale, to a later operation."""
    world = World(ledger)
    account = world.account()
    post = str(world.post(account))
    server.settle()
    with subscription(server, server.token("regulator"), POST_ACCOUNT, id=post) as ws:
        assert answer(ws, "1")["post"]["account"]["activeSanctions"] == []
        world.sanction(account, "warning")
        server.settle()
        payload = {"query": POST_ACCOUNT, "variables": {"id": post}}
        ws.send(json.dumps({"id": "2", "type": "subscribe", "payload": payload}))
        sanctions = answer(ws, "2")["post"]["account"]["activeSanctions"]
        assert sanctions == [{"level": "warning"}]
