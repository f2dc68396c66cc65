"""A real nats-server with JetStream for a test: its own free port, its store in the
test's temporary folder, stopped (or restarted, keeping its store) by the test. Never the
machine's own server on 4222."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import pytest

from tests.api_server import free_port

BINARY = shutil.which("nats-server") or "/usr/sbin/nats-server"


class NatsServer:
    def __init__(self, directory: Path, extra_config: str = "", max_payload: str = "8MB") -> None:
        self.directory = directory
        self.port = free_port()
        self.config = directory / "nats.conf"
        self.log = directory / "nats.log"
        (directory / "store").mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f"listen: 127.0.0.1:{self.port}\nmax_payload: {max_payload}\n"
            f'jetstream {{ store_dir: "{directory / "store"}" }}\n{extra_config}\n'
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        if not Path(BINARY).exists():
            pytest.fail("nats-server is not installed (apt-get install nats-server)")
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [BINARY, "-c", str(self.config)], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 20
        while not self._listening():
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"nats-server did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)
        return self

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self, kill: bool = False) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self.process.wait(30)
        self.process = None

    def restart(self, kill: bool = False) -> None:
        self.stop(kill)
        self.start()

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
