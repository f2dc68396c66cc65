"""Read throughput and latency of the GraphQL API under varied traffic, with its response
cache off and on, against a plain Starlette app and PostGraphile 4 serving the same rows
from the same tables, measured in the same run; and the delivery latency of live
subscriptions.

The data set is the demo (`ledger demo`, `--accounts` 2000) loaded through `Ledger.submit`
with the demo's simulated clock into the schema `bench_api`, then every projection rebuilt
into the same schema. `--keep` leaves the schema in place and the next run reuses it
(catching the projections up to the head); by default it is dropped at the end. The
subscription measurement appends a few hundred events, so a kept data set grows by that
much per run.

Four servers, each one process on loopback with one pool of 10 PostgreSQL connections
(`--ledger-workers N` runs the ledger's with N API processes, as `ledger serve` does by
default with one per core):

- ledger, cache off / cache on: `python -m api.cli serve --no-projector` (uvicorn,
  strawberry GraphQL, the bearer token looked up per request, the uvicorn access log on,
  as `ledger serve` runs), once with LEDGER_RESPONSE_CACHE=0 and once with =1 (as shipped:
  an answer is kept for the rest of the ledger clock's second, see api/cache.py);
- starlette: a plain Starlette app in uvicorn (this module, `--serve-baseline`), with the
  API's own async psycopg pool (`api.state.make_pool`) and access log, that runs the SQL
  the API runs for each read (the same SELECT, WHERE, ORDER BY and LIMIT) and returns the
  same fields as JSON in the same shape: no GraphQL, no authentication;
- postgraphile: PostGraphile 4 (`bench/postgraphile`, installed with npm on first use)
  over the same schema, default mutations off, its connection read-only, query log off,
  JSON columns as JSON (`--dynamic-json`). It selects the columns it is asked for; for an
  account's status, which the API computes in SQL, it is asked for the three expiry
  columns the status is computed from; for the providers' figures, which the API computes
  in one SQL statement, it calls a function (`bench_provider_figures`, created in the
  data set's schema by this benchmark) that runs that statement.

Six reads, each request drawing its arguments at random (wrk's Lua, a fixed seed, so every
server gets the same sequence) from a list made before the load:

- account(id): id handle status verified postCount, of any of the data set's accounts;
- account wide: 16 fields (id providerId handle kind category legacy registeredAt verified
  verifiedAt agreementVersion reviewOutcome filedAt newsScopes marked status postCount)
  with activeSanctions and sanctionsByLevel, of any account;
- accounts(100): a page of 100 accounts (the fields of account(id), cursors, pageInfo),
  unfiltered, of one provider, of one kind or of both, any page: every page of every
  filter, reached by following each server's own cursors from the first page;
- history(100): the first 100 history rows (position, type, at, summary) of any account;
- sanctions(20): a page of 20 sanctions (10 fields), unfiltered, of one provider, of one
  level or of both, any page, as for accounts;
- providers: every provider with its compliance figures (one request, nothing to vary).

Each server's answers are checked before the load (no errors, the same rows as the
others): every page, and an even sample of the accounts.

Load: `wrk` (Debian's package: `apt-get install wrk`), one thread, keep-alive connections,
for `--seconds` (5; `--quick`: 1) per run at 1, 16 and 64 connections (`--connections`;
`--quick`: 16 and 64), each run `--repeats` times (3; `--quick`: 1), after a warm-up of
1 s per server and read (none in `--quick`), interleaved over servers so that drift falls
on all of them alike. The table gives the median (min-max) requests/s and the median of
the runs' p50 and p99 latency; the ledger's rows give the ratio of its median req/s to
PostGraphile's and to Starlette's, and with the cache on, the share of requests the cache
answered (from the server's /metrics). The load generator, the servers and PostgreSQL
share this machine's cores. A full run is 216 load runs of 5 s (about 20 minutes);
`--reads` and `--connections` narrow it, `--quick` takes about a minute.

Subscriptions: a second ledger server, this one with its projector (`ledger serve`), and
`--subscribers` (100) WebSocket clients in a separate process (graphql-transport-ws, a
regulator token at connection_init) subscribed to `events(types: ["Post.Published"])`
from the current head. This process then registers, verifies, signs and approves a fresh
account and publishes `--posts` (200; `--quick`: 50) posts at `--rate` (20) a second with
`Ledger.execute`. Latency: from `execute` returning here to each client receiving the
item, both read from the system-wide monotonic clock; its p50/p99 over every delivery.
The clients share one event loop, so the last of them to read a burst of 100 messages
also waits for the other clients' handling of theirs. `--no-subscriptions` leaves it out.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import queue
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from uuid import UUID

import psutil
import uvicorn
from psycopg import sql
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.auth import create_token, revoke_token
from api.graphql.queries import ACCOUNT_SELECT
from api.state import make_pool
from bench import api_writes, common
from bench.common import Progress, fixed_key, load_demo, log, quantile, server_name, server_version
from ledger import Database, Ledger
from ledger.vault import Vault
from projections.providers import FIGURES_SQL, figures_params, shape_figures

ROOT = Path(__file__).resolve().parent.parent
POSTGRAPHILE_DIR = Path(__file__).resolve().parent / "postgraphile"
SCHEMA = "bench_api"
VAULT_KEY = fixed_key("bench.api")
POOL_SIZE = 10  # the API's: LEDGER_POOL_SIZE (5) * 2; PostGraphile's default is 10 too
CONCURRENCY = (1, 16, 64)
PAGE = 100
SANCTIONS_PAGE = 20
SAMPLE = 20  # accounts whose answers are compared across servers before the load
SEED = 20140807  # wrk's random draws: the same sequence for every server
READS = ("account", "wide", "accounts", "history", "sanctions", "providers")
LABELS = {
    "account": "account(id)",
    "wide": "account wide",
    "accounts": "accounts(100)",
    "history": "history(100)",
    "sanctions": "sanctions(20)",
    "providers": "providers",
}
SERVERS = ("ledger", "ledger-cache", "starlette", "postgraphile")
SERVER_LABELS = {
    "ledger": "ledger, cache off",
    "ledger-cache": "ledger, cache on",
    "starlette": "starlette",
    "postgraphile": "postgraphile 4",
}

ACCOUNT_FIELDS = "id handle status verified postCount"
WIDE_FIELDS = (
    "id providerId handle kind category legacy registeredAt verified verifiedAt"
    " agreementVersion reviewOutcome filedAt newsScopes marked status postCount"
    " activeSanctions { sanctionId level expiresAt } sanctionsByLevel { level count }"
)
SANCTION_FIELDS = (
    "id accountId level ruleIds reason issuerRole imposedAt expiresAt liftedAt appealState"
)
PROVIDER_FIELDS = (
    "id code name accounts accountsByKind { key count } accountsByStatus { key count }"
    " shareVerified sharePublicReviewed sharePublicFiled sanctionsByLevel { key count }"
    " sanctionsByIssuerRole { key count } openReports resolutionSecondsP50"
    " resolutionSecondsP95"
)
PAGE_INFO = "pageInfo { hasNextPage endCursor }"
LEDGER_QUERIES = {
    "account": f"query($id: ID!) {{ account(id: $id) {{ {ACCOUNT_FIELDS} }} }}",
    "wide": f"query($id: ID!) {{ account(id: $id) {{ {WIDE_FIELDS} }} }}",
    "accounts": "query($filter: AccountFilter, $after: String) {"
    f" accounts(first: {PAGE}, filter: $filter, after: $after) {{"
    f" edges {{ cursor node {{ {ACCOUNT_FIELDS} }} }} {PAGE_INFO} }} }}",
    "history": f"query($id: ID!) {{ history(accountId: $id, first: {PAGE})"
    " { edges { node { position type at summary } } } }",
    "sanctions": "query($filter: SanctionFilter, $after: String) {"
    f" sanctions(first: {SANCTIONS_PAGE}, filter: $filter, after: $after) {{"
    f" edges {{ cursor node {{ {SANCTION_FIELDS} }} }} {PAGE_INFO} }} }}",
    "providers": f"{{ providers {{ {PROVIDER_FIELDS} }} }}",
}
PG_ACCOUNT_FIELDS = "accountId handle closedUntil suspendedUntil restrictedUntil verified postCount"
PG_WIDE_FIELDS = (
    "accountId providerId handle kind category legacy registeredAt verified verifiedAt"
    " agreementVersion reviewOutcome filedAt newsScopes marked closedUntil suspendedUntil"
    " restrictedUntil postCount activeSanctions sanctionsByLevel"
)
PG_SANCTION_FIELDS = (
    "sanctionId accountId level ruleIds reason issuerRole imposedAt expiresAt liftedAt appealState"
)
PG_PROVIDER_FIELDS = (
    "providerId code name accounts accountsByKind accountsByStatus shareVerified"
    " sharePublicReviewed sharePublicFiled sanctionsByLevel sanctionsByIssuerRole openReports"
    " resolutionSecondsP50 resolutionSecondsP95"
)
POSTGRAPHILE_QUERIES = {
    "account": "query($id: UUID!) { accountByAccountId(accountId: $id) {"
    f" {PG_ACCOUNT_FIELDS} }} }}",
    "wide": f"query($id: UUID!) {{ accountByAccountId(accountId: $id) {{ {PG_WIDE_FIELDS} }} }}",
    "accounts": "query($condition: AccountCondition, $after: Cursor) {"
    f" allAccounts(condition: $condition, first: {PAGE}, after: $after, orderBy: POSITION_ASC)"
    f" {{ edges {{ cursor node {{ {PG_ACCOUNT_FIELDS} }} }} {PAGE_INFO} }} }}",
    "history": f"query($id: UUID!) {{ allHistories(condition: {{accountId: $id}}, first: {PAGE},"
    " orderBy: POSITION_ASC) { edges { node { position type at summary } } } }",
    "sanctions": "query($condition: SanctionCondition, $after: Cursor) {"
    f" allSanctions(condition: $condition, first: {SANCTIONS_PAGE}, after: $after,"
    f" orderBy: POSITION_ASC) {{ edges {{ cursor node {{ {PG_SANCTION_FIELDS} }} }}"
    f" {PAGE_INFO} }} }}",
    "providers": f"{{ benchProviderFigures {{ nodes {{ {PG_PROVIDER_FIELDS} }} }} }}",
}
# The API's figures statement, as a function PostGraphile exposes (benchProviderFigures),
# with the shares the API computes in Python computed in SQL.
FIGURES_FUNCTION = """CREATE FUNCTION {schema}.bench_provider_figures() RETURNS TABLE (
  provider_id uuid, code text, name text, accounts bigint, accounts_by_kind jsonb,
  accounts_by_status jsonb, share_verified float8, share_public_reviewed float8,
  share_public_filed float8, sanctions_by_level jsonb, sanctions_by_issuer_role jsonb,
  open_reports bigint, resolution_seconds_p50 float8, resolution_seconds_p95 float8)
