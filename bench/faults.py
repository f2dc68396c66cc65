"""Fault injection: `ledger serve` (with its projector) on a PostgreSQL cluster of our own,
under a steady write load, two live subscribers and a /readyz poller, while the database's
backends are terminated, it is restarted fast and immediately, stopped for a while, and
the server itself is killed with SIGKILL and started again.

Writers retry every write with the same idempotency key until it is acknowledged; the
subscribers resubscribe from the last cursor received. At the end every acknowledged
write is looked up in the log and every logged sanction in what the subscribers got.
Goals (the exit status is 1 when one is missed): nothing lost, duplicated, missed or
doubled; the first acknowledged write and readyz 200 within 2 s of the database's (or
the server's) return; every readyz probe under 1 s and never 200 while the database is
down; no INTERNAL answer.

    python -m bench.faults [--load SECONDS] [--stopped SECONDS] [--writers N]
        [--subscribers N] [--keep]
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
from websockets.exceptions import WebSocketException
from websockets.sync.client import ClientConnection, connect

from bench.common import log
from ledger import Database, Ledger
from ledger.vault import Vault
from tests.cluster import Cluster, free_port
from tests.world import World

ROOT = Path(__file__).resolve().parent.parent
REASON = "fault bench "  # + the idempotency key: each logged sanction names its write
IMPOSE = """mutation($id: ID!, $key: String!, $reason: String!) {
  imposeSanction(input: {accountId: $id, level: "warning", ruleIds: ["art.9"],
    reason: $reason}, idempotencyKey: $key) {
  __typename ... on CommandSuccess { position replayed } ... on MutationError { code } } }"""
# The cursor as a string literal: valid whether `after` is a String or a Position.
SANCTIONS = "subscription { sanctionEvents(after: %s) { position cursor type } }"
SANCTION_IMPOSED = "Account.SanctionImposed"

RETRYABLE = {"STORAGE_UNAVAILABLE", "CONFLICT", "INTERNAL", "timeout", "no connection"}
REQUEST_TIMEOUT = 5.0  # seconds a write may take before it is retried
RETRY_PAUSE = 0.05  # between attempts of one write
WRITE_PAUSE = 0.05  # between one writer's writes
GIVE_UP_SECONDS = 30.0  # a write still unacknowledged after this is abandoned
PROBE_EVERY = 0.1
PROBE_TIMEOUT = 2.0
RECOVERY_GOAL = 2.0  # seconds from the database's (or server's) return
PROBE_GOAL = 1.0  # seconds a readyz probe may take


def now() -> float:
    return time.monotonic()


# ----- the run's phases --------------------------------------------------------------------


@dataclass
class Phase:
    """Steady load, or a fault and the load after it, until the next phase."""

    name: str
    started: float
    down: float | None = None  # from when the database (or the server) is known down
    starting: float | None = None  # until it is started again
    back: float | None = None  # the database accepts connections (or the server listens)
    note: str = ""


class Timeline:
    def __init__(self) -> None:
        self.phases = [Phase("steady load", now())]

    def current(self) -> int:
        return len(self.phases) - 1

    def begin(self, name: str) -> Phase:
        self.phases.append(Phase(name, now()))
        return self.phases[-1]


# ----- the server under test -----------------------------------------------------------------


def ledger_env(cluster: Cluster, data_dir: Path, key: bytes) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.update(
        LEDGER_DATABASE_URL=cluster.url,
        LEDGER_DATA_DIR=str(data_dir),
        LEDGER_CIPHER_KEY=base64.b64encode(key).decode(),
    )
    return env


def ledger_cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"ledger {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


class LedgerServer:
    """`ledger serve` as a child process on a fixed port, its output in a log file."""

    def __init__(self, env: dict[str, str], directory: Path) -> None:
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = directory / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> float:
        """Spawn it; return when it answers /healthz (the time it did)."""
        command = [sys.executable, "-m", "api.cli", "serve", "--port", str(self.port)]
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = now() + timeout
        while now() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"ledger serve exited ({self.process.returncode}):\n{self.tail()}"
                )
            with suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return now()
            time.sleep(0.02)
        raise RuntimeError(f"ledger serve did not listen within {timeout:.0f} s:\n{self.tail()}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join("    " + line for line in text[-lines:])

    def errors(self) -> list[str]:
        """The log's ERROR lines and tracebacks' last lines."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [
            line
            for line in lines
            if " ERROR " in line or line.startswith(("ERROR", "Traceback", "CRITICAL"))
        ]


