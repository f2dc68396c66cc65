"""Logs: a line per request with its id (also `X-Request-Id`, and the id an INTERNAL
error names), operation, role, token id, duration and outcome; JSON lines with
LEDGER_LOG_FORMAT=json, for the ledger's own loggers too; and no token, real name or ID
number in any line, through a real `ledger serve`."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from api import logs
from api.auth import create_token
from ledger import Database, Ledger
from tests.api_server import ApiServer, free_port
from tests.cold import ColdProcess
from tests.test_metrics import ledger_serve
from tests.world import World

NAME, NUMBER = "Zhou Loggable-Person", "110105198001017777"
VERIFY = """mutation Verify($id: ID!, $key: String!, $name: String!, $number: String!) {
  verifyIdentity(input: {accountId: $id, realName: $name, idNumber: $number,
  method: "id_card"}, idempotencyKey: $key) { __typename ... on MutationError { code } } }"""
DISCLOSE = """mutation Disclose($id: ID!, $key: String!) { discloseIdentity(input: {
  accountId: $id, basis: "art. 6", caseReference: "CASE-9"}, idempotencyKey: $key) {
  __typename ... on DisclosedIdentity { realName idNumber }
  ... on MutationError { code } } }"""
AS_OF = 'query AsOf($id: ID!) { accountAsOf(id: $id, position: "1") { id } }'
ID = re.compile(r"[0-9a-f]{16}")
WRONG = "lt_" + "y" * 43  # shaped like a token, known to no one


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The JSON formatter on the root logger, as `LEDGER_LOG_FORMAT=json` installs it."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.ClientErrors())
    root, access, ledger_logger = (
        logging.getLogger(),
        logging.getLogger("ledger.api.access"),
        logging.getLogger("ledger"),
    )
    saved = (root.level, access.level, ledger_logger.level)
    root.addHandler(handler)
    access.setLevel(logging.INFO)
    ledger_logger.setLevel(logging.INFO)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        access.setLevel(saved[1])
        ledger_logger.setLevel(saved[2])


def lines(text: str) -> list[dict[str, Any]]:
    """Every line, each a JSON object."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def access(parsed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in parsed if line["logger"] == "ledger.api.access"]


