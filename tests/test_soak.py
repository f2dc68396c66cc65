"""The soak (bench/soak.py): a short run against real PostgreSQL passes and prints its
table; and each of its rules, fed a synthetic run, fails when it should (RSS growing,
read p99 tripling, a write lost or doubled, an event missed, doubled or reordered), as
does the reading of the GC pause metric."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.soak_checks import (
    Windows,
    deliveries_rule,
    p99_rule,
    rss_rule,
    writes_rule,
)
from bench.soak_samples import gc_pause_scrape, longest_pause
from ledger import Database

ROOT = Path(__file__).resolve().parent.parent
MB = 2**20
TEN_MINUTES = Windows.of(600)


def test_a_short_soak_passes_and_prints_a_row_per_period(database: Database) -> None:
    """Thirty seconds at a tenth of the load, on the session's PostgreSQL (a schema of the
    soak's own). The p99 drift floor is raised: other tests share these cores, and a
    30-second run's windows hold too few reads for a steady p99 (the rule's own test is
    below)."""
    env = dict(os.environ, LEDGER_DATABASE_URL=database.conninfo)
    done = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--minutes", "0.5", "--writes", "5",
         "--reads", "10", "--subscribers", "5", "--accounts", "100", "--row-seconds", "10",
         "--sample-seconds", "1", "--resume-every", "6", "--p99-floor-ms", "5000"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, f"exit {done.returncode}\n{out}\n{done.stderr[-3000:]}"
    assert "soak passed: every rule held" in out
    header = next(x for x in out.splitlines() if x.strip().startswith("until"))
    for column in ("RSS MB", "read p50", "read p99", "writes acked", "deliveries"):
        assert column in header
    rows = re.findall(r"^\s+(0:[0-9]{2})\s+(\d+)\s+.*$", out, re.M)
    assert [until for until, _ in rows] == ["0:10", "0:20", "0:30"], out
    assert all(int(rss) > 10 for _, rss in rows), "an RSS under 10 MB is not the server's"
    assert len(re.findall(r"^\s+PASS\s", out, re.M)) == 5, out
    acked = int(re.search(r"writes: (\d+) acknowledged", out).group(1))  # type: ignore[union-attr]
    assert acked >= 100, out
    resumed = re.search(r"sessions ended by \{[^}]*'resumed': (\d+)", out)
    assert resumed and int(resumed.group(1)) >= 5, "the subscribers did not resume: " + out


def test_the_windows_follow_the_run() -> None:
    assert (TEN_MINUTES.baseline, TEN_MINUTES.final) == ((120, 180), (540, 600))
    two = Windows.of(120)
    assert (two.warmup, two.baseline, two.final) == (60, (60, 84), (96, 120))


def samples(values: list[tuple[float, float]], every: float = 5) -> list[tuple[float, float]]:
    """(time, value) every `every` seconds of a ten-minute run, a value per stretch."""
    out = []
    t = 0.0
    while t < 600:
        out.append((t, next(v for until, v in values if t < until)))
        t += every
    return out


def test_the_rss_rule_fires_when_memory_grows_after_warm_up() -> None:
    # Warm-up may grow as it likes; afterwards flat within 10%.
    flat = samples([(120, 60 * MB), (600, 140 * MB)])
    assert rss_rule(flat, TEN_MINUTES).ok
    grows = samples([(120, 60 * MB), (540, 140 * MB), (600, 168 * MB)])  # +20%
    verdict = rss_rule(grows, TEN_MINUTES)
    assert not verdict.ok
    assert "140 MB at 120-180 s -> 168 MB at 540-600 s (+20.0%)" in verdict.line()
    assert not rss_rule(samples([(600, 100 * MB)])[:20], TEN_MINUTES).ok  # no final window


def reads(p99: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """A read every 0.02 s; one in fifty takes the stretch's p99, the rest 5 ms."""
    out = []
    for i in range(30_000):
        t = i * 0.02
        slow = next(v for until, v in p99 if t < until)
        out.append((t, slow if i % 50 == 0 else 0.005))
    return out