def wait_ready(url: str, timeout: float = 60) -> int:
    """Until /readyz answers 200; the number of HTTP 500 answers before it."""
    deadline = now() + timeout
    internal = 0
    while now() < deadline:
        with suppress(httpx.HTTPError):
            status = httpx.get(url + "/readyz", timeout=2).status_code
            if status == 200:
                return internal
            internal += status == 500
        time.sleep(0.1)
    raise RuntimeError(f"{url}/readyz not 200 within {timeout:.0f} s")


# ----- load: writers -------------------------------------------------------------------------


@dataclass(frozen=True)
class Ack:
    key: str
    position: int
    issued: float  # the first attempt
    acked: float
    attempts: int
    replayed: bool


@dataclass
class Record:
    """What the clients saw, shared by their threads (list appends and Counter updates
    of single items are atomic enough under the GIL for counting)."""

    timeline: Timeline
    issued: dict[str, int] = field(default_factory=dict)  # key -> phase of its first attempt
    acks: dict[str, Ack] = field(default_factory=dict)
    abandoned: list[str] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)  # answers not retried
    answers: Counter[tuple[int, str]] = field(default_factory=Counter)  # (phase, answer)
    slowest: dict[int, float] = field(default_factory=dict)  # phase -> longest answer, s
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, answer: str, took: float = 0.0) -> None:
        with self.lock:
            phase = self.timeline.current()
            self.answers[phase, answer] += 1
            self.slowest[phase] = max(self.slowest.get(phase, 0.0), took)

    def ack(self, ack: Ack) -> None:
        with self.lock:
            if ack.key in self.acks:
                self.answers[self.timeline.current(), "acknowledged twice"] += 1
            self.acks[ack.key] = ack


def attempt(client: httpx.Client, url: str, account: str, key: str) -> tuple[str, Any]:
    """One try of a write: (answer, the CommandSuccess or None)."""
    variables = {"id": account, "key": key, "reason": REASON + key}
    try:
        response = client.post(url, json={"query": IMPOSE, "variables": variables})
    except httpx.TimeoutException:
        return "timeout", None
    except httpx.TransportError:
        return "no connection", None
    if response.status_code == 500:
        return "INTERNAL", None
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}, not JSON", None
    codes = sorted(
        {(e.get("extensions") or {}).get("code") or "?" for e in body.get("errors") or []}
    )
    if codes:
        return ("INTERNAL" if "INTERNAL" in codes else ",".join(codes)), None
    if response.status_code != 200:
        return f"HTTP {response.status_code}", None
    result = body["data"]["imposeSanction"]
    if result["__typename"] == "CommandSuccess":
        return "ok", result
    return str(result["code"]), None


class Writer(threading.Thread):
    """Sanctions on one account, one after another, each retried with its key until
    acknowledged (or abandoned after GIVE_UP_SECONDS)."""

    def __init__(
        self, n: int, url: str, token: str, account: UUID, record: Record, stop: threading.Event
    ) -> None:
        super().__init__(name=f"writer-{n}", daemon=True)
        self.n, self.url, self.account = n, url + "/graphql", str(account)
        self.headers = {"Authorization": f"Bearer {token}"}
        self.record, self.stop = record, stop

    def run(self) -> None:
        with httpx.Client(timeout=REQUEST_TIMEOUT, headers=self.headers) as client:
            for serial in itertools.count():
                if self.stop.is_set():
                    return
                self.write(client, f"w{self.n}-{serial}")
                time.sleep(WRITE_PAUSE)

    def write(self, client: httpx.Client, key: str) -> None:
        self.record.issued[key] = self.record.timeline.current()
        issued = now()
        for attempts in itertools.count(1):
            sent = now()
            answer, result = attempt(client, self.url, self.account, key)
            self.record.note(answer, now() - sent)
            if result is not None:
                ack = Ack(key, int(result["position"]), issued, now(), attempts, result["replayed"])
                self.record.ack(ack)
                return
            if answer not in RETRYABLE:
                self.record.rejected[answer] += 1
                return
            if now() - issued > GIVE_UP_SECONDS:
                self.record.abandoned.append(key)
                return
            time.sleep(RETRY_PAUSE)


