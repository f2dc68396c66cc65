"""`ledger relay`: the log into a real nats-server's JetStream, exactly once, in order,
one subject per provider, aggregate and event type; read back with nats-py."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.js.api import StreamConfig

from api.relay.relay import Relay
from ledger import Database, Ledger
from projections.runner import Projector
from projections.sealer import Sealer
from tests.nats_server import NatsServer
from tests.relay_helpers import STREAM, assert_stream_equals_log, read_stream
from tests.world import World


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer(tmp_path / "nats") as server:
        yield server


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


def test_a_checkpoint_lost_past_the_duplicate_window_yields_no_duplicate(
    ledger: Ledger, database: Database, projector: Projector, reader: object,
    nats_server: NatsServer,
) -> None:  # fmt: skip
    """The stream's messages were acknowledged but the checkpoint went back (a database
    restored from a backup, a commit lost): once the server's duplicate window has passed,
    only the reconciliation with the stream's last message keeps out duplicates."""
    asyncio.run(create_stream(nats_server.url, duplicate_window=0.5))
    world = World(ledger)
    for _ in range(3):
        world.sanction(world.account(), "warning")
    projector.catch_up()
    relay_once(ledger, database, nats_server.url)
    before = read_stream(nats_server.url)
    with database.connect(projector.schema, autocommit=True) as conn:
        conn.execute("UPDATE relay_positions SET position = 0, sequence = 0")
    time.sleep(1.0)  # past the window: the server would store a re-publish
    world.sanction(world.account(), "warning")
    projector.catch_up()
    relay_once(ledger, database, nats_server.url)
    assert_stream_equals_log(nats_server.url, ledger)
    assert len(read_stream(nats_server.url)) > len(before)
    with database.connect(projector.schema, autocommit=True) as conn:
        row = conn.execute("SELECT reconciled, duplicates FROM relay_positions").fetchone()
    assert row == (len(before), 0)


async def create_stream(url: str, duplicate_window: float) -> None:
    nc = await nats.connect(url)
    await nc.jetstream().add_stream(
        StreamConfig(name=STREAM, subjects=["ledger.>"], duplicate_window=duplicate_window)
    )
    await nc.close()
