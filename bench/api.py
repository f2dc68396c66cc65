"""Read throughput and latency of the GraphQL API, against a plain Starlette app and
PostGraphile 4 serving the same rows from the same tables, measured in the same run;
and the delivery latency of live subscriptions.

The data set is the demo (`ledger demo`, `--accounts` 2000) loaded through `Ledger.submit`
with the demo's simulated clock into the schema `bench_api`, then every projection rebuilt
into the same schema. `--keep` leaves the schema in place and the next run reuses it
(catching the projections up to the head); by default it is dropped at the end. The
subscription measurement appends a few hundred events, so a kept data set grows by that
much per run.

Three servers, each one process on loopback with one pool of 10 PostgreSQL connections:

- ledger: `python -m api.cli serve --no-projector` (uvicorn, strawberry GraphQL, the
  bearer token looked up per request, the uvicorn access log on, as `ledger serve` runs);
- starlette: a plain Starlette app in uvicorn (this module, `--serve-baseline`), with the
  API's own async psycopg pool (`api.state.make_pool`) and access log, that runs the SQL
  the API runs for each query (the same SELECT, WHERE, ORDER BY and LIMIT) and returns the
  same fields as JSON in the same shape: no GraphQL, no authentication;
- postgraphile: PostGraphile 4 (`bench/postgraphile`, installed with npm on first use)
  over the same schema, default mutations off, its connection read-only, query log off.
  It selects the columns it is asked for; for an account's status, which the API computes
  in SQL, it is asked for the three expiry columns the status is computed from.

Three reads: `account(id)` of one account; a page of 100 `accounts` (id, handle, status,
verified, postCount) in registration order; and the first 100 rows of that account's
`history` (position, type, at, summary). The account is the one with the most history
rows. Each server's answer is checked once (no errors, the same rows as the others) before
it is measured.

Load: `wrk` (Debian's package: `apt-get install wrk`), one thread, keep-alive connections,
for `--seconds` (5; `--quick`: 2) per run at 1, 16 and 64 connections, each run
`--repeats` times (3; `--quick`: 1), interleaved over servers so that drift falls on all
of them alike. The table gives the median (min-max) requests/s and the median of the runs'
p50 and p99 latency; ledger/starlette and ledger/postgraphile are ratios of median req/s.
The load generator, the servers and PostgreSQL share this machine's cores.

Subscriptions: a second ledger server, this one with its projector (`ledger serve`), and
`--subscribers` (100) WebSocket clients in a separate process (graphql-transport-ws, a
regulator token at connection_init) subscribed to `events(types: ["Post.Published"])`
from the current head. This process then registers, verifies, signs and approves a fresh
account and publishes `--posts` (200; `--quick`: 50) posts at `--rate` (20) a second with
`Ledger.execute`. Latency: from `execute` returning here to each client receiving the
item, both read from the system-wide monotonic clock; its p50/p99 over every delivery.
The clients share one event loop, so the last of them to read a burst of 100 messages
also waits for the other clients' handling of theirs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import queue
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from uuid import UUID

import uvicorn
from psycopg import sql
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.auth import create_token, revoke_token
from api.graphql.queries import ACCOUNT_SELECT
from api.state import make_pool
from bench import common
from bench.common import Progress, fixed_key, load_demo, log, quantile, server_name, server_version
from ledger import Database, Ledger
from ledger.vault import Vault

ROOT = Path(__file__).resolve().parent.parent
POSTGRAPHILE_DIR = Path(__file__).resolve().parent / "postgraphile"
SCHEMA = "bench_api"
VAULT_KEY = fixed_key("bench.api")
POOL_SIZE = 10  # the API's: LEDGER_POOL_SIZE (5) * 2; PostGraphile's default is 10 too
CONCURRENCY = (1, 16, 64)
PAGE = 100
ENDPOINTS = ("account", "accounts", "history")
LABELS = {"account": "account(id)", "accounts": "accounts(100)", "history": "history(100)"}
SERVERS = ("ledger", "starlette", "postgraphile")

ACCOUNT_FIELDS = "id handle status verified postCount"
LEDGER_QUERIES = {
    "account": f"query($id: ID!) {{ account(id: $id) {{ {ACCOUNT_FIELDS} }} }}",
    "accounts": f"{{ accounts(first: {PAGE}) {{ edges {{ node {{ {ACCOUNT_FIELDS} }} }} }} }}",
    "history": f"query($id: ID!) {{ history(accountId: $id, first: {PAGE})"
    " { edges { node { position type at summary } } } }",
}
PG_ACCOUNT_FIELDS = "accountId handle closedUntil suspendedUntil restrictedUntil verified postCount"
POSTGRAPHILE_QUERIES = {
    "account": f"query($id: UUID!) {{ accountByAccountId(accountId: $id) {{"
    f" {PG_ACCOUNT_FIELDS} }} }}",
    "accounts": f"{{ allAccounts(first: {PAGE}, orderBy: POSITION_ASC) {{ edges {{ node {{"
    f" {PG_ACCOUNT_FIELDS} }} }} }} }}",
    "history": f"query($id: UUID!) {{ allHistories(condition: {{accountId: $id}}, first: {PAGE},"
    " orderBy: POSITION_ASC) { edges { node { position type at summary } } } }",
}
SUBSCRIPTION = (
    'subscription($after: Position) { events(after: $after, types: ["Post.Published"])'
    " { position type at } }"
)


# ----- the data set ------------------------------------------------------------------


def prepare(db: Database, schema: str, accounts: int) -> None:
    """The demo in `schema` with every projection at the head: loaded and rebuilt unless a
    complete data set of that size is there already, then caught up."""
    from projections.rebuild import rebuild
    from projections.registry import resolve
    from projections.runner import Projector

    def rebuilt(ledger: Ledger) -> None:
        progress = Progress("rebuild, events")
        rebuild(ledger, db, resolve(), schema, progress)
        progress.close()

    if load_demo(db, schema, accounts, VAULT_KEY, then=rebuilt):
        ledger = Ledger.open(db, schema, vault=Vault(VAULT_KEY))
        projector = Projector(ledger, db)
        try:
            projector.setup()
            projector.catch_up()
        finally:
            projector.close()
            ledger.close()


def busiest_account(db: Database, schema: str) -> tuple[UUID, int]:
    """The account with the most history rows (ties: the lowest id), and its row count."""
    with db.connect() as conn:
        row = conn.execute(
            sql.SQL(
                "SELECT account_id, count(*) FROM {} GROUP BY account_id"
                " ORDER BY count(*) DESC, account_id LIMIT 1"
            ).format(sql.Identifier(schema, "history"))
        ).fetchone()
    assert row is not None, "the history table is empty"
    return row[0], int(row[1])


def data_set_size(db: Database, schema: str) -> tuple[int, str]:
    """(events in the log, the server's version)."""
    ledger = Ledger.open(db, schema, vault=Vault(VAULT_KEY))
    try:
        head = ledger.head()
    finally:
        ledger.close()
    return head, server_version(db)


# ----- the servers ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    url: str  # http://127.0.0.1:port
    process: subprocess.Popen[bytes]
    log_path: Path

    def last_line(self) -> str:
        return self.log_tail(1).strip()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join("    " + line for line in text[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def server_env(db: Database, schema: str, data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "LEDGER_DATABASE_URL": db.conninfo,
            "LEDGER_SCHEMA": schema,
            "LEDGER_CIPHER_KEY": base64.b64encode(VAULT_KEY).decode(),
            "LEDGER_DATA_DIR": str(data_dir),
        }
    )
    return env


def start(name: str, command: list[str], env: dict[str, str], tmp: Path, port: int) -> Server:
    log_path = tmp / f"{name}.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Server(name, f"http://127.0.0.1:{port}", process, log_path)


def http(
    method: str, url: str, body: bytes | None = None, token: str | None = None, timeout: float = 10
) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_ready(
    server: Server, method: str, path: str, body: bytes | None = None, timeout: float = 90
) -> None:
    """Until `path` answers 200; raise with the server's log if it exits or times out."""
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.process.returncode}:"
                f" {server.last_line()}\n{server.log_tail()}"
            )
        with contextlib.suppress(OSError):
            if http(method, server.url + path, body, timeout=2)[0] == 200:
                return
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(
                f"{server.name} not ready within {timeout:.0f} s:"
                f" {server.last_line()}\n{server.log_tail()}"
            )
        time.sleep(0.2)


