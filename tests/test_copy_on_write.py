"""Commands change copies of the aggregates held in memory (`unit_of_work.fork`), copies that
share the original's containers. A refused batch that went through every event handler
first must leave the held aggregates exactly as they were; an accepted one leaves them as a
replay of the stored events builds them."""

from __future__ import annotations

import copy
import uuid
from typing import Any
from uuid import UUID

from eventsourcing.application import project_aggregate

from ledger import Actor, Ledger, Role, errors
from ledger import commands as c
from tests.world import REGULATOR, World


def held(ledger: Ledger, aggregate_id: UUID) -> dict[str, Any]:
    """The state of the aggregate the ledger holds in memory (not a copy of it)."""
    assert ledger.repository.cache is not None
    return dict(ledger.repository.cache.get(aggregate_id).__dict__)


def replayed(ledger: Ledger, aggregate_id: UUID) -> dict[str, Any]:
    aggregate = project_aggregate(None, ledger.events.get(aggregate_id))
    assert aggregate is not None
    return dict(aggregate.__dict__)


def every_handler(world: World, admin: Actor) -> tuple[list[c.Command], list[UUID]]:
    """A batch whose events run every handler that changes a container, with what it
    touches."""
    account, ops = world.account("cow"), world.ops
    post = world.post(account)
    world.run(c.GrantNewsPermission, admin, account_id=account, scope="reprint", basis="b")
    lifted, decided, appealed = (world.sanction(account, "warning") for _ in range(3))
    world.run(c.AppealSanction, ops, account_id=account, sanction_id=decided, grounds="g")
    report = world.run(c.ReportPost, ops, post_id=post, reporter="r", reason="spam")["report_id"]

    def cmd(command: type[c.Command], actor: Actor, **args: Any) -> c.Command:
        return command(actor=actor, idempotency_key=world.key(), **args)

    batch = [
        cmd(c.GrantNewsPermission, admin, account_id=account, scope="publish", basis="b"),
        cmd(c.RevokeNewsPermission, admin, account_id=account, scope="reprint", reason="r"),
        cmd(c.LiftSanction, REGULATOR, account_id=account, sanction_id=lifted, reason="r"),
        cmd(c.AppealSanction, ops, account_id=account, sanction_id=appealed, grounds="g"),
        cmd(
            c.DecideAppeal,
            REGULATOR,
            account_id=account,
            sanction_id=decided,
            outcome="overturned",
            reason="r",
        ),
        cmd(
            c.ImposeSanction,
            REGULATOR,
            account_id=account,
            level="warning",
            rule_ids=("art.9",),
            reason="r",
        ),
        cmd(c.ResolveReport, ops, post_id=post, report_id=UUID(report), outcome="upheld",
            reason="r"),
        cmd(c.ReportPost, ops, post_id=post, reporter="r2", reason="spam"),
        cmd(c.RecordReach, ops, post_id=post, views=6000, reposts=600),
        cmd(c.RecordQualification, REGULATOR, provider_id=world.provider, qualification="q",
            reference="ref"),
    ]  # fmt: skip
    return batch, [account, post, world.provider]


def test_a_refused_batch_leaves_the_held_aggregates_as_they_were(ledger: Ledger) -> None:
    world = World(ledger)
    admin = Actor("admin", Role.REGULATOR)
    batch, touched = every_handler(world, admin)
    before = {a: copy.deepcopy(held(ledger, a)) for a in touched}
    missing = c.LiftSanction(
        actor=REGULATOR,
        idempotency_key=world.key(),
        account_id=touched[0],
        sanction_id=uuid.uuid4(),
        reason="r",
    )
    head = ledger.head()
    try:
        ledger.submit([*batch, missing])
    except errors.LedgerError as e:
        assert e.batch_index == len(batch)
    else:
        raise AssertionError("the batch was accepted")
    assert ledger.head() == head
    for a in touched:
        assert held(ledger, a) == before[a]
        assert held(ledger, a) == replayed(ledger, a)

    results = ledger.submit(batch)  # the same, accepted: held is what a replay builds
    assert not any(r.replayed for r in results)
    for a in touched:
        assert held(ledger, a) != before[a]
        assert held(ledger, a) == replayed(ledger, a)
    account = ledger.get_account(touched[0])
    assert set(account.news_grants) == {"publish"}
    assert len(account.sanctions) == 4
    post = ledger.get_post(touched[1])
    assert post.crossed and len(post.reports) == 2
