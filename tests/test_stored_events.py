"""Events already in the log are immutable: whatever one holds, the read side projects it
(escaping what a column cannot hold) or records it as a dead letter and goes on, and a
rebuild either completes or leaves the live tables as they were."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg.rows import DictRow

from ledger import Database, Ledger
from ledger import commands as c
from ledger.log import LoggedEvent
from ledger.ruleset import Ruleset
from projections.base import Projection, Statement
from projections.history import HISTORY
from projections.positions import status, wait_for
from projections.rebuild import rebuild
from projections.registry import ALL
from projections.runner import Projector
from tests.world import World


def written_before_validation(ledger: Ledger, command: c.Command, **raw: Any) -> None:
    """Record a command whose fields hold what validation now refuses, as an older
    release did: the events are in the log for good."""
    for name, value in raw.items():
        object.__setattr__(command, name, value)
    ledger.execute(command)


def report_with(ledger: Ledger, world: World, post: UUID, reason: str) -> None:
    command = c.ReportPost(actor=world.ops, idempotency_key=world.key(), post_id=post,
                           reporter="user", reason="placeholder")  # fmt: skip
    written_before_validation(ledger, command, reason=reason)


def history_summaries(reader: psycopg.Connection[DictRow], account: UUID) -> list[str]:
    rows = reader.execute(
        "SELECT summary FROM history WHERE account_id = %s ORDER BY position", (account,)
    ).fetchall()
    return [r["summary"] for r in rows]


def test_a_stored_nul_is_projected_as_a_replacement_character(
    ledger: Ledger, projector: Projector, reader: psycopg.Connection[DictRow], schema: str
) -> None:
    world = World(ledger)
    account = world.account()
    post = world.post(account)
    report_with(ledger, world, post, "bad\x00reason")
    world.post(account)  # and what follows is projected too
    projector.catch_up()
    assert "post reported: bad\ufffdreason" in history_summaries(reader, account)
    rows = status(reader, schema, ledger.store.events_table)  # type: ignore[arg-type]
    assert all(r.lag_events == 0 and r.failures == 0 for r in rows)
    # Time travel reads the stored event's timestamp despite the NUL beside it.
    assert ledger.account_at(account, at=ledger.clock()).id == account


def test_a_stored_lone_surrogate_is_projected(
    ledger: Ledger, projector: Projector, reader: psycopg.Connection[DictRow]
) -> None:
    world = World(ledger)
    account = world.account()
    post = world.post(account)
    report_with(ledger, world, post, "marker-reason")
    # JSON may spell a lone surrogate as an escape; the log decodes it into Python text.
    reader.execute(
        "UPDATE ledger_events SET state = convert_to(replace(convert_from(state, 'UTF8'),"
        " 'marker-reason', 'bad\\ud800reason'), 'UTF8') WHERE notification_id = %s",
        (ledger.head(),),
    )
    projector.catch_up()
    assert "post reported: bad\ufffdreason" in history_summaries(reader, account)


def failing_on(reason: str) -> Projection:
    """A copy of the history projection whose handler breaks on one event."""

    def statements(event: LoggedEvent, ruleset: Ruleset) -> list[Statement]:
        if event.payload.get("reason") == reason:
            raise ValueError("a handler cannot cope with this event")
        return list(HISTORY.handlers[event.type](event, ruleset))

    return Projection(
        name=HISTORY.name,
        version=HISTORY.version,
        tables=HISTORY.tables,
        ddl=HISTORY.ddl,
        handlers={t: statements for t in HISTORY.handlers},
        depends_on=HISTORY.depends_on,
    )


def with_failing_history(reason: str) -> tuple[Projection, ...]:
    return tuple(failing_on(reason) if p is HISTORY else p for p in ALL)


def test_an_event_no_handler_can_apply_becomes_a_dead_letter(
    ledger: Ledger, database: Database, schema: str, reader: psycopg.Connection[DictRow]
) -> None:
    world = World(ledger)
    account = world.account()
    post = world.post(account)
    world.run(c.ReportPost, post_id=post, reporter="user", reason="poison")
    poisoned = ledger.head()
    world.post(account)
    projector = Projector(ledger, database, schema, with_failing_history("poison"), page_size=7)
    projector.setup()
    try:
        projector.catch_up()
    finally:
        projector.close()
    # Every other event, and every other projection, went on.
    wait_for(reader, schema, ledger.head(), timeout=1)  # type: ignore[arg-type]
    failures = reader.execute("SELECT projection, position, error FROM projection_failures")
    assert [(f["projection"], f["position"]) for f in failures] == [("history", poisoned)]
    positions = [r["position"] for r in reader.execute("SELECT position FROM history")]
    assert poisoned not in positions and ledger.head() in positions
    flagged = reader.execute("SELECT reports_total FROM posts WHERE post_id = %s", (post,))
    assert flagged.fetchone() == {"reports_total": 1}
    rows = {r.name: r for r in status(reader, schema, ledger.store.events_table)}  # type: ignore[arg-type]
    assert not rows["history"].healthy and rows["accounts"].healthy


@pytest.fixture
def following(ledger: Ledger, database: Database, schema: str) -> Iterator[Projector]:
    projector = Projector(ledger, database, schema)
    stop = threading.Event()
    ready = threading.Event()
    thread = threading.Thread(target=projector.follow, args=(stop, ready.set), daemon=True)
    thread.start()
    assert ready.wait(30)
    yield projector
    stop.set()
    thread.join(30)
    assert not thread.is_alive()


def test_the_follow_loop_survives_what_it_did_not_expect(
    ledger: Ledger, following: Projector, reader: psycopg.Connection[DictRow], schema: str
) -> None:
    world = World(ledger)
    account = world.account()
    wait_for(reader, schema, ledger.head(), timeout=10)  # type: ignore[arg-type]
    # An operator drops a read table under the running projector.
    reader.execute("DROP TABLE history CASCADE")
    world.post(account)
    with pytest.raises(psycopg.errors.UndefinedTable):
        reader.execute("SELECT 1 FROM history")
    # The loop logs, backs off, sets the table up again and carries on with new events.
    for _ in range(3):
        world.post(account)
    wait_for(reader, schema, ledger.head(), timeout=20)  # type: ignore[arg-type]
    assert reader.execute("SELECT count(*) AS n FROM posts").fetchone() == {"n": 4}


def test_a_failed_rebuild_leaves_the_live_tables_untouched(
    ledger: Ledger, database: Database, schema: str, reader: psycopg.Connection[DictRow]
) -> None:
    world = World(ledger)
    account = world.account()
    for _ in range(30):
        world.post(account)
    projector = Projector(ledger, database, schema)
    projector.setup()
    projector.catch_up()
    projector.close()
    before = reader.execute("SELECT * FROM posts ORDER BY post_id").fetchall()

    def interrupt(position: int, head: int) -> None:
        if position > 10:
            raise KeyboardInterrupt  # the operator pressed Ctrl-C mid-way

    with pytest.raises(KeyboardInterrupt):
        rebuild(ledger, database, ALL, schema, progress=interrupt)
    assert reader.execute("SELECT * FROM posts ORDER BY post_id").fetchall() == before
    leftovers = reader.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'ledger_rebuild_%%'"
    ).fetchall()
    assert leftovers == []


def test_a_rebuild_swaps_in_complete_tables_and_clears_dead_letters(
    ledger: Ledger, database: Database, schema: str, reader: psycopg.Connection[DictRow]
) -> None:
    world = World(ledger)
    account = world.account()
    post = world.post(account)
    world.run(c.ReportPost, post_id=post, reporter="user", reason="poison")
    world.post(account)
    broken = Projector(ledger, database, schema, with_failing_history("poison"))
    broken.setup()
    broken.catch_up()
    broken.close()
    assert reader.execute("SELECT count(*) AS n FROM projection_failures").fetchone() == {"n": 1}
    # The handler is fixed in a new release; a rebuild replays everything.
    events = rebuild(ledger, database, ALL, schema, progress=None)
    assert events == ledger.head()
    assert reader.execute("SELECT count(*) AS n FROM projection_failures").fetchone() == {"n": 0}
    assert "post reported: poison" in history_summaries(reader, account)
    wait_for(reader, schema, ledger.head(), timeout=1)  # type: ignore[arg-type]
