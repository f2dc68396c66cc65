"""Test helpers for webhooks: a real HTTP receiver on loopback whose answers a test
chooses, and the worker processes (`ledger deliver`, the projector) a test starts,
kills and restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() when the request arrived
    status: int
    path: str = "/"


# What the receiver answers: a status (and headers), or None to drop the connection.
Answer = Callable[["Received"], tuple[int, dict[str, str]] | None]


@dataclass
class Receiver:
    """A ThreadingHTTPServer recording every request; `answer` decides each reply."""

    answer: Answer = field(default=lambda r: (200, {}))
    hang: float = 0.0  # seconds to wait before answering (a hanging receiver)
    received: list[Received] = field(default_factory=list)
    port: int = 0  # 0: a free one
    # ("path webhook-id", arrived, answered) of every request, answered or not
    spans: list[tuple[str, float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                if len(body) < length:  # the sender gave up mid-body
                    self.close_connection = True
                    return
                got = Received({k.lower(): v for k, v in self.headers.items()}, body,
                               time.time(), 0, self.path)  # fmt: skip
                if receiver.hang:
                    time.sleep(receiver.hang)
                reply = receiver.answer(got)
                webhook_id = self.path + " " + got.headers.get("webhook-id", "")
                receiver.spans.append((webhook_id, got.at, time.time()))
                if reply is None:
                    self.close_connection = True
                    return
                got.status = reply[0]
                receiver.received.append(got)
                self.send_response(reply[0])
                for k, v in reply[1].items():
                    self.send_header(k, v)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def acked(self) -> list[Received]:
        return [r for r in self.received if 200 <= r.status < 300]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Workers:
    """`ledger deliver` and `ledger project --only projector` processes on the test's schema."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = {**env, "LEDGER_WEBHOOK_ALLOW_LOOPBACK": "1"}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, Any] = {}

    def start(self, command: str, **env: str) -> subprocess.Popen[bytes]:
        args = ["deliver"] if command == "deliver" else ["project", "--only", "projector"]
        # A file, not a pipe: a pipe nobody reads fills up and stops the process.
        log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop)
        proc = subprocess.Popen(
            [sys.executable, "-m", "api.cli", *args],
            env={**self.env, **env},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        self.logs[proc.pid] = log
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log = self.logs.pop(proc.pid, None)
            if log is not None:  # shown by pytest when the test failed
                log.seek(0)
                print(f"--- {proc.args[3:]} (exit {proc.returncode}):")  # type: ignore[index]
                print(log.read().decode(errors="replace")[-5000:])
                log.close()


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def worker_env(cold_env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in cold_env.items() if k != "PYTEST_CURRENT_TEST"} | {
        "PYTHONPATH": os.getcwd()
    }


def endpoint_events(ledger: Any, endpoint_id: str, kind: str) -> list[Any]:
    """The endpoint's events of one kind (e.g. "Paused"), in log order."""
    return [
        e
        for e in ledger.read_log(types=[f"Provider.Webhook{kind}"])
        if e.payload["endpoint_id"] == endpoint_id
    ]


def attempts(database: Any, schema: str, endpoint_id: str) -> list[dict[str, Any]]:
    """The endpoint's attempt log (empty until the worker has made its tables)."""
    import psycopg
    from psycopg.rows import dict_row

    with database.connect(schema, row_factory=dict_row) as conn:
        try:
            return conn.execute(  # type: ignore[no-any-return]
                "SELECT * FROM webhook_attempts WHERE endpoint_id = %s ORDER BY id", [endpoint_id]
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            return []
