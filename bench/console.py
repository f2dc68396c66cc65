"""The console's overview (issue 24): time to a usable page and bytes transferred, from the
browser's own performance timing, in a real headless Chromium (tests/graphiql/browser.py).

Data set: the demo of `--accounts` accounts (20,000 by default, `--quick` 2,000), loaded
and rebuilt once into `bench_console_<n>` (kept for the next run with `--keep`), served by
`ledger serve --no-projector` (every projection is at the head already; no sealer competes
for the CPU).

Per run (`--runs`, medians printed), with a regulator's token set in sessionStorage before
the page's scripts run:
- cold: a fresh browser profile with an empty cache opens /console/#/overview; warm: the
  same browser opens it again (its assets revalidated: 304s; the data asked again);
- first contentful paint (`first-contentful-paint`), data shown (the console's own mark
  `console:data-shown`, set on the frame after the figures and the four charts are in the
  page), and bytes transferred (`transferSize` of the navigation and every resource,
  /graphql included);
- varied traffic: each run also switches one chart's period (4, 26 or 52 weeks, in turn)
  and times the redraw.

Baselines measured in the same run: the console's sign-in page (the same static shell, no
data: FCP and bytes), and the overview's two GraphQL reads over HTTP from Python (the
data's own cost, median of as many calls).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from api.auth import create_token
from bench.api import prepare, start_ledger
from bench.common import log
from ledger import Database
from tests.graphiql.browser import Browser, chromium_path

TIMING = """(() => {
  const paint = performance.getEntriesByName('first-contentful-paint')[0];
  const shown = performance.getEntriesByName('console:data-shown')[0];
  const nav = performance.getEntriesByType('navigation')[0];
  const bytes = [nav, ...performance.getEntriesByType('resource')]
    .reduce((n, e) => n + (e ? e.transferSize : 0), 0);
  const graphql = performance.getEntriesByType('resource').filter(e => e.name.includes('/graphql'))
    .reduce((n, e) => n + e.transferSize, 0);
  return {fcp: paint ? paint.startTime : null, shown: shown ? shown.startTime : null,
          bytes, graphql, requests: performance.getEntriesByType('resource').length + 1};
})()"""
OVERVIEW_READY = (
    "document.querySelector('main')?.dataset.page === 'overview'"
    " && document.querySelectorAll('.chart > svg').length === 4"
    " && performance.getEntriesByName('console:data-shown').length > 0"
)
PERIODS = (4, 26, 52)


def measure_page(browser: Browser, url: str, ready: str) -> dict[str, Any]:
    browser.navigate(url)
    browser.wait_for(ready, timeout=120)
    browser.pump(0.3)  # the paint entries settle
    timing: dict[str, Any] = browser.evaluate(TIMING)
    return timing


def period_switch(browser: Browser, weeks: int) -> float:
    started = browser.evaluate("performance.now()")
    browser.evaluate(f"""(() => {{ const s = document.querySelector('#period-status');
      s.value = '{weeks}'; s.dispatchEvent(new Event('change')); return true; }})()""")
    browser.wait_for(
        "(t => t && t.querySelectorAll('tbody tr').length === " + str(weeks) + ")("
        "document.querySelector('table[data-chart^=\"Accounts by status\"]'))",
        timeout=120,
    )
    done: float = browser.evaluate("performance.now()")
    return done - started


def with_token(browser: Browser, token: str) -> None:
    browser.call(
        "Page.addScriptToEvaluateOnNewDocument",
        {"source": f"sessionStorage.setItem('ledger-console-token', {json.dumps(token)});"},
    )


def run(args: argparse.Namespace, db: Database, schema: str, tmp: Path) -> None:
    prepare(db, schema, args.accounts)
    server = start_ledger(db, schema, tmp, projector=False)
    try:
        with db.connect() as conn:
            token = create_token(conn, schema, "regulator", None, "bench-console")[1]
        base = server.url + "/console/"
        executable = chromium_path()
        if executable is None:
            raise SystemExit("chromium is not installed (apt-get install -y chromium)")
        cold, warm, shell, switches = [], [], [], []
        for i in range(args.runs):
            with Browser(executable) as browser:  # a fresh profile: an empty cache
                shell.append(measure_page(browser, base, "!!document.querySelector('#token')"))
            with Browser(executable) as browser:
                with_token(browser, token)
                cold.append(measure_page(browser, base + "#/overview", OVERVIEW_READY))
                browser.navigate("about:blank")
                warm.append(measure_page(browser, base + "#/overview", OVERVIEW_READY))
                switches.append(period_switch(browser, PERIODS[i % len(PERIODS)]))
            log(f"  run {i + 1}: cold {cold[-1]}, warm {warm[-1]}, switch {switches[-1]:.0f} ms")
        reads = overview_reads(server.url + "/graphql", token, args.runs * 5)
        report(args, cold, warm, shell, switches, reads)
    finally:
        server.stop()


def overview_reads(url: str, token: str, calls: int) -> list[float]:
    """The overview's GraphQL reads, as the page asks them (by GET), timed from Python."""
    query = (Path(__file__).resolve().parent.parent / "api/static/console/overview.js").read_text()
    providers = query.split("const PROVIDERS = `")[1].split("`")[0]
    parts = ("sanctionsByLevel { week key count } reports { week opened resolved }"
             " appeals { week key count } accountsByStatus { week key count }")  # fmt: skip
    text = f"query($weeks: Int!) {{ {providers} trends(weeks: $weeks) {{ since until {parts} }} }}"
    params = {"query": text, "variables": json.dumps({"weeks": 12})}
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    times = []
    with httpx.Client(timeout=60) as client:
        for _ in range(calls):
            started = time.perf_counter()
            answer = client.get(url, params=params, headers=headers)
            times.append((time.perf_counter() - started) * 1000)
            assert answer.status_code == 200 and "errors" not in answer.json(), answer.text
    return times


