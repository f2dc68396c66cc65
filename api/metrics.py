"""Figures for Prometheus at `/metrics` (the text exposition format).

Counted as they happen, in each process: commands by type and outcome, their latency,
events appended, GraphQL requests by transport, type and outcome and their latency by
operation name, subscribers connected and dropped as slow, response cache hits and
misses, database pool connections in use and requests waiting, requests shed as
OVERLOADED and the slots of each admission gate (api.admission). Read from
`projection_positions` at each scrape: every projection's position, lag and dead letters
(the sealer is the projection `merkle`), and the log's head; with LEDGER_WITNESSES, each
witness's cosigned size and lag (from `cosignatures` and `checkpoints`).

With `ledger serve --workers N` (N > 1) every worker writes its figures to files in
PROMETHEUS_MULTIPROC_DIR (a fresh temporary folder `ledger serve` makes) and a scrape,
whichever worker answers it, adds up all of them: counters and histograms summed over
every worker that ever ran, gauges summed over the live ones.

No figure holds personal data or a token: labels are command types, error codes,
projection and pool names, transports, and operation names (a GraphQL name from the
document, at most 64 characters and 100 different ones per process, then `_other`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import os
import re
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
from graphql import get_operation_ast
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from psycopg import sql
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from strawberry.extensions import SchemaExtension

from api import auth, collector, logs
from api.graphql.errors import coded
from api.state import DATABASE_FAULTS, ApiState, DatabaseUnavailable
from api.webhooks.metrics import figures as webhook_figures

log = logging.getLogger("ledger.api.metrics")

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
# Decided by prometheus_client when it was first imported, from the environment.
MULTIPROCESS = values.ValueClass is not values.MutexValue
REFRESH_SECONDS = 2.0
SCRAPE_TIMEOUT_SECONDS = 2.0
MAX_OPERATIONS = 100
SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

COMMANDS = Counter(
    "ledger_commands",
    "Commands submitted, by command type and outcome (ok, or the refusal's code).",
    ["command", "outcome"],
)
COMMAND_SECONDS = Histogram(
    "ledger_command_duration_seconds",
    "Seconds a submission took, by command type (a batch of several: batch).",
    ["command"],
    buckets=SECONDS,
)
EVENTS_APPENDED = Counter("ledger_events_appended", "Events appended to the log.")
REQUESTS = Counter(
    "ledger_requests",
    "GraphQL requests answered (a WebSocket operation is one), by transport (http, sse, ws),"
    " operation type and outcome (ok, or the first error's code).",
    ["transport", "type", "outcome"],
)
REQUEST_SECONDS = Histogram(
    "ledger_request_duration_seconds",
    "Seconds a GraphQL query or mutation took to answer, by transport and operation name.",
    ["transport", "operation"],
    buckets=SECONDS,
)
SUBSCRIBERS = Gauge(
    "ledger_subscribers", "Live subscribers connected.", multiprocess_mode="livesum"
)
SLOW_SUBSCRIBERS = Counter(
    "ledger_subscribers_dropped_slow",
    "Subscribers cut off because they fell too far behind (SLOW_SUBSCRIBER).",
)
OPERATIONS = Counter(
    "ledger_graphql_operations",
    "GraphQL operations (HTTP, Server-Sent Events, WebSocket) by how they were answered:"
    " path compiled (one SQL statement, a compiled mutation, or a subscription on the shared"
    " fan-out path; reason none), strawberry (reason: query, mutation, subscription, stream,"
    " introspection, field, fields, bad_input, arguments, invalid, variables, unauthenticated,"
    " revoked, replica, shape, error, disabled) or refused (reason cost: QUERY_TOO_COSTLY).",
    ["path", "reason"],
)
CACHE = Counter(
    "ledger_response_cache_lookups",
    "Read-only requests looked up in the response cache, by result (hit, miss).",
    ["result"],
)
POOL_IN_USE = Gauge(
    "ledger_db_pool_in_use",
    "Database connections lent out, by pool (api: the read tables; event_store).",
    ["pool"],
    multiprocess_mode="livesum",
)
POOL_WAITING = Gauge(
    "ledger_db_pool_waiting",
    "Requests waiting for a database connection, by pool.",
    ["pool"],
    multiprocess_mode="livesum",
)
POOL_SIZE = Gauge(
    "ledger_db_pool_size",
    "Database connections open, by pool.",
    ["pool"],
    multiprocess_mode="livesum",
)
POOL_MAX = Gauge(
    "ledger_db_pool_max",
    "Database connections a pool may open.",
    ["pool"],
    multiprocess_mode="livesum",
)
SHED = Counter(
    "ledger_requests_shed",
    "Requests refused as OVERLOADED before touching the database, by gate (read, primary:"
    " their pools; executor: the event store's threads) and reason (wait: no slot within"
    " LEDGER_OVERLOAD_WAIT; queue: LEDGER_OVERLOAD_QUEUE already waiting).",
    ["gate", "reason"],
)
ADMISSION_IN_USE = Gauge(
    "ledger_admission_in_use",
    "Slots of an admission gate taken: connections of its pool, or executor threads.",
    ["gate"],
    multiprocess_mode="livesum",
)
ADMISSION_WAITING = Gauge(
    "ledger_admission_waiting",
    "Requests (and the server's own work) waiting for a slot of an admission gate.",
    ["gate"],
    multiprocess_mode="livesum",
)
ADMISSION_SLOTS = Gauge(
    "ledger_admission_slots",
    "Slots of an admission gate: its pool's connections, or the executor's threads.",
    ["gate"],
    multiprocess_mode="livesum",
)

GC_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
GC_PAUSES = Histogram(
    "ledger_gc_pause_seconds",
    "Seconds each garbage collection stopped the process, by generation (2: a full one).",
    ["generation"],
    buckets=GC_SECONDS,
)
GC_LONGEST = Gauge(
    "ledger_gc_pause_longest_seconds",
    "The longest garbage collection pause since the process began serving, by generation.",
    ["generation"],
    multiprocess_mode="max",
)

# ----- counting -----------------------------------------------------------------------


def observe_submission(types: Sequence[str], outcome: str, seconds: float, appended: int) -> None:
    """A `Ledger` observer (runs in the thread that ran the commands)."""
    for command in types:
        COMMANDS.labels(command, outcome).inc()
    COMMAND_SECONDS.labels(types[0] if len(types) == 1 else "batch").observe(seconds)
    if appended:
        EVENTS_APPENDED.inc(appended)
    logs.note_outcome(outcome)


_operations: set[str] = set()
NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]{0,63}")


def operation_label(name: str | None) -> str:
    """An operation name as a label: bounded in length and in number."""
    if not name:
        return "_anonymous"
    if not NAME.fullmatch(name):
        return "_other"
    if name not in _operations:
        if len(_operations) >= MAX_OPERATIONS:
            return "_other"
        _operations.add(name)
    return name


_children: dict[tuple[int, tuple[str, ...]], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """`metric.labels(*labels)`, remembered: every request asks for a few, and the label
    values are bounded (codes, reasons, transports, at most MAX_OPERATIONS names)."""
    key = (id(metric), labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


def observe_request(record: logs.RequestRecord) -> None:
    """A request or WebSocket operation answered (connections themselves are not)."""
    if record.path != "/graphql" or record.connection:
        return
    kind = record.operation_type or "none"
    child(REQUESTS, record.transport, kind, record.outcome or "ok").inc()
    if kind != "subscription":
        name = operation_label(record.operation)
        child(REQUEST_SECONDS, record.transport, name).observe(record.seconds)


def operation_path(outcome: Any) -> None:
    """How the compiler decided an operation (api.graphql.compiler's Outcome)."""
    reason = getattr(outcome, "reason", None)
    if reason is not None:
        child(OPERATIONS, "strawberry", reason).inc()
    elif hasattr(outcome, "error"):
        child(OPERATIONS, "refused", "cost").inc()
    else:
        child(OPERATIONS, "compiled", "none").inc()


def subscribed(change: int) -> None:
    SUBSCRIBERS.inc(change)


def dropped_slow() -> None:
    SLOW_SUBSCRIBERS.inc()


def cache_lookup(hit: bool) -> None:
    CACHE.labels("hit" if hit else "miss").inc()
    logs.note(cache="hit" if hit else "miss")


def pools(state: ApiState) -> Iterator[tuple[str, dict[str, int]]]:
    yield "api", state.pool.get_stats()
    pool = getattr(getattr(state.ledger.store, "datastore", None), "pool", None)
    if pool is not None and hasattr(pool, "get_stats"):
        yield "event_store", pool.get_stats()


def refresh(state: ApiState) -> None:
    """This process's pool and gate gauges, as they are now, and its collections since
    the last."""
    gc_pauses()
    for name, stats in pools(state):
        size = stats.get("pool_size", 0)
        POOL_IN_USE.labels(name).set(size - stats.get("pool_available", 0))
        POOL_WAITING.labels(name).set(stats.get("requests_waiting", 0))
        POOL_SIZE.labels(name).set(size)
        POOL_MAX.labels(name).set(stats.get("pool_max", 0))
    for name, gate in state.gates.items():
        ADMISSION_IN_USE.labels(name).set(gate.in_use)
        ADMISSION_WAITING.labels(name).set(gate.waiting)
        ADMISSION_SLOTS.labels(name).set(gate.slots)


def shed(gate: str, reason: str) -> None:
    SHED.labels(gate, reason).inc()


_longest: dict[int, float] = {}


def gc_pauses() -> None:
    for generation, seconds in collector.pauses():
        GC_PAUSES.labels(str(generation)).observe(seconds)
        if seconds > _longest.get(generation, 0.0):
            _longest[generation] = seconds
            GC_LONGEST.labels(str(generation)).set(seconds)


async def refresh_loop(state: ApiState) -> None:
    """With several workers a scrape reads the others' gauges from their files: keep
    this worker's fresh."""
    while True:
        with contextlib.suppress(Exception):
            refresh(state)
        await asyncio.sleep(REFRESH_SECONDS)


@contextlib.contextmanager
def operation_record(
    observe: logs.Observer | None = observe_request,
) -> Iterator[logs.RequestRecord | None]:
    """The record of one operation. Over the WebSocket each operation is a request of its
    own, logged when it ends (a subscription: when it is closed); else the request's."""
    parent = logs.REQUEST.get()
    record, token = parent, None
    if parent is not None and parent.connection:
        parent.operations += 1
        record = logs.RequestRecord(f"{parent.id}-{parent.operations}", "ws", "WS", parent.path)
        token = logs.REQUEST.set(record)
    try:
        yield record
    finally:
        if record is not None and parent is not None and parent is not record and not parent.role:
            parent.role, parent.token_id = record.role, record.token_id
        if token is not None and record is not None:
            record.seconds = time.perf_counter() - record.started
            try:
                logs.log_request(record)
                if observe is not None:
                    observe(record)
            finally:
                # ValueError: it ended in another context, which ends with its task
                with contextlib.suppress(ValueError):
                    logs.REQUEST.reset(token)


class OperationLog(SchemaExtension):
    """Fill the request's record from the operation: its name and type, the caller, the
    first error's code, a refused mutation's code. Over the WebSocket each operation is a
    request of its own, logged when it ends (a subscription: when it is closed)."""

    def __init__(self, observe: logs.Observer | None = None) -> None:
        self.observe = observe

    def on_operation(self) -> Iterator[None]:
        with operation_record(self.observe) as record:
            try:
                yield
            finally:
                if record is not None:
                    self._learn(record)

    def on_execute(self) -> Iterator[None]:
        # The type is known before anything runs: a subscription is not shed (api.admission).
        ec = self.execution_context
        record = logs.REQUEST.get()
        if record is not None and record.operation_type is None and ec.graphql_document:
            logs.note_operation(get_operation_ast(ec.graphql_document, ec.operation_name))
        yield

    def _learn(self, record: logs.RequestRecord) -> None:
        ec = self.execution_context
        if ec.graphql_document is not None and record.operation_type is None:
            logs.note_operation(get_operation_ast(ec.graphql_document, ec.operation_name))
        principal = getattr(ec.context, "principal", None)
        if principal is not None and record.role is None:
            logs.note_principal(principal)
        result = ec.result
        errors = getattr(result, "errors", None) or ec.pre_execution_errors or []
        if errors:
            logs.note_outcome(coded(errors[0].formatted)["extensions"]["code"])
        data = getattr(result, "data", None)
        if record.operation_type == "mutation" and isinstance(data, dict):
            for value in data.values():  # a refusal answered as a MutationError
                if isinstance(value, dict) and isinstance(value.get("code"), str):
                    logs.note_outcome(value["code"])
                    break


# ----- the read side, at scrape time ----------------------------------------------------

READ_SIDE = (
    "SELECT h.head, p.name, p.position,"
    " (SELECT count(*) FROM projection_failures f WHERE f.projection = p.name) AS failures,"
    " CASE WHEN h.head > p.position THEN (SELECT extract(epoch FROM now() - ("
    "   convert_from(e.state, 'UTF8')::json #>> '{{timestamp,_data_}}')::timestamptz)"
    "   FROM {e} e WHERE e.notification_id > p.position"
    "   ORDER BY e.notification_id LIMIT 1) END AS lag_seconds"
    " FROM (SELECT coalesce(max(notification_id), 0) AS head FROM {e}) h"
    " LEFT JOIN projection_positions p ON true"
)


async def read_side(state: ApiState) -> list[Metric]:
    """The log's head and each projection's position, lag and dead letters: one query
    (index lookups), read on the health checks' connection (not behind the requests)."""
    up = GaugeMetricFamily(
        "ledger_database_up", "Whether the scrape could read the database (1) or not (0)."
    )
    query = sql.SQL(READ_SIDE).format(e=state.ledger.store.events_table)
    try:
        rows = await asyncio.wait_for(state.health_fetch(query), SCRAPE_TIMEOUT_SECONDS)
    except psycopg.errors.UndefinedTable:  # no projector has set up its tables yet
        rows = []
    except (TimeoutError, DatabaseUnavailable, *DATABASE_FAULTS):
        up.add_metric([], 0)
        return [up]
    up.add_metric([], 1)
    head = GaugeMetricFamily("ledger_log_head", "The position of the log's last event.")
    position = GaugeMetricFamily(
        "ledger_projection_position",
        "The last position each projection has applied (the sealer: merkle).",
        labels=["projection"],
    )
    lag = GaugeMetricFamily(
        "ledger_projection_lag_events", "Events each projection has yet to apply.",
        labels=["projection"],
    )  # fmt: skip
    lag_seconds = GaugeMetricFamily(
        "ledger_projection_lag_seconds",
        "Age of the oldest event each projection has yet to apply (0 when caught up).",
        labels=["projection"],
    )
    failures = GaugeMetricFamily(
        "ledger_projection_failures",
        "Events each projection skipped as dead letters (projection_failures).",
        labels=["projection"],
    )
    for row in rows:
        head.samples.clear()
        head.add_metric([], row["head"])
        if row["name"] is None:
            continue
        name = [row["name"]]
        position.add_metric(name, row["position"])
        lag.add_metric(name, max(0, row["head"] - row["position"]))
        lag_seconds.add_metric(name, max(0.0, float(row["lag_seconds"] or 0)))
        failures.add_metric(name, row["failures"])
    return [up, head, position, lag, lag_seconds, failures]


async def witness_figures(state: ApiState) -> list[Metric]:
    """Per witness in LEDGER_WITNESSES: the size it last cosigned, and how far the latest
    checkpoint is ahead of it, in leaves and in seconds (0 when it has cosigned it)."""
    from projections.witnessing import FIGURES, endpoints_from_env

    try:
        names = [e.name for e in endpoints_from_env()]
    except ValueError:
        names = []
    if not names:
        return []
    query = sql.SQL(FIGURES).format(names=sql.Literal(names))
    try:
        rows = await asyncio.wait_for(state.health_fetch(query), SCRAPE_TIMEOUT_SECONDS)
    except (psycopg.errors.UndefinedTable, TimeoutError, DatabaseUnavailable, *DATABASE_FAULTS):
        return []
    cosigned = GaugeMetricFamily(
        "ledger_witness_cosigned_size", "The largest checkpoint size each witness cosigned.",
        labels=["witness"],
    )  # fmt: skip
    lag = GaugeMetricFamily(
        "ledger_witness_lag_leaves",
        "Leaves between the latest checkpoint and the last one each witness cosigned.",
        labels=["witness"],
    )
    lag_seconds = GaugeMetricFamily(
        "ledger_witness_lag_seconds",
        "Age of the oldest checkpoint each witness has not cosigned (0 when caught up).",
        labels=["witness"],
    )
    for row in rows:
        name = [row["name"]]
        cosigned.add_metric(name, row["cosigned"])
        lag.add_metric(name, max(0, row["latest"] - row["cosigned"]))
        lag_seconds.add_metric(name, max(0.0, float(row["lag_seconds"] or 0)))
    return [cosigned, lag, lag_seconds]


RELAY_SIDE = (
    "SELECT r.stream, r.position, r.publishes, r.duplicates, r.reconciled, r.stream_bytes,"
    " (SELECT coalesce(max(notification_id), 0) FROM {e}) AS head FROM relay_positions r"
)
RELAY_FIGURES = (
    ("position", "ledger_relay_position", "The last log position the relay put in its stream."),
    ("lag", "ledger_relay_lag_events", "Events of the log not yet in the relay's stream."),
    ("publishes", "ledger_relay_publishes", "Messages the stream stored (counted since it began)."),
    ("duplicates", "ledger_relay_duplicates",
     "Re-publishes the server dropped as duplicates (Nats-Msg-Id)."),
    ("reconciled", "ledger_relay_reconciled",
     "Messages found stored but not checkpointed, adopted on reconciling (never re-sent)."),
    ("stream_bytes", "ledger_relay_stream_bytes", "The stream's size in bytes, last seen."),
)  # fmt: skip


async def relay_side(state: ApiState) -> list[Metric]:
    """Each JetStream relay's figures, from its checkpoint row (none before one runs)."""
    query = sql.SQL(RELAY_SIDE).format(e=state.ledger.store.events_table)
    try:
        rows = await asyncio.wait_for(state.health_fetch(query), SCRAPE_TIMEOUT_SECONDS)
    except (psycopg.errors.UndefinedTable, TimeoutError, DatabaseUnavailable, *DATABASE_FAULTS):
        return []
    families = {k: GaugeMetricFamily(name, text, labels=["stream"]) for k, name, text in
                RELAY_FIGURES}  # fmt: skip
    for row in rows:
        row = {**row, "lag": max(0, row["head"] - row["position"])}
        for key, family in families.items():
            family.add_metric([row["stream"]], row[key])
    return list(families.values())


class _Collected:
    """Figures from several sources, as one collector."""

    def __init__(self, *sources: Any) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        for source in self.sources:
            yield from source.collect() if hasattr(source, "collect") else source


async def exposition(state: ApiState, accept: str | None = None) -> tuple[bytes, str]:
    """The figures in the format the scraper asks for (Prometheus text, OpenMetrics)."""
    refresh(state)
    if MULTIPROCESS:
        counted = CollectorRegistry()
        forget_dead_workers()
        multiprocess.MultiProcessCollector(counted)
    else:
        counted = REGISTRY
    everything = CollectorRegistry(auto_describe=False)
    hooks = await webhook_figures(state)
    witnesses = await witness_figures(state)
    relays = await relay_side(state)
    everything.register(_Collected(counted, await read_side(state), witnesses, hooks, relays))
    encoder, media_type = choose_encoder(accept or "")
    return encoder(everything), media_type


# ----- who may read them -------------------------------------------------------------

FORWARDED = ("forwarded", "x-forwarded-for", "x-real-ip")


def refusal(request: Request) -> Response | None:
    """None when the request may read /metrics: with LEDGER_METRICS_TOKEN set, it sends
    that bearer token; without, it comes from loopback, not through a proxy."""
    expected = os.environ.get("LEDGER_METRICS_TOKEN", "").strip()
    if expected:
        sent = auth.bearer(request.headers.get("authorization")) or ""
        if hmac.compare_digest(sent.encode(), expected.encode()):
            return None
        return _error(401, "UNAUTHENTICATED", "send the metrics token (LEDGER_METRICS_TOKEN)",
                      {"WWW-Authenticate": "Bearer"})  # fmt: skip
    host = request.client.host if request.client else ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback and not any(h in request.headers for h in FORWARDED):
        return None
    return _error(403, "FORBIDDEN", "metrics are served to loopback clients only,"
                  " or to any holder of LEDGER_METRICS_TOKEN when it is set")  # fmt: skip


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"errors": [{"message": message, "extensions": {"code": code}}]}
    return JSONResponse(body, status_code=status, headers=headers)


