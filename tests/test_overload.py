"""Overload degrades gracefully, and /readyz tells busy from down, against a real server
on a PostgreSQL cluster of the module's own (one test stops it).

The server runs with LEDGER_POOL_SIZE=1: two read connections and two executor threads.
A lock the test holds in the database keeps the admitted requests waiting inside it
(an ACCESS EXCLUSIVE lock on `api_tokens`, which every request reads first; an EXCLUSIVE
lock on the events table, which every command takes): the others must be refused with
OVERLOADED (503, Retry-After) within LEDGER_OVERLOAD_WAIT, and without a statement: one
they ran would be waiting on the lock too, and the lock's waiters are counted."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from websockets.sync.client import connect

from ledger import Database, Ledger
from tests.api_server import ApiServer, running_api
from tests.cluster import Cluster, own_cluster_fixtures
from tests.world import World

pytestmark = pytest.mark.timeout(240)

WAIT = 0.3  # LEDGER_OVERLOAD_WAIT
SLOTS = 2  # LEDGER_POOL_SIZE=1: read connections, and executor threads
# A refusal, as the server timed it (its access log), and as a client saw it on a loaded
# machine (two cores shared with other suites). Today: 2 s and more, STORAGE_UNAVAILABLE.
IN_TIME, CLIENT_IN_TIME = WAIT + 0.3, 2.0
READY_IN_TIME = 1.0  # /readyz, as the server timed it
READ = "query($n: Int) { accounts(first: $n) { edges { node { id status } } } }"
IMPOSE = """mutation($id: ID!, $key: String!) { imposeSanction(input: {accountId: $id,
  level: "warning", ruleIds: ["art.9"], reason: "r"}, idempotencyKey: $key) {
  __typename ... on CommandSuccess { position } ... on MutationError { code } } }"""


cluster, database = own_cluster_fixtures()


class Durations(logging.Handler):
    """Seconds the server took per request id, from its access log lines."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seconds: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and "request_id" in fields:
            self.seconds[fields["request_id"]] = fields["duration_ms"] / 1000

    def of(self, response: httpx.Response) -> float:
        """The server's time for a response (its line is written just after it is sent)."""
        deadline = time.monotonic() + 5
        while (found := self.seconds.get(response.headers["x-request-id"])) is None:
            assert time.monotonic() < deadline, "no access log line for the response"
            time.sleep(0.01)
        return found


SERVED = Durations()
# One client for every request: a client per request spends more on its TLS setup than
# the server on a refusal.
HTTP = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=100))


@pytest.fixture(autouse=True)
def access_log() -> Iterator[None]:
    logger = logging.getLogger("ledger.api.access")
    level = logger.level
    logger.setLevel(logging.DEBUG)  # /readyz's lines are DEBUG
    logger.addHandler(SERVED)
    try:
        yield
    finally:
        logger.removeHandler(SERVED)
        logger.setLevel(level)
        SERVED.seconds.clear()


@pytest.fixture
def api(
    ledger: Ledger, database: Database, schema: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ApiServer]:
    monkeypatch.setenv("LEDGER_POOL_SIZE", "1")
    monkeypatch.setenv("LEDGER_OVERLOAD_WAIT", str(WAIT))
    with running_api(ledger, database, schema) as running:
        yield running


@pytest.fixture
def scene(api: ApiServer, ledger: Ledger) -> tuple[str, str]:
    """A regulator's token and an account to sanction, projected."""
    account = World(ledger).account()
    api.settle()
    return api.token("regulator"), str(account)


# ----- the load ----------------------------------------------------------------------


