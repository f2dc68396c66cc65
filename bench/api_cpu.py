"""Python CPU per compiled read, measured in one process: the API's ASGI app
(`api.app.create_app`, response cache off, a bearer token, and for a provider's token its
confinement) beside `bench.api`'s bare Starlette handler running the same SQL, each called
through ASGI directly (no HTTP server, no load generator: what is measured is the app's
own Python, and psycopg's), `--concurrency` requests in flight. The figure is
`time.process_time` over a round divided by its requests; the median of `--rounds`
rounds, interleaved. `--profile` adds the top functions of a cProfile of one more round of
each (own time per request, µs).

Reads: account(id) and account wide (bench.api's documents and handlers) for a regulator
and for a provider on its own accounts, and providers. The data set is bench.api's
(`bench_api`, 2,000 demo accounts; made on first use, `--keep` keeps it).

    python -m bench.api_cpu [--requests 2000] [--rounds 3] [--profile] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import pstats
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import UUID

from api.auth import create_token, revoke_token
from bench.api import (
    SCHEMA,
    VAULT_KEY,
    Call,
    account_call,
    baseline_app,
    prepare,
    providers_call,
    server_env,
)
from bench.common import log
from ledger import Database, Ledger
from ledger.vault import Vault

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
READS = ("account", "wide", "providers")


async def call(app: App, request: Call) -> tuple[int, bytes]:
    path, _, query = request.path.partition("?")
    headers = [(b"content-type", b"application/json")]
    if request.token:
        headers.append((b"authorization", f"Bearer {request.token}".encode()))
    body = request.body or b""
    if body:
        headers.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": request.method, "scheme": "http", "path": path, "raw_path": path.encode(),
        "query_string": query.encode(), "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000), "state": {},
    }  # fmt: skip
    delivered = False
    status, chunks = 0, []

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # no disconnect: every answer here is whole
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


@contextlib.asynccontextmanager
async def lifespan(app: App) -> AsyncIterator[None]:
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.create_task(app(scope, inbox.get, outbox.put))
    started = await outbox.get()
    assert started["type"] == "lifespan.startup.complete", started
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await task


async def round_cpu(app: App, requests: list[Call], concurrency: int) -> float:
    """Seconds of this process's CPU per request, `concurrency` in flight."""
    queue = list(reversed(requests))

    async def worker() -> None:
        while queue:
            status, body = await call(app, queue.pop())
            if status == 503:  # refused (OVERLOADED, STORAGE_UNAVAILABLE): a loaded machine
                refused.append(body)
            elif status != 200 or b'"errors"' in body:
                raise RuntimeError(f"HTTP {status}: {body[:300]!r}")

    refused: list[bytes] = []
    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if refused:
        log(f"{len(refused)} of {len(requests)} refused with 503: {refused[0][:120]!r}")
    return (time.process_time() - started) / len(requests)


def workloads(db: Database, regulator: str, provider: str, mine: UUID) -> dict[str, Any]:
    """(read, caller) -> (the API's requests, the baseline's requests)."""
    with db.connect(SCHEMA) as conn:
        every = [r[0] for r in conn.execute("SELECT account_id FROM accounts LIMIT 2000")]
        own = [
            r[0]
            for r in conn.execute(
                "SELECT account_id FROM accounts WHERE provider_id = %s LIMIT 2000", (mine,)
            )
        ]
    out: dict[str, Any] = {}
    for read in ("account", "wide"):
        for who, token, ids in (("regulator", regulator, every), ("provider", provider, own)):
            out[read, who] = (
                [account_call("ledger", read, i, token) for i in ids],
                [account_call("starlette", read, i, token) for i in ids],
            )
    out["providers", "regulator"] = (
        [providers_call("ledger", regulator)] * 200,
        [providers_call("starlette", regulator)] * 200,
    )
    return out


