"""Logs: plain text by default, one JSON object per line with `LEDGER_LOG_FORMAT=json`,
and one line per request (`ledger.api.access`) with its id, operation, the caller's role
and token id, duration and outcome.

- Every record, the ledger's own (`ledger.*`), uvicorn's and the access lines, goes
  through the same formatter; in JSON each line holds `time`, `level`, `logger`,
  `message`, `pid`, the `request_id` of the request it was logged in (when there is
  one) and `exception` (a traceback) when there is one.
- A request gets a random id, returned as `X-Request-Id`; an `INTERNAL` error names the
  same id, so a client's report finds its lines. Over the WebSocket, the connection has
  an id and each operation `<connection id>-<n>`.
- No log line holds a token, a real name, an ID number or a disclosed identity: the
  access line names the token by its id (a prefix of its hash), never its holder; the
  values a client sent are left out of the client-error lines graphql-core writes
  (`Variable '$input' got invalid value …`); and, as a last guard, anything shaped like
  a token (`lt_…`) or an 18-character ID number is replaced before a line is written.
"""

from __future__ import annotations

import contextvars
import json
import logging
import logging.config
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ACCESS = logging.getLogger("ledger.api.access")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")

# ----- what is never written ----------------------------------------------------------

TOKEN = re.compile(r"lt_[A-Za-z0-9_-]{8,}")
ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])[0-9]{17}[0-9Xx](?![0-9A-Za-z])")
# graphql-core's messages about values quote them: keep the words, drop the values.
VALUE_PARTS: list[tuple[re.Pattern[str], Any]] = [
    (re.compile(r"got invalid value.*", re.DOTALL), "got invalid value (withheld)"),
    (re.compile(r"but encountered error.*", re.DOTALL), "but encountered error (withheld)"),
    (re.compile(r"\b(found|Found)\b.*", re.DOTALL), r"\1 (withheld)"),
    (re.compile(r"(cannot represent [^:'\"]*value):.*", re.DOTALL), r"\1: (withheld)"),
    (re.compile(r'"(?:[^"\\]|\\.)*"'), '"…"'),
    # a quoted name ('idNumber', '$input', 'String!') stays; any other quoted text goes
    (re.compile(r"('[$_A-Za-z][_A-Za-z0-9.\[\]!$]*')|'[^']*'"), lambda m: m[1] or "'…'"),
    (re.compile(r"[0-9]{4,}"), "…"),
]


def scrub(text: str) -> str:
    """Tokens and ID numbers out of any text about to be written."""
    return ID_NUMBER.sub("<id number>", TOKEN.sub("lt_<token>", text))


def scrub_graphql(message: str) -> str:
    """A GraphQL error message without the values a client sent in it."""
    for pattern, replacement in VALUE_PARTS:
        message = pattern.sub(replacement, message)
    return message


