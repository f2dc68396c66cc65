"""Webhook endpoints as provider acts: commands and events, confinement, URL rules, and
secrets kept in the key table (wrapped by the KEK), never in an event."""

from __future__ import annotations

import base64
import json
from uuid import UUID

import pytest

from ledger import Database, Ledger, errors
from ledger import commands as c
from ledger.vault import Vault
from ledger.webhooks import KeyMaterial, check_url
from tests.conftest import TEST_KEY
from tests.world import REGULATOR, World

URL = "https://hooks.example.org/ledger"
PUBLIC = "hooks.example.org=93.184.216.34,rebind.example.org=93.184.216.35"


@pytest.fixture(autouse=True)
def hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_WEBHOOK_HOSTS", PUBLIC)
    monkeypatch.delenv("LEDGER_WEBHOOK_ALLOW_LOOPBACK", raising=False)


def register(world: World, **args: object) -> dict[str, object]:
    args.setdefault("provider_id", world.provider)
    args.setdefault("url", URL)
    return world.run(c.RegisterWebhookEndpoint, **args)


def test_registration_is_an_event_without_the_secret(ledger: Ledger) -> None:
    world = World(ledger)
    value = register(world, description="sanctions to our back end")
    endpoint = ledger.get_provider(world.provider).endpoint(UUID(str(value["endpoint_id"])))
    assert endpoint["url"] == URL and endpoint["status"] == "active"
    assert endpoint["event_types"] == [
        "Account.SanctionImposed",
        "Account.SanctionLifted",
        "Account.SanctionAppealed",
        "Account.AppealDecided",
    ]
    ((key_id, raw),) = ledger.webhook_secrets(UUID(str(value["endpoint_id"])))
    material = KeyMaterial.from_bytes(raw)
    assert str(key_id) == value["key_id"] and material.public_key == value["public_key"]
    # Neither the HMAC secret nor the private key appear anywhere in the log.
    log = json.dumps([e.as_dict() for e in ledger.read_log()])
    assert "Provider.WebhookRegistered" in log
    for secret in (material.hmac_secret, material.ed25519_seed):
        assert base64.b64encode(secret).decode() not in log and secret.hex() not in log
    assert material.secret.startswith("whsec_") and material.public_key.startswith("whpk_")


def test_a_provider_acts_only_on_its_own_endpoints(ledger: Ledger) -> None:
    world = World(ledger)
    mine = register(world)
    with pytest.raises(errors.NotYourAccount):
        register(world, provider_id=world.rival)
    with pytest.raises(errors.WebhookEndpointNotFound):  # another's endpoint under my provider
        rival = register(world, provider_id=world.rival, actor=REGULATOR)
        world.run(
            c.PauseWebhookEndpoint,
            provider_id=world.provider,
            endpoint_id=rival["endpoint_id"],
            reason="x",
        )
    with pytest.raises(errors.NotYourAccount):
        world.run(
            c.PauseWebhookEndpoint,
            world.rival_ops,
            provider_id=world.provider,
            endpoint_id=mine["endpoint_id"],
            reason="x",
        )
    # A regulator may act on any provider's endpoint.
    world.run(
        c.PauseWebhookEndpoint,
        REGULATOR,
        provider_id=world.provider,
        endpoint_id=mine["endpoint_id"],
        reason="inspection",
    )


