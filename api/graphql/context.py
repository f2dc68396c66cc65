"""The per-request context: who is asking, the process state, and DataLoaders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from strawberry.dataloader import DataLoader

from api.auth import Principal
from api.graphql.errors import ApiError
from api.state import ApiState


@dataclass
class Context:
    state: ApiState
    request: Any
    response: Any
    principal: Principal | None = None
    connection_params: dict[str, Any] | None = None
    loaders: dict[str, DataLoader[Any, Any]] = field(default_factory=dict)

    def who(self) -> Principal:
        if self.principal is None:
            raise ApiError("UNAUTHENTICATED", "a valid bearer token is required")
        return self.principal

    def loader(self, name: str, load: Any) -> DataLoader[Any, Any]:
        if name not in self.loaders:
            self.loaders[name] = DataLoader(load_fn=load)
        return self.loaders[name]


def visible_provider(principal: Principal) -> UUID | None:
    """The provider a principal is confined to (None: sees everything)."""
    return None if principal.sees_everything else principal.provider_id
