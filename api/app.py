"""The application: GraphQL at /graphql over HTTP on the lean path (api.front), and the
Starlette app for the rest: graphql-transport-ws at /graphql, /healthz, /readyz,
/metrics, the log's tiles at /log/, the console's static files at /console and GraphiQL's
assets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from psycopg import sql
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from api import collector, metrics
from api.admission import RETRY_HEADERS, Overloaded, refusal_body
from api.cache import ResponseCache
from api.console import ConsoleFiles, to_console
from api.front import Front, body_too_large, too_large
from api.graphql.compiler.cost import CostLimit
from api.graphql.errors import UNAVAILABLE
from api.graphql.schema import build_schema
from api.health import HealthLine
from api.http import GRAPHIQL_DIR, GraphQLHttp
from api.live import Broadcaster
from api.log_tree import routes as log_routes
from api.logs import RequestLog
from api.metrics import MULTIPROCESS, OperationLog
from api.state import (
    DATABASE_FAULTS,
    ApiState,
    DatabaseUnavailable,
    make_pool,
    prepare_tables,
    replica_status,
    session_settings,
)
from api.websocket import WebSocketGraphQL
from ledger.application import Ledger
from ledger.database import Database, data_dir
from ledger.signing import Signer
from projections.registry import ALL as PROJECTIONS

log = logging.getLogger("ledger.api")


class BodyLimit:
    """Refuse bodies over the limit with 413 before reading them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        length = dict(scope["headers"]).get(b"content-length") if scope["type"] == "http" else None
        if body_too_large(length):
            await too_large()(scope, receive, send)
            return
        await self.app(scope, receive, send)


READY_WITHIN_SECONDS = 0.8
STALLED_AFTER_SECONDS = float(os.environ.get("LEDGER_READY_MAX_STALL", "30"))


READ_MODELS = frozenset(p.name for p in PROJECTIONS)


async def readiness(state: ApiState) -> dict[str, Any]:
    """Ready: the database answers, no projection is more than `max_lag_events` behind,
    none has dead letters, and none is stalled: it has not moved for
    `STALLED_AFTER_SECONDS` while an event that old waits for it. Read on the health
    checks' own connection, so a queue of requests does not delay it."""
    query = sql.SQL(
        "SELECT p.name, p.position, h.head, extract(epoch FROM now() - p.updated_at) AS idle,"
        " (SELECT count(*) FROM projection_failures f WHERE f.projection = p.name) AS failures,"
        " CASE WHEN h.head > p.position THEN (SELECT extract(epoch FROM now() - ("
        "   convert_from(e.state, 'UTF8')::json #>> '{{timestamp,_data_}}')::timestamptz)"
        "   FROM {e} e WHERE e.notification_id > p.position"
        "   ORDER BY e.notification_id LIMIT 1) END AS waiting"
        " FROM projection_positions p,"
        " (SELECT coalesce(max(notification_id), 0) AS head FROM {e}) h"
    ).format(e=state.ledger.store.events_table)
    found = await state.health_fetch(query)
    head = found[0]["head"] if found else None
    lag = {r["name"]: r["head"] - r["position"] for r in found}
    failures = {r["name"]: r["failures"] for r in found if r["failures"]}
    stalled = [
        r["name"] for r in found if min(r["idle"], r["waiting"] or 0) > STALLED_AFTER_SECONDS
    ]
    checks = {
        # Every read model's row, not any row: the sealer sets up its own beside them.
        "no projections": not {r["name"] for r in found} >= READ_MODELS,
        "lagging": bool(found) and max(lag.values()) > state.max_lag_events,
        "stalled": stalled,
        "dead letters": failures,
    }
    problems = [name for name, bad in checks.items() if bad]
    return {
        "status": problems[0] if problems else "ready",
        "database": True,
        "head": head,
        "lag": lag,
        "stalled": stalled,
        "failures": failures,
    }


async def unavailable(request: Request, exc: Exception) -> Response:
    error = {"message": DatabaseUnavailable.message, "extensions": UNAVAILABLE}
    return JSONResponse({"errors": [error]}, status_code=503, headers={"Retry-After": "1"})


async def overloaded(request: Request, exc: Exception) -> Response:
    return JSONResponse(refusal_body(), status_code=503, headers=RETRY_HEADERS)


def pools_state(state: ApiState) -> dict[str, dict[str, int]]:
    """Each gate's slots (size), in use and waiting; a pool's connections open too."""
    report = {name: gate.stats() for name, gate in state.gates.items()}
    for name, pool in (("read", state.pool), ("primary", state.primary_pool)):
        if pool is not None:
            report[name]["open"] = pool.get_stats().get("pool_size", 0)
    return report


async def unexpected(request: Request, exc: Exception) -> Response:
    request_id = request.scope.get("state", {}).get("request_id") or uuid.uuid4().hex[:16]
    log.error("request %s: unexpected error", request_id, exc_info=exc)
    error = {
        "message": f"internal error (request id {request_id})",
        "extensions": {"code": "INTERNAL"},
    }
    return JSONResponse({"errors": [error]}, status_code=500, headers={"X-Request-Id": request_id})