def start_ledger(db: Database, schema: str, tmp: Path, projector: bool) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if not projector:
        command.append("--no-projector")
    name = "ledger-projector" if projector else "ledger"
    server = start(name, command, server_env(db, schema, tmp), tmp, port)
    wait_ready(server, "GET", "/readyz")
    return server


def start_baseline(db: Database, schema: str, tmp: Path) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "bench.api", "--serve-baseline", str(port)]
    server = start("starlette", command, server_env(db, schema, tmp), tmp, port)
    wait_ready(server, "GET", "/healthz")
    return server


def postgraphile_binary() -> Path:
    """PostGraphile's command, installed into bench/postgraphile with npm on first use."""
    binary = POSTGRAPHILE_DIR / "node_modules" / ".bin" / "postgraphile"
    if binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise RuntimeError("node and npm are not installed (apt-get install nodejs npm)")
    log("installing PostGraphile 4 into bench/postgraphile (npm install)")
    done = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--no-package-lock"],
        cwd=POSTGRAPHILE_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0 or not binary.exists():
        lines = (done.stdout + done.stderr).strip().splitlines()
        first = next((x for x in lines if "error" in x.lower()), lines[-1] if lines else "")
        tail = "\n".join(lines[-10:])
        raise RuntimeError(f"npm install failed (exit {done.returncode}): {first}\n{tail}")
    return binary


