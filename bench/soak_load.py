"""The soak's clients, on one asyncio loop: paced writes (GraphQL mutations, each retried
with its idempotency key until acknowledged), paced varied reads, and `events`
subscribers over graphql-transport-ws that now and then disconnect and resume from the
last cursor they received. Each keeps what the checks and the table need."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from array import array
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException
from websockets.typing import Subprotocol

from bench.api import Call
from bench.faults import IMPOSE

REASON = "soak "  # + the idempotency key: each logged sanction names its write
PUBLISH = """mutation($id: ID!, $key: String!, $ref: String!, $sha: String!) {
  publishPost(input: {accountId: $id, ref: $ref, origin: "original", category: "other",
    contentSha256: $sha}, idempotencyKey: $key) {
  __typename ... on CommandSuccess { position replayed } ... on MutationError { code } } }"""
EVENTS = "subscription($after: Position) { events(after: $after) { position cursor type at } }"
# Answers a write retries with the same key; any other refusal is counted and dropped.
RETRYABLE = {"STORAGE_UNAVAILABLE", "OVERLOADED", "CONFLICT", "INTERNAL", "timeout",
             "no connection", "HTTP 5xx"}  # fmt: skip
WRITE_TIMEOUT = 10.0  # seconds an attempt may take before it is retried
GIVE_UP = 60.0  # seconds after which a write still unacknowledged is abandoned
READ_TIMEOUT = 30.0
MAX_IN_FLIGHT = 200  # requests of one kind waiting on the server; past it one is skipped


def clock() -> float:
    return time.monotonic()


@dataclass(frozen=True)
class Target:
    """An account a write goes to, and the token that may write there."""

    kind: str  # "sanction" (a regulator's warning) or "post" (its provider's)
    account: str
    token: str


@dataclass
class Record:
    """What the clients saw; times are seconds from `t0` (the start of the load)."""

    t0: float
    reads: list[tuple[float, float]] = field(default_factory=list)  # (sent, seconds)
    read_failures: Counter[str] = field(default_factory=Counter)
    failed_reads: list[float] = field(default_factory=list)  # when each failed one was sent
    writes: list[tuple[float, float]] = field(default_factory=list)  # (acked, seconds)
    acked: dict[str, int] = field(default_factory=dict)  # key -> position
    requested: dict[int, float] = field(default_factory=dict)  # position -> acked attempt sent
    write_answers: Counter[str] = field(default_factory=Counter)
    abandoned: list[str] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)

    def now(self) -> float:
        return clock() - self.t0


def answer_of(response: httpx.Response, field_name: str) -> tuple[str, dict[str, Any] | None]:
    """A mutation's answer: ("ok", the CommandSuccess) or (what went wrong, None)."""
    if response.status_code >= 500:
        try:
            codes = [e["extensions"]["code"] for e in response.json()["errors"]]
        except (ValueError, KeyError, TypeError):
            return "HTTP 5xx", None
        return ("OVERLOADED" if "OVERLOADED" in codes else codes[0] if codes else "HTTP 5xx"), None
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}, not JSON", None
    codes = sorted(
        {(e.get("extensions") or {}).get("code") or "?" for e in body.get("errors") or []}
    )
    if codes:
        return ",".join(codes), None
    result = (body.get("data") or {}).get(field_name) or {}
    if result.get("__typename") == "CommandSuccess":
        return "ok", result
    return str(result.get("code", f"HTTP {response.status_code}")), None


def write_request(target: Target, key: str) -> tuple[str, dict[str, Any], str]:
    """The mutation, its variables and its root field for a new write with `key`."""
    if target.kind == "sanction":
        variables = {"id": target.account, "key": key, "reason": REASON + key}
        return IMPOSE, variables, "imposeSanction"
    sha = hashlib.sha256(key.encode()).hexdigest()
    return PUBLISH, {"id": target.account, "key": key, "ref": key, "sha": sha}, "publishPost"


async def write(client: httpx.AsyncClient, url: str, target: Target, key: str, rec: Record) -> None:
    """One write, retried with the same key until acknowledged or abandoned."""
    query, variables, root = write_request(target, key)
    issued = rec.now()
    while True:
        sent = rec.now()
        try:
            response = await client.post(
                url,
                json={"query": query, "variables": variables},
                headers={"Authorization": f"Bearer {target.token}"},
                timeout=WRITE_TIMEOUT,
            )
            answer, result = answer_of(response, root)
        except httpx.TimeoutException:
            answer, result = "timeout", None
        except httpx.TransportError:
            answer, result = "no connection", None
        rec.write_answers[answer] += 1
        if result is not None:
            position = int(result["position"])
            rec.acked[key] = position
            rec.requested[position] = sent
            rec.writes.append((rec.now(), rec.now() - issued))
            return
        if answer not in RETRYABLE:
            return
        if rec.now() - issued > GIVE_UP:
            rec.abandoned.append(key)
            return
        await asyncio.sleep(0.1)


async def read(client: httpx.AsyncClient, url: str, call: Call, sent: float, rec: Record) -> None:
    answer = await read_once(client, url, call)
    if answer is None:
        rec.reads.append((sent, rec.now() - sent))
    else:
        rec.read_failures[answer] += 1
        rec.failed_reads.append(sent)


async def read_once(client: httpx.AsyncClient, url: str, call: Call) -> str | None:
    """None when the read is answered without an error, else what went wrong."""
    try:
        response = await client.post(
            url,
            content=call.body,
            headers={"Authorization": f"Bearer {call.token}", "Content-Type": "application/json"},
            timeout=READ_TIMEOUT,
        )
    except httpx.TimeoutException:
        return "timeout"
    except httpx.TransportError:
        return "no connection"
    if response.status_code != 200 or b'"errors"' in response.content:
        return failure(response)
    return None