LANGUAGE sql STABLE AS $figures$
SELECT f.provider_id, f.code, f.name, f.accounts, f.by_kind, f.by_status,
  round(f.verified::numeric / nullif(f.accounts, 0), 4)::float8,
  round(f.public_reviewed::numeric / nullif(f.public, 0), 4)::float8,
  round(f.public_filed::numeric / nullif(f.public, 0), 4)::float8,
  f.by_level, f.by_issuer_role, f.open_reports, f.p50, f.p95
FROM ({figures}) f
ORDER BY f.code
$figures$"""
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


def start_ledger(
    db: Database,
    schema: str,
    tmp: Path,
    projector: bool,
    cache: bool | None = None,
    workers: int = 1,
    env: dict[str, str] | None = None,
    name: str | None = None,
) -> Server:
    """`ledger serve`; `cache` sets LEDGER_RESPONSE_CACHE (None: as in this environment),
    `env` more of its environment; `name` its name in the tables (by default from the
    others)."""
    port = free_port()
    command = [sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--workers", str(workers)]  # fmt: skip
    if not projector:
        command.append("--no-projector")
    if name is None:
        name = "ledger-projector" if projector else "ledger-cache" if cache else "ledger"
        name += f"-{workers}" if workers > 1 else ""
    environment = server_env(db, schema, tmp) | (env or {})
    if cache is not None:
        environment["LEDGER_RESPONSE_CACHE"] = "1" if cache else "0"
    server = start(name, command, environment, tmp, port)
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
    # Every transaction of its connections read-only, on top of no default mutations; the
    # data set's schema first in the search_path, for bench_provider_figures.
    separator = "&" if "?" in db.conninfo else "?"
    options = f"-c default_transaction_read_only=on -c search_path={schema}"
    conninfo = f"{db.conninfo}{separator}options={urllib.parse.quote(options, safe='')}"
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
        "--dynamic-json",
    ]
    server = start("postgraphile", command, dict(os.environ), tmp, port)
    wait_ready(server, "POST", "/graphql", json.dumps({"query": "{ __typename }"}).encode())
    return server


# ----- the baseline app ----------------------------------------------------------------


def baseline_app(conninfo: str, schema: str) -> Starlette:
    """Plain Starlette: the API's SQL for each read, answered as JSON shaped like the API's
    `data`, from the API's kind of pool. A page takes `first`, `after` (the last row's
    position, its cursor) and its filters as query parameters."""
    pool = make_pool(Database(conninfo), schema, POOL_SIZE)

    def iso(value: datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    def account(r: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": str(r["account_id"]),
            "handle": r["handle"],
            "status": str(r["status"]).upper(),
            "verified": r["verified"],
            "postCount": r["post_count"],
        }

    def wide(r: dict[str, Any]) -> dict[str, Any]:
        now = r["now"]
        return {
            "id": str(r["account_id"]),
            "providerId": str(r["provider_id"]),
            "handle": r["handle"],
            "kind": r["kind"],
            "category": r["category"],
            "legacy": r["legacy"],
            "registeredAt": iso(r["registered_at"]),
            "verified": r["verified"],
            "verifiedAt": iso(r["verified_at"]),
            "agreementVersion": r["agreement_version"],
            "reviewOutcome": r["review_outcome"],
            "filedAt": iso(r["filed_at"]),
            "newsScopes": r["news_scopes"],
            "marked": r["marked"],
            "status": str(r["status"]).upper(),
            "postCount": r["post_count"],
            "activeSanctions": [
                {"sanctionId": s["sanction_id"], "level": s["level"], "expiresAt": s["expires_at"]}
                for s in r["active_sanctions"]
                if not s["expires_at"] or datetime.fromisoformat(s["expires_at"]) > now
            ],
            "sanctionsByLevel": [
                {"level": k, "count": v} for k, v in sorted(r["sanctions_by_level"].items())
            ],
        }

    def entry(r: dict[str, Any]) -> dict[str, Any]:
        return {
            "position": str(r["position"]),
            "type": r["type"],
            "at": r["at"].isoformat(),
            "summary": r["summary"],
        }

    def sanction(r: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": str(r["sanction_id"]),
            "accountId": str(r["account_id"]),
            "level": r["level"],
            "ruleIds": r["rule_ids"],
            "reason": r["reason"],
            "issuerRole": r["issuer_role"],
            "imposedAt": iso(r["imposed_at"]),
            "expiresAt": iso(r["expires_at"]),
            "liftedAt": iso(r["lifted_at"]),
            "appealState": r["appeal_state"],
        }

    def counts(mapping: dict[str, int]) -> list[dict[str, Any]]:
        return [{"key": k, "count": v} for k, v in sorted(mapping.items())]

    def provider(f: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": str(f["provider_id"]),
            "code": f["code"],
            "name": f["name"],
            "accounts": f["accounts"],
            "accountsByKind": counts(f["accounts_by_kind"]),
            "accountsByStatus": counts(f["accounts_by_status"]),
            "shareVerified": f["share_verified"],
            "sharePublicReviewed": f["share_public_reviewed"],
            "sharePublicFiled": f["share_public_filed"],
            "sanctionsByLevel": counts(f["sanctions_by_level"]),
            "sanctionsByIssuerRole": counts(f["sanctions_by_issuer_role"]),
            "openReports": f["open_reports"],
            "resolutionSecondsP50": f["resolution_seconds_p50"],
            "resolutionSecondsP95": f["resolution_seconds_p95"],
        }

    async def select(query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        async with pool.connection() as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall()  # type: ignore[return-value]  # a dict_row pool

    def first(request: Request, default: int = PAGE) -> int:
        value = int(request.query_params.get("first", default))
        if not 1 <= value <= 500:
            raise ValueError("first must be from 1 to 500")
        return value

    def bad(error: Exception) -> Response:
        return JSONResponse({"errors": [{"message": str(error)}]}, status_code=400)

    async def keyset(
        request: Request,
        name: str,
        select_sql: str,
        where: dict[str, tuple[str, Any]],
        shape: Any,
        default: int,
    ) -> Response:
        """A page as the API's keyset_page reads it: the filters given, after a position,
        by position, one row more than asked to know whether another page follows."""
        try:
            size = first(request, default)
            params: dict[str, Any] = {
                "after": int(request.query_params.get("after", 0)),
                "now": datetime.now(UTC),
            }
            clauses = []
            for parameter, (clause, parse) in where.items():
                if parameter in request.query_params:
                    params[parameter] = parse(request.query_params[parameter])
                    clauses.append(clause)
        except ValueError as e:
            return bad(e)
        clauses.append("position > %(after)s")
        found = await select(
            f"{select_sql} WHERE {' AND '.join(clauses)} ORDER BY position LIMIT {size + 1}",
            params,
        )
        edges = [{"cursor": str(r["position"]), "node": shape(r)} for r in found[:size]]
        page_info = {
            "hasNextPage": len(found) > size,
            "endCursor": edges[-1]["cursor"] if edges else None,
        }
        return JSONResponse({"data": {name: {"edges": edges, "pageInfo": page_info}}})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def by_id(request: Request, name: str, shape: Any) -> Response:
        try:
            params = {"id": UUID(request.path_params["id"]), "now": datetime.now(UTC)}
        except ValueError as e:
            return bad(e)
        found = await select(f"{ACCOUNT_SELECT} WHERE account_id = %(id)s", params)
        return JSONResponse({"data": {name: shape(found[0]) if found else None}})

    async def one(request: Request) -> Response:
        return await by_id(request, "account", account)

    async def one_wide(request: Request) -> Response:
        return await by_id(request, "account", wide)

    async def accounts(request: Request) -> Response:
        where = {
            "provider": ("provider_id = %(provider)s", UUID),
            "kind": ("kind = %(kind)s", str),
        }
        return await keyset(request, "accounts", ACCOUNT_SELECT, where, account, PAGE)

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

    async def sanctions(request: Request) -> Response:
        where = {
            "provider": ("provider_id = %(provider)s", UUID),
            "level": ("level = %(level)s", str),
        }
        return await keyset(
            request, "sanctions", "SELECT * FROM sanctions", where, sanction, SANCTIONS_PAGE
        )

    async def providers(request: Request) -> Response:
        found = await select(FIGURES_SQL, figures_params(datetime.now(UTC), None))
        return JSONResponse({"data": {"providers": [provider(f) for f in shape_figures(found)]}})

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
            Route("/wide/{id}", one_wide),
            Route("/accounts", accounts),
            Route("/history/{id}", history),
            Route("/sanctions", sanctions),
            Route("/providers", providers),
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


@dataclass(frozen=True)
class Filter:
    """A list's filter: a provider, and an account kind or a sanction level, or neither."""

    provider: UUID | None = None
    kind: str | None = None
    level: str | None = None

    def fields(self) -> dict[str, str]:
        """The filter as the API's filter input and PostGraphile's condition take it."""
        out = {}
        if self.provider is not None:
            out["providerId"] = str(self.provider)
        if self.kind is not None:
            out["kind"] = self.kind
        if self.level is not None:
            out["level"] = self.level
        return out