def create_app(database: Database, ledger: Ledger, schema: str | None = None) -> Front:
    """The API: /graphql over HTTP on the lean path (api.front), the rest in Starlette."""
    schema = schema or ledger.store.datastore.schema or "public"
    prepare_tables(database, schema)
    pool_size = int(os.environ.get("LEDGER_POOL_SIZE", "5")) * 2
    # A hot standby for the reads; writes, the raw log and the live feed stay on the primary.
    read_url = os.environ.get("LEDGER_READ_DATABASE_URL") or None
    health = [read_url or database.conninfo, *([database.conninfo] if read_url else [])]
    state = ApiState(
        database=database,
        ledger=ledger,
        schema=schema,
        pool=make_pool(read_url or database, schema, pool_size),
        primary_pool=make_pool(database, schema, pool_size) if read_url else None,
        health_lines=[HealthLine(url, session_settings(schema)) for url in health],
        read_wait=float(os.environ.get("LEDGER_READ_WAIT", "5")),
        executor=ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="ledger-store"),
        max_lag_events=int(os.environ.get("LEDGER_READY_MAX_LAG", "10000")),
        public_key=Signer.from_environment(data_dir()).public_key_hex,
        overload_wait=float(os.environ.get("LEDGER_OVERLOAD_WAIT", "0.25")),
        overload_queue=int(os.environ.get("LEDGER_OVERLOAD_QUEUE", "0")),
    )
    schema = build_schema()
    # Outermost, so it sees errors as ErrorPolicy leaves them.
    schema.extensions = (
        lambda: OperationLog(metrics.observe_request),
        *schema.extensions,
        CostLimit,  # the WebSocket's queries (HTTP checks its own before strawberry runs)
    )
    metrics.install(state)
    collector.thresholds()  # a bad LEDGER_GC_THRESHOLDS fails here, before serving
    http = GraphQLHttp(schema, state, graphiql=os.environ.get("LEDGER_GRAPHIQL", "0") == "1")
    cache = state.extras["cache"] = ResponseCache(state)
    cache_on = os.environ.get("LEDGER_RESPONSE_CACHE", "1") == "1"

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready_with_replica() -> dict[str, Any]:
        """With a replica: readiness read on the standby, and both it and the primary
        answering, the standby's log at most `max_lag_events` behind the primary's."""
        if not state.replica:
            return await readiness(state)
        report, replica = await asyncio.gather(readiness(state), replica_status(state))
        report["replica"] = replica
        if report["status"] == "ready" and replica["lag_events"] > state.max_lag_events:
            report["status"] = "replica lagging"
        return report

    async def readyz(request: Request) -> Response:
        """Within READY_WITHIN_SECONDS, whatever the load: the check reads on a connection
        of its own. Busy (every slot of a gate taken, or requests waiting) is reported,
        and is still ready: the gates shed what this process cannot serve in time, and
        taking a busy instance out of a balancer piles its load onto the others."""
        try:
            report = await asyncio.wait_for(ready_with_replica(), READY_WITHIN_SECONDS)
        except (TimeoutError, DatabaseUnavailable):  # no answer in time: unreachable
            report = {"status": "unavailable", "database": False}
        except psycopg.errors.UndefinedTable:  # the projector has not set up its tables
            report = {"status": "no projections", "database": True}
        report["busy"] = any(gate.busy for gate in state.gates.values())
        report["pools"] = pools_state(state)
        report["live"] = state.extras["broadcaster"].live
        ready = report["status"] == "ready" and report["live"]
        if not ready and report["status"] == "ready":
            report["status"] = "live feed down"
        return JSONResponse(report, status_code=200 if ready else 503)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for pool in state.pools:
            await pool.open()
        broadcaster = Broadcaster(
            state, buffer_limit=int(os.environ.get("LEDGER_SUBSCRIBER_BUFFER", "10000"))
        )
        state.extras["broadcaster"] = broadcaster
        broadcaster.start()
        refresher = asyncio.create_task(metrics.refresh_loop(state)) if MULTIPROCESS else None
        collector.settle()
        try:
            yield
        finally:
            collector.release()
            if refresher is not None:
                refresher.cancel()
            metrics.worker_exit()
            await broadcaster.stop()
            for pool in state.pools:
                await pool.close()
            for line in state.health_lines:
                await line.close()
            state.executor.shutdown(wait=False, cancel_futures=True)

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics.endpoint(state)),
            WebSocketRoute("/graphql", WebSocketGraphQL(schema, state)),
            *log_routes(state),
            Route("/console", to_console),
            Mount("/console", ConsoleFiles(), name="console"),
            # GraphiQL's page (GET /graphql from a browser) loads its assets from here.
            *(
                [Mount("/graphiql", StaticFiles(directory=GRAPHIQL_DIR), name="graphiql")]
                if http.graphiql
                else []
            ),
        ],
        middleware=[Middleware(RequestLog, observe=metrics.observe_request), Middleware(BodyLimit)],
        exception_handlers={
            **{fault: unavailable for fault in (DatabaseUnavailable, *DATABASE_FAULTS)},
            Overloaded: overloaded,
            Exception: unexpected,
        },
        lifespan=lifespan,
    )
    app.state.ledger_state = state
    return Front(app, http, cache if cache_on else None, state)