def median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rows if r[key] is not None)


def report(
    args: argparse.Namespace,
    cold: list[dict[str, Any]],
    warm: list[dict[str, Any]],
    shell: list[dict[str, Any]],
    switches: list[float],
    reads: list[float],
) -> None:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nThe console's overview: {args.accounts} accounts, {args.runs} runs, medians;"
          f" load average {load} (2 cores, shared: figures from a loaded machine)")  # fmt: skip
    print(f"{'':34}{'FCP ms':>10}{'data shown ms':>15}{'bytes':>12}{'of which /graphql':>19}")
    for name, rows in (("overview, cold cache", cold), ("overview, warm cache", warm),
                       ("baseline: sign-in shell, cold", shell)):  # fmt: skip
        shown = f"{median(rows, 'shown'):.0f}" if any(r["shown"] for r in rows) else "-"
        print(f"{name:34}{median(rows, 'fcp'):>10.0f}{shown:>15}"
              f"{median(rows, 'bytes'):>12.0f}{median(rows, 'graphql'):>19.0f}")  # fmt: skip
    print(f"{'baseline: the overview data by HTTP':34}{'':10}{statistics.median(reads):>15.0f}"
          f"  ms (median of {len(reads)} GETs from Python, no browser)")  # fmt: skip
    print(f"{'chart period switch (4/26/52 wk)':34}{'':10}{statistics.median(switches):>15.0f}"
          "  ms (change to redrawn)")
    goal = median(cold, "shown")
    print(f"goal: data shown < 1000 ms cold: {'met' if goal < 1000 else 'NOT met'} ({goal:.0f} ms)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.console",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--accounts", type=int, default=20_000, help="demo accounts (20000)")
    parser.add_argument("--runs", type=int, default=5, help="runs, medians printed (5)")
    parser.add_argument("--quick", action="store_true", help="2,000 accounts, 3 runs")
    parser.add_argument("--keep", action="store_true", help="keep the data set for next time")
    args = parser.parse_args(argv)
    if args.quick:
        args.accounts, args.runs = 2000, 3
    if args.accounts <= 0 or args.runs <= 0:
        parser.error("--accounts and --runs must be positive")
    schema = f"bench_console_{args.accounts}"
    with Database() as db, tempfile.TemporaryDirectory(prefix="bench-console-") as tmp:
        try:
            run(args, db, schema, Path(tmp))
        finally:
            if not args.keep:
                db.drop_schema(schema)


if __name__ == "__main__":
    main()
