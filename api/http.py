"""GraphQL over HTTP, as the GraphQL Foundation's spec has it, and over Server-Sent Events.

- POST with a JSON body, or GET with `query`, `variables`, `operationName` parameters
  (queries only: a mutation over GET is 405).
- The response's media type follows `Accept`: `application/graphql-response+json`
  (a request that fails before execution, a parse, validation or variable error, is then
  400 without `data`), `application/json` (the legacy type, always 200), or
  `text/event-stream`, which streams any operation, subscriptions included, as the
  graphql-sse protocol's distinct-connections mode: `next` events, then `complete`.
- Every error body, HTTP-level ones included, is GraphQL JSON with `extensions.code`.
- GET answers carry an ETag and `Cache-Control: private, no-cache`, so a cache may keep
  them and must revalidate (304 when nothing changed).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from graphql import (
    DocumentNode,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
    get_operation_ast,
    parse,
)
from starlette.responses import HTMLResponse, Response, StreamingResponse
from strawberry import Schema
from strawberry.types import ExecutionResult

from api import auth, logs, metrics
from api.admission import RETRY_HEADERS, Overloaded
from api.auth import Principal
from api.graphql import fanout
from api.graphql.compiler import Answer, Fallback, Outcome, Refused, build_compiler, mutations
from api.graphql.compiler.cache import Lru
from api.graphql.compiler.mutations import MutationCompiler, coerced, query_digest
from api.graphql.context import Context
from api.graphql.errors import coded
from api.incoming import Incoming, Reply, loads, reply
from api.state import DATABASE_FAULTS, ApiState

log = logging.getLogger("ledger.api.http")

JSON = "application/json"
GRAPHQL_JSON = "application/graphql-response+json"
EVENT_STREAM = "text/event-stream"
HEARTBEAT_SECONDS = 12.0
NO_STORE = {"Cache-Control": "no-store"}


class HttpError(Exception):
    """A request refused before execution, with its status and code."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


@dataclass(frozen=True)
class Caller:
    token: str | None
    digest: bytes | None  # the token's SHA-256, as api_tokens holds it
    principal: Principal | None
    verified: bool  # looked up in this request (else remembered, to be checked)


PRINCIPALS_KEPT = 10_000


@dataclass(frozen=True)
class GraphQLRequest:
    query: str
    variables: dict[str, Any] | None
    operation_name: str | None


def error_body(errors: list[dict[str, Any]], data: Any = None, with_data: bool = False) -> bytes:
    body: dict[str, Any] = {"data": data} if with_data else {}
    body["errors"] = [coded(e) for e in errors]
    return encode(body)


def encode(value: Any) -> bytes:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:  # a lone surrogate read from an old event: escape it
        return json.dumps(value, separators=(",", ":")).encode()


def http_error_response(e: HttpError, media: str = JSON) -> Reply:
    logs.note_outcome(e.code)
    body = error_body([{"message": e.message, "extensions": {"code": e.code}}])
    return reply(body, e.status, media, e.headers)


# ----- reading the request -------------------------------------------------------------