def start_postgraphile(db: Database, schema: str, tmp: Path) -> Server:
    binary = postgraphile_binary()
    port = free_port()
    # Every transaction of its connections read-only, on top of no default mutations.
    separator = "&" if "?" in db.conninfo else "?"
    conninfo = f"{db.conninfo}{separator}options=-c%20default_transaction_read_only%3Don"
    command = [
        str(binary),
        "--connection",
        conninfo,
        "--schema",
        schema,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-pool-size",
        str(POOL_SIZE),
        "--disable-graphiql",
        "--disable-default-mutations",
        "--disable-query-log",
    ]
    server = start("postgraphile", command, dict(os.environ), tmp, port)
    wait_ready(server, "POST", "/graphql", json.dumps({"query": "{ __typename }"}).encode())
    return server


# ----- the baseline app ----------------------------------------------------------------


def baseline_app(conninfo: str, schema: str) -> Starlette:
    """Plain Starlette: the API's SQL for the three reads, answered as JSON shaped like the
    API's `data`, from the API's kind of pool."""
    pool = make_pool(Database(conninfo), schema, POOL_SIZE)

    def account(r: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": str(r["account_id"]),
            "handle": r["handle"],
            "status": str(r["status"]).upper(),
            "verified": r["verified"],
            "postCount": r["post_count"],
        }

    def entry(r: dict[str, Any]) -> dict[str, Any]:
        return {
            "position": str(r["position"]),
            "type": r["type"],
            "at": r["at"].isoformat(),
            "summary": r["summary"],
        }

    async def select(query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        async with pool.connection() as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall()  # type: ignore[return-value]  # a dict_row pool

    def first(request: Request) -> int:
        value = int(request.query_params.get("first", PAGE))
        if not 1 <= value <= 500:
            raise ValueError("first must be from 1 to 500")
        return value

    def bad(error: Exception) -> Response:
        return JSONResponse({"errors": [{"message": str(error)}]}, status_code=400)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def one(request: Request) -> Response:
        try:
            params = {"id": UUID(request.path_params["id"]), "now": datetime.now(UTC)}
        except ValueError as e:
            return bad(e)
        found = await select(f"{ACCOUNT_SELECT} WHERE account_id = %(id)s", params)
        return JSONResponse({"data": {"account": account(found[0]) if found else None}})

    async def page(request: Request) -> Response:
        try:
            size = first(request)
        except ValueError as e:
            return bad(e)
        found = await select(
            f"{ACCOUNT_SELECT} WHERE position > %(after)s ORDER BY position LIMIT {size + 1}",
            {"after": 0, "now": datetime.now(UTC)},
        )
        edges = [{"node": account(r)} for r in found[:size]]
        return JSONResponse({"data": {"accounts": {"edges": edges}}})

    async def history(request: Request) -> Response:
        try:
            size = first(request)
            params = {"account": UUID(request.path_params["id"]), "after": 0}
        except ValueError as e:
            return bad(e)
        found = await select(
            "SELECT * FROM history WHERE account_id = %(account)s"
            f" AND position > %(after)s ORDER BY position LIMIT {size + 1}",
            params,
        )
        edges = [{"node": entry(r)} for r in found[:size]]
        return JSONResponse({"data": {"history": {"edges": edges}}})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await pool.open()
        try:
            yield
        finally:
            await pool.close()

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/account/{id}", one),
            Route("/accounts", page),
            Route("/history/{id}", history),
        ],
        lifespan=lifespan,
    )


