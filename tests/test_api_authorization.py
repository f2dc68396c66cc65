"""Who may do what, table-driven: each role against each operation, and a provider
reaching for another provider's account, post, sanction and provider record, which
must look exactly as if they did not exist."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import pytest

from ledger import Ledger
from ledger import commands as c
from tests.api_server import ApiServer
from tests.world import World


@dataclass
class Scene:
    mine: UUID
    theirs: UUID
    my_post: UUID
    their_post: UUID
    their_sanction: UUID
    rival: UUID
    tokens: dict[str, str]


@pytest.fixture
def scene(server: ApiServer, ledger: Ledger) -> Scene:
    world = World(ledger)
    mine = world.account()
    theirs = world.account(ops=world.rival_ops)
    my_post = world.post(mine)
    their_post = world.post(theirs, ops=world.rival_ops)
    world.sanction(mine, "warning")
    their_sanction = world.sanction(theirs, "warning")
    world.run(c.AppealSanction, world.rival_ops, account_id=theirs, sanction_id=their_sanction,
              grounds="no")  # fmt: skip
    server.settle()
    tokens = {
        "regulator": server.token("regulator"),
        "auditor": server.token("auditor"),
        "provider": server.token("provider", world.provider),
    }
    return Scene(mine, theirs, my_post, their_post, their_sanction, world.rival, tokens)


def result_of(server: ApiServer, query: str, token: str, **variables: Any) -> Any:
    result = server.gql(query, token, **variables)
    assert "errors" not in result, result
    return next(iter(result["data"].values()))


# ----- reads ---------------------------------------------------------------------------

READS: list[tuple[str, str, str]] = [
    # (name, query, variable naming the rival's thing)
    ("account", "query($id: ID!) { account(id: $id) { id } }", "theirs"),
    ("post", "query($id: ID!) { post(id: $id) { id } }", "their_post"),
    ("provider", "query($id: ID!) { provider(id: $id) { id } }", "rival"),
    ("accountAsOf", 'query($id: ID!) { accountAsOf(id: $id, position: "1000") { id } }', "theirs"),
]


@pytest.mark.parametrize("role", ["regulator", "auditor", "provider"])
@pytest.mark.parametrize(("name", "query", "target"), READS, ids=[r[0] for r in READS])
def test_reading_another_providers_record(
    server: ApiServer, scene: Scene, role: str, name: str, query: str, target: str
) -> None:
    got = result_of(server, query, scene.tokens[role], id=str(getattr(scene, target)))
    if role == "provider":
        assert got is None  # invisible: not found, not forbidden
    else:
        assert got is not None


LISTS: list[tuple[str, str]] = [
    ("accounts", "{ accounts(first: 500) { edges { node { providerId } } } }"),
    ("sanctions", "{ sanctions(first: 500) { edges { node { providerId } } } }"),
    ("flaggedPosts", "{ flaggedPosts(first: 500) { edges { node { providerId } } } }"),
    ("providers", "{ providers { id } }"),
]


@pytest.mark.parametrize("role", ["regulator", "auditor", "provider"])
@pytest.mark.parametrize(("name", "query"), LISTS, ids=[q[0] for q in LISTS])
def test_lists_hold_only_what_the_role_may_see(
    server: ApiServer, scene: Scene, role: str, name: str, query: str
) -> None:
    got = result_of(server, query, scene.tokens[role])
    rows = got if isinstance(got, list) else [e["node"] for e in got["edges"]]
    owners = {r.get("providerId") or r.get("id") for r in rows}
    if role == "provider":
        assert str(scene.rival) not in owners
    elif name != "flaggedPosts":  # the scene crosses no threshold
        assert str(scene.rival) in owners


@pytest.mark.parametrize("role", ["regulator", "auditor", "provider"])
def test_history_and_the_raw_log(server: ApiServer, scene: Scene, role: str) -> None:
    token = scene.tokens[role]
    history = result_of(
        server,
        "query($id: ID!) { history(accountId: $id) { edges { node { position } } } }",
        token,
        id=str(scene.theirs),
    )
    events = result_of(server, "{ events(first: 500) { edges { node { originatorId } } } }", token)
    originators = {e["node"]["originatorId"] for e in events["edges"]}
    if role == "provider":
        assert history["edges"] == []
        assert str(scene.theirs) not in originators and str(scene.their_post) not in originators
        assert str(scene.mine) in originators
    else:
        assert history["edges"]
        assert {str(scene.theirs), str(scene.mine)} <= originators


# ----- writes --------------------------------------------------------------------------

OUT = "{ __typename ... on MutationError { code message details } }"
IMPOSE = f"""mutation($id: ID!, $key: String!) {{ imposeSanction(input: {{accountId: $id,
  level: "warning", ruleIds: ["art.9"], reason: "r"}}, idempotencyKey: $key) {OUT} }}"""
LIFT = f"""mutation($id: ID!, $s: ID!, $key: String!) {{ liftSanction(input: {{accountId: $id,
  sanctionId: $s, reason: "r"}}, idempotencyKey: $key) {OUT} }}"""
DECIDE = f"""mutation($id: ID!, $s: ID!, $key: String!) {{ decideAppeal(input: {{accountId: $id,
  sanctionId: $s, outcome: "upheld", reason: "r"}}, idempotencyKey: $key) {OUT} }}"""
GRANT = f"""mutation($id: ID!, $key: String!) {{ grantNewsPermission(input: {{accountId: $id,
  scope: "reprint", basis: "b"}}, idempotencyKey: $key) {OUT} }}"""
REACH = f"""mutation($id: ID!, $key: String!) {{ recordReach(input: {{postId: $id, views: 1,
  reposts: 0}}, idempotencyKey: $key) {OUT} }}"""
REPRINT = f"""mutation($id: ID!, $mine: ID!, $key: String!) {{ publishPost(input: {{
  accountId: $mine, ref: $key, origin: "reprint", category: "other", sourcePostId: $id,
  contentSha256: "{'a' * 64}"}}, idempotencyKey: $key) {OUT} }}"""
EVIDENCE = f"""mutation($id: ID!, $mine: ID!, $key: String!) {{ imposeSanction(input: {{
  accountId: $mine, level: "warning", ruleIds: ["art.9"], reason: "r",
  evidencePostIds: [$id]}}, idempotencyKey: $key) {OUT} }}"""
REGISTER = f"""mutation($p: ID!, $key: String!) {{ registerAccount(input: {{providerId: $p,
  handle: "new", kind: "personal"}}, idempotencyKey: $key) {OUT} }}"""

# (name, query, variables from the scene, expected __typename per role)
WRITES: list[tuple[str, str, dict[str, str], dict[str, str]]] = [
    ("impose on theirs", IMPOSE, {"id": "theirs"},
     {"regulator": "CommandSuccess", "auditor": "NotPermitted", "provider": "NotFound"}),
    ("impose on mine", IMPOSE, {"id": "mine"},
     {"regulator": "CommandSuccess", "auditor": "NotPermitted", "provider": "CommandSuccess"}),
    ("decide appeal", DECIDE, {"id": "theirs", "s": "their_sanction"},
     {"regulator": "CommandSuccess", "auditor": "NotPermitted", "provider": "NotPermitted"}),
    ("grant news", GRANT, {"id": "mine"},
     {"regulator": "CommandSuccess", "auditor": "NotPermitted", "provider": "NotPermitted"}),
    ("reach on their post", REACH, {"id": "their_post"},
     {"regulator": "NotPermitted", "auditor": "NotPermitted", "provider": "NotFound"}),
    ("reach on my post", REACH, {"id": "my_post"},
     {"regulator": "NotPermitted", "auditor": "NotPermitted", "provider": "CommandSuccess"}),
    ("register at rival", REGISTER, {"p": "rival"},
     {"regulator": "NotPermitted", "auditor": "NotPermitted", "provider": "NotFound"}),
    ("lift their sanction", LIFT, {"id": "theirs", "s": "their_sanction"},
     {"regulator": "CommandSuccess", "auditor": "NotPermitted", "provider": "NotFound"}),
]  # fmt: skip


@pytest.mark.parametrize("role", ["regulator", "auditor", "provider"])
@pytest.mark.parametrize(("name", "query", "args", "expected"), WRITES, ids=[w[0] for w in WRITES])
def test_who_may_write_what(
    server: ApiServer,
    scene: Scene,
    role: str,
    name: str,
    query: str,
    args: dict[str, str],
    expected: dict[str, str],
) -> None:
    variables = {k: str(getattr(scene, v)) for k, v in args.items()}
    head = server.ledger.head()
    got = result_of(server, query, scene.tokens[role], key=f"{role}-{name}", **variables)
    assert got["__typename"] == expected[role], got
    if expected[role] != "CommandSuccess":
        assert server.ledger.head() == head  # refused: nothing written


def test_another_providers_things_look_exactly_like_missing_ones(
    server: ApiServer, scene: Scene
) -> None:
    token = scene.tokens["provider"]
    mine = {"mine": str(scene.mine)}
    head = server.ledger.head()
    for query, real, variable, extra in (
        (IMPOSE, scene.theirs, "id", {}),
        (REACH, scene.their_post, "id", {}),
        (REGISTER, scene.rival, "p", {}),
        (REPRINT, scene.their_post, "id", mine),  # a reprint's source
        (EVIDENCE, scene.their_post, "id", mine),  # a sanction's evidence
    ):
        theirs = result_of(
            server, query, token, key=f"t{variable}{real}", **{variable: str(real)}, **extra
        )
        missing = result_of(
            server, query, token, key=f"m{variable}{real}", **{variable: str(UUID(int=7))}, **extra
        )
        assert theirs["__typename"] == "NotFound", theirs
        assert theirs["code"] == missing["code"] and theirs["message"] == missing["message"]
        assert set(theirs["details"]) == set(missing["details"])
    assert server.ledger.head() == head


def test_a_provider_cannot_subscribe_to_another_providers_sanctions(
    server: ApiServer, scene: Scene
) -> None:
    from tests.test_api_subscriptions import SANCTIONS, receive, subscription

    with subscription(server, scene.tokens["provider"], SANCTIONS, provider=str(scene.rival)) as ws:
        message = json.loads(ws.recv(timeout=10))
    assert "NOT_FOUND" in json.dumps(message)
    with subscription(server, scene.tokens["provider"], SANCTIONS) as ws:
        got = receive(ws, 1)
    assert got[0]["originatorId"] == str(scene.mine)
