"""The worst-case number of rows an operation reads: a connection reads its page size
(`first`, 50 when not given) times the rows above it, and every other object selected
one row per row above it (so the product of `first` over the nesting). An operation
over the limit is refused before anything runs, compiled or not."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    GraphQLSchema,
    OperationType,
    get_operation_ast,
)
from graphql.execution.values import get_variable_values
from strawberry.extensions import SchemaExtension

from api.graphql.compiler.plan import Selection, select
from api.graphql.reads import DEFAULT_PAGE, MAX_PAGE

LIMIT_VARIABLE = "LEDGER_QUERY_COST_LIMIT"
DEFAULT_LIMIT = 10_000
WRAPPERS = ("Connection", "Edge", "PageInfo")  # carry no row of their own


def limit() -> int:
    return int(os.environ.get(LIMIT_VARIABLE, DEFAULT_LIMIT))


def page(args: Mapping[str, Any]) -> int:
    """A connection's rows: its `first`, within the range page_size accepts (a value
    outside it is refused as bad input anyway)."""
    first = args.get("first")
    if not isinstance(first, int) or isinstance(first, bool):
        return DEFAULT_PAGE
    return max(1, min(first, MAX_PAGE))


def rows(selection: Selection, args: Mapping[str, Any], above: int = 1) -> int:
    """Rows read for one selection (with its arguments), `above` rows over it: a
    connection reads its page (whatever it selects of it), any other object one row per
    row above it (a connection's nodes are its page, counted once)."""
    if not selection.children:
        return 0
    if selection.type_name.endswith("Connection"):
        here = above * page(args)
        return here + sum(rows(c, {}, here) for c in selection.children)
    own = 0 if selection.type_name.endswith(WRAPPERS) or selection.name == "node" else above
    return own + sum(rows(c, {}, above) for c in selection.children)


def unit(selection: Selection) -> int:
    """Rows a root selection reads per row of its page (a connection's page size is the
    only argument that counts: the rows are linear in it), or in all (any other)."""
    return rows(selection, {"first": 1})


def total(units: Sequence[int], roots: Iterable[tuple[Selection, Mapping[str, Any]]]) -> int:
    """The operation's rows, from its roots' units and arguments."""
    return sum(
        n * (page(args) if s.type_name.endswith("Connection") else 1)
        for n, (s, args) in zip(units, roots, strict=True)
    )


def refusal(cost: int, allowed: int) -> dict[str, Any]:
    return {
        "message": f"the query may read {cost} rows, over the limit of {allowed}"
        f" ({LIMIT_VARIABLE}): ask for smaller pages or fewer lists",
        "extensions": {"code": "QUERY_TOO_COSTLY", "cost": cost, "limit": allowed},
    }


def operation_rows(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    raw_variables: dict[str, Any] | None,
) -> int | None:
    """The rows a query operation may read (None: not a query, or variables strawberry
    will refuse)."""
    operation = get_operation_ast(document, operation_name)
    if operation is None or operation.operation is not OperationType.QUERY:
        return None
    variables = get_variable_values(
        schema, operation.variable_definitions or (), raw_variables or {}
    )
    if isinstance(variables, list):
        return None
    try:
        roots = [
            (s, s.arguments(variables)) for s in select(schema, document, operation, variables)
        ]
    except GraphQLError:
        return None
    return total([unit(s) for s, _ in roots], roots)


class CostLimit(SchemaExtension):
    """The limit wherever strawberry runs a query: over the WebSocket, and over HTTP when
    the compiler falls back (it has then counted the rows too; counting again is cheap
    beside strawberry's execution). Refused with QUERY_TOO_COSTLY before it executes."""

    def on_execute(self) -> Iterator[None]:
        ec = self.execution_context
        if ec.graphql_document is not None and ec.result is None:
            schema = ec.schema._schema
            rows = operation_rows(schema, ec.graphql_document, ec.operation_name, ec.variables)
            allowed = limit()
            if rows is not None and rows > allowed:
                error = refusal(rows, allowed)
                refused = GraphQLError(error["message"], extensions=error["extensions"])
                ec.result = ExecutionResult(data=None, errors=[refused])
        yield
