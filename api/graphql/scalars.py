"""Scalars: log positions are 64-bit, beyond GraphQL's 32-bit Int, so they travel as
decimal strings; opaque cursors are base64 of a kind and a position."""

from __future__ import annotations

import base64
import binascii
from typing import Any, NewType

import strawberry
from graphql import GraphQLError, ValueNode
from graphql.language import print_ast
from graphql.utilities import value_from_ast_untyped

from api.graphql.errors import bad_input

MAX_POSITION = 2**63 - 1
POSITION_RULE = "a position is a whole number from 0 to 2^63-1"


def _parse_position(value: object) -> int:
    text = value if isinstance(value, str) else str(value)
    # ASCII digits only (str.isdigit also takes "²" and "٣"), and short enough for int().
    digits = text.isascii() and text.isdigit() and len(text) <= len(str(MAX_POSITION))
    if isinstance(value, bool) or not digits or int(text) > MAX_POSITION:
        raise ValueError(f"{POSITION_RULE}, not {text[:40]!r}")
    return int(text)


def _parse_position_literal(node: ValueNode, variables: dict[str, Any] | None = None) -> int:
    """A Position written in the query text. graphql-core reports a GraphQLError raised
    here as it is (any other exception would surface as INTERNAL), so refuse with a typed
    validation error pointing at the literal."""
    literal = getattr(node, "value", None)
    if not isinstance(literal, str):  # a list, an object, null or a variable
        try:
            literal = value_from_ast_untyped(node, variables)
        except Exception:  # whatever it is, it is no position
            literal = None
    try:
        return _parse_position(literal)
    except ValueError:
        shown = print_ast(node)
        shown = shown if len(shown) <= 40 else shown[:40] + "..."
        raise GraphQLError(
            f"Position cannot represent {shown}: {POSITION_RULE}, sent as a string.",
            nodes=[node],
            extensions={"code": "GRAPHQL_VALIDATION_FAILED"},
        ) from None


Position = NewType("Position", int)

POSITION_SCALAR = strawberry.scalar(
    name="Position",
    description="A position in the event log: a 64-bit whole number, sent as a string.",
    serialize=str,
    parse_value=_parse_position,
    parse_literal=_parse_position_literal,
)


def encode_cursor(kind: str, position: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{position}".encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str | None) -> int:
    """The position a cursor of this kind stands for (0 for none)."""
    if cursor is None:
        return 0
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        found, _, position = raw.partition(":")
        if found != kind:
            raise ValueError
        return _parse_position(position)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise bad_input(f"not a cursor of this list: {cursor[:60]!r}") from None
