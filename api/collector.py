"""Python's garbage collector in a server that runs for days: every pause timed, and the
long-lived objects of start-up taken out of its reach.

CPython's cyclic collector holds the GIL while it runs, so a collection stalls every
request, delivery and write acknowledgement of the process. A full (generation 2)
collection walks every tracked object, so its pause grows with the heap.

- `watch()` times each collection with a `gc.callbacks` hook. The hook only appends to
  a deque: it runs inside whatever code allocated, which may be prometheus_client's own
  locked sections, so it must not take a metric's lock. `pauses()` hands the times to
  api.metrics, which counts them at each scrape (and, with several workers, every few
  seconds).
- `settle()`, once the app has started (pools open, schema built): one full collection,
  then `gc.freeze()`. What survives start-up (modules, the schema and its compiled
  plans, the pools) is kept for the life of the process, and a full collection no
  longer walks it. A frozen object dropped later is still freed by its reference
  count; only a reference cycle among such objects waits for `release()`.
  LEDGER_GC_FREEZE=0 leaves it out;
  LEDGER_GC_THRESHOLDS sets `gc.set_threshold` (three integers, e.g. `700,10,10`,
  Python's default).
- `release()`, when the app stops, unfreezes (several apps may start and stop in one
  process, as in the tests).
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections import deque
from typing import Any

log = logging.getLogger("ledger.api.gc")

# Collections not yet counted: more than any scrape interval sees (a young collection
# takes microseconds; thousands a second is already extreme).
_pending: deque[tuple[int, float]] = deque(maxlen=100_000)
_started = [0.0]


def _timed(phase: str, info: dict[str, Any]) -> None:
    # One collection at a time: it holds the GIL from "start" to "stop".
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        _pending.append((int(info["generation"]), time.perf_counter() - _started[0]))


def watch() -> None:
    """Time every collection in this process from now on (once, however often called)."""
    if _timed not in gc.callbacks:
        gc.callbacks.append(_timed)


def pauses() -> list[tuple[int, float]]:
    """The collections timed since the last call: (generation, seconds) each."""
    taken = []
    while _pending:
        taken.append(_pending.popleft())
    return taken


def thresholds() -> tuple[int, int, int] | None:
    """LEDGER_GC_THRESHOLDS as three positive integers; None when unset."""
    text = os.environ.get("LEDGER_GC_THRESHOLDS", "").strip()
    if not text:
        return None
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise ValueError(f"LEDGER_GC_THRESHOLDS must be three positive integers, not {text!r}")
    return values


def settle() -> None:
    """Once the app has started, before it serves: set the thresholds, freeze what
    start-up made, then time every collection (start-up's own is not a stall)."""
    chosen = thresholds()
    if chosen is not None:
        gc.set_threshold(*chosen)
    if os.environ.get("LEDGER_GC_FREEZE", "1") != "0":
        gc.collect()
        gc.freeze()
    watch()
    log.info("garbage collector: thresholds %s, %d objects frozen",
             gc.get_threshold(), gc.get_freeze_count())  # fmt: skip


def release() -> None:
    gc.unfreeze()
