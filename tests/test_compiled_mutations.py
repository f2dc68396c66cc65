"""Compiled mutations (api/graphql/compiler/mutations.py): hypothesis writes every
command's mutation, with inputs that succeed and inputs each typed refusal answers
(unknown ids, another provider's ids, bad values, NUL, lone surrogates, long strings,
roles that may not), and random selections on the result union (__typename, fragments on
members and on the MutationError interface, named fragments, aliases, @include/@skip).
Each runs over both paths on the same server under one idempotency key: first on one
path, then on the other (a replay, or the same refusal), then on the first again; the
answers must be equal, key order included (the first, bar `replayed`)."""

from __future__ import annotations

import itertools
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from graphql import GraphQLInputObjectType, GraphQLList, GraphQLNonNull
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.graphql.compiler.mutations import COMMANDS
from api.graphql.schema import build_schema
from ledger import Database
from ledger.ruleset import load_ruleset
from tests.compiled_world import Env, compiled_env
from tests.test_compiled_reads import ROLES, ordered, paths

SCHEMA = build_schema()._schema
RULESET = load_ruleset()
AGREEMENT = RULESET.agreement
MEMBERS = ["CommandSuccess", "InvalidInput", "NotFound", "NotPermitted", "RuleViolation",
           "Conflict", "Unavailable"]  # fmt: skip
SUCCESS_FIELDS = ["command", "position", "replayed", "providerId", "accountId", "postId",
                  "sanctionId", "reportId", "expiresAt", "result"]  # fmt: skip
JSON = {"Content-Type": "application/json"}
ERROR_FIELDS = ["code", "message", "details", "batchIndex"]
ODD = ["", "\x00", "a\ud800b", "x" * 5000, "line\nbreak", "名字"]
STRINGS: dict[str, list[str]] = {
    "code": ["zeta", "acme"], "name": ["Zeta"], "licenceRef": ["L-z"],
    "qualification": ["news", "icp"], "reference": ["R-1"],
    "handle": ["h-new", "h-other"], "kind": ["public", "personal", "bogus"],
    "category": ["enterprise", "news_agency", "other"],
    "realName": ["Li Lei"], "idNumber": ["110101199003070011", "123"],
    "method": ["id_card", "passport"], "verifier": ["desk"],
    "reason": ["ok", "breach"], "outcome": ["approved", "rejected", "upheld", "overturned",
                                           "dismissed", "removed"],
    "agreementId": [AGREEMENT.id, "other"], "version": [AGREEMENT.version, "0"],
    "textSha256": [AGREEMENT.sha256, "0" * 64], "authority": ["cac"],
    "scope": ["publish", "reprint", "bogus"], "basis": ["licence"],
    "origin": ["original", "repost"], "contentSha256": ["a" * 64, "xyz"],
    "reporter": ["user-1"], "level": [*RULESET.ladder, "bogus"], "grounds": ["unfair"],
    "ruleIds": ["art.9", "art.1", "nope"], "baselines": list(AGREEMENT.baselines),
}  # fmt: skip