def test_each_request_is_a_line_with_its_id_and_an_internal_error_names_it(
    server: ApiServer, ledger: Ledger, json_logs: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(ledger)
    account = world.account()
    server.settle()
    regulator = server.token("regulator")
    ok = server.post({"query": "query Who { providers { code } }"}, regulator)
    unknown = server.post({"query": "{ providers { code } }"}, "lt_not-a-token-at-all")

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the store fell over")

    monkeypatch.setattr(ledger, "account_at", broken)
    internal = server.post({"query": AS_OF, "variables": {"id": str(account)}}, regulator)
    error = internal.json()["errors"][0]
    assert error["extensions"]["code"] == "INTERNAL"
    assert error["extensions"]["requestId"] == internal.headers["x-request-id"]
    # A fault outside GraphQL: the 500 names the request too.
    monkeypatch.setattr(server.state, "fetch", broken)
    crashed = server.post({"query": "{ providers { code } }"}, regulator)
    assert crashed.status_code == 500
    assert crashed.headers["x-request-id"] in crashed.json()["errors"][0]["message"]
    monkeypatch.undo()
    # A WebSocket: the connection has an id, each operation `<id>-<n>`.
    with connect(server.ws_url, subprotocols=["graphql-transport-ws"], open_timeout=10) as ws:
        ws.send(json.dumps({"type": "connection_init", "payload": {"token": regulator}}))
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
        over = {"query": "query Over { providers { code } }"}
        ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": over}))
        assert json.loads(ws.recv(timeout=10))["type"] == "next"
        assert json.loads(ws.recv(timeout=10))["type"] == "complete"
        ws_id = ws.response.headers["x-request-id"] if ws.response else None

    parsed = lines(json_logs.getvalue())
    by_id = {line["request_id"]: line for line in access(parsed)}
    seen = by_id[ok.headers["x-request-id"]]
    token_id = seen["token_id"]
    assert ID.fullmatch(seen["request_id"]) and re.fullmatch(r"[0-9a-f]{12}", token_id)
    assert {k: seen[k] for k in ("transport", "method", "path", "status", "operation",
                                 "operation_type", "role", "outcome")} == {
        "transport": "http", "method": "POST", "path": "/graphql", "status": 200,
        "operation": "Who", "operation_type": "query", "role": "regulator", "outcome": "ok",
    }  # fmt: skip
    assert isinstance(seen["duration_ms"], (int, float)) and seen["duration_ms"] > 0
    assert by_id[unknown.headers["x-request-id"]]["outcome"] == "UNAUTHENTICATED"
    assert "role" not in by_id[unknown.headers["x-request-id"]]
    failed = by_id[internal.headers["x-request-id"]]
    assert (failed["outcome"], failed["operation"]) == ("INTERNAL", "AsOf")
    assert (by_id[crashed.headers["x-request-id"]]["outcome"], by_id[crashed.headers[
        "x-request-id"]]["status"]) == ("INTERNAL", 500)  # fmt: skip
    # The error line names the same request, with its traceback.
    (fault,) = [line for line in parsed if line["level"] == "ERROR"
                and line.get("request_id") == internal.headers["x-request-id"]]  # fmt: skip
    assert "RuntimeError: the store fell over" in fault["exception"]
    assert internal.headers["x-request-id"] in fault["message"]
    # The WebSocket connection and its operation.
    assert ws_id is not None and ID.fullmatch(ws_id)
    operation = by_id[f"{ws_id}-1"]
    assert (operation["transport"], operation["operation"], operation["role"]) == (
        "ws",
        "Over",
        "regulator",
    )
    connection = by_id[ws_id]
    assert (connection["method"], connection["role"], connection["outcome"]) == (
        "WS",
        "regulator",
        "ok",
    )
    assert regulator not in json_logs.getvalue()


def test_plain_text_by_default_and_values_kept_out_of_client_errors() -> None:
    formatter = logs.TextFormatter()
    record = logging.LogRecord(
        "ledger.api", logging.INFO, __file__, 1, "client error: %s",
        (f"Variable '$input' has invalid value: Expected value of type 'VerifyIdentityInput'"
         f" not to include unknown field 'idNumbr'. Found: {{'realName': '{NAME}',"
         f" 'idNumbr': '{NUMBER}'}}.",), None,
    )  # fmt: skip
    logs.ClientErrors().filter(record)
    line = formatter.format(record)
    assert "INFO ledger.api: client error: Variable '$input'" in line
    assert "'idNumbr'" in line and NAME not in line and NUMBER not in line
    token = "lt_" + "x" * 43
    accepted = '"WebSocket /graphql?token=%s" [accepted]'
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, accepted, (token,), None)
    assert token not in formatter.format(record)
    assert logs.log_config("INFO")["formatters"]["ledger"]["()"] == "api.logs.TextFormatter"