def test_lifecycle_pause_resume_update_rotate_delete(ledger: Ledger) -> None:
    world = World(ledger)
    value = register(world)
    ids = {"provider_id": world.provider, "endpoint_id": value["endpoint_id"]}
    endpoint_id = UUID(str(value["endpoint_id"]))
    with pytest.raises(errors.WebhookEndpointState):
        world.run(c.ResumeWebhookEndpoint, **ids)
    world.run(c.PauseWebhookEndpoint, **ids, reason="maintenance")
    with pytest.raises(errors.WebhookEndpointState):
        world.run(c.PauseWebhookEndpoint, **ids, reason="again")
    world.run(c.ResumeWebhookEndpoint, **ids)
    world.run(c.UpdateWebhookEndpoint, **ids, event_types=["Account.Registered"])
    assert ledger.get_provider(world.provider).endpoint(endpoint_id)["event_types"] == [
        "Account.Registered"
    ]
    rotated = world.run(c.RotateWebhookSecret, **ids, grace_seconds=60)
    assert rotated["key_id"] != value["key_id"]
    assert [str(k) for k, _ in ledger.webhook_secrets(endpoint_id)] == [
        rotated["key_id"],
        value["key_id"],
    ]
    world.run(c.DeleteWebhookEndpoint, **ids, reason="gone")
    assert ledger.webhook_secrets(endpoint_id) == []
    with pytest.raises(errors.WebhookEndpointNotFound):
        world.run(c.ResumeWebhookEndpoint, **ids)
    types = [
        e.type
        for e in ledger.read_log(
            types=[
                "Provider.WebhookRegistered",
                "Provider.WebhookPaused",
                "Provider.WebhookResumed",
                "Provider.WebhookUpdated",
                "Provider.WebhookSecretRotated",
                "Provider.WebhookDeleted",
            ]
        )
    ]
    assert types == [
        "Provider.WebhookRegistered",
        "Provider.WebhookPaused",
        "Provider.WebhookResumed",
        "Provider.WebhookUpdated",
        "Provider.WebhookSecretRotated",
        "Provider.WebhookDeleted",
    ]


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.org/",  # not https
        "https://127.0.0.1/",
        "https://10.1.2.3/",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/",
        "https://[fe80::1]/",
        "https://192.168.0.1/",
        "https://user:pw@hooks.example.org/",
        "ftp://hooks.example.org/",
        "https://no-such-host.invalid/",
    ],
)
def test_urls_refused_at_registration(ledger: Ledger, url: str) -> None:
    world = World(ledger)
    head = ledger.head()
    with pytest.raises((errors.WebhookUrlRefused, errors.InvalidArgument)):
        register(world, url=url)
    assert ledger.head() == head


def test_loopback_only_when_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(errors.WebhookUrlRefused):
        check_url("http://127.0.0.1:8080/hook")
    monkeypatch.setenv("LEDGER_WEBHOOK_ALLOW_LOOPBACK", "1")
    assert check_url("http://127.0.0.1:8080/hook").port == 8080
    with pytest.raises(errors.WebhookUrlRefused):  # http stays loopback-only
        check_url("http://hooks.example.org/")
    with pytest.raises(errors.WebhookUrlRefused):  # and private stays private
        check_url("https://10.0.0.1/")
    monkeypatch.setenv("LEDGER_WEBHOOK_HOSTS", "evil.example.org=127.0.0.1")
    assert str(check_url("http://evil.example.org:9/").address) == "127.0.0.1"


@pytest.mark.parametrize("text", ["a\x00b", "\ud800", "x" * 1_000_001])
def test_hostile_strings_are_refused_and_change_nothing(ledger: Ledger, text: str) -> None:
    world = World(ledger)
    head = ledger.head()
    for args in ({"url": URL + text}, {"description": text}, {"event_types": [text]}):
        with pytest.raises(errors.LedgerError):
            register(world, **args)
    assert ledger.head() == head


def test_retried_registration_changes_nothing(ledger: Ledger) -> None:
    world = World(ledger)
    command = c.RegisterWebhookEndpoint(
        actor=world.ops, idempotency_key="r1", provider_id=world.provider, url=URL
    )
    first = ledger.execute(command)
    again = ledger.execute(command)
    assert again.replayed and again.value == first.value
    assert len(ledger.webhook_secrets(UUID(first.value["endpoint_id"]))) == 1


def test_kek_rotation_rewraps_the_endpoints_keys(
    ledger: Ledger, database: Database, schema: str
) -> None:
    world = World(ledger)
    endpoint = UUID(str(register(world)["endpoint_id"]))
    before = ledger.webhook_secrets(endpoint)
    new_kek = b"n" * 32
    env = database.eventsourcing_env(schema)
    rotating = Ledger(env, vault=Vault(new_kek, retired=[TEST_KEY]))
    try:
        assert rotating.rotate_kek(batch=1) >= 1
        assert rotating.store.keys_by_kek(webhooks=True) == {rotating.vault.kek_id: 1}
    finally:
        rotating.close()
    rotated = Ledger(env, vault=Vault(new_kek))  # the new KEK alone opens the secrets
    try:
        assert rotated.webhook_secrets(endpoint) == before
    finally:
        rotated.close()
    with pytest.raises(errors.LedgerError) as refused:  # and the old KEK no longer does
        ledger.webhook_secrets(endpoint)
    assert refused.value.code == "IDENTITY_UNREADABLE"
