"""The `ledger` command line, run as a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ledger import Database

ROOT = Path(__file__).resolve().parent.parent


def ledger_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )


@pytest.fixture
def env(database: Database, schema: str, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "LEDGER_DATABASE_URL": database.conninfo,
        "LEDGER_SCHEMA": schema,
        "LEDGER_DATA_DIR": str(tmp_path),
        "PYTHONPATH": str(ROOT),
    }


def test_demo_events_account_summary(env: dict[str, str]) -> None:
    demo = ledger_cli("demo", "--accounts", "60", env=env)
    assert demo.returncode == 0, demo.stderr
    assert "demo:" in demo.stdout
    again = ledger_cli("demo", "--accounts", "60", env=env)
    assert "already loaded" in again.stdout

    summary = ledger_cli("summary", env=env)
    assert "Account.Registered" in summary.stdout and "60" in summary.stdout

    events = ledger_cli("events", "--limit", "20", env=env)
    lines = [json.loads(line) for line in events.stdout.splitlines()]
    assert len(lines) == 20
    assert [e["position"] for e in lines] == sorted(e["position"] for e in lines)
    assert {"position", "type", "originator_id", "timestamp", "actor", "payload"} <= set(lines[0])

    registered = json.loads(
        ledger_cli("events", "--type", "Account.Registered", "--limit", "1", env=env).stdout
    )
    account = registered["originator_id"]
    now = json.loads(ledger_cli("account", account, env=env).stdout)
    assert now["id"] == account and now["identity"] in (None, "sealed")
    then = json.loads(
        ledger_cli("account", account, "--as-of", str(registered["position"]), env=env).stdout
    )
    assert then["version"] == 1 and then["agreement"] is None
    at = json.loads(
        ledger_cli("account", account, "--as-of", registered["timestamp"], env=env).stdout
    )
    assert at == {**then, "as_of": registered["timestamp"]}


@pytest.mark.parametrize(
    "args",
    [
        ("events", "--after", "-3"),
        ("events", "--type", "Account.Nope"),
        ("account", "not-an-id"),
        ("account", "00000000-0000-0000-0000-000000000001"),
        ("account", "00000000-0000-0000-0000-000000000001", "--as-of", "yesterday"),
        ("demo", "--accounts", "0"),
        ("nonsense",),
    ],
)
def test_bad_arguments_give_one_line_and_non_zero(
    env: dict[str, str], args: tuple[str, ...]
) -> None:
    result = ledger_cli(*args, env=env)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("ledger: ")


def test_malformed_ruleset_is_refused_at_start(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[ruleset]\nid = 'x'\n")
    result = ledger_cli("summary", env={**env, "LEDGER_RULESET": str(bad)})
    assert result.returncode != 0
    assert str(bad) in result.stderr and "key 'rules': missing" in result.stderr
    assert "Traceback" not in result.stderr


def test_embedded_database_starts_and_stops(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("LEDGER_DATABASE_URL", "LEDGER_SCHEMA")}
    env.update(LEDGER_DATA_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
    result = ledger_cli("summary", env=env)
    assert result.returncode == 0, result.stderr
    assert "empty" in result.stdout
    assert (tmp_path / "pgdata" / "PG_VERSION").exists()
    assert (tmp_path / "cipher.key").exists()
    # The server was stopped on exit.
    assert not (tmp_path / "pgdata" / "postmaster.pid").exists()