def serve_baseline(port: int) -> None:
    app = baseline_app(os.environ["LEDGER_DATABASE_URL"], os.environ["LEDGER_SCHEMA"])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="info")  # as `ledger serve`


# ----- requests and load ---------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One HTTP request, as the load generator sends it."""

    method: str
    path: str
    body: bytes | None = None
    token: str | None = None


def calls_for(server: str, account: UUID, token: str) -> dict[str, Call]:
    if server == "starlette":
        return {
            "account": Call("GET", f"/account/{account}"),
            "accounts": Call("GET", f"/accounts?first={PAGE}"),
            "history": Call("GET", f"/history/{account}?first={PAGE}"),
        }
    queries = LEDGER_QUERIES if server == "ledger" else POSTGRAPHILE_QUERIES
    out = {}
    for endpoint, query in queries.items():
        variables = {} if endpoint == "accounts" else {"id": str(account)}
        body = json.dumps({"query": query, "variables": variables}).encode()
        out[endpoint] = Call("POST", "/graphql", body, token if server == "ledger" else None)
    return out


def fingerprint(server: Server, request: Call) -> Any:
    """What the answer holds, to compare across servers: the handle of the account, or the
    first field (id or position) of each row of a page. Raise if the answer is an error."""
    status, raw = http(request.method, server.url + request.path, request.body, request.token)
    answer = json.loads(raw)
    if status != 200 or answer.get("errors") or not answer.get("data"):
        raise RuntimeError(f"{server.name} {request.path}: HTTP {status}: {raw[:400]!r}")
    value = next(iter(answer["data"].values()))
    if value is None:
        raise RuntimeError(f"{server.name} {request.path}: no such account")
    if "edges" in value:
        return [str(next(iter(e["node"].values()))) for e in value["edges"]]
    return value["handle"]


@dataclass(frozen=True)
class Run:
    rate: float  # requests/s
    p50: float  # ms
    p99: float  # ms
    requests: int
    errors: int  # socket errors, timeouts, non-2xx answers


# wrk's report, one line the benchmarks parse (no braces: it joins .format templates).
WRK_DONE = """done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""
WRK_SCRIPT = (
    """wrk.method = "{method}"