@dataclass(frozen=True)
class DataSet:
    """What a request may draw: every account, and the filters of the two lists."""

    accounts: list[UUID]
    filters: dict[str, list[Filter]]  # "accounts", "sanctions"


def data_set(db: Database, schema: str) -> DataSet:
    with db.connect() as conn:
        accounts = [
            r[0]
            for r in conn.execute(
                sql.SQL("SELECT account_id FROM {} ORDER BY position").format(
                    sql.Identifier(schema, "accounts")
                )
            )
        ]
        providers = [
            r[0]
            for r in conn.execute(
                sql.SQL("SELECT provider_id FROM {} ORDER BY code").format(
                    sql.Identifier(schema, "providers")
                )
            )
        ]
        kinds, levels = (
            [
                r[0]
                for r in conn.execute(
                    sql.SQL("SELECT DISTINCT {} FROM {} ORDER BY 1").format(
                        sql.Identifier(column), sql.Identifier(schema, table)
                    )
                )
            ]
            for column, table in (("kind", "accounts"), ("level", "sanctions"))
        )
    assert accounts and providers, "the data set has no accounts or providers"
    by_provider = [Filter(provider=p) for p in providers]
    return DataSet(
        accounts,
        {
            "accounts": [
                Filter(),
                *by_provider,
                *(Filter(kind=kind) for kind in kinds),
                *(Filter(p, kind=kind) for p in providers for kind in kinds),
            ],
            "sanctions": [
                Filter(),
                *by_provider,
                *(Filter(level=level) for level in levels),
                *(Filter(p, level=level) for p in providers for level in levels),
            ],
        },
    )