def test_no_token_name_or_id_number_in_any_line_of_ledger_serve(
    cold: ColdProcess, ledger: Ledger, database: Database, schema: str, tmp_path: Path
) -> None:
    world = World(ledger)
    unverified = world.account(verified=False)
    port, log = free_port(), tmp_path / "serve.log"
    url = f"http://127.0.0.1:{port}/graphql"
    with ledger_serve(cold, port, log, ("-v",), LEDGER_LOG_FORMAT="json"):
        with database.connect() as conn:
            tokens = {
                role: create_token(conn, schema, role, provider, "desk")[1]
                for role, provider in (("regulator", None), ("provider", world.provider))
            }
        ids: dict[str, str] = {}

        def post(name: str, body: Any, token: str | None = None, **kwargs: Any) -> Any:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            response = httpx.post(url, json=body, headers=headers, timeout=30, **kwargs)
            ids[name] = response.headers["x-request-id"]
            return response

        variables = {"id": str(unverified), "key": "v1", "name": NAME, "number": NUMBER}
        verified = post("verify", {"query": VERIFY, "variables": variables}, tokens["provider"])
        assert verified.json()["data"]["verifyIdentity"] == {"__typename": "CommandSuccess"}
        disclosed = post("disclose", {"query": DISCLOSE, "variables": {
            "id": str(unverified), "key": "d1"}}, tokens["regulator"])  # fmt: skip
        assert disclosed.json()["data"]["discloseIdentity"] == {
            "__typename": "DisclosedIdentity", "realName": NAME, "idNumber": NUMBER}  # fmt: skip
        # Mistakes that carry the name and number, and others.
        typo = {**variables, "key": "v2"}
        typo_query = VERIFY.replace("idNumber: $number", "idNumbr: $number")
        post("typo", {"query": typo_query, "variables": typo}, tokens["provider"])
        inline = VERIFY.replace("realName: $name, idNumber: $number",
                                f'realName: "{NAME}", idNumbr: "{NUMBER}"')  # fmt: skip
        post("inline", {"query": inline, "variables": variables}, tokens["provider"])
        post("bad input", {"query": VERIFY, "variables": {**variables, "number": int(NUMBER)}},
             tokens["provider"])  # fmt: skip
        post("refused", {"query": DISCLOSE, "variables": {"id": str(unverified), "key": "d2"}},
             tokens["provider"])  # fmt: skip
        post("no token", {"query": "{ providers { code } }"}, WRONG)
        got = httpx.get(url, params={"query": VERIFY, "variables": json.dumps(variables)},
                        headers={"Authorization": f"Bearer {tokens['provider']}"})  # fmt: skip
        assert got.status_code == 405
        ids["get mutation"] = got.headers["x-request-id"]
        ws_url = url.replace("http://", "ws://") + f"?token={tokens['regulator']}"
        with connect(ws_url, subprotocols=["graphql-transport-ws"], open_timeout=10) as ws:
            ws.send(json.dumps({"type": "connection_init", "payload": {"token": WRONG}}))
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        scraped = httpx.get(url.replace("/graphql", "/metrics"), timeout=10).text
        assert NAME not in scraped and NUMBER not in scraped

    text = log.read_text()
    parsed = lines(text)  # every line is JSON
    for line in parsed:
        assert {"time", "level", "logger", "message", "pid"} <= set(line), line
    loggers = {line["logger"] for line in parsed}
    assert {"ledger.api.access", "uvicorn.error"} <= loggers
    assert any(name.startswith("ledger.") and name != "ledger.api.access" for name in loggers)
    by_id = {line["request_id"]: line for line in access(parsed)}
    expected = {
        "verify": ("Verify", "provider", "ok"),
        "disclose": ("Disclose", "regulator", "ok"),
        "typo": ("Verify", "provider", "GRAPHQL_VALIDATION_FAILED"),
        "refused": ("Disclose", "provider", "ROLE_NOT_PERMITTED"),
        "get mutation": ("Verify", None, "METHOD_NOT_ALLOWED"),
    }
    for name, (operation, role, outcome) in expected.items():
        line = by_id[ids[name]]
        assert (line.get("operation"), line.get("role"), line["outcome"]) == (
            operation, role, outcome), (name, line)  # fmt: skip
        assert line["duration_ms"] >= 0 and ID.fullmatch(line["request_id"])
        if role:
            assert re.fullmatch(r"[0-9a-f]{12}", line["token_id"])
    assert by_id[ids["no token"]]["outcome"] == "UNAUTHENTICATED"
    assert by_id[ids["bad input"]]["outcome"] in ("BAD_USER_INPUT", "GRAPHQL_VALIDATION_FAILED")
    # Nothing personal, no token, anywhere.
    for secret in (NAME, NUMBER, *tokens.values(), WRONG):
        assert secret not in text, secret
    assert "Zhou" not in text and "7777" not in text
