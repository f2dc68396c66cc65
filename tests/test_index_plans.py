"""Every filter the API offers is served by an index, with the planner's statistics of
a large data set: the read tables are filled with synthetic rows straight in SQL, the
GraphQL queries run through the schema's resolvers and through the compiler (so the SQL
is what the API issues on either path), and the plan of each statement is asked for
(EXPLAIN) and searched for a sequential scan of a read table."""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any
from uuid import UUID

import psycopg
import pytest
from graphql import parse
from psycopg import sql
from psycopg.rows import DictRow

from api.auth import Principal
from api.graphql.compiler import Prepared, build_compiler
from api.graphql.context import Context
from api.graphql.scalars import encode_cursor
from api.graphql.schema import schema
from ledger import Role
from projections.runner import Projector

Reader = psycopg.Connection[DictRow]
NOW = datetime(2024, 6, 1, tzinfo=UTC)
NOW_SQL = f"'{NOW.isoformat()}'::timestamptz"
ACCOUNTS = 200_000
PROVIDERS = 20
WATCHED = {"accounts", "sanctions", "history", "posts", "flagged_posts"}
READ_LIMIT = ACCOUNTS // 20


def uid(prefix: str, n: str) -> str:
    """SQL for a stable uuid from a prefix and an SQL integer expression."""
    return f"md5('{prefix}' || ({n}))::uuid"


PROVIDER_OF = f"{uid('provider', '({n}) % ' + str(PROVIDERS))}"
LADDER = "(ARRAY['warning','publishing_restricted','updates_suspended','closed'])"
CATEGORIES = "(ARRAY['news_agency','news_website','government','enterprise','individual'])"

FILL = (
    "SET LOCAL synchronous_commit = off",
    "INSERT INTO providers (provider_id, code, name, licence_ref, registered_at, position,"
    f" last_position) SELECT {uid('provider', 'i')}, 'p' || i, 'P', 'L', {NOW_SQL}, i, i"
    f" FROM generate_series(0, {PROVIDERS - 1}) i",
    # A fifth public; 1% closed for good; 2.5% suspended and 3.3% restricted, half of
    # them lapsed; a tenth unverified; 0.5% marked.
    "INSERT INTO accounts (account_id, provider_id, handle, kind, category, legacy,"
    " registered_at, verified, marked, default_scopes, news_scopes, closed_until,"
    " suspended_until, restricted_until, position, last_position)"
    f" SELECT {uid('account', 'i')}, {PROVIDER_OF.format(n='i')}, 'h' || i,"
    " CASE WHEN i % 5 = 0 THEN 'public' ELSE 'personal' END,"
    f" CASE WHEN i % 5 = 0 THEN {CATEGORIES}[1 + i % 5] END, i % 50 = 0,"
    " {NOW_SQL} - interval '1 minute' * i, i % 10 <> 0, i % 200 = 0, '{}', '{}',"
    " CASE WHEN i % 100 = 1 THEN 'infinity'::timestamptz END,"
    " CASE WHEN i % 40 = 2 THEN {NOW_SQL} + interval '1 hour' * (i % 400 - 200) END,"
    " CASE WHEN i % 30 = 3 THEN {NOW_SQL} + interval '1 hour' * (i % 300 - 150) END,"
    f" i * 10, i * 10 FROM generate_series(1, {ACCOUNTS}) i",
    "INSERT INTO sanctions (sanction_id, account_id, provider_id, level, rule_ids,"
    " evidence_post_ids, reason, issuer_id, issuer_role, imposed_at, expires_at,"
    " appeal_state, position, last_position)"
    f" SELECT {uid('sanction', 'i')}, {uid('account', 'i * 3')},"
    f" {PROVIDER_OF.format(n='i * 3')}, {LADDER}[1 + i % 4], '{{art.9}}', '{{}}', 'r', 'x',"
    " CASE WHEN i % 3 = 0 THEN 'provider' ELSE 'regulator' END,"
    " {NOW_SQL} - interval '1 minute' * i, {NOW_SQL} + interval '1 hour' * (i % 100 - 50),"
    " CASE i % 50 WHEN 0 THEN 'pending' WHEN 1 THEN 'upheld' WHEN 2 THEN 'overturned'"
    " ELSE 'none' END, i * 10 + 1, i * 10 + 1"
    f" FROM generate_series(1, {ACCOUNTS // 3}) i",
    "INSERT INTO history (position, account_id, provider_id, type, at, rule_ids, summary)"
    f" SELECT i * 10 + 2, {uid('account', f'i % {ACCOUNTS} + 1')},"
    f" {PROVIDER_OF.format(n=f'i % {ACCOUNTS} + 1')}, 'Account.Reviewed',"
    " {NOW_SQL} - interval '10 seconds' * i, '{}', 's'"
    f" FROM generate_series(1, {ACCOUNTS * 2}) i",
    "INSERT INTO posts (post_id, account_id, provider_id, ref, origin, category,"
    " content_sha256, published_at, position, last_position)"
    f" SELECT {uid('post', 'i')}, {uid('account', 'i')}, {PROVIDER_OF.format(n='i')},"
    " 'r' || i, 'original', 'other', 'x', {NOW_SQL} - interval '1 minute' * i,"
    f" i * 10 + 3, i * 10 + 3 FROM generate_series(1, {ACCOUNTS // 2}) i",
    "INSERT INTO flagged_posts (post_id, metric, threshold, value, account_id, provider_id,"
    " crossed_at, removed_at, position)"
    f" SELECT {uid('post', 'i')}, m.metric, 500, 600, {uid('account', 'i')},"
    f" {PROVIDER_OF.format(n='i')}, {NOW_SQL} - interval '1 minute' * i,"
    " CASE WHEN i % 20 = 0 THEN {NOW_SQL} END, i * 10 + 4 + m.k"
    f" FROM generate_series(1, {ACCOUNTS // 8}) i,"
    " (VALUES ('views', 0), ('reposts', 1)) m(metric, k) WHERE i % 2 = 0 OR m.k = 0",
    "ANALYZE",
)


