"""Signed webhooks: latency, throughput and the pending-work query's plan, in one run.

1. Latency. `ledger serve --workers 1` as shipped (API, projector, sealer and one
   `ledger deliver` as child processes), 50 providers with one endpoint each on a loopback
   receiver (uvicorn, answering 200 at once), and a regulator's `sanctionEvents`
   subscription over SSE as the baseline. This process imposes sanctions straight through
   the ledger at `--rate` a second (200) for `--seconds` (20; `--quick`: 8), spread over the
   50 providers' accounts in varied order. Figures: commit (`execute` returned) → the
   receiver's 2xx, and commit → the subscription's arrival, p50 and p99 (CLOCK_MONOTONIC,
   system-wide: every process is on this machine).
2. Throughput. The server stopped, `--backlog` sanctions (20,000; `--quick`: 5,000) are
   written, then one `ledger deliver` alone sends them to the instant receiver: deliveries
   a second. Baseline in the same run: the receiver's own ceiling, unsigned posts from one
   httpx client with the worker's concurrency.
3. Plan. `--attempt-rows` (10,000,000; `--quick`: 1,000,000) rows in the attempt log and as
   many acknowledged deliveries, generated with `generate_series`, beside 1,000 pending;
   VACUUM ANALYZE; EXPLAIN (ANALYZE, BUFFERS) of the worker's pending-work query.

    python -m bench.webhooks [--quick] [--rate 200] [--seconds 20] [--backlog 20000]
                             [--attempt-rows N] [--parts latency,throughput,plan]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx

from api.auth import create_token
from bench.common import paced, quantile
from ledger import Actor, Database, Ledger, Role
from ledger import commands as c
from ledger.vault import Vault
from projections import webhooks as state

SCHEMA = "bench_webhooks"
KEY = b"bench-webhooks-key-0123456789abc"
REGULATOR = Actor("bench-regulator", Role.REGULATOR)
ENDPOINTS = 50
ACCOUNTS_PER_PROVIDER = 4
POSITION = re.compile(rb'"position":"(\d+)"')
ROOT = Path(__file__).resolve().parent.parent


# ----- the receiver: a child process answering 200 at once -------------------------------


def receiver_main(port: int, out: str) -> None:
    import uvicorn

    seen: list[tuple[float, str, str]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    Path(out).write_text("\n".join(f"{t} {p} {e}" for t, p, e in seen))
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        found = POSITION.search(body)
        seen.append((time.perf_counter(), found.group(1).decode() if found else "-",
                     scope["path"]))  # fmt: skip
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")


@contextmanager
def receiver(tmp: Path) -> Iterator[tuple[str, list[tuple[float, int, str]]]]:
    """A receiver process; yields its base URL and, once stopped, what it received."""
    port, out = free_port(), tmp / f"received-{time.monotonic_ns()}.txt"
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.webhooks", "--receiver", str(port), str(out)], cwd=ROOT
    )
    url = f"http://127.0.0.1:{port}"
    got: list[tuple[float, int, str]] = []
    try:
        wait_up(url)
        yield url, got
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        for line in out.read_text().splitlines() if out.exists() else []:
            t, p, path = line.split(" ", 2)
            got.append((float(t), int(p) if p.isdigit() else -1, path))


def wait_up(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.post(url + "/up", content=b"{}", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----- the ledger's side ------------------------------------------------------------------


def environment(db: Database, data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "LEDGER_DATABASE_URL": db.conninfo,
        "LEDGER_SCHEMA": SCHEMA,
        "LEDGER_CIPHER_KEY": base64.b64encode(KEY).decode(),
        "LEDGER_DATA_DIR": str(data_dir),
        "LEDGER_WEBHOOK_ALLOW_LOOPBACK": "1",
        "PYTHONPATH": str(ROOT),
    }


def providers(ledger: Ledger, url: str) -> list[UUID]:
    """50 providers with their accounts, each with one endpoint at url/<n>: the accounts."""
    accounts = []
    for n in range(ENDPOINTS):
        code = f"bench-{n}"
        provider = UUID(ledger.execute(c.RegisterProvider(
            actor=REGULATOR, idempotency_key=f"p{n}", code=code, name=code, licence_ref="L"
        )).value["provider_id"])  # fmt: skip
        ops = Actor(f"{code}-ops", Role.PROVIDER, provider)
        for a in range(ACCOUNTS_PER_PROVIDER):
            accounts.append(UUID(ledger.execute(c.RegisterAccount(
                actor=ops, idempotency_key=f"a{a}", provider_id=provider, handle=f"h{a}",
                kind="personal",
            )).value["account_id"]))  # fmt: skip
        ledger.execute(c.RegisterWebhookEndpoint(
            actor=ops, idempotency_key="hook", provider_id=provider, url=f"{url}/{n}"
        ))  # fmt: skip
    return accounts


def sanctions(accounts: list[UUID], n: int, tag: str, streams: int) -> list[list[c.Command]]:
    """`n` warnings over the accounts in a shuffled order, dealt into `streams` streams."""
    import random

    rng = random.Random(21)
    order = [accounts[rng.randrange(len(accounts))] for _ in range(n)]
    commands: list[c.Command] = [
        c.ImposeSanction(actor=REGULATOR, idempotency_key=f"{tag}{i}", account_id=a,
                         level="warning", rule_ids=("art.9",), reason="bench")
        for i, a in enumerate(order)
    ]  # fmt: skip
    return [commands[k::streams] for k in range(streams)]


def serve(env: dict[str, str], tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    out = (tmp / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--workers", "1"],
        env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("ledger serve did not become ready:\n" + (tmp / "serve.log").read_text())


def subscribe(base: str, token: str, arrivals: dict[int, float], ready: threading.Event) -> None:
    query = {"query": "subscription($a: Position) { sanctionEvents(after: $a) { position } }",
             "variables": {"a": "0"}}  # fmt: skip
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    try:
        with httpx.stream("POST", base + "/graphql", json=query, headers=headers,
                          timeout=None) as response:  # fmt: skip
            ready.set()
            for line in response.iter_lines():
                if line.startswith("data: "):
                    item = json.loads(line[6:]).get("data", {}).get("sanctionEvents")
                    if item:
                        arrivals[int(item["position"])] = time.perf_counter()
    except httpx.HTTPError:
        pass  # the server stopped


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def pending(db: Database) -> int:
    with db.connect(SCHEMA) as conn:
        row = conn.execute("SELECT count(*) FROM webhook_deliveries WHERE acked_at IS NULL")
        return int(row.fetchone()[0])  # type: ignore[index]


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


# ----- the three parts ----------------------------------------------------------------------


def latency(args: argparse.Namespace, db: Database, ledger: Ledger, tmp: Path) -> None:
    env = environment(db, tmp)
    with receiver(tmp) as (url, got):
        accounts = providers(ledger, url)
        server, base = serve(env, tmp)
        try:
            with db.connect() as conn:
                _, token = create_token(conn, SCHEMA, "regulator", None, "bench")
            arrivals: dict[int, float] = {}
            ready = threading.Event()
            threading.Thread(target=subscribe, args=(base, token, arrivals, ready),
                             daemon=True).start()  # fmt: skip
            ready.wait(30)
            n = int(args.rate * args.seconds)
            written, rate, _ = paced(ledger, sanctions(accounts, n, "l", 4), args.rate)
            wait_until(lambda: len(arrivals) >= n, 60, "the subscription")
            wait_until(lambda: pending(db) == 0, 60, "the deliveries")
        finally:
            stop(server)
    committed = {w.position: w.committed for w in written}
    hooks = [t - committed[p] for t, p, _ in got if p in committed]
    subs = [arrivals[p] - committed[p] for p in committed if p in arrivals]
    paths = {path for _, _, path in got}
    print(f"\n1. commit -> receipt at {rate:.0f} sanctions/s for {args.seconds} s,"
          f" {len(paths) - 1} endpoints, one `ledger deliver`:")  # fmt: skip
    print(f"   {'':28}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'count':>8}")
    for name, values in (("webhook (2xx at receiver)", hooks), ("sanctionEvents over SSE", subs)):
        print(f"   {name:28}{quantile(values, 50) * 1000:9.1f}{quantile(values, 99) * 1000:9.1f}"
              f"{max(values) * 1000:9.1f}{len(values):8d}")  # fmt: skip


def throughput(args: argparse.Namespace, db: Database, ledger: Ledger, tmp: Path) -> None:
    env = environment(db, tmp)
    with db.connect(SCHEMA) as conn:
        accounts = [r[0] for r in conn.execute("SELECT account_id FROM accounts").fetchall()]
        endpoints = conn.execute(
            "SELECT endpoint_id, provider_id FROM webhook_endpoints ORDER BY url"
        ).fetchall()
    with receiver(tmp) as (url, got):
        for n, (endpoint, provider) in enumerate(endpoints):
            ledger.execute(c.UpdateWebhookEndpoint(
                actor=REGULATOR, idempotency_key=f"u{n}", provider_id=provider,
                endpoint_id=endpoint, url=f"{url}/{n}",
            ))  # fmt: skip
        (stream,) = sanctions(accounts, args.backlog, "t", 1)
        first = ledger.head()
        for start in range(0, len(stream), 200):
            ledger.submit(stream[start : start + 200])
        projector = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "project", "--only", "projector"], env=env,
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            head = ledger.head()
            with db.connect(SCHEMA, autocommit=True) as conn:
                wait_until(lambda: (conn.execute(
                    "SELECT min(position) FROM projection_positions WHERE name = ANY(%s)",
                    [["accounts", "posts", "providers"]],
                ).fetchone() or [0])[0] >= head, 300, "the projector")  # fmt: skip
            t0 = time.perf_counter()
            deliver = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "deliver"], env=env, cwd=ROOT,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            wait_until(lambda: acked_since(db, first) >= args.backlog, 900, "the backlog")
            elapsed = time.perf_counter() - t0
            stop(deliver)
        finally:
            stop(projector)
    print(f"\n2. deliveries/s of one worker against a receiver answering at once"
          f" ({args.backlog} sanctions over {len(endpoints)} endpoints, from the worker's"
          " start: enqueueing included):")  # fmt: skip
    print(f"   ledger deliver (signed v1 + v1a, state in PostgreSQL): "
          f"{args.backlog / elapsed:8.0f}/s ({len(got)} received)", flush=True)  # fmt: skip
    ceiling = asyncio.run(raw_ceiling(tmp, n=min(args.backlog, 10000)))
    print(f"   baseline, unsigned posts from one aiohttp client, no database: {ceiling:8.0f}/s")


def acked_since(db: Database, position: int) -> int:
    with db.connect(SCHEMA) as conn:
        row = conn.execute(
            "SELECT count(*) FROM webhook_deliveries WHERE acked_at IS NOT NULL AND position > %s",
            [position],
        ).fetchone()
        return int(row[0]) if row else 0


async def raw_ceiling(tmp: Path, n: int) -> float:
    """Unsigned posts through the worker's HTTP client (aiohttp) at its concurrency, with
    no database: what the receiver and the client library allow on this machine."""
    import aiohttp

    with receiver(tmp) as (url, _):
        connector = aiohttp.TCPConnector(limit=256)
        async with aiohttp.ClientSession(connector=connector) as session:
            gate = asyncio.Semaphore(256)

            async def one(i: int) -> None:
                async with gate, session.post(f"{url}/{i % ENDPOINTS}",
                                              data=b'{"position":"1"}') as response:  # fmt: skip
                    assert response.status == 200

            t0 = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(n)))
            return n / (time.perf_counter() - t0)


def plan(args: argparse.Namespace, db: Database) -> None:
    rows = args.attempt_rows
    fake = "00000000-0000-0000-0000-0000000000aa"
    with db.connect(SCHEMA, autocommit=True) as conn:
        t0 = time.perf_counter()
        conn.execute(
            "INSERT INTO webhook_attempts (endpoint_id, position, msg_id, attempt, at, status,"
            " latency_ms, key_ids) SELECT %s, g, 'msg_' || g, 1, now() - interval '1 day',"
            " 200, 1.0, '{}' FROM generate_series(1, %s) g",
            [fake, rows],
        )
        conn.execute(
            "INSERT INTO webhook_deliveries (endpoint_id, position, originator_id, sequence,"
            " msg_id, attempts, acked_at) SELECT %s, g, md5(mod(g, 1000)::text)::uuid, g,"
            " 'msg_' || g, 1, now() FROM generate_series(1, %s) g",
            [fake, rows],
        )
        conn.execute(
            "INSERT INTO webhook_deliveries (endpoint_id, position, originator_id, sequence,"
            " msg_id) SELECT %s, %s + g, md5(mod(g, 100)::text)::uuid, %s + g, 'msg_p' || g"
            " FROM generate_series(1, 1000) g",
            [fake, rows, rows],
        )
        conn.execute("VACUUM ANALYZE webhook_attempts")
        conn.execute("VACUUM ANALYZE webhook_deliveries")
        made = time.perf_counter() - t0
        query = "EXPLAIN (ANALYZE, BUFFERS) " + state.PENDING_HEADS
        lines = [r[0] for r in conn.execute(query, {"endpoints": [UUID(fake)]}).fetchall()]
        count = conn.execute("SELECT count(*) FROM webhook_attempts").fetchone()[0]  # type: ignore[index]
    print(f"\n3. the pending-work query with {count:,} attempt rows and {rows:,} acknowledged"
          f" deliveries (+1,000 pending; made in {made:.0f} s):")  # fmt: skip
    for line in lines:
        print("   " + line)
    if not any("Index Only Scan" in line for line in lines):
        print("   NOT index-only")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.webhooks", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--backlog", type=int, default=None)
    parser.add_argument("--attempt-rows", type=int, default=None)
    parser.add_argument(
        "--parts", default="latency,throughput,plan", help="which parts, comma-separated"
    )
    parser.add_argument("--receiver", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.receiver:
        receiver_main(int(args.receiver[0]), args.receiver[1])
        return
    args.seconds = args.seconds or (8 if args.quick else 20)
    args.backlog = args.backlog or (5000 if args.quick else 20000)
    args.attempt_rows = args.attempt_rows or (1_000_000 if args.quick else 10_000_000)
    load = os.getloadavg()
    with Database() as db, tempfile.TemporaryDirectory() as tmp:
        db.drop_schema(SCHEMA)
        db.create_schema(SCHEMA)
        ledger = Ledger(db.eventsourcing_env(SCHEMA), vault=Vault(KEY))
        os.environ["LEDGER_WEBHOOK_ALLOW_LOOPBACK"] = "1"
        try:
            print(f"bench.webhooks: load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
                  f" on {os.cpu_count()} cores (a shared machine: figures are from a"
                  " loaded one)")  # fmt: skip
            parts = set(args.parts.split(","))
            if "latency" in parts or "throughput" in parts:
                latency(args, db, ledger, Path(tmp))  # throughput uses its endpoints
                sys.stdout.flush()
            if "throughput" in parts:
                throughput(args, db, ledger, Path(tmp))
            if "plan" in parts:
                with db.connect(SCHEMA, autocommit=True) as conn:
                    conn.execute(state.DDL)
                plan(args, db)
            after = os.getloadavg()
            print(f"\nload average at the end: {after[0]:.2f} {after[1]:.2f} {after[2]:.2f}")
        finally:
            ledger.close()
            db.drop_schema(SCHEMA)


if __name__ == "__main__":
    main()