def graphql(query: str, variables: dict[str, Any], token: str | None) -> Call:
    return Call(
        "POST", "/graphql", json.dumps({"query": query, "variables": variables}).encode(), token
    )


def account_call(server: str, read: str, account: UUID, token: str) -> Call:
    """account(id), account wide or history(100) of one account."""
    if server == "starlette":
        paths = {"account": "/account/", "wide": "/wide/", "history": "/history/"}
        return Call(
            "GET", f"{paths[read]}{account}" + (f"?first={PAGE}" if read == "history" else "")
        )
    if server == "postgraphile":
        return graphql(POSTGRAPHILE_QUERIES[read], {"id": str(account)}, None)
    return graphql(LEDGER_QUERIES[read], {"id": str(account)}, token)


def page_call(server: str, read: str, where: Filter, after: str | None, token: str) -> Call:
    """One page of accounts(100) or sanctions(20), after a cursor of that server's."""
    if server == "starlette":
        query = {
            "provider": where.provider,
            "kind": where.kind,
            "level": where.level,
            "after": after,
        }
        params = {k: str(v) for k, v in query.items() if v is not None}
        return Call("GET", f"/{read}" + (f"?{urllib.parse.urlencode(params)}" if params else ""))
    if server == "postgraphile":
        variables = {"condition": where.fields(), "after": after}
        return graphql(POSTGRAPHILE_QUERIES[read], variables, None)
    return graphql(LEDGER_QUERIES[read], {"filter": where.fields(), "after": after}, token)


