"""The `ledger` command line, run as a process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from ledger import Database, Ledger
from tests.world import World

ROOT = Path(__file__).resolve().parent.parent


def ledger_cli(
    *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
    )


def refused(result: subprocess.CompletedProcess[str], *named: str) -> str:
    """Assert a failure left one line on stderr that names each of `named`; return it."""
    assert result.returncode not in (0, None), result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ledger: "), result.stderr
    for name in named:
        assert name in lines[0], (name, lines[0])
    return lines[0]


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


NO_ID = "00000000-0000-0000-0000-000000000001"
A_KEY = "6bcf5482c25247d290c1ec11c0770715d8a32130c7f2c19c37e4b02e0ed2bf87"


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("events", "--after", "-3"), "--after"),
        (("events", "--type", "Account.Nope"), "--type: no event type 'Account.Nope'"),
        (("events", "--originator", "zz"), "--originator: 'zz' is not a UUID"),
        (("account", "not-an-id"), "'not-an-id' is not a UUID"),
        (("account", NO_ID), f"no such account: {NO_ID}"),
        (("account", NO_ID, "--as-of", "yesterday"), "--as-of"),
        (("account", NO_ID, "--as-of", "2024-01-01"), "--as-of: '2024-01-01' needs a time zone"),
        (("demo", "--accounts", "0"), "--accounts"),
        (("nonsense",), "nonsense"),
        (("serve", "--port", "70000"), "--port: expected a port from 1 to 65535"),
        (("serve", "--port", "0"), "--port"),
        (
            ("token", "create", "--role", "provider", "--provider", "not-a-uuid"),
            "--provider: 'not-a-uuid' is not a UUID",
        ),
        (("token", "create", "--role", "provider"), "--provider is required"),
        (("token", "revoke", "tok_nope"), "no such live token"),
        (("verify", "--public-key", "abc"), "--public-key: 'abc' is not an Ed25519 public key"),
        (("verify",), "nothing is sealed yet"),
        (("status",), "no projections yet"),
        (("rebuild", "nope"), "unknown projections ['nope']"),
        (("verify-proof", "/no/such/proof.json", "--public-key", A_KEY), "/no/such/proof.json"),
    ],
)
def test_bad_arguments_give_one_line_and_non_zero(
    env: dict[str, str], args: tuple[str, ...], named: str
) -> None:
    # A short timeout: a `serve` that is not refused would serve until killed.
    refused(ledger_cli(*args, env=env, timeout=60), named)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LEDGER_SCHEMA", 'we"ird'),
        ("LEDGER_SCHEMA", "Upper"),
        ("LEDGER_SCHEMA", "pg_catalog"),
        ("LEDGER_POOL_SIZE", "abc"),
        ("LEDGER_POOL_SIZE", "0"),
        ("LEDGER_PROJECTION_PAGE", "0"),
        ("LEDGER_PROJECTION_PAGE", "-5"),
        ("LEDGER_CIPHER_KEY", "not base64"),
        ("LEDGER_DATABASE_URL", "mysql://localhost/x"),
    ],
)
@pytest.mark.parametrize("command", ["summary", "rebuild"])
def test_bad_settings_are_refused_by_name(
    env: dict[str, str], command: str, variable: str, value: str
) -> None:
    refused(ledger_cli(command, env={**env, variable: value}), variable)


def test_zero_projection_page_leaves_the_projections_as_they_were(env: dict[str, str]) -> None:
    # It used to report a rebuild and leave every projection empty.
    result = ledger_cli("rebuild", env={**env, "LEDGER_PROJECTION_PAGE": "0"})
    assert "rebuilt" not in result.stdout
    refused(result, "LEDGER_PROJECTION_PAGE")


def test_a_data_dir_that_is_a_file_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("x")
    for directory in (a_file, a_file / "below"):
        result = ledger_cli("summary", env={**env, "LEDGER_DATA_DIR": str(directory)})
        refused(result, "LEDGER_DATA_DIR", str(a_file))


def test_a_corrupt_cipher_key_file_is_named(env: dict[str, str], tmp_path: Path) -> None:
    for text in ("garbage!", "YWJj"):  # not base64; base64 of 3 bytes
        (tmp_path / "cipher.key").write_text(text)
        refused(ledger_cli("summary", env=env), str(tmp_path / "cipher.key"))


def test_an_unreachable_database_is_one_line(env: dict[str, str]) -> None:
    result = ledger_cli(
        "summary", env={**env, "LEDGER_DATABASE_URL": "postgresql://u@127.0.0.1:1/x"}
    )
    line = refused(result, "LEDGER_DATABASE_URL")
    assert line.startswith("ledger: cannot reach the database at 127.0.0.1:1"), line
    assert line.endswith("connection refused"), line


@pytest.fixture
def world(ledger: Ledger) -> World:
    """Two providers and their events, in the test's schema (where the CLI looks)."""
    return World(ledger)


def test_a_provider_token_needs_a_real_provider(env: dict[str, str], world: World) -> None:
    account = world.account(verified=False, signed=False, approved=False)
    for not_a_provider in (uuid4(), account):
        result = ledger_cli(
            "token", "create", "--role", "provider", "--provider", str(not_a_provider), env=env
        )
        assert "lt_" not in result.stdout
        line = refused(result, f"--provider {not_a_provider}: no such provider")
        assert line == f"ledger: --provider {not_a_provider}: no such provider"

    made = ledger_cli(
        "token", "create", "--role", "provider", "--provider", str(world.provider), env=env
    )
    assert made.returncode == 0, made.stderr
    assert "lt_" in made.stdout


@pytest.mark.parametrize("args", [("events",), ("schema",)])
def test_a_closed_pipe_ends_quietly(
    env: dict[str, str], world: World, args: tuple[str, ...]
) -> None:
    # As `ledger events | head -1`, with the reader gone before the first line is written.
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert process.stdout is not None
    process.stdout.close()
    _, stderr = process.communicate(timeout=300)
    assert stderr == ""
    assert process.returncode in (0, 141)


def test_signed_head_files_are_checked_and_named(env: dict[str, str], tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"tree_size": ')
    refused(ledger_cli("verify", "--from-head", str(corrupt), env=env), "--from-head", str(corrupt))

    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    line = refused(ledger_cli("verify", "--from-head", str(empty), env=env), str(empty))
    assert "not a signed tree head: it lacks tree_size, root_hash, timestamp, signature" in line
    assert "bad signature" not in line

    missing = tmp_path / "missing.json"
    refused(ledger_cli("verify", "--from-head", str(missing), env=env), str(missing))


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_serve_refuses_a_busy_port_and_a_bad_host(env: dict[str, str], busy_port: int) -> None:
    result = ledger_cli("serve", "--port", str(busy_port), env=env, timeout=60)
    assert refused(result) == f"ledger: --port {busy_port} on 127.0.0.1 is in use"
    result = ledger_cli("serve", "--host", "999.1.1.1", env=env, timeout=60)
    line = refused(result, "--host 999.1.1.1")
    assert "cannot listen there" in line


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


def test_init_creates_every_table_and_runs_again(
    env: dict[str, str], database: Database, schema: str
) -> None:
    for _ in range(2):
        done = ledger_cli("init", env=env)
        assert done.returncode == 0, done.stderr
        assert "ready: schema" in done.stdout
    with database.connect(schema) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", [schema]
        )}  # fmt: skip
    assert {"ledger_events", "ledger_identity_keys", "projection_positions", "accounts",
            "merkle_leaves", "api_tokens", "disclosures"} <= tables  # fmt: skip
