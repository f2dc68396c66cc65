"""Who acts: every command and every event names its actor."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from uuid import UUID

from ledger.errors import InvalidArgument
from ledger.text import check_text


class Role(StrEnum):
    PROVIDER = "provider"
    REGULATOR = "regulator"
    AUDITOR = "auditor"
    SYSTEM = "system"


@dataclass(frozen=True)
class Actor:
    """An actor: its id, its role, and for role provider the provider it acts for."""

    id: str
    role: Role
    provider_id: UUID | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not 1 <= len(self.id) <= 200:
            raise InvalidArgument("actor id must be 1 to 200 characters")
        check_text("actor id", self.id)
        if not isinstance(self.role, Role):
            try:
                object.__setattr__(self, "role", Role(self.role))
            except ValueError:
                raise InvalidArgument(f"unknown actor role {self.role!r}") from None
        if self.provider_id is not None and not isinstance(self.provider_id, UUID):
            try:
                object.__setattr__(self, "provider_id", UUID(str(self.provider_id)))
            except ValueError:
                raise InvalidArgument("an actor's provider_id must be a UUID") from None
        if (self.role is Role.PROVIDER) != (self.provider_id is not None):
            raise InvalidArgument("an actor has a provider_id exactly when its role is provider")

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "role": self.role.value}
        if self.provider_id is not None:
            out["provider_id"] = str(self.provider_id)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Actor:
        provider = data.get("provider_id")
        return cls(data["id"], Role(data["role"]), UUID(provider) if provider else None)


SYSTEM = Actor("system", Role.SYSTEM)