def providers_call(server: str, token: str) -> Call:
    if server == "starlette":
        return Call("GET", "/providers")
    if server == "postgraphile":
        return graphql(POSTGRAPHILE_QUERIES["providers"], {}, None)
    return graphql(LEDGER_QUERIES["providers"], {}, token)


def answer(server: Server, request: Call) -> Any:
    """The answer's one root value; raise if the answer is an error or null."""
    status, raw = http(request.method, server.url + request.path, request.body, request.token)
    try:
        found = json.loads(raw)
    except ValueError:
        found = {}
    if status != 200 or found.get("errors") or not found.get("data"):
        what = request.body[:200] if request.body else request.path
        raise RuntimeError(f"{server.name} {what!r}: HTTP {status}: {raw[:400]!r}")
    value = next(iter(found["data"].values()))
    if value is None:
        raise RuntimeError(f"{server.name} {request.path}: null (no such account?)")
    return value


def rows_of(value: Any) -> list[str]:
    """What an answer holds, to compare across servers: the handle of the account, or the
    first field (id or position) of each row of a page or list."""
    if isinstance(value, list):
        items = value
    elif "edges" in value:
        items = [e["node"] for e in value["edges"]]
    elif "nodes" in value:
        items = value["nodes"]
    else:
        return [value["handle"]]
    return [str(next(iter(item.values()))) for item in items]


def walk(server: Server, read: str, filters: list[Filter], token: str) -> list[tuple[Call, Any]]:
    """Every page of every filter, following the server's own cursors: (request, rows)."""
    out = []
    for where in filters:
        after = None
        while True:
            request = page_call(server.name, read, where, after, token)
            value = answer(server, request)
            out.append((request, rows_of(value)))
            if not value["pageInfo"]["hasNextPage"]:
                break
            after = value["pageInfo"]["endCursor"]
            if len(out) > 10_000:
                raise RuntimeError(f"{server.name} {read}: more than 10000 pages")
    return out


