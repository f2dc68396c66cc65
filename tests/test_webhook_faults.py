"""Webhook delivery through faults, on a PostgreSQL cluster of the module's own: a
receiver that fails, refuses and hangs while thousands of sanctions are written; the worker
SIGKILLed again and again and the database restarted; two workers at once; one account
that always fails beside healthy ones. Afterwards every event was acknowledged, per
account in order with no gap, and every duplicate carries an id already seen."""

from __future__ import annotations

import itertools
import json
import random
import statistics
import threading
import time
from datetime import UTC, datetime
from uuid import UUID

import pytest

from ledger import Ledger
from ledger import commands as c
from tests.cluster import Cluster, own_cluster_fixtures
from tests.webhook_receiver import Received, Receiver, Workers, wait_for
from tests.world import REGULATOR, World

cluster, database = own_cluster_fixtures()


@pytest.fixture
def ledger(make_ledger) -> Ledger:  # type: ignore[no-untyped-def]
    return make_ledger(clock=lambda: datetime.now(UTC))  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_WEBHOOK_ALLOW_LOOPBACK", "1")


def msg_id(originator: UUID, version: int) -> str:
    return f"msg_{originator.hex}_{version}"


def expected(ledger: Ledger, accounts: list[UUID]) -> dict[str, list[str]]:
    """Each account's sanction events' ids, in log order."""
    out: dict[str, list[str]] = {str(a): [] for a in accounts}
    for e in ledger.read_log(types=["Account.SanctionImposed"]):
        if str(e.originator_id) in out:
            out[str(e.originator_id)].append(msg_id(e.originator_id, e.originator_version))
    return out


def writer(world: World, accounts: list[UUID], total: int, pace: float) -> threading.Thread:
    """Write `total` warnings over the accounts in batches of 50, `pace` s apart."""

    def run() -> None:
        for start in range(0, total, 50):
            world.ledger.submit([
                c.ImposeSanction(actor=REGULATOR, idempotency_key=world.key(),
                                 account_id=accounts[i % len(accounts)], level="warning",
                                 rule_ids=("art.9",), reason=f"breach {i}")
                for i in range(start, min(total, start + 50))
            ])  # fmt: skip
            time.sleep(pace)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def check_delivered(received: list[Received], wanted: dict[str, list[str]]) -> dict[str, int]:
    """Every wanted id acknowledged; per account, in order with no gap; a duplicate only
    of an id already seen. Returns the number of duplicates per account."""
    seen: set[str] = set()
    firsts: dict[str, list[tuple[str, int]]] = {a: [] for a in wanted}
    duplicates = dict.fromkeys(wanted, 0)
    for r in received:
        if not 200 <= r.status < 300:
            continue
        data = json.loads(r.body)["data"]
        account, webhook_id = data["originatorId"], r.headers["webhook-id"]
        if webhook_id in seen:
            duplicates[account] += 1
            continue
        seen.add(webhook_id)
        firsts[account].append((webhook_id, data["sequence"]))
    for account, ids in wanted.items():
        assert [i for i, _ in firsts[account]] == ids, f"account {account}: order or loss"
        assert [s for _, s in firsts[account]] == list(range(1, len(ids) + 1))
    return duplicates


def all_acked(receiver_list: list[Received], wanted: dict[str, list[str]]) -> bool:
    ids = {r.headers["webhook-id"] for r in receiver_list if 200 <= r.status < 300}
    return all(i in ids for v in wanted.values() for i in v)


def test_a_failing_refusing_and_hanging_receiver_loses_nothing(
    ledger: Ledger, workers: Workers
) -> None:
    phase = ["fail"]
    received: list[Received] = []

    def answer(r: Received) -> tuple[int, dict[str, str]] | None:
        return (500, {}) if phase[0] == "fail" else (200, {})

    receiver = Receiver(answer=answer, received=received)
    port = receiver.port
    world = World(ledger)
    accounts = [world.account() for _ in range(10)]
    world.run(c.RegisterWebhookEndpoint, provider_id=world.provider, url=receiver.url)
    workers.start("deliver", LEDGER_WEBHOOK_RETRY_SCHEDULE="0,0.2,0.4",
                  LEDGER_WEBHOOK_TIMEOUT="1")  # fmt: skip
    thread = writer(world, accounts, total=2000, pace=0.1)
    try:
        wait_for(lambda: any(r.status == 500 for r in received), 30, "the first 500")
        time.sleep(1.5)
        receiver.close()  # connections refused
        time.sleep(2)
        phase[0] = "hang"
        receiver = Receiver(answer=lambda r: (503, {}), received=received, port=port, hang=1.5)
        time.sleep(3)  # each request outlives the worker's 1 s timeout
        receiver.close()
        phase[0] = "ok"
        receiver = Receiver(answer=answer, received=received, port=port)
        thread.join()
        wanted = expected(ledger, accounts)
        assert sum(len(v) for v in wanted.values()) == 2000
        wait_for(lambda: all_acked(received, wanted), 120, "every sanction acknowledged")
        time.sleep(0.5)
        duplicates = check_delivered(received, wanted)
        # No crash here: each id was acknowledged exactly once.
        assert sum(duplicates.values()) == 0
        statuses = {r.status for r in received}
        assert {500, 200} <= statuses
    finally:
        receiver.close()
        thread.join()


