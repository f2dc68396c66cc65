"""Stable aggregate ids, derived from natural keys so that retries and replays agree."""

from __future__ import annotations

from uuid import UUID, uuid5

NAMESPACE = uuid5(UUID("6ba7b811-9dad-11d1-80b4-00c04fd430c8"), "compliance-ledger")


def provider_id(code: str) -> UUID:
    return uuid5(NAMESPACE, f"provider:{code.strip().lower()}")


def account_id(provider: UUID, handle: str) -> UUID:
    return uuid5(NAMESPACE, f"account:{provider}:{handle.strip().lower()}")


def post_id(account: UUID, ref: str) -> UUID:
    return uuid5(NAMESPACE, f"post:{account}:{ref.strip()}")


def child_id(parent: UUID, kind: str, actor_id: str, idempotency_key: str) -> UUID:
    """An id for a sanction or report, derived from the command that created it."""
    return uuid5(parent, f"{kind}:{actor_id}:{idempotency_key}")