def negotiate(accept: str | None) -> str:
    """The media type to answer in; none acceptable is 406."""
    if not accept or not accept.strip():
        return JSON
    offered: list[tuple[float, int, str]] = []
    for index, item in enumerate(accept.split(",")):
        media, *params = (part.strip().lower() for part in item.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        chosen = {GRAPHQL_JSON: GRAPHQL_JSON, JSON: JSON, EVENT_STREAM: EVENT_STREAM,
                  "application/*": JSON, "*/*": JSON}.get(media)  # fmt: skip
        if chosen and quality > 0:
            offered.append((-quality, index, chosen))
    if not offered:
        raise HttpError(
            406, "NOT_ACCEPTABLE",
            f"cannot answer in any type of Accept: {accept[:100]!r};"
            f" use {GRAPHQL_JSON}, {JSON} or {EVENT_STREAM}",
        )  # fmt: skip
    return min(offered)[2]


def read_request(request: Incoming) -> GraphQLRequest:
    if request.method == "GET":
        params: dict[str, Any] = dict(request.query_params)
        if "variables" in params:
            params["variables"] = _json_param(params["variables"], "variables")
        if "extensions" in params:
            params["extensions"] = _json_param(params["extensions"], "extensions")
    else:
        media = (request.header(b"content-type") or "").split(";")[0].strip().lower()
        if media != JSON:
            raise HttpError(
                415, "UNSUPPORTED_MEDIA_TYPE",
                f"a POST body must be {JSON}, not {media or 'without a Content-Type'}",
            )  # fmt: skip
        try:
            params = loads(request.body)
        except (ValueError, RecursionError):  # RecursionError: nested past any sense
            raise HttpError(400, "BAD_REQUEST", "the request body is not JSON") from None
        if not isinstance(params, dict):
            raise HttpError(400, "BAD_REQUEST", "the request body must be a JSON object")
    return _checked(params)


def _json_param(text: str, name: str) -> Any:
    try:
        return loads(text)
    except (ValueError, RecursionError):
        raise HttpError(400, "BAD_REQUEST", f"the {name} parameter is not JSON") from None


def _checked(params: dict[str, Any]) -> GraphQLRequest:
    query = params.get("query")
    if not isinstance(query, str) or not query.strip():
        raise HttpError(400, "BAD_REQUEST", "no GraphQL query: give `query` as a string")
    for name in ("variables", "extensions"):
        if params.get(name) is not None and not isinstance(params[name], dict):
            raise HttpError(400, "BAD_REQUEST", f"`{name}` must be a JSON object")
    name = params.get("operationName")
    if name is not None and not isinstance(name, str):
        raise HttpError(400, "BAD_REQUEST", "`operationName` must be a string")
    return GraphQLRequest(query, params.get("variables"), name)


@lru_cache(maxsize=1000)
def parsed(query: str) -> DocumentNode | GraphQLError:
    try:
        return parse(query)
    except GraphQLError as e:
        return e


# ----- GraphiQL --------------------------------------------------------------------------

# The page and its assets are in the package (api/static/graphiql, served at /graphiql/),
# so GraphiQL works without the internet; scripts run only from this origin.
GRAPHIQL_DIR = Path(__file__).parent / "static" / "graphiql"
GRAPHIQL_CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",  # CodeMirror and GraphiQL set inline styles
    "img-src 'self' data:",
    "font-src 'self' data:",  # graphiql.min.css inlines its fonts
    "connect-src 'self'",  # HTTP and the WebSocket, same origin
    "frame-ancestors 'none'",
    "base-uri 'none'",
    "form-action 'none'",
])  # fmt: skip


@lru_cache(maxsize=1)
def _graphiql_html() -> str:
    return (GRAPHIQL_DIR / "index.html").read_text(encoding="utf-8")


def graphiql_page() -> Response:
    return HTMLResponse(
        _graphiql_html(),
        headers={"Content-Security-Policy": GRAPHIQL_CSP, "Cache-Control": "no-cache"},
    )


# ----- answering ----------------------------------------------------------------------


