"""Reading the projection tables: keyset pages over indexed columns, confined to what
the principal may see."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import UUID

from api.auth import Principal
from api.graphql.errors import bad_input
from api.graphql.scalars import decode_cursor, encode_cursor
from api.graphql.types import Connection, Edge, PageInfo
from api.state import ApiState

T = TypeVar("T")
MAX_PAGE = 500
DEFAULT_PAGE = 50


def visible_provider(principal: Principal) -> UUID | None:
    """The provider a principal is confined to (None: sees everything)."""
    return None if principal.sees_everything else principal.provider_id


def parse_id(value: str, what: str = "id") -> UUID:
    try:
        return UUID(str(value))
    except ValueError:
        raise bad_input(f"{what} is not a valid id: {str(value)[:60]!r}") from None


# What PostgreSQL cannot take in a text parameter: NUL, and lone surrogates (no UTF-8).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def text_filter(value: str | None, what: str) -> str | None:
    """A text to match against a column. No stored text holds NUL or a lone surrogate,
    and the database refuses them as parameters, so they are bad input, not a fault."""
    if value is not None and (bad := _UNSTORABLE.search(value)):
        raise bad_input(f"{what} must not contain the character U+{ord(bad.group()):04X}")
    return value


def page_size(first: int | None) -> int:
    size = DEFAULT_PAGE if first is None else first
    if not 1 <= size <= MAX_PAGE:
        raise bad_input(f"first must be from 1 to {MAX_PAGE}, not {size}")
    return size


def page_bounds(kind: str, first: int | None, after: str | None) -> tuple[int, int]:
    """A page's size and the key it starts after (checked: bad input raises)."""
    return page_size(first), decode_cursor(kind, after)


@dataclass
class Where:
    """WHERE clauses with named parameters, built up filter by filter."""

    clauses: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def add(self, clause: str, **params: Any) -> Where:
        self.clauses.append(clause)
        self.params.update(params)
        return self

    def when(self, value: Any, clause: str, name: str) -> Where:
        if value is not None:
            self.add(clause, **{name: value})
        return self

    def sql(self) -> str:
        return " AND ".join(self.clauses) if self.clauses else "true"


async def rows(state: ApiState, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return await state.fetch(query, params)


async def keyset_page(
    state: ApiState,
    *,
    kind: str,
    select: str,
    where: Where,
    first: int | None,
    after: str | None,
    make: Callable[[dict[str, Any]], T],
    key: str = "position",
) -> Connection[T]:
    """One page ordered by `key` (a unique indexed column), after the cursor's key."""
    size, start = page_bounds(kind, first, after)
    where.add(f"{key} > %(after)s", after=start)
    found = await rows(
        state, f"{select} WHERE {where.sql()} ORDER BY {key} LIMIT {size + 1}", where.params
    )
    edges = [Edge(cursor=encode_cursor(kind, r[key]), node=make(r)) for r in found[:size]]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=len(found) > size, end_cursor=edges[-1].cursor if edges else None
        ),
    )
