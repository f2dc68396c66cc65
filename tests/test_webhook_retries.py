"""Retries and their rules, on a compressed clock: the schedule, Retry-After and its cap,
410 pauses at once, a 3xx is a failure and no redirect is followed, the failure window
pauses (never skips) and a resume delivers every pending event in order, replay re-sends
with the original ids, and a name that resolves to loopback at delivery is refused."""

from __future__ import annotations

import itertools
import json
import time
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
import standardwebhooks

from ledger import Ledger
from ledger import commands as c
from ledger.webhooks import KeyMaterial
from tests.webhook_receiver import (
    Receiver,
    Workers,
    attempts,
    endpoint_events,
    wait_for,
)
from tests.world import REGULATOR, World


@pytest.fixture
def ledger(make_ledger) -> Ledger:  # type: ignore[no-untyped-def]
    """On the real clock: the worker compares key validity and event times with it."""
    return make_ledger(clock=lambda: datetime.now(UTC))  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_WEBHOOK_ALLOW_LOOPBACK", "1")


def setup(ledger: Ledger, url: str) -> tuple[World, UUID, dict[str, Any]]:
    world = World(ledger)
    account = world.account()
    value = world.run(c.RegisterWebhookEndpoint, provider_id=world.provider, url=url)
    return world, account, value


def arrivals(receiver: Receiver) -> list[float]:
    return [r.at for r in receiver.received]


def test_the_schedule_is_followed_with_the_same_id(
    ledger: Ledger, receiver: Receiver, workers: Workers, database: Any, schema: str
) -> None:
    answers = iter([500, 502, 404, 200])
    receiver.answer = lambda r: (next(answers), {})
    world, account, value = setup(ledger, receiver.url)
    workers.start("deliver", LEDGER_WEBHOOK_RETRY_SCHEDULE="0,0.6,1.2,1.8")
    world.sanction(account, "warning")
    wait_for(lambda: len(receiver.acked()) == 1, 30, "the fourth attempt to succeed")
    times = arrivals(receiver)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for gap, step in zip(gaps, [0.6, 1.2, 1.8], strict=True):
        assert step * 0.9 - 0.05 <= gap <= step * 1.1 + 0.5, (gaps, step)
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    # Each attempt signed anew, with its own timestamp.
    assert len({r.headers["webhook-timestamp"] for r in receiver.received}) >= 2
    wait_for(lambda: len(attempts(database, schema, value["endpoint_id"])) == 4, 10, "attempts")
    logged = attempts(database, schema, value["endpoint_id"])
    assert [a["attempt"] for a in logged] == [1, 2, 3, 4]
    assert [a["status"] for a in logged] == [500, 502, 404, 200]
    assert all(a["key_ids"] == [value["key_id"]] for a in logged)


def test_retry_after_is_honoured_up_to_the_cap(
    ledger: Ledger, receiver: Receiver, workers: Workers
) -> None:
    answers = iter([(503, {"Retry-After": "1"}), (429, {"Retry-After": "100"}), (200, {})])
    receiver.answer = lambda r: next(answers)
    world, account, _ = setup(ledger, receiver.url)
    workers.start("deliver", LEDGER_WEBHOOK_RETRY_SCHEDULE="0,30",
                  LEDGER_WEBHOOK_RETRY_AFTER_MAX="2")  # fmt: skip
    world.sanction(account, "warning")
    wait_for(lambda: len(receiver.acked()) == 1, 30, "the third attempt")
    first, second, third = arrivals(receiver)
    assert 0.9 <= second - first <= 1.6  # Retry-After: 1, not the schedule's 30 s
    assert 1.8 <= third - second <= 2.6  # Retry-After: 100, capped at 2


