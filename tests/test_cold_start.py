"""What one process writes, another process reads and writes again: nothing the ledger
needs may live only in the memory of the process that wrote it."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import httpx
import pytest

from api.auth import create_schema, create_token
from ledger import Database, Ledger, LedgerError
from ledger import commands as c
from ledger.application import SNAPSHOT_INTERVAL
from tests.api_server import free_port
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


def snapshotted(world: World) -> tuple[UUID, UUID]:
    """An account and a post each past the snapshot interval."""
    account = world.account()
    post = world.post(account)
    for views in range(1, SNAPSHOT_INTERVAL + 6):
        world.run(c.RecordReach, post_id=post, views=views, reposts=0)
    for _ in range(SNAPSHOT_INTERVAL + 2):
        world.sanction(account, "warning")
    return account, post


def test_snapshotted_aggregates_load_and_take_commands_in_a_new_process(
    ledger: Ledger, cold: ColdProcess
) -> None:
    world = World(ledger)
    account, post = snapshotted(world)
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


REACH = """mutation($post: ID!, $key: String!, $views: Int!) { recordReach(input: {postId: $post,
  views: $views, reposts: 0}, idempotencyKey: $key) {
  __typename ... on CommandSuccess { position } ... on MutationError { code } } }"""
READ = """query($id: ID!) { account(id: $id) { id sanctionsByLevel { level count } }
  post: accountAsOf(id: $id, position: "1") { id }
  ledgerStatus { projections { name lagEvents failures } } }"""


def gql(url: str, token: str, query: str, **variables: Any) -> dict[str, Any]:
    response = httpx.post(url, json={"query": query, "variables": variables},
                          headers={"Authorization": f"Bearer {token}"}, timeout=30)  # fmt: skip
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    return body["data"]


def token_for(database: Database, schema: str, world: World) -> str:
    with database.connect() as conn:
        create_schema(conn, schema)
        conn.commit()
        return create_token(conn, schema, "provider", world.provider, "cold")[1]


def test_a_new_server_process_reads_and_writes_what_this_process_wrote(
    ledger: Ledger, database: Database, schema: str, cold: ColdProcess
) -> None:
    world = World(ledger)
    account, post = snapshotted(world)
    token = token_for(database, schema, world)
    for run in range(2):  # a first server, then a second after it stopped
        with cold.serve(free_port()) as url:
            wrote = gql(url, token, REACH, post=str(post), key=f"cold-{run}",
                        views=10_000 * (run + 1))["recordReach"]  # fmt: skip
            assert wrote["__typename"] == "CommandSuccess", wrote
            read = gql(url, token, READ, id=str(account))
            assert read["account"]["sanctionsByLevel"] == [
                {"level": "warning", "count": SNAPSHOT_INTERVAL + 2}
            ]
            assert read["post"] is None  # the account did not exist at position 1
        world.run(c.RecordReach, post_id=post, views=10_000 * (run + 1) + 5, reposts=0)
    assert ledger.get_post(post).views == 20_005


def test_the_read_side_in_new_processes(
    ledger: Ledger, database: Database, schema: str, cold: ColdProcess
) -> None:
    world = World(ledger)
    account, post = snapshotted(world)
    # An event an older release let through: a NUL in a stored reason.
    command = c.ReportPost(actor=world.ops, idempotency_key="nul", post_id=post,
                           reporter="user", reason="placeholder")  # fmt: skip
    object.__setattr__(command, "reason", "bad\x00reason")
    ledger.execute(command)
    for args in (("rebuild",), ("rebuild", "--verify"), ("status",)):
        done = cold.cli(*args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
    with database.connect(schema) as conn:
        history = conn.execute(
            "SELECT count(*) FROM history WHERE account_id = %s", (account,)
        ).fetchone()
        reported = conn.execute("SELECT reports_total FROM posts WHERE post_id = %s", (post,))
        assert reported.fetchone() == (1,)
    assert history is not None and history[0] > 2 * SNAPSHOT_INTERVAL


def test_a_cached_aggregate_sees_what_another_process_wrote(
    ledger: Ledger, cold: ColdProcess
) -> None:
    world = World(ledger)
    account = world.account()
    world.post(account)  # this process now holds the account in its aggregate cache
    cold.run(
        """
ledger.execute(c.ImposeSanction(actor=Actor("inspector", Role.REGULATOR), idempotency_key="x",
               account_id=args["account"], level="closed", rule_ids=["art.9"], reason="r"))
""",
        account=str(account),
    )
    with pytest.raises(LedgerError) as refused:  # the cached copy is brought up to date
        world.post(account)
    assert refused.value.code == "ACCOUNT_CLOSED"
