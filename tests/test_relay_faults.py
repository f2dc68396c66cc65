"""The relay exactly once across faults: thousands of events written while `ledger relay`
processes are SIGKILLed at random, nats-server is restarted twice and PostgreSQL once; two
relays at once; a stream deleted and rebuilt. Afterwards the stream equals the log."""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import psycopg
import pytest

from ledger import Database, Ledger
from ledger import commands as c
from tests.cluster import Cluster, own_cluster_fixtures
from tests.nats_server import NatsServer
from tests.relay_helpers import (
    assert_stream_equals_log,
    env,
    ledger_process,
    read_stream,
    stream_size,
    wait_for_stream,
)
from tests.world import REGULATOR, World

cluster, database = own_cluster_fixtures()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer(tmp_path / "nats") as server:
        yield server


class Writer:
    """Sanctions written from a thread until stopped, each retried with its idempotency key
    through a lost connection or a restarting server."""

    def __init__(self, ledger: Ledger, accounts: list[UUID]) -> None:
        self.ledger = ledger
        self.accounts = accounts
        self.written = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            command = c.ImposeSanction(
                actor=REGULATOR, idempotency_key=f"w{n}", account_id=self.accounts[n % 3],
                level="warning", rule_ids=("art.9",), reason="breach",
            )  # fmt: skip
            try:
                self.ledger.execute(command)
            except Exception:  # the database is restarting: the same key again
                time.sleep(0.1)
                continue
            n += 1
            self.written = n

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)


def test_exactly_once_across_kills_and_restarts(
    ledger: Ledger, database: Database, schema: str, cluster: Cluster,
    nats_server: NatsServer, tmp_path: Path,
) -> None:  # fmt: skip
    world = World(ledger)
    accounts = [world.account() for _ in range(3)]
    environment = env(database, schema, tmp_path, nats_server.url)
    logs = tmp_path / "processes.log"
    projector = ledger_process(environment, "project", "--only", "projector", log=logs)
    relay = ledger_process(environment, "relay", log=logs)
    rng = random.Random(22)
    kills = 0
    try:
        with Writer(ledger, accounts) as writer:
            faults = ["kill"] * 14
            faults[3], faults[7], faults[10] = "nats", "postgres", "nats"
            for fault in faults:
                time.sleep(rng.uniform(0.3, 1.2))
                if fault == "kill":
                    busy(nats_server.url, rng)  # kill one at work, not one starting up
                    relay.send_signal(signal.SIGKILL)
                    relay.wait(10)
                    kills += 1
                    relay = ledger_process(environment, "relay", log=logs)
                elif fault == "nats":
                    nats_server.restart()
                else:
                    cluster.restart("fast")
            while writer.written < 2000:
                time.sleep(0.2)
        head = ledger.head()
        count = len(list(ledger.read_log()))
        wait_for_stream(nats_server.url, count, timeout=180)
        time.sleep(1)  # anything extra would come now
        assert head and kills >= 10
        stored = assert_stream_equals_log(nats_server.url, ledger)
        assert len(stored) >= 2000
    finally:
        for process in (relay, projector):
            process.send_signal(signal.SIGTERM)
            process.wait(30)
    assert "Traceback" not in logs.read_text(), logs.read_text()[-5000:]


def test_two_relays_at_once_take_turns(
    ledger: Ledger, database: Database, schema: str, nats_server: NatsServer, tmp_path: Path
) -> None:
    world = World(ledger)
    accounts = [world.account() for _ in range(3)]
    environment = env(database, schema, tmp_path, nats_server.url)
    logs = tmp_path / "processes.log"
    processes = [
        ledger_process(environment, "project", "--only", "projector", log=logs),
        ledger_process(environment, "relay", log=logs),
        ledger_process(environment, "relay", log=logs),
    ]
    try:
        with Writer(ledger, accounts) as writer:
            while writer.written < 600:
                time.sleep(0.2)
        wait_for_stream(nats_server.url, len(list(ledger.read_log())))
        time.sleep(1)
        assert_stream_equals_log(nats_server.url, ledger)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
    assert "Traceback" not in logs.read_text()


def test_a_deleted_stream_is_rebuilt_equal_to_the_log(
    ledger: Ledger, database: Database, schema: str, nats_server: NatsServer, tmp_path: Path
) -> None:
    world = World(ledger)
    for _ in range(5):
        world.sanction(world.account(), "warning")
    environment = env(database, schema, tmp_path, nats_server.url)
    logs = tmp_path / "processes.log"
    projector = ledger_process(environment, "project", "--only", "projector", log=logs)
    try:
        relay = ledger_process(environment, "relay", log=logs)
        wait_for_stream(nats_server.url, len(list(ledger.read_log())))
        relay.send_signal(signal.SIGTERM)
        relay.wait(30)
        delete_stream(nats_server.url)
        # The relay refuses a stream that lost what its checkpoint says it holds.
        refused = ledger_process(environment, "relay", log=logs)
        deadline = time.monotonic() + 90
        while "ledger relay --rebuild" not in logs.read_text():
            assert time.monotonic() < deadline, logs.read_text()[-3000:]
            time.sleep(0.2)
        assert stream_size(nats_server.url) == -1  # it made no new stream
        refused.send_signal(signal.SIGTERM)
        refused.wait(30)
        done = subprocess.run(
            [*ledger_command(), "relay", "--rebuild"], env=environment, capture_output=True,
            text=True, timeout=300, cwd=Path(__file__).parent.parent,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "equals the log" in done.stdout, done.stdout
        assert_stream_equals_log(nats_server.url, ledger)
        # A stream that differs is reported: one event more in the log than in the stream.
        world.sanction(world.account(), "warning")
        checked = subprocess.run(
            [*ledger_command(), "relay", "--check"], env=environment, capture_output=True,
            text=True, timeout=300, cwd=Path(__file__).parent.parent,
        )  # fmt: skip
        assert checked.returncode == 1 and "differs" in checked.stdout, checked.stdout
    finally:
        projector.send_signal(signal.SIGTERM)
        projector.wait(30)
    assert read_stream(nats_server.url)


def busy(url: str, rng: random.Random) -> None:
    """Return once the stream grows (a relay publishes), and a random moment after."""
    before = stream_size(url)
    deadline = time.monotonic() + 60
    while stream_size(url) <= before and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(rng.uniform(0, 0.3))


def ledger_command() -> list[str]:
    import sys

    return [sys.executable, "-m", "api.cli"]


def delete_stream(url: str) -> None:
    import asyncio

    import nats

    async def delete() -> None:
        nc = await nats.connect(url)
        await nc.jetstream().delete_stream("LEDGER")
        await nc.close()

    asyncio.run(delete())


_ = psycopg  # the module's connections are the cluster's
