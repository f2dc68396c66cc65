"""Reads at PostgreSQL speed: a query operation over the read models compiles to one
SQL statement whose single result is the response's JSON, built by PostgreSQL
(json_build_object, json_agg, subqueries) and sent as the body as it comes.

Strawberry stays the schema and the path for everything else, decided per operation:
mutations (over HTTP they run without its executor: compiler/mutations.py),
subscriptions, introspection, `accountAsOf`, `events`, proofs, disclosures,
an invalid document or variables, an argument the resolvers would refuse (strawberry
then answers with its error), a request without a valid token. See docs/compiled-reads.md."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

import psycopg
from graphql import (
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    parse,
    specified_rules,
    validate,
)
from graphql.execution.values import VariableValues, get_variable_values

from api.auth import Principal
from api.graphql.compiler import cost
from api.graphql.compiler.cache import Lru, configured_size
from api.graphql.compiler.objects import Builder
from api.graphql.compiler.plan import Selection, select
from api.graphql.compiler.roots import ROOTS, Input
from api.graphql.compiler.sql import Unsupported, json_object, prefixed, prefixed_params
from api.graphql.errors import ApiError
from api.state import DATABASE_FAULTS, ApiState

log = logging.getLogger("ledger.api.compiler")
INTROSPECTION = frozenset({"__schema", "__type"})
# Roots whose statement has no keyset bound, page size or cursor, so that one plan serves
# every call; and the figures' lateral subqueries cost more to plan than to run. An
# operation of these alone keeps its plan (docs/compiled-reads.md, "Plans").
GENERIC_PLAN_ROOTS = frozenset({"provider", "providers", "ledgerStatus", "__typename"})
# Per statement: the session plans each run with its values (api.state.session_settings).
KEEP_PLAN = "SET LOCAL plan_cache_mode = force_generic_plan"


@dataclass(frozen=True)
class Answer:
    body: bytes
    overloaded: bool = False  # a mutation shed by its gate: 503 with Retry-After


@dataclass(frozen=True)
class Refused:
    error: dict[str, Any]


@dataclass(frozen=True)
class Fallback:
    reason: str


@dataclass(frozen=True)
class Prepared:
    """The statement to run and its parameters."""

    sql: str
    params: dict[str, Any]
    generic: bool = False  # prepared, and run with its generic plan (GENERIC_PLAN_ROOTS)


Outcome = Answer | Refused | Fallback


@dataclass
class Plan:
    """An operation for one shape of its variables and role: what it selects, why it
    falls back (None: it compiles), and once built, its statement."""

    selections: tuple[Selection, ...]
    reason: str | None
    units: tuple[int, ...] = ()  # each root's rows per row of its page (cost.unit)
    sql: str | None = None
    clauses: tuple[tuple[str, ...], ...] = ()


@dataclass
class Compiler:
    schema: GraphQLSchema
    rules: list[Any]
    max_tokens: int
    enabled: bool = True
    checked: Lru[tuple[str | None]] = field(default_factory=lambda: Lru(configured_size()))
    plans: Lru[Plan] = field(default_factory=lambda: Lru(configured_size()))

    async def answer(
        self,
        state: ApiState,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        query: str,
        raw_variables: dict[str, Any] | None,
        principal: Principal | None,
        token_hash: bytes | None = None,
    ) -> Outcome:
        """Answer a query operation, or say why strawberry should (or refuse it). With
        `token_hash`, the statement answers only while that token is valid (else the
        fallback `revoked`): the principal may come from an earlier request."""
        found = self.prepare(
            state, document, operation, query, raw_variables, principal, token_hash
        )
        if isinstance(found, Prepared):
            return await _fetch(state, found)
        return found

    def prepare(
        self,
        state: ApiState,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        query: str,
        raw_variables: dict[str, Any] | None,
        principal: Principal | None,
        token_hash: bytes | None = None,
    ) -> Prepared | Refused | Fallback:
        """The statement that answers a query operation, or why not."""
        if operation.operation is not OperationType.QUERY:
            return Fallback(operation.operation.value)
        if principal is None:
            return Fallback("unauthenticated")
        name = operation.name.value if operation.name else None
        digest = hashlib.blake2b(query.encode(), digest_size=16).digest()  # keys stay small
        (problem,) = self._checked(digest, name, document)
        if problem is not None:
            return Fallback(problem)
        variables = get_variable_values(
            self.schema, operation.variable_definitions or (), raw_variables or {}
        )
        if isinstance(variables, list):
            return Fallback("variables")
        key = (digest, name, principal.sees_everything, shape(variables.coerced))
        plan = self.plans.get(key) or self.plans.put(
            key, self._plan(state, document, operation, variables)
        )
        found = self._prepared(state, plan, variables, principal)
        if isinstance(found, Prepared) and token_hash is not None:
            return guarded(found, token_hash)
        return found

    def problem(self, query: str, name: str | None, document: DocumentNode) -> str | None:
        """Why a document fails the schema's validation or limits (None: it passes)."""
        digest = hashlib.blake2b(query.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        return self._checked(digest, name, document)[0]

    def _checked(
        self, digest: bytes, name: str | None, document: DocumentNode
    ) -> tuple[str | None]:
        """Whether a document passes the schema's validation and limits (cached)."""
        found = self.checked.get((digest, name))
        if found is None:
            found = self.checked.put((digest, name), (self._problem(document),))
        return found

    def _problem(self, document: DocumentNode) -> str | None:
        source = document.loc.source.body if document.loc else None
        if source is None:
            return "invalid"
        try:
            parse(source, max_tokens=self.max_tokens)
        except GraphQLError:
            return "invalid"
        if validate(self.schema, document, self.rules):
            return "invalid"
        return None

    def _plan(
        self,
        state: ApiState,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        variables: VariableValues,
    ) -> Plan:
        selections = select(self.schema, document, operation, variables)
        names = {s.name for s in selections}
        if names & INTROSPECTION:
            return Plan((), "introspection")
        units = tuple(cost.unit(s) for s in selections)
        if names - set(ROOTS) - {"__typename"}:
            return Plan(selections, "field", units)
        if "ledgerStatus" in names and state.replica:
            return Plan(selections, "replica", units)  # the head and lag are the primary's
        return Plan(selections, None, units)

    def _prepared(
        self, state: ApiState, plan: Plan, variables: VariableValues, principal: Principal
    ) -> Prepared | Refused | Fallback:
        try:
            roots = [(s, s.arguments(variables)) for s in plan.selections]
        except GraphQLError:
            return Fallback("arguments")
        figure, allowed = cost.total(plan.units, roots), cost.limit()
        if figure > allowed:
            return Refused(cost.refusal(figure, allowed))
        if plan.reason is not None:
            return Fallback(plan.reason)
        if not self.enabled:
            return Fallback("disabled")
        now = state.ledger.clock()
        try:
            inputs = [_input(s, args, principal, now) for s, args in roots]
        except ApiError:
            return Fallback("bad_input")  # strawberry answers with the resolver's error
        statement = self._statement(state, plan, principal, inputs)
        if statement is None:
            return Fallback("shape")
        params: dict[str, Any] = {"now": now}  # the clock, bound once
        if not principal.sees_everything:
            params["mine"] = principal.provider_id
        for i, found in enumerate(inputs):
            if found is not None:
                params.update(prefixed_params(found.params, f"r{i}_"))
        generic = all(s.name in GENERIC_PLAN_ROOTS for s in plan.selections)
        return Prepared(statement, params, generic)

    def _statement(
        self, state: ApiState, plan: Plan, principal: Principal, inputs: list[Input | None]
    ) -> str | None:
        clauses = tuple(i.clauses if i else () for i in inputs)
        if plan.sql is not None and plan.clauses == clauses:
            return plan.sql
        builder = Builder(
            confined=not principal.sees_everything,
            events_table=state.ledger.store.events_table.as_string(),
        )
        try:
            sql = statement(builder, plan.selections, clauses)
        except Unsupported as e:
            log.info("not compiled: %s", e)
            return None
        if plan.sql is None:
            plan.sql, plan.clauses = sql, clauses
        return sql


def _input(s: Selection, args: dict[str, Any], principal: Principal, now: datetime) -> Input | None:
    return None if s.name == "__typename" else ROOTS[s.name].inputs(principal, args, now)


def statement(
    b: Builder, selections: tuple[Selection, ...], clauses: tuple[tuple[str, ...], ...]
) -> str:
    """The one statement: `{"data": {...}}` as UTF-8 bytes."""
    pairs = []
    for i, (s, where) in enumerate(zip(selections, clauses, strict=True)):
        if s.name == "__typename":
            pairs.append((s.key, "'Query'"))
            continue
        pairs.append((s.key, prefixed(ROOTS[s.name].sql(b, s, where), f"r{i}_")))
    data = json_object([("data", json_object(pairs))])
    return f"SELECT convert_to({data}::text, 'UTF8') AS body"


GUARD = (
    "SELECT CASE WHEN EXISTS (SELECT FROM api_tokens WHERE token_hash = %(token)s"
    " AND revoked_at IS NULL) THEN ({statement}) END AS body"
)


def guarded(prepared: Prepared, token_hash: bytes) -> Prepared:
    """The statement, answering null unless the token is valid as it runs."""
    sql = GUARD.replace("{statement}", prepared.sql)
    return Prepared(sql, {**prepared.params, "token": token_hash}, prepared.generic)


async def fetch_body(conn: psycopg.AsyncConnection[Any], prepared: Prepared) -> Any:
    """The statement's one row. A generic one runs prepared, with the plan it was
    prepared with kept (one round trip: the SET LOCAL and the statement pipelined in a
    transaction, which also ends the SET, whatever happens)."""
    if not prepared.generic:
        cur = await conn.execute(prepared.sql, prepared.params, binary=True)
        return await cur.fetchone()
    async with conn.pipeline(), conn.transaction():
        await conn.execute(KEEP_PLAN, prepare=True)
        cur = await conn.execute(prepared.sql, prepared.params, binary=True, prepare=True)
    return await cur.fetchone()


async def _fetch(state: ApiState, prepared: Prepared) -> Outcome:
    try:
        async with state.pool.connection() as conn:
            row: Any = await fetch_body(conn, prepared)
    except DATABASE_FAULTS as e:
        log.warning("compiled read failed, strawberry answers: %s", type(e).__name__)
        return Fallback("error")
    except psycopg.Error:
        log.exception("compiled read failed, strawberry answers")
        return Fallback("error")
    if row["body"] is None:  # the token was revoked (or is unknown) since it was seen
        return Fallback("revoked")
    return Answer(bytes(row["body"]))


def shape(value: Any) -> Any:
    """What of a variable's value decides the statement's text: nulls, booleans
    (@include, @skip, filters), enum values; the rest are parameters."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, Enum):
        return ("enum", value.value)
    if isinstance(value, dict):
        return tuple((k, shape(v)) for k, v in value.items())
    if isinstance(value, list):
        return tuple(shape(v) for v in value)
    return "value"


def build_compiler(schema: GraphQLSchema) -> Compiler:
    from api.graphql.schema import MAX_TOKENS, RULES

    return Compiler(schema=schema, rules=[*specified_rules, *RULES], max_tokens=MAX_TOKENS)
