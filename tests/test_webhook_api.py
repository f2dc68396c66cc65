"""Webhook endpoints over GraphQL: registration shows the secret once, queries show the
endpoint, its delivery state and attempts, and another provider's endpoints look exactly
like ones that do not exist."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import httpx
import pytest
import standardwebhooks

from ledger import Ledger
from ledger import commands as c
from tests.api_server import ApiServer
from tests.webhook_receiver import Receiver, Workers, wait_for, worker_env
from tests.world import World

REGISTER = """mutation($input: RegisterWebhookEndpointInput!, $key: String!) {
  registerWebhookEndpoint(input: $input, idempotencyKey: $key) {
    __typename
    ... on CommandSuccess { endpointId secret publicKey replayed position }
    ... on MutationError { code message }
  }
}"""
ENDPOINTS = """query($p: ID) { webhookEndpoints(providerId: $p) {
  id url eventTypes status publicKey
  state { cursor lag paused pausedReason }
  attempts(first: 2) { edges { node { webhookId attempt status latencyMs keyIds } }
                       pageInfo { hasNextPage endCursor } } } }"""
ENDPOINT = "query($id: ID!, $p: ID) { webhookEndpoint(id: $id, providerId: $p) { id url } }"
REPLAY = """mutation($input: ReplayWebhookEndpointInput!) {
  replayWebhookEndpoint(input: $input, idempotencyKey: "r1") {
    __typename ... on MutationError { code message } } }"""


@pytest.fixture(autouse=True)
def loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_WEBHOOK_ALLOW_LOOPBACK", "1")


@pytest.fixture
def workers(cold, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workers]:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("LEDGER_WEBHOOK_ALLOW_LOOPBACK", "1")
    w = Workers(worker_env(cold.env))
    yield w
    w.stop()


def test_register_query_and_deliver_over_graphql(
    server: ApiServer, ledger: Ledger, receiver: Receiver, workers: Workers
) -> None:
    world = World(ledger)
    account = world.account()
    token = server.token("provider", world.provider)
    variables: dict[str, Any] = {
        "input": {"providerId": str(world.provider), "url": receiver.url,
                  "description": "our back end"},
        "key": "reg-1",
    }  # fmt: skip
    first = server.data(REGISTER, token, **variables)["registerWebhookEndpoint"]
    assert first["__typename"] == "CommandSuccess" and first["secret"].startswith("whsec_")
    assert first["publicKey"].startswith("whpk_") and not first["replayed"]
    again = server.data(REGISTER, token, **variables)["registerWebhookEndpoint"]
    assert again["replayed"] and again["secret"] == first["secret"]
    assert again["endpointId"] == first["endpointId"]

    workers.start("deliver")
    world.sanction(account, "warning")
    world.sanction(account, "warning")
    wait_for(lambda: len(receiver.acked()) == 2, 30, "two deliveries")
    verifier = standardwebhooks.Webhook(first["secret"])
    for r in receiver.acked():
        verifier.verify(r.body, r.headers)

    def listed() -> dict[str, Any]:
        (endpoint,) = server.data(ENDPOINTS, token)["webhookEndpoints"]
        return endpoint  # type: ignore[no-any-return]

    wait_for(lambda: (listed()["state"] or {}).get("lag") == 0, 20, "state to show no lag")
    endpoint = listed()
    assert "secret" not in json.dumps(endpoint) and first["secret"] not in json.dumps(endpoint)
    assert endpoint["id"] == first["endpointId"] and endpoint["status"] == "active"
    assert endpoint["eventTypes"][0] == "Account.SanctionImposed"
    assert endpoint["state"]["cursor"] is not None and not endpoint["state"]["paused"]
    page = endpoint["attempts"]
    assert [e["node"]["status"] for e in page["edges"]] == [200, 200]
    ids = [e["node"]["webhookId"] for e in page["edges"]]
    assert ids == [r.headers["webhook-id"] for r in receiver.acked()]


def test_another_providers_endpoints_look_like_missing_ones(
    server: ApiServer, ledger: Ledger, receiver: Receiver
) -> None:
    world = World(ledger)
    regulator = server.token("regulator")
    rival = server.token("provider", world.rival)
    mine = server.token("provider", world.provider)
    variables = {"input": {"providerId": str(world.provider), "url": receiver.url}, "key": "k"}
    registered = server.data(REGISTER, mine, **variables)["registerWebhookEndpoint"]
    endpoint = registered["endpointId"]
    nowhere = str(uuid.uuid4())

    def answer(query: str, token: str, **v: Any) -> Any:
        result = server.gql(query, token, **v)
        for error in result.get("errors", []):
            error.pop("locations", None)
        return result

    # Listing: the other provider's id answers as an id that does not exist.
    theirs = answer(ENDPOINTS, rival, p=str(world.provider))
    missing = answer(ENDPOINTS, rival, p=nowhere)
    assert theirs["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert theirs == missing
    # One endpoint: null, as for an id that does not exist.
    assert answer(ENDPOINT, rival, id=endpoint)["data"] == {"webhookEndpoint": None}
    assert answer(ENDPOINT, rival, id=endpoint, p=str(world.provider)) == answer(
        ENDPOINT, rival, id=nowhere, p=nowhere
    )
    # Registering for, or replaying, the other provider's endpoint: as for missing ones.
    for_them = {"input": {"providerId": str(world.provider), "url": receiver.url}, "key": "x"}
    for_nobody = {"input": {"providerId": nowhere, "url": receiver.url}, "key": "y"}
    refused = answer(REGISTER, rival, **for_them)["data"]["registerWebhookEndpoint"]
    assert refused == answer(REGISTER, rival, **for_nobody)["data"]["registerWebhookEndpoint"]
    own = str(world.rival)
    replay_theirs = answer(
        REPLAY, rival, input={"providerId": own, "endpointId": endpoint, "fromPosition": 0}
    )
    replay_none = answer(
        REPLAY, rival, input={"providerId": own, "endpointId": nowhere, "fromPosition": 0}
    )
    assert replay_theirs["data"]["replayWebhookEndpoint"]["code"] == "WEBHOOK_ENDPOINT_NOT_FOUND"
    assert json.dumps(replay_theirs).replace(endpoint, "X") == json.dumps(replay_none).replace(
        nowhere, "X"
    )
    # The regulator and the owner see it; an auditor too.
    assert answer(ENDPOINT, regulator, id=endpoint, p=str(world.provider))["data"][
        "webhookEndpoint"
    ]["id"] == endpoint
    assert answer(ENDPOINT, mine, id=endpoint)["data"]["webhookEndpoint"]["id"] == endpoint
    auditor = server.token("auditor")
    assert answer(ENDPOINT, auditor, id=endpoint, p=str(world.provider))["data"][
        "webhookEndpoint"
    ]["id"] == endpoint


SUBSCRIBE = (
    "subscription { sanctionEvents { position originatorId originatorVersion type } }"
)


def test_webhook_ids_per_account_equal_the_subscriptions(
    server: ApiServer, ledger: Ledger, receiver: Receiver, workers: Workers
) -> None:
    world = World(ledger)
    accounts = [world.account() for _ in range(3)]
    theirs = world.account(ops=world.rival_ops)
    world.run(c.RegisterWebhookEndpoint, provider_id=world.provider, url=receiver.url)
    workers.start("deliver")
    for round_ in range(5):
        for account in accounts:
            sanction = world.sanction(account, "warning")
            if round_ == 2:
                world.run(c.AppealSanction, account_id=account, sanction_id=sanction,
                          grounds="no")  # fmt: skip
        world.sanction(theirs, "warning")
    total = 3 * 5 + 3
    token = server.token("provider", world.provider)
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    streamed = []
    with httpx.stream("POST", server.url, json={"query": SUBSCRIBE}, headers=headers,
                      timeout=30) as response:  # fmt: skip
        for line in response.iter_lines():
            if line.startswith("data: "):
                streamed.append(json.loads(line[6:])["data"]["sanctionEvents"])
            if len(streamed) == total:
                break
    wait_for(lambda: len(receiver.acked()) == total, 30, "every delivery")

    def per_account(items: list[dict[str, Any]]) -> dict[str, list[tuple[str, str]]]:
        out: dict[str, list[tuple[str, str]]] = {}
        for i in items:
            webhook_id = f"msg_{UUID(i['originatorId']).hex}_{i['originatorVersion']}"
            out.setdefault(i["originatorId"], []).append((str(i["position"]), webhook_id))
        return out

    delivered = [json.loads(r.body)["data"] for r in receiver.acked()]
    assert per_account(delivered) == per_account(streamed)
    assert {r.headers["webhook-id"] for r in receiver.acked()} == {
        w for v in per_account(streamed).values() for _, w in v
    }
    assert str(theirs) not in per_account(delivered)


def test_metrics_show_a_receivers_outage_and_readyz_does_not(
    server: ApiServer, ledger: Ledger, workers: Workers
) -> None:
    failing = Receiver(answer=lambda r: (500, {}))
    gone = Receiver(answer=lambda r: (410, {}))
    try:
        world = World(ledger)
        account = world.account()
        down = world.run(c.RegisterWebhookEndpoint, provider_id=world.provider, url=failing.url)
        world.run(c.RegisterWebhookEndpoint, provider_id=world.provider, url=gone.url)
        workers.start("deliver", LEDGER_WEBHOOK_RETRY_SCHEDULE="0,0.2")
        for _ in range(3):
            world.sanction(account, "warning")
        base = server.url.removesuffix("/graphql")

        def scrape() -> str:
            return httpx.get(f"{base}/metrics", timeout=10).text

        wait_for(lambda: "ledger_webhook_endpoints_paused 1.0" in scrape(), 30, "the pause")
        text = scrape()
        assert 'ledger_webhook_deliveries_count{outcome="http_5xx"}' in text
        assert 'ledger_webhook_deliveries_count{outcome="http_4xx"} 1.0' in text
        assert f'ledger_webhook_pending{{endpoint="{down["endpoint_id"]}"}} 3.0' in text
        assert f'ledger_webhook_oldest_pending_seconds{{endpoint="{down["endpoint_id"]}"}}' in text
        assert httpx.get(f"{base}/readyz", timeout=10).status_code == 200
    finally:
        failing.close()
        gone.close()
