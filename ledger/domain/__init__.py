"""The aggregates: Provider, Account and Post."""

from ledger.domain.account import Account, AccountStatus
from ledger.domain.post import Post
from ledger.domain.provider import Provider

__all__ = ["EVENT_TYPES", "Account", "AccountStatus", "Post", "Provider"]


def _event_types() -> tuple[str, ...]:
    found = []
    for aggregate in (Provider, Account, Post):
        for value in vars(aggregate).values():
            topic = getattr(value, "TOPIC", None)
            if isinstance(value, type) and topic and not topic.endswith((".Created", ".Snapshot")):
                found.append(topic)
    return tuple(found)


# The type of every event the ledger records, e.g. "Account.SanctionImposed".
EVENT_TYPES = _event_types()