def timed(call: Any, *args: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call(*args)
    return response, time.monotonic() - started


def post(api: ApiServer, body: dict[str, Any], token: str) -> httpx.Response:
    return HTTP.post(api.url, json=body, headers={"Authorization": f"Bearer {token}"})


def read(api: ApiServer, token: str) -> httpx.Response:
    return post(api, {"query": READ, "variables": {"n": 5}}, token)


def impose(api: ApiServer, token: str, account: str, key: str) -> httpx.Response:
    return post(api, {"query": IMPOSE, "variables": {"id": account, "key": key}}, token)


def readyz(api: ApiServer) -> tuple[int, dict[str, Any], float]:
    """The status, the report, and the seconds the server took (and the client under
    CLIENT_IN_TIME)."""
    started = time.monotonic()
    response = HTTP.get(api.url.removesuffix("/graphql") + "/readyz")
    assert time.monotonic() - started < CLIENT_IN_TIME
    return response.status_code, response.json(), SERVED.of(response)


def shed_count(api: ApiServer, gate: str, reason: str = "wait") -> float:
    text = HTTP.get(api.url.removesuffix("/graphql") + "/metrics").text
    found = re.search(rf'ledger_requests_shed_total{{gate="{gate}",reason="{reason}"}} (\S+)', text)
    return float(found[1]) if found else 0.0


def assert_overloaded(response: httpx.Response, seconds: float, within: float = IN_TIME) -> None:
    """Refused, in time: `seconds` as the client saw it, `within` as the server did."""
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "1"
    (error,) = response.json()["errors"]
    assert error["extensions"] == {"code": "OVERLOADED", "retryable": True, "retryAfter": 1}
    assert SERVED.of(response) < within, SERVED.of(response)
    assert seconds < within - IN_TIME + CLIENT_IN_TIME, seconds


def assert_ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    return body


# ----- the lock that keeps admitted requests busy ------------------------------------


@contextmanager
def locked(api: ApiServer, table: sql.Composable, mode: str) -> Iterator[int]:
    """Hold a lock on a table (in a transaction) until the block ends; yields the
    holder's backend pid."""
    with api.database.connect(api.schema) as conn:
        conn.execute(sql.SQL("LOCK TABLE {} IN {} MODE").format(table, sql.SQL(mode)))
        yield conn.info.backend_pid


def waiting_on(api: ApiServer, holder: int) -> int:
    """Backends waiting for a lock the holder has: statements that were run."""
    with psycopg.connect(api.database.conninfo, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
            [holder],
        ).fetchone()
    return int(row[0]) if row else 0


def until_waiting(api: ApiServer, holder: int, count: int) -> None:
    deadline = time.monotonic() + 15
    while waiting_on(api, holder) < count:
        assert time.monotonic() < deadline, f"fewer than {count} statements wait on the lock"
        time.sleep(0.02)


def until_executor_taken(api: ApiServer) -> None:
    deadline = time.monotonic() + 15
    while (pools := readyz(api)[1].get("pools")) and pools["executor"]["in_use"] < SLOTS:
        assert time.monotonic() < deadline, "the executor's threads are not all taken"
        time.sleep(0.02)
    if pools is None:  # a server that does not say: give it time
        time.sleep(1)


@contextmanager
def reads_held(api: ApiServer, token: str) -> Iterator[tuple[ThreadPoolExecutor, int]]:
    """Both read connections taken by requests waiting on a lock; the requests answer
    once the block ends."""
    with ThreadPoolExecutor(24) as pool:
        with locked(api, sql.Identifier("api_tokens"), "ACCESS EXCLUSIVE") as holder:
            admitted = [pool.submit(read, api, token) for _ in range(SLOTS)]
            until_waiting(api, holder, SLOTS)
            yield pool, holder
        for future in admitted:
            assert_ok(future.result(timeout=20))


# ----- the tests ------------------------------------------------------------------------


def test_reads_past_the_pool_are_refused_overloaded_in_time_without_a_statement(
    api: ApiServer, scene: tuple[str, str]
) -> None:
    token, _ = scene
    before = shed_count(api, "read")
    with reads_held(api, token) as (pool, holder):
        shed = [pool.submit(timed, read, api, token) for _ in range(10)]
        answers = [future.result(timeout=20) for future in shed]
        # A shed request that had run its statement would be waiting on the lock too.
        assert waiting_on(api, holder) == SLOTS
    for response, seconds in answers:
        assert_overloaded(response, seconds)
    assert shed_count(api, "read") - before == 10
    # The load has passed: reads are answered again.
    assert assert_ok(read(api, token))["data"]["accounts"]["edges"]


def test_past_the_queue_bound_a_request_is_refused_at_once(
    ledger: Ledger, database: Database, schema: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER_POOL_SIZE", "1")
    monkeypatch.setenv("LEDGER_OVERLOAD_WAIT", "3")
    monkeypatch.setenv("LEDGER_OVERLOAD_QUEUE", "2")
    with running_api(ledger, database, schema) as api:
        World(ledger).account()
        api.settle()
        token = api.token("regulator")
        before = {reason: shed_count(api, "read", reason) for reason in ("queue", "wait")}
        with reads_held(api, token) as (pool, holder):
            shed = [pool.submit(timed, read, api, token) for _ in range(8)]
            answers = [f.result(timeout=20) for f in shed]
            assert waiting_on(api, holder) == SLOTS
        for response, seconds in answers:
            assert_overloaded(response, seconds, within=3 + IN_TIME)
        # Two waited out their 3 s; the others found the queue full and were refused at once.
        # (The loop's timer and the access log's clock differ by a few hundred microseconds:
        # a wait of 3 s has been logged as 2.9998 s.)
        served = sorted(SERVED.of(response) for response, _ in answers)
        assert [s >= 3 - 0.01 for s in served] == [False] * 6 + [True] * 2, served
        assert all(s < IN_TIME - WAIT for s in served[:6]), served
        after = {reason: shed_count(api, "read", reason) for reason in ("queue", "wait")}
        assert (after["queue"] - before["queue"], after["wait"] - before["wait"]) == (6, 2)


def test_writes_past_the_executor_are_refused_overloaded_and_never_run(
    api: ApiServer, ledger: Ledger, scene: tuple[str, str]
) -> None:
    token, account = scene
    head = ledger.head()
    events = ledger.store.events_table
    with ThreadPoolExecutor(16) as pool:
        with locked(api, events, "EXCLUSIVE") as holder:
            admitted = [pool.submit(impose, api, token, account, f"a{i}") for i in range(SLOTS)]
            until_waiting(api, holder, 1)  # a command waits in the database
            until_executor_taken(api)  # and its peer waits for it on the other thread
            shed = [pool.submit(timed, impose, api, token, account, f"s{i}") for i in range(6)]
            answers = [future.result(timeout=20) for future in shed]
        acknowledged = [assert_ok(f.result(timeout=20)) for f in admitted]
    for response, seconds in answers:
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "1"
        body = response.json()
        assert body["data"] is None or body["data"]["imposeSanction"] is None, body
        assert body["errors"][0]["extensions"]["code"] == "OVERLOADED", body
        assert body["errors"][0]["extensions"]["retryable"] is True
        assert SERVED.of(response) < IN_TIME and seconds < CLIENT_IN_TIME, seconds
    assert all(a["data"]["imposeSanction"]["__typename"] == "CommandSuccess" for a in acknowledged)
    # Only the admitted commands were recorded; the shed ones, retried, are recorded once.
    assert len(list(ledger.read_log(head))) == SLOTS
    for i in range(6):
        assert_ok(impose(api, token, account, f"s{i}"))
    assert len(list(ledger.read_log(head))) == SLOTS + 6


def test_a_websocket_operation_is_refused_overloaded(
    api: ApiServer, scene: tuple[str, str]
) -> None:
    token, _ = scene
    with connect(api.ws_url, subprotocols=["graphql-transport-ws"], open_timeout=10) as ws:
        ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": token}}))
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
        with reads_held(api, token):
            started = time.monotonic()
            ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
                "query": READ, "variables": {"n": 5}}}))  # fmt: skip
            message = json.loads(ws.recv(timeout=20))
            seconds = time.monotonic() - started
        assert message["type"] == "next", message
        error = message["payload"]["errors"][0]
        assert error["extensions"]["code"] == "OVERLOADED", message
        assert error["extensions"]["retryAfter"] == 1
        assert seconds < CLIENT_IN_TIME, seconds
        assert json.loads(ws.recv(timeout=10))["type"] == "complete"
        # The load has passed: the same connection is answered again.
        ws.send(json.dumps({"id": "2", "type": "subscribe", "payload": {
            "query": READ, "variables": {"n": 5}}}))  # fmt: skip
        message = json.loads(ws.recv(timeout=20))
        assert "errors" not in message["payload"], message


