"""The projector as a process: killed at random during catch-up, its connections
terminated while it follows, and concurrent writers in threads and processes. After
each, every read table equals a fresh rebuild and every event was applied once."""

from __future__ import annotations

import base64
import copy
import itertools
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import DictRow

from ledger import Database, Ledger
from ledger.demo import run_demo
from projections.positions import read_positions, wait_for
from projections.rebuild import verify
from projections.registry import ALL
from projections.runner import Projector
from tests.conftest import TEST_KEY
from tests.world import World

ROOT = Path(__file__).resolve().parent.parent


def projector_process(database: Database, schema: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "LEDGER_DATABASE_URL": database.conninfo,
        "LEDGER_SCHEMA": schema,
        "LEDGER_DATA_DIR": str(tmp_path),
        "LEDGER_CIPHER_KEY": base64.b64encode(TEST_KEY).decode(),
        "LEDGER_PROJECTION_PAGE": "50",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", "project"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def lowest_position(database: Database, schema: str) -> int:
    with database.connect(autocommit=True) as conn:
        try:
            positions = read_positions(conn, schema)
        except psycopg.errors.UndefinedTable:
            return 0
    return min(positions.values(), default=0)


def assert_identical_to_rebuild(ledger: Ledger, database: Database, schema: str) -> None:
    differences = verify(ledger, database, ALL, schema)
    assert [(d.table, d.count, d.only_live[:2], d.only_rebuilt[:2]) for d in differences] == []


def assert_every_event_once(ledger: Ledger, reader: psycopg.Connection[DictRow]) -> None:
    log = [e for e in ledger.read_log() if not e.type.startswith("Provider.")]
    history = reader.execute("SELECT position FROM history ORDER BY position").fetchall()
    assert [r["position"] for r in history] == [e.position for e in log]
    published = sum(1 for e in log if e.type == "Post.Published")
    assert reader.execute("SELECT count(*) AS n FROM posts").fetchone() == {"n": published}


@pytest.fixture
def following(projector: Projector) -> Iterator[Callable[[], None]]:
    """Run the projector's follow loop in a thread; the fixture stops it."""
    stop = threading.Event()
    ready = threading.Event()
    thread = threading.Thread(target=projector.follow, args=(stop, ready.set), daemon=True)
    thread.start()
    assert ready.wait(30), "the projector did not catch up"
    yield lambda: None
    stop.set()
    thread.join(30)
    assert not thread.is_alive(), "the projector did not stop"


@pytest.mark.timeout(240)
def test_killed_during_catch_up_resumes_to_an_identical_state(
    ledger: Ledger, database: Database, schema: str, tmp_path: Path
) -> None:
    run_demo(ledger.submit, ledger.ruleset, 120)
    head = ledger.head()
    rng = random.Random(2014)
    kills = 0
    while kills < 4:
        before = lowest_position(database, schema)
        if before >= head:
            break
        process = projector_process(database, schema, tmp_path)
        deadline = time.monotonic() + 30
        target = before + rng.randint(50, 600)
        while lowest_position(database, schema) < target and process.poll() is None:
            assert time.monotonic() < deadline, "no progress before the kill"
            time.sleep(rng.uniform(0.005, 0.05))
        assert process.poll() is None, process.communicate()[1].decode()
        process.kill()  # SIGKILL: no chance to tidy up
        process.wait(10)
        kills += 1
    assert kills >= 3, "the data set was too small to kill the projector mid-way"
    process = projector_process(database, schema, tmp_path)
    try:
        with database.connect(autocommit=True) as conn:
            wait_for(conn, schema, head, timeout=60)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
    assert process.returncode == 0, err.decode()
    assert b"Traceback" not in err
    assert_identical_to_rebuild(ledger, database, schema)


@pytest.mark.timeout(120)
def test_terminated_connections_are_recovered_without_missing_an_event(
    ledger: Ledger,
    database: Database,
    schema: str,
    following: Callable[[], None],
    reader: psycopg.Connection[DictRow],
) -> None:
    world = World(ledger)
    terminated = 0
    for _ in range(5):
        account = world.account()
        for _ in range(5):
            world.post(account)
        wait_for(reader, schema, ledger.head(), timeout=30)  # type: ignore[arg-type]
        killed = reader.execute(
            "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity"
            " WHERE application_name LIKE 'ledger-projector%%' AND pid <> pg_backend_pid()"
            " AND datname = current_database()"
        ).fetchone()
        terminated += killed["n"] if killed else 0
        world.post(account)
    assert terminated >= 5
    wait_for(reader, schema, ledger.head(), timeout=30)  # type: ignore[arg-type]
    assert_every_event_once(ledger, reader)
    assert_identical_to_rebuild(ledger, database, schema)


WRITER_SCRIPT = """
import sys
from ledger import Database, Ledger
from ledger.demo import run_demo
with Database() as database:
    ledger = Ledger.open(database)
    run_demo(ledger.submit, ledger.ruleset, int(sys.argv[1]))
    ledger.close()
"""


@pytest.mark.timeout(180)
def test_concurrent_writers_in_threads_and_a_process(
    ledger: Ledger,
    make_ledger: Callable[[], Ledger],
    database: Database,
    schema: str,
    tmp_path: Path,
    following: Callable[[], None],
    reader: psycopg.Connection[DictRow],
) -> None:
    world = World(ledger)
    env = {
        **os.environ,
        "LEDGER_DATABASE_URL": database.conninfo,
        "LEDGER_SCHEMA": schema,
        "LEDGER_DATA_DIR": str(tmp_path),
        "LEDGER_CIPHER_KEY": base64.b64encode(TEST_KEY).decode(),
    }
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER_SCRIPT, "40"], cwd=ROOT, env=env, stderr=subprocess.PIPE
    )
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            mine = copy.copy(world)
            mine.ledger = make_ledger()
            mine._keys = itertools.count(100_000 * (n + 1))
            for _ in range(6):
                account = mine.account()
                for _ in range(8):
                    mine.post(account)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    _, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err.decode()
    assert errors == []
    wait_for(reader, schema, ledger.head(), timeout=30)  # type: ignore[arg-type]
    assert_every_event_once(ledger, reader)
    assert_identical_to_rebuild(ledger, database, schema)


def test_two_projectors_on_one_schema_apply_each_event_once(
    ledger: Ledger, database: Database, schema: str, reader: psycopg.Connection[DictRow]
) -> None:
    run_demo(ledger.submit, ledger.ruleset, 30)
    first, second = (Projector(ledger, database, schema, page_size=20) for _ in range(2))
    first.setup()
    errors: list[BaseException] = []

    def run(projector: Projector) -> None:
        try:
            projector.catch_up()
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(p,)) for p in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    first.close()
    second.close()
    assert errors == []
    assert_every_event_once(ledger, reader)
    assert_identical_to_rebuild(ledger, database, schema)


def test_live_events_are_projected_promptly(
    ledger: Ledger,
    schema: str,
    following: Callable[[], None],
    reader: psycopg.Connection[DictRow],
) -> None:
    world = World(ledger)
    account = world.account()
    wait_for(reader, schema, ledger.head(), timeout=5)  # type: ignore[arg-type]
    world.post(account)
    started = time.monotonic()
    wait_for(reader, schema, ledger.head(), timeout=5)  # type: ignore[arg-type]
    # Far below the 1 s poll: the projector woke on NOTIFY.
    assert time.monotonic() - started < 0.5
    row = reader.execute("SELECT post_count FROM accounts WHERE account_id = %s", (account,))
    assert row.fetchone() == {"post_count": 1}