wrk.headers["Content-Type"] = "application/json"
{extra}
"""
    + WRK_DONE
)


def wrk_script(request: Call, tmp: Path) -> Path:
    extra = []
    if request.token:
        extra.append(f'wrk.headers["Authorization"] = "Bearer {request.token}"')
    if request.body is not None:
        extra.append(f"wrk.body = [==[{request.body.decode()}]==]")
    path = tmp / f"wrk-{uuid.uuid4().hex[:8]}.lua"
    path.write_text(WRK_SCRIPT.format(method=request.method, extra="\n".join(extra)))
    return path


def wrk(url: str, script: Path, connections: int, seconds: int) -> Run:
    command = [
        "wrk",
        "--threads",
        "1",
        "--connections",
        str(connections),
        "--duration",
        f"{seconds}s",
        "--timeout",
        "10s",
        "--script",
        str(script),
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    lines = [x for x in done.stdout.splitlines() if x.startswith("BENCH ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")
    requests, micros, p50, p99, errors = (int(x) for x in lines[-1].split()[1:])
    return Run(requests / (micros / 1e6), p50 / 1000, p99 / 1000, requests, errors)


# ----- subscriptions -------------------------------------------------------------------


class Writer(common.Writer):
    """A fresh account (registered, verified, signed, approved) under a demo provider, and
    posts for it."""

    def __init__(self, ledger: Ledger) -> None:
        super().__init__(ledger, 1, prefix="bench-api")

    def publish(self) -> tuple[int, float, float]:
        """Publish one post: (its log position, when `execute` was called and returned)."""
        command = self.post(self.accounts[0])
        called = time.monotonic()
        result = self.ledger.execute(command)
        returned = time.monotonic()
        assert result.position is not None and not result.replayed
        return result.position, called, returned


async def subscribers(url: str, token: str, after: int, clients: int) -> None:
    """The client process: `clients` subscriptions; prints `subscribed` once all are open,
    `live` once each has received an item, then on `stop <position>` from stdin waits for
    that position to reach every client and prints what each received, as JSON."""
    from websockets.asyncio.client import connect
    from websockets.typing import Subprotocol

    received: list[list[tuple[int, float]]] = [[] for _ in range(clients)]
    errors: list[str] = []
    opened = 0
    all_open, all_live, progress = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def client(k: int) -> None:
        nonlocal opened
        async with connect(
            url,
            subprotocols=[Subprotocol("graphql-transport-ws")],
            ping_interval=None,
            open_timeout=60,
            max_size=None,
        ) as ws:
            await ws.send(
                json.dumps(
                    {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
                )
            )
            ack = json.loads(await ws.recv())
            if ack.get("type") != "connection_ack":
                raise RuntimeError(f"no connection_ack: {ack}")
            await ws.send(
                json.dumps(
                    {
                        "id": "1",
                        "type": "subscribe",
                        "payload": {"query": SUBSCRIPTION, "variables": {"after": str(after)}},
                    }
                )
            )
            opened += 1
            if opened == clients:
                all_open.set()
            async for message in ws:
                at = time.monotonic()  # first, before any parsing
                item = json.loads(message)
                if item.get("type") == "next" and not item["payload"].get("errors"):
                    received[k].append((int(item["payload"]["data"]["events"]["position"]), at))
                    if all(received):
                        all_live.set()
                    progress.set()
                elif item.get("type") != "ping":
                    errors.append(str(item)[:300])
                    progress.set()
                    return

    tasks = [asyncio.create_task(client(k)) for k in range(clients)]

    async def first_of(event: asyncio.Event) -> None:
        """Until `event` is set; raise the first client failure instead if one comes first."""
        waiter = asyncio.create_task(event.wait())
        while not waiter.done():
            await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                if t.done() and t.exception() is not None:
                    waiter.cancel()
                    raise t.exception()  # type: ignore[misc]

    await asyncio.wait_for(first_of(all_open), 120)
    print("subscribed", flush=True)
    await first_of(all_live)
    print("live", flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    last = int(line.split()[1])
    deadline = time.monotonic() + 30
    while (
        not all(r and r[-1][0] >= last for r in received)
        and not errors
        and time.monotonic() < deadline
    ):
        progress.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(progress.wait(), 1)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps({"received": received, "errors": errors}), flush=True)


@dataclass(frozen=True)
class Deliveries:
    clients: int
    posts: int
    rate: float  # posts/s achieved
    latencies: list[float]  # seconds, commit -> received, every delivery
    commits: list[float]  # seconds in `execute`
    missing: int
    errors: list[str]


def lines_of(stream: IO[str]) -> queue.Queue[str]:
    """The stream's lines, read by a thread into a queue ('' at the end)."""
    out: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            out.put(line)
        out.put("")

    threading.Thread(target=pump, name="subscriber-lines", daemon=True).start()
    return out


