"""Bearer tokens: `ledger token create` prints a token once; only its SHA-256 is kept
(table `api_tokens`). A request's token becomes a `Principal` with the ledger `Actor`
its mutations are recorded under."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from ledger.actors import Actor, Role

PREFIX = "lt_"

DDL = """CREATE TABLE IF NOT EXISTS api_tokens (
    token_id text PRIMARY KEY,
    token_hash bytea NOT NULL UNIQUE,
    role text NOT NULL,
    provider_id uuid,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz)"""

READ_ROLES = frozenset({Role.REGULATOR, Role.AUDITOR, Role.PROVIDER, Role.SYSTEM})


class TokenError(ValueError):
    pass


@dataclass(frozen=True)
class Principal:
    token_id: str
    name: str
    role: Role
    provider_id: UUID | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Principal:
        """From an `api_tokens` row (dict rows, as the API's pool returns them)."""
        return cls(row["token_id"], row["name"], Role(row["role"]), row["provider_id"])

    @property
    def actor(self) -> Actor:
        return Actor(f"{self.name} ({self.token_id})", self.role, self.provider_id)

    @property
    def sees_everything(self) -> bool:
        return self.role is not Role.PROVIDER

    def may_see(self, provider_id: UUID | None) -> bool:
        return self.sees_everything or provider_id == self.provider_id


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def create_schema(conn: psycopg.Connection[object], schema: str) -> None:
    # API processes starting together would race on the catalog; one creates, the rest wait.
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"{schema}.api_tokens"])
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    conn.execute(DDL)


def create_token(
    conn: psycopg.Connection[object],
    schema: str,
    role: str,
    provider_id: UUID | None,
    name: str,
) -> tuple[str, str]:
    """Store a new token's hash; return (token id, token). The token is not kept."""
    try:
        parsed = Role(role)
    except ValueError:
        raise TokenError(f"role must be one of {[r.value for r in Role]}") from None
    if (parsed is Role.PROVIDER) != (provider_id is not None):
        raise TokenError("--provider is required for role provider, and only for it")
    if not name.strip() or len(name) > 100:
        raise TokenError("--name must be 1 to 100 characters")
    create_schema(conn, schema)
    token = PREFIX + secrets.token_urlsafe(32)
    token_id = token_hash(token).hex()[:12]
    conn.execute(
        "INSERT INTO api_tokens (token_id, token_hash, role, provider_id, name)"
        " VALUES (%s, %s, %s, %s, %s)",
        (token_id, token_hash(token), parsed.value, provider_id, name.strip()),
    )
    conn.commit()
    return token_id, token


def revoke_token(conn: psycopg.Connection[object], schema: str, token_or_id: str) -> bool:
    create_schema(conn, schema)
    key = token_hash(token_or_id).hex()[:12] if token_or_id.startswith(PREFIX) else token_or_id
    row = conn.execute(
        "UPDATE api_tokens SET revoked_at = now() WHERE token_id = %s AND revoked_at IS NULL"
        " RETURNING token_id",
        (key,),
    ).fetchone()
    conn.commit()
    return row is not None


PRINCIPAL = """SELECT token_id, name, role, provider_id FROM api_tokens
    WHERE token_hash = %s AND revoked_at IS NULL"""


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None
