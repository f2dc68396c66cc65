"""The soak's table: a row per minute (or per `--row-seconds`) of the server's samples
and the clients' figures."""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from bench.common import quantile
from bench.soak_load import Record, Subscriber
from bench.soak_samples import Sample


@dataclass(frozen=True)
class Row:
    start: float
    end: float
    rss: int | None  # bytes, at the row's last sample
    fds: int | None
    connections: int | None
    cpu: float | None  # the server's share of one core over the row's samples
    reads: list[float]  # seconds, reads sent in the row that succeeded
    read_failures: int
    writes: list[float]  # seconds from first attempt to acknowledgement, acked in the row
    deliveries: int  # every item received in the row, replays after a resumption too
    live: list[float]  # seconds from a write's request to its delivery, live items only
    resumptions: int
    gc_pause: float | None  # the longest pause the server reported in the row, s


def delivery_latencies(
    subscriber: Subscriber, rec: Record, start: float, end: float
) -> list[float]:
    """From the request of the write that made an event to this subscriber's receipt of
    it, for the items received in [start, end) by a session that was already subscribed
    when the write was sent (a replay after a resumption is not a delivery's latency)."""
    times, positions, sessions = subscriber.times, subscriber.positions, subscriber.sessions
    out = []
    for i in range(bisect_left(times, start), bisect_left(times, end)):
        sent = rec.requested.get(positions[i])
        if sent is None:
            continue
        k = bisect_right(sessions, times[i]) - 1
        if k >= 0 and sent >= sessions[k]:
            out.append(times[i] - sent)
    return out


def row(
    start: float,
    end: float,
    samples: Sequence[Sample],
    rec: Record,
    subscribers: Sequence[Subscriber],
) -> Row:
    mine = [s for s in samples if start <= s.at < end]
    last = mine[-1] if mine else None
    pauses = [s.gc_pause for s in mine if s.gc_pause is not None]
    times = [s.times for s in subscribers]
    return Row(
        start=start,
        end=end,
        rss=last.rss if last else None,
        fds=last.fds if last else None,
        connections=last.connections if last else None,
        cpu=cpu_share(mine),
        reads=[seconds for sent, seconds in rec.reads if start <= sent < end],
        read_failures=sum(start <= t < end for t in rec.failed_reads),
        writes=[seconds for acked, seconds in rec.writes if start <= acked < end],
        deliveries=sum(bisect_left(t, end) - bisect_left(t, start) for t in times),
        live=[x for s in subscribers for x in delivery_latencies(s, rec, start, end)],
        resumptions=sum(start <= t < end for s in subscribers for t in s.sessions[1:]),
        gc_pause=max(pauses) if pauses else None,
    )


def cpu_share(samples: Sequence[Sample]) -> float | None:
    if len(samples) < 2 or samples[-1].at <= samples[0].at:
        return None
    return (samples[-1].cpu - samples[0].cpu) / (samples[-1].at - samples[0].at)


def rows(
    duration: float,
    every: float,
    samples: Sequence[Sample],
    rec: Record,
    subscribers: Sequence[Subscriber],
) -> list[Row]:
    count = max(1, math.ceil(duration / every - 1e-9))
    return [
        row(k * every, min((k + 1) * every, duration), samples, rec, subscribers)
        for k in range(count)
    ]


COLUMNS = (
    # (header, width)
    ("until", 7), ("RSS MB", 7), ("fds", 5), ("db conns", 9), ("CPU", 5), ("reads", 6),
    ("read p50", 9), ("read p99", 9), ("failed", 7), ("writes acked", 13),
    ("write p99", 10), ("deliveries", 11), ("delivery p50", 13), ("delivery p99", 13),
    ("resumed", 8), ("GC pause max", 13),
)  # fmt: skip


def ms(values: Sequence[float], q: int) -> str:
    return f"{quantile(values, q) * 1000:.1f}" if values else "-"


def clock_time(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


def gc_pause(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "> top bucket" if value == math.inf else f"{value * 1000:.1f}"


def cells(r: Row) -> list[str]:
    return [
        clock_time(r.end),
        "-" if r.rss is None else f"{r.rss / 2**20:.0f}",
        "-" if r.fds is None else str(r.fds),
        "-" if r.connections is None else str(r.connections),
        "-" if r.cpu is None else f"{r.cpu:.0%}",
        str(len(r.reads)),
        ms(r.reads, 50),
        ms(r.reads, 99),
        str(r.read_failures),
        str(len(r.writes)),
        ms(r.writes, 99),
        str(r.deliveries),
        ms(r.live, 50),
        ms(r.live, 99),
        str(r.resumptions),
        gc_pause(r.gc_pause),
    ]


def line(values: Sequence[str]) -> str:
    return "  ".join(v.rjust(w) for v, (_, w) in zip(values, COLUMNS, strict=True))


def header() -> str:
    return line([name for name, _ in COLUMNS])


def table(found: Sequence[Row]) -> str:
    top = header()
    return "\n".join([top, "-" * len(top), *(line(cells(r)) for r in found)])


LEGEND = """\
until: the end of the row (m:ss from the start of the load); RSS, fds, db conns: the
server's (with its children) at the row's last sample; CPU: its share of one core between
the row's first and last samples; reads: sent in the row and answered, p50 and p99 in ms
from the scheduled send; failed: reads answered with an error, not at all, or not sent
(200 already waiting); writes acked: acknowledged in the row, p99 in ms from the first
attempt; deliveries: items the subscribers received (replays after a resumption too),
p50/p99 in ms from the write's request to the receipt, live items only; resumed:
subscriptions opened again from a cursor; GC pause max: the longest collector pause the
server's /metrics reported in the row (ms; n/a: it has no ledger_gc_pause_seconds)."""