def traffic_for(server: Server, read: str, data: DataSet, token: str) -> tuple[list[Call], Any]:
    """The requests a run draws from, and what the checked ones answered."""
    if read in ("accounts", "sanctions"):
        walked = walk(server, read, data.filters[read], token)
        return [request for request, _ in walked], [rows for _, rows in walked]
    if read == "providers":
        request = providers_call(server.name, token)
        return [request], sorted(rows_of(answer(server, request)))
    requests = [account_call(server.name, read, a, token) for a in data.accounts]
    sample = requests[:: max(1, len(requests) // SAMPLE)]
    return requests, [rows_of(answer(server, request)) for request in sample]


@dataclass(frozen=True)
class Run:
    rate: float  # requests/s
    p50: float  # ms
    p99: float  # ms
    requests: int
    errors: int  # socket errors, timeouts, non-2xx answers
    cpu_ms: float = 0.0  # the server's CPU (its processes, user + system) per request, ms


# wrk's report, one line the benchmarks parse (no braces: it joins .format templates).
WRK_DONE = """done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def lua_string(text: str) -> str:
    level = "=" * 2
    while f"]{level}]" in text:
        level += "="
    return f"[{level}[{text}]{level}]"


def wrk_script(requests: list[Call], tmp: Path, seed: int = SEED) -> Path:
    """A wrk script that sends, for each request, one of `requests` drawn at random (the
    same sequence for a given seed), all with one token."""
    tokens = {r.token for r in requests}
    assert requests and len(tokens) == 1, "one token per script"
    (token,) = tokens
    lines = ['wrk.headers["Content-Type"] = "application/json"']
    if token:
        lines.append(f'wrk.headers["Authorization"] = "Bearer {token}"')
    lines.append("local calls = {")
    for r in requests:
        body = "nil" if r.body is None else lua_string(r.body.decode())
        lines.append(f"  {{{lua_string(r.method)}, {lua_string(r.path)}, {body}}},")
    lines += [
        "}",
        "local formatted = {}",
        "function init(args)",
        f"  math.randomseed({seed})",
        "  for i, c in ipairs(calls) do formatted[i] = wrk.format(c[1], c[2], nil, c[3]) end",
        "end",
        "function request()",
        "  return formatted[math.random(#formatted)]",
        "end",
    ]
    path = tmp / f"wrk-{uuid.uuid4().hex[:8]}.lua"
    path.write_text("\n".join(lines) + "\n" + WRK_DONE)
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


def cpu_seconds(server: Server) -> float:
    """User and system CPU of the server's process and its children so far."""
    root = psutil.Process(server.process.pid)
    total = 0.0
    for process in (root, *root.children(recursive=True)):
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def measured_run(server: Server, script: tuple[str, Path], connections: int, seconds: int) -> Run:
    """A load run, with the server's CPU per request."""
    before = cpu_seconds(server)
    run = wrk(*script, connections, seconds)
    spent = cpu_seconds(server) - before
    return replace(run, cpu_ms=spent * 1000 / run.requests if run.requests else 0.0)


CACHE_LOOKUPS = re.compile(
    r'^ledger_response_cache_lookups_total\{result="(hit|miss)"\} ([0-9.e+]+)$', re.MULTILINE
)


def cache_lookups(server: Server) -> tuple[float, float]:
    """The server's response cache hits and misses so far (its /metrics, from loopback)."""
    token = os.environ.get("LEDGER_METRICS_TOKEN", "").strip() or None
    status, raw = http("GET", server.url + "/metrics", token=token)
    if status != 200:
        raise RuntimeError(f"{server.name} /metrics: HTTP {status}: {raw[:200]!r}")
    found = dict(CACHE_LOOKUPS.findall(raw.decode()))
    return float(found.get("hit", 0)), float(found.get("miss", 0))


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


@dataclass
class Measured:
    runs: dict[tuple[str, str, int], list[Run]]  # (server, read, connections)
    hits: dict[tuple[str, int], list[float]]  # (read, connections): share the cache answered
    sizes: dict[str, int]  # read: requests drawn from
    skipped: dict[str, str]  # server: why it was left out


def create_figures_function(db: Database, schema: str) -> None:
    """benchProviderFigures for PostGraphile: the API's figures statement, as of now(). It
    names the tables as the API does, unqualified: PostGraphile's connection sets the
    search_path, and the function, without a SET clause of its own, can be inlined."""
    figures = (
        FIGURES_SQL.replace("%(now)s", "now()")
        .replace("%(all)s", "true")
        .replace("%(ids)s", "'{}'::uuid[]")
    )
    with db.connect() as conn:
        name = sql.Identifier(schema).as_string(conn)
        conn.execute(f"SET search_path TO {name}")
        conn.execute(f"DROP FUNCTION IF EXISTS {name}.bench_provider_figures()")
        conn.execute(FIGURES_FUNCTION.format(schema=name, figures=figures))


def measure(
    args: argparse.Namespace, db: Database, schema: str, token: str, data: DataSet, tmp: Path
) -> Measured:
    """The load runs, the cache's share, and why a server was left out."""
    skipped: dict[str, str] = {}
    servers: list[Server] = []
    with running(servers):
        log("starting the ledger API (cache off, cache on) and the Starlette baseline")
        for name, cache in (("ledger", False), ("ledger-cache", True)):
            server = start_ledger(
                db, schema, tmp, projector=False, cache=cache, workers=args.ledger_workers,
                name=name,
            )  # fmt: skip
            servers.append(server)
        servers.append(start_baseline(db, schema, tmp))
        log("starting PostGraphile")
        try:
            create_figures_function(db, schema)
            servers.append(start_postgraphile(db, schema, tmp))
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            skipped["postgraphile"] = str(e).splitlines()[0]
            log(f"postgraphile: left out: {e}")

        log(f"checking every server's answers: every page, {SAMPLE} accounts of each read")
        scripts: dict[tuple[str, str], tuple[str, Path]] = {}
        sizes: dict[str, int] = {}
        expected: dict[str, Any] = {}
        for server in list(servers):
            try:
                for read in args.reads:
                    requests, seen = traffic_for(server, read, data, token)
                    if read in expected and seen != expected[read]:
                        raise RuntimeError(
                            f"{server.name} {read}: other rows than the "
                            f"ledger's: {str(seen)[:200]} ..."
                        )
                    expected.setdefault(read, seen)
                    sizes.setdefault(read, len(requests))
                    if len(requests) != sizes[read]:
                        raise RuntimeError(
                            f"{server.name} {read}: {len(requests)} requests, not {sizes[read]}"
                        )
                    scripts[server.name, read] = (server.url + "/", wrk_script(requests, tmp))
            except (RuntimeError, OSError, ValueError, KeyError, TypeError) as e:
                if server.name != "postgraphile":
                    raise
                skipped["postgraphile"] = str(e).splitlines()[0]
                log(f"postgraphile: left out: {e}")
                server.stop()
                servers.remove(server)

        names = [s.name for s in servers]
        by_name = {s.name: s for s in servers}
        if args.warmup:
            log("warm-up: 1 s per server and read at 16 connections")
            for name in names:
                for read in args.reads:
                    wrk(*scripts[name, read], 16, 1)
        runs: dict[tuple[str, str, int], list[Run]] = {}
        hits: dict[tuple[str, int], list[float]] = {}
        for repeat in range(args.repeats):
            for read in args.reads:
                for connections in args.connections:
                    for name in names:
                        cached = name == "ledger-cache"
                        before = cache_lookups(by_name[name]) if cached else (0.0, 0.0)
                        run = measured_run(
                            by_name[name], scripts[name, read], connections, args.seconds
                        )
                        runs.setdefault((name, read, connections), []).append(run)
                        share = ""
                        if cached:
                            after = cache_lookups(by_name[name])
                            hit, miss = after[0] - before[0], after[1] - before[1]
                            if hit + miss:
                                hits.setdefault((read, connections), []).append(hit / (hit + miss))
                                share = f"  cache hits {hit / (hit + miss):4.0%}"
                        log(
                            f"repeat {repeat + 1}/{args.repeats} {LABELS[read]:<14}"
                            f" c={connections:<3} {name:<13} {run.rate:8.0f} req/s"
                            f"  p50 {run.p50:7.2f} ms  p99 {run.p99:7.2f} ms"
                            f"  cpu {run.cpu_ms:.3f} ms/req"
                            + share
                            + (f"  {run.errors} errors" if run.errors else "")
                        )
    return Measured(runs, hits, sizes, skipped)


def median_rate(runs: list[Run] | None) -> float | None:
    return statistics.median(r.rate for r in runs) if runs else None


def report(
    args: argparse.Namespace,
    db: Database,
    schema: str,
    data: DataSet,
    load: tuple[float, float],
    measured: Measured | None,
    live: Deliveries | None,
    live_error: str | None,
) -> None:
    events, version = data_set_size(db, schema)
    print(
        f"API read benchmark - PostgreSQL {version} {server_name(db)}, schema {schema}: {events} "
        f"events ({args.accounts} demo accounts)"
    )
    print(
        f"wrk, 1 thread, {args.seconds} s a run, {args.repeats} repeat(s) interleaved; one "
        f"server process each, {POOL_SIZE} connections to PostgreSQL"
    )
    print(
        f"load average (1 min) {load[0]:.2f} at the start, {load[1]:.2f} at the end, on "
        f"{os.cpu_count()} cores"
    )
    if measured is not None:
        report_reads(args, data, measured)
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


def report_reads(args: argparse.Namespace, data: DataSet, measured: Measured) -> None:
    sizes = measured.sizes
    print(
        "varied traffic, each request drawn at random from: "
        + "; ".join(f"{LABELS[read]} {sizes[read]}" for read in args.reads if read in sizes)
        + f" requests ({len(data.accounts)} accounts; pages of "
        f"{len(data.filters['accounts'])} account filters and "
        f"{len(data.filters['sanctions'])} sanction filters)"
    )
    for name, why in measured.skipped.items():
        print(f"{name}: left out: {why}")
    print(
        "req/s: median (min-max) of the repeats; p50, p99: medians of the runs' latency, ms;"
        " x pg, x starlette: the ledger's median req/s over theirs; cpu: the median of the"
        " runs' server CPU (its processes, user + system) per request, ms\n"
    )
    runs = measured.runs
    print(
        f"{'read':<15}{'conns':>5}  {'server':<19}{'req/s':>19}{'p50':>8}{'p99':>9}{'cpu':>7}"
        f"{'x pg':>7}{'x starlette':>12}{'cache hits':>12}"
    )
    for read in args.reads:
        for connections in args.connections:
            for k, name in enumerate(SERVERS):
                found = runs.get((name, read, connections))
                label = f"{LABELS[read]:<15}{connections:>5}" if k == 0 else " " * 20
                if not found:
                    print(f"{label}  {SERVER_LABELS[name]:<19}{'-':>19}")
                    continue
                rates = [r.rate for r in found]
                rate = f"{statistics.median(rates):.0f}"
                if len(rates) > 1:
                    rate += f" ({min(rates):.0f}-{max(rates):.0f})"
                line = (
                    f"{label}  {SERVER_LABELS[name]:<19}{rate:>19}"
                    f"{statistics.median(r.p50 for r in found):>8.2f}"
                    f"{statistics.median(r.p99 for r in found):>9.2f}"
                    f"{statistics.median(r.cpu_ms for r in found):>7.3f}"
                )
                if name.startswith("ledger"):
                    mine = statistics.median(rates)
                    for other, width in (("postgraphile", 7), ("starlette", 12)):
                        theirs = median_rate(runs.get((other, read, connections)))
                        line += f"{mine / theirs:>{width}.2f}" if theirs else f"{'-':>{width}}"
                    shares = measured.hits.get((read, connections))
                    if shares and name == "ledger-cache":
                        line += f"{statistics.median(shares):>12.0%}"
                print(line)
    errors = sum(r.errors for found in runs.values() for r in found)
    if errors:
        print(f"\n{errors} requests failed (socket errors, timeouts or non-2xx answers)")
    goal = [
        (read, c)
        for read in args.reads
        for c in args.connections
        if c >= 16 and ("ledger", read, c) in runs
    ]
    met = [
        (read, c)
        for read, c in goal
        if (pg := median_rate(runs.get(("postgraphile", read, c))))
        and (st := median_rate(runs.get(("starlette", read, c))))
        and (mine := median_rate(runs[("ledger", read, c)]))
        and mine >= 1.5 * pg
        and mine > st
    ]
    if goal:
        missed = [f"{LABELS[read]} c={c}" for read, c in goal if (read, c) not in met]
        print(
            f"\nissue 12's goal (cache off: at least 1.5x PostGraphile 4 and above Starlette, "
            f"at 16 and 64 connections): met {len(met)} of {len(goal)}"
            + (f"; not: {', '.join(missed)}" if missed else "")
        )


def benchmark(args: argparse.Namespace, db: Database, schema: str) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("bench.api: wrk is not installed (apt-get install -y wrk)")
    prepare(db, schema, args.accounts)
    with db.connect() as conn:
        token_id, token = create_token(conn, schema, "regulator", None, "bench-api")
    load_at_start = os.getloadavg()[0]
    data = data_set(db, schema)
    measured: Measured | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="ledger-bench-api-") as name:
            tmp = Path(name)
            if args.reads:
                measured = measure(args, db, schema, token, data, tmp)
            live: Deliveries | None = None
            live_error: str | None = "left out (--no-subscriptions)"
            if args.subscriptions:
                try:
                    live = subscriptions(args, db, schema, token, tmp)
                except (RuntimeError, OSError, queue.Empty, subprocess.SubprocessError) as e:
                    live_error = f"{type(e).__name__}: {e}"
                    log(f"subscriptions failed: {live_error}")
    finally:
        with db.connect() as conn:
            revoke_token(conn, schema, token_id)
    load = (load_at_start, os.getloadavg()[0])
    report(args, db, schema, data, load, measured, live, live_error)


def choices(text: str, allowed: tuple[str, ...]) -> list[str]:
    picked = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [x for x in picked if x not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {list(allowed)}")
    return picked


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.api",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--accounts", type=int, default=2000, help="demo accounts (default 2000)")
    parser.add_argument("--seconds", type=int, default=5, help="seconds per load run (default 5)")
    parser.add_argument(
        "--repeats", type=int, help="runs per server, read and concurrency (default 3; --quick: 1)"
    )
    parser.add_argument(
        "--reads",
        type=lambda text: choices(text, READS),
        default=list(READS),
        help=f"the reads to measure, comma-separated (default {','.join(READS)})",
    )
    parser.add_argument(
        "--connections",
        type=lambda text: [int(x) for x in text.split(",")],
        help="wrk connections, comma-separated (default 1,16,64; --quick: 16,64)",
    )
    parser.add_argument(
        "--subscribers", type=int, default=100, help="subscription clients (default 100)"
    )
    parser.add_argument(
        "--posts", type=int, default=200, help="posts published while subscribed (default 200)"
    )
    parser.add_argument("--rate", type=float, default=20, help="posts a second (default 20)")
    parser.add_argument(
        "--no-subscriptions",
        dest="subscriptions",
        action="store_false",
        help="measure the reads only",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the data set schema for the next run, which reuses it",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 1 s per load run at 16 and 64 connections, 1 repeat, no warm-up,"
        " 50 posts",
    )
    parser.add_argument(
        "--writes",
        action="store_true",
        help="also publishPost over GraphQL at each --connections (default 1,16,64) against"
        " raw one-row transactions, and with LEDGER_COMPILE=0 (bench.api_writes)",
    )
    parser.add_argument(
        "--ledger-workers",
        type=int,
        default=1,
        help="API processes of the ledger servers for the reads (default 1, as the other"
        " servers; `ledger serve` defaults to the number of cores)",
    )
    parser.add_argument(
        "--raw-rows", type=int, default=2000, help="rows per raw write run (default 2000)"
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

    args.warmup = not args.quick
    connections_given = args.connections is not None
    if args.quick:
        args.seconds, args.posts = 1, 50
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.connections is None:
        args.connections = [16, 64] if args.quick else list(CONCURRENCY)
    if min(
        args.accounts, args.seconds, args.repeats, args.subscribers, args.posts, args.rate,
        *args.connections,
    ) <= 0:  # fmt: skip
        parser.error(
            "--accounts, --seconds, --repeats, --connections, --subscribers, --posts and"
            " --rate must be positive"
        )
    with Database() as db:
        try:
            if args.reads or args.subscriptions:
                benchmark(args, db, SCHEMA)
        finally:
            if not args.keep:
                db.drop_schema(SCHEMA)
        if args.writes:
            if not connections_given:
                args.connections = list(CONCURRENCY)
            api_writes.writes(args, db)


if __name__ == "__main__":
    main()
