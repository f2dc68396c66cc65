"""`ledger import`: commands as JSON lines in large transactions. Killed halfway and run
again, it ends where one uninterrupted run ends; a bad line is named, with its code."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from ledger import Database, Ledger
from ledger import commands as c
from ledger.demo import Demo
from ledger.importer import to_line
from ledger.ruleset import load_ruleset
from tests.conftest import TEST_KEY
from tests.world import REGULATOR

ROOT = Path(__file__).resolve().parent.parent
ACCOUNTS = 2950  # 100k lines and more, as issue 13 asks


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("import") / "demo.jsonl"
    commands = [cmd for batch in Demo(load_ruleset(), ACCOUNTS).batches() for cmd in batch]
    path.write_text("".join(to_line(cmd) + "\n" for cmd in commands))
    return path


def ledger_cli(database: Database, schema: str, data: Path, *args: str,
               wait: bool = True) -> subprocess.Popen[str]:  # fmt: skip
    env = {**os.environ, "LEDGER_DATABASE_URL": database.conninfo, "LEDGER_SCHEMA": schema,
           "LEDGER_CIPHER_KEY": base64.b64encode(TEST_KEY).decode(),
           "LEDGER_DATA_DIR": str(data)}  # fmt: skip
    pipe = subprocess.PIPE
    process = subprocess.Popen([sys.executable, "-m", "api.cli", *args], cwd=ROOT, env=env,
                               stdout=pipe, stderr=pipe, text=True)  # fmt: skip
    if wait:
        process.wait(300)
    return process


def recorded(database: Database, schema: str) -> set[tuple[object, ...]]:
    with database.connect(schema) as conn:
        rows = conn.execute("SELECT originator_id, originator_version, topic FROM ledger_events")
        return set(rows.fetchall())


def head(database: Database, schema: str) -> int:
    with database.connect(schema) as conn:
        try:
            row = conn.execute("SELECT coalesce(max(notification_id), 0) FROM ledger_events")
        except psycopg.errors.UndefinedTable:
            return 0
        return int(row.fetchone()[0])  # type: ignore[index]


@pytest.mark.timeout(600)
def test_an_import_killed_halfway_and_run_again_ends_as_one_uninterrupted_run(
    database: Database, schema: str, tmp_path: Path, demo_file: Path
) -> None:
    lines = sum(1 for _ in demo_file.open())
    assert lines >= 100_000
    whole = f"t_{uuid.uuid4().hex[:12]}"
    database.create_schema(whole)
    try:
        once = ledger_cli(database, whole, tmp_path, "import", str(demo_file), "--batch", "200")
        assert once.returncode == 0, once.stderr.read()  # type: ignore[union-attr]
        expected = recorded(database, whole)
        assert len(expected) > lines  # commands write one event or more

        killed = ledger_cli(database, schema, tmp_path, "import", str(demo_file), "--batch",
                            "200", wait=False)  # fmt: skip
        deadline = time.monotonic() + 240
        while head(database, schema) < len(expected) // 2:
            assert killed.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        killed.send_signal(signal.SIGKILL)
        killed.wait(30)
        assert 0 < head(database, schema) < len(expected)

        again = ledger_cli(database, schema, tmp_path, "import", str(demo_file))
        out = again.stdout.read()  # type: ignore[union-attr]
        assert again.returncode == 0, again.stderr.read()  # type: ignore[union-attr]
        assert "already recorded 0" not in out
        assert recorded(database, schema) == expected
        for args in (("rebuild",), ("rebuild", "--verify"), ("seal",), ("verify",)):
            done = ledger_cli(database, schema, tmp_path, *args)
            assert done.returncode == 0, (args, done.stderr.read())  # type: ignore[union-attr]
    finally:
        database.drop_schema(whole)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def provider_line(key: str, code: str) -> str:
    return to_line(c.RegisterProvider(actor=REGULATOR, idempotency_key=key, code=code,
                                      name=code, licence_ref="L"))  # fmt: skip


@pytest.mark.parametrize(
    ("bad", "status", "named"),
    [
        ('{"command": "RegisterProvider", ', 2, "not JSON"),
        ('{"command": "Nope", "idempotency_key": "k", "actor": {}, "args": {}}', 2,
         "unknown command 'Nope'"),
        ('{"command": "RegisterProvider", "idempotency_key": "k", "actor": {"id": "r",'
         ' "role": "regulator"}, "args": {"code": "x"}}', 2, "missing"),
        ("[1, 2]", 2, "JSON object"),
    ],
)  # fmt: skip
def test_a_malformed_line_is_named_and_stops_the_import(
    database: Database, schema: str, tmp_path: Path, bad: str, status: int, named: str
) -> None:
    path = write_lines(tmp_path / "bad.jsonl", [provider_line("a", "a"), bad,
                                                 provider_line("b", "b")])  # fmt: skip
    done = ledger_cli(database, schema, tmp_path, "import", str(path))
    err = done.stderr.read()  # type: ignore[union-attr]
    assert done.returncode == status, err
    assert "bad.jsonl:2: MALFORMED:" in err and named in err and "Traceback" not in err
    assert head(database, schema) == 1  # the line before was recorded, none after


def test_a_refused_line_stops_or_is_skipped(
    database: Database, schema: str, tmp_path: Path, make_ledger  # type: ignore[no-untyped-def]
) -> None:
    lines = [provider_line("a", "a"), provider_line("b", "a"), provider_line("c", "c")]
    path = write_lines(tmp_path / "dup.jsonl", lines)  # line 2 registers code "a" again
    stopped = ledger_cli(database, schema, tmp_path, "import", str(path))
    err = stopped.stderr.read()  # type: ignore[union-attr]
    assert stopped.returncode == 1 and "dup.jsonl:2: ALREADY_EXISTS" in err, err
    skipped = ledger_cli(database, schema, tmp_path, "import", str(path), "--on-error", "skip")
    out = skipped.stdout.read()  # type: ignore[union-attr]
    assert skipped.returncode == 1 and "recorded 1, already recorded 1" in out, out
    ledger: Ledger = make_ledger()
    assert [e.type for e in ledger.read_log()] == ["Provider.Registered"] * 2
