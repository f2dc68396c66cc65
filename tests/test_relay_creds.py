"""`ledger relay creds`: a real nats-server started with the generated users lets each
provider read its own subjects, through the runnable example consumer, and nothing of
another provider's: no core subscription, no consumer over its subjects, no pulling from
its consumer, no snooping on its inbox."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from ledger import Database, Ledger
from projections.runner import Projector
from tests.nats_server import NatsServer
from tests.relay_helpers import ROOT, STREAM
from tests.test_relay import relay_once
from tests.world import World

RELAY_USER = '{user: "relay", password: "relay-secret"}'


def creds(code: str, out: Path) -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "relay", "creds", "--provider", code, "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    env = (out / f"ledger-{code}.env").read_text()
    return dict(line.split("=", 1) for line in env.splitlines() if line)


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[NatsServer, dict[str, dict[str, str]]]]:
    out = tmp_path / "users"
    users = {code: creds(code, out) for code in ("acme", "rival")}
    entries = "\n".join((out / f"ledger-{code}.conf").read_text() for code in users)
    config = f"authorization {{\n  users = [\n{RELAY_USER}\n{entries}\n  ]\n}}\n"
    with NatsServer(tmp_path / "nats", extra_config=config) as server:
        yield server, users


async def connect(server: NatsServer, user: dict[str, str], errors: list[str]) -> Any:
    async def record(e: Exception) -> None:
        errors.append(str(e))

    return await nats.connect(
        server.url, user=user["NATS_USER"], password=user["NATS_PASSWORD"],
        inbox_prefix=user["NATS_INBOX_PREFIX"], error_cb=record, max_reconnect_attempts=0,
    )  # fmt: skip


def example(server: NatsServer, user: dict[str, str], count: int) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "pull_consumer.py"), "--max", str(count)],
        env={**user, "NATS_URL": server.url, "PATH": "/usr/bin:/bin"}, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_each_provider_reads_its_own_subjects_only(
    ledger: Ledger, database: Database, projector: Projector,
    secured: tuple[NatsServer, dict[str, dict[str, str]]],
) -> None:  # fmt: skip
    server, users = secured
    world = World(ledger)
    world.sanction(world.account(), "warning")
    world.sanction(world.account(ops=world.rival_ops), "warning")
    projector.catch_up()
    relay_once(ledger, database, f"nats://relay:relay-secret@127.0.0.1:{server.port}")
    mine = [e for e in ledger.read_log() if e.type.startswith(("Account", "Provider"))]
    assert mine

    got = example(server, users["acme"], 3)
    assert {g["subject"].split(".")[1] for g in got} == {"acme"}
    assert [g["position"] for g in got] == sorted(g["position"] for g in got)
    # Resumable: the next run starts after the last acknowledged event.
    more = example(server, users["acme"], 1)
    assert more[0]["position"] > got[-1]["position"]

    errors: list[str] = []
    refused = asyncio.run(rival_attempts(server, users["rival"], errors))
    assert refused == {
        "core subscription": [], "consumer over acme": "refused",
        "mismatched filter": "refused", "pull acme's consumer": "refused",
        "acme's inbox": [],
    }  # fmt: skip
    for subject in (
        'Subscription to "ledger.acme.>"',
        'Subscription to "_INBOX_acme.>"',
        'Publish to "$JS.API.CONSUMER.MSG.NEXT.LEDGER.acme~main"',
    ):
        wanted = f"permissions violation for {subject}".lower()
        assert any(wanted in e.lower() for e in errors), errors
    # ... while its own consumer works.
    assert {g["subject"].split(".")[1] for g in example(server, users["rival"], 2)} == {"rival"}


async def rival_attempts(
    server: NatsServer, rival: dict[str, str], errors: list[str]
) -> dict[str, Any]:
    nc = await connect(server, rival, errors)
    js = nc.jetstream(timeout=2)
    found: dict[str, Any] = {}
    core: list[str] = []
    snooped: list[str] = []
    await nc.subscribe("ledger.acme.>", cb=collect(core))
    await nc.subscribe("_INBOX_acme.>", cb=collect(snooped))
    await nc.flush()
    publisher = await nats.connect(f"nats://relay:relay-secret@127.0.0.1:{server.port}")
    await publisher.publish("ledger.acme.Probe.Sent", b"{}")  # would reach a subscriber
    await publisher.flush()
    name = rival["NATS_CONSUMERS"]
    over_acme = ConsumerConfig(name=name, durable_name=name, filter_subject="ledger.acme.>",
                               ack_policy=AckPolicy.EXPLICIT)  # fmt: skip
    found["consumer over acme"] = await outcome(js.add_consumer(STREAM, over_acme))
    # Through its own subject, with another provider's filter in the config.
    request = json.dumps({"stream_name": STREAM, "config": over_acme.as_dict()}).encode()
    own_subject = f"$JS.API.CONSUMER.CREATE.{STREAM}.{name}.ledger.rival.>"
    found["mismatched filter"] = await outcome(nc.request(own_subject, request, timeout=2))
    next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.acme~main"
    found["pull acme's consumer"] = await outcome(nc.request(next_subject, b"1", timeout=2))
    await asyncio.sleep(1)
    found["core subscription"] = core
    found["acme's inbox"] = snooped
    await nc.close()
    await publisher.close()
    return found


def collect(into: list[str]) -> Any:
    async def append(m: Any) -> None:
        into.append(m.subject)

    return append


async def outcome(attempt: Any) -> str:
    try:
        answer = await attempt
    except Exception:
        return "refused"
    data = getattr(answer, "data", b"")
    if isinstance(data, bytes) and b'"error"' in data:
        return "refused"
    return f"allowed: {answer!r}"[:300]
