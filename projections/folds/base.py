"""What a fold is: a read model's rows kept in memory while the whole log is read, then
written once with COPY.

A fold mirrors its projection's handlers: the same event types, the same rows, the same
values (`tests/test_fold_rebuild.py` checks each against the event-by-event projector on
a varied history with hostile text). Where the handlers' SQL would fail or do something
a fold does not model (a duplicate key, a payload field missing), the fold raises
`Unfoldable` and the rebuild takes the bulk path instead, which records dead letters as
the live projector does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from psycopg.types.json import Jsonb

from ledger.log import LoggedEvent
from ledger.ruleset import Ruleset

Row = list[Any]
Apply = Callable[[LoggedEvent, str], object]  # (event, its originator id as text)


class Unfoldable(Exception):
    """An event whose effect only the projection's own SQL gives exactly."""


class Fold:
    """One projection's rows, by key. `handlers` name, per event type, what to do."""

    name: str = ""
    # table -> its columns, in the order of the rows `rows()` gives.
    columns: Mapping[str, Sequence[str]] = {}
    # SQL run once the rows are written (figures recounted from them, say).
    after: Sequence[tuple[str, tuple[Any, ...]]] = ()

    def __init__(self, ruleset: Ruleset, folds: Mapping[str, Fold]) -> None:
        self.ruleset = ruleset
        self.handlers: dict[str, Apply] = {}

    def rows(self) -> Mapping[str, Iterable[Sequence[Any]]]:
        raise NotImplementedError

    def statements_after(self) -> Sequence[tuple[str, tuple[Any, ...]]]:
        return self.after


def insert(table: dict[str, Row], key: str, row: Row) -> None:
    if key in table:
        raise Unfoldable(f"a second row for key {key}")
    table[key] = row


def with_jsonb(rows: Iterable[Row], columns: Sequence[int]) -> Iterable[Row]:
    """The rows with the values of `columns` marked as jsonb for COPY."""
    for row in rows:
        copy = list(row)
        for i in columns:
            copy[i] = Jsonb(copy[i])
        yield copy


def statements(queries: Iterable[str]) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    return tuple((q, ()) for q in queries)
