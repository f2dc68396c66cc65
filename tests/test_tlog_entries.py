"""Every event fits a C2SP entry (65,535 bytes): a command whose event would not is
refused at the door with ENTRY_TOO_LARGE, over GraphQL too, and writes nothing."""

from __future__ import annotations

import hashlib
from uuid import UUID

from ledger import Ledger
from ledger import commands as c
from ledger.tlog.tiles import MAX_ENTRY_BYTES
from tests.api_server import ApiServer
from tests.world import World

MUTATION = """mutation ($input: ImposeSanctionInput!, $key: String!) {
  imposeSanction(input: $input, idempotencyKey: $key) {
    __typename ... on CommandSuccess { position }
    ... on MutationError { code message details } } }"""


def posts(world: World, account: UUID, count: int) -> list[str]:
    commands = [
        c.PublishPost(actor=world.ops, idempotency_key=f"many-{i}", account_id=account,
                      ref=f"many-{i}", origin="original", category="other",
                      content_sha256=hashlib.sha256(b"%d" % i).hexdigest())
        for i in range(count)
    ]  # fmt: skip
    ids = []
    for start in range(0, count, 500):
        ids += [r.value["post_id"] for r in world.ledger.submit(commands[start : start + 500])]
    return ids


def test_an_event_too_large_for_an_entry_is_refused_and_writes_nothing(
    server: ApiServer, ledger: Ledger
) -> None:
    world = World(ledger)
    account = world.account()
    evidence = posts(world, account, 1_800)
    token = server.token("regulator")
    reason = "\U0001f600" * 2000  # 8,000 bytes of UTF-8
    head = ledger.head()

    def sanction(ids: list[str], key: str) -> dict[str, object]:
        payload = {"accountId": str(account), "level": "warning", "ruleIds": ["art.9"],
                   "reason": reason, "evidencePostIds": ids}  # fmt: skip
        result: dict[str, object] = server.data(MUTATION, token, input=payload, key=key)[
            "imposeSanction"
        ]
        return result

    refused = sanction(evidence, "too-large")
    assert refused["__typename"] == "InvalidInput" and refused["code"] == "ENTRY_TOO_LARGE"
    assert refused["details"]["entry_bytes"] > MAX_ENTRY_BYTES  # type: ignore[index]
    assert ledger.head() == head
    # The same, smaller, fits: the largest entry it makes is recorded whole.
    accepted = sanction(evidence[:1_200], "fits")
    assert accepted["__typename"] == "CommandSuccess"
    (stored,) = ledger.store.select_notifications(start=head + 1, limit=1)
    assert ledger.head() == head + 1 == int(str(accepted["position"]))
    assert 50_000 < len(stored.state) < MAX_ENTRY_BYTES
    # A retry of the refused command is refused again, still writing nothing.
    again = sanction(evidence, "too-large")
    assert again["code"] == "ENTRY_TOO_LARGE" and ledger.head() == head + 1
