"""Reading the log: from a position, by type, by originator, in pages; snapshots keep a
long-lived aggregate's load short; topics are stable names."""

from __future__ import annotations

import pytest

from ledger import Ledger, LedgerError
from ledger import commands as c
from ledger.domain import EVENT_TYPES
from tests.world import REGULATOR, World


def test_reading_the_log(ledger: Ledger) -> None:
    world = World(ledger)
    account = world.account()
    for _ in range(3):
        world.sanction(account, "warning")
    everything = list(ledger.read_log(page_size=2))
    assert [e.position for e in everything] == sorted(e.position for e in everything)
    assert everything[-1].position == ledger.head()
    middle = everything[4].position
    assert [e.position for e in ledger.read_log(middle, page_size=3)] == [
        e.position for e in everything if e.position > middle
    ]
    sanctions = list(ledger.read_log(types=["Account.SanctionImposed"], page_size=2))
    assert len(sanctions) == 3 and all(e.originator_id == account for e in sanctions)
    assert all(e.actor == REGULATOR.as_dict() for e in sanctions)
    mine = list(ledger.read_log(originator_id=account))
    assert [e.originator_version for e in mine] == list(range(1, len(mine) + 1))
    assert len(list(ledger.read_log(limit=5, page_size=2))) == 5


def test_bad_log_arguments(ledger: Ledger) -> None:
    for kwargs in ({"types": ["Account.Exploded"]}, {"after": -1}, {"originator_id": "x"}):
        with pytest.raises(LedgerError) as refused:
            list(ledger.read_log(**kwargs))  # type: ignore[arg-type]
        assert refused.value.code == "INVALID_ARGUMENT"


def test_stored_topics_are_explicit_names(ledger: Ledger, database, schema: str) -> None:  # type: ignore[no-untyped-def]
    World(ledger).account()
    with database.connect() as conn:
        topics = {
            r[0] for r in conn.execute(f'SELECT DISTINCT topic FROM "{schema}".ledger_events')
        }
    assert topics <= set(EVENT_TYPES)
    assert "Account.Registered" in topics and not any(":" in t for t in topics)


def test_a_long_lived_account_loads_from_its_snapshot(ledger: Ledger) -> None:
    world = World(ledger)
    account = world.account(category="news_agency")
    batch: list[c.Command] = []
    for i in range(5000):
        batch.append(c.MarkAccount(actor=world.ops, idempotency_key=f"m{i}", account_id=account))
        batch.append(
            c.UnmarkAccount(
                actor=world.ops, idempotency_key=f"u{i}", account_id=account, reason="rotation"
            )
        )
        if len(batch) == 1000:
            ledger.submit(batch)
            batch = []
    state = ledger.get_account(account)
    assert state.version > 10_000
    assert ledger.snapshots is not None
    snapshots = list(ledger.snapshots.get(account, desc=True, limit=1))
    assert snapshots and state.version - snapshots[0].originator_version < 100
    # The loaded state equals a replay of every event from the first.
    replayed = None
    for event in ledger.events.get(account):
        replayed = event.mutate(replayed)  # type: ignore[attr-defined]
    assert replayed is not None and replayed.__dict__ == state.__dict__
    middle = ledger.account_at(account, position=ledger.head() - 5001)
    assert middle.version < state.version
