"""The soak's rules, as pure functions of what the run recorded: memory flat after
warm-up, read p99 steady, every acknowledged write logged exactly once, every subscriber
given every event of its window exactly once and in order. bench/soak.py applies them;
tests/test_soak.py feeds them synthetic runs to show that each one fires."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

from bench.common import quantile

RSS_GROWTH_LIMIT = 0.10  # the last window's RSS over the baseline's, at most +10%
P99_DRIFT_LIMIT = 1.5  # the last window's read p99 over the baseline's, at most 1.5x
P99_FLOOR_S = 0.050  # drift is not judged while the last window's p99 stays under this
SHOWN = 5  # examples named in a failing rule's line


@dataclass(frozen=True)
class Windows:
    """A run's phases, in seconds from the start of the load: warm-up, then a baseline
    window right after it, compared with the final window at the end of the run.

    Warm-up is a fifth of the run, but at least a minute (or half of a run shorter than
    two): caches, pools and the first collections settle there. Each window is a minute,
    or a fifth of a run shorter than five minutes. Ten minutes: warm-up 0-120 s, baseline
    120-180 s, final 540-600 s; two minutes: 0-60, 60-84, 96-120."""

    duration: float
    warmup: float
    span: float

    @classmethod
    def of(cls, duration: float) -> Windows:
        warmup = max(0.2 * duration, min(60.0, 0.5 * duration))
        return cls(duration, warmup, min(60.0, 0.2 * duration))

    @property
    def baseline(self) -> tuple[float, float]:
        return self.warmup, self.warmup + self.span

    @property
    def final(self) -> tuple[float, float]:
        return self.duration - self.span, self.duration


@dataclass(frozen=True)
class Verdict:
    rule: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'}  {self.rule}: {self.detail}"


def within(samples: Sequence[tuple[float, float]], window: tuple[float, float]) -> list[float]:
    """The values of the (time, value) samples taken in [start, end)."""
    start, end = window
    return [value for t, value in samples if start <= t < end]


def rss_rule(
    samples: Sequence[tuple[float, float]], windows: Windows, limit: float = RSS_GROWTH_LIMIT
) -> Verdict:
    """The median RSS of the final window against that of the baseline window."""
    rule = f"RSS grows at most {limit:.0%} after warm-up"
    base, last = within(samples, windows.baseline), within(samples, windows.final)
    if not base or not last:
        return Verdict(rule, False, "no RSS sample in the baseline or the final window")
    before, after = statistics.median(base), statistics.median(last)
    growth = after / before - 1
    detail = (
        f"{before / 2**20:.0f} MB at {span(windows.baseline)} -> {after / 2**20:.0f} MB at"
        f" {span(windows.final)} ({growth:+.1%})"
    )
    return Verdict(rule, growth <= limit, detail)


def p99_rule(
    latencies: Sequence[tuple[float, float]],
    windows: Windows,
    limit: float = P99_DRIFT_LIMIT,
    floor: float = P99_FLOOR_S,
) -> Verdict:
    """The read p99 of the final window against that of the baseline window; drift is
    forgiven while the final p99 stays under `floor` (a few slow reads of a fast server
    would otherwise fail it)."""
    rule = f"read p99 drifts at most {limit:g}x (not judged under {floor * 1000:.0f} ms)"
    base, last = within(latencies, windows.baseline), within(latencies, windows.final)
    if not base or not last:
        return Verdict(rule, False, "no read completed in the baseline or the final window")
    before, after = quantile(base, 99), quantile(last, 99)
    detail = (
        f"{before * 1000:.1f} ms at {span(windows.baseline)} -> {after * 1000:.1f} ms at"
        f" {span(windows.final)} ({after / before:.2f}x)"
    )
    if after < floor:
        return Verdict(rule, True, detail + f"; under {floor * 1000:.0f} ms")
    return Verdict(rule, after <= limit * before, detail)


def writes_rule(acked: Mapping[str, int], logged: Mapping[str, Sequence[int]]) -> Verdict:
    """Every acknowledged write (idempotency key -> the position it was acknowledged at)
    is in the log (key -> the positions its events hold) exactly once, at that position;
    no key is in the log twice, acknowledged or not."""
    rule = "every acknowledged write is in the log exactly once"
    lost = sorted(key for key in acked if not logged.get(key))
    misplaced = sorted(
        key for key, position in acked.items() if logged.get(key) and position not in logged[key]
    )
    doubled = sorted(key for key, positions in logged.items() if len(positions) > 1)
    detail = (
        f"{len(acked)} acknowledged; {len(lost)} lost, {len(misplaced)} at another"
        f" position, {len(doubled)} logged twice"
    )
    wrong = [*lost, *misplaced, *doubled]
    if wrong:
        detail += f" (e.g. {', '.join(wrong[:SHOWN])})"
    return Verdict(rule, not wrong, detail)


@dataclass(frozen=True)
class Delivered:
    """How one subscriber's deliveries compare with the log of its window."""

    missing: list[int]
    doubled: list[int]
    foreign: list[int]  # positions outside the window, or not in the log
    disordered: int  # deliveries at or below the position delivered before them

    @property
    def ok(self) -> bool:
        return not (self.missing or self.doubled or self.foreign or self.disordered)


def compare(expected: Sequence[int], received: Sequence[int]) -> Delivered:
    seen = Counter(received)
    wanted = set(expected)
    return Delivered(
        missing=[p for p in expected if p not in seen],
        doubled=sorted(p for p, n in seen.items() if n > 1),
        foreign=sorted(p for p in seen if p not in wanted),
        disordered=sum(b <= a for a, b in pairwise(received)),
    )


def deliveries_rule(expected: Sequence[int], received: Mapping[str, Sequence[int]]) -> Verdict:
    """Each subscriber (name -> the positions it received, in order, across its
    resumptions) got exactly the log's positions of the window (`expected`), in order."""
    rule = "every subscriber got every event of its window exactly once, in order"
    found = {name: compare(expected, got) for name, got in received.items()}
    wrong = {name: d for name, d in found.items() if not d.ok}
    detail = f"{len(received)} subscribers x {len(expected)} events"
    if not received or not expected:
        return Verdict(rule, False, detail + ": nothing to compare")
    if wrong:
        missing = sum(len(d.missing) for d in wrong.values())
        doubled = sum(len(d.doubled) for d in wrong.values())
        foreign = sum(len(d.foreign) for d in wrong.values())
        disordered = sum(d.disordered for d in wrong.values())
        name, first = next(iter(wrong.items()))
        shown = first.missing or first.doubled or first.foreign
        example = ", ".join(map(str, shown[:SHOWN])) if shown else "out of order"
        detail += (
            f"; {len(wrong)} subscribers wrong: {missing} missed, {doubled} doubled,"
            f" {foreign} outside the window, {disordered} out of order (e.g. {name}: {example})"
        )
    return Verdict(rule, not wrong, detail)


def span(window: tuple[float, float]) -> str:
    return f"{window[0]:.0f}-{window[1]:.0f} s"
