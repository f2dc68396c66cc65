"""The Standard Webhooks signature: the content signed is `{id}.{timestamp}.{body}`; `v1`
is base64 of its HMAC-SHA256 under the `whsec_` secret, `v1a` base64 of its Ed25519
signature. Every valid key signs (during a rotation's grace period, the old and the new),
all in one space-separated `webhook-signature` header."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from ledger.webhooks import KeyMaterial


@dataclass(frozen=True)
class SigningKey:
    key_id: UUID
    material: KeyMaterial


def signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    return f"{msg_id}.{timestamp}.".encode() + body


def signature_header(msg_id: str, timestamp: int, body: bytes, keys: Sequence[SigningKey]) -> str:
    content = signed_content(msg_id, timestamp, body)
    parts = []
    for key in keys:
        mac = hmac.new(key.material.hmac_secret, content, hashlib.sha256).digest()
        parts.append("v1," + base64.b64encode(mac).decode())
        parts.append("v1a," + base64.b64encode(key.material.private_key.sign(content)).decode())
    return " ".join(parts)


def headers(msg_id: str, timestamp: int, body: bytes, keys: Sequence[SigningKey]) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(msg_id, timestamp, body, keys),
    }
