"""A bulk rebuild (projections.bulk) yields exactly the tables the event-by-event
projector yields, on a varied history with hostile text, whatever the page size; and the
direct decoder yields exactly the mapper's events."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from ledger import Database, Ledger
from ledger import commands as c
from ledger.demo import run_demo
from ledger.log import LoggedEvent
from projections.base import storable
from projections.bulk import BulkProjector, shape_of, split_ddl, unlogged
from projections.decode import Decoder, decode_plain
from projections.rebuild import _compare
from projections.registry import ALL
from projections.runner import Projector
from tests.conftest import Clock
from tests.world import REGULATOR, World

HOSTILE = (
    "quote ' double \" backslash \\ tab \t newline \n brace {a,b} comma, NULL \\N",
    "nul \x00 here",
    "marker-surrogate",  # made a lone surrogate in the stored JSON below
    "%s and $1 and %(x)s and ;",
    "中文 \U0001d518nicode \u202e right-to-left",
    "",
)


def written_before_validation(ledger: Ledger, command: c.Command, **raw: Any) -> None:
    for name, value in raw.items():
        object.__setattr__(command, name, value)
    ledger.execute(command)


def varied_history(ledger: Ledger, clock: Clock, database: Database, schema: str) -> None:
    """The demo's mix, then an account through most of what can happen to one, with
    hostile text wherever free text goes."""
    run_demo(ledger.submit, ledger.ruleset, 40)
    world = World(ledger)
    account = world.account("busy", category="government")
    other = world.account("other")
    world.run(c.GrantNewsPermission, REGULATOR, account_id=account, scope="publish", basis="b")
    world.run(c.MarkAccount, account_id=account)
    posts = [world.post(account, category="political_news"), world.post(other)]
    for n, text in enumerate(HOSTILE):
        post = posts[n % 2]
        report = c.ReportPost(
            actor=world.ops,
            idempotency_key=world.key(),
            post_id=post,
            reporter="user",
            reason="placeholder",
        )
        written_before_validation(ledger, report, reason=text)
        world.run(c.RecordReach, post_id=post, views=6000 * (n + 1), reposts=600 * (n + 1))
        clock.advance(hours=5)
    for level, days in (("warning", None), ("updates_suspended", 7), ("publishing_restricted", 15)):
        sanction = world.sanction(account, level, days=days)
        clock.advance(days=8)
        if level == "warning":
            world.run(
                c.AppealSanction, account_id=account, sanction_id=sanction, grounds=HOSTILE[0]
            )
            world.run(
                c.DecideAppeal,
                REGULATOR,
                account_id=account,
                sanction_id=sanction,
                outcome="overturned",
                reason=HOSTILE[4],
            )
    world.run(c.RemovePost, REGULATOR, post_id=posts[0], rule_ids=["art.8"], reason=HOSTILE[0])
    world.run(c.RevokeNewsPermission, REGULATOR, account_id=account, scope="publish", reason="x")
    world.run(c.EraseIdentity, REGULATOR, account_id=account, reason=HOSTILE[3])
    with database.connect(schema, autocommit=True) as conn:
        # JSON may spell a lone surrogate as an escape; the log decodes it into Python text.
        conn.execute(
            "UPDATE ledger_events SET state = convert_to(replace(convert_from(state, 'UTF8'),"
            " 'marker-surrogate', 'lone \\ud800 surrogate'), 'UTF8')"
        )


def tables(conn: Any, schema: str) -> list[str]:
    rows = conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", (schema,)
    ).fetchall()
    return [r[0] for r in rows]


@pytest.fixture
def scratch(database: Database) -> Iterator[str]:
    name = "t_bulk_" + uuid.uuid4().hex[:10]
    yield name
    database.drop_schema(name)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("page", "waves"), [(20_000, False), (20_000, True), (97, True)])
def test_a_bulk_rebuild_equals_the_event_by_event_projection(
    ledger: Ledger,
    database: Database,
    schema: str,
    scratch: str,
    clock: Clock,
    page: int,
    waves: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    varied_history(ledger, clock, database, schema)
    live = Projector(ledger, database, schema, ALL, page_size=7)
    live.setup()
    live.catch_up()
    live.close()
    fresh = BulkProjector(ledger, database, scratch, ALL, page_size=page, waves=waves)
    try:
        fresh.setup()
        with caplog.at_level(logging.WARNING, logger="ledger.projector"):
            assert fresh.catch_up() == ledger.head()
        assert not caplog.records  # no page fell back to event by event
        counts = fresh.counts
        fresh.finish()
    finally:
        fresh.close()
    with database.connect(autocommit=True) as conn:
        expected = [t for p in ALL for t in p.tables]
        assert sorted(expected) == [
            t for t in tables(conn, scratch) if not t.startswith("projection_")
        ]
        for table in expected:
            diff = _compare(conn, schema, scratch, table, 3)
            assert (diff.count, diff.only_live, diff.only_rebuilt) == (0, [], []), table
        failures = conn.execute(f'SELECT count(*) FROM "{scratch}".projection_failures').fetchone()
        assert failures == (0,)
        # The indexes came after the rows, and the tables are logged like the live ones.
        for p in ALL:
            for statement in split_ddl(p.ddl)[1]:
                name = statement.split("EXISTS")[-1].split()[0]
                assert conn.execute(
                    "SELECT to_regclass(%s)", (f"{scratch}.{name}",)
                ).fetchone() != (None,)
        persistence = conn.execute(
            "SELECT DISTINCT relpersistence FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE nspname = %s AND relkind = 'r'",
            (scratch,),
        ).fetchall()
        assert persistence == [("p",)]
    if page > 1000 and waves:  # most statements ran set-based
        assert counts["set_based"] > 4 * counts["as_written"], counts
    assert counts["set_based"] > 0, counts


def test_the_direct_decoder_yields_the_mappers_events(
    ledger: Ledger, clock: Clock, database: Database, schema: str
) -> None:
    varied_history(ledger, clock, database, schema)
    decoder = Decoder(ledger.mapper)
    fast = 0
    for n in ledger.store.select_notifications(start=1, limit=100_000):
        expected = storable(
            LoggedEvent.from_notification(n, ledger.mapper.to_domain_event(n)), n.state
        )
        assert decoder.decode(n) == expected, n.topic
        fields = (n.id, n.originator_id, n.originator_version, n.topic, n.state)
        fast += decode_plain(*fields) is not None  # type: ignore[arg-type]
    assert fast == ledger.head()


def test_plain_indexes_are_built_after_loading_and_tables_start_unlogged() -> None:
    ddl = (
        "CREATE TABLE IF NOT EXISTS t (a int PRIMARY KEY, b int)",
        "CREATE UNIQUE INDEX IF NOT EXISTS t_b ON t (b)",
        "CREATE INDEX IF NOT EXISTS t_ab ON t (a, b)",
        "  create index t_partial ON t (b) WHERE b > 0",
    )
    assert split_ddl(ddl) == (list(ddl[:2]), list(ddl[2:]))
    assert unlogged(ddl[0]).startswith("CREATE UNLOGGED TABLE IF NOT EXISTS t")


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("INSERT INTO t (a, b) VALUES (%s, %s)", "insert"),
        ("INSERT INTO t (a, b) SELECT %s, b FROM u WHERE k = %s", "insert"),
        ("UPDATE t SET b = b + 1, c = %s WHERE a = %s", "update"),
        ("UPDATE t SET c = %s WHERE a = (SELECT a FROM v WHERE k = %s)", "update"),
        ("DELETE FROM t WHERE a = %s", "delete"),
        (
            "INSERT INTO t AS x (a, n) SELECT a, 1 FROM u WHERE k = %s"
            " ON CONFLICT (a) DO UPDATE SET n = x.n + EXCLUDED.n",
            "upsert",
        ),
        # Whatever is not plain runs as written, in order.
        (
            "INSERT INTO t AS x (a, n) SELECT a, 1 FROM u WHERE k = %s"
            " ON CONFLICT (a) DO UPDATE SET n = EXCLUDED.n",
            "table",
        ),
        ("UPDATE t SET b = (SELECT max(b) FROM t) WHERE a = %s", "table"),
        ("UPDATE t SET a = %s WHERE a = %s", "table"),
        ("UPDATE t SET b = %s WHERE a = %s OR b = %s", "table"),
        ("UPDATE t SET c = %s WHERE a = (SELECT a FROM t2 WHERE k = %s)", "table"),
        ("INSERT INTO t (a) VALUES (%s) RETURNING a", "table"),
        ("SELECT pg_notify('x', %s)", "other"),
        ("UPDATE t SET b = %(b)s WHERE a = %(a)s", "other"),
    ],
)
def test_statement_shapes(text: str, kind: str) -> None:
    assert shape_of(text, ("t", "u", "t2")).kind == kind
