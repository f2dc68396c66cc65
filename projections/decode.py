"""Stored events to `LoggedEvent`s without building domain objects first.

The projector's ordinary path decodes a notification into a domain event with the
ledger's mapper, then turns its attributes back into JSON-able values
(`LoggedEvent.from_notification`). A rebuild reads every event of the log, so it goes
from the stored JSON straight to those values: UUIDs become their canonical text,
timestamps their ISO text (the payload) or a datetime (the envelope), actors their dict.
Anything this does not know (a type it has no rule for, an event class with upcasters,
a cipher or compressor on the mapper) goes the ordinary way, so the two always agree;
`tests/test_bulk_rebuild.py` checks them against each other on every event of a history.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Mapper, Notification
from eventsourcing.utils import resolve_topic

from ledger.actors import Actor
from ledger.log import LoggedEvent
from projections.base import storable

_ENVELOPE = frozenset(
    ("originator_id", "originator_version", "timestamp", "originator_topic", "actor")
)


class _Unknown(Exception):
    """The stored JSON holds something only the mapper knows how to read."""


_HEX = re.compile(r"[0-9a-f]{32}")


def _uuid(data: Any) -> str:
    if isinstance(data, str) and _HEX.fullmatch(data):
        return f"{data[:8]}-{data[8:12]}-{data[12:16]}-{data[16:20]}-{data[20:]}"
    return str(UUID(data))


def _datetime(data: Any) -> str:
    return datetime.fromisoformat(data).isoformat()


class _ActorDict(dict[str, Any]):
    """An actor as the mapper would give it (not a dict that merely looks like one)."""


_actors: dict[tuple[Any, ...], dict[str, Any]] = {}


def _actor(data: Any) -> _ActorDict:
    key = (data.get("id"), data.get("role"), data.get("provider_id"), len(data))
    found = _actors.get(key)
    if found is None:
        found = Actor.from_dict(data).as_dict()
        if len(_actors) < 10_000:
            _actors[key] = found
    return _ActorDict(found)


_TYPES: dict[str, Callable[[Any], Any]] = {
    "uuid_hex": _uuid,
    "datetime_iso": _datetime,
    "actor": _actor,
}


def _hook(obj: dict[str, Any]) -> Any:
    if "_type_" in obj and len(obj) == 2 and "_data_" in obj:
        rule = _TYPES.get(obj["_type_"])
        if rule is None:
            raise _Unknown(obj["_type_"])
        return rule(obj["_data_"])
    return obj


class Decoder:
    """`decode(notification)` is the `LoggedEvent` the projector would make of it."""

    def __init__(self, mapper: Mapper[Any]) -> None:
        self.mapper = mapper
        self.plain = mapper.cipher is None and mapper.compressor is None
        self._versioned: dict[str, bool] = {}

    def decode(self, n: Notification) -> LoggedEvent:
        event = self._fast(n) if self.plain and not self._upcast(n.topic) else None
        if event is None:
            event = LoggedEvent.from_notification(n, self.mapper.to_domain_event(n))
        return storable(event, n.state)

    def _upcast(self, topic: str) -> bool:
        versioned = self._versioned.get(topic)
        if versioned is None:
            versioned = getattr(resolve_topic(topic), "class_version", 1) != 1
            self._versioned[topic] = versioned
        return versioned

    @staticmethod
    def _fast(n: Notification) -> LoggedEvent | None:
        try:
            state = json.loads(n.state, object_hook=_hook)
        except _Unknown:
            return None
        if not isinstance(state, dict) or "class_version" in state:
            return None
        stamp = state.get("timestamp")
        if not isinstance(stamp, str):
            return None
        actor = state.get("actor")
        return LoggedEvent(
            position=n.id,
            originator_id=n.originator_id,  # type: ignore[arg-type]
            originator_version=n.originator_version,
            type=n.topic,
            timestamp=datetime.fromisoformat(stamp),
            actor=dict(actor) if isinstance(actor, _ActorDict) else None,
            payload={k: v for k, v in state.items() if k not in _ENVELOPE},
        )