def test_sigkill_ten_times_and_a_database_restart_lose_nothing(
    ledger: Ledger, workers: Workers, cluster: Cluster
) -> None:
    receiver = Receiver()
    world = World(ledger)
    accounts = [world.account() for _ in range(8)]
    world.run(c.RegisterWebhookEndpoint, provider_id=world.provider, url=receiver.url)
    deliver = workers.start("deliver", LEDGER_WEBHOOK_RETRY_SCHEDULE="0,0.2")
    thread = writer(world, accounts, total=1500, pace=0.15)
    try:
        rng = random.Random(21)
        for kill in range(12):
            time.sleep(rng.uniform(0.2, 0.8))
            workers.kill(deliver)
            if kill == 6:
                thread.join()  # the writer's own retries are not under test here
                cluster.restart("immediate")
                thread = writer(world, accounts, total=300, pace=0.1)
            deliver = workers.start("deliver", LEDGER_WEBHOOK_RETRY_SCHEDULE="0,0.2")
        thread.join()
        wanted = expected(ledger, accounts)
        assert sum(len(v) for v in wanted.values()) == 1800
        wait_for(lambda: all_acked(receiver.received, wanted), 180, "every sanction")
        time.sleep(0.5)
        check_delivered(receiver.received, wanted)
        known = {i for v in wanted.values() for i in v}
        assert {r.headers["webhook-id"] for r in receiver.received} <= known
    finally:
        thread.join()
        receiver.close()


def test_two_workers_never_send_one_event_twice_at_once(ledger: Ledger, workers: Workers) -> None:
    receiver = Receiver(hang=0.01)
    world = World(ledger)
    accounts = [world.account() for _ in range(6)]
    for n in range(3):  # three endpoints, for the two workers to share
        world.run(c.RegisterWebhookEndpoint, provider_id=world.provider,
                  url=f"{receiver.url}/{n}")  # fmt: skip
    first = workers.start("deliver")
    workers.start("deliver")
    thread = writer(world, accounts, total=600, pace=0.1)
    try:
        time.sleep(1.5)
        workers.kill(first)  # the other takes its endpoints over
        thread.join()
        wanted = expected(ledger, accounts)
        # A killed worker's unacknowledged deliveries come again: count distinct ones.
        wait_for(lambda: len({(r.path, r.headers["webhook-id"]) for r in receiver.acked()})
                 >= 3 * 600, 120, "every delivery, thrice")  # fmt: skip
        time.sleep(0.5)
        by_id: dict[str, list[tuple[float, float]]] = {}
        for webhook_id, start, end in receiver.spans:
            by_id.setdefault(webhook_id, []).append((start, end))
        for webhook_id, spans in by_id.items():  # per endpoint (its path) and id
            spans.sort()
            for (_, end), (start, _) in itertools.pairwise(spans):
                assert start >= end, f"{webhook_id} sent twice at once"
        assert len(by_id) == 3 * 600
        for n in range(3):  # each endpoint: every id, per account in order
            check_delivered([r for r in receiver.received if r.path.endswith(f"/{n}")], wanted)
    finally:
        thread.join()
        receiver.close()


def latencies(received: list[Received], skip: str | None = None) -> list[float]:
    out = []
    for r in received:
        if 200 <= r.status < 300:
            data = json.loads(r.body)["data"]
            if data["originatorId"] != skip:
                out.append(r.at - datetime.fromisoformat(data["at"]).timestamp())
    return out


def test_one_failing_account_does_not_hold_back_the_others(
    ledger: Ledger, workers: Workers
) -> None:
    world = World(ledger)
    accounts = [world.account() for _ in range(5)]
    bad = world.account()
    healthy_receiver = Receiver()
    bad_id = str(bad)

    def answer(r: Received) -> tuple[int, dict[str, str]]:
        return (500, {}) if bad_id.encode() in r.body else (200, {})

    failing_receiver = Receiver(answer=answer)
    try:
        world.run(c.RegisterWebhookEndpoint, provider_id=world.provider,
                  url=healthy_receiver.url)  # fmt: skip
        workers.start("deliver", LEDGER_WEBHOOK_RETRY_SCHEDULE="0,0.05")
        writer(world, accounts, total=200, pace=0.2).join()
        wait_for(lambda: len(healthy_receiver.acked()) >= 200, 60, "the healthy run")
        healthy = statistics.median(latencies(healthy_receiver.acked()))
        world.run(c.RegisterWebhookEndpoint, provider_id=world.provider,
                  url=failing_receiver.url, event_types=["Account.SanctionImposed"])  # fmt: skip
        writer(world, [*accounts, bad], total=240, pace=0.2).join()
        wait_for(lambda: len(failing_receiver.acked()) >= 200, 60, "the others' deliveries")
        others = latencies(failing_receiver.received, skip=bad_id)
        assert len([r for r in failing_receiver.received if r.status == 500]) > 5
        assert statistics.median(others) <= 2 * healthy + 0.05, (healthy, others)
    finally:
        healthy_receiver.close()
        failing_receiver.close()
