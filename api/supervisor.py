"""`ledger serve`'s background workers (the projector, the sealer, the webhook deliverer, with
`LEDGER_WITNESSES` set the witnessing worker, and with `--relay` the JetStream relay) as child
processes, so that the API processes only serve: a worker's CPU never contends for an API
process's GIL.

Each child is restarted when it exits, after a backoff that doubles from half a second to
half a minute and starts again once a child has run for a minute. A child asks the kernel
to end it when its parent dies, so a killed `ledger serve` leaves no worker behind. Which
worker leads is settled by the database: each holds its position rows' lock, as two
`ledger project` processes do, so a second server's workers wait their turn."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

log = logging.getLogger("ledger.supervisor")

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
HEALTHY_AFTER_S = 60.0
STOP_TIMEOUT_S = 10.0
WORKERS = ("projector", "sealer", "deliver")
WITNESSING = "witnesses"
RELAY = "relay"
PR_SET_PDEATHSIG = 1


def configured_workers() -> tuple[str, ...]:
    """The workers to run: the witnessing worker too when witnesses are configured."""
    witnesses = os.environ.get("LEDGER_WITNESSES", "").strip()
    return (*WORKERS, WITNESSING) if witnesses else WORKERS


def worker_command(name: str) -> list[str]:
    if name == "deliver":  # the webhook delivery worker
        return [sys.executable, "-m", "api.cli", "deliver"]
    if name == RELAY:
        return [sys.executable, "-m", "api.cli", "relay"]
    return [sys.executable, "-m", "api.cli", "project", "--only", name]


def die_with_parent(parent: int | None = None) -> None:
    """Ask for SIGTERM when the parent (the thread of it that started this process) ends.
    Called in a child before exec, or first thing in one of uvicorn's API workers, which
    passes the parent's pid: a parent that died before the request was made is noticed."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: `stop()` alone stops it
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class Child:
    name: str
    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    backoff: float = FIRST_BACKOFF_S
    restarts: int = 0
    due: float = field(default=0.0)

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, preexec_fn=die_with_parent)
        self.started = time.monotonic()
        log.info("%s: started (pid %d)", self.name, self.process.pid)

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def schedule_restart(self, code: int) -> None:
        ran = time.monotonic() - self.started
        if ran >= HEALTHY_AFTER_S:
            self.backoff = FIRST_BACKOFF_S
        log.warning("%s: exited with %d after %.1f s; restarting in %.1f s",
                    self.name, code, ran, self.backoff)  # fmt: skip
        self.due = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, MAX_BACKOFF_S)
        self.process = None
        self.restarts += 1


class Supervisor:
    """Starts the children, restarts each that exits, and stops them all on `stop()`."""

    def __init__(self, children: Sequence[Child], poll_s: float = 0.2) -> None:
        self.children = list(children)
        self.poll_s = poll_s
        self._stop = threading.Event()
        # Started and waited on from one thread: PR_SET_PDEATHSIG follows the thread that
        # forked, so the children must not be started from a short-lived one.
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)

    @classmethod
    def for_workers(cls, names: Sequence[str] | None = None) -> Supervisor:
        chosen = configured_workers() if names is None else names
        return cls([Child(name, worker_command(name)) for name in chosen])

    def start(self) -> Supervisor:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for child in self.children:
                    self._tend(child)
                self._stop.wait(self.poll_s)
        finally:
            self._stop_children()

    def _tend(self, child: Child) -> None:
        code = child.exited()
        if code is not None:
            child.schedule_restart(code)
        if child.process is None and time.monotonic() >= child.due:
            child.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(STOP_TIMEOUT_S + 5)

    def _stop_children(self) -> None:
        running = [c.process for c in self.children if c.process and c.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("pid %d did not stop in %.0f s; killing it", process.pid,
                            STOP_TIMEOUT_S)  # fmt: skip
                process.kill()
                process.wait()

    def pids(self) -> dict[str, int | None]:
        return {c.name: c.process.pid if c.process else None for c in self.children}


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
