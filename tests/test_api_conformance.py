"""The API as third-party clients meet it: the GraphQL-over-HTTP audit suite of the npm
package graphql-http, run against a live server. Needs Node.js and npm (the packages are
installed from tests/conformance/package-lock.json on first use); fails loudly without."""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.api_server import ApiServer

HERE = Path(__file__).resolve().parent / "conformance"


def node_tools() -> Path:
    """tests/conformance with its node_modules installed."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("Node.js and npm are needed for the third-party client tests")
    # `make test` installs them before the suite starts; a lone `pytest` run does it here,
    # one worker at a time (pytest-xdist runs several).
    with open(HERE / "package-lock.json") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = HERE / "node_modules" / ".package-lock.json"  # npm ci writes it last
        if not stamp.exists() or stamp.stat().st_mtime < Path(lock.name).stat().st_mtime:
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True,
                           capture_output=True, timeout=300)  # fmt: skip
    return HERE


def run_node(script: str, *args: str) -> list[dict[str, object]]:
    done = subprocess.run(["node", script, *args], cwd=node_tools(), capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_the_graphql_over_http_audit_passes_every_must_and_should(server: ApiServer) -> None:
    results = run_node("audit.mjs", server.url, server.token("regulator"))
    assert len(results) > 20
    failed = [r for r in results if r["status"] not in ("ok", "notice")]
    assert failed == [], json.dumps(failed, indent=1)
    levels = {level: sum(1 for r in results if str(r["name"]).startswith(level) and
                         r["status"] == "ok") for level in ("MUST", "SHOULD", "MAY")}  # fmt: skip
    print(f"graphql-http audits passed: {levels}; notices: "
          f"{[r['name'] for r in results if r['status'] == 'notice']}")