# ----- live subscribers ------------------------------------------------------------------------


class Subscriber(threading.Thread):
    """`sanctionEvents` over graphql-transport-ws from a cursor; whenever the subscription
    or the connection ends, subscribes again from the last cursor received."""

    def __init__(
        self, n: int, url: str, token: str, after: int, record: Record, stop: threading.Event
    ) -> None:
        super().__init__(name=f"subscriber-{n}", daemon=True)
        self.ws_url = url.replace("http://", "ws://") + "/graphql"
        self.token, self.cursor = token, str(after)
        self.record, self.stop = record, stop
        self.received: list[int] = []
        self.sessions = 0
        self.ends: Counter[str] = Counter()  # how subscriptions ended

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.session()
            except (WebSocketException, OSError, TimeoutError, ValueError) as e:
                self.ends[type(e).__name__] += 1
            self.stop.wait(0.1)

    def session(self) -> None:
        with connect(
            self.ws_url, subprotocols=["graphql-transport-ws"], open_timeout=5, close_timeout=1
        ) as ws:
            init = {"authorization": f"Bearer {self.token}"}
            ws.send(json.dumps({"type": "connection_init", "payload": init}))
            if json.loads(ws.recv(timeout=5))["type"] != "connection_ack":
                self.ends["no connection_ack"] += 1
                return
            payload = {"query": SANCTIONS % json.dumps(self.cursor)}
            ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
            self.sessions += 1
            while not self.stop.is_set():
                try:
                    message = json.loads(ws.recv(timeout=0.5))
                except TimeoutError:
                    continue
                if not self.handle(ws, message):
                    return

    def handle(self, ws: ClientConnection, message: dict[str, Any]) -> bool:
        """False when the subscription has ended."""
        kind = message.get("type")
        payload = message.get("payload")
        if kind == "ping":
            ws.send(json.dumps({"type": "pong"}))
            return True
        if kind == "next" and isinstance(payload, dict) and not payload.get("errors"):
            item = payload["data"]["sanctionEvents"]
            self.received.append(int(item["position"]))
            self.cursor = item["cursor"]
            return True
        if kind in ("next", "error"):
            errors = payload if isinstance(payload, list) else (payload or {}).get("errors", [])
            codes = {(e.get("extensions") or {}).get("code") or "?" for e in errors}
            for code in codes:
                self.ends[code] += 1
                if code == "INTERNAL":
                    self.record.note("INTERNAL (subscription)")
            return False
        self.ends[str(kind)] += 1
        return kind != "complete"


# ----- readyz ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    started: float
    seconds: float
    status: str  # "200 ready", "503 unavailable", "no server", "timeout", ...

    @property
    def ended(self) -> float:
        return self.started + self.seconds


class ReadyPoller(threading.Thread):
    def __init__(self, url: str, stop: threading.Event) -> None:
        super().__init__(name="readyz", daemon=True)
        self.url, self.stop = url + "/readyz", stop
        self.probes: list[Probe] = []

    def run(self) -> None:
        with httpx.Client(timeout=PROBE_TIMEOUT) as client:
            while not self.stop.is_set():
                started = now()
                status = self.probe(client)
                self.probes.append(Probe(started, now() - started, status))
                self.stop.wait(max(0.0, PROBE_EVERY - (now() - started)))

    def probe(self, client: httpx.Client) -> str:
        try:
            response = client.get(self.url)
        except httpx.TimeoutException:
            return "timeout"
        except httpx.TransportError:
            return "no server"
        try:
            status = response.json().get("status", "?")
        except ValueError:
            status = "not JSON"
        return f"{response.status_code} {status}"