def sized(requests: list[Call], n: int) -> list[Call]:
    return (requests * (n // len(requests) + 1))[:n]


async def profiled(app: App, requests: list[Call], concurrency: int, top: int = 25) -> None:
    """The functions with the most own time over a round, per request."""
    profiler = cProfile.Profile(time.process_time)  # CPU, not wall time (a loaded machine)
    profiler.enable()
    await round_cpu(app, requests, concurrency)
    profiler.disable()
    found: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    rows = sorted(found.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    n = len(requests)
    for (path, line, name), (_, calls, own, cumulative, _) in rows:
        print(
            f"    {own * 1e6 / n:7.1f} µs own {cumulative * 1e6 / n:8.1f} µs cum"
            f" {calls / n:6.1f} calls  {os.path.basename(path)}:{line}({name})"
        )


async def measure(args: argparse.Namespace, db: Database) -> None:
    from api.app import create_app

    with db.connect() as conn:
        regulator_id, regulator = create_token(conn, SCHEMA, "regulator", None, "bench-cpu")
        mine = conn.execute(
            f"SELECT provider_id FROM {SCHEMA}.accounts GROUP BY provider_id"
            " ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()[0]  # type: ignore[index]
        provider_id, provider = create_token(conn, SCHEMA, "provider", mine, "bench-cpu")
    ledger = Ledger.open(db, SCHEMA, vault=Vault(VAULT_KEY))
    api: App = create_app(db, ledger, SCHEMA)
    bare: App = baseline_app(db.conninfo, SCHEMA)
    loads = workloads(db, regulator, provider, mine)
    try:
        async with lifespan(api), lifespan(bare):
            for (read, who), (mine_calls, bare_calls) in loads.items():
                if read not in args.reads:
                    continue
                ours, theirs = sized(mine_calls, args.requests), sized(bare_calls, args.requests)
                await round_cpu(api, ours[:200], args.concurrency)  # warm caches and plans
                await round_cpu(bare, theirs[:200], args.concurrency)
                api_cpu, bare_cpu = [], []
                for _ in range(args.rounds):
                    api_cpu.append(await round_cpu(api, ours, args.concurrency))
                    bare_cpu.append(await round_cpu(bare, theirs, args.concurrency))
                a, b = statistics.median(api_cpu), statistics.median(bare_cpu)
                print(
                    f"{read:<10}{who:<11}{a * 1e6:>10.0f}{b * 1e6:>12.0f}{a / b:>8.2f}"
                    f"   (rounds: {', '.join(f'{x * 1e6:.0f}' for x in api_cpu)} |"
                    f" {', '.join(f'{x * 1e6:.0f}' for x in bare_cpu)})"
                )
                if args.profile:
                    for name, app, calls in (("ledger", api, ours), ("bare", bare, theirs)):
                        print(f"  profile, {name}, {read} ({who}), per request:")
                        await profiled(app, calls, args.concurrency)
    finally:
        ledger.close()
        with db.connect() as conn:
            revoke_token(conn, SCHEMA, regulator_id)
            revoke_token(conn, SCHEMA, provider_id)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.api_cpu",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--requests", type=int, default=2000, help="per round (default 2000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds each (default 3)")
    parser.add_argument("--concurrency", type=int, default=16, help="in flight (default 16)")
    parser.add_argument("--reads", default=",".join(READS), help="account,wide,providers")
    parser.add_argument("--profile", action="store_true", help="a cProfile of each, top 12")
    parser.add_argument("--keep", action="store_true", help="keep the data set")
    parser.add_argument("--quick", action="store_true", help="500 requests a round")
    args = parser.parse_args(argv)
    args.reads = args.reads.split(",")
    if args.quick:
        args.requests = 500
    with tempfile.TemporaryDirectory(prefix="ledger-bench-cpu-") as tmp, Database() as db:
        os.environ.update(server_env(db, SCHEMA, Path(tmp)))
        os.environ["LEDGER_RESPONSE_CACHE"] = "0"
        try:
            prepare(db, SCHEMA, 2000)
            load = os.getloadavg()[0]
            print(
                f"Python CPU per request (time.process_time, µs; median of {args.rounds} rounds"
                f" of {args.requests}, {args.concurrency} in flight), in one process; load"
                f" average {load:.2f} on {os.cpu_count()} cores"
            )
            print(f"{'read':<10}{'caller':<11}{'ledger':>10}{'bare':>12}{'ratio':>8}")
            asyncio.run(measure(args, db))
            log(f"load average at the end {os.getloadavg()[0]:.2f}")
        finally:
            if not args.keep:
                db.drop_schema(SCHEMA)


if __name__ == "__main__":
    main()
