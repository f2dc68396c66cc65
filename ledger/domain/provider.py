"""A service provider: a messaging app's operator."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event
from eventsourcing.domain import Snapshot as BaseSnapshot

from ledger import errors
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
        self.webhooks: dict[str, dict[str, Any]] = {}

    @event("QualificationRecorded", topic="Provider.QualificationRecorded")
    def record_qualification(
        self, qualification: str, reference: str, actor: Actor, timestamp: datetime
    ) -> None:
        entry = {"qualification": qualification, "reference": reference, "recorded_at": timestamp}
        self.qualifications = [*self.qualifications, entry]

    # ----- webhook endpoints ------------------------------------------------------------
    # An endpoint's secrets are never in an event: only its key's id and public key.

    def endpoint(self, endpoint_id: UUID, *, live: bool = True) -> dict[str, Any]:
        """The endpoint; WebhookEndpointNotFound when unknown (or deleted, when `live`)."""
        found = self.__dict__.get("webhooks", {}).get(str(endpoint_id))
        if found is None or (live and found["status"] == "deleted"):
            raise errors.WebhookEndpointNotFound(
                "no such webhook endpoint", endpoint_id=str(endpoint_id)
            )
        return dict(found)

    @event("WebhookRegistered", topic="Provider.WebhookRegistered")
    def register_webhook(
        self,
        endpoint_id: UUID,
        url: str,
        event_types: list[str],
        description: str,
        key_id: UUID,
        public_key: str,
        actor: Actor,
        timestamp: datetime,
    ) -> None:
        # Copy on write: a command's fork shares containers with the held aggregate.
        endpoint = {
            "id": str(endpoint_id),
            "url": url,
            "event_types": list(event_types),
            "description": description,
            "status": "active",
            "paused_reason": None,
            "key_id": str(key_id),
            "public_key": public_key,
            "registered_at": timestamp,
            "updated_at": timestamp,
        }
        self.webhooks = {**self.__dict__.get("webhooks", {}), str(endpoint_id): endpoint}

    def _change(self, endpoint_id: UUID, timestamp: datetime, **values: Any) -> None:
        key = str(endpoint_id)
        changed = {**self.webhooks[key], **values, "updated_at": timestamp}
        self.webhooks = {**self.webhooks, key: changed}

    @event("WebhookUpdated", topic="Provider.WebhookUpdated")
    def update_webhook(
        self,
        endpoint_id: UUID,
        url: str,
        event_types: list[str],
        description: str,
        actor: Actor,
        timestamp: datetime,
    ) -> None:
        self._change(
            endpoint_id, timestamp, url=url, event_types=list(event_types), description=description
        )

    @event("WebhookPaused", topic="Provider.WebhookPaused")
    def pause_webhook(
        self, endpoint_id: UUID, reason: str, actor: Actor, timestamp: datetime
    ) -> None:
        self._change(endpoint_id, timestamp, status="paused", paused_reason=reason)

    @event("WebhookResumed", topic="Provider.WebhookResumed")
    def resume_webhook(self, endpoint_id: UUID, actor: Actor, timestamp: datetime) -> None:
        self._change(endpoint_id, timestamp, status="active", paused_reason=None)

    @event("WebhookDeleted", topic="Provider.WebhookDeleted")
    def delete_webhook(
        self, endpoint_id: UUID, reason: str, actor: Actor, timestamp: datetime
    ) -> None:
        self._change(endpoint_id, timestamp, status="deleted")

    @event("WebhookSecretRotated", topic="Provider.WebhookSecretRotated")
    def rotate_webhook_secret(
        self,
        endpoint_id: UUID,
        key_id: UUID,
        public_key: str,
        previous_valid_until: datetime,
        actor: Actor,
        timestamp: datetime,
    ) -> None:
        self._change(endpoint_id, timestamp, key_id=str(key_id), public_key=public_key)

    @event("WebhookReplayRequested", topic="Provider.WebhookReplayRequested")
    def request_webhook_replay(
        self,
        endpoint_id: UUID,
        from_position: int | None,
        from_time: datetime | None,
        actor: Actor,
        timestamp: datetime,
    ) -> None:
        pass
