"""Reading the notification log: events as plain JSON-able records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Notification

from ledger.actors import Actor

_ENVELOPE = ("originator_id", "originator_version", "timestamp", "originator_topic", "actor")


def to_json(value: Any) -> Any:
    """Convert event attribute values to JSON-able values."""
    if isinstance(value, Actor):
        return value.as_dict()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json(v) for v in value]
    return value


@dataclass(frozen=True)
class LoggedEvent:
    position: int
    originator_id: UUID
    originator_version: int
    type: str
    timestamp: datetime
    actor: dict[str, Any] | None
    payload: dict[str, Any]

    @classmethod
    def from_notification(
        cls, notification: Notification, event: DomainEventProtocol[Any]
    ) -> LoggedEvent:
        attrs = event.__dict__
        actor = attrs.get("actor")
        return cls(
            position=notification.id,
            originator_id=notification.originator_id,  # type: ignore[arg-type]
            originator_version=notification.originator_version,
            type=notification.topic,
            timestamp=attrs["timestamp"],
            actor=actor.as_dict() if isinstance(actor, Actor) else None,
            payload={k: to_json(v) for k, v in attrs.items() if k not in _ENVELOPE},
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "type": self.type,
            "originator_id": str(self.originator_id),
            "originator_version": self.originator_version,
            "timestamp": self.timestamp.isoformat(),
            "actor": self.actor,
            "payload": self.payload,
        }
