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

from api import logs
from api.admission import OVERLOADED, Overloaded
from api.state import DATABASE_FAULTS, DatabaseUnavailable

log = logging.getLogger("ledger.api")


# Every `extensions.code` a GraphQL error or an HTTP error body can carry, in every
# transport (HTTP, Server-Sent Events, WebSocket). docs/api.md lists them; a test walks them.
# Refusals of a command are not errors: mutations answer them as typed results.
ERROR_CODES: dict[str, str] = {
    "GRAPHQL_PARSE_FAILED": "the document is not valid GraphQL syntax",
    "GRAPHQL_VALIDATION_FAILED": "the document does not fit the schema or breaks a limit",
    "BAD_USER_INPUT": "an argument or variable has a bad value (an id, a cursor, a position)",
    "UNAUTHENTICATED": "no token, or a token that is unknown or revoked",
    "FORBIDDEN": "the role may not read this",
    "NOT_FOUND": "no such record, or one the caller may not see",
    "BAD_REQUEST": "the HTTP request is malformed: body not JSON, no query, bad parameters",
    "UNSUPPORTED_MEDIA_TYPE": "a POST body that is not application/json",
    "NOT_ACCEPTABLE": "the Accept header names no media type the server can send",
    "METHOD_NOT_ALLOWED": "a mutation over GET, or a method other than GET and POST",
    "PAYLOAD_TOO_LARGE": "a request body over 1 MiB",
    "SUBSCRIPTION_NEEDS_STREAM": (
        "a subscription over plain HTTP: use Accept: text/event-stream or the WebSocket"
    ),
    "PROJECTION_LAG": "the read side is behind; resubscribe shortly",
    "SLOW_SUBSCRIBER": "a subscriber fell too far behind; resubscribe from details.cursor",
    "STORAGE_UNAVAILABLE": "the database cannot be reached; retry (details.cursor to resume)",
    "REPLICA_BEHIND": "the read side did not reach X-Ledger-Min-Position in time; retry",
    "OVERLOADED": "the server is busy: refused before touching the database; retry after"
    " Retry-After (extensions.retryAfter) seconds",
    "QUERY_TOO_COSTLY": "the query may read more rows than LEDGER_QUERY_COST_LIMIT allows",
    "INTERNAL": "a fault of the server; the log holds the request id",
}


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
        return shape_error(error)


def shape_error(error: GraphQLError) -> GraphQLError:
    """An error as the client sees it: coded, and an unexpected one hidden behind an id."""
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
        code = {"code": "GRAPHQL_VALIDATION_FAILED"}
        return _with(error, error.message, {**code, **(error.extensions or {})})
    if isinstance(original, Overloaded):
        return _with(error, Overloaded.message, dict(OVERLOADED))
    if isinstance(original, (DatabaseUnavailable, *DATABASE_FAULTS)):
        return _with(error, DatabaseUnavailable.message, UNAVAILABLE)
    request_id = logs.request_id() or uuid.uuid4().hex[:16]  # the X-Request-Id
    log.error("request %s: unexpected error", request_id, exc_info=original)
    message = f"internal error (request id {request_id})"
    if debug():
        message += f": {type(original).__name__}: {original}"
    return _with(error, message, {"code": "INTERNAL", "requestId": request_id})


def coded(error: dict[str, Any]) -> dict[str, Any]:
    """A formatted error with an `extensions.code`, whatever produced it: the parser and
    the validator of graphql-core give none."""
    extensions = error.setdefault("extensions", {})
    if "code" not in extensions:
        message = str(error.get("message", ""))
        if message.startswith("Syntax Error"):
            extensions["code"] = "GRAPHQL_PARSE_FAILED"
        elif message.startswith("Variable '$"):
            extensions["code"] = "BAD_USER_INPUT"
        else:
            extensions["code"] = "GRAPHQL_VALIDATION_FAILED"
        error["message"] = message.replace("not to be None", "not to be null")
    return error


def _with(error: GraphQLError, message: str, extensions: dict[str, Any]) -> GraphQLError:
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions=extensions,
    )
