"""The per-operation context: who is asking, the process state, and DataLoaders."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

from strawberry.extensions import SchemaExtension

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


class OperationContext(SchemaExtension):
    """Each operation gets a context of its own. Over the WebSocket strawberry hands every
    operation the connection's context, which can live for days: its DataLoaders would
    keep every row any operation loaded, and serve them, stale, to later ones."""

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context.context
        if isinstance(context, Context):
            self.execution_context.context = replace(context)
        yield
