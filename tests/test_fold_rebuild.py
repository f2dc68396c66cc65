"""A rebuild by folding (projections.folds) yields exactly the tables the event-by-event
projector yields (counters of zero aside), on a varied history with hostile text; an
event beyond the folds sends it the bulk way with the same result; `ledger rebuild`
folds, and `--verify` then finds the live tables identical to a fresh rebuild."""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Iterator

import pytest

from ledger import Database, Ledger
from ledger import commands as c
from projections.bulk import split_ddl
from projections.rebuild import _compare, rebuild, verify
from projections.registry import ALL, resolve
from projections.runner import Projector
from tests.conftest import Clock
from tests.test_bulk_rebuild import HOSTILE, varied_history
from tests.world import REGULATOR, World

BEYOND = "rebuild: folding stopped"


@pytest.fixture
def target(database: Database) -> Iterator[str]:
    """A second schema for the rebuilt tables, beside the test's (the event by event)."""
    name = "t_fold_" + uuid.uuid4().hex[:10]
    yield name
    database.drop_schema(name)


def more_history(ledger: Ledger, clock: Clock) -> None:
    """What varied_history leaves out: disclosures, indefinite sanctions of each
    status-changing level, several in force at once, one lifted, one appeal upheld."""
    world = World(ledger)
    world._keys = itertools.count(10_000)  # after varied_history's keys
    account, other = world.account("disclosed"), world.account("sanctioned")
    world.run(
        c.DiscloseIdentity, REGULATOR, account_id=account, basis=HOSTILE[0],
        case_reference=HOSTILE[4],
    )  # fmt: skip
    world.run(c.DiscloseIdentity, REGULATOR, account_id=account, basis="b", case_reference="case 2")
    for scope in ("reprint", "publish"):
        world.run(c.GrantNewsPermission, REGULATOR, account_id=account, scope=scope, basis="b")
    world.sanction(account, "updates_suspended")
    world.sanction(account, "updates_suspended", days=7)
    world.sanction(account, "publishing_restricted", days=90)
    world.sanction(account, "publishing_restricted", days=30)
    clock.advance(days=1)
    lifted = world.sanction(other, "publishing_restricted")
    world.run(c.LiftSanction, REGULATOR, account_id=other, sanction_id=lifted, reason="ok")
    world.sanction(other, "updates_suspended", days=15)
    upheld = world.sanction(other, "closed")
    world.run(c.AppealSanction, account_id=other, sanction_id=upheld, grounds="g")
    world.run(
        c.DecideAppeal, REGULATOR, account_id=other, sanction_id=upheld, outcome="upheld",
        reason="r",
    )  # fmt: skip


def project_event_by_event(ledger: Ledger, database: Database, schema: str) -> None:
    live = Projector(ledger, database, schema, ALL, page_size=7)
    live.setup()
    live.catch_up()
    live.close()


def assert_same_tables(database: Database, schema: str, target: str) -> None:
    with database.connect(autocommit=True) as conn:
        for table in (t for p in ALL for t in p.tables):
            diff = _compare(conn, schema, target, table, 3)
            assert (diff.count, diff.only_live, diff.only_rebuilt) == (0, [], []), table
        failures = {
            s: conn.execute(f'SELECT projection, position FROM "{s}".projection_failures'
                            " ORDER BY 1, 2").fetchall()
            for s in (schema, target)
        }  # fmt: skip
        assert failures[schema] == failures[target]


@pytest.mark.timeout(300)
def test_a_folded_rebuild_equals_the_event_by_event_projection(
    ledger: Ledger,
    database: Database,
    schema: str,
    target: str,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    varied_history(ledger, clock, database, schema)
    more_history(ledger, clock)
    project_event_by_event(ledger, database, schema)
    with caplog.at_level(logging.WARNING, logger="ledger.rebuild"):
        assert rebuild(ledger, database, ALL, target) == ledger.head()
    assert not [r for r in caplog.records if BEYOND in r.getMessage()]
    assert_same_tables(database, schema, target)
    with database.connect(autocommit=True) as conn:
        # Every table holds rows, the figures too (nothing was compared vacuously) ...
        for table in (t for p in ALL for t in p.tables):
            count = conn.execute(f'SELECT count(*) FROM "{target}"."{table}"').fetchone()
            assert count is not None and count[0] > 0, table
        # ... the indexes are there, and the positions are at the head.
        for p in ALL:
            for statement in split_ddl(p.ddl)[1]:
                name = statement.split("EXISTS")[-1].split()[0]
                found = conn.execute("SELECT to_regclass(%s)", (f"{target}.{name}",)).fetchone()
                assert found != (None,), name
        positions = conn.execute(
            f'SELECT DISTINCT position FROM "{target}".projection_positions'
        ).fetchall()
        assert positions == [(ledger.head(),)]


def test_a_rebuild_of_some_read_models_folds_them_and_their_dependencies(
    ledger: Ledger, database: Database, schema: str, target: str, clock: Clock
) -> None:
    varied_history(ledger, clock, database, schema)
    project_event_by_event(ledger, database, schema)
    chosen = resolve(["history"])
    assert [p.name for p in chosen] == ["posts", "accounts", "history"]
    assert rebuild(ledger, database, chosen, target) == ledger.head()
    with database.connect(autocommit=True) as conn:
        for table in ("posts", "accounts", "history"):
            assert _compare(conn, schema, target, table, 3).count == 0, table


@pytest.mark.parametrize(
    ("topic", "field"),
    [
        # A field every handler of a post reads: this process's folds stop on it.
        ("Post.Published", "ref"),
        # A field only history's summary reads: history's own process stops on it.
        ("Account.IdentityErased", "reason"),
    ],
)
def test_an_event_beyond_the_folds_sends_the_rebuild_the_bulk_way(
    ledger: Ledger,
    database: Database,
    schema: str,
    target: str,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
    topic: str,
    field: str,
) -> None:
    varied_history(ledger, clock, database, schema)
    with database.connect(schema, autocommit=True) as conn:
        # A stored event lacks a field (written by an old release, say): the event-by-event
        # projector records it as a dead letter of the projections that read it.
        conn.execute(
            "UPDATE ledger_events SET state = convert_to(replace(convert_from(state, 'UTF8'),"
            " %s, %s), 'UTF8') WHERE notification_id = (SELECT"
            " min(notification_id) FROM ledger_events WHERE topic = %s)",
            (f'"{field}":', f'"old_{field}":', topic),
        )
    project_event_by_event(ledger, database, schema)
    with caplog.at_level(logging.WARNING, logger="ledger.rebuild"):
        assert rebuild(ledger, database, ALL, target) == ledger.head()
    assert [r for r in caplog.records if BEYOND in r.getMessage()]
    assert_same_tables(database, schema, target)
    with database.connect(autocommit=True) as conn:
        failed = conn.execute(f'SELECT count(*) FROM "{target}".projection_failures').fetchone()
    assert failed is not None and failed[0] > 0


def test_the_live_tables_verify_against_a_bulk_rebuild_after_a_folded_one(
    ledger: Ledger, database: Database, schema: str, clock: Clock
) -> None:
    varied_history(ledger, clock, database, schema)
    more_history(ledger, clock)
    rebuild(ledger, database, ALL, schema)
    assert verify(ledger, database, ALL, schema) == []
    # A new event moves both alike: the live projector applies it to the folded tables.
    world = World(ledger)
    world._keys = itertools.count(20_000)
    world.post(world.account("after"))
    live = Projector(ledger, database, schema, ALL)
    live.catch_up()
    live.close()
    assert verify(ledger, database, ALL, schema) == []
