"""The GraphQL API through a real server on loopback: queries, mutations, typed errors,
protection, and who may do what."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from ledger import Ledger
from ledger import commands as c
from tests.api_server import ApiServer
from tests.world import REGULATOR, World

ACCOUNT = """query($id: ID!) { account(id: $id) { id handle status verified postCount
  activeSanctions { level expiresAt } sanctionsByLevel { level count } } }"""
MARK = """mutation($id: ID!, $key: String!) { markAccount(input: {accountId: $id},
  idempotencyKey: $key) { __typename ... on CommandSuccess { position replayed accountId }
  ... on MutationError { code message } } }"""
IMPOSE = """mutation($id: ID!, $key: String!, $level: String!, $rules: [String!]!) {
  imposeSanction(input: {accountId: $id, level: $level, ruleIds: $rules, reason: "breach"},
  idempotencyKey: $key) { __typename ... on CommandSuccess { sanctionId position replayed }
  ... on MutationError { code message } } }"""


@pytest.fixture
def world(ledger: Ledger) -> World:
    return World(ledger)


def test_no_token_or_a_bad_token_is_unauthenticated(server: ApiServer) -> None:
    for token in (None, "lt_not-a-token"):
        result = server.gql("{ providers { code } }", token)
        assert result["data"] is None
        assert result["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


def test_a_revoked_token_is_refused(server: ApiServer) -> None:
    from api.auth import revoke_token

    token = server.token("regulator")
    assert server.gql("{ providers { code } }", token)["data"]["providers"] == []
    with server.database.connect() as conn:
        assert revoke_token(conn, server.schema, token)
    result = server.gql("{ providers { code } }", token)
    assert result["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


def test_account_query_reads_the_projection(server: ApiServer, world: World) -> None:
    account = world.account(handle="alpha")
    world.post(account)
    world.sanction(account, "updates_suspended", days=7)
    server.settle()
    got = server.data(ACCOUNT, server.token("regulator"), id=str(account))["account"]
    assert got["handle"] == "alpha"
    assert got["status"] == "UPDATES_SUSPENDED"
    assert got["verified"] is True and got["postCount"] == 1
    assert got["sanctionsByLevel"] == [{"level": "updates_suspended", "count": 1}]


def test_accounts_pages_with_opaque_cursors_and_filters(server: ApiServer, world: World) -> None:
    made = [world.account(handle=f"h{i}") for i in range(7)]
    world.run(
        c.GrantNewsPermission, REGULATOR, account_id=made[2], scope="reprint", basis="licence"
    )
    world.run(c.MarkAccount, account_id=made[2])
    server.settle()
    token = server.token("regulator")
    query = """query($after: String, $f: AccountFilter) { accounts(first: 3, after: $after,
      filter: $f) { edges { cursor node { id } } pageInfo { hasNextPage endCursor } } }"""
    seen: list[str] = []
    after = None
    while True:
        page = server.data(query, token, after=after)["accounts"]
        seen += [e["node"]["id"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == [str(a) for a in made]
    marked = server.data(query, token, f={"marked": True})["accounts"]["edges"]
    assert [e["node"]["id"] for e in marked] == [str(made[2])]
    suspended = server.data(query, token, f={"status": "UPDATES_SUSPENDED"})["accounts"]["edges"]
    assert suspended == []


def test_bad_cursors_ids_and_page_sizes_are_clear_errors(server: ApiServer) -> None:
    token = server.token("regulator")
    cases = [
        ('{ accounts(after: "garbage") { edges { cursor } } }', "BAD_USER_INPUT"),
        ("{ accounts(first: 501) { edges { cursor } } }", "BAD_USER_INPUT"),
        ("{ accounts(first: 0) { edges { cursor } } }", "BAD_USER_INPUT"),
        ('{ account(id: "not-a-uuid") { id } }', "BAD_USER_INPUT"),
        ('{ history(accountId: "x") { edges { cursor } } }', "BAD_USER_INPUT"),
        ('{ events(types: ["Nope"]) { edges { cursor } } }', "BAD_USER_INPUT"),
        ("{ nosuchfield }", "GRAPHQL_VALIDATION_FAILED"),
    ]
    for query, code in cases:
        result = server.gql(query, token)
        assert result["errors"][0]["extensions"]["code"] == code, query
        assert "Traceback" not in str(result)


def test_a_history_cursor_is_refused_by_another_list(server: ApiServer, world: World) -> None:
    account = world.account()
    server.settle()
    token = server.token("regulator")
    page = server.data(
        "query($id: ID!) { history(accountId: $id, first: 1) { pageInfo { endCursor } } }",
        token,
        id=str(account),
    )
    cursor = page["history"]["pageInfo"]["endCursor"]
    result = server.gql(
        "query($a: String) { accounts(after: $a) { edges { cursor } } }", token, a=cursor
    )
    assert result["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_http_level_errors_are_4xx_never_500(server: ApiServer) -> None:
    token = server.token("regulator")
    assert (
        server.post(b"{not json", token, headers={"Content-Type": "application/json"}).status_code
        == 400
    )
    assert server.post(b"query=1", token, headers={"Content-Type": "text/plain"}).status_code in (
        400,
        415,
    )
    big = {"query": "{ providers { code } }", "variables": {"x": "y" * (2 << 20)}}
    assert server.post(big, token).status_code == 413
    unknown_op = {"query": "query A { providers { code } }", "operationName": "B"}
    modern = server.post(unknown_op, token, headers={"Accept": "application/graphql-response+json"})
    assert modern.status_code == 400 and "data" not in modern.json()
    assert modern.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
    legacy = server.post(unknown_op, token)  # application/json: 200, as the spec asks
    assert legacy.status_code == 200 and legacy.json()["errors"][0]["extensions"]["code"]


def test_depth_aliases_and_tokens_are_limited(server: ApiServer) -> None:
    token = server.token("regulator")
    deep = "{ accounts { edges { node { activeSanctions { level " + "}" * 4 + " }"
    assert "errors" not in server.gql(deep, token)
    nested = "{ accounts { edges { node { id } } } }"
    for _ in range(10):
        nested = "{ a: accounts { pageInfo { hasNextPage } edges " + nested + " } }"
    aliases = "{ " + " ".join(f"a{i}: providers {{ code }}" for i in range(30)) + " }"
    for query in (aliases, "{ providers { " + "code " * 3000 + "} }"):
        result = server.gql(query, token)
        assert result.get("data") is None and result["errors"], query[:40]


def test_mutation_success_replay_and_key_reuse(server: ApiServer, world: World) -> None:
    account = world.account(category="news_agency")
    server.settle()
    provider = server.token("provider", world.provider)
    first = server.data(MARK, provider, id=str(account), key="m1")["markAccount"]
    assert first["__typename"] == "CommandSuccess" and first["replayed"] is False
    again = server.data(MARK, provider, id=str(account), key="m1")["markAccount"]
    assert again == {**first, "replayed": True}
    other = world.account(category="news_agency")
    reused = server.data(MARK, provider, id=str(other), key="m1")["markAccount"]
    assert reused["__typename"] == "Conflict" and reused["code"] == "IDEMPOTENCY_KEY_REUSED"


def test_typed_errors_carry_the_domain_code(server: ApiServer, world: World) -> None:
    account = world.account(kind="personal")
    server.settle()
    provider = server.token("provider", world.provider)
    regulator = server.token("regulator")
    cases: list[tuple[str, str, dict[str, Any], str, str]] = [
        (MARK, provider, {"id": str(account)}, "RuleViolation", "NOT_PUBLIC_ACCOUNT"),
        (IMPOSE, regulator, {"id": str(account), "level": "warning", "rules": ["nope"]},
         "InvalidInput", "UNKNOWN_RULE"),
        (IMPOSE, regulator, {"id": str(UUID(int=5)), "level": "warning", "rules": ["art.9"]},
         "NotFound", "ACCOUNT_NOT_FOUND"),
        (MARK, regulator, {"id": str(account)}, "NotPermitted", "ROLE_NOT_PERMITTED"),
    ]  # fmt: skip
    head = server.ledger.head()
    for i, (query, token, variables, typename, code) in enumerate(cases):
        out = next(iter(server.data(query, token, key=f"e{i}", **variables).values()))
        assert (out["__typename"], out["code"]) == (typename, code)
    assert server.ledger.head() == head  # refused commands wrote nothing


def test_submit_batch_is_all_or_nothing(server: ApiServer, world: World) -> None:
    account = world.account()
    server.settle()
    provider = server.token("provider", world.provider)
    query = """mutation($c: [BatchCommand!]!) { submitBatch(commands: $c) { __typename
      ... on BatchSuccess { results { command postId position } }
      ... on MutationError { code batchIndex } } }"""
    post = {
        "accountId": str(account), "ref": "r1", "origin": "original", "category": "other",
        "contentSha256": "a" * 64,
    }  # fmt: skip
    bad = [
        {"idempotencyKey": "b1", "publishPost": post},
        {"idempotencyKey": "b2", "publishPost": {**post, "ref": "r2", "category": "nope"}},
    ]
    head = server.ledger.head()
    failed = server.data(query, provider, c=bad)["submitBatch"]
    assert failed == {"__typename": "InvalidInput", "code": "INVALID_ARGUMENT", "batchIndex": 1}
    assert server.ledger.head() == head
    good = server.data(
        query, provider, c=[bad[0], {**bad[1], "publishPost": {**post, "ref": "r2"}}]
    )
    assert [r["command"] for r in good["submitBatch"]["results"]] == ["PublishPost"] * 2
    two = [{"idempotencyKey": "b3", "markAccount": {"accountId": str(account)},
            "publishPost": post}]  # fmt: skip
    assert server.data(query, provider, c=two)["submitBatch"]["batchIndex"] == 0


def test_time_travel_through_the_api_matches_the_write_side(
    server: ApiServer, world: World, ledger: Ledger
) -> None:
    account = world.account()
    before = ledger.head()
    world.sanction(account, "closed")
    server.settle()
    query = """query($id: ID!, $p: Position) { accountAsOf(id: $id, position: $p) {
      version status state } }"""
    token = server.token("auditor")
    then = server.data(query, token, id=str(account), p=str(before))["accountAsOf"]
    assert then["status"] == "ACTIVE"
    assert then["version"] == ledger.account_at(account, position=before).version
    now = server.data(query, token, id=str(account), p=str(ledger.head()))["accountAsOf"]
    assert now["status"] == "CLOSED"
    assert "Li Lei" not in str(now["state"])


def test_events_are_the_raw_log_with_identity_withheld(server: ApiServer, world: World) -> None:
    world.account()
    token = server.token("auditor")
    query = """query($after: Position) { events(first: 500, after: $after) { edges { cursor
      node { position type originatorId originatorVersion actor { id role } payload } } } }"""
    edges = server.data(query, token)["events"]["edges"]
    assert [int(e["node"]["position"]) for e in edges] == [
        e.position for e in server.ledger.read_log()
    ]
    assert "Li Lei" not in str(edges) and "110101" not in str(edges)
    after = edges[2]["cursor"]
    rest = server.data(query, token, after=after)["events"]["edges"]
    assert rest[0]["node"]["position"] == edges[3]["node"]["position"]


def test_providers_and_ledger_status(server: ApiServer, world: World) -> None:
    world.account()
    server.settle()
    token = server.token("regulator")
    data = server.data(
        "{ providers { code accounts shareVerified } ledgerStatus { head projections "
        "{ name lagEvents } } }",
        token,
    )
    assert {p["code"]: p["accounts"] for p in data["providers"]} == {"acme": 1, "rival": 0}
    assert int(data["ledgerStatus"]["head"]) == server.ledger.head()
    assert {p["name"] for p in data["ledgerStatus"]["projections"]} >= {"accounts", "history"}


def test_health_and_readiness(server: ApiServer) -> None:
    import httpx

    base = server.url.removesuffix("/graphql")
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    server.settle()
    ready = httpx.get(f"{base}/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_schema_file_matches_the_code() -> None:
    from pathlib import Path

    from api.graphql.schema import schema

    committed = Path(__file__).resolve().parent.parent / "schema.graphql"
    assert committed.read_text() == schema.as_str() + "\n", (
        "schema.graphql is stale: run `ledger schema > schema.graphql`"
    )


def test_tree_heads_and_proofs_for_auditors(
    server: ApiServer, world: World, tmp_path: Path
) -> None:
    from ledger import proofcheck

    account = world.account()
    world.post(account)
    auditor = server.token("auditor")
    query = """query($p: Position!) { treeHead { treeSize rootHash publicKey }
      inclusionProof(position: $p) { index treeSize proof document } }"""
    position = server.ledger.head()
    deadline = time.monotonic() + 20
    events = len(list(server.ledger.read_log()))
    while True:  # the sealer signs at most once a second, once it has caught up
        got = server.gql(query, auditor, p=str(position))
        if "errors" not in got and int(got["data"]["treeHead"]["treeSize"]) == events:
            break
        assert time.monotonic() < deadline, got
        time.sleep(0.1)
    head = got["data"]["treeHead"]
    proof_file = tmp_path / "proof.json"
    proof_file.write_text(json.dumps(got["data"]["inclusionProof"]["document"]))
    assert proofcheck.main([str(proof_file), "--public-key", head["publicKey"]]) == 0
    consistency = server.data(
        "query($a: Position!, $b: Position!) { consistencyProof(fromSize: $a, toSize: $b) "
        "{ proof document } }",
        auditor,
        a=head["treeSize"],
        b=head["treeSize"],
    )
    assert consistency["consistencyProof"]["proof"] == []
    provider = server.token("provider", world.provider)
    refused = server.gql("{ treeHead { treeSize } }", provider)
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"


def test_repeated_reads_are_cached_until_the_projections_move(
    server: ApiServer, world: World
) -> None:
    account = world.account()
    server.settle()
    token = server.token("regulator")
    query = "query($id: ID!) { account(id: $id) { postCount } }"
    cache = server.state.extras["cache"]
    assert server.data(query, token, id=str(account))["account"] == {"postCount": 0}
    hits = cache.hits
    assert server.data(query, token, id=str(account))["account"] == {"postCount": 0}
    assert cache.hits == hits + 1
    world.post(account)
    server.settle()
    assert server.data(query, token, id=str(account))["account"] == {"postCount": 1}
    other = server.token("provider", world.rival)  # another principal: its own entry
    assert server.data(query, other, id=str(account))["account"] is None


def test_nested_accounts_and_posts_load_in_batches(server: ApiServer, world: World) -> None:
    accounts = [world.account(handle=f"n{i}") for i in range(3)]
    for a in accounts:
        world.sanction(a, "warning")
        world.post(a)
    server.settle()
    token = server.token("regulator")
    got = server.data("{ sanctions(first: 10) { edges { node { account { handle } } } } }", token)[
        "sanctions"
    ]["edges"]
    assert [e["node"]["account"]["handle"] for e in got] == ["n0", "n1", "n2"]
    post = world.post(accounts[0])
    server.settle()
    nested = server.data(
        "query($id: ID!) { post(id: $id) { account { handle postCount } } }", token, id=str(post)
    )
    assert nested["post"]["account"] == {"handle": "n0", "postCount": 2}
