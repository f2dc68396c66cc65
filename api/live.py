"""Live events for subscriptions: one LISTEN connection per process reads each new page
of the log once and hands it to every subscriber's bounded buffer. A subscriber whose
buffer is full is cut off with a clear reason (it resumes from its cursor) so a slow
client neither holds up the others nor grows memory without bound."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import psycopg
from psycopg import sql

from api import metrics
from api.state import DATABASE_FAULTS, ApiState, DatabaseUnavailable
from ledger.database import one_line
from ledger.log import LoggedEvent

log = logging.getLogger("ledger.api.live")
PAGE = 500
MAX_BACKOFF_SECONDS = 1.0


class SlowSubscriber(Exception):
    pass


class Batch:
    """One page of live events as the broadcaster handed it out, with what subscribers
    share about it (the events a provider owns, each selection's serialised payloads).
    Only the subscribers' buffers hold it: it goes when the last of them has sent it."""

    __slots__ = ("events", "memo")

    def __init__(self, events: list[LoggedEvent]) -> None:
        self.events = events
        self.memo: dict[Hashable, Any] = {}

    def once(self, key: Hashable, work: Callable[[], Awaitable[Any]]) -> asyncio.Future[Any]:
        """`work`, run for the first subscriber that asks and awaited by every other; it
        runs to its end even if that first subscriber goes."""
        found = self.memo.get(key)
        if found is None:
            found = self.memo[key] = asyncio.ensure_future(work())
        return asyncio.shield(found)


class Subscriber:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buffer: deque[tuple[Batch, LoggedEvent]] = deque()
        self.overflowed = False
        self.ready = asyncio.Event()

    def offer(self, batch: Batch) -> None:
        if self.overflowed:
            return
        if len(self.buffer) + len(batch.events) > self.limit:
            self.overflowed = True
            self.buffer.clear()
            metrics.dropped_slow()
        else:
            self.buffer.extend((batch, e) for e in batch.events)
        self.ready.set()

    async def next_events(self, at_most: int = 100) -> list[LoggedEvent]:
        return [e for _, e in await self.next_deliveries(at_most)]

    async def next_deliveries(self, at_most: int = 100) -> list[tuple[Batch, LoggedEvent]]:
        """The next events with their batch, a few at a time: what waits in the buffer is
        what has not been sent, so a client that stops reading fills it up and is cut off."""
        while not self.buffer and not self.overflowed:
            await self.ready.wait()
            self.ready.clear()
        if self.overflowed:
            raise SlowSubscriber(
                f"more than {self.limit} events waited for this subscriber;"
                " resubscribe from the last cursor received"
            )
        return [self.buffer.popleft() for _ in range(min(at_most, len(self.buffer)))]


class Broadcaster:
    def __init__(self, state: ApiState, buffer_limit: int = 10_000) -> None:
        self.state = state
        self.buffer_limit = buffer_limit
        self.subscribers: set[Subscriber] = set()
        self.position: int | None = None
        self.task: asyncio.Task[None] | None = None
        # True while LISTEN is up and every event up to `position` has been handed out.
        self.live = False

    def subscribe(self) -> Subscriber:
        subscriber = Subscriber(self.buffer_limit)
        self.subscribers.add(subscriber)
        metrics.subscribed(1)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber in self.subscribers:
            self.subscribers.discard(subscriber)
            metrics.subscribed(-1)

    def start(self) -> None:
        self.task = asyncio.create_task(self._supervise())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _supervise(self) -> None:
        """Follow the log for as long as the process runs. Whatever goes wrong (a lost
        connection, a restarted server, a bug) is logged and followed by a reconnect;
        `position` survives, so subscribers miss nothing and get nothing twice."""
        backoff = 0.1
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.live = False
                if isinstance(exc, (*DATABASE_FAULTS, OSError, DatabaseUnavailable)):
                    log.warning("live events: database lost (%s)", one_line(exc))
                else:
                    log.exception("live events: unexpected failure")
                log.info("live events: reconnecting in %.1f s", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            else:
                backoff = 0.1

    async def _follow(self) -> None:
        ledger = self.state.ledger
        conn = await psycopg.AsyncConnection.connect(
            self.state.database.conninfo, autocommit=True, connect_timeout=5
        )
        async with conn:
            channel = sql.Identifier(ledger.store.channel_name)
            await conn.execute(sql.SQL("LISTEN {}").format(channel))
            if self.position is None:
                self.position = await self.state.blocking(ledger.head)
            while True:
                await self._publish_new()
                if not self.live:
                    self.live = True
                    log.info("live events: following the log from position %d", self.position)
                async for _ in conn.notifies(timeout=1.0, stop_after=1):
                    pass

    async def _publish_new(self) -> None:
        assert self.position is not None
        if not self.subscribers:
            # Nobody listens: move to the head without reading and decoding the events.
            # The check comes after the read: a subscriber that registers meanwhile
            # replays past this head itself (it reads once more after subscribing).
            head = await self.state.blocking(self.state.ledger.head)
            if not self.subscribers:
                self.position = max(self.position, head)
                return
        while True:
            events = await self.state.log_page(self.position, PAGE)
            if not events:
                return
            self.position = events[-1].position
            batch = Batch(events)
            for subscriber in list(self.subscribers):
                subscriber.offer(batch)
            if len(events) < PAGE:
                return
