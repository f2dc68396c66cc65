"""The API as real clients meet it: WebSocket sign-in in every form clients send (the
websockets library and the reference client, npm graphql-ws), subscriptions over HTTP
with graphql-sse's client, GET with HTTP caching, and an `extensions.code` on every
error in every transport, from the documented list."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from api.graphql.errors import ERROR_CODES
from ledger import Database, Ledger
from tests.api_server import ApiServer
from tests.test_api_conformance import run_node
from tests.world import World

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def scene(server: ApiServer, ledger: Ledger) -> tuple[str, World]:
    world = World(ledger)
    account = world.account()
    for _ in range(3):
        world.sanction(account, "warning")
    server.settle()
    return server.token("regulator"), world


def sign_in(server: ApiServer, payload: Any, header: str | None = None) -> dict[str, Any]:
    """connection_init with this payload; the answer, or the close code and reason."""
    headers = {"Authorization": header} if header else None
    with connect(server.ws_url, subprotocols=["graphql-transport-ws"],
                 additional_headers=headers, open_timeout=10) as ws:  # fmt: skip
        init: dict[str, Any] = {"type": "connection_init"}
        if payload != "absent":
            init["payload"] = payload
        ws.send(json.dumps(init))
        try:
            return dict(json.loads(ws.recv(timeout=10)))
        except ConnectionClosed as closed:
            assert closed.rcvd is not None, "closed without a code (1006)"
            return {"closed": closed.rcvd.code, "reason": closed.rcvd.reason}


ACCEPTED = {
    "authorization": lambda t: ({"authorization": f"Bearer {t}"}, None),
    "Authorization": lambda t: ({"Authorization": f"Bearer {t}"}, None),
    "no scheme": lambda t: ({"authorization": t}, None),
    "Authorization, no scheme": lambda t: ({"Authorization": t}, None),
    "token": lambda t: ({"token": t}, None),
    "headers": lambda t: ({"headers": {"Authorization": f"Bearer {t}"}}, None),
    "upgrade header, no payload": lambda t: ("absent", f"Bearer {t}"),
    "upgrade header, null": lambda t: (None, f"Bearer {t}"),
    "upgrade header, {}": lambda t: ({}, f"Bearer {t}"),
}


@pytest.mark.parametrize("form", ACCEPTED)
def test_websocket_sign_in_accepts_what_clients_send(
    server: ApiServer, scene: tuple[str, World], form: str
) -> None:
    payload, header = ACCEPTED[form](scene[0])
    assert sign_in(server, payload, header) == {"type": "connection_ack"}


REFUSED = {
    "no payload": ("absent", None),
    "null": (None, None),
    "{}": ({}, None),
    "bad token": ({"authorization": "Bearer lt_nope"}, None),
    "bad upgrade header": ({}, "Bearer lt_nope"),
    "not an object": ("Bearer x", None),
    "token not a string": ({"token": 7}, None),
}


@pytest.mark.parametrize("form", REFUSED)
def test_websocket_sign_in_refuses_with_4401_and_a_reason(server: ApiServer, form: str) -> None:
    got = sign_in(server, *REFUSED[form])
    assert got["closed"] == 4401 and got["reason"].startswith("UNAUTHENTICATED"), got


@pytest.mark.parametrize("form", ["authorization", "Authorization", "bare", "token", "headers",
                                  "upgrade"])  # fmt: skip
def test_the_reference_websocket_client_signs_in(
    server: ApiServer, scene: tuple[str, World], form: str
) -> None:
    lines = run_node("ws_client.mjs", server.ws_url, form, scene[0], "3")
    events = [line["data"]["sanctionEvents"] for line in lines if "data" in line]
    assert len(events) == 3 and lines[-1] == {"done": True}, lines


def test_the_reference_websocket_client_is_refused_once(server: ApiServer) -> None:
    lines = run_node("ws_client.mjs", server.ws_url, "token", "lt_nope", "1")
    assert lines[0]["closed"] == 4401 and "UNAUTHENTICATED" in lines[0]["reason"]


def test_subscriptions_over_server_sent_events_resume_from_a_cursor(
    server: ApiServer, scene: tuple[str, World]
) -> None:
    token, _world = scene
    first = run_node("sse_client.mjs", server.url, token, "", "2")
    positions = [int(line["data"]["sanctionEvents"]["position"]) for line in first]
    assert len(positions) == 2
    resumed = run_node("sse_client.mjs", server.url, token, str(positions[-1]), "1")
    (third,) = [int(line["data"]["sanctionEvents"]["position"]) for line in resumed]
    assert positions[0] < positions[1] < third


def test_server_sent_events_by_hand(server: ApiServer, scene: tuple[str, World]) -> None:
    token = scene[0]
    body = {"query": "subscription { sanctionEvents { position } }"}
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    with httpx.stream("POST", server.url, json=body, headers=headers, timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = []
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
            if len(events) == 3:
                break
    assert all("sanctionEvents" in e["data"] for e in events)
    # A query streams too: one `next`, then `complete`.
    once = httpx.post(server.url, json={"query": "{ providers { code } }"}, headers=headers)
    assert once.text.startswith("event: next\ndata: {")
    assert once.text.endswith("event: complete\ndata: \n\n")


def test_a_subscription_over_plain_http_is_a_typed_error(
    server: ApiServer, scene: tuple[str, World]
) -> None:
    query = {"query": "subscription { sanctionEvents { position } }"}
    got = server.post(query, scene[0]).json()
    assert got["errors"][0]["extensions"]["code"] == "SUBSCRIPTION_NEEDS_STREAM"


def test_get_for_queries_with_http_caching(server: ApiServer, scene: tuple[str, World]) -> None:
    headers = {"Authorization": f"Bearer {scene[0]}"}
    params = {"query": "query($n: Int) { accounts(first: $n) { edges { node { id } } } }",
              "variables": json.dumps({"n": 2})}  # fmt: skip
    first = httpx.get(server.url, params=params, headers=headers)
    assert first.status_code == 200 and len(first.json()["data"]["accounts"]["edges"]) == 1
    assert first.headers["cache-control"] == "private, no-cache"
    assert "Authorization" in first.headers["vary"]
    again = httpx.get(server.url, params=params,
                      headers={**headers, "If-None-Match": first.headers["etag"]})  # fmt: skip
    assert again.status_code == 304 and again.content == b""
    mutation = {"query": 'mutation { markAccount(input: {accountId: "x"}, idempotencyKey: "k")'
                         " { __typename } }"}  # fmt: skip
    refused = httpx.get(server.url, params=mutation, headers=headers)
    assert refused.status_code == 405 and refused.headers["allow"] == "POST"
    assert refused.json()["errors"][0]["extensions"]["code"] == "METHOD_NOT_ALLOWED"


# ----- every error typed ---------------------------------------------------------------

MODERN = {"Accept": "application/graphql-response+json"}


def http_code(server: ApiServer, token: str | None, **request: Any) -> tuple[int, str]:
    method = request.pop("method", "POST")
    headers = {**request.pop("headers", {}), **({"Authorization": f"Bearer {token}"}
                                                if token else {})}  # fmt: skip
    response = httpx.request(method, server.url, headers=headers, timeout=10, **request)
    body = response.json()
    return response.status_code, body["errors"][0]["extensions"]["code"]


def triggers(server: ApiServer, token: str, world: World) -> dict[str, tuple[int, str]]:
    """A request for each code of the documented list that a client can cause at will."""

    def gql(query: str, who: str | None = token, **kw: Any) -> tuple[int, str]:
        return http_code(server, who, json={"query": query}, **kw)

    provider = server.token("provider", world.provider)
    return {
        "GRAPHQL_PARSE_FAILED": gql("{ providers {", headers=MODERN),
        "FORBIDDEN": gql("{ treeHead { treeSize } }", who=provider),
        "GRAPHQL_VALIDATION_FAILED": gql("{ nope }", headers=MODERN),
        "BAD_USER_INPUT": gql('{ account(id: "not-an-id") { id } }'),
        "UNAUTHENTICATED": gql("{ providers { code } }", who=None),
        "NOT_FOUND": gql('{ inclusionProof(position: "999999") { index } }'),
        "BAD_REQUEST": http_code(server, token, content=b"{nope",
                                 headers={"Content-Type": "application/json"}),
        "UNSUPPORTED_MEDIA_TYPE": http_code(server, token, content=b"{}"),
        "NOT_ACCEPTABLE": gql("{ providers { code } }", headers={"Accept": "image/png"}),
        "METHOD_NOT_ALLOWED": http_code(server, token, method="PUT"),
        "PAYLOAD_TOO_LARGE": http_code(server, token, content=b"x" * (2 << 20),
                                       headers={"Content-Type": "application/json"}),
        "SUBSCRIPTION_NEEDS_STREAM": gql("subscription { sanctionEvents { position } }"),
    }  # fmt: skip


# The server's own conditions, each provoked by a test of its own.
ELSEWHERE = {
    "PROJECTION_LAG": "tests/test_api_clients.py",
    "SLOW_SUBSCRIBER": "tests/test_api_subscriptions.py",
    "STORAGE_UNAVAILABLE": "tests/test_api_faults.py",
    "OVERLOADED": "tests/test_overload.py",
    "REPLICA_BEHIND": "tests/test_replica.py",
    "QUERY_TOO_COSTLY": "tests/test_compiled_reads.py",
    "INTERNAL": "tests/test_api_clients.py",
}


def test_every_error_code_is_documented_and_reachable(
    server: ApiServer, scene: tuple[str, World]
) -> None:
    documented = (ROOT / "docs" / "api.md").read_text()
    assert [c for c in ERROR_CODES if f"`{c}`" not in documented] == []
    reached = triggers(server, *scene)
    assert {code: got for code, (_, got) in reached.items() if got != code} == {}
    assert set(reached) | set(ELSEWHERE) == set(ERROR_CODES)
    for code, where in ELSEWHERE.items():
        assert f'"{code}"' in (ROOT / where).read_text(), (code, where)


def test_errors_over_the_websocket_carry_codes_and_keep_the_connection(
    server: ApiServer, scene: tuple[str, World]
) -> None:
    with connect(server.ws_url, subprotocols=["graphql-transport-ws"], open_timeout=10) as ws:
        ws.send(json.dumps({"type": "connection_init", "payload": {"token": scene[0]}}))
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
        after = "subscription($a: Position) { sanctionEvents(after: $a) { position } }"
        for n, (query, variables, code) in enumerate((
            ("subscription { sanctionEvents {", {}, "GRAPHQL_PARSE_FAILED"),
            ("subscription { sanctionEvents { nope } }", {}, "GRAPHQL_VALIDATION_FAILED"),
            ('subscription { sanctionEvents(after: "x") { position } }', {},
             "GRAPHQL_VALIDATION_FAILED"),
            (after, {"a": "x"}, "BAD_USER_INPUT"),
        )):  # fmt: skip
            payload = {"query": query, "variables": variables}
            ws.send(json.dumps({"id": str(n), "type": "subscribe", "payload": payload}))
            message = json.loads(ws.recv(timeout=10))
            assert message["type"] == "error", message
            assert message["payload"][0]["extensions"]["code"] == code, message
        ws.send(json.dumps({"id": "ok", "type": "subscribe",
                            "payload": {"query": "subscription { sanctionEvents { position } }"}}))
        assert json.loads(ws.recv(timeout=10))["type"] == "next"


def test_client_mistakes_are_logged_without_stack_traces(
    server: ApiServer, scene: tuple[str, World], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    triggers(server, *scene)
    sign_in(server, {"token": "lt_nope"})
    serious = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert serious == [], [(r.name, r.getMessage()[:200]) for r in serious]
    assert not re.search(r"Traceback", caplog.text)


def test_an_unexpected_fault_is_internal_with_a_request_id_and_no_details(
    server: ApiServer, scene: tuple[str, World], monkeypatch: pytest.MonkeyPatch
) -> None:
    fetch = server.state.fetch

    async def broken(query: Any, params: Any = None) -> list[dict[str, Any]]:
        if "FROM accounts" in str(query):
            raise RuntimeError("secret detail")
        return await fetch(query, params)

    monkeypatch.setattr(server.state, "fetch", broken)
    # strawberry's path (resolvers read through state.fetch), not the compiled one
    monkeypatch.setattr(server.state.extras["compiler"], "enabled", False)
    got = server.gql("{ accounts { edges { node { id } } } }", scene[0])
    (error,) = got["errors"]
    assert error["extensions"]["code"] == "INTERNAL" and error["extensions"]["requestId"]
    assert "secret" not in json.dumps(got) and "Traceback" not in json.dumps(got)


def test_a_subscriber_the_read_side_cannot_serve_in_time_gets_projection_lag(
    server: ApiServer, scene: tuple[str, World], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER_PROJECTION_WAIT", "1")
    world = scene[1]
    provider = server.token("provider", world.provider)
    with connect(server.ws_url, subprotocols=["graphql-transport-ws"], open_timeout=10) as ws:
        ws.send(json.dumps({"type": "connection_init", "payload": {"token": provider}}))
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
        query = "subscription { sanctionEvents { position } }"
        ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        for _ in range(3):  # the replay, which the read side has projected
            assert json.loads(ws.recv(timeout=10))["type"] == "next"
        with server.database.connect(server.schema) as hold:
            # The projector cannot move while its position rows are held.
            hold.execute("SELECT * FROM projection_positions FOR UPDATE")
            world.sanction(world.account(), "warning")
            message = json.loads(ws.recv(timeout=20))
        code = message["payload"]["errors"][0]["extensions"]["code"]
        assert code == "PROJECTION_LAG"


def test_readiness_before_the_projector_has_set_up_its_tables(
    ledger: Ledger, database: Database, schema: str, data_dir: Path
) -> None:
    from starlette.testclient import TestClient

    from api.app import create_app

    with TestClient(create_app(database, ledger, schema)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "no projections"


def test_readiness_when_only_the_sealer_has_set_up(
    ledger: Ledger, database: Database, schema: str, data_dir: Path
) -> None:
    """`ledger serve` starts the sealer and the projector side by side; the sealer's
    position row alone must not make the read side look ready (a request then met
    `relation "disclosures" does not exist`)."""
    from starlette.testclient import TestClient

    from api.app import create_app
    from projections.sealer import Sealer

    sealer = Sealer(ledger, database, schema)
    sealer.setup()
    sealer.close()
    with TestClient(create_app(database, ledger, schema)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "no projections"