# ----- faults ---------------------------------------------------------------------------------


@dataclass
class Target:
    cluster: Cluster
    server: LedgerServer


def terminate_backends(target: Target, phase: Phase) -> None:
    with psycopg.connect(target.cluster.url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        ).fetchone()
    phase.back = now()
    phase.note = f"{row[0] if row else 0} backends terminated"


def outage(phase: Phase) -> str:
    assert phase.down is not None and phase.back is not None
    down, back = phase.down - phase.started, phase.back - phase.started
    return f"down at +{down:.2f}, back at +{back:.2f}"


def restart(mode: str) -> Callable[[Target, Phase], None]:
    def fault(target: Target, phase: Phase) -> None:
        target.cluster.stop(mode)
        phase.down = phase.starting = now()
        target.cluster.start()
        phase.back = now()
        phase.note = outage(phase)

    return fault


def stop_then_start(seconds: float) -> Callable[[Target, Phase], None]:
    def fault(target: Target, phase: Phase) -> None:
        target.cluster.stop("fast")
        phase.down = now()
        time.sleep(seconds)
        phase.starting = now()
        target.cluster.start()
        phase.back = now()
        phase.note = outage(phase)

    return fault


def kill_server(target: Target, phase: Phase) -> None:
    target.server.kill()
    phase.down = phase.starting = now()
    phase.back = target.server.start()
    down, back = phase.down - phase.started, phase.back - phase.started
    phase.note = f"killed at +{down:.2f}, listening at +{back:.2f}"


def faults(stopped: float) -> list[tuple[str, Callable[[Target, Phase], None]]]:
    """The faults in order, the database stopped for `stopped` seconds in the fourth."""
    return [
        ("terminate backends", terminate_backends),
        ("restart fast", restart("fast")),
        ("restart immediate", restart("immediate")),
        (f"stop {stopped:g} s, start", stop_then_start(stopped)),
        ("SIGKILL serve, start", kill_server),
    ]


# ----- the run --------------------------------------------------------------------------------


@dataclass
class Clients:
    record: Record
    writers: list[Writer]
    subscribers: list[Subscriber]
    poller: ReadyPoller
    stop_writers: threading.Event
    stop_readers: threading.Event

    def start(self) -> None:
        for thread in [self.poller, *self.subscribers, *self.writers]:
            thread.start()

    def stop_writing(self) -> None:
        self.stop_writers.set()
        for writer in self.writers:
            writer.join(GIVE_UP_SECONDS + REQUEST_TIMEOUT + 5)

    def stop_reading(self) -> None:
        self.stop_readers.set()
        for thread in [self.poller, *self.subscribers]:
            thread.join(5)


def prepare(cluster: Cluster, key: bytes, accounts: int) -> tuple[list[UUID], int]:
    """Providers and approved accounts to sanction; the log's head after them."""
    with Database(cluster.url) as db:
        ledger = Ledger.open(db, "public", vault=Vault(key))
        try:
            world = World(ledger)
            made = [world.account() for _ in range(accounts)]
            return made, ledger.head()
        finally:
            ledger.close()


def logged_sanctions(cluster: Cluster, key: bytes, after: int) -> dict[int, str]:
    """Position -> idempotency key of every sanction imposed after `after`."""
    with Database(cluster.url) as db:
        ledger = Ledger.open(db, "public", vault=Vault(key))
        try:
            events = ledger.read_log(after, types=(SANCTION_IMPOSED,))
            return {e.position: str(e.payload["reason"]).removeprefix(REASON) for e in events}
        finally:
            ledger.close()


def catch_up(subscribers: list[Subscriber], positions: set[int], timeout: float = 20) -> None:
    deadline = now() + timeout
    while now() < deadline and any(not positions <= set(s.received) for s in subscribers):
        time.sleep(0.1)


def run_faults(target: Target, timeline: Timeline, load: float, stopped: float) -> None:
    time.sleep(load)
    for name, fault in faults(stopped):
        phase = timeline.begin(name)
        log(f"fault: {name}")
        fault(target, phase)
        log(f"  {phase.note}; load for {load:.0f} s")
        time.sleep(load)