def endpoint(state: ApiState) -> Callable[[Request], Awaitable[Response]]:
    async def metrics(request: Request) -> Response:
        refused = refusal(request)
        if refused is not None:
            logs.note_outcome("UNAUTHENTICATED" if refused.status_code == 401 else "FORBIDDEN")
            return refused
        body, media_type = await exposition(state, request.headers.get("accept"))
        return Response(body, headers={"Content-Type": media_type})

    return metrics


# ----- several worker processes --------------------------------------------------------


def multiprocess_dir(workers: int, parent: str | None = None) -> str | None:
    """For `ledger serve --workers N`: a fresh folder for the workers' figures (inside
    `parent`, PROMETHEUS_MULTIPROC_DIR as it was set), named in the environment the
    workers inherit. None for one worker, which keeps its figures in memory."""
    if workers <= 1:
        return None
    if parent:
        Path(parent).mkdir(parents=True, exist_ok=True)
    directory = tempfile.mkdtemp(prefix="ledger-metrics-", dir=parent)
    os.environ[MULTIPROC_DIR] = directory
    return directory


def forget_dead_workers() -> None:
    """Drop the live gauges of workers that are gone (a crash, a restart)."""
    directory = os.environ.get(MULTIPROC_DIR)
    if not directory:
        return
    pids = {
        int(m[1])
        for f in os.listdir(directory)
        if (m := re.fullmatch(r"gauge_live\w+?_(\d+)\.db", f))
    }
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, directory)
        except PermissionError:
            pass


def worker_exit() -> None:
    if MULTIPROCESS and os.environ.get(MULTIPROC_DIR):
        multiprocess.mark_process_dead(os.getpid())


def install(state: ApiState) -> None:
    """Count the ledger's submissions and the requests the gates shed."""
    if observe_submission not in state.ledger.observers:
        state.ledger.observers.append(observe_submission)
    for gate in state.gates.values():
        gate.on_shed = shed