@pytest.fixture(scope="module")
def env(database: Database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with compiled_env(database, tmp_path_factory.mktemp("mutations")) as found:
        yield found


def ids_for(env: Env, name: str, role: str) -> list[str]:
    """Ids of the kind the field names: of the role's own provider mostly, when it has one
    (so that commands succeed), and others (NotFound, or refused as not its own)."""
    if name == "providerId":
        return env.provider_ids
    pool = (
        env.post_ids if name in ("postId", "sourcePostId", "evidencePostIds") else env.account_ids
    )
    if role in env.providers:  # accountId, a post's id; a sanction or report id: not one
        own = env.owned.get(env.providers[role], set())
        return [i for i in pool if i in own][:20] * 3 + pool[:5]
    return pool[:20]


def value_for(draw: Any, env: Env, role: str, name: str, type_: Any) -> Any:
    if isinstance(type_, GraphQLNonNull):
        return value_for(draw, env, role, name, type_.of_type)
    if isinstance(type_, GraphQLList):
        size = draw(st.integers(0, 3))
        return [value_for(draw, env, role, name, type_.of_type) for _ in range(size)]
    kind = type_.name
    if kind == "ID":
        ids = ids_for(env, name, role)
        return draw(st.sampled_from([*ids, *ids, str(uuid.uuid4()), "not-an-id"]))
    if kind == "Int":
        return draw(st.sampled_from([0, 1, 7, 30, -1, 2**31 - 1]))
    if kind == "Boolean":
        return draw(st.booleans())
    known = STRINGS.get(name, []) or [f"{name}-{draw(st.integers(0, 9))}"]
    if name == "ref":
        known = [f"ref-{uuid.uuid4().hex[:8]}"]
    return draw(st.sampled_from(known) if draw(st.integers(0, 9)) else st.sampled_from(ODD))


def selection(draw: Any) -> tuple[str, str, dict[str, Any]]:
    """(the result's selection, fragment definitions, variables of @include/@skip)."""
    parts: list[str] = []
    fragments = ""
    variables: dict[str, Any] = {}

    def fields(names: list[str]) -> str:
        chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=4, unique=True))
        out = []
        for i, name in enumerate(chosen):
            alias = f"a{i}: " if draw(st.integers(0, 4)) == 0 else ""
            directive = ""
            if draw(st.integers(0, 5)) == 0:
                variables["flag"] = draw(st.booleans())
                directive = draw(st.sampled_from([" @include(if: $flag)", " @skip(if: $flag)"]))
            out.append(f"{alias}{name}{directive}")
        return " ".join(out)

    if draw(st.booleans()):
        parts.append("__typename")
    if draw(st.integers(0, 4)):
        parts.append(f"... on CommandSuccess {{ {fields(SUCCESS_FIELDS)} }}")
    if draw(st.booleans()):
        parts.append(f"... on MutationError {{ {fields(ERROR_FIELDS)} }}")
    if draw(st.booleans()):
        member = draw(st.sampled_from(MEMBERS[1:]))
        parts.append(f"... on {member} {{ {fields(ERROR_FIELDS)} }}")
    if draw(st.integers(0, 3)) == 0:
        parts.append("...Done")
        fragments = f" fragment Done on CommandSuccess {{ {fields(SUCCESS_FIELDS)} }}"
    if not parts:
        parts.append("__typename")
    return " ".join(parts), fragments, variables


@st.composite
def mutations(draw: Any, env: Env, field: str) -> tuple[str, dict[str, Any], str]:
    """(document, variables, role)."""
    definition = SCHEMA.mutation_type.fields[field]  # type: ignore[union-attr]
    input_type = definition.args["input"].type.of_type
    assert isinstance(input_type, GraphQLInputObjectType)
    role = draw(st.sampled_from(ROLES))
    given_input = {}
    for name, input_field in input_type.fields.items():
        required = isinstance(input_field.type, GraphQLNonNull)
        if required or draw(st.booleans()):
            given_input[name] = value_for(draw, env, role, name, input_field.type)
    selected, fragments, variables = selection(draw)
    flag = "$flag: Boolean!, " if "flag" in variables else ""
    alias = "done: " if draw(st.booleans()) else ""
    document = (
        f"mutation M({flag}$input: {input_type.name}!, $key: String!) "
        f"{{ {alias}{field}(input: $input, idempotencyKey: $key) {{ {selected} }} }}{fragments}"
    )
    variables.update(input=given_input, key=f"k-{uuid.uuid4().hex}")
    return document, variables, role


def answer(env: Env, compiled: bool, role: str, query: str, variables: dict[str, Any]) -> Any:
    env.compiler.enabled = compiled
    try:
        # json.dumps escapes a lone surrogate, as a client must (httpx cannot encode one)
        body = json.dumps({"query": query, "variables": variables}).encode()
        response = env.api.post(body, env.tokens[role], headers=JSON)
    finally:
        env.compiler.enabled = True
    assert response.status_code == 200, response.text
    return ordered(response.content)


def without_replayed(found: Any) -> Any:
    """An ordered answer without its `replayed` pairs (the first answer's is false) and
    with `result` unordered (a replay reads the result stored, keys sorted)."""
    if isinstance(found, tuple):
        if found[0] == "result":
            return ("result", json.dumps(plain(found[1]), sort_keys=True))
        return (found[0], without_replayed(found[1]))
    if isinstance(found, list):
        return [
            without_replayed(x) for x in found if not (isinstance(x, tuple) and x[0] == "replayed")
        ]
    return found


def plain(found: Any) -> Any:
    if isinstance(found, list) and found and all(isinstance(x, tuple) for x in found):
        return {k: plain(v) for k, v in found}
    return [plain(x) for x in found] if isinstance(found, list) else found