@pytest.fixture
def big(projector: Projector, reader: Reader) -> Reader:
    with reader.transaction():
        for statement in FILL:
            reader.execute(statement.replace("{NOW_SQL}", NOW_SQL))  # type: ignore[arg-type]
    return reader


@dataclass
class Ledgerish:
    store: Any = field(
        default_factory=lambda: SimpleNamespace(events_table=sql.Identifier("stored_events"))
    )

    def clock(self) -> datetime:
        return NOW


@dataclass
class RecordingState:
    """What the resolvers and the compiler need of ApiState: reads, answered from the
    test's schema and recorded with their parameters."""

    conn: Reader
    ledger: Ledgerish = field(default_factory=Ledgerish)
    issued: list[tuple[str, Any]] = field(default_factory=list)
    replica: bool = False

    async def fetch(self, query: Any, params: Any = None, **_: Any) -> list[dict[str, Any]]:
        self.issued.append((str(query), params))
        return self.conn.execute(query, params).fetchall()


def provider(n: int) -> UUID:
    """The id `uid('provider', n)` gives in SQL."""
    return UUID(bytes=hashlib.md5(f"provider{n}".encode()).digest())


def account(n: int) -> UUID:
    return UUID(bytes=hashlib.md5(f"account{n}".encode()).digest())


REGULATOR = Principal("t1", "inspector", Role.REGULATOR, None)
PROVIDER = Principal("t2", "ops", Role.PROVIDER, provider(1))

STATUSES = ("ACTIVE", "PUBLISHING_RESTRICTED", "UPDATES_SUSPENDED", "CLOSED")
ACCOUNT_FILTERS = [
    "{}",
    f'{{providerId: "{provider(3)}"}}',
    *(f"{{status: {s}}}" for s in STATUSES),
    *(f'{{status: {s}, providerId: "{provider(3)}"}}' for s in STATUSES),
    *(f'{{status: {s}, kind: "public"}}' for s in STATUSES),
    '{category: "news_agency"}',
    '{kind: "public"}',
    '{kind: "personal"}',
    "{verified: true}",
    "{verified: false}",
    "{marked: true}",
    "{marked: false}",
    f'{{providerId: "{provider(3)}", verified: false}}',
    f'{{providerId: "{provider(3)}", marked: true}}',
]
SANCTION_FILTERS = [
    "{}",
    f'{{providerId: "{provider(3)}"}}',
    f'{{accountId: "{account(6)}"}}',
    '{level: "closed"}',
    '{issuerRole: "provider"}',
    '{issuerRole: "regulator"}',
    '{appealState: "pending"}',
    '{appealState: "none"}',
    '{imposedSince: "2024-05-31T00:00:00Z"}',
    '{imposedUntil: "2024-01-01T00:00:00Z"}',
    f'{{providerId: "{provider(3)}", level: "warning"}}',
]
FLAGGED_FILTERS = [
    "{}",
    f'{{providerId: "{provider(3)}"}}',
    f'{{accountId: "{account(16)}"}}',
    '{metric: "reposts"}',
    "{removed: true}",
    "{removed: false}",
    '{since: "2024-05-31T00:00:00Z"}',
    '{until: "2024-01-01T00:00:00Z"}',
]
HISTORY_RANGES = ["", ', since: "2024-05-31T00:00:00Z"', ', until: "2024-05-01T00:00:00Z"']