def test_readyz_reports_the_pools_within_a_second_while_they_are_exhausted(
    api: ApiServer, scene: tuple[str, str]
) -> None:
    token, _ = scene
    stop = threading.Event()

    def load() -> None:  # requests arriving all along: some wait at the gate
        while not stop.is_set():
            read(api, token)

    probes = []
    with reads_held(api, token) as (pool, _):
        loaders: list[Future[None]] = [pool.submit(load) for _ in range(6)]
        time.sleep(0.2)
        for _ in range(5):
            probes.append(readyz(api))
            time.sleep(0.05)
        stop.set()
        for loader in loaders:
            loader.result(timeout=20)
    for status, report, seconds in probes:
        assert seconds < READY_IN_TIME, seconds
        assert status == 200, report  # busy, and ready: see docs/operations.md
        assert report["database"] is True and report["busy"] is True, report
        assert report["pools"]["read"]["in_use"] == report["pools"]["read"]["size"] == SLOTS
        assert report["pools"]["executor"]["size"] == SLOTS
    assert any(report["pools"]["read"]["waiting"] > 0 for _, report, _ in probes), probes
    status, report, _ = readyz(api)
    assert status == 200 and report["busy"] is False, report


def test_readyz_tells_busy_from_down(
    api: ApiServer, scene: tuple[str, str], cluster: Cluster
) -> None:
    token, _ = scene
    with reads_held(api, token):
        busy = readyz(api)
    assert busy[0] == 200 and busy[1]["database"] is True and busy[1]["busy"] is True, busy
    assert busy[2] < READY_IN_TIME
    cluster.stop("fast")
    try:
        down = [readyz(api) for _ in range(3)]
    finally:
        cluster.start()
    for status, report, seconds in down:
        assert seconds < READY_IN_TIME, seconds
        assert status == 503 and report["database"] is False, report
        assert report["busy"] is False and report["pools"]["read"]["size"] == SLOTS, report
    back = time.monotonic()
    while (probe := readyz(api))[0] != 200:
        assert probe[2] < READY_IN_TIME, probe
        assert time.monotonic() - back < 5.0, probe
        time.sleep(0.1)
    assert probe[1]["database"] is True
