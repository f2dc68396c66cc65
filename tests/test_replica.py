"""Read replicas, on a real streaming replica of the module's own: a primary `Cluster` and
a hot standby made from it with pg_basebackup. The API writes to the primary and reads
the standby (LEDGER_READ_DATABASE_URL); a read carrying `X-Ledger-Min-Position` waits
for the standby to have replayed and projected past it, and answers "REPLICA_BEHIND"
when it has not within LEDGER_READ_WAIT (replay paused on the standby), then succeeds
once replay resumes. A read without the position may be stale."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest

from ledger import Database, Ledger
from tests.api_server import ApiServer, running_api
from tests.cluster import Cluster
from tests.test_api_subscriptions import SANCTIONS, subscription
from tests.world import World

pytestmark = pytest.mark.timeout(240)

IMPOSE = """mutation($id: ID!, $key: String!) { imposeSanction(input: {accountId: $id,
  level: "warning", ruleIds: ["art.9"], reason: "r"}, idempotencyKey: $key) {
  __typename ... on CommandSuccess { position } ... on MutationError { code } } }"""
SANCTIONS_OF = """query($id: ID!) { sanctions(filter: {accountId: $id}) {
  edges { node { id level } } } }"""
HEADER = "X-Ledger-Min-Position"


@pytest.fixture(scope="module")
def primary() -> Iterator[Cluster]:
    with Cluster() as running:
        yield running


@pytest.fixture(scope="module")
def standby(primary: Cluster) -> Iterator[Cluster]:
    replica = Cluster()
    replica.standby_of(primary)
    try:
        yield replica
    finally:
        replica.__exit__(None, None, None)


@pytest.fixture(scope="module")
def database(primary: Cluster) -> Iterator[Database]:
    with Database(primary.url) as db:
        yield db


@pytest.fixture
def api(
    ledger: Ledger,
    database: Database,
    schema: str,
    data_dir: Path,
    standby: Cluster,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[ApiServer]:
    monkeypatch.setenv("LEDGER_READ_DATABASE_URL", standby.url)
    monkeypatch.setenv("LEDGER_READ_WAIT", "1")
    with running_api(ledger, database, schema) as running:
        yield running


def on_standby(standby: Cluster, query: str) -> Any:
    with psycopg.connect(standby.url, autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    return row[0] if row else None


def impose(api: ApiServer, token: str, account: UUID, key: str) -> int:
    data = api.data(IMPOSE, token, id=str(account), key=key)["imposeSanction"]
    assert data["__typename"] == "CommandSuccess", data
    return int(data["position"])


def read(
    api: ApiServer, token: str, account: UUID, position: int | None = None, get: bool = False
) -> httpx.Response:
    headers = {HEADER: str(position)} if position is not None else {}
    if get:
        params = {"query": SANCTIONS_OF, "variables": json.dumps({"id": str(account)})}
        return httpx.get(
            api.url,
            params=params,
            headers={"Authorization": f"Bearer {token}", **headers},
            timeout=30,
        )
    return api.post(
        {"query": SANCTIONS_OF, "variables": {"id": str(account)}}, token, headers=headers
    )


def sanctions(response: httpx.Response) -> int:
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    return len(body["data"]["sanctions"]["edges"])


def readyz(api: ApiServer) -> tuple[int, dict[str, Any]]:
    response = httpx.get(api.url.removesuffix("/graphql") + "/readyz", timeout=5)
    return response.status_code, response.json()


def test_the_standby_is_a_hot_standby_of_the_primary(primary: Cluster, standby: Cluster) -> None:
    assert on_standby(standby, "SELECT pg_is_in_recovery()") is True
    with psycopg.connect(primary.url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_replication").fetchone()
    assert row is not None and row[0] == 1


def test_reads_go_to_the_standby_and_wait_for_a_written_position(
    api: ApiServer, ledger: Ledger, standby: Cluster
) -> None:
    state = api.state
    assert state.replica and f":{standby.port}" in state.pool.conninfo
    world = World(ledger)
    account = world.account()
    api.settle()
    token = api.token("regulator")

    # Read your writes: the mutation's position, then a read that waits for it.
    first = impose(api, token, account, "s1")
    assert sanctions(read(api, token, account, first)) == 1
    assert sanctions(read(api, token, account, first, get=True)) == 1
    status, report = readyz(api)
    assert status == 200, report
    assert report["replica"]["standby"] is True and report["replica"]["replay_paused"] is False

    on_standby(standby, "SELECT pg_wal_replay_pause()")
    try:
        second = impose(api, token, account, "s2")
        # Without the position the standby answers what it has: stale while paused.
        assert sanctions(read(api, token, account)) == 1
        # With it, a typed error within LEDGER_READ_WAIT (1 s), over POST and GET.
        for get in (False, True):
            started = time.monotonic()
            response = read(api, token, account, second, get=get)
            assert time.monotonic() - started < 3
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("application/json")
            body = response.json()
            assert body["data"] is None
            (error,) = body["errors"]
            assert error["extensions"]["code"] == "REPLICA_BEHIND", body
            assert error["extensions"]["details"]["position"] == str(second)
        status, report = readyz(api)
        assert status == 200, report
        assert report["replica"]["replay_paused"] is True
        assert report["replica"]["lag_events"] >= 1
    finally:
        on_standby(standby, "SELECT pg_wal_replay_resume()")
    assert sanctions(read(api, token, account, second)) == 2
    assert sanctions(read(api, token, account)) == 2

    bad = api.post({"query": "{ __typename }"}, token, headers={HEADER: "soon"})
    assert bad.status_code == 400 and bad.json()["errors"][0]["extensions"]["code"] == (
        "BAD_REQUEST"
    )


def test_a_provider_subscription_replays_through_the_standby(
    api: ApiServer, ledger: Ledger
) -> None:
    world = World(ledger)
    account = world.account()
    api.settle()
    regulator = api.token("regulator")
    position = impose(api, regulator, account, "s1")
    provider = api.token("provider", world.provider)
    # The replay reads the log on the primary and who owns what on the standby.
    with subscription(api, provider, SANCTIONS, after=0) as ws:
        message = json.loads(ws.recv(timeout=15))
        assert message["type"] == "next", message
        item = message["payload"]["data"]["sanctionEvents"]
        assert int(item["position"]) == position
        assert item["originatorId"] == str(account)


def test_without_a_replica_the_position_waits_on_the_primary(
    ledger: Ledger, database: Database, schema: str, data_dir: Path
) -> None:
    with running_api(ledger, database, schema) as api:
        assert not api.state.replica
        world = World(ledger)
        account = world.account()
        token = api.token("regulator")
        position = impose(api, token, account, "s1")
        assert sanctions(read(api, token, account, position)) == 1
        assert "replica" not in readyz(api)[1]
