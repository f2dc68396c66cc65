"""What one process writes, another process reads and writes again: nothing the ledger
needs may live only in the memory of the process that wrote it."""

from __future__ import annotations

from ledger import Ledger
from ledger import commands as c
from ledger.application import SNAPSHOT_INTERVAL
from tests.cold import ColdProcess
from tests.world import World

LOAD_AND_WRITE = """
ops = Actor(args["ops"], Role.PROVIDER, args["provider"])
post = ledger.get_post(args["post"])
account = ledger.get_account(args["account"])
ledger.execute(c.RecordReach(actor=ops, idempotency_key="cold-reach",
                             post_id=post.id, views=post.views + 1, reposts=0))
ledger.execute(c.ImposeSanction(actor=ops, idempotency_key="cold-warn", account_id=account.id,
                                level="warning", rule_ids=["art.9"], reason="cold"))
result = {"views": ledger.get_post(post.id).views,
          "sanctions": len(ledger.get_account(account.id).sanctions)}
"""


def test_snapshotted_aggregates_load_and_take_commands_in_a_new_process(
    ledger: Ledger, cold: ColdProcess
) -> None:
    world = World(ledger)
    account = world.account()
    post = world.post(account)
    for views in range(1, SNAPSHOT_INTERVAL + 6):
        world.run(c.RecordReach, post_id=post, views=views, reposts=0)
    for _ in range(SNAPSHOT_INTERVAL + 2):
        world.sanction(account, "warning")

    got = cold.run(
        LOAD_AND_WRITE,
        ops=world.ops.id,
        provider=str(world.provider),
        post=str(post),
        account=str(account),
    )

    assert got == {"views": SNAPSHOT_INTERVAL + 6, "sanctions": SNAPSHOT_INTERVAL + 3}
    # The other process's writes are visible here, through the snapshots it may have taken.
    assert ledger.get_post(post).views == SNAPSHOT_INTERVAL + 6
    assert ledger.get_account(account).version > SNAPSHOT_INTERVAL
