"""Admission: a request waits a bounded time for what it needs from the process (a
connection of a pool, a thread of the event store's executor), then is refused with the
typed, retryable OVERLOADED, before it has touched the database.

Each pool and the executor sit behind a `Gate` with as many slots as they have
connections or threads, so a holder of a slot never queues inside them: the pool's own
2-second wait is then only ever for a connection being made (a database that cannot be
reached: STORAGE_UNAVAILABLE), never for a busy one (OVERLOADED).

Who may be shed (`LEDGER_OVERLOAD_WAIT`, `LEDGER_OVERLOAD_QUEUE`): a query or mutation at
its first entry through a gate. Work already begun goes first and waits longer
(`PATIENT_SECONDS`): a request that has had a slot of this gate (its token lookup done,
its statement next), a subscription (shedding it would make its client resubscribe and
replay, more work than waiting), a WebSocket's sign-in. The server's own work (the live
feed) waits as long as it takes."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from api import logs
from ledger.database import POOL_TIMEOUT_S

RETRY_AFTER_SECONDS = 1
PATIENT_SECONDS = float(POOL_TIMEOUT_S)
# Shed reasons: waited the bound out; found the queue full.
WAITED, QUEUE_FULL = "wait", "queue"


# As GraphQL error extensions: the code, and when to retry (seconds, as Retry-After).
OVERLOADED = {"code": "OVERLOADED", "retryable": True, "retryAfter": RETRY_AFTER_SECONDS}


class Overloaded(Exception):
    """No slot within the bound: clients see OVERLOADED (HTTP 503, Retry-After) and retry."""

    message = "the server is busy; retry after the Retry-After delay"

    def __init__(self, gate: str, reason: str) -> None:
        super().__init__(f"{gate}: {reason}")
        self.gate, self.reason = gate, reason

    @property
    def extensions(self) -> dict[str, Any]:
        """graphql-core gives an error raised in a resolver these, on every transport
        (a WebSocket's result is sent before ErrorPolicy sees it)."""
        return dict(OVERLOADED)


class Gate:
    """`slots` holders at most; a sheddable caller waits at most `wait` seconds, and
    finds a place only while fewer than `queue` wait (0: no bound). Slots are handed
    over first come, first served, work already begun first."""

    def __init__(self, name: str, slots: int, wait: float, queue: int = 0) -> None:
        self.name, self.slots, self.wait, self.queue = name, slots, wait, queue
        self.in_use = 0
        self._begun: deque[asyncio.Future[None]] = deque()  # patient waiters, served first
        self._new: deque[asyncio.Future[None]] = deque()
        self.on_shed: Callable[[str, str], None] | None = None  # (gate, reason): a metric

    @property
    def waiting(self) -> int:
        return len(self._begun) + len(self._new)

    def stats(self) -> dict[str, int]:
        return {"size": self.slots, "in_use": self.in_use, "waiting": self.waiting}

    @property
    def busy(self) -> bool:
        return self.in_use >= self.slots or self.waiting > 0

    async def enter(self) -> None:
        """Take a slot for the current request (or the server's own work), or raise
        Overloaded; the caller then owes a `leave()`."""
        record = logs.current()
        shed = _sheddable(record, self.name)
        if self.in_use < self.slots and not self.waiting:
            self.in_use += 1
        elif shed:
            await self._wait(self._new, self.wait, limit=self.queue)
        else:
            await self._wait(self._begun, PATIENT_SECONDS if record is not None else None)
        if record is not None:
            record.admitted.add(self.name)

    def leave(self) -> None:
        for waiters in (self._begun, self._new):
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)  # the slot passes on: in_use stays
                    return
        self.in_use -= 1

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self.enter()
        try:
            yield
        finally:
            self.leave()

    async def _wait(
        self, waiters: deque[asyncio.Future[None]], seconds: float | None, limit: int = 0
    ) -> None:
        if limit and len(self._new) >= limit:
            self._shed(QUEUE_FULL)
        waiter = asyncio.get_running_loop().create_future()
        waiters.append(waiter)
        try:
            async with asyncio.timeout(seconds):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self.leave()  # handed a slot just as it gave up: pass it on
            with contextlib.suppress(ValueError):
                waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                self._shed(WAITED)
            raise

    def _shed(self, reason: str) -> None:
        if self.on_shed is not None:
            self.on_shed(self.name, reason)
        logs.note_outcome("OVERLOADED")
        raise Overloaded(self.name, reason) from None


def _sheddable(record: logs.RequestRecord | None, gate: str) -> bool:
    """A query's or mutation's first entry through this gate."""
    return (
        record is not None
        and not record.connection
        and record.operation_type != "subscription"
        and gate not in record.admitted
    )


def refusal_body() -> dict[str, Any]:
    """The body of a request refused as a whole: GraphQL JSON, no `data`."""
    return {"errors": [{"message": Overloaded.message, "extensions": dict(OVERLOADED)}]}


RETRY_HEADERS = {"Retry-After": str(RETRY_AFTER_SECONDS)}
