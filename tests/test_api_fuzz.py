"""Fuzzing the GraphQL API through a real server: every query root field and every
mutation, with arguments generated from the schema (ids of our own, of the rival and
of nothing, garbage text, NUL, lone surrogates, huge numbers, bad positions and cursors,
wrong types), sent inline and as variables, as each role, without a token and with a bad
one. Whatever comes back is JSON, every error carries `extensions.code`, none is
INTERNAL, no message shows Python, and a refused mutation writes nothing. A provider
reaching for the rival's record gets exactly the answer a random missing id gets.

One server and one scene serve the whole module. LEDGER_FUZZ_SCALE multiplies the
example counts (default 1: about half a minute on two cores).
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import httpx
import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLUnionType,
)
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from api.graphql.scalars import encode_cursor
from api.graphql.schema import schema as strawberry_schema
from ledger import Database, Ledger
from ledger import commands as c
from ledger.domain import EVENT_TYPES
from ledger.vault import Vault
from tests.api_server import ApiServer, running_api
from tests.conftest import TEST_KEY, Clock
from tests.world import World

SCHEMA = strawberry_schema._schema
SCALE = float(os.environ.get("LEDGER_FUZZ_SCALE", "1"))
ROLES = ("regulator", "auditor", "provider", "anonymous", "bad token")
# What a client must never read: Python leaking through a message.
PYTHONISMS = re.compile(
    r"Traceback|NoneType|object has no attribute|unexpected keyword|positional argument"
    r"|<class |Errno|psycopg|KeyError|TypeError|AttributeError|UnicodeEncodeError"
    r"|invalid literal for int|Exceeds the limit|exceeds the limit|\.py\b|arg is an empty sequence"
)


def examples(n: int) -> int:
    return max(1, int(n * SCALE))


def fuzz_settings(n: int) -> settings:
    return settings(
        max_examples=examples(n),
        deadline=None,
        # No explain phase: it reruns a failing example under a tracer, slowly.
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@contextmanager
def plainly(example: Any) -> Iterator[None]:
    """A failing example as a short message, without a traceback: the example may hold
    a megabyte of text, and formatting a traceback races the server's logging (below)."""
    try:
        yield
    except Exception as e:  # any failure of the example, reported as one
        pytest.fail(
            f"{type(e).__name__}: {short(str(e), 3000)}\nexample: {short(repr(example))}",
            pytrace=False,
        )


def let_the_server_log(response: httpx.Response) -> httpx.Response:
    """After a fault, wait for the server to finish logging it before anything fails.
    CPython 3.11 formats a traceback with ast.parse (for its carets), and the ast
    module's recursion counter is shared by all threads: the server logging a traceback
    while pytest formats one ends in "AST constructor recursion depth mismatch", a
    pytest INTERNALERROR that stops the whole run."""
    if response.status_code >= 500 or b'"INTERNAL"' in response.content:
        time.sleep(1)
    return response


# ----- the arena: one server and one scene for the module -------------------------------


@dataclass
class Arena:
    server: ApiServer
    client: httpx.Client
    tokens: dict[str, str | None]
    mine: dict[str, UUID]  # kind -> one of acme's things
    theirs: dict[str, UUID]  # kind -> one of the rival's things
    seen_codes: dict[str, int] = field(default_factory=dict)

    def post(self, body: str | bytes, token: str | None, **headers: str) -> httpx.Response:
        sent = {"Content-Type": "application/json", **headers}
        if token:
            sent.setdefault("Authorization", f"Bearer {token}")
        return self.client.post(self.server.url, content=body, headers=sent)

    def ask(self, query: str, variables: dict[str, Any], role: str) -> dict[str, Any]:
        # ensure_ascii: lone surrogates travel as \ud800 escapes, as a client sends them.
        body = json.dumps({"query": query, "variables": variables}, ensure_ascii=True)
        return checked(self, self.post(body, self.tokens[role]))


@pytest.fixture(scope="module")
def arena(database: Database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arena]:
    name = "t_" + uuid.uuid4().hex[:12]
    database.create_schema(name)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LEDGER_DATA_DIR", str(tmp_path_factory.mktemp("fuzz")))
        ledger = Ledger(database.eventsourcing_env(name), vault=Vault(TEST_KEY), clock=Clock())
        try:
            with running_api(ledger, database, name) as server, httpx.Client(timeout=60) as client:
                arena = Arena(server, client, *_scene(server, ledger))
                yield arena
                if os.environ.get("LEDGER_FUZZ_REPORT"):
                    print("\nanswers seen:", json.dumps(arena.seen_codes, indent=1, sort_keys=True))
        finally:
            ledger.close()
            database.drop_schema(name)


def _scene(
    server: ApiServer, ledger: Ledger
) -> tuple[dict[str, str | None], dict[str, UUID], dict[str, UUID]]:
    world = World(ledger)
    things = []
    for provider, ops in ((world.provider, world.ops), (world.rival, world.rival_ops)):
        account = world.account(ops=ops)
        post = world.post(account, ops=ops)
        sanction = world.sanction(account, "warning")
        world.run(c.AppealSanction, ops, account_id=account, sanction_id=sanction, grounds="g")
        report = world.run(c.ReportPost, ops, post_id=post, reporter="user", reason="spam")
        world.run(c.RecordReach, ops, post_id=post, views=6000, reposts=600)
        # An address literal that is global: no DNS, and allowed without the loopback switch.
        endpoint = world.run(c.RegisterWebhookEndpoint, ops, provider_id=provider,
                             url="https://93.184.216.34/hook")  # fmt: skip
        things.append(
            {
                "provider": provider,
                "account": account,
                "post": post,
                "sanction": sanction,
                "report": UUID(report["report_id"]),
                "endpoint": UUID(endpoint["endpoint_id"]),
            }
        )
    server.settle()
    tokens = {
        "regulator": server.token("regulator"),
        "auditor": server.token("auditor"),
        "provider": server.token("provider", world.provider),
        "anonymous": None,
        "bad token": "lt_" + "x" * 40,
    }
    return tokens, things[0], things[1]


