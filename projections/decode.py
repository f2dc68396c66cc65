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

import contextlib
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


def _known_actor(data: Any) -> dict[str, Any]:
    """The actor's dict, as `Actor.as_dict` gives it (kept for the next event by it)."""
    key = (data.get("id"), data.get("role"), data.get("provider_id"), len(data))
    found = _actors.get(key)
    if found is None:
        found = Actor.from_dict(_convert(data)).as_dict()
        if len(_actors) < 10_000:
            _actors[key] = found
    return found


_TYPES: dict[str, Callable[[Any], Any]] = {
    "uuid_hex": _uuid,
    "datetime_iso": _datetime,
    "actor": lambda data: _ActorDict(_known_actor(data)),
}


def _wrapped(value: Any, kind: str) -> Any:
    """The `_data_` of `value` if it is `{"_type_": kind, "_data_": ...}`, else None."""
    if type(value) is dict and len(value) == 2 and value.get("_type_") == kind:
        return value.get("_data_")
    return None


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


def decode_plain(
    position: int, originator_id: UUID, version: int, topic: str, stored: bytes
) -> LoggedEvent | None:
    """The event a log row holds, read from its JSON as a mapper without cipher or
    compressor stored it; None where only the mapper can read it (an event class with
    upcasters, a value of a type without a rule here)."""
    if _versioned(topic):
        return None
    state = _loads(stored)
    if type(state) is not dict or "class_version" in state or "_type_" in state:
        return None
    payload = {}
    try:
        for key, value in state.items():
            if key not in _ENVELOPE:
                payload[key] = _convert(value) if type(value) in _NESTED else value
        timestamp = _timestamp(state.get("timestamp"))
        actor = _event_actor(state.get("actor"))
    except _Unknown:
        return None
    if timestamp is None:
        return None
    event = LoggedEvent(
        position=position,
        originator_id=originator_id,
        originator_version=version,
        type=topic,
        timestamp=timestamp,
        actor=actor,
        payload=payload,
    )
    return storable(event, stored)


def _timestamp(value: Any) -> datetime | None:
    """The envelope's timestamp: stored as `datetime_iso`, read once."""
    data = _wrapped(value, "datetime_iso")
    if type(data) is str:
        return datetime.fromisoformat(data)
    value = _convert(value) if type(value) in _NESTED else value
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _event_actor(value: Any) -> dict[str, Any] | None:
    """The envelope's actor: stored as `actor`, of plain values; None for anything else."""
    data = _wrapped(value, "actor")
    if type(data) is dict:
        with contextlib.suppress(TypeError):  # a dict or list as its id: the general way
            return dict(_known_actor(data))
    value = _convert(value) if type(value) in _NESTED else value
    return dict(value) if isinstance(value, _ActorDict) else None


_VERSIONED: dict[str, bool] = {}


def _versioned(topic: str) -> bool:
    """Whether the topic's event class has upcasters (a class version above 1)."""
    versioned = _VERSIONED.get(topic)
    if versioned is None:
        versioned = getattr(resolve_topic(topic), "class_version", 1) != 1
        _VERSIONED[topic] = versioned
    return versioned


class Decoder:
    """`decode(notification)` is the `LoggedEvent` the projector would make of it."""

    def __init__(self, mapper: Mapper[Any]) -> None:
        self.mapper = mapper
        self.plain = mapper.cipher is None and mapper.compressor is None

    def decode(self, n: Notification) -> LoggedEvent:
        return self.decode_row(
            n.id,
            n.originator_id,  # type: ignore[arg-type]  # a UUID, as the store reads it
            n.originator_version,
            n.topic,
            n.state,
        )

    def decode_row(
        self, position: int, originator_id: UUID, version: int, topic: str, state: bytes
    ) -> LoggedEvent:
        """`decode` of the notification with these fields (a log row, as read)."""
        if self.plain and (event := decode_plain(position, originator_id, version, topic, state)):
            return event
        n = Notification(
            id=position,
            originator_id=originator_id,
            originator_version=version,
            topic=topic,
            state=state,
        )
        return storable(LoggedEvent.from_notification(n, self.mapper.to_domain_event(n)), state)