# ----- the report ----------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    acked: int = 0
    found: int = 0
    lost: int = 0
    misplaced: int = 0  # acknowledged at a position the log has not for its key
    duplicated: int = 0
    abandoned: int = 0
    missed: int = 0
    doubled: int = 0
    unavailable: int = 0  # answers retried: STORAGE_UNAVAILABLE, timeouts, no connection
    internal: int = 0
    slowest: float = 0.0  # the longest a write's answer took
    write_recovery: float | None = None
    ready_recovery: float | None = None
    max_probe: float = 0.0
    ready_while_down: int = 0
    transitions: list[tuple[float, str]] = field(default_factory=list)
    fault: bool = False


def analyse(clients: Clients, logged: dict[int, str], timeline: Timeline) -> tuple[list[Row], Row]:
    record = clients.record
    rows = [Row(p.name, fault=i > 0) for i, p in enumerate(timeline.phases)]
    by_key: dict[str, list[int]] = {}
    for position, key in logged.items():
        by_key.setdefault(key, []).append(position)

    def row_of(key: str) -> Row:
        return rows[record.issued.get(key, 0)]

    for key, ack in record.acks.items():
        row = row_of(key)
        row.acked += 1
        found = by_key.get(key, [])
        row.found += bool(found)
        row.lost += not found
        row.misplaced += bool(found) and ack.position not in found
    for key, positions in by_key.items():
        row_of(key).duplicated += len(positions) - 1
    for key in record.abandoned:
        row_of(key).abandoned += 1
    for subscriber in clients.subscribers:
        seen = Counter(subscriber.received)
        for position, key in logged.items():
            row_of(key).missed += position not in seen
        for position, times in seen.items():
            rows[record.issued.get(logged.get(position, ""), 0)].doubled += times - 1
    for (phase, answer), n in record.answers.items():
        rows[phase].internal += n if answer.startswith("INTERNAL") else 0
        rows[phase].unavailable += n if answer in RETRYABLE - {"INTERNAL"} else 0
    for i, row in enumerate(rows):
        row.slowest = record.slowest.get(i, 0.0)
        readiness(row, timeline, i, clients.poller.probes)
        recovery(row, timeline.phases[i], record, clients.poller.probes)
    return rows, total(rows)


def readiness(row: Row, timeline: Timeline, i: int, probes: list[Probe]) -> None:
    phase = timeline.phases[i]
    end = timeline.phases[i + 1].started if i + 1 < len(timeline.phases) else float("inf")
    mine = [p for p in probes if phase.started <= p.ended < end]
    row.max_probe = max((p.seconds for p in mine), default=0.0)
    row.internal += sum(p.status.startswith("500") for p in mine)
    for p in mine:
        if not row.transitions or row.transitions[-1][1] != p.status:
            row.transitions.append((p.ended - phase.started, p.status))
    if phase.down is not None and phase.starting is not None:
        during = [p for p in mine if p.started >= phase.down and p.ended <= phase.starting]
        row.ready_while_down = sum(p.status.startswith("200") for p in during)


def recovery(row: Row, phase: Phase, record: Record, probes: list[Probe]) -> None:
    if phase.back is None:
        return
    back = phase.back
    acked = [a.acked for a in record.acks.values() if a.acked >= back]
    ready = [p.ended for p in probes if p.ended >= back and p.status.startswith("200")]
    row.write_recovery = min(acked) - back if acked else float("inf")
    row.ready_recovery = min(ready) - back if ready else float("inf")


def total(rows: list[Row]) -> Row:
    t = Row("total")
    counted = ("acked", "found", "lost", "misplaced", "duplicated", "abandoned", "missed",
               "doubled", "unavailable", "internal", "ready_while_down")  # fmt: skip
    for name in counted:
        setattr(t, name, sum(getattr(r, name) for r in rows))
    t.max_probe = max(r.max_probe for r in rows)
    t.slowest = max(r.slowest for r in rows)
    recoveries = [r for r in rows if r.fault]
    t.write_recovery = max((r.write_recovery or 0.0) for r in recoveries)
    t.ready_recovery = max((r.ready_recovery or 0.0) for r in recoveries)
    return t


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return "never" if value == float("inf") else f"{value:.2f}"


