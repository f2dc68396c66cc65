"""Disclosure through the API: regulators only, recorded before it is answered, listed
for auditors, rate-limited per token; and, after a demo, a disclosure and an erasure, no
real name or ID number anywhere but in the one disclosure response."""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from uuid import UUID

import pytest

from ledger import Database, Ledger
from ledger import commands as c
from ledger.demo import run_demo
from tests.api_server import ApiServer
from tests.cold import ColdProcess
from tests.world import World

DISCLOSE = """mutation($id: ID!, $basis: String!, $key: String!) { discloseIdentity(input: {
  accountId: $id, basis: $basis, caseReference: "CASE-7"}, idempotencyKey: $key) {
  __typename ... on DisclosedIdentity { realName idNumber position }
  ... on MutationError { code message } } }"""
LIST = """query($id: ID) { identityDisclosures(accountId: $id) { edges { node {
  accountId actorRole basis caseReference } } } }"""


def verified(world: World, name: str, number: str) -> UUID:
    account = world.account(verified=False)
    world.run(c.VerifyIdentity, account_id=account, real_name=name, id_number=number,
              method="id_card")  # fmt: skip
    return account


def disclose(server: ApiServer, token: str, account: UUID, key: str, basis: str = "art. 6") -> Any:
    return server.data(DISCLOSE, token, id=str(account), basis=basis, key=key)["discloseIdentity"]


@pytest.fixture
def tokens(server: ApiServer, ledger: Ledger) -> dict[str, Any]:
    world = World(ledger)
    return {
        "world": world,
        "regulator": server.token("regulator"),
        "auditor": server.token("auditor"),
        "provider": server.token("provider", world.provider),
    }


def test_a_regulator_discloses_and_the_disclosure_is_listed(
    server: ApiServer, ledger: Ledger, tokens: dict[str, Any]
) -> None:
    account = verified(tokens["world"], "Zhao Lihua", "110105198001010011")
    got = disclose(server, tokens["regulator"], account, "k1")
    assert got["__typename"] == "DisclosedIdentity"
    assert (got["realName"], got["idNumber"]) == ("Zhao Lihua", "110105198001010011")
    (event,) = list(ledger.read_log(int(got["position"]) - 1, limit=1))
    assert event.type == "Account.IdentityDisclosed"
    server.settle()
    for role in ("regulator", "auditor"):
        listed = server.data(LIST, tokens[role], id=str(account))["identityDisclosures"]
        assert [e["node"] for e in listed["edges"]] == [{
            "accountId": str(account), "actorRole": "regulator", "basis": "art. 6",
            "caseReference": "CASE-7"}]  # fmt: skip
    refused = server.gql(LIST, tokens["provider"], id=str(account))
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    history = server.data(
        "query($id: ID!) { history(accountId: $id) { edges { node { type summary } } } }",
        tokens["regulator"], id=str(account),
    )["history"]["edges"]  # fmt: skip
    summary = "real identity disclosed: art. 6 (case CASE-7)"
    assert history[-1]["node"] == {"type": "Account.IdentityDisclosed", "summary": summary}


@pytest.mark.parametrize(
    ("case", "typename", "code"),
    [
        ("provider", "NotPermitted", "ROLE_NOT_PERMITTED"),
        ("auditor", "NotPermitted", "ROLE_NOT_PERMITTED"),
        ("erased", "RuleViolation", "IDENTITY_ERASED"),
        ("never verified", "RuleViolation", "ACCOUNT_NOT_VERIFIED"),
        ("no basis", "InvalidInput", "INVALID_ARGUMENT"),
        ("unknown account", "NotFound", "ACCOUNT_NOT_FOUND"),
    ],
)
def test_a_disclosure_refused_writes_nothing(
    server: ApiServer, ledger: Ledger, tokens: dict[str, Any], case: str, typename: str,
    code: str,
) -> None:  # fmt: skip
    world = tokens["world"]
    account = verified(world, "Qian Wei", "110105198001010022")
    token, basis = tokens["regulator"], "art. 6"
    if case in ("provider", "auditor"):
        token = tokens[case]
    elif case == "erased":
        world.run(c.EraseIdentity, account_id=account, reason="the holder's request")
    elif case == "never verified":
        account = world.account(verified=False)
    elif case == "no basis":
        basis = "  "
    elif case == "unknown account":
        account = UUID(int=9)
    head = ledger.head()
    got = disclose(server, token, account, "k", basis)
    assert (got["__typename"], got["code"]) == (typename, code), got
    assert ledger.head() == head


