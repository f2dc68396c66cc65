"""The aggregates: Provider, Account and Post."""

from eventsourcing.utils import register_topic

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


def _register_snapshot_topics() -> None:
    # The library registers an aggregate's explicit event topics when the class is
    # defined, but not its snapshot class's: without this, a snapshot written by one
    # process cannot be read by another ("No module named 'Post'").
    for aggregate in (Provider, Account, Post):
        register_topic(aggregate.Snapshot.TOPIC, aggregate.Snapshot)


_register_snapshot_topics()

# The type of every event the ledger records, e.g. "Account.SanctionImposed".
EVENT_TYPES = _event_types()
