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
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

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
