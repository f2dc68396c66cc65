"""What a projection is: tables, the event types it handles, and for each a function
from the event to SQL statements.

Handlers only write (no reads whose results Python needs), so a page of events becomes
one pipelined stream of statements inside one transaction. A handler that needs another
read model's rows (the account a post belongs to) reads them in SQL, and its projection
names that read model in `depends_on`, so the runner applies it first.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ledger.log import LoggedEvent
from ledger.ruleset import Ruleset

Statement = tuple[str, tuple[Any, ...]]
Handler = Callable[[LoggedEvent, Ruleset], Iterable[Statement]]


@dataclass(frozen=True)
class Projection:
    name: str
    # Bump when the tables or the handlers change: the runner then rebuilds it from zero.
    version: int
    tables: tuple[str, ...]
    ddl: tuple[str, ...]
    handlers: Mapping[str, Handler]
    depends_on: tuple[str, ...] = field(default=())

    def statements(self, event: LoggedEvent, ruleset: Ruleset) -> Iterable[Statement]:
        handler = self.handlers.get(event.type)
        return handler(event, ruleset) if handler else ()


def figures_table(name: str) -> str:
    """DDL of per-provider counters: a figure (what is counted), its value, and the
    count n, split over shards whose sum is the figure's count."""
    return f"""CREATE TABLE IF NOT EXISTS {name} (
        provider_id uuid NOT NULL,
        figure text NOT NULL,
        value text NOT NULL,
        shard smallint NOT NULL,
        n bigint NOT NULL,
        PRIMARY KEY (provider_id, figure, value, shard))"""


def actor_id(event: LoggedEvent) -> str | None:
    return event.actor["id"] if event.actor else None


def actor_role(event: LoggedEvent) -> str | None:
    return event.actor["role"] if event.actor else None


# NUL cannot be stored in text or jsonb, and a lone surrogate cannot be encoded at all.
# The write side refuses both, but events already in the log are immutable.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable(value: Any) -> Any:
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    return value


# How NUL and surrogates look in a stored event's JSON: a cheap test before the walk.
_ESCAPED = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


def storable(event: LoggedEvent, stored: bytes) -> LoggedEvent:
    """The event with what no column can hold replaced by U+FFFD."""
    if not _ESCAPED.search(stored):
        return event
    return dataclasses.replace(
        event, payload=_storable(event.payload), actor=_storable(event.actor)
    )
