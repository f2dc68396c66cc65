"""Mutations without strawberry's executor: a mutation document is validated and
planned once per (document, operation, shape of its variables); each request then
coerces its variables (graphql-core), puts the input straight into the command
dataclass, runs the command as the resolver does (`Ledger.execute` on the store's
executor) and writes the union member it answers with, and the fields selected on it, as
JSON. Strawberry stays the reference (the same `success` and `error_payload` build the
answer's values, the schema's scalars serialize them) and answers what is not planned
here: `submitBatch`, several root fields, a bad argument, a caller without a valid token.
See docs/compiled-reads.md#mutations."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    GraphQLError,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
    OperationDefinitionNode,
    get_named_type,
    located_error,
)
from graphql.execution.collect_fields import FieldDetails, collect_fields, collect_subfields
from graphql.execution.values import VariableValues, get_argument_values, get_variable_values
from strawberry.utils.str_converters import to_camel_case

from api import logs
from api.admission import Overloaded
from api.auth import Principal
from api.graphql.compiler import Answer, shape
from api.graphql.compiler.cache import Lru, configured_size
from api.graphql.compiler.plan import fragments
from api.graphql.errors import coded, shape_error
from api.graphql.mutations import _snake, error_payload, success, with_secret
from api.state import ApiState, DatabaseUnavailable
from ledger import commands as c
from ledger import errors

log = logging.getLogger("ledger.api.compiler")

# A member's fields: (response key, the value's attribute, how the schema serializes it);
# the attribute None: __typename.
Fields = tuple[tuple[str, str | None, Any], ...]


@dataclass(frozen=True)
class MutationPlan:
    """What a mutation operation does for one shape of its variables (None: fall back)."""

    reason: str | None
    key: str = ""
    command: type[c.Command] | None = None
    details: tuple[FieldDetails, ...] = ()
    members: dict[str, Fields] = dataclasses.field(default_factory=dict)


# The command behind each mutation field, and its input's GraphQL names to the dataclass's.
COMMANDS = {to_camel_case(_snake(cmd.__name__)): cmd for cmd in c.ALL_COMMANDS}
INPUT_NAMES = {
    cmd: {to_camel_case(f.name): f.name for f in dataclasses.fields(cmd)} for cmd in c.ALL_COMMANDS
}


@dataclass
class MutationCompiler:
    schema: GraphQLSchema
    plans: Lru[MutationPlan] = dataclasses.field(default_factory=lambda: Lru(configured_size()))

    def plan(
        self,
        digest: bytes,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        variables: VariableValues,
    ) -> MutationPlan:
        name = operation.name.value if operation.name else None
        key = (digest, name, shape(variables.coerced))
        return self.plans.get(key) or self.plans.put(
            key, self._plan(document, operation, variables)
        )

    def _plan(
        self, document: DocumentNode, operation: OperationDefinitionNode, variables: VariableValues
    ) -> MutationPlan:
        root = self.schema.mutation_type
        assert root is not None
        found = fragments(document)
        grouped = collect_fields(self.schema, found, variables, root, operation)
        roots = list(grouped.grouped_field_set.items())
        if len(roots) != 1:
            return MutationPlan("fields")
        key, details = roots[0]
        command = COMMANDS.get(details[0].node.name.value)
        if command is None:
            return MutationPlan("field")  # submitBatch, a disclosure, __typename
        union = get_named_type(root.fields[details[0].node.name.value].type)
        assert isinstance(union, GraphQLUnionType)
        members = {
            member.name: self._fields(member, found, variables, operation, details)
            for member in union.types
        }
        return MutationPlan(None, key, command, tuple(details), members)

    def _fields(
        self,
        member: GraphQLObjectType,
        found: Any,
        variables: VariableValues,
        operation: OperationDefinitionNode,
        details: list[FieldDetails],
    ) -> Fields:
        sub = collect_subfields(self.schema, found, variables, operation, member, details)
        out: list[tuple[str, str | None, Any]] = []
        for key, field_details in sub.grouped_field_set.items():
            name = field_details[0].node.name.value
            if name == "__typename":
                out.append((key, None, None))
                continue
            scalar = get_named_type(member.fields[name].type)
            out.append((key, snake(name), getattr(scalar, "serialize", None)))
        return tuple(out)


async def execute(
    state: ApiState,
    plan: MutationPlan,
    variables: VariableValues,
    principal: Principal,
) -> bytes | str | Answer:
    """The answer's body, or why strawberry answers instead (or the error answer)."""
    assert plan.command is not None
    field = plan.details[0]
    root = state.extras["compiler"].schema.mutation_type
    try:
        args = get_argument_values(root.fields[field.node.name.value], field.node, variables)
    except GraphQLError:
        return "arguments"
    names = INPUT_NAMES[plan.command]
    given = {names[k]: v for k, v in args["input"].items() if v is not None}
    try:
        command = plan.command(
            actor=principal.actor, idempotency_key=args["idempotencyKey"], **given
        )
        result = await state.blocking(state.ledger.execute, command)
        value: Any = success(result)
        if "key_id" in result.value:  # registration and rotation show the new secret once
            value = await state.blocking(with_secret, value, result, state.ledger)
    except errors.LedgerError as e:
        value = error_payload(e, principal.role)
        logs.note_outcome(value.code)
    except (Overloaded, DatabaseUnavailable) as e:
        return failed(plan, e)
    member = type(value).__name__
    written = {
        key: member if attribute is None else _serialized(getattr(value, attribute), serialize)
        for key, attribute, serialize in plan.members[member]
    }
    return encode({"data": {plan.key: written}})


def failed(plan: MutationPlan, error: Exception) -> Answer:
    """The answer strawberry gives when the resolver raises this: `data` null, the error
    at the field's path, shaped by ErrorPolicy (OVERLOADED: 503, as api.http sends it)."""
    field = plan.details[0].node
    shaped = shape_error(located_error(error, [field], [plan.key]))
    formatted = coded(dict(shaped.formatted))
    logs.note_outcome(formatted["extensions"]["code"])
    body = encode({"data": None, "errors": [formatted]})
    return Answer(body, overloaded=isinstance(error, Overloaded))


def _serialized(value: Any, serialize: Any) -> Any:
    return None if value is None else serialize(value)


def encode(value: Any) -> bytes:
    """As api.http's `encode` writes it (json.dumps, compact, not ASCII-escaped); orjson
    where it can, json where it cannot (a lone surrogate, an integer past 64 bits)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        try:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
        except UnicodeEncodeError:
            return json.dumps(value, separators=(",", ":")).encode()


def query_digest(query: str) -> bytes:
    return hashlib.blake2b(query.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def snake(name: str) -> str:
    return "".join(f"_{ch.lower()}" if ch.isupper() else ch for ch in name)


def coerced(
    schema: GraphQLSchema, operation: OperationDefinitionNode, raw: dict[str, Any] | None
) -> VariableValues | None:
    found = get_variable_values(schema, operation.variable_definitions or (), raw or {})
    return None if isinstance(found, list) else found
