"""Errors as clients see them: every GraphQL error carries `extensions.code`; anything
unexpected is logged with a request id and reaches the client as INTERNAL with that
id, never as a stack trace or an internal message."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from api.state import DATABASE_FAULTS, DatabaseUnavailable

log = logging.getLogger("ledger.api")


class ApiError(GraphQLError):
    """An error meant for the client: its message and code are shown as they are. A
    GraphQLError, so it keeps its code on every path (subscriptions included)."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        extensions: dict[str, Any] = {"code": code}
        if details:
            extensions["details"] = details
        super().__init__(message, extensions=extensions)
        self.code = code


UNAVAILABLE = {"code": "STORAGE_UNAVAILABLE", "retryable": True}


def bad_input(message: str, **details: Any) -> ApiError:
    return ApiError("BAD_USER_INPUT", message, **details)


def debug() -> bool:
    return os.environ.get("LEDGER_DEBUG", "0") == "1"


class ErrorPolicy(SchemaExtension):
    """Give every error a code; hide unexpected ones behind a request id."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        if result is None or not getattr(result, "errors", None):
            return
        result.errors = [self._shape(e) for e in result.errors]

    def _shape(self, error: GraphQLError) -> GraphQLError:
        original = error.original_error
        if original is None or isinstance(original, GraphQLError):
            code = {"code": "GRAPHQL_VALIDATION_FAILED"}
            return _with(error, error.message, {**code, **(error.extensions or {})})
        if isinstance(original, (DatabaseUnavailable, *DATABASE_FAULTS)):
            return _with(error, DatabaseUnavailable.message, UNAVAILABLE)
        request_id = uuid.uuid4().hex[:16]
        log.error("request %s: unexpected error", request_id, exc_info=original)
        message = f"internal error (request id {request_id})"
        if debug():
            message += f": {type(original).__name__}: {original}"
        return _with(error, message, {"code": "INTERNAL", "requestId": request_id})


def _with(error: GraphQLError, message: str, extensions: dict[str, Any]) -> GraphQLError:
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions=extensions,
    )
