"""`ledger relay`: the log into a real nats-server's JetStream, exactly once, in order,
one subject per provider, aggregate and event type; read back with nats-py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest

from api.relay.relay import Relay
from ledger import Database, Ledger
from projections.runner import Projector
from projections.sealer import Sealer
from tests.nats_server import NatsServer
from tests.world import World

STREAM = "LEDGER"


@dataclass(frozen=True)
class Stored:
    seq: int
    subject: str
    headers: dict[str, str]
    data: bytes


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer(tmp_path / "nats") as server:
        yield server


def read_stream(url: str, stream: str = STREAM) -> list[Stored]:
    """Every message of the stream, in sequence order, through an ordered consumer."""

    async def read() -> list[Stored]:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            last = (await js.stream_info(stream)).state.last_seq
            found: list[Stored] = []
            if last == 0:
                return found
            sub = await js.subscribe("ledger.>", stream=stream, ordered_consumer=True)
            while len(found) < last:
                m = await sub.next_msg(timeout=10)
                assert m.metadata.sequence.stream == len(found) + 1
                found.append(Stored(m.metadata.sequence.stream, m.subject, dict(m.headers or {}),
                                    m.data))  # fmt: skip
            await sub.unsubscribe()
            return found
        finally:
            await nc.close()

    return asyncio.run(read())


def relay_once(ledger: Ledger, database: Database, url: str) -> None:
    """Relay in this process until the stream holds the whole log."""

    async def run() -> None:
        relay = Relay(ledger, database, url, STREAM)
        await relay.open()
        try:
            while await relay.step():
                pass
        finally:
            await relay.close()

    asyncio.run(run())


def test_events_reach_their_subjects_with_their_headers(
    ledger: Ledger, database: Database, projector: Projector, schema: str,
    nats_server: NatsServer,
) -> None:  # fmt: skip
    world = World(ledger)
    account = world.account()
    world.sanction(account, "warning")
    projector.catch_up()
    sealer = Sealer(ledger, database, schema)
    sealer.setup()
    sealer.sign_now()
    sealer.close()
    world.sanction(account, "warning")
    projector.catch_up()
    relay_once(ledger, database, nats_server.url)
    log = list(ledger.read_log())
    stored = read_stream(nats_server.url)
    assert [int(s.headers["Ledger-Position"]) for s in stored] == [e.position for e in log]
    by_type = {s.headers["Ledger-Type"]: s for s in stored}
    assert by_type["Provider.Registered"].subject == "ledger.acme.Provider.Registered" or any(
        s.subject == "ledger.rival.Provider.Registered" for s in stored
    )
    assert by_type["Account.SanctionImposed"].subject == "ledger.acme.Account.SanctionImposed"
    for s, e in zip(stored, log, strict=True):
        assert s.headers["Nats-Msg-Id"] == str(e.position)
        assert s.headers["Ledger-Originator-Id"] == str(e.originator_id)
        assert s.headers["Ledger-Originator-Version"] == str(e.originator_version)
        shown = json.loads(s.data)
        assert (shown["position"], shown["type"]) == (str(e.position), e.type) or (
            shown["position"], shown["type"]) == (e.position, e.type)  # fmt: skip
    sealed = [s for s in stored if "Ledger-Sealed-Tree-Size" in s.headers]
    assert sealed and len(sealed) < len(stored)  # the last sanction came after the head
