"""`ledger import --bulk` against raw psycopg 100-row batches of the same events, in one run.

Measured, `--repeats` times, interleaved so that drift on the server falls on all alike:

- import: `run_import` of `--commands` JSON lines (`PublishPost` on approved accounts,
  fresh idempotency keys), by the command path, `--batch` (100) lines a transaction;
- import --bulk: the same lines, `run_import(bulk=True)`, `--bulk-batch` (5000) a
  transaction: validated against state read once, written with COPY;
- raw: bench.append's raw table (the events table's shape), rows of the mean size of the
  ledger's stored events, appended 100 a transaction as the library does (lock, notify,
  one multi-row insert).

The import figures include reading and parsing the JSON lines; raw has no lines to parse.
Medians of the rates, the load average beside them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from bench.append import Publisher, RawTable, mean_state_size
from bench.common import in_scratch_schema, server_name
from ledger import Database, Ledger
from ledger.importer import Status, run_import, to_line
from ledger.vault import Vault


def rate_of_import(ledger: Ledger, publisher: Publisher, n: int, batch: int, bulk: bool) -> float:
    lines = [to_line(cmd) for cmd in publisher.commands(n)]
    started = time.perf_counter()
    report = run_import(ledger, lines, batch=batch, bulk=bulk)
    seconds = time.perf_counter() - started
    assert report.status is Status.RECORDED and report.recorded == n, report
    return n / seconds


def rate_of_raw(raw: RawTable, n: int, batch: int) -> float:
    rows = raw.rows(n)
    started = time.perf_counter()
    for i in range(0, n, batch):
        raw.append(rows[i : i + batch])
    return n / (time.perf_counter() - started)


def measure(args: argparse.Namespace, db: Database, schema: str) -> None:
    ledger = Ledger(db.eventsourcing_env(schema), vault=Vault(os.urandom(32)))
    try:
        publisher = Publisher(ledger, accounts=args.accounts)
        start = ledger.head()
        rate_of_import(ledger, publisher, 500, args.batch, bulk=False)  # warm-up
        rate_of_import(ledger, publisher, 500, args.bulk_batch, bulk=True)
        payload, _ = mean_state_size(db, ledger, start)
        raw = RawTable(db, schema, round(payload))
        try:
            rate_of_raw(raw, 500, 100)
            rates: dict[str, list[float]] = {"import": [], "bulk": [], "raw": []}
            n = args.commands
            for _ in range(args.repeats):
                rates["import"].append(rate_of_import(ledger, publisher, n, args.batch, False))
                rates["bulk"].append(rate_of_import(ledger, publisher, n, args.bulk_batch, True))
                rates["raw"].append(rate_of_raw(raw, n, 100))
        finally:
            raw.conn.close()
    finally:
        ledger.close()
    load = os.getloadavg()
    print(f"Bulk import - PostgreSQL {server_name(db)}")
    print(
        f"{args.repeats} rounds x {n} PublishPost lines on {args.accounts} accounts; raw payload"
        f" {round(payload)} B; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n"
    )
    raw_median = statistics.median(rates["raw"])
    print(f"{'path':<44}{'rows/s median (min-max)':>26}{'x raw':>7}")
    for key, label in (
        ("import", f"ledger import (--batch {args.batch})"),
        ("bulk", f"ledger import --bulk (--batch {args.bulk_batch})"),
        ("raw", "raw psycopg, 100-row batches"),
    ):
        r = rates[key]
        cell = f"{statistics.median(r):.0f} ({min(r):.0f}-{max(r):.0f})"
        print(f"{label:<44}{cell:>26}{statistics.median(r) / raw_median:>7.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bulk_import", description=__doc__)
    parser.add_argument("--commands", type=int, default=20_000, help="lines a round (20000)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--accounts", type=int, default=200, help="accounts posted on (200)")
    parser.add_argument("--batch", type=int, default=100, help="import's batch (100)")
    parser.add_argument("--bulk-batch", type=int, default=5000, help="--bulk's batch (5000)")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 4000 lines, --bulk 1000")
    args = parser.parse_args(argv)
    if args.quick:
        args.commands, args.bulk_batch = 4000, 1000
    if min(args.commands, args.repeats, args.accounts, args.batch, args.bulk_batch) < 1:
        parser.error("every count must be at least 1")
    in_scratch_schema(lambda db, schema: measure(args, db, schema))


if __name__ == "__main__":
    main()
