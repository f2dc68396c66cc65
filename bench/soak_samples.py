"""What the soak samples of the server every few seconds: its resident memory and open
file descriptors (with its children's, read from /proc), its database connections
(pg_stat_activity) and, when its /metrics has it, the longest garbage-collector pause."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from prometheus_client.parser import text_string_to_metric_families

PROC = Path("/proc")
GC_PAUSE = "ledger_gc_pause_seconds"  # the metric, when the server exposes it
PROJECTOR_NAMES = ("ledger-projector", "ledger-projector-listen")  # its own application_name


@dataclass(frozen=True)
class Sample:
    at: float  # seconds from the start of the load
    rss: int  # bytes, the server and its children
    fds: int
    connections: int  # the server's database connections
    cpu: float  # seconds of CPU the server and its children have used so far
    gc_pause: float | None  # the longest pause since the previous sample, s (None: unknown)


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants that are still running."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for children in (PROC / str(p) / "task").glob("*/children"):
            try:
                todo.extend(int(c) for c in children.read_text().split())
            except OSError:
                continue
    return out


def rss_bytes(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        try:
            status = (PROC / str(pid) / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def cpu_seconds(pids: Iterable[int]) -> float:
    """User and system time of the processes so far (/proc/<pid>/stat, fields 14 and 15)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            # The command name, in parentheses, may hold spaces: split after it.
            fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def open_fds(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += sum(1 for _ in (PROC / str(pid) / "fd").iterdir())
        except OSError:
            continue
    return total


class Connections:
    """Counts the server's connections in pg_stat_activity: those that carry its
    application_name (PGAPPNAME in its environment) or its projector's."""

    def __init__(self, conninfo: str, application_name: str) -> None:
        self.conn = psycopg.connect(conninfo, autocommit=True, application_name="ledger-soak")
        self.names = [application_name, *PROJECTOR_NAMES]

    def count(self) -> int:
        row = self.conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = ANY(%s) AND pid <> pg_backend_pid()",
            [self.names],
        ).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.conn.close()


Labels = tuple[tuple[str, str], ...]
Scrape = dict[tuple[str, Labels], float]


def gc_pause_scrape(text: str) -> Scrape | None:
    """The GC pause metric's samples in a /metrics page, by (sample name, labels); None
    when the page has no such metric."""
    found = {}
    for family in text_string_to_metric_families(text):
        if family.name == GC_PAUSE or family.name.startswith(GC_PAUSE + "_"):
            for s in family.samples:
                found[s.name, tuple(sorted(s.labels.items()))] = s.value
    return found or None


def longest_pause(before: Scrape | None, after: Scrape | None) -> float | None:
    """The longest pause between two scrapes of the metric, whatever its kind: a gauge
    (the longest or the last pause, or `_max`) as it stands; a histogram, the upper bound
    of the lowest bucket that holds every pause since the last scrape (inf: above the
    highest bound). None when the metric is absent or says nothing of the longest."""
    if after is None:
        return None
    gauges = [v for (name, _), v in after.items() if name in (GC_PAUSE, GC_PAUSE + "_max")]
    if gauges:
        return max(gauges)
    groups: dict[Labels, list[tuple[float, float]]] = {}
    for (name, labels), value in after.items():
        if name == GC_PAUSE + "_bucket":
            others = tuple((k, v) for k, v in labels if k != "le")
            grown = value - (before or {}).get((name, labels), 0.0)
            groups.setdefault(others, []).append((float(dict(labels)["le"]), grown))
    if not groups:
        return None
    longest = 0.0
    for buckets in groups.values():
        buckets.sort()
        total = buckets[-1][1]  # the +Inf bucket: every pause since the last scrape
        if total > 0:
            longest = max(longest, next(le for le, n in buckets if n >= total))
    return longest
