"""Scalars: log positions are 64-bit, beyond GraphQL's 32-bit Int, so they travel as
decimal strings; opaque cursors are base64 of a kind and a position."""

from __future__ import annotations

import base64
import binascii
from typing import NewType

import strawberry

from api.graphql.errors import bad_input

MAX_POSITION = 2**63 - 1


def _parse_position(value: object) -> int:
    text = str(value)
    if isinstance(value, bool) or not text.isdigit() or int(text) > MAX_POSITION:
        raise ValueError(f"a position is a whole number from 0 to 2^63-1, not {text[:40]!r}")
    return int(text)


Position = NewType("Position", int)

POSITION_SCALAR = strawberry.scalar(
    name="Position",
    description="A position in the event log: a 64-bit whole number, sent as a string.",
    serialize=str,
    parse_value=_parse_position,
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