def expect(lines: queue.Queue[str], word: str, timeout: float) -> str:
    line = lines.get(timeout=timeout)
    if not line.startswith(word):
        raise RuntimeError(f"the subscriber process said {line[:300]!r}, not {word!r}")
    return line


def subscriptions(
    args: argparse.Namespace, db: Database, schema: str, token: str, tmp: Path
) -> Deliveries:
    server = start_ledger(db, schema, tmp, projector=True)
    ledger = Ledger.open(db, schema, vault=Vault(VAULT_KEY))
    child: subprocess.Popen[str] | None = None
    try:
        writer = Writer(ledger)
        after = ledger.head()
        ws_url = server.url.replace("http://", "ws://") + "/graphql"
        env = dict(os.environ, BENCH_API_TOKEN=token)
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.api",
                "--subscribe",
                ws_url,
                "--after",
                str(after),
                "--subscribers",
                str(args.subscribers),
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdin is not None and child.stdout is not None
        lines = lines_of(child.stdout)
        log(f"subscriptions: {args.subscribers} clients on {ws_url}")
        expect(lines, "subscribed", 150)
        # Warm-up: a post every 0.1 s until every client has received one.
        deadline = time.monotonic() + 60
        while lines.empty() and time.monotonic() < deadline:
            writer.publish()
            time.sleep(0.1)
        expect(lines, "live", 5)
        log(f"subscriptions: {args.posts} posts at {args.rate:g}/s")
        commits: dict[int, float] = {}
        in_execute: list[float] = []
        start_at = time.monotonic() + 0.05
        for i in range(args.posts):
            delay = start_at + i / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            position, called, returned = writer.publish()
            commits[position] = returned
            in_execute.append(returned - called)
        rate = args.posts / (max(commits.values()) - start_at)
        child.stdin.write(f"stop {max(commits)}\n")
        child.stdin.flush()
        result = json.loads(expect(lines, "{", 60))
    finally:
        if child is not None:
            if child.poll() is None:
                child.terminate()
            child.wait(10)
        ledger.close()
        server.stop()
    latencies = [at - commits[p] for r in result["received"] for p, at in r if p in commits]
    return Deliveries(
        args.subscribers,
        args.posts,
        rate,
        latencies,
        in_execute,
        args.subscribers * args.posts - len(latencies),
        result["errors"],
    )


# ----- the run -------------------------------------------------------------------------


@contextlib.contextmanager
def running(servers: list[Server]) -> Iterator[list[Server]]:
    try:
        yield servers
    finally:
        for s in servers:
            s.stop()