COLUMNS = (
    ("phase", 22, lambda r: r.name),
    ("acked", 6, lambda r: r.acked),
    ("found", 6, lambda r: r.found),
    ("lost", 5, lambda r: r.lost + r.misplaced),
    ("dup", 4, lambda r: r.duplicated),
    ("missed", 7, lambda r: r.missed),
    ("doubled", 8, lambda r: r.doubled),
    ("retried", 8, lambda r: r.unavailable),
    ("slowest", 8, lambda r: f"{r.slowest:.2f}"),
    ("write s", 8, lambda r: seconds(r.write_recovery)),
    ("ready s", 8, lambda r: seconds(r.ready_recovery)),
    ("probe max", 10, lambda r: f"{r.max_probe:.3f}"),
    ("INTERNAL", 9, lambda r: r.internal),
)


def table(rows: list[Row], t: Row) -> str:
    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, (_, w, _)) in enumerate(zip(cells, COLUMNS, strict=True))
        )

    header = line([name for name, _, _ in COLUMNS])
    body = [line([str(get(r)) for _, _, get in COLUMNS]) for r in [*rows, t]]
    rule = "-" * len(header)
    return "\n".join([header, rule, *body[:-1], rule, body[-1]])


def timelines(rows: list[Row], timeline: Timeline) -> str:
    out = ["readyz (seconds from the phase's start to an answer: status):"]
    for row, phase in zip(rows, timeline.phases, strict=True):
        steps = " -> ".join(f"+{t:.2f} {status}" for t, status in row.transitions)
        note = f" [{phase.note}]" if phase.note else ""
        out.append(f"  {row.name}{note}: {steps or '(no probe)'}")
    return "\n".join(out)


def goals(t: Row, record: Record) -> list[tuple[str, bool, str]]:
    return [
        ("0 lost (acknowledged, absent or elsewhere)", t.lost + t.misplaced == 0,
         f"{t.lost} absent, {t.misplaced} at another position"),
        ("0 duplicated (one key, one sanction)", t.duplicated == 0, str(t.duplicated)),
        ("every write acknowledged in time", t.abandoned == 0 and not record.rejected,
         f"{t.abandoned} abandoned, refused: {dict(record.rejected) or 'none'}"),
        ("0 subscriber events missed", t.missed == 0, str(t.missed)),
        ("0 subscriber events doubled", t.doubled == 0, str(t.doubled)),
        (f"first write within {RECOVERY_GOAL:.0f} s of the return",
         (t.write_recovery or 0) <= RECOVERY_GOAL, f"worst {seconds(t.write_recovery)} s"),
        (f"readyz 200 within {RECOVERY_GOAL:.0f} s of the return",
         (t.ready_recovery or 0) <= RECOVERY_GOAL, f"worst {seconds(t.ready_recovery)} s"),
        (f"readyz probes under {PROBE_GOAL:.0f} s", t.max_probe < PROBE_GOAL,
         f"max {t.max_probe:.3f} s"),
        ("readyz never 200 while down", t.ready_while_down == 0, str(t.ready_while_down)),
        ("no INTERNAL answer", t.internal == 0, str(t.internal)),
    ]  # fmt: skip


LEGEND = """\
lost: acknowledged but absent from the log (or at another position); dup: one key logged
more than once; missed / doubled: logged sanctions a subscriber did not get / got twice
(both subscribers summed); retried: answers retried with the same key (STORAGE_UNAVAILABLE,
timeouts, refused connections); slowest: the longest one answer took; write s / ready s:
from the database's return (the server's, after SIGKILL) to the first acknowledged write /
the first readyz 200; probe max: the slowest readyz probe."""


