"""`ledger webhooks list|show|replay|resume` in new processes, against a running worker."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from ledger import Ledger
from ledger import commands as c
from tests.webhook_receiver import Receiver, Workers, endpoint_events, wait_for, worker_env
from tests.world import World


@pytest.fixture
def ledger(make_ledger) -> Ledger:  # type: ignore[no-untyped-def]
    return make_ledger(clock=lambda: datetime.now(UTC))  # type: ignore[no-any-return]


def test_list_show_replay_resume(cold, ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("LEDGER_WEBHOOK_ALLOW_LOOPBACK", "1")
    receiver = Receiver()
    workers = Workers(worker_env(cold.env))
    try:
        world = World(ledger)
        account = world.account()
        value = world.run(c.RegisterWebhookEndpoint, provider_id=world.provider,
                          url=receiver.url)  # fmt: skip
        endpoint = str(value["endpoint_id"])
        workers.start("projector")
        workers.start("deliver")
        world.sanction(account, "warning")
        world.sanction(account, "warning")
        wait_for(lambda: len(receiver.acked()) == 2, 30, "two deliveries")

        def cli(*args: str) -> list[dict[str, object]]:
            done = cold.cli("webhooks", *args)
            assert done.returncode == 0, done.stderr
            return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]

        wait_for(lambda: [r["pending"] for r in cli("list")] == [0], 20, "no lag in the list")
        (listed,) = cli("list", "--provider", str(world.provider))
        assert listed["endpoint_id"] == endpoint and listed["status"] == "active"
        shown = cli("show", endpoint)
        assert shown[0]["endpoint_id"] == endpoint and [a["status"] for a in shown[1:]] == [
            200, 200
        ]
        first = json.loads(receiver.acked()[0].body)["data"]["position"]
        done = cold.cli("webhooks", "replay", endpoint, "--from-position", first)
        assert done.returncode == 0 and "replay: recorded" in done.stdout
        wait_for(lambda: len(receiver.acked()) == 4, 30, "the replay")
        world.run(c.PauseWebhookEndpoint, provider_id=world.provider, endpoint_id=endpoint,
                  reason="maintenance")  # fmt: skip
        done = cold.cli("webhooks", "resume", endpoint)
        assert done.returncode == 0, done.stderr
        assert endpoint_events(ledger, endpoint, "Resumed")[0].actor["role"] == "system"
        missing = cold.cli("webhooks", "show", "00000000-0000-0000-0000-000000000000")
        assert missing.returncode == 1 and "no such webhook endpoint" in missing.stderr
        bad = cold.cli("webhooks", "show", "not-an-id")
        assert bad.returncode == 2 and "Traceback" not in bad.stderr
    finally:
        workers.stop()
        receiver.close()
