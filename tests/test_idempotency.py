"""Retried commands change nothing; keys hold across application instances and processes;
version races are retried, then refused with CONFLICT."""

from __future__ import annotations

import subprocess
import sys
import threading
from uuid import UUID

import pytest

from ledger import Ledger, LedgerError
from ledger import commands as c
from tests.world import World


def reach(world: World, post: UUID, views: int, key: str) -> c.RecordReach:
    return c.RecordReach(actor=world.ops, idempotency_key=key, post_id=post, views=views, reposts=0)


def test_retry_returns_the_first_result_and_writes_nothing(ledger: Ledger) -> None:
    world = World(ledger)
    post = world.post(world.account())
    first = ledger.execute(reach(world, post, 10, "r-1"))
    head = ledger.head()
    again = ledger.execute(reach(world, post, 10, "r-1"))
    assert again.replayed and not first.replayed
    assert (again.value, again.position) == (first.value, first.position)
    assert ledger.head() == head


def test_same_key_other_arguments_is_refused(ledger: Ledger) -> None:
    world = World(ledger)
    post = world.post(world.account())
    ledger.execute(reach(world, post, 10, "r-1"))
    head = ledger.head()
    with pytest.raises(LedgerError) as refused:
        ledger.execute(reach(world, post, 11, "r-1"))
    assert refused.value.code == "IDEMPOTENCY_KEY_REUSED"
    assert ledger.head() == head


def test_keys_are_per_actor(ledger: Ledger) -> None:
    world = World(ledger)
    mine = world.account(kind="personal")
    theirs = world.account(kind="personal", ops=world.rival_ops)
    for account, ops in ((mine, world.ops), (theirs, world.rival_ops)):
        result = ledger.execute(
            c.ImposeSanction(
                actor=ops,
                idempotency_key="same",
                account_id=account,
                level="warning",
                rule_ids=["art.9"],
                reason="x",
            )
        )
        assert not result.replayed


def test_idempotency_holds_across_application_instances(make_ledger) -> None:  # type: ignore[no-untyped-def]
    first, second = make_ledger(), make_ledger()
    world = World(first)
    post = world.post(world.account())
    original = first.execute(reach(world, post, 5, "cross"))
    head = second.head()
    replay = second.execute(reach(world, post, 5, "cross"))
    assert replay.replayed and replay.value == original.value
    assert second.head() == head


def test_idempotency_holds_across_processes(ledger: Ledger, database, schema: str) -> None:  # type: ignore[no-untyped-def]
    world = World(ledger)
    post = world.post(world.account())
    script = f"""
import sys
from uuid import UUID
from ledger import Database, Ledger, Actor, Role
from ledger import commands as c
from ledger.vault import Vault
from tests.conftest import TEST_KEY
db = Database({database.conninfo!r}).start()
ledger = Ledger(db.eventsourcing_env({schema!r}), vault=Vault(TEST_KEY))
ops = Actor("acme-ops", Role.PROVIDER, UUID({str(world.provider)!r}))
result = ledger.execute(c.RecordReach(actor=ops, idempotency_key="proc", post_id=UUID(sys.argv[1]),
                                      views=7, reposts=1))
print(result.replayed, result.position)
"""
    outputs = [
        subprocess.run(
            [sys.executable, "-c", script, str(post)], capture_output=True, text=True, check=True
        ).stdout.split()
        for _ in range(2)
    ]
    assert outputs[0][0] == "False" and outputs[1][0] == "True"
    assert outputs[0][1] == outputs[1][1]
    assert [e.type for e in ledger.read_log(originator_id=post)].count("Post.ReachRecorded") == 1


def test_concurrent_retries_of_one_command_write_once(make_ledger) -> None:  # type: ignore[no-untyped-def]
    ledgers = [make_ledger() for _ in range(4)]
    world = World(ledgers[0])
    post = world.post(world.account())
    results = []
    barrier = threading.Barrier(len(ledgers))

    def send(ledger: Ledger) -> None:
        barrier.wait()
        results.append(ledger.execute(reach(world, post, 42, "racing")))

    threads = [threading.Thread(target=send, args=(ledger,)) for ledger in ledgers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.replayed for r in results) == [False, True, True, True]
    assert len({r.position for r in results}) == 1
    events = [e.type for e in ledgers[0].read_log(originator_id=post)]
    assert events.count("Post.ReachRecorded") == 1


def test_version_races_under_threads_lose_nothing(make_ledger) -> None:  # type: ignore[no-untyped-def]
    ledgers = [make_ledger() for _ in range(6)]
    world = World(ledgers[0])
    account = world.account()
    per_thread = 8
    refused: list[str] = []
    barrier = threading.Barrier(len(ledgers))

    def impose(n: int, ledger: Ledger) -> None:
        barrier.wait()
        for i in range(per_thread):
            try:
                ledger.execute(
                    c.ImposeSanction(
                        actor=world.ops,
                        idempotency_key=f"t{n}-{i}",
                        account_id=account,
                        level="warning",
                        rule_ids=["art.9"],
                        reason="race",
                    )
                )
            except LedgerError as e:
                refused.append(e.code)

    threads = [threading.Thread(target=impose, args=pair) for pair in enumerate(ledgers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(refused) <= {"CONFLICT"}
    stored = ledgers[1].get_account(account)
    imposed = [
        e for e in ledgers[1].read_log(originator_id=account) if e.type == "Account.SanctionImposed"
    ]
    assert len(stored.sanctions) == len(imposed) == len(ledgers) * per_thread - len(refused)
    # Versions are a gap-free sequence: no event was lost or written twice.
    versions = [e.originator_version for e in ledgers[1].read_log(originator_id=account)]
    assert versions == list(range(1, len(versions) + 1))


def test_conflict_after_bounded_retries(make_ledger) -> None:  # type: ignore[no-untyped-def]
    ledger = make_ledger()
    world = World(ledger)
    account = world.account()
    other = make_ledger()

    # Another writer records an event on the same account between every load and insert.
    original_insert = ledger.recorder.insert_events
    calls = 0

    def save_after_interference(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        other.execute(
            c.ImposeSanction(
                actor=world.ops,
                idempotency_key=f"other-{calls}",
                account_id=account,
                level="warning",
                rule_ids=["art.9"],
                reason="interfere",
            )
        )
        return original_insert(*args, **kwargs)

    ledger.recorder.insert_events = save_after_interference  # type: ignore[method-assign]
    head_before = ledger.head()
    with pytest.raises(LedgerError) as refused:
        ledger.execute(
            c.ImposeSanction(
                actor=world.ops,
                idempotency_key="mine",
                account_id=account,
                level="warning",
                rule_ids=["art.9"],
                reason="x",
            )
        )
    assert refused.value.code == "CONFLICT"
    assert calls == ledger.MAX_ATTEMPTS
    # Only the interfering writer's events were recorded (a rolled-back insert leaves a
    # gap in positions, so count events, not positions).
    recorded = list(ledger.read_log(after=head_before))
    assert [e.payload["reason"] for e in recorded] == ["interfere"] * ledger.MAX_ATTEMPTS
    assert ledger.store.prior_outcomes([(world.ops.id, "mine")]) == {}
