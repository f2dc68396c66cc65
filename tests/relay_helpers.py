"""What the relay's tests share: a relay or projector as a real `ledger` process, the
stream read back with nats-py, and the check that it equals the log."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nats

from ledger import Database, Ledger
from tests.conftest import TEST_KEY

ROOT = Path(__file__).resolve().parent.parent
STREAM = "LEDGER"


@dataclass(frozen=True)
class Stored:
    seq: int
    subject: str
    headers: dict[str, str]
    data: bytes


def env(database: Database, schema: str, data_dir: Path, nats_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "LEDGER_DATABASE_URL": database.conninfo,
        "LEDGER_SCHEMA": schema,
        "LEDGER_DATA_DIR": str(data_dir),
        "LEDGER_CIPHER_KEY": base64.b64encode(TEST_KEY).decode(),
        "LEDGER_NATS_URL": nats_url,
        "LEDGER_NATS_STREAM": STREAM,
        "PYTHONUNBUFFERED": "1",
    }


def ledger_process(environment: dict[str, str], *args: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "api.cli", *args], cwd=ROOT, env=environment,
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def read_stream(url: str, stream: str = STREAM) -> list[Stored]:
    """Every message of the stream, in sequence order, through an ordered consumer."""

    async def read() -> list[Stored]:
        nc = await nats.connect(url, max_reconnect_attempts=3)
        try:
            js = nc.jetstream()
            last = (await js.stream_info(stream)).state.last_seq
            found: list[Stored] = []
            if last == 0:
                return found
            sub = await js.subscribe("ledger.>", stream=stream, ordered_consumer=True)
            while len(found) < last:
                m = await sub.next_msg(timeout=10)
                found.append(Stored(m.metadata.sequence.stream, m.subject,
                                    dict(m.headers or {}), m.data))  # fmt: skip
            await sub.unsubscribe()
            return found
        finally:
            await nc.close()

    return asyncio.run(read())


def stream_size(url: str, stream: str = STREAM) -> int:
    async def size() -> int:
        nc = await nats.connect(url, max_reconnect_attempts=1, connect_timeout=1)
        try:
            return int((await nc.jetstream().stream_info(stream)).state.last_seq)
        finally:
            await nc.close()

    try:
        return asyncio.run(size())
    except Exception:
        return -1


def wait_for_stream(url: str, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while (found := stream_size(url)) < count:
        assert time.monotonic() < deadline, f"the stream holds {found} of {count} events"
        time.sleep(0.2)


def assert_stream_equals_log(url: str, ledger: Ledger) -> list[Stored]:
    """Event for event, in order, nothing extra: message k is the log's k-th event."""
    log = list(ledger.read_log())
    stored = read_stream(url)
    assert [s.seq for s in stored] == list(range(1, len(stored) + 1))
    positions = [int(s.headers["Ledger-Position"]) for s in stored]
    assert len(positions) == len(set(positions)), "a position twice"
    assert positions == [e.position for e in log]
    for s, e in zip(stored, log, strict=True):
        assert s.headers["Nats-Msg-Id"] == str(e.position)
        assert s.headers["Ledger-Type"] == e.type
        assert s.subject.endswith("." + e.type)
    return stored
