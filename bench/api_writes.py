"""`python -m bench.api --writes`: `publishPost` over GraphQL against `ledger serve` with
its default workers (one per core) and its projector and sealer, at each client count
(wrk, keep-alive; each request a new post under a fresh idempotency key, round-robin over
64 approved accounts of one provider, selecting `__typename position`), beside raw
one-row transactions at the same client counts (bench.append's `RawTable`: the ledger's
insert with its table lock and NOTIFY, rows of the ledger's mean event size, one thread
and connection per client). Then the same GraphQL load on a server with
`LEDGER_COMPILE=0` (strawberry runs every mutation). Rounds interleave the client counts;
the table gives medians. Each run starts on a fresh schema. For the compiled runs, the CPU
each kind of process spent per command recorded (API processes, projector, sealer,
deliverer, PostgreSQL's server processes), read from /proc before and after each run."""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from api.auth import create_token
from bench.append import (
    PUBLISH_LUA,
    Publisher,
    RawTable,
    concurrently,
    mean_state_size,
    timed,
)
from bench.common import log
from bench.soak_samples import cpu_seconds
from ledger import Database, Ledger
from ledger.vault import Vault

# What each publishPost selects in its answer.
SELECTION = "__typename ... on CommandSuccess { position }"


@dataclass
class Figures:
    rates: dict[tuple[str, int], list[float]] = field(default_factory=dict)  # (what, clients)
    p99: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)  # requests not answered 2xx
    # (what, clients) -> per process kind, CPU seconds per command of each run
    cpu: dict[tuple[str, int], dict[str, list[float]]] = field(default_factory=dict)

    def add(self, what: str, clients: int, rate: float, p99_ms: float) -> None:
        self.rates.setdefault((what, clients), []).append(rate)
        self.p99.setdefault((what, clients), []).append(p99_ms)

    def rate(self, what: str, clients: int) -> float:
        return statistics.median(self.rates[what, clients])


def graphql_runs(
    args: argparse.Namespace, db: Database, schema: str, figures: Figures, label: str,
    env: dict[str, str], publisher: Publisher, token: str, ledger: Ledger,
) -> None:  # fmt: skip
    from bench.api import WRK_DONE, start_ledger, wrk

    accounts = ", ".join(f'"{a}"' for a in publisher.accounts)
    workers = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="ledger-bench-writes-") as tmp:
        server = start_ledger(db, schema, Path(tmp), projector=True, workers=workers, env=env)
        try:
            for repeat in range(args.repeats):
                for clients in args.connections:
                    script = Path(tmp) / f"publish-{clients}-{repeat}.lua"
                    prefix = f"{label}-{repeat}-{clients}-{uuid.uuid4().hex[:6]}"
                    lua = PUBLISH_LUA.format(token=token, accounts=accounts, sha="a" * 64,
                                             prefix=prefix, selection=SELECTION)  # fmt: skip
                    script.write_text(lua + WRK_DONE)
                    head = ledger.head()
                    before = cpu_by_kind()
                    run = wrk(server.url + "/graphql", script, clients, args.seconds)
                    spent = cpu_by_kind()
                    recorded = ledger.head() - head
                    by_kind = figures.cpu.setdefault((label, clients), {})
                    for kind, seconds in spent.items():
                        used = (seconds - before.get(kind, 0.0)) / max(1, recorded)
                        by_kind.setdefault(kind, []).append(used)
                    if recorded < run.requests - run.errors:
                        raise RuntimeError(f"{label} c={clients}: {recorded} recorded of"
                                           f" {run.requests - run.errors} answered")  # fmt: skip
                    # Answered and recorded: a refusal (OVERLOADED, 503) is not a write.
                    rate = run.rate * (run.requests - run.errors) / max(1, run.requests)
                    figures.add(label, clients, rate, run.p99)
                    figures.errors[label] = figures.errors.get(label, 0) + run.errors
                    log(f"repeat {repeat + 1}/{args.repeats} publishPost {label:<10} "
                        f"c={clients:<3} {rate:7.0f} cmd/s  p99 {run.p99:7.1f} ms"
                        f"  {run.errors} not 2xx")  # fmt: skip
        finally:
            server.stop()


# Where a command's CPU goes: each process on this machine by what its command line says it
# is (Linux's /proc; wrk has ended when it is read, so it is not counted).
KINDS = (
    ("projector", "--only projector"),
    ("sealer", "--only sealer"),
    ("deliver", "api.cli deliver"),
    ("api", "api.cli serve"),
    ("api", "spawn_main"),
    ("postgres", "postgres"),
)


