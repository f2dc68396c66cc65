"""Group commit under real concurrency: many threads and processes submitting at once,
groups mixing commands that pass with ones that race on one account, and a writing
process SIGKILLed mid-group. Every acknowledged command's events are in the log exactly
once, in the order the versions say; nothing is half-written; retries record nothing
twice."""

from __future__ import annotations

import base64
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any
from uuid import UUID

from ledger import Database, Ledger
from ledger import commands as c
from tests.conftest import TEST_KEY
from tests.world import REGULATOR, World, sha

ROOT = Path(__file__).resolve().parent.parent


def versions_are_whole(ledger: Ledger) -> dict[UUID, list[int]]:
    """Each aggregate's versions in log order: 1, 2, 3, … with no gap and no repeat."""
    seen: dict[UUID, list[int]] = defaultdict(list)
    for e in ledger.read_log():
        seen[e.originator_id].append(e.originator_version)
    for originator, versions in seen.items():
        assert versions == list(range(1, len(versions) + 1)), (originator, versions)
    return seen


def publish(world: World, account: UUID, key: str) -> c.PublishPost:
    return c.PublishPost(actor=world.ops, idempotency_key=key, account_id=account, ref=key,
                         origin="original", category="other", content_sha256=sha(key))  # fmt: skip


def sanction(account: UUID, key: str) -> c.ImposeSanction:
    return c.ImposeSanction(actor=REGULATOR, idempotency_key=key, account_id=account,
                            level="warning", rule_ids=["art.9"], reason="race")  # fmt: skip


def test_threads_share_transactions_and_race_safely(ledger: Ledger) -> None:
    world = World(ledger)
    own = [world.account() for _ in range(12)]
    shared = world.account()
    head = ledger.head()
    groups, members = ledger.group_commit.groups, ledger.group_commit.members
    acknowledged: dict[str, int] = {}
    failures: list[BaseException] = []
    lock = threading.Lock()

    def write(n: int) -> None:
        try:
            for i in range(15):
                key = f"t{n}-{i}"
                # Half the threads publish on accounts of their own, half race on one.
                command = publish(world, own[n], key) if n % 2 else sanction(shared, key)
                result = ledger.execute(command)
                with lock:
                    acknowledged[key] = result.position or 0
        except BaseException as e:  # reported below
            failures.append(e)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert failures == []
    logged = {e.position: e for e in ledger.read_log(head)}
    assert sorted(acknowledged.values()) == sorted(logged)  # each exactly once
    assert len(logged) == 12 * 15
    versions_are_whole(ledger)
    assert len(ledger.get_account(shared).sanctions) == 6 * 15
    grouped = ledger.group_commit.members - members
    assert ledger.group_commit.groups - groups < grouped, "no two submissions shared a commit"


WRITER = """
import sys
from uuid import UUID
from ledger import Database, Ledger
from tests.test_group_commit import run_writer
with Database() as db:
    run_writer(Ledger.open(db), UUID(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
"""


def run_writer(ledger: Ledger, account: UUID, name: str, count: int) -> None:
    """Sanctions on one account from 8 threads; prints each acknowledged key."""
    keys = iter(range(count))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                n = next(keys, None)
            if n is None:
                return
            ledger.execute(sanction(account, f"{name}-{n}"))
            with lock:
                print(f"{name}-{n}", flush=True)

    failed: list[BaseException] = []

    def guarded() -> None:
        try:
            work()
        except BaseException as e:  # a thread's failure fails the process
            failed.append(e)

    threads = [threading.Thread(target=guarded) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        raise SystemExit(f"{len(failed)} writers failed: {failed[0]!r}")


def writer(database: Database, schema: str, account: UUID, name: str, count: int,
           tmp_path: Path) -> subprocess.Popen[str]:  # fmt: skip
    env = {**os.environ, "LEDGER_DATABASE_URL": database.conninfo, "LEDGER_SCHEMA": schema,
           "LEDGER_CIPHER_KEY": base64.b64encode(TEST_KEY).decode(),
           "LEDGER_DATA_DIR": str(tmp_path)}  # fmt: skip
    return subprocess.Popen([sys.executable, "-c", WRITER, str(account), name, str(count)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)  # fmt: skip


def test_processes_race_on_one_account(
    ledger: Ledger, database: Database, schema: str, tmp_path: Path
) -> None:
    account = World(ledger).account()
    processes = [writer(database, schema, account, f"p{n}", 40, tmp_path) for n in range(3)]
    outputs = [p.communicate(timeout=180)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0]
    acknowledged = {line for out in outputs for line in out.split()}
    assert len(acknowledged) == 120
    assert len(ledger.get_account(account).sanctions) == 120
    versions_are_whole(ledger)


def test_a_writer_killed_mid_group_loses_nothing_acknowledged(
    ledger: Ledger, database: Database, schema: str, tmp_path: Path
) -> None:
    account = World(ledger).account()
    process = writer(database, schema, account, "k", 400, tmp_path)
    assert process.stdout is not None
    acknowledged: list[str] = []
    for line in itertools.islice(process.stdout, 60):
        acknowledged.append(line.strip())
    process.send_signal(signal.SIGKILL)  # in the middle of group commits
    rest, _ = process.communicate(timeout=30)
    acknowledged += rest.split()
    reasons = {s["reason"] for s in ledger.get_account(account).sanctions.values()}
    assert reasons == {"race"}
    recorded = len(ledger.get_account(account).sanctions)
    assert len(acknowledged) <= recorded < 400  # nothing acknowledged is lost
    versions_are_whole(ledger)  # and nothing is half-written
    # The retry of everything, with the same keys, records each command once in all.
    again = writer(database, schema, account, "k", 400, tmp_path)
    again.communicate(timeout=180)
    assert again.returncode == 0
    assert len(ledger.get_account(account).sanctions) == 400
    versions_are_whole(ledger)


def test_a_lone_command_does_not_wait(ledger: Ledger) -> None:
    world = World(ledger)
    account = world.account()
    timings: list[float] = []
    for n in range(20):
        started = time.perf_counter()
        ledger.execute(publish(world, account, f"lone{n}"))
        timings.append(time.perf_counter() - started)
    assert sorted(timings)[10] < 0.05  # milliseconds, not a batching window
    _: Any = None