def test_410_pauses_at_once_and_resume_delivers_everything_in_order(
    ledger: Ledger, receiver: Receiver, workers: Workers
) -> None:
    gone = [True]
    receiver.answer = lambda r: (410, {}) if gone[0] else (200, {})
    world, account, value = setup(ledger, receiver.url)
    workers.start("deliver", LEDGER_WEBHOOK_RETRY_SCHEDULE="0,0.2")
    world.sanction(account, "warning")
    endpoint = str(value["endpoint_id"])
    wait_for(lambda: bool(endpoint_events(ledger, endpoint, "Paused")), 30, "the pause")
    (paused,) = endpoint_events(ledger, endpoint, "Paused")
    assert "410" in paused.payload["reason"] and paused.actor["role"] == "system"
    for _ in range(5):
        world.sanction(account, "warning")
    time.sleep(1.5)
    assert len(receiver.received) == 1  # nothing more while paused
    gone[0] = False
    world.run(c.ResumeWebhookEndpoint, provider_id=world.provider, endpoint_id=endpoint)
    wait_for(lambda: len(receiver.acked()) == 6, 30, "every pending delivery")
    sequences = [json.loads(r.body)["data"]["sequence"] for r in receiver.acked()]
    assert sequences == [1, 2, 3, 4, 5, 6]


def test_a_redirect_is_a_failure_and_is_not_followed(
    ledger: Ledger, receiver: Receiver, workers: Workers, database: Any, schema: str
) -> None:
    elsewhere = Receiver()
    try:
        receiver.answer = lambda r: (301, {"Location": elsewhere.url})
        world, account, value = setup(ledger, receiver.url)
        workers.start("deliver", LEDGER_WEBHOOK_RETRY_SCHEDULE="0,0.3")
        world.sanction(account, "warning")
        wait_for(lambda: len(receiver.received) >= 3, 30, "three attempts")
        assert elsewhere.received == []
        logged = attempts(database, schema, str(value["endpoint_id"]))
        assert {a["status"] for a in logged} == {301}
    finally:
        elsewhere.close()


def test_the_failure_window_pauses_never_skips(
    ledger: Ledger, receiver: Receiver, workers: Workers
) -> None:
    failing = [True]
    receiver.answer = lambda r: (500, {}) if failing[0] else (200, {})
    world, account, value = setup(ledger, receiver.url)
    other = world.account()
    endpoint = str(value["endpoint_id"])
    workers.start("deliver", LEDGER_WEBHOOK_RETRY_SCHEDULE="0,0.3",
                  LEDGER_WEBHOOK_FAILURE_WINDOW="2")  # fmt: skip
    world.sanction(account, "warning")
    world.sanction(other, "warning")
    wait_for(lambda: bool(endpoint_events(ledger, endpoint, "Paused")), 30, "the pause")
    (paused,) = endpoint_events(ledger, endpoint, "Paused")
    assert "failure window" in paused.payload["reason"]
    for _ in range(3):
        world.sanction(account, "warning")
        world.sanction(other, "warning")
    failing[0] = False
    world.run(c.ResumeWebhookEndpoint, REGULATOR, provider_id=world.provider,
              endpoint_id=endpoint)  # fmt: skip
    wait_for(lambda: len(receiver.acked()) == 8, 30, "all eight, none skipped")
    per: dict[str, list[int]] = {}
    for r in receiver.acked():
        data = json.loads(r.body)["data"]
        per.setdefault(data["originatorId"], []).append(data["sequence"])
    assert sorted(per.values()) == [[1, 2, 3, 4], [1, 2, 3, 4]]


def test_replay_resends_with_the_original_ids(
    ledger: Ledger, receiver: Receiver, workers: Workers
) -> None:
    world, account, value = setup(ledger, receiver.url)
    workers.start("deliver")
    for _ in range(4):
        world.sanction(account, "warning")
    wait_for(lambda: len(receiver.acked()) == 4, 30, "four deliveries")
    first = [(r.headers["webhook-id"], json.loads(r.body)["data"]) for r in receiver.acked()]
    third = int(first[2][1]["position"])
    world.run(c.ReplayWebhookEndpoint, provider_id=world.provider,
              endpoint_id=value["endpoint_id"], from_position=third)  # fmt: skip
    wait_for(lambda: len(receiver.acked()) == 6, 30, "the replay")
    again = [(r.headers["webhook-id"], json.loads(r.body)["data"]) for r in receiver.acked()[4:]]
    assert [i for i, _ in again] == [i for i, _ in first[2:]]
    assert [d["sequence"] for _, d in again] == [3, 4]
    # From a moment: the event time of the second one on.
    since = first[1][1]["at"]
    world.run(c.ReplayWebhookEndpoint, provider_id=world.provider,
              endpoint_id=value["endpoint_id"], from_time=since)  # fmt: skip
    wait_for(lambda: len(receiver.acked()) == 9, 30, "the replay by time")
    assert [r.headers["webhook-id"] for r in receiver.acked()[6:]] == [i for i, _ in first[1:]]


