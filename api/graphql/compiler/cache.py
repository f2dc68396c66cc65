"""A bounded map, least recently used out first: compiled statements and checked
documents, so a repeated query pays no compile cost."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")
SIZE_VARIABLE = "LEDGER_COMPILED_STATEMENTS"
DEFAULT_SIZE = 1000


def configured_size() -> int:
    return max(1, int(os.environ.get(SIZE_VARIABLE, DEFAULT_SIZE)))


class Lru(Generic[V]):
    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[Hashable, V] = OrderedDict()

    def get(self, key: Hashable) -> V | None:
        found = self.entries.get(key)
        if found is not None:
            self.entries.move_to_end(key)
        return found

    def put(self, key: Hashable, value: V) -> V:
        self.entries[key] = value
        self.entries.move_to_end(key)
        if len(self.entries) > self.size:
            self.entries.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self.entries)