def test_disclosures_are_rate_limited_per_token(
    server: ApiServer, ledger: Ledger, tokens: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    monkeypatch.setenv("LEDGER_DISCLOSURE_LIMIT", "2")
    server.state.extras.pop("disclosure_limit", None)
    account = verified(tokens["world"], "Sun Li", "110105198001010033")
    for n in range(2):
        assert disclose(server, tokens["regulator"], account, f"r{n}")["__typename"] == (
            "DisclosedIdentity"
        )
        server.settle()
    head = ledger.head()
    refused = disclose(server, tokens["regulator"], account, "r2")
    assert refused["code"] == "RATE_LIMITED" and ledger.head() == head
    assert server.state.extras["disclosure_limit"].refused == 1
    assert "past its limit" in caplog.text
    other = server.token("regulator", name="another desk")  # another token has its own
    assert disclose(server, other, account, "o1")["__typename"] == "DisclosedIdentity"


EVENTS = "{ events(first: 500) { edges { node { payload } } } }"


def test_no_personal_data_anywhere_but_in_the_disclosure(
    server: ApiServer, ledger: Ledger, database: Database, schema: str, cold: ColdProcess,
    tokens: dict[str, Any], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    seen: list[tuple[str, str]] = []

    def submit(batch: list[c.Command]) -> None:
        seen.extend((cmd.real_name, cmd.id_number) for cmd in batch
                    if isinstance(cmd, c.VerifyIdentity))  # fmt: skip
        ledger.submit(batch)

    run_demo(submit, ledger.ruleset, 30)
    world = tokens["world"]
    kept = verified(world, "Zhou Jielun-Disclosed", "110105198001019991")
    erased = verified(world, "Wu Yifan-Erased", "110105198001019992")
    world.run(c.EraseIdentity, account_id=erased, reason="the holder's request")
    answer = disclose(server, tokens["regulator"], kept, "the one")
    assert answer["realName"] == "Zhou Jielun-Disclosed"
    server.settle()
    secrets = [*(n for pair in seen for n in pair), "Zhou Jielun-Disclosed",
               "110105198001019991", "Wu Yifan-Erased", "110105198001019992"]  # fmt: skip
    pattern = re.compile("|".join(rf"{re.escape(s)}(?!\d)" for s in secrets))

    # Every table of the schema, every log line, `ledger events`, and the API's answers.
    with database.connect(schema) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", [schema]
        )]  # fmt: skip
        for table in tables:
            for (row,) in conn.execute(f'SELECT t::text FROM "{table}" t'):
                assert not pattern.search(row), (table, pattern.search(row))
    events = cold.cli("events")
    assert events.returncode == 0 and not pattern.search(events.stdout + events.stderr)
    answers = [
        server.gql(EVENTS, tokens["regulator"]),
        server.gql("query($id: ID!) { accountAsOf(id: $id, position: \"999999\") { state } }",
                   tokens["regulator"], id=str(kept)),
        server.gql("query($id: ID!) { history(accountId: $id) { edges { node { summary } } } }",
                   tokens["regulator"], id=str(kept)),
        server.gql("{ accounts(first: 500) { edges { node { id handle verified } } } }",
                   tokens["auditor"]),
    ]  # fmt: skip
    for got in answers:
        assert "errors" not in got and not pattern.search(json.dumps(got, ensure_ascii=False))
    assert not pattern.search(caplog.text)
    assert pattern.search(json.dumps(answer))  # the one place it is
