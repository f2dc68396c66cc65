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

log = logging.getLogger("ledger.api")


class ApiError(Exception):
    """An error meant for the client: its message and code are shown as they are."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


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
        if isinstance(original, ApiError):
            extensions = {
                "code": original.code,
                **({"details": original.details} if original.details else {}),
            }
            return _with(error, original.message, extensions)
        if original is None:
            return _with(
                error,
                error.message,
                {"code": "GRAPHQL_VALIDATION_FAILED", **(error.extensions or {})},
            )
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