# ----- what every answer must look like -----------------------------------------------

SYNTAX = "Syntax Error: "
REFUSED_DOCUMENT = {"GRAPHQL_PARSE_FAILED", "GRAPHQL_VALIDATION_FAILED"}


def checked(arena: Arena, response: httpx.Response) -> dict[str, Any]:
    """The answer's JSON, after the checks every answer must pass."""
    let_the_server_log(response)
    assert response.status_code < 500, (response.status_code, response.text[:2000])
    assert response.status_code in (200, 400, 405, 413, 415, 422), response.status_code
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(
            f"not JSON ({response.status_code}): {response.text[:500]!r}"
        ) from None
    assert isinstance(body, dict) and ("data" in body or "errors" in body), body
    for error in body.get("errors") or []:
        code = (error.get("extensions") or {}).get("code")
        assert code, f"an error without extensions.code: {error}"
        assert code != "INTERNAL", error
        assert not PYTHONISMS.search(error.get("message", "")), error
        arena.seen_codes[code] = arena.seen_codes.get(code, 0) + 1
    if not body.get("errors"):
        arena.seen_codes["(no error)"] = arena.seen_codes.get("(no error)", 0) + 1
    for value in (body.get("data") or {}).values():
        if isinstance(value, dict) and value.get("__typename") in MUTATION_ERRORS:
            assert value.get("code") and value["code"] != "INTERNAL", value
            assert not PYTHONISMS.search(value.get("message") or ""), value
            arena.seen_codes[value["code"]] = arena.seen_codes.get(value["code"], 0) + 1
    return body


# ----- the schema, read for generating --------------------------------------------------

MUTATION_ERRORS = {t.name for t in SCHEMA.get_possible_types(SCHEMA.get_type("MutationError"))}


def succeeded(result: Any) -> bool:
    """A mutation's result that is not one of the typed refusals."""
    name = result.get("__typename") if isinstance(result, dict) else None
    return name is not None and name not in MUTATION_ERRORS


def unwrap(type_: Any) -> Any:
    while isinstance(type_, (GraphQLNonNull, GraphQLList)):
        type_ = type_.of_type
    return type_


def selection(type_: Any, depth: int = 0) -> str:
    """Every field without required arguments, nested a little: enough to run the
    resolvers behind each root field, within the token limit."""
    type_ = unwrap(type_)
    if isinstance(type_, (GraphQLScalarType, GraphQLEnumType)):
        return ""
    if isinstance(type_, (GraphQLUnionType, GraphQLInterfaceType)):
        members = SCHEMA.get_possible_types(type_)
        parts = [f"... on {m.name} {selection(m, depth)}" for m in members]
        return "{ __typename " + " ".join(parts) + " }"
    assert isinstance(type_, GraphQLObjectType)
    parts = ["__typename"]
    for name, f in type_.fields.items():
        if any(isinstance(a.type, GraphQLNonNull) for a in f.args.values()):
            continue
        inner = selection(f.type, depth + 1)
        if not inner:
            parts.append(name)
        elif depth < 3:
            parts.append(f"{name} {inner}")
    return "{ " + " ".join(parts) + " }"


ROOTS = {
    "query": SCHEMA.query_type.fields,
    "mutation": SCHEMA.mutation_type.fields,
}
SELECTIONS = {(k, n): selection(f.type) for k, fs in ROOTS.items() for n, f in fs.items()}


# ----- values ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """A literal written as it is in the query text (an enum value, `0x10`, `1.5`)."""

    text: str
    as_variable: Any


def literal(value: Any, escape: bool = True) -> str:
    """A Python value as a GraphQL literal."""
    if isinstance(value, Raw):
        return value.text
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if value == value and abs(value) != float("inf") else "1e999"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=escape)
    if isinstance(value, list):
        return "[" + ", ".join(literal(v, escape) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{k}: {literal(v, escape)}" for k, v in value.items()) + "}"


def as_variable(value: Any) -> Any:
    if isinstance(value, Raw):
        return value.as_variable
    if isinstance(value, list):
        return [as_variable(v) for v in value]
    if isinstance(value, dict):
        return {k: as_variable(v) for k, v in value.items()}
    return value