def report(clients: Clients, logged: dict[int, str], timeline: Timeline, errors: list[str]) -> bool:
    rows, t = analyse(clients, logged, timeline)
    print()
    print(table(rows, t))
    print()
    print(LEGEND)
    print()
    print(timelines(rows, timeline))
    print()
    answers = Counter[str]()
    for (_, answer), n in clients.record.answers.items():
        answers[answer] += n
    replayed = sum(a.replayed for a in clients.record.acks.values())
    print(f"answers: {dict(answers.most_common())}; acknowledged as replays: {replayed}")
    for s in clients.subscribers:
        print(f"{s.name}: {len(s.received)} events, {s.sessions} subscriptions,"
              f" ended by {dict(s.ends.most_common()) or 'nothing'}")  # fmt: skip
    print(f"server log: {len(errors)} ERROR lines or tracebacks")
    for line in list(dict.fromkeys(errors))[:5]:
        print(f"  {line[:160]}")
    print()
    results = goals(t, clients.record)
    for name, ok, detail in results:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}")
    return all(ok for _, ok, _ in results)


# ----- main -----------------------------------------------------------------------------------


@contextmanager
def terminated_on_sigterm() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the server and the cluster are cleaned up."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def make_clients(
    url: str, token: str, accounts: list[UUID], after: int, subscribers: int, timeline: Timeline
) -> Clients:
    record = Record(timeline)
    stop_writers, stop_readers = threading.Event(), threading.Event()
    return Clients(
        record=record,
        writers=[Writer(n, url, token, a, record, stop_writers) for n, a in enumerate(accounts)],
        subscribers=[
            Subscriber(n, url, token, after, record, stop_readers) for n in range(subscribers)
        ],
        poller=ReadyPoller(url, stop_readers),
        stop_writers=stop_writers,
        stop_readers=stop_readers,
    )


def bench(args: argparse.Namespace, directory: Path) -> bool:
    key = secrets.token_bytes(32)
    with Cluster() as cluster:
        log(f"cluster on {cluster.url} in {cluster.directory}")
        accounts, after = prepare(cluster, key, args.writers)
        env = ledger_env(cluster, directory / "data", key)
        token = ledger_cli(env, "token", "create", "--role", "regulator", "--name", "faults")
        server = LedgerServer(env, directory)
        try:
            server.start()
            internal_at_start = wait_ready(server.url)
            log(f"ledger serve on {server.url}; {args.writers} writers, {args.subscribers}"
                " subscribers, a readyz poller")  # fmt: skip
            timeline = Timeline()
            clients = make_clients(
                server.url, token.split()[-1], accounts, after, args.subscribers, timeline
            )
            if internal_at_start:
                clients.record.answers[0, "INTERNAL (readyz at startup)"] = internal_at_start
            clients.start()
            run_faults(Target(cluster, server), timeline, args.load, args.stopped)
            clients.stop_writing()
            logged = logged_sanctions(cluster, key, after)
            log(f"writers stopped; {len(logged)} sanctions logged; waiting for the subscribers")
            catch_up(clients.subscribers, set(logged))
            clients.stop_reading()
            return report(clients, logged, timeline, server.errors())
        finally:
            server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.faults",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--load", type=float, default=4.0, help="seconds of load per phase")
    parser.add_argument(
        "--stopped", type=float, default=3.0, help="seconds the database stays stopped (3)"
    )
    parser.add_argument("--writers", type=int, default=2, help="writer threads (default 2)")
    parser.add_argument("--subscribers", type=int, default=2, help="subscribers (default 2)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the server's log and the cluster's directory"
    )
    args = parser.parse_args(argv)
    if min(args.load, args.stopped, args.writers, args.subscribers) <= 0:
        parser.error("--load, --stopped, --writers and --subscribers must be positive")
    started = now()
    directory = Path(tempfile.mkdtemp(prefix="ledger-faults-"))
    if args.keep:
        os.environ["LEDGER_KEEP_CLUSTER"] = "1"  # read by Cluster on exit
    try:
        with terminated_on_sigterm():
            ok = bench(args, directory)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        if args.keep:
            log(f"kept {directory}/serve.log")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    print(f"\n{'all goals met' if ok else 'GOALS MISSED'} in {now() - started:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