def measure(
    args: argparse.Namespace, db: Database, schema: str, token: str, account: UUID, tmp: Path
) -> tuple[dict[tuple[str, str, int], list[Run]], dict[str, str]]:
    """The load runs: {(server, endpoint, connections): runs}, and why a server was left out."""
    skipped: dict[str, str] = {}
    servers: list[Server] = []
    with running(servers):
        log("starting the ledger API and the Starlette baseline")
        servers.append(start_ledger(db, schema, tmp, projector=False))
        servers.append(start_baseline(db, schema, tmp))
        log("starting PostGraphile")
        try:
            servers.append(start_postgraphile(db, schema, tmp))
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            skipped["postgraphile"] = str(e).splitlines()[0]
            log(f"postgraphile: left out: {e}")

        scripts: dict[tuple[str, str], tuple[str, Path]] = {}
        expected: dict[str, Any] = {}
        for server in list(servers):
            try:
                for endpoint, request in calls_for(server.name, account, token).items():
                    seen = fingerprint(server, request)
                    if endpoint in expected and seen != expected[endpoint]:
                        raise RuntimeError(
                            f"{server.name} {endpoint}: other rows than the "
                            f"ledger's: {str(seen)[:200]} ..."
                        )
                    expected.setdefault(endpoint, seen)
                    scripts[server.name, endpoint] = (
                        server.url + request.path,
                        wrk_script(request, tmp),
                    )
            except (RuntimeError, OSError, ValueError) as e:
                if server.name != "postgraphile":
                    raise
                skipped["postgraphile"] = str(e).splitlines()[0]
                log(f"postgraphile: left out: {e}")
                server.stop()
                servers.remove(server)
        assert len(expected["accounts"]) == PAGE, expected["accounts"]

        names = [s.name for s in servers]
        log("warm-up: 1 s per server and read at 16 connections")
        for name in names:
            for endpoint in ENDPOINTS:
                wrk(*scripts[name, endpoint], 16, 1)
        results: dict[tuple[str, str, int], list[Run]] = {}
        for repeat in range(args.repeats):
            for endpoint in ENDPOINTS:
                for connections in CONCURRENCY:
                    for name in names:
                        run = wrk(*scripts[name, endpoint], connections, args.seconds)
                        results.setdefault((name, endpoint, connections), []).append(run)
                        log(
                            f"repeat {repeat + 1}/{args.repeats} {LABELS[endpoint]:<14}"
                            f" c={connections:<3} {name:<13} {run.rate:8.0f} req/s"
                            f"  p50 {run.p50:7.2f} ms  p99 {run.p99:7.2f} ms"
                            + (f"  {run.errors} errors" if run.errors else "")
                        )
    return results, skipped


def report(
    args: argparse.Namespace,
    db: Database,
    schema: str,
    account: UUID,
    rows: int,
    load: tuple[float, float],
    results: dict[tuple[str, str, int], list[Run]],
    skipped: dict[str, str],
    live: Deliveries | None,
    live_error: str | None,
) -> None:
    events, version = data_set_size(db, schema)
    print(
        f"API read benchmark - PostgreSQL {version} {server_name(db)}, schema {schema}: {events} "
        f"events ({args.accounts} demo accounts)"
    )
    print(
        f"account {account} ({rows} history rows); wrk, 1 thread, {args.seconds} s a run, "
        f"{args.repeats} repeat(s) interleaved; one server process each, {POOL_SIZE} "
        "connections to PostgreSQL"
    )
    print(
        f"load average (1 min) {load[0]:.2f} at the start, {load[1]:.2f} at the end, on "
        f"{os.cpu_count()} cores"
    )
    for name, why in skipped.items():
        print(f"{name}: left out: {why}")
    print("req/s: median (min-max) of the repeats; p50, p99: medians of the runs' latency, ms\n")

    def cell(name: str, endpoint: str, connections: int) -> str:
        runs = results.get((name, endpoint, connections))
        if not runs:
            return f"{'-':>19}{'-':>8}{'-':>8}"
        rates = [r.rate for r in runs]
        rate = f"{statistics.median(rates):.0f}"
        if len(rates) > 1:
            rate += f" ({min(rates):.0f}-{max(rates):.0f})"
        p50 = statistics.median(r.p50 for r in runs)
        p99 = statistics.median(r.p99 for r in runs)
        return f"{rate:>19}{p50:>8.2f}{p99:>8.2f}"

    def ratio(endpoint: str, connections: int, other: str) -> str:
        a, b = (
            results.get(("ledger", endpoint, connections)),
            results.get((other, endpoint, connections)),
        )
        if not a or not b:
            return "-"
        return f"{statistics.median(r.rate for r in a) / statistics.median(r.rate for r in b):.2f}"

    group = 35
    print(
        f"{'':<20}"
        + "".join(
            f"{t:^{group}}"
            for t in ("ledger (GraphQL)", "starlette (plain JSON)", "postgraphile 4")
        )
        + f"{'ledger req/s over':^26}"
    )
    print(
        f"{'read':<15}{'conns':>5}"
        + f"{'req/s':>19}{'p50':>8}{'p99':>8}" * 3
        + f"{'starlette':>12}{'postgraphile':>14}"
    )
    errors = sum(r.errors for runs in results.values() for r in runs)
    for endpoint in ENDPOINTS:
        for connections in CONCURRENCY:
            print(
                f"{LABELS[endpoint]:<15}{connections:>5}"
                + "".join(cell(name, endpoint, connections) for name in SERVERS)
                + f"{ratio(endpoint, connections, 'starlette'):>12}"
                + f"{ratio(endpoint, connections, 'postgraphile'):>14}"
            )
    if errors:
        print(f"\n{errors} requests failed (socket errors, timeouts or non-2xx answers)")

    print()
    if live is None:
        print(f"subscriptions: not measured: {live_error}")
        return
    print(
        f"subscriptions: {live.clients} clients (graphql-transport-ws) on `ledger serve` with "
        f"its projector; {live.posts} PublishPost at {args.rate:g}/s (achieved "
        f"{live.rate:.1f}/s)"
    )
    print(
        f"{len(live.latencies)} deliveries, {live.missing} missing"
        + (f"; errors: {live.errors[:3]}" if live.errors else "")
    )
    print(f"{'':<36}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for label, values in (
        ("Ledger.execute (commit)", live.commits),
        ("execute returned -> client received", live.latencies),
    ):
        if values:
            print(
                f"{label:<36}{quantile(values, 50) * 1000:>10.2f}"
                f"{quantile(values, 99) * 1000:>10.2f}{max(values) * 1000:>10.2f}"
            )


