"""`ledger relay --check`: the stream against the log, message for event, in order."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from psycopg import sql

from api.relay import body
from api.relay.relay import ACK_TIMEOUT_S, Message, Relay
from api.relay.subjects import PREFIX


@dataclass(frozen=True)
class Comparison:
    matched: int
    stream_messages: int
    log_events: int
    first_difference: str | None

    @property
    def equal(self) -> bool:
        return self.first_difference is None and self.stream_messages == self.log_events


async def compare(relay: Relay) -> Comparison:
    """Subject, position and body of each message against the log's event in its place
    (the sealed size may have come since); then whether both hold as many."""
    await relay.open()
    last = (await relay.js.stream_info(relay.stream)).state.last_seq
    sub = await relay.js.subscribe(f"{PREFIX}.>", stream=relay.stream, ordered_consumer=True)
    matched, after, difference = 0, 0, None
    try:
        while matched < last and difference is None:
            expected = await asyncio.to_thread(relay.expected, after)
            if not expected:
                break
            for want in expected[: last - matched]:
                got = await sub.next_msg(timeout=ACK_TIMEOUT_S)
                difference = _difference(want, got.subject, got.data, got.headers or {})
                if difference is not None:
                    break
                matched += 1
                after = want.position
    finally:
        await sub.unsubscribe()
    return Comparison(matched, last, await asyncio.to_thread(_log_size, relay), difference)


def _log_size(relay: Relay) -> int:
    conn = relay.conn
    try:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(relay.events_table)).fetchone()
    finally:
        conn.rollback()
    return int(row[0]) if row else 0


def _difference(want: Message, subject_: str, data: bytes, headers: dict[str, str]) -> str | None:
    got = headers.get(body.POSITION)
    if got != str(want.position):
        return f"position {want.position}: the stream has position {got} in its place"
    if subject_ != want.subject:
        return f"position {want.position}: subject {subject_!r}, not {want.subject!r}"
    if data != want.body:
        return f"position {want.position}: the body differs from the log's event"
    return None