def now_and_then(n: int) -> st.SearchStrategy[bool]:
    """True about once in n draws. (Not on 0: Hypothesis favours the ends of a range,
    and shrinks towards 0, so a minimal example takes the common branch.)"""
    return st.integers(0, n - 1).map(lambda i: i == n // 2)


def mix(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly good values (to get past validation into the resolvers), a quarter bad."""
    return now_and_then(4).flatmap(lambda b: bad if b else good)


NASTY = st.sampled_from(
    [*"\x00\x01\x1b\x7f\x85\t\n\r\u2028\ufeff\u202e\ud800\udfff\U0001f600£é\\\"'${}", "%s", "%(x)s"]
)
NASTY_TEXT = st.lists(
    st.one_of(NASTY, st.characters(), st.characters(categories=["Cs"])), min_size=1, max_size=20
).map("".join)
LONG_TEXT = st.builds(
    lambda char, n: char * n,
    st.sampled_from(["a", "é", "\x00", "\ud800"]),
    st.sampled_from([2001, 70_000, 400_000, 1_100_000]),
)
TEXT = st.one_of(st.text(max_size=30), NASTY_TEXT, st.sampled_from(["", " ", "  x  "]))
GOOD_TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]), min_size=1, max_size=20
)
NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
BIG_INTS = st.one_of(
    st.sampled_from([-(2**31) - 1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, -(2**63), 2**64, 10**30]),
    st.integers(),
)
INTS = mix(st.integers(-3, 600), BIG_INTS)
FLOATS = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([1.5, -0.0, 1e300])
ANYTHING = st.recursive(
    st.none() | st.booleans() | BIG_INTS | FLOATS | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAMES, inner, max_size=3),
    max_leaves=6,
)

BAD_POSITIONS = ["abc", "£", "-1", "", "1.5", "99999999999999999999", "0x10"]
POSITION_STRINGS = [
    *BAD_POSITIONS,
    "9223372036854775808",
    " 1",
    "1 ",
    "+1",
    "\u0661",
    "\u00b2",
    "1e3",
    "1" * 5000,
    "\x00",
    "\ud800",
]
POSITION_RAW = [
    Raw("0x10", "0x10"),
    Raw("1.5", 1.5),
    Raw("-1", -1),
    Raw("99999999999999999999", 10**20),
    Raw("true", True),
    Raw("1e3", 1e3),
    Raw(str(2**63), 2**63),
]
POSITIONS = mix(
    st.one_of(
        st.integers(0, 80).map(str),
        st.integers(0, 80).map(lambda n: Raw(str(n), n)),
        st.sampled_from(["00001", "9223372036854775807", str(2**40)]),
    ),
    st.sampled_from(POSITION_STRINGS) | st.sampled_from(POSITION_RAW),
)
KINDS = ["account", "history", "sanction", "flagged"]
CURSORS = mix(
    st.builds(encode_cursor, st.sampled_from(KINDS), st.integers(0, 80)),
    st.one_of(
        st.builds(encode_cursor, st.sampled_from([*KINDS, "event", ""]), BIG_INTS),
        st.binary(max_size=24).map(lambda b: base64.urlsafe_b64encode(b).decode()),
        st.binary(max_size=24).map(lambda b: base64.b64encode(b).decode()),
        st.text(max_size=40).map(
            lambda t: base64.urlsafe_b64encode(t.encode("utf-8", "surrogatepass")).decode()
        ),
        TEXT,
        st.sampled_from(["=", "====", "YWNjb3VudDo", "YWNjb3VudDotMQ", "YWNjb3VudDoxLjU"]),
    ),
)
DATETIMES = mix(
    st.one_of(
        st.sampled_from(
            [
                "2024-03-01T09:00:00+00:00",
                "2024-03-01T09:00:00Z",
                "2024-03-01T09:00:00.5+08:00",
                "0001-01-01T00:00:00+14:00",
                "9999-12-31T23:59:59-14:00",
                "1970-01-01T00:00:00Z",
                "0001-01-01T00:00:00+00:00",
                "9999-12-31T23:59:59.999999+00:00",
            ]
        ),
        st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat(timespec="seconds")),
    ),
    st.one_of(
        st.sampled_from(
            [
                "2024-03-01T09:00:00",
                "2024-03-01",
                "2024-02-30T00:00:00Z",
                "2024-03-01T25:00:00Z",
                "now",
                "",
                "\x00",
                "\ud800",
            ]
        ),
        st.datetimes(timezones=st.timezones() | st.none()).map(lambda d: d.isoformat()),
        TEXT,
    ),
)
LADDER = ["warning", "publishing_restricted", "updates_suspended", "closed"]
RULES = ["art.9", "art.7", "baseline.laws", "art.99", ""]
# Values a field of this name takes, so that some commands pass validation and reach
# the aggregates and the ownership checks.
PLAUSIBLE: dict[str, list[Any]] = {
    "level": LADDER,
    "ruleIds": [["art.9"], ["art.9", "art.7"], RULES, []],
    "kind": ["personal", "public"],
    "category": ["enterprise", "news_agency", "other", "political_news"],
    "origin": ["original", "reprint"],
    "outcome": ["approved", "rejected", "upheld", "overturned", "dismissed"],
    "scope": ["publish", "reprint"],
    "contentSha256": ["a" * 64, "A" * 64, "g" * 64],
    "textSha256": ["5448322fe95a97de35693bc8c1adc62c1ef5a4399c95c4f4d7fec51d81959226"],
    "agreementId": ["im-service-agreement"],
    "version": ["2014.1"],
    "baselines": [
        [
            "baseline.laws",
            "baseline.socialist_system",
            "baseline.national_interests",
            "baseline.citizens_rights",
            "baseline.public_order",
            "baseline.social_morality",
            "baseline.authenticity",
        ],
    ],
    "durationDays": [7, 15, None, 0, -7, 2**31 - 1],
    "views": [1, 0, 5001, 2**31 - 1],
    "reposts": [0, 1, 501],
    "metric": ["views", "reposts"],
    "issuerRole": ["regulator", "provider", "system"],
    "appealState": ["none", "pending", "upheld", "overturned"],
    "types": [["SanctionImposed"], sorted(EVENT_TYPES)[:3], ["NoSuchEvent"]],
    "first": [1, 2, 50, 500, 501, 0, -1],
}


def ids(arena: Arena, hostile: bool = True) -> st.SearchStrategy[Any]:
    known = [str(v) for v in (*arena.mine.values(), *arena.theirs.values())]
    good = st.one_of(st.sampled_from(known), st.uuids().map(str))
    if not hostile:
        return good
    one = known[0]
    return mix(
        good,
        st.one_of(
            st.sampled_from(
                [
                    one.upper(),
                    "{" + one + "}",
                    "urn:uuid:" + one,
                    one.replace("-", ""),
                    one + "\x00",
                    one[:-1],
                    " " + one,
                    str(UUID(int=0)),
                    "",
                    "null",
                    "\ud800",
                ]
            ),
            TEXT,
            st.integers(),
        ),
    )


def value_for(
    arena: Arena, type_: GraphQLInputType, name: str, depth: int = 0, hostile: bool = True
) -> st.SearchStrategy[Any]:
    """A strategy for a value of this type: mostly of it, sometimes of another (unless
    not `hostile`: then of the type, and mostly well-formed)."""
    typed = _typed(arena, type_, name, depth, hostile)
    if not hostile:
        return typed
    wrong = ANYTHING if depth < 2 else st.none()
    return now_and_then(16).flatmap(lambda b: wrong if b else typed)


def _typed(arena: Arena, type_: Any, name: str, depth: int, hostile: bool) -> Any:
    def pick(good: Any, bad: Any) -> Any:
        return mix(good, bad) if hostile else good

    if isinstance(type_, GraphQLNonNull):
        return _typed(arena, type_.of_type, name, depth, hostile)
    plausible = st.sampled_from(PLAUSIBLE[name]) if name in PLAUSIBLE else None
    if isinstance(type_, GraphQLList):
        item = value_for(arena, type_.of_type, name, depth + 1, hostile)
        items = st.one_of(st.lists(item, max_size=3), item)
        return items if plausible is None else st.one_of(plausible, items)
    if isinstance(type_, GraphQLEnumType):
        values = [Raw(v, v) for v in type_.values]
        return pick(st.sampled_from(values), st.sampled_from([Raw("NOPE", "NOPE")]) | TEXT)
    if isinstance(type_, GraphQLInputObjectType):
        if type_.name == "BatchCommand":
            return batch_commands(arena, type_, depth, hostile)
        fields = type_.fields.items()
        required = {
            n: value_for(arena, f.type, n, depth + 1, hostile)
            for n, f in fields
            if isinstance(f.type, GraphQLNonNull)
        }
        optional = {
            n: value_for(arena, f.type, n, depth + 1, hostile)
            for n, f in fields
            if not isinstance(f.type, GraphQLNonNull)
        }
        return st.fixed_dictionaries(required, optional=optional)
    assert isinstance(type_, GraphQLScalarType)
    if type_.name == "String":
        bad = st.one_of(TEXT, TEXT, TEXT, LONG_TEXT) if depth < 3 else TEXT
        good = GOOD_TEXT if name != "after" else CURSORS
        if plausible is not None:
            good = st.one_of(plausible, plausible, good)
        return pick(good, bad)
    scalar = {
        "ID": ids(arena, hostile),
        "Int": INTS if hostile else st.integers(0, 600),
        "Float": FLOATS | INTS,
        "Boolean": st.booleans(),
        "Position": POSITIONS,
        "DateTime": DATETIMES,
    }[type_.name]
    return scalar if plausible is None else st.one_of(plausible, scalar)


def batch_commands(
    arena: Arena, type_: GraphQLInputObjectType, depth: int, hostile: bool
) -> st.SearchStrategy[Any]:
    """One entry of a batch: most of the time with exactly one command set."""
    names = list(type_.fields)[1:]

    def entry(name: str) -> Any:
        value = value_for(arena, type_.fields[name].type, name, depth + 1, hostile)
        return value.map(lambda v: {name: v})

    command = st.sampled_from(names).flatmap(entry)
    return st.builds(
        lambda key, command: {"idempotencyKey": key, **command},
        idempotency_keys(hostile),
        mix(command, st.just({})) if hostile else command,
    )


def idempotency_keys(hostile: bool = True) -> st.SearchStrategy[Any]:
    fresh = st.uuids().map(lambda u: f"fuzz-{u}")
    return mix(fresh, TEXT | st.sampled_from(["k", "x" * 201])) if hostile else fresh


@dataclass
class Operation:
    kind: str
    field: str
    query: str
    variables: dict[str, Any]

    def __repr__(self) -> str:  # a failing example stays readable with a 1 MB string in it
        return f"Operation({self.kind} {self.field}: {short(self.query)} {short(self.variables)})"


def short(value: Any, limit: int = 1500) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=True)
    text = re.sub(r"(.)\1{40,}", lambda m: f"{m.group(1)}*{len(m.group())}", text)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


@st.composite
def arguments(draw: Any, arena: Arena, kind: str, name: str, hostile: bool = True) -> Any:
    """Values for a root field's arguments, each to be sent inline or as a variable."""
    args: dict[str, tuple[bool, Any]] = {}
    for arg_name, arg in ROOTS[kind][name].args.items():
        required = isinstance(arg.type, GraphQLNonNull)
        if hostile and required and draw(now_and_then(20)):
            continue  # a required argument left out, now and then
        if not required and draw(st.booleans()):
            continue
        if arg_name == "idempotencyKey":
            value = draw(idempotency_keys(hostile))
        else:
            value = draw(value_for(arena, arg.type, arg_name, hostile=hostile))
        args[arg_name] = (draw(st.booleans()), value)
    return args


def render(kind: str, name: str, args: dict[str, tuple[bool, Any]], escape: bool) -> Operation:
    declared, written, variables = [], [], {}
    for arg_name, (as_var, value) in args.items():
        if as_var:
            declared.append(f"${arg_name}: {ROOTS[kind][name].args[arg_name].type}")
            written.append(f"{arg_name}: ${arg_name}")
            variables[arg_name] = as_variable(value)
        else:
            written.append(f"{arg_name}: {literal(value, escape)}")
    head = f"{kind}({', '.join(declared)})" if declared else kind
    inside = f"({', '.join(written)})" if written else ""
    return Operation(kind, name, f"{head} {{ {name}{inside} {SELECTIONS[kind, name]} }}", variables)


@st.composite
def operations(draw: Any, arena: Arena, kind: str) -> Operation:
    name = draw(st.sampled_from(sorted(ROOTS[kind])))
    hostile = draw(st.booleans())  # else well-formed, to reach the deeper paths too
    return render(kind, name, draw(arguments(arena, kind, name, hostile)), draw(st.booleans()))


# ----- Position literals (the INTERNAL this fuzzer found first) -------------------------

POSITION_FIELDS = {
    "inclusionProof": "{{ inclusionProof(position: {}) {{ position }} }}",
    "treeHead": "{{ treeHead(size: {}) {{ treeSize }} }}",
    "events": "{{ events(after: {}) {{ edges {{ cursor }} }} }}",
    "accountAsOf": '{{ accountAsOf(id: "' + str(UUID(int=1)) + '", position: {}) {{ id }} }}',
}
INLINE = ['"abc"', '"£"', '"-1"', '""', "1.5", "99999999999999999999", "0x10", "true", "[1]"]


@pytest.mark.parametrize("written", INLINE)
@pytest.mark.parametrize("field_", POSITION_FIELDS)
def test_a_bad_position_literal_is_a_typed_validation_error(
    arena: Arena, field_: str, written: str
) -> None:
    body = arena.ask(POSITION_FIELDS[field_].format(written), {}, "regulator")
    assert body.get("data") is None
    (error,) = body["errors"]
    if written == "0x10":  # not a GraphQL number at all: a syntax error
        assert error["message"].startswith(SYNTAX), error
        assert error["extensions"]["code"] in REFUSED_DOCUMENT, error
        return
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED", error
    assert error["message"].startswith(f"Position cannot represent {written}: "), error
    assert "whole number from 0 to 2^63-1" in error["message"]
    assert error["locations"], error


@pytest.mark.parametrize("value", ["abc", "£", "-1", "", 1.5, 10**20, "0x10", "\u0661", "1" * 5000])
def test_a_bad_position_variable_is_a_typed_validation_error(arena: Arena, value: Any) -> None:
    body = arena.ask(
        "query($s: Position) { treeHead(size: $s) { treeSize } }", {"s": value}, "regulator"
    )
    (error,) = body["errors"]
    assert error["extensions"]["code"] in ("GRAPHQL_VALIDATION_FAILED", "BAD_USER_INPUT"), error
    assert "whole number from 0 to 2^63-1" in error["message"], error


def test_a_good_position_literal_still_works(arena: Arena) -> None:
    for written in ('"1"', "1"):
        body = arena.ask(POSITION_FIELDS["events"].format(written), {}, "regulator")
        assert "errors" not in body and body["data"]["events"]["edges"], body


@pytest.mark.parametrize(
    "query",
    [
        "{ treeHead(size: 0x10) { treeSize } }",
        "{ providers { ",
        "{ providers { " + "code " * 2100 + "} }",
    ],
)
def test_a_syntax_error_carries_a_code(arena: Arena, query: str) -> None:
    body = json.dumps({"query": query})
    response = arena.post(body, arena.tokens["regulator"])
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] in REFUSED_DOCUMENT, error


# ----- text filters (an INTERNAL the fuzzer found: NUL reached PostgreSQL) -------------

TEXT_FILTERS = [
    ("accounts", "category"),
    ("accounts", "kind"),
    ("sanctions", "level"),
    ("sanctions", "issuerRole"),
    ("sanctions", "appealState"),
    ("flaggedPosts", "metric"),
]


@pytest.mark.parametrize("text", ["\x00", "a\x00b", "\ud800", "x\udfff"])
@pytest.mark.parametrize(("field_", "name"), TEXT_FILTERS)
def test_a_text_filter_the_database_cannot_hold_is_bad_input(
    arena: Arena, field_: str, name: str, text: str
) -> None:
    for inline in (True, False):
        if inline:  # as a JSON escape inside a GraphQL string escape: \\u0000
            query = (
                f"{{ {field_}(filter: {{{name}: {json.dumps(text)}}}) {{ edges {{ cursor }} }} }}"
            )
            variables = {}
        else:
            query = (
                f"query($v: String) {{ {field_}(filter: {{{name}: $v}}) {{ edges {{ cursor }} }} }}"
            )
            variables = {"v": text}
        body = arena.ask(query, variables, "regulator")
        if inline and re.search("[\ud800-\udfff]", text):  # a lone surrogate escape:
            assert body["errors"][0]["extensions"]["code"] in REFUSED_DOCUMENT, body
            continue  # graphql-core's lexer refuses it
        (error,) = body["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT", error
        assert error["message"].startswith(f"filter.{name} must not contain the character U+")


# ----- the fuzzers ----------------------------------------------------------------------


def test_every_root_field_is_fuzzed() -> None:
    names = {(k, n) for k, fs in ROOTS.items() for n in fs}
    assert len(names) == len(SCHEMA.query_type.fields) + len(SCHEMA.mutation_type.fields)
    assert all(SELECTIONS[key] for key in names)


def _fuzz(arena: Arena, op: Operation) -> None:
    for role in ROLES:
        head = arena.server.ledger.head()
        body = arena.ask(op.query, op.variables, role)
        got = (body.get("data") or {}).get(op.field)
        if op.kind == "mutation" and not succeeded(got):
            assert arena.server.ledger.head() == head, (role, op.query, body)
        if role in ("anonymous", "bad token") and body.get("errors"):
            codes = {(e.get("extensions") or {}).get("code") for e in body["errors"]}
            allowed = {"UNAUTHENTICATED", "BAD_USER_INPUT", "PAYLOAD_TOO_LARGE", *REFUSED_DOCUMENT}
            assert codes <= allowed, body
        if role in ("anonymous", "bad token"):
            assert got is None or got == [] or body.get("errors"), body


@pytest.mark.timeout(300)
def test_fuzz_queries(arena: Arena) -> None:
    @fuzz_settings(150)
    @given(op=operations(arena, "query"))
    def run(op: Operation) -> None:
        with plainly(op):
            _fuzz(arena, op)

    run()


@pytest.mark.timeout(300)
def test_fuzz_mutations(arena: Arena) -> None:
    @fuzz_settings(150)
    @given(op=operations(arena, "mutation"))
    def run(op: Operation) -> None:
        with plainly(op):
            _fuzz(arena, op)

    run()


# ----- a provider reaching for the rival's records --------------------------------------

# Which of the rival's things an id argument names, by the argument's name.
ID_KINDS = {
    "accountId": ["account"],
    "postId": ["post"],
    "sourcePostId": ["post"],
    "evidencePostIds": ["post"],
    "sanctionId": ["sanction"],
    "providerId": ["provider"],
    "reportId": ["report"],
    "originatorId": ["account", "post", "provider"],
    "endpointId": ["endpoint"],
}
ID_ARGUMENT = {
    "account": "account",
    "accountAsOf": "account",
    "post": "post",
    "provider": "provider",
    "webhookEndpoint": "endpoint",
}


@dataclass(frozen=True)
class Target:
    kind: str
    field: str
    path: tuple[str, ...]  # argument, then input fields
    thing: str  # account, post, sanction, provider, report
    is_list: bool

    def __repr__(self) -> str:
        return f"{self.kind} {self.field}({'.'.join(self.path)}) <- the rival's {self.thing}"


def _id_paths(type_: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], bool]]:
    is_list = isinstance(type_, GraphQLList) or (
        isinstance(type_, GraphQLNonNull) and isinstance(type_.of_type, GraphQLList)
    )
    inner = unwrap(type_)
    if isinstance(inner, GraphQLScalarType) and inner.name == "ID":
        yield path, is_list
    elif isinstance(inner, GraphQLInputObjectType) and inner.name != "BatchCommand":
        for name, f in inner.fields.items():
            yield from _id_paths(f.type, (*path, name))