def test_the_p99_rule_fires_when_the_read_p99_drifts_over_the_floor() -> None:
    assert p99_rule(reads([(600, 0.200)]), TEN_MINUTES).ok
    tripled = p99_rule(reads([(540, 0.200), (600, 0.600)]), TEN_MINUTES)
    assert not tripled.ok
    assert "(3.00x)" in tripled.detail
    # Tripling from 10 to 30 ms: under the 50 ms floor, not judged.
    assert p99_rule(reads([(540, 0.010), (600, 0.030)]), TEN_MINUTES).ok


def test_the_writes_rule_fires_on_a_lost_misplaced_or_doubled_write() -> None:
    acked = {"a": 10, "b": 11, "c": 12}
    assert writes_rule(acked, {"a": [10], "b": [11], "c": [12]}).ok
    lost = writes_rule(acked, {"a": [10], "b": [11]})
    assert not lost.ok and "1 lost" in lost.detail and "e.g. c" in lost.detail
    assert not writes_rule(acked, {"a": [10], "b": [11], "c": [13]}).ok  # elsewhere
    doubled = writes_rule(acked, {"a": [10], "b": [11], "c": [12, 14]})
    assert not doubled.ok and "1 logged twice" in doubled.detail
    # A write never acknowledged (abandoned) may be logged once, not twice.
    assert writes_rule(acked, {"a": [10], "b": [11], "c": [12], "d": [13]}).ok
    assert not writes_rule(acked, {"a": [10], "b": [11], "c": [12], "d": [13, 15]}).ok


def test_the_deliveries_rule_fires_on_a_missed_doubled_or_reordered_event() -> None:
    log = [3, 4, 7, 8, 9]  # a gap in positions is no loss
    assert deliveries_rule(log, {"s1": log, "s2": list(log)}).ok
    doubled = deliveries_rule(log, {"s1": log, "s2": [3, 4, 7, 7, 8, 9]})
    assert not doubled.ok
    assert "1 subscribers wrong: 0 missed, 1 doubled" in doubled.detail
    assert "s2: 7" in doubled.detail
    missed = deliveries_rule(log, {"s1": [3, 4, 8, 9]})
    assert not missed.ok and "1 missed" in missed.detail
    assert not deliveries_rule(log, {"s1": [3, 4, 8, 7, 9]}).ok  # out of order
    assert not deliveries_rule(log, {"s1": [*log, 10]}).ok  # beyond the window
    assert not deliveries_rule(log, {}).ok


HISTOGRAM = """# HELP ledger_gc_pause_seconds Garbage-collector pauses.
# TYPE ledger_gc_pause_seconds histogram
ledger_gc_pause_seconds_bucket{{generation="2",le="0.01"}} {a}
ledger_gc_pause_seconds_bucket{{generation="2",le="0.05"}} {b}
ledger_gc_pause_seconds_bucket{{generation="2",le="0.5"}} {c}
ledger_gc_pause_seconds_bucket{{generation="2",le="+Inf"}} {c}
ledger_gc_pause_seconds_count{{generation="2"}} {c}
ledger_gc_pause_seconds_sum{{generation="2"}} 1.0
"""


def test_the_longest_gc_pause_is_read_from_a_histogram_or_a_gauge_or_is_unknown() -> None:
    first = gc_pause_scrape(HISTOGRAM.format(a=5, b=5, c=5))
    assert longest_pause(None, first) == 0.01
    # Two new pauses: one under 10 ms, one between 50 and 500 ms.
    second = gc_pause_scrape(HISTOGRAM.format(a=6, b=6, c=7))
    assert longest_pause(first, second) == 0.5
    assert longest_pause(second, second) == 0.0  # none since
    gauge = "# TYPE ledger_gc_pause_seconds_max gauge\nledger_gc_pause_seconds_max 0.042\n"
    assert longest_pause(None, gc_pause_scrape(gauge)) == pytest.approx(0.042)
    absent = gc_pause_scrape("# TYPE ledger_log_head gauge\nledger_log_head 5\n")
    assert absent is None and longest_pause(None, absent) is None
