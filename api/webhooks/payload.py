"""A delivery's body: `{"type", "timestamp", "data"}`, minified. `data` is the event as the
GraphQL `LogEvent` has it (field names and values as a query returns them), plus
`sequence`: its number among its originator's deliveries to this endpoint (1, 2, …), so
that a receiver sees a gap, and drops a stale duplicate, without asking."""

from __future__ import annotations

import json
from typing import Any

from ledger.log import LoggedEvent


def _redact(payload: dict[str, Any]) -> dict[str, Any]:
    # As the API: an identity never leaves, not even sealed.
    return {**payload, "identity": "[sealed]"} if "identity" in payload else payload


def _actor(actor: dict[str, Any] | None) -> dict[str, Any] | None:
    if not actor:
        return None
    return {"id": actor["id"], "role": actor["role"], "providerId": actor.get("provider_id")}


def log_event(e: LoggedEvent, sequence: int) -> dict[str, Any]:
    return {
        "position": str(e.position),
        "cursor": str(e.position),
        "type": e.type,
        "originatorId": str(e.originator_id),
        "originatorVersion": e.originator_version,
        "at": e.timestamp.isoformat(),
        "actor": _actor(e.actor),
        "payload": _redact(e.payload),
        "sequence": sequence,
    }


def body(e: LoggedEvent, sequence: int) -> bytes:
    document = {
        "type": e.type,
        "timestamp": e.timestamp.isoformat(),
        "data": log_event(e, sequence),
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
