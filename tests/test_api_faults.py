"""The API across database faults, on a PostgreSQL cluster of the module's own: backends
terminated, the server restarted fast and immediate, and stopped for a while. Clients see
answers or the typed, retryable STORAGE_UNAVAILABLE, never INTERNAL; /readyz answers
within a second in every state; live subscribers get every event exactly once; and the
server shuts down cleanly afterwards."""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from ledger import Database, Ledger
from tests.api_server import ApiServer, running_api
from tests.cluster import Cluster, own_cluster_fixtures
from tests.test_api_subscriptions import SANCTIONS, subscription
from tests.world import World

pytestmark = pytest.mark.timeout(240)

IMPOSE = """mutation($id: ID!, $key: String!) { imposeSanction(input: {accountId: $id,
  level: "warning", ruleIds: ["art.9"], reason: "r"}, idempotencyKey: $key) {
  __typename ... on CommandSuccess { position } ... on MutationError { code } } }"""
READ = "query($n: Int) { accounts(first: $n) { edges { node { id status } } } }"


cluster, database = own_cluster_fixtures()


@pytest.fixture
def api(ledger: Ledger, database: Database, schema: str, data_dir: Path) -> Iterator[ApiServer]:
    with running_api(ledger, database, schema) as running:
        yield running


def terminate_backends(cluster: Cluster) -> int:
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        ).fetchone()
    return int(row[0]) if row else 0


class Client:
    """A sequential client that classifies every answer."""

    def __init__(self, api: ApiServer, token: str, account: UUID) -> None:
        self.api, self.token, self.account = api, token, str(account)
        self.keys = itertools.count()
        self.outcomes: dict[str, int] = {}
        self.acknowledged: list[int] = []

    def _note(self, outcome: str) -> str:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        return outcome

    def read(self) -> str:
        response = self.api.post({"query": READ, "variables": {"n": next(self.keys) % 50 + 1}},
                                 self.token)  # fmt: skip
        return self._note(classify(response))

    def write(self, key: str | None = None) -> str:
        key = key or f"w{next(self.keys)}"
        response = self.api.post(
            {"query": IMPOSE, "variables": {"id": self.account, "key": key}}, self.token
        )
        outcome = classify(response)
        if outcome == "ok":
            result = response.json()["data"]["imposeSanction"]
            if result["__typename"] == "CommandSuccess":
                self.acknowledged.append(int(result["position"]))
            else:
                outcome = result["code"]
        return self._note(outcome)


def classify(response: httpx.Response) -> str:
    body = response.json()
    codes = [e.get("extensions", {}).get("code") for e in body.get("errors", [])]
    if response.status_code == 200 and not codes:
        return "ok"
    assert response.status_code in (200, 503), (response.status_code, body)
    assert codes == ["STORAGE_UNAVAILABLE"], body
    return "STORAGE_UNAVAILABLE"


def scene(api: ApiServer, ledger: Ledger) -> Client:
    world = World(ledger)
    account = world.account()
    api.settle()
    return Client(api, api.token("regulator"), account)


def test_terminated_backends_are_invisible_to_clients(
    api: ApiServer, ledger: Ledger, cluster: Cluster
) -> None:
    client = scene(api, ledger)
    for _ in range(5):
        assert terminate_backends(cluster) > 0
        assert client.read() == "ok"
        assert terminate_backends(cluster) > 0
        assert client.write() == "ok"
    assert client.outcomes == {"ok": 10}


