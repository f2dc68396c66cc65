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

import orjson
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


def _convert(value: Any) -> Any:
    """`value` with every `{"_type_": ..., "_data_": ...}` in it made what its rule makes
    (innermost first); `_Unknown` for a type without a rule."""
    if type(value) is dict:
        kind = value.get("_type_")
        if kind is not None and len(value) == 2 and "_data_" in value:
            rule = _TYPES.get(kind) if isinstance(kind, str) else None
            if rule is None:
                raise _Unknown(kind)
            data = value["_data_"]
            return rule(_convert(data) if type(data) in _NESTED else data)
        return {k: _convert(v) if type(v) in _NESTED else v for k, v in value.items()}
    if type(value) is list:
        return [_convert(v) if type(v) in _NESTED else v for v in value]
    return value


_NESTED = frozenset((dict, list))


def _loads(stored: bytes) -> Any:
    """orjson's reading, or json's where orjson refuses (a lone surrogate's escape, say),
    so that whatever json reads is read."""
    try:
        return orjson.loads(stored)
    except orjson.JSONDecodeError:
        return json.loads(stored)


class Decoder:
    """`decode(notification)` is the `LoggedEvent` the projector would make of it."""

    def __init__(self, mapper: Mapper[Any]) -> None:
        self.mapper = mapper
        self.plain = mapper.cipher is None and mapper.compressor is None
        self._versioned: dict[str, bool] = {}

    def decode(self, n: Notification) -> LoggedEvent:
        return self.decode_row(n.id, n.originator_id, n.originator_version, n.topic, n.state)

    def decode_row(
        self, position: int, originator_id: UUID, version: int, topic: str, state: bytes
    ) -> LoggedEvent:
        """`decode` of the notification with these fields (a log row, as read)."""
        event = None
        if self.plain and not self._upcast(topic):
            event = self._fast(position, originator_id, version, topic, state)
        if event is None:
            n = Notification(
                id=position,
                originator_id=originator_id,
                originator_version=version,
                topic=topic,
                state=state,
            )
            event = LoggedEvent.from_notification(n, self.mapper.to_domain_event(n))
        return storable(event, state)

    def _upcast(self, topic: str) -> bool:
        versioned = self._versioned.get(topic)
        if versioned is None:
            versioned = getattr(resolve_topic(topic), "class_version", 1) != 1
            self._versioned[topic] = versioned
        return versioned

    @staticmethod
    def _fast(
        position: int, originator_id: UUID, version: int, topic: str, stored: bytes
    ) -> LoggedEvent | None:
        state = _loads(stored)
        if type(state) is not dict or "class_version" in state or "_type_" in state:
            return None
        stamp = actor = None
        payload = {}
        try:
            for key, value in state.items():
                if type(value) in _NESTED:
                    value = _convert(value)
                if key not in _ENVELOPE:
                    payload[key] = value
                elif key == "timestamp":
                    stamp = value
                elif key == "actor":
                    actor = value
        except _Unknown:
            return None
        if not isinstance(stamp, str):
            return None
        return LoggedEvent(
            position=position,
            originator_id=originator_id,
            originator_version=version,
            type=topic,
            timestamp=datetime.fromisoformat(stamp),
            actor=dict(actor) if isinstance(actor, _ActorDict) else None,
            payload=payload,
        )
