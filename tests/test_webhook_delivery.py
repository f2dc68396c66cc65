"""Delivery end to end: real `ledger deliver` and projector processes, a real HTTP
receiver, signatures checked with the `standardwebhooks` package (v1) and `cryptography`'s
Ed25519 (v1a)."""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID, uuid4

import pytest
import standardwebhooks
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from api.webhooks import signing
from api.webhooks.signing import SigningKey
from ledger import Ledger
from ledger import commands as c
from ledger.webhooks import KeyMaterial
from tests.webhook_receiver import Received, Receiver, Workers, wait_for, worker_env
from tests.world import REGULATOR, World


@pytest.fixture
def env(cold, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("LEDGER_WEBHOOK_ALLOW_LOOPBACK", "1")
    return worker_env(cold.env)


@pytest.fixture
def workers(env: dict[str, str]) -> Iterator[Workers]:
    w = Workers(env)
    yield w
    w.stop()


def sanctions(world: World, accounts: list[UUID], rounds: int, batch: int = 100) -> None:
    """`rounds` warnings on each account, interleaved, written in batches."""
    commands = [
        c.ImposeSanction(actor=REGULATOR, idempotency_key=world.key(), account_id=a,
                         level="warning", rule_ids=("art.9",), reason=f"breach {i}")
        for i in range(rounds) for a in accounts
    ]  # fmt: skip
    for start in range(0, len(commands), batch):
        world.ledger.submit(commands[start : start + batch])


def verify_v1a(public_key: str, r: object) -> None:
    headers, body = r.headers, r.body  # type: ignore[attr-defined]
    content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key.removeprefix("whpk_")))
    signatures = [s.split(",", 1)[1] for s in headers["webhook-signature"].split()
                  if s.startswith("v1a,")]  # fmt: skip
    for signature in signatures:
        try:
            key.verify(base64.b64decode(signature), content)
            return
        except InvalidSignature:
            continue
    raise InvalidSignature("no v1a signature verifies")


def by_account(received: list) -> dict[str, list[dict]]:  # type: ignore[type-arg]
    out: dict[str, list[dict]] = defaultdict(list)  # type: ignore[type-arg]
    for r in received:
        data = json.loads(r.body)["data"]
        out[data["originatorId"]].append({**data, "id": r.headers["webhook-id"]})
    return out


def test_deliveries_are_signed_in_order_per_account_and_verify(
    ledger: Ledger, workers: Workers, receiver: Receiver
) -> None:
    world = World(ledger)
    accounts = [world.account() for _ in range(5)]
    registered = world.run(c.RegisterWebhookEndpoint, provider_id=world.provider,
                           url=receiver.url)  # fmt: skip
    secret = ledger.webhook_secrets(UUID(str(registered["endpoint_id"])))[0][1]
    material = KeyMaterial.from_bytes(secret)
    workers.start("projector")
    workers.start("deliver")
    sanctions(world, accounts, rounds=400)
    wait_for(lambda: len(receiver.acked()) >= 2000, 120, "2,000 deliveries")
    time.sleep(0.5)
    assert len(receiver.acked()) == 2000  # at least once, and here exactly once
    verifier = standardwebhooks.Webhook(material.secret)
    for r in receiver.acked():
        verifier.verify(r.body, r.headers)
        verify_v1a(material.public_key, r)
        document = json.loads(r.body)
        assert set(document) == {"type", "timestamp", "data"}
        assert document["type"] == "Account.SanctionImposed"
    for account, items in by_account(receiver.acked()).items():
        assert [i["sequence"] for i in items] == list(range(1, 401)), account
        positions = [int(i["position"]) for i in items]
        assert positions == sorted(positions)
        assert len({i["id"] for i in items}) == 400
    tampered(receiver.acked(), material)


def flip(text: bytes, at: int) -> bytes:
    return text[:at] + bytes([text[at] ^ 0x01]) + text[at + 1 :]


def tampered(captured: list[Received], material: KeyMaterial) -> None:
    """One flipped byte of the body, the id or the timestamp fails both schemes; so does a
    correctly signed delivery whose timestamp is 301 s old."""
    verifier = standardwebhooks.Webhook(material.secret)
    rng = random.Random(21)
    for r in captured:
        body = flip(r.body, rng.randrange(len(r.body)))
        webhook_id = r.headers["webhook-id"]
        stamp = r.headers["webhook-timestamp"]
        other_id = flip(webhook_id.encode(), rng.randrange(4, len(webhook_id))).decode()
        other_stamp = str(int(stamp) + rng.choice([-1, 1]))
        for changed in (
            Received(r.headers, body, r.at, r.status),
            Received({**r.headers, "webhook-id": other_id}, r.body, r.at, r.status),
            Received({**r.headers, "webhook-timestamp": other_stamp}, r.body, r.at, r.status),
        ):
            with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
                verifier.verify(changed.body, changed.headers)
            with pytest.raises(InvalidSignature):
                verify_v1a(material.public_key, changed)
    r = captured[0]
    old = int(time.time()) - 301
    key = SigningKey(uuid4(), material)
    stale = signing.headers(r.headers["webhook-id"], old, r.body, [key])
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError, match="too old"):
        verifier.verify(r.body, stale)
    fresh = signing.headers(r.headers["webhook-id"], old + 2, r.body, [key])
    verifier.verify(r.body, {**fresh, "webhook-timestamp": str(old + 2)})  # 299 s: still in


def test_the_documented_openssl_check_verifies_v1a(tmp_path: Path) -> None:
    """docs/webhooks.md's `openssl` recipe, run as written, on a delivery we sign."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "webhooks.md").read_text()
    script = text.split("with `openssl`", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    material = KeyMaterial.generate()
    body = b'{"type":"Account.SanctionImposed","data":{"position":"7"}}'
    headers = signing.headers("msg_x_1", int(time.time()), body, [SigningKey(uuid4(), material)])
    v1a = next(s[4:] for s in headers["webhook-signature"].split() if s.startswith("v1a,"))
    env = {**os.environ, "ID": "msg_x_1", "TS": headers["webhook-timestamp"], "SIG": v1a,
           "PK": material.public_key}  # fmt: skip

    def run(body_bytes: bytes) -> subprocess.CompletedProcess[str]:
        (tmp_path / "body.json").write_bytes(body_bytes)
        return subprocess.run(["sh", "-c", script], cwd=tmp_path, env=env,
                              capture_output=True, text=True)  # fmt: skip

    good = run(body)
    assert good.returncode == 0 and "Signature Verified Successfully" in good.stdout, good
    assert run(flip(body, 5)).returncode != 0
