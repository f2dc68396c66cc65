"""Group commit: submissions from concurrent callers that arrive while a commit is in
flight are written together in the next transaction, so the event table's lock and the
fsync are paid once per group.

- A lone submission commits at once: nothing waits for company.
- A group never holds two submissions that touch the same aggregate or idempotency key:
  they would race on a version, so the later one waits for the next group.
- Each submission keeps its own outcome. When a group's transaction fails (a version or
  idempotency race with another process, an erased key), each member is written again on
  its own, so only the members the failure touches see it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class Member:
    """A prepared submission: what to write, and what it touches."""

    events: list[Any]
    aggregates: list[Any]
    kwargs: dict[str, Any]
    touches: frozenset[Hashable]
    recordings: list[Any] | None = None
    error: BaseException | None = None
    done: bool = field(default=False)

    def outcome(self) -> list[Any]:
        if self.error is not None:
            raise self.error
        assert self.recordings is not None
        return self.recordings


Write = Callable[[Sequence[Member]], list[list[Any]]]


class GroupCommit:
    def __init__(self, write: Write, max_size: int = 100) -> None:
        self.write = write
        self.max_size = max_size
        self._cond = threading.Condition()
        self._queue: list[Member] = []
        self._busy = False
        self.groups = 0  # transactions written, for the benchmarks
        self.members = 0

    def commit(self, member: Member) -> list[Any]:
        """Write the member, alone or in a group; its recordings, or its error."""
        with self._cond:
            self._queue.append(member)
            while self._busy and not member.done:
                self._cond.wait()
            if member.done:
                return member.outcome()
            self._busy = True
            group = self._take(member)
        try:
            self._run(group)
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
        return member.outcome()

    def _take(self, leader: Member) -> list[Member]:
        group, touched = [leader], set(leader.touches)
        for member in self._queue:
            if len(group) >= self.max_size:
                break
            if member is not leader and touched.isdisjoint(member.touches):
                group.append(member)
                touched |= member.touches
        taken = set(map(id, group))
        self._queue = [m for m in self._queue if id(m) not in taken]
        return group

    def _run(self, group: list[Member]) -> None:
        try:
            for member, recordings in zip(group, self.write(group), strict=True):
                member.recordings = recordings
        except Exception as error:
            if len(group) == 1:
                group[0].error = error
            else:
                for member in group:  # again one by one: only those it concerns fail
                    try:
                        member.recordings = self.write([member])[0]
                    except Exception as own:
                        member.error = own
        finally:
            self.groups += 1
            self.members += len(group)
            for member in group:
                member.done = True
