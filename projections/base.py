"""What a projection is: tables, the event types it handles, and for each a function
from the event to SQL statements.

Handlers only write (no reads whose results Python needs), so a page of events becomes
one pipelined stream of statements inside one transaction. A handler that needs another
read model's rows (the account a post belongs to) reads them in SQL, and its projection
names that read model in `depends_on`, so the runner applies it first.
"""

from __future__ import annotations

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


def actor_id(event: LoggedEvent) -> str | None:
    return event.actor["id"] if event.actor else None


def actor_role(event: LoggedEvent) -> str | None:
    return event.actor["role"] if event.actor else None
