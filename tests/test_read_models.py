"""The read models against scripted histories: commands in through the ledger, the
projector caught up, and the tables read back in SQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, cast
from uuid import UUID

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import DictRow

from ledger import Actor, Ledger
from ledger import commands as c
from ledger.log import LoggedEvent
from projections.accounts import status_filter_sql, status_sql
from projections.providers import provider_figures
from projections.registry import ALL
from projections.runner import Projector
from tests.conftest import Clock
from tests.world import REGULATOR, World

Reader = psycopg.Connection[DictRow]
Row = dict[str, Any]
LATER = timedelta(days=7, seconds=1)


@pytest.fixture
def world(ledger: Ledger) -> World:
    return World(ledger)


class CaughtUp:
    """The reader, after the projector has caught up with what the test wrote so far."""

    def __init__(self, projector: Projector, reader: Reader) -> None:
        self.projector = projector
        self.reader = reader

    def __getattr__(self, name: str) -> Any:
        self.projector.catch_up()
        return getattr(self.reader, name)


@pytest.fixture
def read(projector: Projector, reader: Reader) -> Reader:
    return cast(Reader, CaughtUp(projector, reader))


def rows(reader: Reader, query: str, *params: Any) -> list[Row]:
    return reader.execute(query, params).fetchall()  # type: ignore[arg-type]


def one(reader: Reader, query: str, *params: Any) -> Row:
    (row,) = rows(reader, query, *params)
    return row


def account_row(reader: Reader, account: UUID) -> Row:
    return one(reader, "SELECT * FROM accounts WHERE account_id = %s", account)


def sanction_row(reader: Reader, sanction: UUID) -> Row:
    return one(reader, "SELECT * FROM sanctions WHERE sanction_id = %s", sanction)


def status_at(reader: Reader, account: UUID, now: datetime) -> str:
    query = f"SELECT {status_sql()} AS status FROM accounts WHERE account_id = %(id)s"
    row = reader.execute(query, {"now": now, "id": account}).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return str(row["status"])


def with_status(reader: Reader, status: str, now: datetime) -> set[UUID]:
    query = f"SELECT account_id FROM accounts WHERE {status_filter_sql(status)}"
    found = reader.execute(query, {"now": now}).fetchall()  # type: ignore[arg-type]
    return {r["account_id"] for r in found}


def events(ledger: Ledger, *originators: UUID) -> list[LoggedEvent]:
    found = [e for o in originators for e in ledger.read_log(originator_id=o)]
    return sorted(found, key=lambda e: e.position)


def last_event(ledger: Ledger, originator: UUID, type_: str) -> LoggedEvent:
    return [e for e in events(ledger, originator) if e.type == type_][-1]


def regulate(world: World, command: type[c.Command], account: UUID, **args: Any) -> None:
    world.run(command, REGULATOR, account_id=account, **args)


def appeal(world: World, account: UUID, sanction: UUID, outcome: str | None = None) -> None:
    world.run(c.AppealSanction, account_id=account, sanction_id=sanction, grounds="mistaken")
    if outcome:
        regulate(world, c.DecideAppeal, account, sanction_id=sanction, outcome=outcome, reason="r")


def report(world: World, post: UUID, ops: Actor | None = None) -> UUID:
    value = world.run(c.ReportPost, ops, post_id=post, reporter="user-1", reason="rumour")
    return UUID(value["report_id"])


def resolve(world: World, post: UUID, report_id: UUID) -> None:
    world.run(
        c.ResolveReport, REGULATOR, post_id=post, report_id=report_id, outcome="upheld", reason="x"
    )


def file(world: World, account: UUID, reference: str = "F-1") -> None:
    world.run(
        c.FileAccount,
        account_id=account,
        authority="cac",
        reference=reference,
        category="enterprise",
    )


def table_contents(reader: Reader) -> dict[str, list[Row]]:
    tables = [t for p in ALL for t in p.tables] + ["projection_positions"]
    query = sql.SQL("SELECT * FROM {}")

    def rows(table: str) -> list[Row]:
        found = reader.execute(query.format(sql.Identifier(table))).fetchall()
        return sorted(found, key=lambda r: repr(list(r.values())))

    return {t: rows(t) for t in tables}


def busy_history(world: World, clock: Clock) -> tuple[UUID, UUID]:
    """An account through most of what can happen to one, with another account alongside."""
    account = world.account("busy", category="government")
    other = world.account("other")
    regulate(world, c.GrantNewsPermission, account, scope="publish", basis="state council")
    world.run(c.MarkAccount, account_id=account)
    post = world.post(account, category="political_news")
    world.post(other)
    world.run(c.RecordQualification, provider_id=world.provider, qualification="icp", reference="I")
    world.run(c.RecordReach, post_id=post, views=6000, reposts=600)
    resolve(world, post, report(world, post))
    clock.advance(days=1)
    warning = world.sanction(account, "warning")
    appeal(world, account, warning, "overturned")
    world.run(c.RemovePost, REGULATOR, post_id=post, rule_ids=["art.8"], reason="rumour")
    suspension = world.sanction(account, "updates_suspended", days=7)
    regulate(world, c.LiftSanction, account, sanction_id=suspension, reason="corrected")
    regulate(world, c.RevokeNewsPermission, account, scope="publish", reason="ended")
    regulate(world, c.EraseIdentity, account, reason="holder's request")
    return account, post


# ----- accounts -----------------------------------------------------------------------


def test_an_account_row_holds_its_registration(world: World, ledger: Ledger, read: Reader) -> None:
    public = world.account("alice", category="news_agency", verified=False, signed=False)
    personal = world.account("bob", kind="personal", verified=False, signed=False)
    event = last_event(ledger, public, "Account.Registered")
    row = account_row(read, public)
    assert {k: row[k] for k in ("provider_id", "handle", "kind", "category", "legacy")} == {
        "provider_id": world.provider,
        "handle": "alice",
        "kind": "public",
        "category": "news_agency",
        "legacy": False,
    }
    assert row["registered_at"] == event.timestamp
    assert row["position"] == event.position
    assert account_row(read, personal)["category"] is None
    assert account_row(read, personal)["kind"] == "personal"


def test_verification_sets_verified_and_erasure_clears_it(
    world: World, ledger: Ledger, read: Reader
) -> None:
    account = world.account(verified=False, signed=False, approved=False)
    assert account_row(read, account)["verified"] is False
    world.run(
        c.VerifyIdentity,
        account_id=account,
        real_name="Han Meimei",
        id_number="110101199003070022",
        method="bank_card",
    )
    verified = last_event(ledger, account, "Account.IdentityVerified")
    row = account_row(read, account)
    assert (row["verified"], row["verified_at"], row["verification_method"]) == (
        True,
        verified.timestamp,
        "bank_card",
    )
    regulate(world, c.EraseIdentity, account, reason="holder's request")
    erased = last_event(ledger, account, "Account.IdentityErased")
    row = account_row(read, account)
    assert (row["verified"], row["identity_erased_at"]) == (False, erased.timestamp)


def test_agreement_review_and_filing(world: World, ledger: Ledger, read: Reader) -> None:
    account = world.account(signed=False, approved=False)
    row = account_row(read, account)
    assert (row["agreement_version"], row["review_outcome"], row["filing_reference"]) == (
        None,
        None,
        None,
    )
    world.sign(account)
    world.run(c.ReviewAccount, account_id=account, outcome="approved", reason="licence seen")
    file(world, account, "Beijing-0042")
    agreement = ledger.ruleset.agreement
    row = account_row(read, account)
    assert (row["agreement_id"], row["agreement_version"]) == (agreement.id, agreement.version)
    signed = last_event(ledger, account, "Account.AgreementSigned")
    assert row["agreement_signed_at"] == signed.timestamp
    assert row["review_outcome"] == "approved"
    assert row["reviewed_at"] == last_event(ledger, account, "Account.Reviewed").timestamp
    assert (row["filing_reference"], row["filing_authority"]) == ("Beijing-0042", "cac")
    assert row["filed_at"] == last_event(ledger, account, "Account.Filed").timestamp


def test_a_rejected_review_is_recorded(world: World, read: Reader) -> None:
    account = world.account(approved=False)
    world.run(c.ReviewAccount, account_id=account, outcome="rejected", reason="no licence")
    assert account_row(read, account)["review_outcome"] == "rejected"


def test_news_scopes_are_category_defaults_plus_grants(world: World, read: Reader) -> None:
    agency = world.account(category="news_agency")
    service = world.account(category="licensed_news_service")
    government = world.account(category="government")
    personal = world.account(kind="personal")
    scopes = {a: account_row(read, a)["news_scopes"] for a in (agency, service, government)}
    assert scopes == {agency: ["publish", "reprint"], service: ["reprint"], government: []}
    assert account_row(read, personal)["news_scopes"] == []

    regulate(world, c.GrantNewsPermission, service, scope="publish", basis="licence upgrade")
    regulate(world, c.GrantNewsPermission, government, scope="reprint", basis="state council")
    assert account_row(read, service)["news_scopes"] == ["publish", "reprint"]
    assert account_row(read, government)["news_grants"] == ["reprint"]
    assert account_row(read, government)["news_scopes"] == ["reprint"]


def test_revoking_a_grant_removes_its_scope_only(world: World, read: Reader) -> None:
    service = world.account(category="licensed_news_service")
    regulate(world, c.GrantNewsPermission, service, scope="publish", basis="licence upgrade")
    regulate(world, c.RevokeNewsPermission, service, scope="publish", reason="licence lapsed")
    row = account_row(read, service)
    assert (row["news_grants"], row["news_scopes"]) == ([], ["reprint"])


def test_marking_and_unmarking(world: World, read: Reader) -> None:
    agency = world.account(category="news_agency")
    government = world.account(category="government")
    assert account_row(read, agency)["marked"] is False
    world.run(c.MarkAccount, account_id=agency)
    regulate(world, c.GrantNewsPermission, government, scope="publish", basis="state council")
    world.run(c.MarkAccount, account_id=government)
    assert account_row(read, agency)["marked"] is True
    assert account_row(read, government)["marked"] is True

    world.run(c.UnmarkAccount, account_id=agency, reason="stopped publishing news")
    regulate(world, c.RevokeNewsPermission, government, scope="publish", reason="ended")
    assert account_row(read, agency)["marked"] is False
    assert account_row(read, government)["marked"] is False


def test_post_count(world: World, read: Reader) -> None:
    account = world.account()
    other = world.account()
    posts = [world.post(account) for _ in range(3)]
    world.post(other)
    world.run(c.RemovePost, REGULATOR, post_id=posts[0], rule_ids=["art.8"], reason="rumour")
    assert account_row(read, account)["post_count"] == 3
    assert account_row(read, other)["post_count"] == 1


def test_last_position_follows_the_account_and_its_posts(
    world: World, ledger: Ledger, read: Reader
) -> None:
    account = world.account()
    other = world.account()
    assert account_row(read, account)["last_position"] < account_row(read, other)["position"]

    post = world.post(account)
    steps: list[Callable[[], object]] = [
        lambda: world.run(c.RecordReach, post_id=post, views=9000, reposts=900),
        lambda: resolve(world, post, report(world, post)),
        lambda: report(world, post),
        lambda: world.sanction(account, "warning"),
        lambda: regulate(world, c.GrantNewsPermission, account, scope="reprint", basis="b"),
        lambda: world.run(c.RemovePost, REGULATOR, post_id=post, rule_ids=["art.8"], reason="r"),
    ]
    assert account_row(read, account)["last_position"] == ledger.head()
    for step in steps:
        step()
        assert account_row(read, account)["last_position"] == ledger.head()
    before = account_row(read, account)["last_position"]
    world.post(other)
    assert account_row(read, account)["last_position"] == before


# ----- status over time ---------------------------------------------------------------


def test_a_suspension_lapses_in_the_status_without_an_event(
    world: World, ledger: Ledger, read: Reader
) -> None:
    account = world.account()
    world.sanction(account, "updates_suspended", days=7)
    imposed = last_event(ledger, account, "Account.SanctionImposed").timestamp
    head = ledger.head()
    assert account_row(read, account)["suspended_until"] == imposed + timedelta(days=7)
    assert status_at(read, account, imposed) == "updates_suspended"
    assert status_at(read, account, imposed + timedelta(days=7, microseconds=-1)) == (
        "updates_suspended"
    )
    assert status_at(read, account, imposed + timedelta(days=7)) == "active"
    assert status_at(read, account, imposed + LATER) == "active"
    assert ledger.head() == head


def test_status_filters_select_the_right_rows_at_both_moments(
    world: World, ledger: Ledger, read: Reader
) -> None:
    quiet = world.account()
    suspended = world.account()
    world.sanction(suspended, "updates_suspended", days=7)
    imposed = last_event(ledger, suspended, "Account.SanctionImposed").timestamp
    assert with_status(read, "active", imposed) == {quiet}
    assert with_status(read, "updates_suspended", imposed) == {suspended}
    assert with_status(read, "active", imposed + LATER) == {quiet, suspended}
    assert with_status(read, "updates_suspended", imposed + LATER) == set()


def test_each_status_filter_selects_only_its_accounts(
    world: World, ledger: Ledger, read: Reader
) -> None:
    active, restricted, suspended, closed = (world.account() for _ in range(4))
    world.sanction(restricted, "publishing_restricted", days=30)
    world.sanction(suspended, "publishing_restricted", days=30)
    world.sanction(suspended, "updates_suspended", days=7)
    world.sanction(closed, "updates_suspended", days=7)
    world.sanction(closed, "closed")
    now = ledger.clock()
    accounts = {
        "active": active,
        "publishing_restricted": restricted,
        "updates_suspended": suspended,
        "closed": closed,
    }
    for status, account in accounts.items():
        assert status_at(read, account, now) == status
        assert with_status(read, status, now) == {account}


def test_an_indefinite_suspension_never_lapses(world: World, read: Reader, clock: Clock) -> None:
    account = world.account()
    world.sanction(account, "updates_suspended")
    until = one(
        read,
        "SELECT suspended_until = 'infinity' AS forever FROM accounts WHERE account_id = %s",
        account,
    )
    assert until == {"forever": True}
    assert status_at(read, account, clock.now + timedelta(days=3650)) == "updates_suspended"


def test_lifting_one_of_two_overlapping_sanctions_leaves_the_other(
    world: World, ledger: Ledger, read: Reader
) -> None:
    account = world.account()
    long_ = world.sanction(account, "updates_suspended", days=30)
    short = world.sanction(account, "updates_suspended", days=7)
    short_expiry = sanction_row(read, short)["expires_at"]
    both = account_row(read, account)["suspended_until"]
    assert both == sanction_row(read, long_)["expires_at"]
    restriction = world.sanction(account, "publishing_restricted", days=90)
    regulate(world, c.LiftSanction, account, sanction_id=long_, reason="corrected")
    now = ledger.clock()
    row = account_row(read, account)
    assert row["suspended_until"] == short_expiry
    assert status_at(read, account, now) == "updates_suspended"
    assert status_at(read, account, short_expiry) == "publishing_restricted"
    active = [s["sanction_id"] for s in row["active_sanctions"]]
    assert active == [str(short), str(restriction)]
    regulate(world, c.LiftSanction, account, sanction_id=restriction, reason="corrected")
    assert account_row(read, account)["restricted_until"] is None
    assert status_at(read, account, short_expiry) == "active"


def test_sanctions_by_level_counts_every_sanction_imposed(world: World, read: Reader) -> None:
    account = world.account()
    world.sanction(account, "warning")
    world.sanction(account, "warning")
    suspension = world.sanction(account, "updates_suspended", days=7)
    regulate(world, c.LiftSanction, account, sanction_id=suspension, reason="corrected")
    world.sanction(account, "publishing_restricted", days=15)
    assert account_row(read, account)["sanctions_by_level"] == {
        "warning": 2,
        "updates_suspended": 1,
        "publishing_restricted": 1,
    }


# ----- appeals ------------------------------------------------------------------------


def test_an_overturned_closure_reopens_the_account(
    world: World, ledger: Ledger, read: Reader
) -> None:
    account = world.account()
    closure = world.sanction(account, "closed")
    assert status_at(read, account, ledger.clock()) == "closed"
    appeal(world, account, closure, "overturned")
    assert account_row(read, account)["closed_until"] is None
    assert status_at(read, account, ledger.clock()) == "active"
    assert with_status(read, "active", ledger.clock()) == {account}
    assert sanction_row(read, closure)["appeal_state"] == "overturned"


def test_an_upheld_appeal_keeps_the_account_closed(
    world: World, ledger: Ledger, read: Reader
) -> None:
    account = world.account()
    closure = world.sanction(account, "closed")
    appeal(world, account, closure, "upheld")
    assert status_at(read, account, ledger.clock() + timedelta(days=3650)) == "closed"
    assert sanction_row(read, closure)["appeal_state"] == "upheld"


# ----- legacy accounts ----------------------------------------------------------------


def test_a_legacy_account_that_verifies_and_signs(
    world: World, ledger: Ledger, read: Reader
) -> None:
    account = world.account(kind="personal", legacy=True, verified=False, signed=False)
    row = account_row(read, account)
    assert (row["legacy"], row["verified"], row["agreement_version"]) == (True, False, None)
    world.run(
        c.VerifyIdentity,
        account_id=account,
        real_name="Li Lei",
        id_number="110101199003070011",
        method="id_card",
    )
    world.sign(account)
    row = account_row(read, account)
    assert (row["legacy"], row["verified"], row["agreement_version"]) == (
        True,
        True,
        ledger.ruleset.agreement.version,
    )


# ----- sanctions ----------------------------------------------------------------------


def test_a_sanction_row_records_what_was_imposed(
    world: World, ledger: Ledger, read: Reader
) -> None:
    account = world.account()
    post = world.post(account)
    value = world.run(
        c.ImposeSanction,
        account_id=account,
        level="updates_suspended",
        rule_ids=["baseline.authenticity", "art.9"],
        reason="rumour",
        evidence_post_ids=[post],
        duration_days=15,
    )
    event = last_event(ledger, account, "Account.SanctionImposed")
    row = sanction_row(read, UUID(value["sanction_id"]))
    assert {k: row[k] for k in ("account_id", "provider_id", "level", "reason")} == {
        "account_id": account,
        "provider_id": world.provider,
        "level": "updates_suspended",
        "reason": "rumour",
    }
    assert row["rule_ids"] == ["baseline.authenticity", "art.9"]
    assert row["evidence_post_ids"] == [post]
    assert (row["issuer_id"], row["issuer_role"]) == ("acme-ops", "provider")
    assert row["imposed_at"] == event.timestamp
    assert row["expires_at"] == event.timestamp + timedelta(days=15)
    assert (row["lifted_at"], row["appeal_state"]) == (None, "none")


def test_a_regulator_sanction_without_expiry(world: World, read: Reader) -> None:
    sanction = world.sanction(world.account(), "warning")
    row = sanction_row(read, sanction)
    assert (row["issuer_id"], row["issuer_role"], row["expires_at"]) == (
        "inspector",
        "regulator",
        None,
    )
    assert row["evidence_post_ids"] == []


def test_a_lifted_sanction(world: World, ledger: Ledger, read: Reader) -> None:
    account = world.account()
    sanction = world.sanction(account, "publishing_restricted", days=30)
    regulate(world, c.LiftSanction, account, sanction_id=sanction, reason="content corrected")
    lifted = last_event(ledger, account, "Account.SanctionLifted")
    row = sanction_row(read, sanction)
    assert (row["lifted_at"], row["lift_reason"], row["lifted_by"]) == (
        lifted.timestamp,
        "content corrected",
        "inspector",
    )
    assert row["last_position"] == lifted.position


def test_an_appeal_is_pending_then_decided(world: World, ledger: Ledger, read: Reader) -> None:
    account = world.account()
    sanction = world.sanction(account, "publishing_restricted", days=30)
    appeal(world, account, sanction)
    filed = last_event(ledger, account, "Account.SanctionAppealed")
    row = sanction_row(read, sanction)
    assert (row["appeal_state"], row["appeal_grounds"], row["appealed_at"]) == (
        "pending",
        "mistaken",
        filed.timestamp,
    )
    assert row["appeal_decided_at"] is None
    regulate(world, c.DecideAppeal, account, sanction_id=sanction, outcome="upheld", reason="no")
    decided = last_event(ledger, account, "Account.AppealDecided")
    row = sanction_row(read, sanction)
    assert (row["appeal_state"], row["appeal_reason"], row["appeal_decided_by"]) == (
        "upheld",
        "no",
        "inspector",
    )
    assert row["appeal_decided_at"] == decided.timestamp


# ----- history ------------------------------------------------------------------------


def test_history_has_one_row_per_event_in_log_order(
    world: World, ledger: Ledger, read: Reader, clock: Clock
) -> None:
    account, post = busy_history(world, clock)
    expected = events(ledger, account, post)
    found = rows(read, "SELECT * FROM history WHERE account_id = %s ORDER BY position", account)
    assert [(r["position"], r["type"]) for r in found] == [(e.position, e.type) for e in expected]
    assert [r["at"] for r in found] == [e.timestamp for e in expected]
    assert {r["post_id"] for r in found} == {None, post}


def test_history_rows_carry_summary_actor_and_rules(
    world: World, ledger: Ledger, read: Reader
) -> None:
    account = world.account("carol")
    post = world.post(account)
    world.run(c.RecordReach, post_id=post, views=5000, reposts=0)
    world.sanction(account, "updates_suspended", days=7)
    world.run(c.RemovePost, REGULATOR, post_id=post, rule_ids=["art.8"], reason="rumour")
    imposed = last_event(ledger, account, "Account.SanctionImposed")
    until = (imposed.timestamp + timedelta(days=7)).date().isoformat()
    found = rows(
        read,
        "SELECT type, actor_id, actor_role, rule_ids, summary FROM history"
        " WHERE account_id = %s ORDER BY position",
        account,
    )
    by_type = {r["type"]: r for r in found}
    assert by_type["Account.Registered"] == {
        "type": "Account.Registered",
        "actor_id": "acme-ops",
        "actor_role": "provider",
        "rule_ids": [],
        "summary": "registered public account @carol (enterprise)",
    }
    assert by_type["Account.IdentityVerified"]["summary"] == "real identity verified by id_card"
    assert by_type["Account.SanctionImposed"] == {
        "type": "Account.SanctionImposed",
        "actor_id": "inspector",
        "actor_role": "regulator",
        "rule_ids": ["art.9"],
        "summary": f"sanction imposed: updates_suspended until {until} (art.9): breach",
    }
    assert by_type["Post.ThresholdCrossed"]["summary"] == "post crossed 5000 views"
    assert by_type["Post.ThresholdCrossed"]["actor_role"] == "system"
    assert by_type["Post.Removed"]["rule_ids"] == ["art.8"]
    assert by_type["Post.Removed"]["summary"] == "post removed: rumour"


def test_history_is_queryable_by_account_and_time(
    world: World, ledger: Ledger, read: Reader, clock: Clock
) -> None:
    first = world.account()
    second = world.account()
    clock.advance(days=3)
    since = clock.now
    world.sanction(first, "warning")
    world.post(second)
    clock.advance(days=3)
    until = clock.now
    world.sanction(second, "warning")
    window = rows(
        read,
        "SELECT account_id, type FROM history WHERE at >= %s AND at < %s ORDER BY position",
        since,
        until,
    )
    assert window == [
        {"account_id": first, "type": "Account.SanctionImposed"},
        {"account_id": second, "type": "Post.Published"},
    ]
    in_first = rows(read, "SELECT position FROM history WHERE account_id = %s", first)
    assert len(in_first) == len(events(ledger, first))


def test_provider_events_are_not_in_history(
    world: World, ledger: Ledger, read: Reader, clock: Clock
) -> None:
    busy_history(world, clock)
    logged = [e.position for e in ledger.read_log() if not e.type.startswith("Provider.")]
    found = rows(read, "SELECT position FROM history ORDER BY position")
    assert [r["position"] for r in found] == logged
    assert rows(read, "SELECT * FROM history WHERE type LIKE 'Provider.%%'") == []


# ----- flagged posts ------------------------------------------------------------------


def test_reach_over_the_thresholds_flags_the_post_once_per_threshold(
    world: World, ledger: Ledger, read: Reader
) -> None:
    assert ledger.ruleset.thresholds == {"views": (5000,), "reposts": (500,)}
    account = world.account()
    post = world.post(account)
    quiet = world.post(account)
    world.run(c.RecordReach, post_id=quiet, views=4999, reposts=499)
    world.run(c.RecordReach, post_id=post, views=5000, reposts=100)
    world.run(c.RecordReach, post_id=post, views=7000, reposts=650)
    world.run(c.RecordReach, post_id=post, views=9000, reposts=900)
    found = rows(
        read,
        "SELECT post_id, metric, threshold, value, account_id, provider_id, removed_at"
        " FROM flagged_posts ORDER BY position",
    )
    common = {"post_id": post, "account_id": account, "provider_id": world.provider}
    assert found == [
        {**common, "metric": "views", "threshold": 5000, "value": 5000, "removed_at": None},
        {**common, "metric": "reposts", "threshold": 500, "value": 650, "removed_at": None},
    ]


def test_removing_a_flagged_post_sets_removed_at(
    world: World, ledger: Ledger, read: Reader, clock: Clock
) -> None:
    account = world.account()
    post = world.post(account)
    other = world.post(account)
    world.run(c.RecordReach, post_id=post, views=5000, reposts=500)
    world.run(c.RecordReach, post_id=other, views=5000, reposts=0)
    assert {r["removed_at"] for r in rows(read, "SELECT removed_at FROM flagged_posts")} == {None}
    clock.advance(hours=2)
    world.run(c.RemovePost, REGULATOR, post_id=post, rule_ids=["art.8"], reason="rumour")
    removed = last_event(ledger, post, "Post.Removed").timestamp
    found = rows(read, "SELECT post_id, removed_at FROM flagged_posts ORDER BY position")
    assert found == [
        {"post_id": post, "removed_at": removed},
        {"post_id": post, "removed_at": removed},
        {"post_id": other, "removed_at": None},
    ]


# ----- providers ----------------------------------------------------------------------


def figures(reader: Reader, now: datetime, provider: UUID) -> Row:
    (found,) = provider_figures(reader.cursor(), now, [provider])
    return found


def test_provider_figures_count_accounts(
    world: World, ledger: Ledger, read: Reader, clock: Clock
) -> None:
    filed = world.account()
    file(world, filed)
    world.account()
    rejected = world.account(approved=False)
    world.run(c.ReviewAccount, account_id=rejected, outcome="rejected", reason="no licence")
    world.account(verified=False, approved=False)
    suspended = world.account(kind="personal")
    closed = world.account(kind="personal", verified=False, signed=False)
    world.sanction(suspended, "updates_suspended", days=7)
    world.sanction(closed, "closed")
    world.account(ops=world.rival_ops)
    imposed = last_event(ledger, suspended, "Account.SanctionImposed").timestamp
    got = figures(read, clock.now, world.provider)
    assert (got["code"], got["accounts"]) == ("acme", 6)
    assert got["accounts_by_kind"] == {"public": 4, "personal": 2}
    assert got["accounts_by_status"] == {"active": 4, "updates_suspended": 1, "closed": 1}
    assert got["share_verified"] == 0.6667
    assert got["share_public_reviewed"] == 0.75
    assert got["share_public_filed"] == 0.25
    later = figures(read, imposed + LATER, world.provider)
    assert later["accounts_by_status"] == {"active": 5, "closed": 1}


def test_provider_figures_can_be_asked_for_all_or_some(
    world: World, read: Reader, clock: Clock
) -> None:
    world.account(ops=world.rival_ops)
    world.account(ops=world.rival_ops)
    everyone = provider_figures(read.cursor(), clock.now)
    assert [(f["code"], f["accounts"]) for f in everyone] == [("acme", 0), ("rival", 2)]
    assert everyone[0]["share_verified"] is None
    assert everyone[0]["accounts_by_kind"] == {}
    only = provider_figures(read.cursor(), clock.now, [world.rival])
    assert [f["code"] for f in only] == ["rival"]


def test_provider_figures_count_sanctions_and_open_reports(
    world: World, read: Reader, clock: Clock
) -> None:
    account = world.account()
    post = world.post(account)
    world.sanction(account, "warning")
    world.sanction(account, "warning", actor=world.ops)
    world.sanction(account, "publishing_restricted", days=7)
    report(world, post)
    report(world, post)
    resolve(world, post, report(world, post))
    rival = world.account(ops=world.rival_ops)
    world.sanction(rival, "warning")
    report(world, world.post(rival, ops=world.rival_ops), world.rival_ops)
    got = figures(read, clock.now, world.provider)
    assert got["sanctions_by_level"] == {"warning": 2, "publishing_restricted": 1}
    assert got["sanctions_by_issuer_role"] == {"regulator": 2, "provider": 1}
    assert got["open_reports"] == 2


def test_provider_figures_give_percentiles_of_time_to_resolution(
    world: World, read: Reader, clock: Clock
) -> None:
    post = world.post(world.account())
    assert figures(read, clock.now, world.provider)["resolution_seconds_p50"] is None
    for seconds in (30, 10, 20):
        reported = report(world, post)
        clock.advance(seconds=seconds)
        resolve(world, post, reported)
    report(world, post)
    got = figures(read, clock.now, world.provider)
    assert got["resolution_seconds_p50"] == pytest.approx(20, abs=0.01)
    assert got["resolution_seconds_p95"] == pytest.approx(29, abs=0.01)
    assert got["open_reports"] == 1


# ----- replaying ----------------------------------------------------------------------


def test_catching_up_again_changes_nothing(
    world: World, projector: Projector, reader: Reader, clock: Clock
) -> None:
    busy_history(world, clock)
    assert projector.catch_up() > 0
    before = table_contents(reader)
    assert projector.catch_up() == 0
    assert table_contents(reader) == before
    assert all(before[t] for t in ("accounts", "sanctions", "history", "flagged_posts", "reports"))


def test_rebuilding_from_zero_reproduces_the_tables(
    world: World, projector: Projector, reader: Reader, clock: Clock
) -> None:
    busy_history(world, clock)
    projector.catch_up()
    before = table_contents(reader)
    projector.reset()
    assert table_contents(reader)["accounts"] == []
    projector.catch_up()
    after = table_contents(reader)
    assert {t: r for t, r in after.items() if t != "projection_positions"} == {
        t: r for t, r in before.items() if t != "projection_positions"
    }