def failure(response: httpx.Response) -> str:
    """A failed read as its first error's code, else its HTTP status."""
    try:
        return str(response.json()["errors"][0]["extensions"]["code"])
    except (ValueError, KeyError, IndexError, TypeError):
        return f"HTTP {response.status_code}"


async def paced(
    rate: float,
    until: float,
    rec: Record,
    what: str,
    start: Callable[[float], Coroutine[None, None, None]],
) -> None:
    """Start `start(sent)` `rate` times a second on a fixed schedule (open loop: a slow
    answer does not delay the next request) until `until` seconds into the load; skip a
    request while MAX_IN_FLIGHT are waiting. Returns once every started one has ended."""
    running: set[asyncio.Task[None]] = set()
    for i in range(int(until * rate)):
        delay = i / rate - rec.now()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(running) >= MAX_IN_FLIGHT:
            rec.skipped[what] += 1
            if what == "reads":
                rec.read_failures["not sent"] += 1
                rec.failed_reads.append(i / rate)
            continue
        task = asyncio.create_task(start(i / rate))
        running.add(task)
        task.add_done_callback(running.discard)
    if running:
        await asyncio.wait(running)


async def writes(
    url: str, targets: Sequence[Target], rate: float, until: float, rec: Record, run_id: str
) -> None:
    rng = random.Random(f"{run_id}-writes")
    serial = iter(range(10**9))
    limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=32)
    async with httpx.AsyncClient(limits=limits) as client:

        async def start(sent: float) -> None:
            await write(client, url, rng.choice(targets), f"soak:{run_id}:{next(serial)}", rec)

        await paced(rate, until, rec, "writes", start)


async def reads(
    url: str, calls: dict[str, list[Call]], weights: Mapping[str, float], rate: float,
    until: float, rec: Record, run_id: str,
) -> None:  # fmt: skip
    rng = random.Random(f"{run_id}-reads")
    kinds = [k for k in weights if calls.get(k)]
    limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=64)
    async with httpx.AsyncClient(limits=limits) as client:

        async def start(sent: float) -> None:
            (kind,) = rng.choices(kinds, [weights[k] for k in kinds])
            await read(client, url, rng.choice(calls[kind]), sent, rec)

        await paced(rate, until, rec, "reads", start)


class Subscriber:
    """`events` from a cursor over graphql-transport-ws, subscribed again from the last
    cursor received whenever the server ends the subscription; with `resume_every`, its
    connection is closed every that many seconds or so (0.5x-1.5x, at random) and opened
    again the same way, else it holds one subscription as long as it can."""

    def __init__(
        self, n: int, url: str, token: str, after: int, resume_every: float | None
    ) -> None:
        self.name = f"subscriber-{n}"
        self.url, self.token, self.cursor = url, token, str(after)
        self.resume_every = resume_every
        self.rng = random.Random(n)
        self.positions = array("q")  # every delivery, in the order received
        self.times = array("d")  # when each was received, s from t0
        self.sessions: list[float] = []  # when each subscription was sent, s from t0
        self.ends: Counter[str] = Counter()  # how sessions ended
        self.stop = asyncio.Event()

    def last(self) -> int:
        return self.positions[-1] if self.positions else int(self.cursor)

    async def run(self, rec: Record) -> None:
        while not self.stop.is_set():
            try:
                await self.session(rec)
            except (WebSocketException, OSError, TimeoutError, ValueError) as e:
                self.ends[type(e).__name__] += 1
                await asyncio.sleep(0.2)

    async def session(self, rec: Record) -> None:
        async with connect(
            self.url, subprotocols=[Subprotocol("graphql-transport-ws")], open_timeout=30,
            close_timeout=2, ping_interval=None, max_size=None,
        ) as ws:  # fmt: skip
            init = {"authorization": f"Bearer {self.token}"}
            await ws.send(json.dumps({"type": "connection_init", "payload": init}))
            if json.loads(await asyncio.wait_for(ws.recv(), 30)).get("type") != "connection_ack":
                self.ends["no connection_ack"] += 1
                return
            payload = {"query": EVENTS, "variables": {"after": self.cursor}}
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
            self.sessions.append(rec.now())
            lasts = self.resume_every * self.rng.uniform(0.5, 1.5) if self.resume_every else 1e9
            deadline = clock() + lasts
            while not self.stop.is_set():
                left = deadline - clock()
                if left <= 0:
                    self.ends["resumed"] += 1
                    return
                try:
                    message = await asyncio.wait_for(ws.recv(), min(left, 0.5))
                except TimeoutError:
                    continue
                if not await self.handle(ws, json.loads(message), rec):
                    return

    async def handle(self, ws: ClientConnection, message: dict[str, Any], rec: Record) -> bool:
        """False when the subscription has ended."""
        kind, payload = message.get("type"), message.get("payload")
        if kind == "ping":
            await ws.send(json.dumps({"type": "pong"}))
            return True
        if kind == "next" and isinstance(payload, dict) and not payload.get("errors"):
            item = payload["data"]["events"]
            self.positions.append(int(item["position"]))
            self.times.append(rec.now())
            self.cursor = item["cursor"]
            return True
        if kind in ("next", "error"):
            errors = payload if isinstance(payload, list) else (payload or {}).get("errors", [])
            for e in errors:
                self.ends[(e.get("extensions") or {}).get("code") or "?"] += 1
            return False
        self.ends[str(kind)] += 1
        return kind not in ("complete",)
