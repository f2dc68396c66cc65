"""The executor strawberry hands to graphql-core, with per-event memos for subscriptions.

graphql-core 3.3 runs each subscription event on a shallow copy of the subscription's
executor. The copy shares the executor's memos, which are keyed by the identity of
field lists collected afresh for every event, so each event added entries that no
later event could hit and that lived until the subscription ended (about 1.2 KB per
event and subscriber). Each event's executor gets memos of its own, dropped with it.
"""

from __future__ import annotations

from typing import Any

from graphql.execution import Executor
from graphql.pyutils import RefMap
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

# The memos on graphql-core's Executor and IncrementalExecutor (dict or RefMap each).
# A rename in a later graphql-core fails here, loudly, instead of leaking again.
EVENT_MEMOS = (
    "_relevant_sub_fields",
    "_stream_usages",
    "_initial_execution_plans",
    "_deferred_execution_plans",
)
# IncrementalExecutor's per-execution lists of deferred work, also shared by the copy.
EVENT_LISTS = ("groups", "tasks", "streams")


class LedgerExecutor(StrawberryGraphQLCoreExecutionContext):
    def build_per_event_executor(self, payload: Any) -> Executor[Any]:
        executor = super().build_per_event_executor(payload)
        for name in EVENT_MEMOS:
            setattr(executor, name, RefMap() if isinstance(getattr(self, name), RefMap) else {})
        for name in EVENT_LISTS:
            setattr(executor, name, [])
        return executor
