"""The per-request context: who is asking, the process state, and DataLoaders."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from api.auth import Principal
from api.graphql.errors import ApiError
from api.graphql.loaders import Loaders
from api.state import ApiState


@dataclass
class Context:
    state: ApiState
    request: Any
    response: Any
    principal: Principal | None = None
    connection_params: dict[str, Any] | None = None

    def who(self) -> Principal:
        if self.principal is None:
            raise ApiError("UNAUTHENTICATED", "a valid bearer token is required")
        return self.principal

    @cached_property
    def loaders(self) -> Loaders:
        """This context's DataLoaders, made when a nested field first needs one."""
        return Loaders(self.state, self.who)