class ClientErrors(logging.Filter):
    """The GraphQL errors logged as a client's mistakes (`client error: …`, strawberry's
    and ours) quote what the client sent: a name, an ID number. Keep the rest."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("client error"):
            record.msg = scrub_graphql(record.getMessage())
            record.args = None
        return True


# ----- formats ------------------------------------------------------------------------


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line (newlines in messages and tracebacks are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        elif (current := REQUEST.get()) is not None:
            line["request_id"] = current.id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return scrub(json.dumps(line, default=str))


def log_format() -> str:
    chosen = os.environ.get("LEDGER_LOG_FORMAT", "text").strip().lower() or "text"
    return chosen if chosen in FORMATS else "text"


def log_config(level: int | str | None = None) -> dict[str, Any]:
    """The logging configuration, for `logging.config.dictConfig` and for uvicorn's
    `log_config` (which applies it in each worker process). The ledger's loggers log at
    `level` (LEDGER_LOG_LEVEL, or the level already set), the access lines at INFO."""
    if level is None:
        level = os.environ.get("LEDGER_LOG_LEVEL", "").strip().upper() or "WARNING"
    if isinstance(level, int):
        level = logging.getLevelName(level)
    formatter = "api.logs.JsonFormatter" if log_format() == "json" else "api.logs.TextFormatter"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"client_errors": {"()": "api.logs.ClientErrors"}},
        "formatters": {"ledger": {"()": formatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "ledger",
                "filters": ["client_errors"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            # uvicorn's own handlers give way to ours; its lines keep their level.
            "uvicorn": {"handlers": [], "propagate": True, "level": "INFO"},
            "uvicorn.error": {"handlers": [], "propagate": True, "level": "INFO"},
            # Its access lines carry query strings (a GET's variables): ours replace them.
            "uvicorn.access": {"handlers": [], "propagate": False, "level": "WARNING"},
            ACCESS.name: {"level": "INFO"},
        },
    }


def configure(verbose: bool = False) -> None:
    """Set up logging for a `ledger` command (stderr, in LEDGER_LOG_FORMAT)."""
    level = os.environ.get("LEDGER_LOG_LEVEL", "").strip().upper() or (
        "INFO" if verbose else "WARNING"
    )
    if level not in logging.getLevelNamesMapping():
        level = "WARNING"
    logging.config.dictConfig(log_config(level))
    if os.environ.get("LEDGER_LOG_FORMAT", "text").strip().lower() not in ("", *FORMATS):
        logging.getLogger("ledger").warning("LEDGER_LOG_FORMAT is text or json; using text")


# ----- the request being answered -----------------------------------------------------


def new_id() -> str:
    """16 hex digits, random (as a UUID4's first 64 bits were, at less cost)."""
    return os.urandom(8).hex()


@dataclass
class RequestRecord:
    """What one request (or one WebSocket operation) did, as it is learnt."""

    id: str
    transport: str  # http, sse, ws
    method: str
    path: str
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0
    status: int | None = None  # HTTP status; a WebSocket's close code
    operation: str | None = None
    operation_type: str | None = None  # query, mutation, subscription
    role: str | None = None
    token_id: str | None = None
    outcome: str | None = None  # None: ok; else the first error's code
    cache: str | None = None  # hit, miss
    connection: bool = False  # a WebSocket connection: its operations are records of their own
    operations: int = 0
    admitted: set[str] = field(default_factory=set)  # gates it has passed (api.admission)

    def fields(self) -> dict[str, Any]:
        out = {
            "request_id": self.id,
            "transport": self.transport,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "operation": self.operation,
            "operation_type": self.operation_type,
            "role": self.role,
            "token_id": self.token_id,
            "duration_ms": round(self.seconds * 1000, 3),
            "outcome": self.outcome or "ok",
            "cache": self.cache,
        }
        return {k: v for k, v in out.items() if v is not None}


REQUEST: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar(
    "ledger_request", default=None
)


def current() -> RequestRecord | None:
    return REQUEST.get()


def request_id() -> str | None:
    record = REQUEST.get()
    return record.id if record is not None else None


def operation() -> tuple[str | None, str | None]:
    """The current request's operation name and type."""
    record = REQUEST.get()
    return (record.operation, record.operation_type) if record is not None else (None, None)


def note_outcome(code: str | None) -> None:
    """The request's outcome: the first code other than ok."""
    record = REQUEST.get()
    if record is not None and code and code != "ok" and record.outcome is None:
        record.outcome = code


def note_principal(principal: Any) -> None:
    record = REQUEST.get()
    if record is not None and principal is not None:
        record.role = str(getattr(principal.role, "value", principal.role))
        record.token_id = principal.token_id


def note_operation(operation: Any) -> None:
    """From an OperationDefinitionNode (or None)."""
    record = REQUEST.get()
    if record is not None and operation is not None:
        record.operation = operation.name.value if operation.name else None
        record.operation_type = operation.operation.value


def note(**values: Any) -> None:
    """Set fields of the current record (transport, cache, operation, operation_type)."""
    record = REQUEST.get()
    if record is not None:
        for name, value in values.items():
            setattr(record, name, value)


def log_request(record: RequestRecord) -> None:
    graphql = record.path == "/graphql"
    level = logging.INFO if graphql or (record.status or 0) >= 400 else logging.DEBUG
    if not ACCESS.isEnabledFor(level):
        return
    what = " ".join(x for x in (record.operation_type, record.operation) if x) or "-"
    who = f"{record.role} token {record.token_id}" if record.role else "no token"
    ACCESS.log(
        level,
        "%s %s %s %s %s%s (%s) %.1f ms id %s",
        record.method, record.path, record.status, what, record.outcome or "ok",
        "" if record.cache is None else f" cache {record.cache}", who,
        record.seconds * 1000, record.id,
        extra={"fields": record.fields()},
    )  # fmt: skip


Observer = Callable[[RequestRecord], None]


class RequestLog:
    """ASGI middleware: a record per HTTP request or WebSocket connection, its id in
    `X-Request-Id`, and its line in the access log once it is answered."""

    def __init__(self, app: ASGIApp, observe: Observer | None = None) -> None:
        self.app = app
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        websocket = scope["type"] == "websocket"
        record = RequestRecord(
            new_id(),
            "ws" if websocket else "http",
            "WS" if websocket else scope["method"],
            scope["path"],
            connection=websocket,
        )
        scope.setdefault("state", {})["request_id"] = record.id
        header = (b"x-request-id", record.id.encode())

        async def sending(message: Message) -> None:
            kind = message["type"]
            if kind in ("http.response.start", "websocket.accept"):
                message = {**message, "headers": [*message.get("headers", ()), header]}
                record.status = message.get("status", record.status)
            elif kind == "websocket.close":
                record.status = message.get("code", 1000)
            await send(message)

        async def receiving() -> Message:
            message = await receive()
            if message["type"] == "websocket.disconnect" and record.status is None:
                record.status = message.get("code", 1005)  # the client closed
            return message

        token = REQUEST.set(record)
        try:
            await self.app(scope, receiving if websocket else receive, sending)
        except Exception:
            record.status = record.status or 500
            note_outcome("INTERNAL")
            raise
        finally:
            record.seconds = time.perf_counter() - record.started
            if websocket and record.status not in (None, 1000, 1001, 1005):
                note_outcome("UNAUTHENTICATED" if record.status == 4401 else "CLOSED")
            try:
                log_request(record)
                if self.observe is not None:
                    self.observe(record)
            finally:
                REQUEST.reset(token)