class GraphQLHttp:
    """The ASGI app at /graphql for HTTP (the WebSocket goes to strawberry's handler)."""

    def __init__(self, schema: Schema, state: ApiState, graphiql: bool) -> None:
        self.schema = schema
        self.state = state
        self.graphiql = graphiql
        # Query operations over the read models as one SQL statement (LEDGER_COMPILE=0: off).
        self.compiler = state.extras["compiler"] = build_compiler(schema._schema)
        self.compiler.enabled = os.environ.get("LEDGER_COMPILE", "1") == "1"
        self.mutations = MutationCompiler(schema._schema)
        # Principals of tokens seen (a token's role and provider never change; revocation
        # is checked by each compiled statement, and by a lookup before anything else).
        self.principals: Lru[Principal] = Lru(PRINCIPALS_KEPT)

    async def answer(self, request: Incoming) -> Reply | Response:
        """The response to a request to /graphql over HTTP (api.front has read its body)."""
        try:
            return await self.respond(request)
        except HttpError as e:
            log.info("refused %s request: %s %s", request.method, e.code, e.message)
            return http_error_response(e)

    async def respond(self, request: Incoming) -> Reply | Response:
        if request.method not in ("GET", "POST"):
            raise HttpError(405, "METHOD_NOT_ALLOWED", "use GET or POST",
                            {"Allow": "GET, POST"})  # fmt: skip
        accept = request.header(b"accept")
        if self._wants_ide(request, accept):
            return graphiql_page()
        media = negotiate(accept)
        if media == EVENT_STREAM:
            logs.note(transport="sse")
        try:
            gql = read_request(request)
        except HttpError as e:
            return http_error_response(e, GRAPHQL_JSON if media == GRAPHQL_JSON else JSON)
        document = parsed(gql.query)
        if isinstance(document, GraphQLError):
            return self._request_failed(media, [document.formatted])
        operation = get_operation_ast(document, gql.operation_name)
        logs.note_operation(operation)
        if operation is None:
            return self._request_failed(media, [_no_operation(gql.operation_name)])
        kind = operation.operation
        if kind is OperationType.MUTATION and request.method == "GET":
            raise HttpError(405, "METHOD_NOT_ALLOWED", "mutations are sent with POST",
                            {"Allow": "POST"})  # fmt: skip
        caller = await self._caller(request)
        context = Context(state=self.state, request=None, response=None)
        context.principal = caller.principal
        if media == EVENT_STREAM:
            await self._verify(caller, context)
            context.request = request.request
            if kind is OperationType.SUBSCRIPTION:
                return await self._subscribe(gql, context)
            refused = self._too_costly(document, operation, gql, context)
            metrics.operation_path(refused or Fallback("stream"))
            if refused is not None:
                return self._request_failed(EVENT_STREAM, [refused.error])
            return await self._stream(gql, context)
        if kind is OperationType.SUBSCRIPTION:
            return self._request_failed(media, [{
                "message": "a subscription needs a stream: send Accept: text/event-stream,"
                " or use the WebSocket (graphql-transport-ws)",
                "extensions": {"code": "SUBSCRIPTION_NEEDS_STREAM"},
            }])  # fmt: skip
        if kind is OperationType.MUTATION:
            await self._verify(caller, context)  # a write needs the token checked first
            outcome = await self._mutate(document, operation, gql, context)
        else:
            outcome = await self._compile(document, operation, gql, context, caller.digest)
            if not isinstance(outcome, Answer) and not caller.verified:
                await self._verify(caller, context)  # strawberry, or a refusal, needs it checked
                if context.principal is None:
                    outcome = Fallback("unauthenticated")
        metrics.operation_path(outcome)
        if not isinstance(outcome, Fallback):
            return self._compiled(request, media, context, outcome)
        context.request = request.request
        result = await self.schema.execute(
            gql.query, gql.variables, context, operation_name=gql.operation_name
        )
        if _failed_before_execution(result):
            return self._request_failed(media, [e.formatted for e in result.errors or []])
        body = _result_body(result)
        if _overloaded(result):  # a resolver found no connection or thread in time
            return reply(body, 503, media, RETRY_HEADERS)
        if request.method == "GET":
            return _cacheable(request, body, media)
        return reply(body, 200, media, NO_STORE)

    async def _compile(
        self,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        gql: GraphQLRequest,
        context: Context,
        digest: bytes | None,
    ) -> Outcome:
        try:
            return await self.compiler.answer(
                self.state,
                document,
                operation,
                gql.query,
                gql.variables,
                context.principal,
                token_hash=digest,
            )
        except Overloaded:  # no connection in time: refused (503), not tried again
            raise
        except Exception:  # a fault of the compiler: strawberry still answers
            log.exception("compiling %s failed", gql.operation_name or "an operation")
            return Fallback("error")

    async def _mutate(
        self,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        gql: GraphQLRequest,
        context: Context,
    ) -> Outcome:
        """A mutation run without strawberry's executor (api.graphql.compiler.mutations),
        or why strawberry runs it."""
        if not self.compiler.enabled:
            return Fallback("disabled")
        if context.principal is None:
            return Fallback("unauthenticated")
        name = operation.name.value if operation.name else None
        problem = self.compiler.problem(gql.query, name, document)
        if problem is not None:
            return Fallback(problem)
        variables = coerced(self.compiler.schema, operation, gql.variables)
        if variables is None:
            return Fallback("variables")
        plan = self.mutations.plan(query_digest(gql.query), document, operation, variables)
        if plan.reason is not None:
            return Fallback(plan.reason)
        try:
            found = await mutations.execute(self.state, plan, variables, context.principal)
        except DATABASE_FAULTS:
            return Fallback("error")  # strawberry tries once more, and answers as ever
        except Exception:  # a fault here: strawberry runs it (a command done is replayed)
            log.exception("compiled %s failed", gql.operation_name or "mutation")
            return Fallback("error")
        if isinstance(found, Answer):
            return found
        return Fallback(found) if isinstance(found, str) else Answer(found)

    def _too_costly(
        self,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        gql: GraphQLRequest,
        context: Context,
    ) -> Refused | None:
        """The cost limit for a query streamed as Server-Sent Events (strawberry runs it)."""
        if operation.operation is not OperationType.QUERY:
            return None
        found = self.compiler.prepare(
            self.state, document, operation, gql.query, gql.variables, context.principal
        )
        return found if isinstance(found, Refused) else None

    def _compiled(self, request: Incoming, media: str, context: Context, outcome: Outcome) -> Reply:
        """A compiled answer (the JSON PostgreSQL wrote, as it came), or a refusal."""
        if isinstance(outcome, Refused):
            return self._request_failed(media, [outcome.error])
        assert isinstance(outcome, Answer)
        logs.note_principal(context.principal)
        if outcome.overloaded:
            return reply(outcome.body, 503, media, RETRY_HEADERS)
        if request.method == "GET":
            return _cacheable(request, outcome.body, media)
        return reply(outcome.body, 200, media, NO_STORE)

    def _wants_ide(self, request: Incoming, accept: str | None) -> bool:
        return (
            self.graphiql
            and request.method == "GET"
            and "query" not in request.query_params
            and "text/html" in (accept or "")
        )

    @staticmethod
    def _request_failed(media: str, errors: list[dict[str, Any]]) -> Reply:
        # The spec's watershed: the new media type says 400 and leaves `data` out; the
        # legacy one answers 200 with `data: null`.
        if errors:
            logs.note_outcome(coded(errors[0])["extensions"]["code"])
        if media == GRAPHQL_JSON:
            return reply(error_body(errors), 400, media)
        body = error_body(errors, with_data=True)
        status = 400 if media == EVENT_STREAM else 200
        return reply(body, status, JSON)

    async def _caller(self, request: Incoming) -> Caller:
        """Who is asking. The response cache has looked the token up already; else a token
        this process has seen is taken as it was, unchecked (a compiled statement checks it
        in the same round trip: still there, not revoked; anything else checks it first);
        else it is looked up."""
        token = auth.bearer(request.header(b"authorization"))
        digest = auth.token_hash(token) if token else None
        seen = request.scope.get("state", {}).get("seen")  # from the response cache
        if seen is not None:
            self._remember(digest, seen.principal)
            return Caller(token, digest, seen.principal, verified=True)
        known = self.principals.get(digest) if digest else None
        if known is not None:
            return Caller(token, digest, known, verified=False)
        principal = await self.state.principal(token)
        self._remember(digest, principal)
        return Caller(token, digest, principal, verified=True)

    async def _verify(self, caller: Caller, context: Context) -> None:
        if not caller.verified:
            context.principal = await self.state.principal(caller.token)
            self._remember(caller.digest, context.principal)

    def _remember(self, digest: bytes | None, principal: Principal | None) -> None:
        if digest is None:
            return
        if principal is None:
            self.principals.entries.pop(digest, None)
        else:
            self.principals.put(digest, principal)

    async def _subscribe(self, gql: GraphQLRequest, context: Context) -> Reply | Response:
        """A subscription as events: the shared path (api.graphql.fanout), or strawberry."""
        feed = fanout.plan(
            self.state, gql.query, gql.variables, gql.operation_name, context.principal
        )
        metrics.operation_path(feed)
        if isinstance(feed, Fallback):
            return await self._stream(gql, context)
        logs.note_principal(context.principal)
        return StreamingResponse(
            _shared_events(self.state, feed),
            media_type=EVENT_STREAM,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def _stream(self, gql: GraphQLRequest, context: Context) -> Reply | Response:
        source = await self.schema.stream(
            gql.query, gql.variables, context, operation_name=gql.operation_name
        )
        first = await anext(aiter(source), None)  # type: ignore[arg-type]
        if first is None or _failed_before_execution(first):
            errors = [e.formatted for e in (first.errors or [])] if first else []
            return self._request_failed(EVENT_STREAM, errors)
        return StreamingResponse(
            _events(first, source),  # type: ignore[arg-type]
            media_type=EVENT_STREAM,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )


def _no_operation(name: str | None) -> dict[str, Any]:
    message = (
        f"the document has no operation named {name[:100]!r}"
        if name
        else "the document holds several operations: name one in operationName"
    )
    return {"message": message, "extensions": {"code": "BAD_REQUEST"}}


def _failed_before_execution(result: Any) -> bool:
    """A parse, validation or variable error: no data, and no error has a path."""
    errors = getattr(result, "errors", None)
    return bool(errors) and result.data is None and all(e.path is None for e in errors)


def _overloaded(result: ExecutionResult) -> bool:
    return any((e.extensions or {}).get("code") == "OVERLOADED" for e in result.errors or ())


def _result_body(result: ExecutionResult) -> bytes:
    body: dict[str, Any] = {"data": result.data}
    if result.errors:
        body["errors"] = [coded(e.formatted) for e in result.errors]
    return encode(body)


def _cacheable(request: Incoming, body: bytes, media: str) -> Reply:
    tag = f'W/"{hashlib.sha256(body).hexdigest()[:32]}"'
    headers = {"ETag": tag, "Cache-Control": "private, no-cache", "Vary": "Authorization, Accept"}
    if request.header(b"if-none-match") == tag:
        return reply(b"", 304, None, headers)
    return reply(body, 200, media, headers)


async def _events(first: ExecutionResult, source: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    """`next` events, a heartbeat comment while nothing happens, then `complete`."""
    yield _event("next", _result_body(first))
    async for result in _heartbeats(source):
        yield b":\n\n" if result is None else _event("next", _result_body(result))
    yield _event("complete", b"")


async def _shared_events(state: ApiState, feed: fanout.Feed) -> AsyncIterator[bytes]:
    """The shared path's events: each `next` framed once for every subscriber of the same
    selection; an error that ends the stream is its last `next`, as strawberry's is."""
    try:
        async for frame in _heartbeats(fanout.payloads(state, feed, _next_frame)):
            yield b":\n\n" if frame is None else frame
    except Exception as error:
        failed = fanout.failure(error)
        logs.note_outcome(failed["extensions"]["code"])
        yield _event("next", error_body([failed], with_data=True))
    yield _event("complete", b"")


def _next_frame(payload: dict[str, Any]) -> bytes:
    return _event("next", encode(payload))


T = TypeVar("T")


async def _heartbeats(source: AsyncIterator[T]) -> AsyncIterator[T | None]:
    """The items of `source`, and None whenever HEARTBEAT_SECONDS pass without one."""
    pending: asyncio.Task[T] | None = None
    try:
        while True:
            pending = pending or asyncio.ensure_future(anext(source))
            done, _ = await asyncio.wait({pending}, timeout=HEARTBEAT_SECONDS)
            if not done:
                yield None
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                break
            finally:
                pending = None
            yield item
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        await source.aclose()  # type: ignore[attr-defined]


def _event(name: str, data: bytes) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"
