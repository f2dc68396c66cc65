"""A cold start: run a piece of code in a new Python process against the test's
database and schema, so whatever lives only in one process's memory (topic registries,
caches, pools, LISTEN connections) cannot hide a defect.

The code runs with `ledger` (a `Ledger` opened on the schema) and `world_ids` (the JSON
the test passes) in scope; what it assigns to `result` comes back, JSON-decoded.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledger import Database

PRELUDE = """
import json, sys
from ledger import Database, Ledger
from ledger import commands as c
from ledger.actors import Actor, Role
database = Database().start()
ledger = Ledger.open(database)
args = json.loads(sys.argv[1])
result = None
"""


class ColdProcess:
    def __init__(self, database: Database, schema: str, key: bytes, data_dir: Path) -> None:
        self.env = {
            **os.environ,
            "LEDGER_DATABASE_URL": database.conninfo,
            "LEDGER_SCHEMA": schema,
            "LEDGER_CIPHER_KEY": base64.b64encode(key).decode(),
            "LEDGER_DATA_DIR": str(data_dir),
        }
        self.served: subprocess.Popen[str] | None = None

    def run(self, code: str, **args: Any) -> Any:
        """Run `code` in a fresh interpreter; return its `result`. A failure fails the
        test with the process's output."""
        script = PRELUDE + textwrap.dedent(code) + "\nprint('\\0RESULT' + json.dumps(result))\n"
        done = subprocess.run(
            [sys.executable, "-c", script, json.dumps(args, default=str)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0 or "\0RESULT" not in done.stdout:
            pytest.fail(f"cold process failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return json.loads(done.stdout.rsplit("\0RESULT", 1)[1])

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`ledger ARGS` in a new process."""
        return subprocess.run(
            [sys.executable, "-m", "api.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    @contextmanager
    def serve(self, port: int, *options: str) -> Iterator[str]:
        """`ledger serve` (with its projector and sealer) in a new process; yields the
        GraphQL URL once /readyz says ready, and checks that SIGTERM stops it cleanly.
        The process is `self.served` meanwhile."""
        # One API process unless asked: the suite's workers share one server's connections.
        workers = () if "--workers" in options else ("--workers", "1")
        process = self.served = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--port", str(port), *workers, *options],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while not _ready(base):
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    pytest.fail(f"ledger serve did not become ready:\n{process.communicate()[1]}")
                time.sleep(0.1)
            yield f"{base}/graphql"
        finally:
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=30)
        # uvicorn shuts down gracefully, then re-raises SIGTERM as its exit status.
        assert process.returncode in (0, -signal.SIGTERM), (process.returncode, err)
        assert "Application shutdown complete" in err, err
        assert "Traceback" not in err and "shutdown failed" not in err, err


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