def ready(api: ApiServer) -> tuple[int, float]:
    started = time.monotonic()
    response = httpx.get(api.url.removesuffix("/graphql") + "/readyz", timeout=5)
    return response.status_code, time.monotonic() - started


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_restart_answers_unavailable_then_recovers_within_two_seconds(
    api: ApiServer, ledger: Ledger, cluster: Cluster, mode: str
) -> None:
    client = scene(api, ledger)
    assert client.write() == "ok" and ready(api)[0] == 200
    cluster.stop(mode)
    probes = [ready(api) for _ in range(3)]
    assert all(code == 503 and seconds < 1.0 for code, seconds in probes), probes
    assert client.read() == "STORAGE_UNAVAILABLE"
    assert client.write() == "STORAGE_UNAVAILABLE"
    cluster.start()
    back = time.monotonic()
    while client.read() != "ok":
        assert time.monotonic() - back < 2.0, client.outcomes
    while client.write() != "ok":
        assert time.monotonic() - back < 2.0, client.outcomes
    while (probe := ready(api))[0] != 200:
        assert probe[1] < 1.0
        assert time.monotonic() - back < 5.0, "readyz did not recover"
        time.sleep(0.1)
    assert "INTERNAL" not in client.outcomes


@pytest.fixture
def patient_sign_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sign-in with the database down waits out the pool's timeout: longer than the
    suite's 2 s for connection_init (read when the app is made)."""
    monkeypatch.setenv("LEDGER_WS_INIT_TIMEOUT", "10")


def test_a_websocket_signing_in_while_the_database_is_down_is_told_to_retry(
    patient_sign_in: None, api: ApiServer, cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    token = api.token("regulator")  # before the outage: the sign-in's own lookup fails
    cluster.stop("fast")
    try:
        with connect(api.ws_url, subprotocols=["graphql-transport-ws"], open_timeout=10) as ws:
            ws.send(json.dumps({"type": "connection_init", "payload": {"token": token}}))
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
    finally:
        cluster.start()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1013, closed.value.rcvd
    assert closed.value.rcvd.reason.startswith("STORAGE_UNAVAILABLE: "), closed.value.rcvd
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_a_retried_write_is_recorded_once(
    api: ApiServer, ledger: Ledger, cluster: Cluster
) -> None:
    client = scene(api, ledger)
    head = ledger.head()
    cluster.stop("immediate")
    assert client.write("same") == "STORAGE_UNAVAILABLE"
    cluster.start()
    deadline = time.monotonic() + 10
    while client.write("same") != "ok":
        assert time.monotonic() < deadline
    assert client.write("same") == "ok"  # the retry replays the first answer
    assert len(set(client.acknowledged)) == 1
    assert [e.type for e in ledger.read_log(head)] == ["Account.SanctionImposed"]


def test_live_subscribers_get_every_event_once_across_faults(
    ledger: Ledger, database: Database, schema: str, data_dir: Path, cluster: Cluster,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.WARNING)
    with running_api(ledger, database, schema) as api:
        client = scene(api, ledger)
        after = str(ledger.head())
        received: list[dict[str, Any]] = []
        closed: list[Any] = []

        def listen() -> None:
            with subscription(api, client.token, SANCTIONS, after=after) as ws:
                while True:
                    try:
                        message = json.loads(ws.recv(timeout=30))
                    except (TimeoutError, ConnectionClosed):
                        return  # the server shuts down: 1012, service restart
                    if message["type"] != "next":
                        closed.append(message)
                        return
                    received.append(message["payload"]["data"]["sanctionEvents"])

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        for fault in ("terminate", "fast", "immediate", "terminate"):
            for _ in range(3):
                assert client.write() == "ok"
            if fault == "terminate":
                terminate_backends(cluster)
            else:
                cluster.restart(fault)
            deadline = time.monotonic() + 10
            while client.write() != "ok":
                assert time.monotonic() < deadline
        deadline = time.monotonic() + 15
        while len(received) < len(client.acknowledged) and not closed:
            assert time.monotonic() < deadline, (len(received), len(client.acknowledged))
            time.sleep(0.05)
        assert closed == []
        positions = [int(r["position"]) for r in received]
        assert positions == sorted(set(positions))  # in order, none twice
        assert positions == client.acknowledged  # none missed
    listener.join(10)
    shutdown = [r for r in caplog.records if "shutdown failed" in r.getMessage().lower()]
    assert shutdown == []