@pytest.mark.parametrize("field", sorted(COMMANDS))
def test_compiled_mutations_answer_as_strawberry_does(env: Env, field: str) -> None:
    ways: Counter[str] = Counter()
    turns = itertools.count()

    @settings(
        max_examples=10,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(op=mutations(env, field))
    def check(op: tuple[str, dict[str, Any], str]) -> None:
        query, variables, role = op
        compiled_first = next(turns) % 2 == 0  # each path goes first in turn
        before = paths()
        first = answer(env, compiled_first, role, query, variables)
        ways.update(paths() - before)
        second = answer(env, not compiled_first, role, query, variables)
        third = answer(env, compiled_first, role, query, variables)
        context = f"{role}: {query} {json.dumps(variables)[:500]}"
        assert second == third, context
        assert without_replayed(first) == without_replayed(second), context

    check()
    assert ways["none"] >= 1, ways  # the compiled path ran


def test_the_split_is_counted_and_batches_fall_back(env: Env) -> None:
    account = env.account_ids[0]
    mark = "mutation($a: ID!, $k: String!) { markAccount(input: {accountId: $a}, " \
        "idempotencyKey: $k) { __typename } }"  # fmt: skip
    before = paths()
    found = env.api.data(mark, env.tokens["regulator"], a=account, k=uuid.uuid4().hex)
    assert found["markAccount"]["__typename"] in MEMBERS
    assert (paths() - before) == Counter({"none": 1})
    batch = "mutation($a: ID!) { submitBatch(commands: [{idempotencyKey: \"b1\", " \
        "markAccount: {accountId: $a}}]) { __typename } }"  # fmt: skip
    before = paths()
    env.api.data(batch, env.tokens["regulator"], a=account)
    assert (paths() - before) == Counter({"field": 1})


def test_a_revoked_token_writes_nothing(env: Env) -> None:
    """A token seen (and remembered) by this process, then revoked: the next mutation is
    refused as unauthenticated, on the compiled path as before."""
    token = env.api.token("regulator", name="short-lived")
    reads = "{ ledgerStatus { head } }"
    env.api.data(reads, token)
    with env.api.database.connect(env.api.schema) as conn:
        conn.execute("UPDATE api_tokens SET revoked_at = now() WHERE revoked_at IS NULL"
                     " AND name = 'short-lived'")  # fmt: skip
    mark = (
        'mutation { markAccount(input: {accountId: "' + env.account_ids[0] + '"},'
        ' idempotencyKey: "r1") { __typename } }'
    )
    head = env.api.ledger.head()
    result = env.api.gql(mark, token)
    assert result["data"] is None
    assert result["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert env.api.ledger.head() == head


EVERYTHING = (
    "__typename ... on CommandSuccess { " + " ".join(SUCCESS_FIELDS) + " }"
    " ... on MutationError { " + " ".join(ERROR_FIELDS) + " }"
)


def scripted(env: Env, target: int) -> list[tuple[str, str, dict[str, Any]]]:
    acme = str(env.providers["acme"])
    own = sorted(i for i in env.account_ids if i in env.owned[env.providers["acme"]])
    return [
        ("acme", "registerAccount", {"providerId": acme, "handle": f"h-{uuid.uuid4().hex[:8]}",
                                     "kind": "public", "category": "enterprise"}),
        ("regulator", "imposeSanction", {"accountId": own[target], "level": "publishing_restricted",
                                         "ruleIds": ["art.1"], "reason": "breach",
                                         "durationDays": 7}),
        ("regulator", "markAccount", {"accountId": own[1]}),  # NotPermitted
        ("acme", "markAccount", {"accountId": own[1]}),  # RuleViolation
        ("wechat", "eraseIdentity", {"accountId": own[1], "reason": "asked"}),  # not its own
    ]  # fmt: skip


@pytest.mark.parametrize("compiled_first", [True, False])
def test_successes_and_refusals_with_every_field(env: Env, compiled_first: bool) -> None:
    members = []
    for role, field, given_input in scripted(env, 2 if compiled_first else 3):
        input_type = f"{field[0].upper()}{field[1:]}Input"
        query = (
            f"mutation($input: {input_type}!, $key: String!) "
            f"{{ {field}(input: $input, idempotencyKey: $key) {{ {EVERYTHING} }} }}"
        )
        variables = {"input": given_input, "key": f"s-{uuid.uuid4().hex}"}
        first = answer(env, compiled_first, role, query, variables)
        second = answer(env, not compiled_first, role, query, variables)
        third = answer(env, compiled_first, role, query, variables)
        assert second == third, field
        assert without_replayed(first) == without_replayed(second), field
        members.append(json.loads(json.dumps(first))[0][1][0][1][0][1])
    assert members == ["CommandSuccess", "CommandSuccess", "NotPermitted", "RuleViolation",
                       "NotFound"], members  # fmt: skip
