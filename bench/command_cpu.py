"""Python CPU per command: `time.process_time` spent by `Ledger.execute` and `Ledger.submit`.

The same workload as bench.append (`PublishPost` on approved accounts, fresh idempotency
keys; each account
with `--history` past warnings, so its state is not trivially small), measured in process
CPU rather than wall time, so a loaded machine shifts the
figures less:

- execute: one `Ledger.execute` per command (one transaction each);
- submit: `Ledger.submit` of `--batch` commands per transaction, CPU per command;
- baseline: raw psycopg appending the same number of rows of the ledger's mean event size,
  one row per transaction, as bench.append's raw table does (the floor of the driver).

Medians of `--repeats` rounds, interleaved. `--profile` prints the top functions of a
cProfile (process CPU) of the execute round by their own time, to see where the CPU goes.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.append import REGULATOR, Publisher, RawTable, mean_state_size
from bench.common import in_scratch_schema, server_name
from ledger import Database, Ledger
from ledger import commands as c
from ledger.vault import Vault


def cpu_per_item(run: Callable[[Sequence[Any]], object], items: Sequence[Any], batch: int) -> float:
    """Process CPU seconds per item, calling `run` on `batch` items at a time."""
    start = time.process_time()
    for i in range(0, len(items), batch):
        run(items[i : i + batch])
    return (time.process_time() - start) / len(items)


def measure(args: argparse.Namespace, db: Database, schema: str) -> None:
    ledger = Ledger(db.eventsourcing_env(schema), vault=Vault(os.urandom(32)))
    try:
        publisher = Publisher(ledger)
        for account in publisher.accounts:  # a history to copy: past warnings
            for _ in range(args.history):
                publisher.run(
                    c.ImposeSanction,
                    REGULATOR,
                    account_id=account,
                    level="warning",
                    rule_ids=("art.9",),
                    reason="history",
                )

        def single(commands: Sequence[Any]) -> object:
            return ledger.execute(commands[0])

        start = ledger.head()
        cpu_per_item(single, publisher.commands(args.batch), 1)  # warm-up
        cpu_per_item(ledger.submit, publisher.commands(args.batch), args.batch)
        payload, _ = mean_state_size(db, ledger, start)
        raw = RawTable(db, schema, round(payload))
        try:
            cpu_per_item(raw.append, raw.rows(args.batch), 1)
            figures: dict[str, list[float]] = {"execute": [], "submit": [], "raw": []}
            for _ in range(args.repeats):
                n = args.commands
                figures["execute"].append(cpu_per_item(single, publisher.commands(n), 1))
                figures["submit"].append(
                    cpu_per_item(ledger.submit, publisher.commands(n), args.batch)
                )
                figures["raw"].append(cpu_per_item(raw.append, raw.rows(n), 1))
            if args.profile:
                profile = cProfile.Profile(time.process_time)
                commands = publisher.commands(args.commands)
                profile.enable()
                cpu_per_item(single, commands, 1)
                profile.disable()
        finally:
            raw.conn.close()
    finally:
        ledger.close()
    load = os.getloadavg()
    print(f"CPU per command, PublishPost - PostgreSQL {server_name(db)}")
    print(
        f"{args.repeats} rounds x {args.commands} commands; batch {args.batch};"
        f" {args.history} past sanctions per account;"
        f" load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n"
    )
    raw_median = statistics.median(figures["raw"])
    print(f"{'path':<34} {'CPU us/command (median)':>24} {'x raw':>7}")
    for key, label in (
        ("execute", "Ledger.execute (1 per tx)"),
        ("submit", f"Ledger.submit ({args.batch} per tx)"),
        ("raw", "raw psycopg (1 row per tx)"),
    ):
        median = statistics.median(figures[key])
        print(f"{label:<34} {median * 1e6:>24.0f} {median / raw_median:>7.1f}")
    if args.profile:
        print("\nTop functions of the execute round, by own time:")
        stats = pstats.Stats(profile)
        stats.sort_stats("tottime").print_stats(args.profile)
        print("By cumulative time, the ledger's and the library's functions:")
        stats.sort_stats("cumulative").print_stats("ledger/|eventsourcing", args.profile)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.command_cpu", description=__doc__)
    parser.add_argument("--commands", type=int, default=1000, help="per round (default 1000)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--batch", type=int, default=100, help="commands per submit (100)")
    parser.add_argument(
        "--history", type=int, default=10, help="warnings on each account beforehand (10)"
    )
    parser.add_argument("--profile", type=int, default=0, help="print the top N functions")
    parser.add_argument("--quick", action="store_true", help="200 commands x 3 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.commands, args.repeats = 200, 3
    if min(args.commands, args.repeats, args.batch) < 1:
        parser.error("--commands, --repeats and --batch must be at least 1")
    in_scratch_schema(lambda db, schema: measure(args, db, schema))


if __name__ == "__main__":
    main()