def test_rotation_signs_with_both_secrets_during_the_grace_period_only(
    ledger: Ledger, receiver: Receiver, workers: Workers
) -> None:
    world, account, value = setup(ledger, receiver.url)
    endpoint = UUID(str(value["endpoint_id"]))
    old = KeyMaterial.from_bytes(ledger.webhook_secrets(endpoint)[0][1])
    workers.start("deliver")
    world.sanction(account, "warning")  # the worker is up and delivering before the rotation
    wait_for(lambda: len(receiver.acked()) == 1, 60, "a delivery before the rotation")
    rotated = world.run(c.RotateWebhookSecret, provider_id=world.provider,
                        endpoint_id=str(endpoint), grace_seconds=8)  # fmt: skip
    ends = time.monotonic() + 8
    time.sleep(1.2)  # a worker reads an endpoint's keys at most a second old
    new = next(KeyMaterial.from_bytes(raw) for k, raw in ledger.webhook_secrets(endpoint)
               if str(k) == rotated["key_id"])  # fmt: skip
    world.sanction(account, "warning")
    wait_for(lambda: len(receiver.acked()) == 2, 30, "a delivery in the grace period")
    during = receiver.acked()[1]
    assert len(during.headers["webhook-signature"].split()) == 4  # v1 and v1a, twice
    for material in (old, new):
        standardwebhooks.Webhook(material.secret).verify(during.body, during.headers)
    time.sleep(max(0.0, ends - time.monotonic()) + 1.5)  # the worker reads keys each second
    world.sanction(account, "warning")
    wait_for(lambda: len(receiver.acked()) == 3, 30, "a delivery after the grace period")
    after = receiver.acked()[2]
    standardwebhooks.Webhook(new.secret).verify(after.body, after.headers)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(old.secret).verify(after.body, after.headers)


def test_a_name_that_resolves_to_loopback_at_delivery_is_refused(
    ledger: Ledger, receiver: Receiver, workers: Workers, database: Any, schema: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # At registration the name resolves to a public address; by delivery, to loopback.
    monkeypatch.setenv("LEDGER_WEBHOOK_HOSTS", "rebind.example.org=93.184.216.34")
    monkeypatch.delenv("LEDGER_WEBHOOK_ALLOW_LOOPBACK")
    url = f"https://rebind.example.org:{receiver.port}/hook"
    world, account, value = setup(ledger, url)
    workers.start("deliver", LEDGER_WEBHOOK_ALLOW_LOOPBACK="0",
                  LEDGER_WEBHOOK_HOSTS="rebind.example.org=127.0.0.1",
                  LEDGER_WEBHOOK_RETRY_SCHEDULE="0,0.3")  # fmt: skip
    world.sanction(account, "warning")
    endpoint = str(value["endpoint_id"])
    wait_for(lambda: len(attempts(database, schema, endpoint)) >= 2, 30, "refused attempts")
    assert {a["error"] for a in attempts(database, schema, endpoint)} == {"url_refused"}
    assert receiver.received == []


def test_old_attempts_are_dropped_and_pending_work_never_is(
    ledger: Ledger, receiver: Receiver, workers: Workers, database: Any, schema: str
) -> None:
    failing = [True]
    receiver.answer = lambda r: (500, {}) if failing[0] else (200, {})
    world, account, value = setup(ledger, receiver.url)
    endpoint = str(value["endpoint_id"])
    first = workers.start("deliver", LEDGER_WEBHOOK_RETRY_SCHEDULE="0,0.2")
    world.sanction(account, "warning")
    wait_for(lambda: len(attempts(database, schema, endpoint)) >= 3, 30, "failed attempts")
    workers.kill(first)
    with database.connect(schema, autocommit=True) as conn:  # they were made long ago
        conn.execute("UPDATE webhook_attempts SET at = now() - interval '2 days'")
    failing[0] = False
    workers.start("deliver", LEDGER_WEBHOOK_ATTEMPT_RETENTION="86400")
    wait_for(lambda: len(receiver.acked()) == 1, 30, "the pending delivery, still sent")
    wait_for(lambda: len(attempts(database, schema, endpoint)) == 1, 30, "old attempts gone")
    assert attempts(database, schema, endpoint)[0]["status"] == 200
