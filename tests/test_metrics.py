"""/metrics through a real server: the figures move with mutations, queries and
subscriptions; who may read them; and `ledger serve --workers 2` adding up its workers."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import ClientConnection, connect

from api.auth import create_token
from ledger import Database, Ledger
from ledger import commands as c
from tests.api_server import ApiServer, free_port
from tests.cold import ColdProcess
from tests.world import World

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

MARK = """mutation Mark($id: ID!, $key: String!) { markAccount(input: {accountId: $id},
  idempotencyKey: $key) { __typename ... on MutationError { code } } }"""
VERIFY = """mutation Verify($id: ID!, $key: String!, $name: String!, $number: String!) {
  verifyIdentity(input: {accountId: $id, realName: $name, idNumber: $number,
  method: "id_card"}, idempotencyKey: $key) { __typename ... on MutationError { code } } }"""
PROVIDERS = "query Providers { providers { code } }"
LIVE = """subscription Live($after: Position) { events(after: $after) { position } }"""


def metrics_url(url: str) -> str:
    return url.replace("/graphql", "/metrics")


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(url: str, **headers: str) -> Samples:
    response = httpx.get(metrics_url(url), headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Summed over the labels not given."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


@contextmanager
def subscribed(url: str, token: str, query: str, **variables: Any) -> Iterator[ClientConnection]:
    ws_url = url.replace("http://", "ws://")
    with connect(ws_url, subprotocols=["graphql-transport-ws"], open_timeout=10) as ws:
        ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": token}}))
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
        ws.send(json.dumps({"id": "1", "type": "subscribe",
                            "payload": {"query": query, "variables": variables}}))  # fmt: skip
        yield ws


def until(check: Any, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def publish(world: World, account: Any) -> c.PublishPost:
    ref = f"p{world.key()}"
    return c.PublishPost(
        actor=world.ops, idempotency_key=world.key(), account_id=account, ref=ref,
        origin="original", category="other", content_sha256="0" * 64,
    )  # fmt: skip


def test_the_figures_move_with_mutations_queries_and_subscriptions(
    server: ApiServer, ledger: Ledger
) -> None:
    world = World(ledger)
    account = world.account(category="news_agency")
    unverified = world.account(verified=False)
    regulator, auditor = server.token("regulator"), server.token("auditor")
    provider = server.token("provider", world.provider)
    server.settle()
    head = ledger.head()
    before = scrape(server.url)

    # Mutations: one recorded, one refused, and a verification with personal data.
    assert server.data(MARK, provider, id=str(account), key="m1")["markAccount"] == {
        "__typename": "CommandSuccess"
    }
    refused = server.data(MARK, auditor, id=str(account), key="m2")["markAccount"]
    assert refused["code"] == "ROLE_NOT_PERMITTED"
    verified = server.data(VERIFY, provider, id=str(unverified), key="v1", name="Metric Person",
                           number="110105198001010099")["verifyIdentity"]  # fmt: skip
    assert verified["__typename"] == "CommandSuccess"
    # Queries: the same twice, the second from the response cache.
    first = server.post({"query": PROVIDERS}, regulator)
    second = server.post({"query": PROVIDERS}, regulator)
    assert first.json() == second.json() and "errors" not in first.json()
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids) and ids[0] != ids[1]

    # Subscriptions: one keeps up; one with a buffer of 1 gets a batch of 2 and is cut off.
    broadcaster = server.state.extras["broadcaster"]
    after = str(ledger.head())
    with subscribed(server.url, auditor, LIVE, after=after) as roomy:
        world.post(account)
        assert json.loads(roomy.recv(timeout=15))["type"] == "next"
        broadcaster.buffer_limit = 1  # for subscribers from now on
        with subscribed(server.url, auditor, LIVE, after=str(ledger.head())) as small:
            live = until(lambda: value(scrape(server.url), "ledger_subscribers") >= 2)
            assert live, "both subscribers should be connected"
            during = scrape(server.url)
            ledger.submit([publish(world, account), publish(world, account)])
            message = json.loads(small.recv(timeout=15))
            errors = message["payload"]["errors"] if message["type"] == "next" else message[
                "payload"]  # fmt: skip
            assert errors[0]["extensions"]["code"] == "SLOW_SUBSCRIBER"
    broadcaster.buffer_limit = 10_000
    server.settle()
    after_all = until(
        lambda: (
            (s := scrape(server.url))
            and value(s, "ledger_subscribers") == value(before, "ledger_subscribers")
            and total(s, "ledger_requests_total", transport="ws")
            - total(before, "ledger_requests_total", transport="ws")
            >= 2
            and s
        )
    )
    assert after_all, "the subscribers did not go"

    def delta(name: str, **labels: str) -> float:
        return value(after_all, name, **labels) - value(before, name, **labels)

    # Commands by type and outcome, their latency, events appended.
    assert delta("ledger_commands_total", command="MarkAccount", outcome="ok") == 1
    assert delta("ledger_commands_total", command="MarkAccount", outcome="ROLE_NOT_PERMITTED") == 1
    assert delta("ledger_commands_total", command="VerifyIdentity", outcome="ok") == 1
    assert delta("ledger_command_duration_seconds_count", command="MarkAccount") == 2
    assert delta("ledger_command_duration_seconds_count", command="batch") == 1
    assert delta("ledger_events_appended_total") == ledger.head() - head
    # Requests by transport, type and outcome; latency by operation name.
    assert delta("ledger_requests_total", transport="http", type="mutation", outcome="ok") == 2
    assert delta("ledger_requests_total", transport="http", type="mutation",
                 outcome="ROLE_NOT_PERMITTED") == 1  # fmt: skip
    assert delta("ledger_requests_total", transport="http", type="query", outcome="ok") == 2
    assert delta("ledger_request_duration_seconds_count", transport="http", operation="Mark") == 2
    assert delta("ledger_request_duration_seconds_count", transport="http",
                 operation="Providers") == 2  # fmt: skip
    ws = total(after_all, "ledger_requests_total", transport="ws", type="subscription") - total(
        before, "ledger_requests_total", transport="ws", type="subscription"
    )
    assert ws == 2
    assert delta("ledger_requests_total", transport="ws", type="subscription",
                 outcome="SLOW_SUBSCRIBER") == 1  # fmt: skip
    # The response cache, the subscribers.
    assert delta("ledger_response_cache_lookups_total", result="hit") == 1
    assert delta("ledger_response_cache_lookups_total", result="miss") >= 1
    assert value(during, "ledger_subscribers") - value(before, "ledger_subscribers") == 2
    assert delta("ledger_subscribers_dropped_slow_total") == 1
    # The read side, as it stands: every projection and the sealer (merkle) at the head.
    assert value(after_all, "ledger_database_up") == 1
    assert value(after_all, "ledger_log_head") == ledger.head()
    projections = {
        dict(ls)["projection"]: v
        for (n, ls), v in after_all.items()
        if n == "ledger_projection_position"
    }
    assert {"accounts", "posts", "history", "merkle"} <= set(projections)
    assert set(projections.values()) == {ledger.head()}
    for name in projections:
        assert value(after_all, "ledger_projection_lag_events", projection=name) == 0
        assert value(after_all, "ledger_projection_lag_seconds", projection=name) == 0
        assert value(after_all, "ledger_projection_failures", projection=name) == 0
    # The pools.
    for pool in ("api", "event_store"):
        assert value(after_all, "ledger_db_pool_size", pool=pool) >= 1
        assert value(after_all, "ledger_db_pool_max", pool=pool) >= 1
        assert value(after_all, "ledger_db_pool_waiting", pool=pool) == 0
        assert value(after_all, "ledger_db_pool_in_use", pool=pool) >= 0

    # Nothing personal, no token.
    text = httpx.get(metrics_url(server.url), timeout=10).text
    for secret in ("Metric Person", "110105198001010099", regulator, auditor, provider):
        assert secret not in text


def test_a_projection_held_back_shows_its_lag(server: ApiServer, ledger: Ledger) -> None:
    world = World(ledger)
    account = world.account()
    server.settle()
    with server.database.connect(server.schema) as hold:
        # The projector and the sealer wait for these rows while the events come in.
        hold.execute("SELECT name FROM projection_positions FOR UPDATE")
        ledger.submit([publish(world, account) for _ in range(3)])
        samples = scrape(server.url)
        hold.rollback()
    assert value(samples, "ledger_log_head") == ledger.head()
    for name in ("posts", "accounts", "merkle"):
        assert value(samples, "ledger_projection_position", projection=name) == ledger.head() - 3
        assert value(samples, "ledger_projection_lag_events", projection=name) == 3
        assert value(samples, "ledger_projection_lag_seconds", projection=name) > 0
    server.settle()
    assert value(scrape(server.url), "ledger_projection_lag_events", projection="posts") == 0


def test_metrics_are_for_loopback_or_the_token_holder(server: ApiServer, monkeypatch: Any) -> None:
    url = metrics_url(server.url)
    proxied = httpx.get(url, headers={"X-Forwarded-For": "203.0.113.9"}, timeout=10)
    assert proxied.status_code == 403
    assert proxied.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert "x-request-id" in proxied.headers
    monkeypatch.setenv("LEDGER_METRICS_TOKEN", "metrics-token-for-the-test")
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        refused = httpx.get(url, headers=headers, timeout=10)
        assert refused.status_code == 401
        assert refused.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    allowed = httpx.get(
        url,
        headers={"Authorization": "Bearer metrics-token-for-the-test",
                 "X-Forwarded-For": "203.0.113.9"},
        timeout=10,
    )  # fmt: skip
    assert allowed.status_code == 200
    assert "ledger_requests_total" in allowed.text or "ledger_requests" in allowed.text


# ----- several workers ---------------------------------------------------------------


@contextmanager
def ledger_serve(
    cold: ColdProcess,
    port: int,
    log: Path,
    options: tuple[str, ...] = (),
    serve_options: tuple[str, ...] = (),
    **env: str,
) -> Iterator[subprocess.Popen[bytes]]:
    """`ledger OPTIONS serve --port PORT SERVE_OPTIONS` in a new process (its output in
    `log`), until /readyz says ready; SIGTERM at the end, and it must stop cleanly."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", *options, "serve", "--port", str(port),
             *serve_options],
            env={**cold.env, **env},
            stdout=out,
            stderr=out,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while not _ready(base):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode in (0, -signal.SIGTERM), log.read_text()
    assert "Traceback" not in log.read_text(), log.read_text()


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_serve_with_two_workers_adds_up_their_figures(
    cold: ColdProcess, database: Database, schema: str, tmp_path: Path
) -> None:
    with database.connect() as conn:
        _, token = create_token(conn, schema, "regulator", None, "metrics test")
    port, shared, requests = free_port(), tmp_path / "prometheus", 30
    url = f"http://127.0.0.1:{port}/graphql"
    with ledger_serve(cold, port, tmp_path / "serve.log", serve_options=("--workers", "2"),
                      PROMETHEUS_MULTIPROC_DIR=str(shared)):  # fmt: skip
        (folder,) = shared.iterdir()  # a fresh folder of this run's
        for _ in range(requests):  # each on a connection of its own: both workers answer
            response = httpx.post(
                url, json={"query": PROVIDERS}, headers={"Authorization": f"Bearer {token}"}
            )
            assert response.status_code == 200 and "errors" not in response.json()
        with subscribed(url, token, LIVE, after="0"):
            assert until(lambda: value(scrape(url), "ledger_subscribers") == 1)
            scrapes = [scrape(url) for _ in range(10)]
        workers = {m[1] for f in folder.iterdir() if (m := re.search(r"_(\d+)\.db$", f.name))}
        assert len(workers) == 2, sorted(f.name for f in folder.iterdir())
        for samples in scrapes:  # whichever worker answers, it counts both
            assert value(samples, "ledger_subscribers") == 1
            assert total(samples, "ledger_requests_total", transport="http", type="query") == (
                requests
            )
            assert total(samples, "ledger_request_duration_seconds_count",
                         operation="Providers") == requests  # fmt: skip
            assert value(samples, "ledger_db_pool_size", pool="api") >= 2  # one per worker
            assert total(samples, "ledger_gc_pause_seconds_count", generation="0") > 0
            assert value(samples, "ledger_projection_lag_events", projection="posts") == 0
    assert not folder.exists(), "ledger serve leaves no figures behind"