def benchmark(args: argparse.Namespace, db: Database, schema: str) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("bench.api: wrk is not installed (apt-get install -y wrk)")
    prepare(db, schema, args.accounts)
    account, rows = busiest_account(db, schema)
    with db.connect() as conn:
        token_id, token = create_token(conn, schema, "regulator", None, "bench-api")
    load_at_start = os.getloadavg()[0]
    try:
        with tempfile.TemporaryDirectory(prefix="ledger-bench-api-") as name:
            tmp = Path(name)
            results, skipped = measure(args, db, schema, token, account, tmp)
            live: Deliveries | None = None
            live_error: str | None = None
            try:
                live = subscriptions(args, db, schema, token, tmp)
            except (RuntimeError, OSError, queue.Empty, subprocess.SubprocessError) as e:
                live_error = f"{type(e).__name__}: {e}"
                log(f"subscriptions failed: {live_error}")
    finally:
        with db.connect() as conn:
            revoke_token(conn, schema, token_id)
    load = (load_at_start, os.getloadavg()[0])
    report(args, db, schema, account, rows, load, results, skipped, live, live_error)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.api",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--accounts", type=int, default=2000, help="demo accounts (default 2000)")
    parser.add_argument("--seconds", type=int, default=5, help="seconds per load run (default 5)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per server, read and concurrency (default 3)"
    )
    parser.add_argument(
        "--subscribers", type=int, default=100, help="subscription clients (default 100)"
    )
    parser.add_argument(
        "--posts", type=int, default=200, help="posts published while subscribed (default 200)"
    )
    parser.add_argument("--rate", type=float, default=20, help="posts a second (default 20)")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the data set schema for the next run, which reuses it",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 2 s per load run, 1 repeat, 50 posts"
    )
    # Internal: the processes this benchmark starts.
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--subscribe", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--after", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.serve_baseline is not None:
        serve_baseline(args.serve_baseline)
        return
    if args.subscribe is not None:
        asyncio.run(
            subscribers(args.subscribe, os.environ["BENCH_API_TOKEN"], args.after, args.subscribers)
        )
        return

    if args.quick:
        args.seconds, args.repeats, args.posts = 2, 1, 50
    if min(args.accounts, args.seconds, args.repeats, args.subscribers, args.posts, args.rate) <= 0:
        parser.error(
            "--accounts, --seconds, --repeats, --subscribers, --posts and --rate must be positive"
        )
    with Database() as db:
        try:
            benchmark(args, db, SCHEMA)
        finally:
            if not args.keep:
                db.drop_schema(SCHEMA)


if __name__ == "__main__":
    main()