def _targets() -> list[Target]:
    found = []
    for kind, fields in ROOTS.items():
        for name, f in fields.items():
            for arg_name, arg in f.args.items():
                for path, is_list in _id_paths(arg.type, (arg_name,)):
                    leaf = path[-1]
                    things = [ID_ARGUMENT[name]] if leaf == "id" else ID_KINDS[leaf]
                    found += [Target(kind, name, path, t, is_list) for t in things]
    return found


TARGETS = _targets()


def place(args: dict[str, tuple[bool, Any]], target: Target, value: str) -> dict[str, Any]:
    """A copy of the arguments with the target set to `value`."""
    args = json.loads(json.dumps(args, default=_raw_to_json))  # a deep copy
    args = {k: (as_var, _raw_from_json(v)) for k, (as_var, v) in args.items()}
    first, *rest = target.path
    as_var, holder = args.get(first, (True, {} if rest else None))
    leaf = [value] if target.is_list else value
    if not rest:
        args[first] = (as_var, leaf)
        return args
    node = holder
    for name in rest[:-1]:
        node = node.setdefault(name, {})
    node[rest[-1]] = leaf
    args[first] = (as_var, holder)
    return args


def swap(args: dict[str, tuple[bool, Any]], old: str, new: str) -> dict[str, Any]:
    """A copy of the arguments with one id put in place of another wherever it is."""
    text = json.dumps(args, default=_raw_to_json).replace(old, new)
    return {k: (as_var, _raw_from_json(v)) for k, (as_var, v) in json.loads(text).items()}


