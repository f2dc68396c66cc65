"""The `providers` figures statement planned on every call, against its plan kept.

On the demo data set of `--accounts` accounts, projected: the figures statement
(projections.providers.FIGURES_SQL) prepared on one connection and run `--calls` times with
`plan_cache_mode = force_custom_plan` (the API's sessions: planned with its values on every
run), then as many times with `force_generic_plan` (the plan kept, as the compiled read of
`providers` now runs it), interleaved over `--repeats` rounds. Also EXPLAIN's own planning
and execution times. Medians, with the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import UTC, datetime

from bench.common import in_scratch_schema
from ledger import Database, Ledger
from ledger.demo import run_demo
from ledger.vault import Vault
from projections.providers import FIGURES_SQL, figures_params
from projections.registry import resolve
from projections.runner import Projector


def run(args: argparse.Namespace, db: Database, schema: str) -> None:
    ledger = Ledger(db.eventsourcing_env(schema), vault=Vault(os.urandom(32)))
    try:
        run_demo(ledger.submit, ledger.ruleset, args.accounts)
        projector = Projector(ledger, db, schema, resolve())
        projector.setup()
        projector.catch_up()
        projector.close()
        events = ledger.head()
    finally:
        ledger.close()
    ms: dict[str, list[float]] = {"force_custom_plan": [], "force_generic_plan": []}
    planning, execution = [], []
    with db.connect(schema, autocommit=True) as conn:
        conn.execute("SET jit = off")
        for _ in range(args.repeats):
            for mode, times in ms.items():
                conn.execute(f"SET plan_cache_mode = {mode}")
                for _ in range(args.calls):
                    started = time.perf_counter()
                    params = figures_params(datetime.now(UTC), None)
                    conn.execute(FIGURES_SQL, params, prepare=True).fetchall()
                    times.append((time.perf_counter() - started) * 1000)
            explain = "EXPLAIN (ANALYZE, SUMMARY, FORMAT JSON) " + FIGURES_SQL
            row = conn.execute(explain, figures_params(datetime.now(UTC), None)).fetchone()
            assert row is not None
            planning.append(row[0][0]["Planning Time"])
            execution.append(row[0][0]["Execution Time"])
    load = os.getloadavg()
    print(f"providers figures statement, {events} events ({args.accounts} demo accounts);"
          f" load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip
    print(
        f"EXPLAIN: planning {statistics.median(planning):.2f} ms,"
        f" execution {statistics.median(execution):.2f} ms (medians)"
    )
    custom, generic = (statistics.median(ms[m]) for m in ms)
    print(f"per call, {args.repeats} x {args.calls} calls, median ms: planned every call"
          f" {custom:.2f}; plan kept {generic:.2f}; ratio {custom / generic:.2f}")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.providers_plan", description=__doc__)
    parser.add_argument("--accounts", type=int, default=1000, help="demo accounts (1000)")
    parser.add_argument("--calls", type=int, default=200, help="calls a round and mode (200)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (3)")
    parser.add_argument("--quick", action="store_true", help="300 accounts, 100 calls")
    args = parser.parse_args(argv)
    if args.quick:
        args.accounts, args.calls = 300, 100
    in_scratch_schema(lambda db, schema: run(args, db, schema))


if __name__ == "__main__":
    main()
