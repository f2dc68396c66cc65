"""A service provider: a messaging app's operator."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event
from eventsourcing.domain import Snapshot as BaseSnapshot

from ledger.actors import Actor


class Provider(Aggregate):
    TOPIC = "Provider"

    class Event(Aggregate.Event):
        pass

    class Created(Event, Aggregate.Created):
        TOPIC = "Provider.Created"

    class Snapshot(BaseSnapshot):
        TOPIC = "Provider.Snapshot"

    @event("Registered", topic="Provider.Registered")
    def __init__(
        self,
        id: UUID,
        code: str,
        name: str,
        licence_ref: str,
        actor: Actor,
        timestamp: datetime,
    ) -> None:
        self.code = code
        self.name = name
        self.licence_ref = licence_ref
        self.registered_at = timestamp
        self.qualifications: list[dict[str, Any]] = []

    @event("QualificationRecorded", topic="Provider.QualificationRecorded")
    def record_qualification(
        self, qualification: str, reference: str, actor: Actor, timestamp: datetime
    ) -> None:
        entry = {"qualification": qualification, "reference": reference, "recorded_at": timestamp}
        self.qualifications = [*self.qualifications, entry]