def _raw_to_json(value: Any) -> Any:
    if isinstance(value, Raw):
        return {"__raw__": [value.text, value.as_variable]}
    raise TypeError(value)


def _raw_from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__raw__"}:
            return Raw(*value["__raw__"])
        return {k: _raw_from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_raw_from_json(v) for v in value]
    return value


def _fresh_keys(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("fuzz-"):
        return f"fuzz-{uuid.uuid4()}"
    if isinstance(value, dict):
        return {k: _fresh_keys(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_fresh_keys(v) for v in value)
    return value


def as_batch(target: Target, args: dict[str, tuple[bool, Any]]) -> dict[str, tuple[bool, Any]]:
    """A mutation's input as the one command of a batch."""
    entry = {"idempotencyKey": args["idempotencyKey"][1], target.field: args["input"][1]}
    return {"commands": (args["input"][0], [entry])}


KEYS = re.compile(r"fuzz-[0-9a-f-]{36}")


def comparable(body: dict[str, Any], value: str, kind: str) -> Any:
    """The answer with the id reached for and the idempotency keys blotted out."""
    data = (body.get("data") or {}).values()
    if kind == "mutation" and any(succeeded(d) for d in data):
        return "success"  # positions and results differ; a success must be one on both
    text = json.dumps(body, sort_keys=True).replace(value, "<id>")
    return json.loads(KEYS.sub("<key>", text))


@st.composite
def crossings(draw: Any, arena: Arena) -> tuple[Target, dict[str, Any], bool, bool]:
    target = draw(st.sampled_from(TARGETS))
    args = draw(arguments(arena, target.kind, target.field, hostile=False))
    for other in TARGETS:  # the other ids: mostly our own things, to get past their checks
        same = (other.kind, other.field) == (target.kind, target.field)
        if same and other.path != target.path and draw(st.integers(0, 2)) > 0:
            args = place(args, other, str(arena.mine[other.thing]))
    batch = target.kind == "mutation" and draw(now_and_then(3))
    return target, args, batch, draw(st.booleans())


def test_every_id_argument_is_a_target() -> None:
    fields = {(t.kind, t.field) for t in TARGETS}
    queries = {
        "account",
        "accountAsOf",
        "post",
        "provider",
        "history",
        "events",
        "accounts",
        "sanctions",
        "flaggedPosts",
    }
    mutations = set(SCHEMA.mutation_type.fields) - {"submitBatch", "registerProvider"}
    assert {("query", n) for n in queries} | {("mutation", n) for n in mutations} <= fields


@pytest.mark.timeout(300)
def test_fuzz_another_providers_records_look_missing(arena: Arena) -> None:
    arena.server.settle()

    @fuzz_settings(150)
    @given(case=crossings(arena))
    def run(case: tuple[Target, dict[str, Any], bool, bool]) -> None:
        target, args, batch, escape = case
        theirs = str(arena.theirs[target.thing])
        # The rival's id only where the target is, or blotting it out would hide a field.
        # (Not with assume(): that ends, in this test, in pytest INTERNALERRORs.)
        args = swap(args, theirs, str(arena.mine[target.thing]))
        head = arena.server.ledger.head()
        answers, ops = [], []
        with plainly(case):
            for value in (theirs, str(uuid.uuid4())):
                placed = _fresh_keys(place(args, target, value))
                if batch:
                    op = render("mutation", "submitBatch", as_batch(target, placed), escape)
                else:
                    op = render(target.kind, target.field, placed, escape)
                ops.append(op)
                body = arena.ask(op.query, op.variables, "provider")
                answers.append(comparable(body, value, target.kind))
            assert answers[0] == answers[1], (
                f"the rival's {target.thing} is not like a missing one:"
                f" {answers[0]} != {answers[1]} for {ops[0]!r}"
            )
            if answers[0] != "success":
                assert arena.server.ledger.head() == head, "a refused command wrote"

    run()


# ----- the transport: bodies, headers and methods --------------------------------------

MEDIA = [
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "application/graphql",
    "multipart/form-data",
    "",
    "application/x-www-form-urlencoded",
    "APPLICATION/JSON",
]
ACCEPT = [
    "",
    "application/json",
    "application/graphql-response+json",
    "text/event-stream",
    "*/*",
    "text/html",
    "application/xml",
    "application/json;q=abc",
    "*/*;q=0",
    "application/graphql-response+json, application/json;q=0.9",
]
QUERIES = [
    "{ providers { code } }",
    "{ ledgerStatus { head } }",
    "query Q { events(first: 2) { edges { cursor } } }",
    "query A { providers { code } } query B { ledgerStatus { head } }",
    "{ __typename }",
    "{ nope }",
    "{",
    "",
    "   ",
    "mutation { __typename }",
    "{}",
    "{ providers { } }",
    "mutation {}",
]
# Bodies nested past the depth where json.loads recurses too deep; values nested less, so
# that reporting a failing example cannot recurse too deep either.
NESTED = st.integers(1, 3000).map(lambda n: "[" * n + "]" * n)
NESTED_VALUE = st.integers(1, 40).map(lambda n: json.loads("[" * n + "]" * n))


@st.composite
def requests(draw: Any, arena: Arena) -> dict[str, Any]:
    fields = {
        "query": st.sampled_from(QUERIES) | TEXT | ANYTHING,
        "variables": st.none()
        | st.dictionaries(NAMES, ANYTHING, max_size=3)
        | ANYTHING
        | NESTED_VALUE.map(lambda n: {"x": n}),
        "operationName": st.none() | st.sampled_from(["A", "B", "Q", ""]) | TEXT | ANYTHING,
        "extensions": st.none() | ANYTHING,
    }
    document = draw(st.fixed_dictionaries({"query": fields.pop("query")}, optional=fields))
    ascii_only = draw(st.booleans())
    text = json.dumps(document, ensure_ascii=ascii_only)
    body = draw(
        st.one_of(
            st.just(text.encode("utf-8", "surrogatepass")),  # lone surrogates: not UTF-8
            st.binary(max_size=200),
            ANYTHING.map(lambda v: json.dumps(v).encode()),
            NESTED.map(str.encode),
            st.just(text.encode("utf-8", "surrogatepass")[: len(text) // 2]),
        )
    )
    method = draw(st.sampled_from(["POST"] * 6 + ["GET"] * 3 + ["PUT", "DELETE", "PATCH", "HEAD"]))
    token = draw(
        st.sampled_from([*(t for t in arena.tokens.values() if t), ""])
        | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
    )
    authorization = draw(st.sampled_from(["Bearer ", "bearer ", "Basic ", "", "Bearer  "])) + token
    headers = {
        "Content-Type": draw(st.sampled_from(MEDIA)),
        "Accept": draw(st.sampled_from(ACCEPT)),
        "Authorization": authorization,
    }
    headers = {k: v.strip() for k, v in headers.items() if v.strip()}  # h11 sends no other
    params = {}
    if method == "GET":
        params = {k: v if isinstance(v, str) else json.dumps(v) for k, v in document.items()}
        params = {
            k: v.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
            for k, v in params.items()
        }
        body = b""
    return {"method": method, "headers": headers, "params": params, "content": body}


def check_transport(arena: Arena, response: httpx.Response, method: str) -> None:
    let_the_server_log(response)
    assert response.status_code < 500, (response.status_code, response.text[:1000])
    if method == "HEAD" or response.status_code == 304:
        return
    media = response.headers.get("content-type", "").split(";")[0]
    if media == "text/event-stream":
        events = [
            line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")
        ]
        bodies = [json.loads(e) for e in events if e]
    elif media == "text/html":
        assert response.status_code == 200
        return
    else:
        assert media in ("application/json", "application/graphql-response+json"), response.headers
        bodies = [response.json()]
    for body in bodies:
        for error in body.get("errors") or []:
            code = (error.get("extensions") or {}).get("code")
            assert code and code != "INTERNAL", error
            assert not PYTHONISMS.search(error.get("message", "")), error


@pytest.mark.timeout(300)
def test_fuzz_the_transport(arena: Arena) -> None:
    @fuzz_settings(150)
    @given(request=requests(arena))
    def run(request: dict[str, Any]) -> None:
        head = arena.server.ledger.head()
        with plainly(request):
            response = arena.client.request(url=arena.server.url, **request)
            check_transport(arena, response, request["method"])
            assert arena.server.ledger.head() == head

    run()


def alone(arena: Arena, body: str | bytes, headers: Any) -> httpx.Response:
    """A request on a connection of its own (the server drops one after a 500)."""
    with httpx.Client(timeout=60) as client:
        return let_the_server_log(client.post(arena.server.url, content=body, headers=headers))


@pytest.mark.parametrize("role", ["regulator", "anonymous"])
def test_a_deeply_nested_body_is_a_bad_request(arena: Arena, role: str) -> None:
    for body in (
        b"[" * 100_000 + b"]" * 100_000,
        b'{"query": "{ __typename }", "variables": {"x": ' + b"[" * 5000 + b"]" * 5000 + b"}}",
    ):
        token = arena.tokens[role]
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = alone(arena, body, headers)
        assert response.status_code == 400, response.text
        assert response.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


@pytest.mark.parametrize("header", [b"Bearer \xff\xfe", b"Bearer lt_\x80", b"\xff"])
def test_an_authorization_header_that_is_not_utf8_is_unauthenticated(
    arena: Arena, header: bytes
) -> None:
    response = alone(
        arena,
        b'{"query": "{ providers { code } }"}',
        [(b"Content-Type", b"application/json"), (b"Authorization", header)],
    )
    assert response.status_code == 200, response.text
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


# Found by the transport fuzzer: the response cache answered every receive() after the
# body with http.disconnect, so a streamed answer was cancelled at once (fixed in
# api/cache.py, _replay now hands on the client's own messages).
@pytest.mark.parametrize("role", ["regulator", "provider"])
def test_a_query_over_server_sent_events_completes(arena: Arena, role: str) -> None:
    response = alone(
        arena,
        json.dumps({"query": "{ providers { code } }"}),
        {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "Authorization": f"Bearer {arena.tokens[role]}",
        },
    )
    assert response.status_code == 200
    assert "event: next" in response.text and "event: complete" in response.text


@pytest.mark.parametrize("accept", ["application/json", "text/event-stream"])
@pytest.mark.parametrize("query", ["{}", "{ providers { } }", "mutation {}"])
def test_an_empty_selection_set_is_refused(arena: Arena, accept: str, query: str) -> None:
    response = alone(
        arena,
        json.dumps({"query": query}),
        {
            "Content-Type": "application/json",
            "Accept": accept,
            "Authorization": f"Bearer {arena.tokens['regulator']}",
        },
    )
    assert response.status_code in (200, 400), response.text
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] in REFUSED_DOCUMENT, error
    assert not PYTHONISMS.search(error["message"]), error
