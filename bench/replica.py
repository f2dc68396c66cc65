"""Read throughput with a hot standby: one API process reading the primary beside one
reading a streaming replica of it (LEDGER_READ_DATABASE_URL), each alone and both together.

Two PostgreSQL clusters of this run's own (tests/cluster.py: the embedded server's
binaries): a primary, and a standby made from it with `pg_basebackup -R`, streaming. The
demo data set (`--accounts`, 300) is loaded into the primary and every projection rebuilt;
the standby replays it. Two `ledger serve --no-projector` processes, the response cache
off (so every request reads the database): `primary` (LEDGER_DATABASE_URL only) and
`replica` (reads on the standby, writes on the primary).

Load: `--clients` (16) concurrent httpx clients per target in a process of their own, for
`--seconds` (4) per run, a varied read mix: `account(id)` of a random account, a page of
`accounts` (1-50), `history` (first 20) and `sanctions` of a random account. A round runs
primary alone, replica alone, then both together (one load process each, at once);
`--rounds` (3). The table gives each target's median requests/s over the rounds, and the
total. Servers, clients and both PostgreSQL clusters share this machine's cores.

    .venv/bin/python -m bench.replica [--accounts 300] [--seconds 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from api.auth import create_token
from bench.api import Server, free_port, prepare, server_env, start, wait_ready
from bench.common import log
from ledger import Database
from tests.cluster import Cluster

SCHEMA = "bench_replica"
QUERIES = {
    "account": "query($id: ID!) { account(id: $id) { id handle status verified postCount } }",
    "accounts": "query($n: Int) { accounts(first: $n) { edges { node { id handle status } } } }",
    "history": "query($id: ID!) { history(accountId: $id, first: 20)"
    " { edges { node { position type at summary } } } }",
    "sanctions": "query($id: ID!) { sanctions(filter: {accountId: $id})"
    " { edges { node { id level reason } } } }",
}


def requests_for(accounts: list[str], seed: int, count: int = 2000) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        kind = rng.choice(list(QUERIES))
        variables: dict[str, Any] = (
            {"n": rng.randint(1, 50)} if kind == "accounts" else {"id": rng.choice(accounts)}
        )
        out.append({"query": QUERIES[kind], "variables": variables})
    return out


async def _load(url: str, token: str, bodies: list[dict[str, Any]], clients: int,
                seconds: float) -> tuple[int, int]:  # fmt: skip
    done = errors = 0
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as client:

        async def one(n: int) -> None:
            nonlocal done, errors
            i = n
            while time.monotonic() < deadline:
                response = await client.post(url, json=bodies[i % len(bodies)])
                i += clients
                if response.status_code == 200 and b'"errors"' not in response.content:
                    done += 1
                else:
                    errors += 1

        await asyncio.gather(*(one(n) for n in range(clients)))
    return done, errors


def _load_process(url: str, token: str, bodies: list[dict[str, Any]], clients: int,
                  seconds: float, out: Any, start_at: float) -> None:  # fmt: skip
    time.sleep(max(0.0, start_at - time.time()))
    started = time.monotonic()
    done, errors = asyncio.run(_load(url, token, bodies, clients, seconds))
    out.put((url, done / (time.monotonic() - started), errors))


def run(targets: list[tuple[Server, list[dict[str, Any]]]], token: str,
        clients: int, seconds: float) -> dict[str, float]:  # fmt: skip
    """Requests/s per target, all targets loaded at once, each from a process of its own."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 1.5  # past the spawned processes' imports
    processes = [
        ctx.Process(
            target=_load_process,
            args=(server.url + "/graphql", token, bodies, clients, seconds, out, start_at),
        )
        for server, bodies in targets
    ]
    for p in processes:
        p.start()
    results = [out.get(timeout=seconds + 60) for _ in processes]
    for p in processes:
        p.join()
    names = {server.url + "/graphql": server.name for server, _ in targets}
    figures = {}
    for url, rate, errors in results:
        if errors:
            raise RuntimeError(f"{names[url]}: {errors} requests failed")
        figures[names[url]] = rate
    return figures


def start_api(name: str, db: Database, tmp: Path, read_url: str | None) -> Server:
    env = server_env(db, SCHEMA, tmp)
    env["LEDGER_RESPONSE_CACHE"] = "0"
    env.pop("LEDGER_READ_DATABASE_URL", None)
    if read_url:
        env["LEDGER_READ_DATABASE_URL"] = read_url
    port = free_port()
    command = [sys.executable, "-m", "api.cli", "serve", "--no-projector", "--workers", "1",
               "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    server = start(name, command, env, tmp, port)
    wait_ready(server, "GET", "/readyz")
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=300)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    with (
        Cluster() as primary,
        Database(primary.url) as db,
        tempfile.TemporaryDirectory(prefix="bench-replica-") as tmp_name,
    ):
        tmp = Path(tmp_name)
        servers: list[Server] = []
        standby = Cluster()
        try:
            prepare(db, SCHEMA, args.accounts)
            log("making the standby (pg_basebackup -R)")
            standby.standby_of(primary)
            with db.connect() as conn:
                token = create_token(conn, SCHEMA, "regulator", None, "bench.replica")[1]
                conn.commit()
                accounts = [
                    str(r[0])
                    for r in conn.execute(f"SELECT account_id FROM {SCHEMA}.accounts").fetchall()
                ]
            servers = [
                start_api("primary", db, tmp, None),
                start_api("replica", db, tmp, standby.url),
            ]
            by_name = {s.name: s for s in servers}
            mixes = {
                "primary": requests_for(accounts, seed=1),
                "replica": requests_for(accounts, seed=2),
            }
            log(f"{len(accounts)} accounts; {args.clients} clients per target,"
                f" {args.seconds:g} s a run, {args.rounds} rounds")  # fmt: skip
            figures: dict[str, list[float]] = {}
            for n in range(args.rounds):
                for label, names in (("primary alone", ["primary"]),
                                     ("replica alone", ["replica"]),
                                     ("both", ["primary", "replica"])):  # fmt: skip
                    rates = run([(by_name[x], mixes[x]) for x in names], token,
                                args.clients, args.seconds)  # fmt: skip
                    for name, rate in rates.items():
                        figures.setdefault(f"{label}: {name}", []).append(rate)
                    figures.setdefault(f"{label}: total", []).append(sum(rates.values()))
                    log(f"round {n + 1} {label}: "
                        + ", ".join(f"{k} {v:.0f}/s" for k, v in rates.items()))  # fmt: skip
            print(f"\nread throughput, requests/s, median of {args.rounds} rounds"
                  f" ({args.clients} clients per target, response cache off)")  # fmt: skip
            for key, values in figures.items():
                low, high = min(values), max(values)
                print(f"  {key:<24} {statistics.median(values):7.0f}  ({low:.0f}-{high:.0f})")
        finally:
            for s in servers:
                s.stop()
            standby.__exit__(None, None, None)


if __name__ == "__main__":
    main()