def queries() -> list[str]:
    after = encode_cursor("account", ACCOUNTS * 5)
    found = [
        f"{{ accounts(filter: {f}) {{ edges {{ node {{ id status }} }} }} }}"
        for f in ACCOUNT_FILTERS
    ]
    found += [
        f'{{ accounts(filter: {f}, after: "{after}") {{ edges {{ node {{ id }} }} }} }}'
        for f in ACCOUNT_FILTERS[:6]
    ]
    found += [
        f"{{ sanctions(filter: {f}) {{ edges {{ node {{ id account {{ id }} }} }} }} }}"
        for f in SANCTION_FILTERS
    ]
    found += [
        f"{{ flaggedPosts(filter: {f}) {{ edges {{ node {{ post {{ id }} }} }} }} }}"
        for f in FLAGGED_FILTERS
    ]
    found += [
        f'{{ history(accountId: "{account(7)}"{r}) {{ edges {{ node {{ type }} }} }} }}'
        for r in HISTORY_RANGES
    ]
    found += [
        f'{{ account(id: "{account(5)}") {{ id }} }}',
        f'{{ post(id: "{UUID(int=5)}") {{ id }} }}',
        "{ providers { accounts accountsByStatus { key count } resolutionSecondsP50 } }",
        f'{{ provider(id: "{provider(2)}") {{ openReports sanctionsByLevel {{ key }} }} }}',
    ]
    return found


COMPILER = build_compiler(schema._schema)


def issued(conn: Reader, principal: Principal, query: str) -> list[tuple[str, Any]]:
    """The statements strawberry's resolvers run for `query` (the loaders' included),
    and the one the compiled path runs for it."""
    state = RecordingState(conn)
    context = Context(state=state, request=None, response=None, principal=principal)  # type: ignore[arg-type]
    result = asyncio.run(schema.execute(query, context_value=context))
    assert not result.errors, (query, result.errors)
    document = parse(query)
    (operation,) = document.definitions
    compiled = COMPILER.prepare(state, document, operation, query, None, principal)  # type: ignore[arg-type]
    assert isinstance(compiled, Prepared), (query, compiled)
    return [*state.issued, (compiled.sql, compiled.params)]


def scans(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The plan's nodes that read a watched table."""
    found = [plan] if plan.get("Relation Name") in WATCHED else []
    for child in plan.get("Plans", ()):
        found += scans(child)
    return found


def explain(conn: Reader, query: str, params: Any, *options: str) -> list[dict[str, Any]]:
    head = ", ".join(("FORMAT JSON", *options))
    row = conn.execute(f"EXPLAIN ({head}) {query}", params).fetchone()  # type: ignore[arg-type]
    assert row is not None
    (plan,) = row["QUERY PLAN"]
    return scans(plan["Plan"])


def rows_read(scan: dict[str, Any]) -> int:
    """Rows a scan node touched: those it returned and those its filters threw away."""
    kept = scan["Actual Rows"] + scan.get("Rows Removed by Filter", 0)
    return int((kept + scan.get("Rows Removed by Index Recheck", 0)) * scan["Actual Loops"])


def statements(conn: Reader) -> list[tuple[str, str, str, Any]]:
    """(role, GraphQL query, SQL, parameters) of every read the queries make."""
    return [
        (principal.role.value, query, sql_text, params)
        for principal in (REGULATOR, PROVIDER)
        for query in queries()
        for sql_text, params in issued(conn, principal, query)
    ]


def sequential_scans(found: list[tuple[str, str, str, Any]], conn: Reader) -> list[Any]:
    return [
        (role, query, scan["Relation Name"])
        for role, query, sql_text, params in found
        for scan in explain(conn, sql_text, params)
        if scan["Node Type"] == "Seq Scan"
    ]


def single_filter(query: str) -> bool:
    found = re.search(r"filter: \{([^}]*)\}", query)
    return found is None or "," not in found.group(1)


def walks(found: list[tuple[str, str, str, Any]], conn: Reader) -> list[Any]:
    """Scans of a single filter's statements (a provider's: with its confinement) that
    touched more than READ_LIMIT rows, as a walk of an index in page order that filters
    row by row does when few rows match."""
    return [
        (role, query, scan.get("Index Name"), rows_read(scan))
        for role, query, sql_text, params in found
        if single_filter(query)
        for scan in explain(conn, sql_text, params, "ANALYZE")
        if rows_read(scan) > READ_LIMIT
    ]


def test_every_filter_is_served_by_an_index(big: Reader) -> None:
    found = statements(big)
    assert len(found) > 2 * len(queries())
    assert sequential_scans(found, big) == []
    assert walks(found, big) == []
