"""The relay: follows the log from its checkpoint and publishes each event to JetStream.

One step, in one PostgreSQL transaction that holds the checkpoint row (FOR UPDATE, so a
second relay waits its turn): reconcile the checkpoint with the stream (see
`Relay._reconcile`), read a page of events the read side knows the owners of, publish
them with a bounded window of asynchronous publishes, and store the checkpoint of the
acknowledged prefix. A publish that fails, times out or is refused ends the step after
that prefix; the next step reconciles again.

Every message carries `Nats-Msg-Id` (its position: a re-publish inside the server's
duplicate window is dropped and counted) and `Nats-Expected-Last-Sequence` (the stream
sequence of the message before it: the server stores it only right after its
predecessor). The second is what makes the stream exactly once past the duplicate
window, and keeps it in log order whatever a reconnection re-sends or loses."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nats
import psycopg
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import PubAck, RetentionPolicy, StorageType, StreamConfig, StreamInfo
from nats.js.errors import NotFoundError
from psycopg import sql

from api.relay import body, checkpoint
from api.relay.checkpoint import Checkpoint, Progress
from api.relay.subjects import PREFIX, subject
from ledger.application import Ledger
from ledger.database import Database, one_line
from ledger.log import LoggedEvent
from ledger.store import log_page

log = logging.getLogger("ledger.relay")

DEFAULT_URL = "nats://127.0.0.1:4222"
DEFAULT_STREAM = "LEDGER"
ACK_TIMEOUT_S = 10.0
MAX_BACKOFF_S = 2.0
IDLE_POLL_S = 1.0
BEHIND_POLL_S = 0.005


def nats_url() -> str:
    return os.environ.get("LEDGER_NATS_URL", DEFAULT_URL)


def stream_name() -> str:
    return os.environ.get("LEDGER_NATS_STREAM", DEFAULT_STREAM)


def replicas() -> int:
    value = os.environ.get("LEDGER_NATS_REPLICAS", "1")
    if not value.isdigit() or not 1 <= int(value) <= 5:
        raise ValueError(f"LEDGER_NATS_REPLICAS must be a whole number from 1 to 5, not {value!r}")
    return int(value)


class StreamLost(RuntimeError):
    """The stream holds less than the checkpoint says was stored, or another log's events."""


class PublishFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Message:
    position: int
    subject: str
    body: bytes
    headers: dict[str, str]


