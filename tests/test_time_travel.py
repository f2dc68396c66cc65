"""Time travel: the state at every position and moment of a scripted history is what it
was then."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ledger import Ledger, LedgerError
from ledger import commands as c
from ledger.views import account_view
from tests.conftest import Clock
from tests.world import REGULATOR, World


def test_state_at_every_position_and_moment(ledger: Ledger, clock: Clock) -> None:
    world = World(ledger)
    account = world.account(category="government", approved=False)
    seen = []  # (position, moment, view) after each command

    def step(cls: type[c.Command], actor=None, **args) -> None:  # type: ignore[no-untyped-def]
        clock.advance(hours=1)
        position = ledger.execute(
            cls(actor=actor or world.ops, idempotency_key=world.key(), account_id=account, **args)
        ).position
        moment = clock.now
        seen.append(
            (position, moment, account_view(ledger.get_account(account), ledger.ruleset, moment))
        )

    step(c.ReviewAccount, outcome="approved", reason="ok")
    step(c.FileAccount, authority="cac", reference="F-1", category="government")
    step(c.GrantNewsPermission, REGULATOR, scope="publish", basis="state council")
    step(c.MarkAccount)
    step(
        c.ImposeSanction,
        REGULATOR,
        level="updates_suspended",
        rule_ids=["art.9"],
        reason="x",
        duration_days=7,
    )
    sanction = ledger.get_account(account).sanctions
    (sanction_id,) = sanction
    step(c.AppealSanction, sanction_id=sanction_id, grounds="satire")
    step(c.DecideAppeal, REGULATOR, sanction_id=sanction_id, outcome="overturned", reason="ok")
    step(c.RevokeNewsPermission, REGULATOR, scope="publish", reason="ended")

    for position, moment, view in seen:
        at_position = ledger.account_at(account, position=position)
        assert account_view(at_position, ledger.ruleset, moment) == view
        at_moment = ledger.account_at(account, at=moment + timedelta(minutes=30))
        assert account_view(at_moment, ledger.ruleset, moment) == view


def test_before_it_existed(ledger: Ledger, clock: Clock) -> None:
    world = World(ledger)
    head = ledger.head()
    account = world.account()
    with pytest.raises(LedgerError) as refused:
        ledger.account_at(account, position=head)
    assert refused.value.code == "NOT_FOUND_AT_POSITION"
    with pytest.raises(LedgerError) as refused:
        ledger.account_at(account, at=clock.now - timedelta(days=1))
    assert refused.value.code == "NOT_FOUND_AT_POSITION"


def test_bad_time_travel_arguments(ledger: Ledger) -> None:
    world = World(ledger)
    account = world.account()
    for kwargs in (
        {},
        {"position": 1, "at": ledger.clock()},
        {"at": ledger.clock().replace(tzinfo=None)},
    ):
        with pytest.raises(LedgerError) as refused:
            ledger.account_at(account, **kwargs)  # type: ignore[arg-type]
        assert refused.value.code == "INVALID_ARGUMENT"
    with pytest.raises(LedgerError) as refused:
        ledger.account_at("not-an-id", position=1)
    assert refused.value.code == "INVALID_ARGUMENT"


def test_post_as_of(ledger: Ledger) -> None:
    world = World(ledger)
    post = world.post(world.account())
    first = ledger.execute(
        c.RecordReach(actor=world.ops, idempotency_key="r1", post_id=post, views=6000, reposts=1)
    )
    ledger.execute(
        c.RecordReach(actor=world.ops, idempotency_key="r2", post_id=post, views=9000, reposts=600)
    )
    then = ledger.post_at(post, position=first.position)  # type: ignore[arg-type]
    assert (then.views, then.crossed) == (6000, ["views:5000"])
    now = ledger.get_post(post)
    assert (now.views, now.crossed) == (9000, ["views:5000", "reposts:500"])
