"""Real identities never appear in clear in the tables; the vault opens them."""

from __future__ import annotations

import base64
from uuid import UUID

import pytest
from psycopg import sql

from ledger import Database, Ledger, LedgerError
from ledger import commands as c
from ledger.vault import Vault
from tests.world import World

NAME = "Wang Xiaoming"
NUMBER = "11010519491231002X"


def test_identity_is_sealed_everywhere(ledger: Ledger, database: Database, schema: str) -> None:
    world = World(ledger)
    account = world.account(verified=False)
    command = c.VerifyIdentity(
        actor=world.ops,
        idempotency_key="v",
        account_id=account,
        real_name=NAME,
        id_number=NUMBER,
        method="id_card",
    )
    ledger.execute(command)
    for _ in range(120):  # enough events for a snapshot of the account
        world.run(
            c.ImposeSanction, account_id=account, level="warning", rule_ids=["art.9"], reason="x"
        )
    assert NAME not in repr(command) and NUMBER not in repr(command)
    with database.connect() as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", [schema]
            )
        ]
        assert {"ledger_events", "ledger_snapshots", "ledger_idempotency"} <= set(tables)
        for table in tables:
            dump = conn.execute(f'SELECT t::text FROM "{schema}"."{table}" t').fetchall()
            text = " ".join(row[0] for row in dump)
            assert NAME not in text and NUMBER not in text, table
            assert NAME.encode().hex() not in text and NUMBER.encode().hex() not in text, table
    sealed = ledger.get_account(account).identity
    assert sealed is not None
    assert ledger.vault.open(account, sealed) == {"name": NAME, "id_number": NUMBER}


def test_a_sealed_identity_opens_only_for_its_account_and_key(ledger: Ledger) -> None:
    world = World(ledger)
    account = world.account()
    other = world.account()
    sealed = ledger.get_account(account).identity
    assert sealed is not None
    with pytest.raises(LedgerError):
        ledger.vault.open(other, sealed)
    with pytest.raises(LedgerError):
        Vault(b"x" * 32).open(account, sealed)


def test_erasure_forgets_the_identity(ledger: Ledger) -> None:
    world = World(ledger)
    account = world.account()
    world.run(c.EraseIdentity, account_id=account, reason="holder's request")
    state = ledger.get_account(account)
    assert state.identity is None and state.identity_erased
    assert state.verified_at is not None  # the fact of verification stays on record


def test_vault_key_from_data_folder_is_stable(data_dir) -> None:  # type: ignore[no-untyped-def]
    first = Vault.from_environment(data_dir)
    second = Vault.from_environment(data_dir)
    account = UUID(int=1)
    assert second.open(account, first.seal(account, {"name": "x"})) == {"name": "x"}
    assert oct((data_dir / "cipher.key").stat().st_mode)[-3:] == "600"


def test_an_erased_identity_no_longer_counts_as_verified(ledger: Ledger) -> None:
    world = World(ledger)
    account = world.account(kind="personal")
    world.run(c.EraseIdentity, account_id=account, reason="holder's request")
    with pytest.raises(LedgerError) as refused:
        world.post(account)
    assert refused.value.code == "ACCOUNT_NOT_VERIFIED"
    world.run(
        c.VerifyIdentity, account_id=account, real_name="Li Lei", id_number="1", method="id_card"
    )
    world.post(account)


def test_the_vault_key_in_the_environment_does_not_reconfigure_the_event_store(
    make_ledger, monkeypatch: pytest.MonkeyPatch, database, schema: str
) -> None:  # type: ignore[no-untyped-def]
    # eventsourcing reads <APP NAME>_CIPHER_KEY from the environment; ours must not reach it.
    monkeypatch.setenv("LEDGER_CIPHER_KEY", base64.b64encode(b"k" * 32).decode())
    ledger = make_ledger()
    World(ledger)
    with database.connect() as conn:
        state = conn.execute(
            sql.SQL("SELECT state FROM {}.ledger_events LIMIT 1").format(sql.Identifier(schema))
        ).fetchone()[0]
    assert bytes(state).startswith(b"{")  # plain JSON, not the library's ciphertext