class Relay:
    def __init__(
        self,
        ledger: Ledger,
        database: Database,
        url: str | None = None,
        stream: str | None = None,
        page_size: int = 1000,
        window: int = 4000,
    ) -> None:
        self.ledger = ledger
        self.database = database
        self.url = url or nats_url()
        self.stream = stream or stream_name()
        self.page_size = page_size
        self.window = window
        self.schema = ledger.store.datastore.schema or "public"
        self.events_table = ledger.store.events_table
        self.nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._listener: psycopg.AsyncConnection[Any] | None = None

    # ----- connections ------------------------------------------------------------

    async def open(self) -> None:
        if self._conn is None or self._conn.closed:
            self._conn = await asyncio.to_thread(self._connect)
        if self.nc is None or self.nc.is_closed:
            self.nc = await nats.connect(
                self.url, name="ledger-relay", connect_timeout=2, reconnect_time_wait=0.5,
                max_reconnect_attempts=-1, error_cb=_log_error, disconnected_cb=_disconnected,
            )  # fmt: skip
            self._js = self.nc.jetstream(publish_async_max_pending=self.window)

    def _connect(self) -> psycopg.Connection[Any]:
        conn = self.database.connect(self.schema, application_name="ledger-relay")
        conn.execute("SET lock_timeout = '5s'")
        conn.commit()
        checkpoint.setup(conn, self.stream)
        return conn

    @property
    def js(self) -> JetStreamContext:
        assert self._js is not None, "open() first"
        return self._js

    @property
    def conn(self) -> psycopg.Connection[Any]:
        assert self._conn is not None, "open() first"
        return self._conn

    async def close(self) -> None:
        for closing in (self._close_db, self._close_nats):
            try:
                await closing()
            except Exception as e:  # closing what already broke
                log.debug("relay: closing: %s", one_line(e))

    async def _close_db(self) -> None:
        conn, self._conn = self._conn, None
        listener, self._listener = self._listener, None
        if conn is not None:
            await asyncio.to_thread(conn.close)
        if listener is not None:
            await listener.close()

    async def _close_nats(self) -> None:
        nc, self.nc = self.nc, None
        if nc is not None and not nc.is_closed:
            await nc.close()

    # ----- one step ---------------------------------------------------------------

    async def step(self) -> int:
        """Publish one page; the number of events read (0: nothing to relay now)."""
        conn = self.conn
        try:
            at = await asyncio.to_thread(checkpoint.lock, conn, self.stream)
            at, progress = await self._reconcile(at)
            messages = await asyncio.to_thread(self._messages, conn, at.position, True)
            done, progress, error = await self._publish(messages, at, progress)
            await asyncio.to_thread(self._store, done, progress)
        except BaseException:
            await asyncio.to_thread(_rollback, conn)
            raise
        if error is not None:
            raise error
        return len(messages)

    def _store(self, at: Checkpoint, progress: Progress) -> None:
        checkpoint.store(self.conn, self.stream, at, progress)
        self.conn.commit()

    async def _reconcile(self, at: Checkpoint) -> tuple[Checkpoint, Progress]:
        """The checkpoint moves only after the server acknowledged a message, so it may
        lag the stream (a relay killed, or a database lost, between the ack and the
        commit) but never lead it. And since each message is stored only right after its
        predecessor (Nats-Expected-Last-Sequence), the stream always holds a prefix of
        the log, in order, without a gap. Hence the rule, on every step:

        - the stream's last sequence equals the checkpoint's: go on from the checkpoint;
        - it is greater: those messages were stored but not checkpointed; take the
          position from the last message's Ledger-Position header (after checking that
          it is this log's event) and go on from there. Nothing is published again, so
          no duplicate appears however long the gap, duplicate window or not;
        - it is smaller, or the stream is gone while the checkpoint is not zero: the
          stream lost messages (deleted, or a server lost its store). Refuse, and say
          to rebuild it: the relay never fills a stream with a hole in it."""
        try:
            info = await self.js.stream_info(self.stream)
        except NotFoundError:
            if at.sequence:
                raise StreamLost(
                    f"stream {self.stream} is missing, but {at.sequence} messages were"
                    " stored in it: run `ledger relay --rebuild`"
                ) from None
            info = await self._create_stream()
        last = info.state.last_seq
        stored = Progress(stream_bytes=info.state.bytes)
        if last == at.sequence:
            return at, stored
        if last < at.sequence:
            raise StreamLost(
                f"stream {self.stream} ends at sequence {last}, but {at.sequence} messages"
                " were stored in it: run `ledger relay --rebuild`"
            )
        found = await self.js.get_msg(self.stream, last)
        position = int((found.headers or {}).get(body.POSITION, "0"))
        await asyncio.to_thread(self._check_is_ours, position, found.headers or {})
        log.warning("relay: %d messages were stored but not checkpointed; going on from"
                    " position %d (sequence %d)", last - at.sequence, position, last)  # fmt: skip
        return Checkpoint(position, last), Progress(
            reconciled=last - at.sequence, stream_bytes=info.state.bytes
        )

    def _check_is_ours(self, position: int, headers: dict[str, str]) -> None:
        page = log_page(self.conn, self.events_table, position - 1, 1)
        ours = page and page[0].id == position
        if not ours or str(page[0].originator_id) != headers.get(body.ORIGINATOR_ID):
            raise StreamLost(
                f"stream {self.stream}'s last message (position {position}) is not this"
                " log's event: point LEDGER_NATS_STREAM elsewhere, or `ledger relay --rebuild`"
            )

    async def _create_stream(self) -> StreamInfo:
        config = StreamConfig(
            name=self.stream,
            subjects=[f"{PREFIX}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=replicas(),
            duplicate_window=120.0,
        )
        log.info("relay: creating stream %s (subjects %s.>)", self.stream, PREFIX)
        return await self.js.add_stream(config)

    def _messages(self, conn: psycopg.Connection[Any], after: int, owned: bool) -> list[Message]:
        """The messages of a page of events after `after`. With `owned`, the page ends
        before the first event whose owner the read side does not know yet: a provider,
        account or post it has not applied the creation of. An owner never changes, so
        the events about known ones (most: an account's sanctions come long after its
        registration) go out without waiting for the projector to reach them."""
        page = log_page(conn, self.events_table, after, self.page_size)
        codes = checkpoint.owners(conn, list({n.originator_id for n in page}))
        if owned:
            ready = checkpoint.owners_ready(conn)
            for i, n in enumerate(page):
                if n.originator_id not in codes and n.id > ready:
                    page = page[:i]
                    break
        if not page:
            return []
        mapper = self.ledger.mapper
        events = [LoggedEvent.from_notification(n, mapper.to_domain_event(n)) for n in page]
        sealed = checkpoint.sealed_sizes(conn, [e.position for e in events])
        return [
            self._message(e, codes.get(e.originator_id), sealed.get(e.position)) for e in events
        ]

    def _message(self, event: LoggedEvent, code: str | None, sealed: int | None) -> Message:
        data = body.body(event)
        headers = body.headers(event, sealed)
        limit = self.nc.max_payload if self.nc is not None else 1 << 20
        if len(data) + sum(len(k) + len(v) + 4 for k, v in headers.items()) + 64 > limit:
            headers[body.OMITTED] = str(len(data))
            data = body.without_payload(event)
        return Message(event.position, subject(code, event.type), data, headers)

    async def _publish(
        self, messages: list[Message], at: Checkpoint, progress: Progress
    ) -> tuple[Checkpoint, Progress, Exception | None]:
        """Publish with at most `window` unacknowledged; the checkpoint of the longest
        acknowledged prefix, the figures, and what stopped it short (or None)."""
        futures: list[asyncio.Future[PubAck]] = []
        error: Exception | None = None
        try:
            for i, m in enumerate(messages):
                headers = {**m.headers, body.EXPECTED_LAST_SEQUENCE: str(at.sequence + i)}
                futures.append(
                    await self.js.publish_async(
                        m.subject, m.body, wait_stall=ACK_TIMEOUT_S, headers=headers
                    )
                )
        except Exception as e:  # the connection closed, or the window stalled
            error = e
        results = await _acks(futures)
        done, published, duplicates = at, 0, 0
        for m, ack in zip(messages, results, strict=False):
            if not isinstance(ack, PubAck) or ack.seq != done.sequence + 1:
                error = PublishFailed(f"position {m.position}: {_describe(ack)}")
                break
            done = Checkpoint(m.position, ack.seq)
            duplicates += bool(ack.duplicate)
            published += not ack.duplicate
        else:
            if error is not None:
                error = PublishFailed(f"publishing stopped: {one_line(error)}")
        return (
            done,
            Progress(published, duplicates, progress.reconciled, progress.stream_bytes),
            error,
        )

    # ----- following and rebuilding ------------------------------------------------

    async def follow(self, stop: asyncio.Event, on_ready: Callable[[], None] | None = None) -> None:
        """Relay until `stop` is set; recover from lost connections with backoff."""
        backoff = 0.1
        while not stop.is_set():
            try:
                await self.open()
                while not stop.is_set():
                    if await self.step() == 0:
                        if on_ready is not None:
                            on_ready()
                            on_ready = None
                        await self._idle(stop)
                    backoff = 0.1
            except psycopg.errors.LockNotAvailable:
                log.info("relay: stream %s is relayed by another relay; waiting", self.stream)
                await _wait(stop, 0.5)
            except StreamLost as e:
                log.error("relay: %s", e)
                await _wait(stop, 5.0)
            except Exception as e:  # never die: log, reconnect with backoff, resume
                log.warning("relay: %s; again in %.1f s", one_line(e), backoff)
                if isinstance(e, psycopg.OperationalError) or self.nc is None:
                    await self._close_db()
                await _wait(stop, backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
        await self.close()

    async def _idle(self, stop: asyncio.Event) -> None:
        """Wait for the log to grow (LISTEN), or for the read side to catch up (poll)."""
        behind = await asyncio.to_thread(self._owners_behind)
        if behind:
            await _wait(stop, BEHIND_POLL_S)
            return
        if self._listener is None or self._listener.closed:
            self._listener = await psycopg.AsyncConnection.connect(
                self.database.conninfo, autocommit=True, application_name="ledger-relay-listen"
            )
            channel = sql.Identifier(self.ledger.store.channel_name)
            await self._listener.execute(sql.SQL("LISTEN {}").format(channel))
            return  # an event may have come before the LISTEN: look again
        async for _ in self._listener.notifies(timeout=IDLE_POLL_S, stop_after=1):
            pass

    def _owners_behind(self) -> bool:
        """Whether events wait for the read side to learn their owner (the step that
        came back empty left the log ahead of the checkpoint)."""
        return self._position() < self.ledger.head()

    async def rebuild(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Delete the stream, create it anew and relay the log from position zero into
        it (with the window of asynchronous publishes); the events relayed."""
        await self.open()
        conn = self.conn
        try:  # hold the checkpoint: no relay publishes while the stream is replaced
            await asyncio.to_thread(checkpoint.lock, conn, self.stream)
            with contextlib.suppress(NotFoundError):
                await self.js.delete_stream(self.stream)
            await self._create_stream()
            await asyncio.to_thread(checkpoint.reset, conn, self.stream)
            await asyncio.to_thread(conn.commit)
        except BaseException:
            await asyncio.to_thread(_rollback, conn)
            raise
        head = await asyncio.to_thread(self.ledger.head)
        total = 0
        while True:
            read = await self.step()
            total += read
            at = await asyncio.to_thread(self._position)
            if progress is not None:
                progress(at, head)
            if at >= head:
                return total
            if read == 0:
                await asyncio.sleep(BEHIND_POLL_S)  # the read side is behind the log

    def _position(self) -> int:
        conn = self.conn
        row = conn.execute(
            "SELECT position FROM relay_positions WHERE stream = %s", (self.stream,)
        ).fetchone()
        conn.rollback()
        return int(row[0]) if row else 0

    def expected(self, after: int) -> list[Message]:
        """The messages of the events after `after` as the relay would publish them now
        (a page; the read side's lag aside)."""
        try:
            return self._messages(self.conn, after, owned=False)
        finally:
            self.conn.rollback()


async def _acks(futures: list[asyncio.Future[PubAck]]) -> list[PubAck | BaseException]:
    if not futures:
        return []
    _, pending = await asyncio.wait(futures, timeout=ACK_TIMEOUT_S)
    for f in pending:
        f.cancel()
    results: list[PubAck | BaseException] = []
    for f in futures:
        if f.cancelled():
            results.append(TimeoutError("no acknowledgement in time"))
        elif f.exception() is not None:
            results.append(f.exception())  # type: ignore[arg-type]
        else:
            results.append(f.result())
    return results


def _describe(ack: PubAck | BaseException) -> str:
    if isinstance(ack, BaseException):
        return one_line(ack)
    return f"acknowledged as sequence {ack.seq} of {ack.stream}, out of turn"


def _rollback(conn: psycopg.Connection[Any]) -> None:
    with contextlib.suppress(psycopg.Error):  # a broken connection: follow() makes anew
        conn.rollback()


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _log_error(e: Exception) -> None:
    log.warning("relay: NATS: %s", one_line(e))


async def _disconnected() -> None:
    log.info("relay: NATS disconnected; reconnecting")