def cpu_by_kind() -> dict[str, float]:
    """CPU seconds (user + system) so far of the processes of each kind."""
    pids: dict[str, list[int]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        kind = next((k for k, marker in KINDS if marker in command), None)
        if kind is not None:
            pids.setdefault(kind, []).append(int(pid))
    return {kind: cpu_seconds(found) for kind, found in pids.items()}


def raw_runs(args: argparse.Namespace, raws: list[RawTable], figures: Figures) -> None:
    for _ in range(args.repeats):
        for clients in args.connections:
            per = max(20, args.raw_rows // clients)
            rows = [raws[i].rows(per) for i in range(clients)]
            seconds, latencies = concurrently(
                clients, lambda i, rows=rows: timed(raws[i].append, rows[i], 1)[1]
            )
            p99 = sorted(latencies)[int(len(latencies) * 0.99) - 1] * 1000
            figures.add("raw", clients, per * clients / seconds, p99)


def writes(args: argparse.Namespace, db: Database) -> None:
    figures = Figures()
    load_at_start = os.getloadavg()[0]
    for label, env in (("compiled", {}), ("strawberry", {"LEDGER_COMPILE": "0"})):
        schema = f"bench_w{uuid.uuid4().hex[:10]}"
        db.create_schema(schema)
        from bench.api import VAULT_KEY

        ledger = Ledger(db.eventsourcing_env(schema), vault=Vault(VAULT_KEY))
        try:
            publisher = Publisher(ledger, accounts=64)
            with db.connect() as conn:
                provider = publisher.ops.provider_id
                token = create_token(conn, schema, "provider", provider, "bench-writes")[1]
            graphql_runs(args, db, schema, figures, label, env, publisher, token, ledger)
            if label == "compiled":
                start = ledger.head()
                for command in publisher.commands(50):  # events to measure the size of
                    ledger.execute(command)
                payload, _ = mean_state_size(db, ledger, start)
                raws = [RawTable(db, schema, round(payload), create=i == 0)
                        for i in range(max(args.connections))]  # fmt: skip
                try:
                    raw_runs(args, raws, figures)
                finally:
                    for raw in raws:
                        raw.conn.close()
        finally:
            ledger.close()
            db.drop_schema(schema)
    report(args, figures, (load_at_start, os.getloadavg()[0]))


def report(args: argparse.Namespace, figures: Figures, load: tuple[float, float]) -> None:
    workers = os.cpu_count() or 1
    print(f"\nwrites: publishPost over GraphQL, `ledger serve` with {workers} workers and its"
          f" projector and sealer, {args.seconds} s a run, median of {args.repeats};"
          f" load average {load[0]:.2f} at the start, {load[1]:.2f} at the end")  # fmt: skip
    print(f"{'clients':<9}{'compiled':>10}{'p99 ms':>9}{'strawberry':>12}{'p99 ms':>9}"
          f"{'raw 1-row':>11}{'p99 ms':>9}{'x raw':>7}{'x strawberry':>14}")  # fmt: skip
    for clients in args.connections:
        line = f"{clients:<9}"
        for what, width in (("compiled", 10), ("strawberry", 12), ("raw", 11)):
            line += f"{figures.rate(what, clients):>{width}.0f}"
            line += f"{statistics.median(figures.p99[what, clients]):>9.1f}"
        ours = figures.rate("compiled", clients)
        line += f"{ours / figures.rate('raw', clients):>7.2f}"
        line += f"{ours / figures.rate('strawberry', clients):>14.2f}"
        print(line)
    for what, count in figures.errors.items():
        if count:
            print(f"{what}: {count} requests not answered 2xx (OVERLOADED, or cut at a run's end)")
    print("\nCPU per compiled command, us (median of the runs; api: the API processes,"
          " postgres: every server process, wrk not counted)")  # fmt: skip
    kinds = list(dict.fromkeys(k for k, _ in KINDS))
    print(f"{'clients':<9}" + "".join(f"{k:>11}" for k in kinds) + f"{'total':>11}")
    for clients in args.connections:
        found = figures.cpu.get(("compiled", clients), {})
        used = {k: statistics.median(found[k]) * 1e6 if found.get(k) else 0.0 for k in kinds}
        print(f"{clients:<9}" + "".join(f"{used[k]:>11.0f}" for k in kinds)
              + f"{sum(used.values()):>11.0f}")  # fmt: skip
    met = [c for c in args.connections if c >= 16 and figures.rate("compiled", c) >= 1000]
    goal = [c for c in args.connections if c >= 16]
    print(
        f"issue 25's goal (>= 1,000 commands/s at 16 and 64 clients): met at "
        f"{', '.join(f'c={c}' for c in met) or 'none'} of {', '.join(f'c={c}' for c in goal)}"
    )
