"""A batch is one transaction: all of it is recorded, or none of it."""

from __future__ import annotations

from uuid import UUID

import pytest

from ledger import Ledger, LedgerError
from ledger import commands as c
from ledger.domain import ids
from tests.world import World, sha


def lifecycle(world: World, handle: str, key: str) -> list[c.Command]:
    """Register, verify, sign and publish: later commands see what earlier ones did."""
    agreement = world.ledger.ruleset.agreement
    account = ids.account_id(world.provider, handle)
    ops = world.ops
    return [
        c.RegisterAccount(
            actor=ops,
            idempotency_key=f"{key}-reg",
            provider_id=world.provider,
            handle=handle,
            kind="personal",
        ),
        c.VerifyIdentity(
            actor=ops,
            idempotency_key=f"{key}-ver",
            account_id=account,
            real_name="Han Meimei",
            id_number="1",
            method="id_card",
        ),
        c.SignAgreement(
            actor=ops,
            idempotency_key=f"{key}-sign",
            account_id=account,
            agreement_id=agreement.id,
            version=agreement.version,
            text_sha256=agreement.sha256,
            baselines=agreement.baselines,
        ),
        c.PublishPost(
            actor=ops,
            idempotency_key=f"{key}-pub",
            account_id=account,
            ref="1",
            origin="original",
            category="other",
            content_sha256=sha("hello"),
        ),
    ]


def test_a_batch_is_recorded_whole_and_in_order(ledger: Ledger) -> None:
    world = World(ledger)
    results = ledger.submit(lifecycle(world, "alice", "a"))
    positions = [r.position for r in results]
    assert positions == sorted(positions) and None not in positions
    logged = list(ledger.read_log(after=positions[0] - 1))
    assert [e.type for e in logged] == [
        "Account.Registered",
        "Account.IdentityVerified",
        "Account.AgreementSigned",
        "Post.Published",
    ]


def test_a_refused_command_refuses_the_whole_batch(ledger: Ledger) -> None:
    world = World(ledger)
    batch = lifecycle(world, "bob", "b")
    batch.insert(
        3,
        c.ImposeSanction(
            actor=world.ops,
            idempotency_key="b-close",
            account_id=ids.account_id(world.provider, "bob"),
            level="closed",
            rule_ids=["art.9"],
            reason="x",
        ),
    )
    head = ledger.head()
    with pytest.raises(LedgerError) as refused:
        ledger.submit(batch)
    assert refused.value.code == "ACCOUNT_CLOSED"
    assert refused.value.batch_index == 4
    assert ledger.head() == head
    with pytest.raises(LedgerError):
        ledger.get_account(ids.account_id(world.provider, "bob"))
    # The keys were not consumed: the corrected batch goes through.
    del batch[3]
    assert not any(r.replayed for r in ledger.submit(batch))


def test_a_retried_batch_replays_every_command(ledger: Ledger) -> None:
    world = World(ledger)
    first = ledger.submit(lifecycle(world, "carol", "c"))
    head = ledger.head()
    again = ledger.submit(lifecycle(world, "carol", "c"))
    assert [r.replayed for r in again] == [True] * 4
    assert [r.value for r in again] == [r.value for r in first]
    assert [r.position for r in again] == [r.position for r in first]
    assert ledger.head() == head


def test_a_batch_mixing_replays_and_new_commands(ledger: Ledger) -> None:
    world = World(ledger)
    batch = lifecycle(world, "dan", "d")
    ledger.submit(batch[:2])
    results = ledger.submit(batch)
    assert [r.replayed for r in results] == [True, True, False, False]
    assert UUID(results[3].value["post_id"]) == ids.post_id(
        ids.account_id(world.provider, "dan"), "1"
    )


def test_a_batch_may_not_repeat_a_key(ledger: Ledger) -> None:
    world = World(ledger)
    batch = lifecycle(world, "eve", "e")
    with pytest.raises(LedgerError) as refused:
        ledger.submit([*batch, batch[0]])
    assert refused.value.code == "INVALID_ARGUMENT"


def test_an_existing_aggregate_is_refused_with_its_batch_index(ledger: Ledger) -> None:
    world = World(ledger)
    world.account("taken", kind="personal")
    head = ledger.head()
    batch = lifecycle(world, "free", "f")
    taken = c.RegisterAccount(
        actor=world.ops,
        idempotency_key="t",
        provider_id=world.provider,
        handle="Taken",
        kind="personal",
    )
    for position in (1, len(batch)):
        with pytest.raises(LedgerError) as refused:
            ledger.submit([*batch[:position], taken, *batch[position:]])
        assert refused.value.code == "ALREADY_EXISTS"
        assert refused.value.batch_index == position
    with pytest.raises(LedgerError) as refused:
        ledger.submit([batch[0], *lifecycle(world, "free", "g")[:1]])
    assert (refused.value.code, refused.value.batch_index) == ("ALREADY_EXISTS", 1)
    assert ledger.head() == head
