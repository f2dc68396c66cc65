"""Sanctions lapse by time, appeals restore what a sanction took, reports keep their
time to resolution, reach crosses thresholds once."""

from __future__ import annotations

from datetime import timedelta

from ledger import Ledger
from ledger import commands as c
from ledger.domain import AccountStatus
from tests.conftest import Clock
from tests.world import REGULATOR, World


def test_a_suspension_lapses_at_its_expiry_without_an_event(ledger: Ledger, clock: Clock) -> None:
    world = World(ledger)
    account = world.account()
    world.sanction(account, "updates_suspended", days=7)
    imposed_at = clock.now
    head = ledger.head()
    state = ledger.get_account(account)
    assert (
        state.status(imposed_at + timedelta(days=7) - timedelta(seconds=1))
        is AccountStatus.UPDATES_SUSPENDED
    )
    assert state.status(imposed_at + timedelta(days=7, seconds=1)) is AccountStatus.ACTIVE
    # Publishing is refused before, and allowed after, with nobody writing in between.
    clock.advance(days=7, seconds=1)
    assert ledger.head() == head
    world.post(account)


def test_due_expiries_are_listed(ledger: Ledger, clock: Clock) -> None:
    world = World(ledger)
    short, long_, lifted, forever = (world.account() for _ in range(4))
    s_short = world.sanction(short, "publishing_restricted", days=7)
    world.sanction(long_, "updates_suspended", days=90)
    s_lifted = world.sanction(lifted, "updates_suspended", days=15)
    world.run(c.LiftSanction, REGULATOR, account_id=lifted, sanction_id=s_lifted, reason="fixed")
    world.sanction(forever, "updates_suspended")  # indefinite
    assert ledger.due_expiries() == []
    due = ledger.due_expiries(clock.now + timedelta(days=8))
    assert [(d.account_id, d.sanction_id) for d in due] == [(short, str(s_short))]
    clock.advance(days=100)
    assert {d.account_id for d in ledger.due_expiries()} == {short, long_}


def test_an_overturned_closure_reopens_the_account(ledger: Ledger) -> None:
    world = World(ledger)
    account = world.account()
    closure = world.sanction(account, "closed")
    assert ledger.get_account(account).status(ledger.clock()) is AccountStatus.CLOSED
    world.run(
        c.AppealSanction, account_id=account, sanction_id=closure, grounds="mistaken identity"
    )
    world.run(
        c.DecideAppeal,
        REGULATOR,
        account_id=account,
        sanction_id=closure,
        outcome="overturned",
        reason="evidence was of another account",
    )
    assert ledger.get_account(account).status(ledger.clock()) is AccountStatus.ACTIVE
    world.post(account)


def test_an_upheld_appeal_keeps_the_sanction(ledger: Ledger) -> None:
    world = World(ledger)
    account = world.account()
    restriction = world.sanction(account, "publishing_restricted", days=30)
    world.run(c.AppealSanction, account_id=account, sanction_id=restriction, grounds="satire")
    world.run(
        c.DecideAppeal,
        REGULATOR,
        account_id=account,
        sanction_id=restriction,
        outcome="upheld",
        reason="not satire",
    )
    state = ledger.get_account(account)
    assert state.status(ledger.clock()) is AccountStatus.PUBLISHING_RESTRICTED
    appeal = state.sanctions[str(restriction)]["appeal"]
    assert appeal is not None and appeal["outcome"] == "upheld"


def test_the_most_severe_sanction_in_force_sets_the_status(ledger: Ledger, clock: Clock) -> None:
    world = World(ledger)
    account = world.account()
    world.sanction(account, "warning")
    world.sanction(account, "publishing_restricted", days=30)
    world.sanction(account, "updates_suspended", days=7)
    state = ledger.get_account(account)
    assert state.status(clock.now) is AccountStatus.UPDATES_SUSPENDED
    assert state.status(clock.now + timedelta(days=8)) is AccountStatus.PUBLISHING_RESTRICTED
    assert state.status(clock.now + timedelta(days=31)) is AccountStatus.ACTIVE


def test_a_sanction_records_issuer_rules_evidence_and_expiry(ledger: Ledger, clock: Clock) -> None:
    world = World(ledger)
    account = world.account()
    post = world.post(account)
    result = world.run(
        c.ImposeSanction,
        world.ops,
        account_id=account,
        level="updates_suspended",
        rule_ids=["baseline.authenticity", "art.9"],
        reason="rumour",
        evidence_post_ids=[post],
        duration_days=15,
    )
    (event,) = [
        e for e in ledger.read_log(originator_id=account) if e.type == "Account.SanctionImposed"
    ]
    assert event.actor == world.ops.as_dict()
    assert event.payload["rule_ids"] == ["baseline.authenticity", "art.9"]
    assert event.payload["evidence_post_ids"] == [str(post)]
    assert event.payload["expires_at"] == result["expires_at"]
    assert event.payload["expires_at"] == (event.timestamp + timedelta(days=15)).isoformat()


def test_reports_keep_their_time_to_resolution(ledger: Ledger, clock: Clock) -> None:
    world = World(ledger)
    post = world.post(world.account())
    report = world.run(c.ReportPost, post_id=post, reporter="user-9", reason="rumour")["report_id"]
    clock.advance(hours=3)
    world.run(
        c.ResolveReport,
        REGULATOR,
        post_id=post,
        report_id=report,
        outcome="upheld",
        reason="false claim",
    )
    resolved = ledger.get_post(post).reports[report]
    assert resolved["outcome"] == "upheld"
    assert resolved["handler"] == REGULATOR
    assert 3 * 3600 <= (resolved["seconds_to_resolve"] or 0) < 3 * 3600 + 1


def test_thresholds_are_crossed_once(ledger: Ledger) -> None:
    world = World(ledger)
    post = world.post(world.account())
    crossed = [
        world.run(c.RecordReach, post_id=post, views=views, reposts=reposts)["thresholds_crossed"]
        for views, reposts in ((4999, 499), (5000, 10_000), (80_000, 10_000), (80_000, 20_000))
    ]
    assert crossed == [[], ["views:5000", "reposts:500"], [], []]
    types = [e.type for e in ledger.read_log(originator_id=post)]
    assert types.count("Post.ThresholdCrossed") == 2
