"""Personal data: a key per person, erasure that erases, every disclosure recorded.

Identities never appear in clear in a table; each is sealed under a data key of its own,
wrapped by the KEK. Erasure destroys the key in the transaction of its event: no path
opens the identity afterwards, while every proof issued before still verifies. A
disclosure is recorded before the identity is returned, and refused when it cannot be.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from uuid import UUID

import psycopg
import pytest
from psycopg import sql

from ledger import Actor, Database, Ledger, LedgerError, Role
from ledger import commands as c
from ledger.vault import Vault
from projections.integrity import consistency_proof, inclusion_proof
from projections.sealer import Sealer
from tests.conftest import TEST_KEY
from tests.world import REGULATOR, World

NAME = "Wang Xiaoming"
NUMBER = "11010519491231002X"
AUDITOR = Actor("auditor", Role.AUDITOR)
ROOT = Path(__file__).resolve().parent.parent


def verified(world: World, name: str = NAME, number: str = NUMBER) -> UUID:
    account = world.account(verified=False)
    world.run(c.VerifyIdentity, account_id=account, real_name=name, id_number=number,
              method="id_card")  # fmt: skip
    return account


def disclose(ledger: Ledger, account: UUID, key: str = "d1", actor: Actor = REGULATOR) -> dict:  # type: ignore[type-arg]
    result = ledger.execute(c.DiscloseIdentity(
        actor=actor, idempotency_key=key, account_id=account, basis="art. 6: court order",
        case_reference="CASE-2024-17"))  # fmt: skip
    assert result.identity is not None
    return result.identity


def dump(database: Database, schema: str) -> str:
    """Every row of every table of the schema, as text."""
    with database.connect() as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", [schema]
        )]  # fmt: skip
        return " ".join(
            row[0]
            for table in tables
            for row in conn.execute(
                sql.SQL("SELECT t::text FROM {}.{} t").format(
                    sql.Identifier(schema), sql.Identifier(table)
                )
            )
        )


def test_identities_are_sealed_everywhere_and_open_only_by_disclosure(
    ledger: Ledger, database: Database, schema: str
) -> None:
    world = World(ledger)
    account = verified(world)
    for _ in range(120):  # enough events for a snapshot of the account
        world.sanction(account, "warning")
    text = dump(database, schema)
    for secret in (NAME, NUMBER):
        assert secret not in text and secret.encode().hex() not in text
    assert disclose(ledger, account) == {"name": NAME, "id_number": NUMBER}
    assert len(ledger.store.data_keys(account)) == 1
    sealed = ledger.get_account(account).identity
    assert sealed is not None and sealed.startswith("v2:")


def test_each_person_has_a_key_of_their_own(ledger: Ledger) -> None:
    world = World(ledger)
    first, second = verified(world), verified(world, "Li Lei", "1")
    a, b = ledger.store.data_keys(first)[0], ledger.store.data_keys(second)[0]
    assert a.key_id != b.key_id and a.wrapped != b.wrapped and a.kek_id == b.kek_id
    sealed = ledger.get_account(first).identity
    assert sealed is not None
    with pytest.raises(LedgerError):  # another person's key does not open it
        ledger.vault.open(first, sealed, b)
    with pytest.raises(LedgerError):  # nor does it open for another account
        ledger.vault.open(second, sealed, a)


def test_erasure_shreds_the_key_and_keeps_every_proof(
    ledger: Ledger, database: Database, schema: str, data_dir: Path
) -> None:
    world = World(ledger)
    account = verified(world)
    position = ledger.head()
    sealer = Sealer(ledger, database, schema)
    sealer.setup()
    before = sealer.sign_now()
    with database.connect(schema, autocommit=True) as conn:
        proof = inclusion_proof(conn, position, before)
    sealed = ledger.get_account(account).identity
    key = ledger.store.data_keys(account)[0]

    world.run(c.EraseIdentity, account_id=account, reason="the holder's request")

    assert ledger.store.data_keys(account) == []  # not in the table
    head = ledger.head()
    with pytest.raises(LedgerError) as refused:  # not by disclosure
        disclose(ledger, account)
    assert refused.value.code == "IDENTITY_ERASED" and ledger.head() == head
    past = ledger.account_at(account, position=position)  # time travel: it is still sealed
    assert past.identity == sealed
    with pytest.raises(LedgerError):  # and no key the ledger holds opens it
        ledger.vault.open(account, sealed or "", None)
    # The log is untouched: the proof issued before the erasure holds against a later head.
    after = sealer.sign_now()
    with database.connect(schema, autocommit=True) as conn:
        again = inclusion_proof(conn, position, before)
        consistency = consistency_proof(conn, before, after)
    assert again == proof and consistency["proof"]
    verify = subprocess.run([sys.executable, "-m", "api.cli", "verify"], cwd=ROOT,
                            env={**os.environ, "LEDGER_DATABASE_URL": database.conninfo,
                                 "LEDGER_SCHEMA": schema,
                                 "LEDGER_CIPHER_KEY": base64.b64encode(TEST_KEY).decode()},
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    sealer.close()
    assert key.key_id  # the key existed before; only the shredding removed it


def test_a_disclosure_is_recorded_and_its_retry_replays(ledger: Ledger) -> None:
    world = World(ledger)
    account = verified(world)
    head = ledger.head()
    assert disclose(ledger, account) == {"name": NAME, "id_number": NUMBER}
    assert disclose(ledger, account) == {"name": NAME, "id_number": NUMBER}  # same key
    (event,) = list(ledger.read_log(head))
    assert event.type == "Account.IdentityDisclosed"
    assert event.payload == {"basis": "art. 6: court order", "case_reference": "CASE-2024-17"}
    assert event.actor == REGULATOR.as_dict()
    assert NAME not in json.dumps(event.as_dict())


ROLES = {
    "regulator": (REGULATOR, None),
    "auditor": (AUDITOR, "ROLE_NOT_PERMITTED"),
    "system": (Actor("system", Role.SYSTEM), "ROLE_NOT_PERMITTED"),
}


@pytest.mark.parametrize("role", [*ROLES, "provider"])
def test_who_may_disclose_erase_and_verify(ledger: Ledger, role: str) -> None:
    world = World(ledger)
    account = verified(world)
    actor, refusal = ROLES.get(role, (world.ops, "ROLE_NOT_PERMITTED"))
    head = ledger.head()
    if refusal:
        with pytest.raises(LedgerError) as refused:
            disclose(ledger, account, actor=actor)
        assert refused.value.code == refusal and ledger.head() == head
    else:
        disclose(ledger, account, actor=actor)
    erase = c.EraseIdentity(actor=actor, idempotency_key="e", account_id=account, reason="r")
    if role == "auditor":
        with pytest.raises(LedgerError, match="may not"):
            ledger.execute(erase)
    else:
        ledger.execute(erase)


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("never verified", "ACCOUNT_NOT_VERIFIED"),
        ("unknown account", "ACCOUNT_NOT_FOUND"),
        ("no basis", "INVALID_ARGUMENT"),
        ("wrong KEK", "IDENTITY_UNREADABLE"),
        ("corrupt key row", "IDENTITY_UNREADABLE"),
        ("old format", "IDENTITY_UNREADABLE"),
    ],
)
def test_a_disclosure_that_cannot_be_made_is_refused_and_writes_nothing(
    ledger: Ledger, make_ledger, database: Database, schema: str, case: str, code: str
) -> None:  # type: ignore[no-untyped-def]
    world = World(ledger)
    account = world.account(verified=False) if case == "never verified" else verified(world)
    basis = "court order"
    target = ledger
    if case == "unknown account":
        account = UUID(int=5)
    elif case == "no basis":
        basis = " "
    elif case == "wrong KEK":
        target = make_ledger(vault=Vault(b"w" * 32))
    elif case == "corrupt key row":
        with database.connect(schema, autocommit=True) as conn:
            conn.execute("UPDATE ledger_identity_keys SET wrapped = '\\x00'::bytea || wrapped")
    elif case == "old format":
        world.run(c.EraseIdentity, account_id=account, reason="r")
        old = world.account(verified=False)
        command = c.VerifyIdentity(actor=world.ops, idempotency_key="old", account_id=old,
                                   real_name="x", id_number="1", method="id_card")  # fmt: skip
        vault = ledger.vault
        seal = vault.seal
        vault.seal = lambda a, i: ("v1:1234abcd:AAAA", seal(a, i)[1])  # type: ignore[method-assign]
        try:
            ledger.execute(command)
        finally:
            vault.seal = seal  # type: ignore[method-assign]
        account = old
    head = ledger.head()
    with pytest.raises(LedgerError) as refused:
        target.execute(c.DiscloseIdentity(actor=REGULATOR, idempotency_key="d", account_id=account,
                                          basis=basis, case_reference="C-1"))  # fmt: skip
    assert refused.value.code == code, refused.value.message
    assert ledger.head() == head
    assert "Traceback" not in refused.value.message


def test_erasure_racing_a_disclosure_exactly_one_wins(
    ledger: Ledger, make_ledger  # type: ignore[no-untyped-def]
) -> None:
    world = World(ledger)

    def run(outcomes: dict[str, object], name: str, command: c.Command, writer: Ledger) -> None:
        try:
            outcomes[name] = writer.execute(command)
        except LedgerError as e:
            outcomes[name] = e.code

    for round_ in range(6):
        account = verified(world)
        head = ledger.head()
        outcomes: dict[str, object] = {}
        disclosure = c.DiscloseIdentity(actor=REGULATOR, idempotency_key=f"d{round_}",
                                        account_id=account, basis="b",
                                        case_reference="C")  # fmt: skip
        erasure = c.EraseIdentity(actor=world.ops, idempotency_key=f"e{round_}",
                                  account_id=account, reason="r")  # fmt: skip
        threads = [
            threading.Thread(target=run, args=(outcomes, "disclose", disclosure, make_ledger())),
            threading.Thread(target=run, args=(outcomes, "erase", erasure, make_ledger())),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        types = [e.type for e in ledger.read_log(head)]
        assert not isinstance(outcomes["erase"], str), outcomes
        if outcomes["disclose"] == "IDENTITY_ERASED":
            assert types == ["Account.IdentityErased"]  # the erasure won: nothing disclosed
        else:
            result = outcomes["disclose"]
            assert getattr(result, "identity", None) == {"name": NAME, "id_number": NUMBER}
            assert types == ["Account.IdentityDisclosed", "Account.IdentityErased"]


ROTATE = """
import sys
from ledger import Database, Ledger
with Database() as database:
    ledger = Ledger.open(database)
    ledger.rotate_kek(batch=int(sys.argv[1]), pause=float(sys.argv[2]))
"""


def test_kek_rotation_survives_sigkill_and_reruns(
    ledger: Ledger, database: Database, schema: str, tmp_path: Path
) -> None:
    world = World(ledger)
    accounts = [verified(world, f"Person {n}", str(n)) for n in range(40)]
    new_kek = b"n" * 32
    env = {**os.environ, "LEDGER_DATABASE_URL": database.conninfo, "LEDGER_SCHEMA": schema,
           "LEDGER_DATA_DIR": str(tmp_path),
           "LEDGER_CIPHER_KEY": base64.b64encode(new_kek).decode(),
           "LEDGER_CIPHER_KEYS_RETIRED": base64.b64encode(TEST_KEY).decode()}  # fmt: skip
    process = subprocess.Popen([sys.executable, "-c", ROTATE, "3", "0.05"], cwd=ROOT, env=env)
    old = ledger.vault.kek_id
    deadline = time.monotonic() + 30
    while ledger.store.keys_by_kek().get(old, 0) > 25:
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    mid = ledger.store.keys_by_kek()
    assert 0 < mid[old] < 40, mid  # interrupted half-way
    rerun = subprocess.run([sys.executable, "-m", "api.cli", "keys", "rotate-kek"], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    rotated = Ledger(database.eventsourcing_env(schema), vault=Vault(new_kek))
    assert rotated.store.keys_by_kek() == {rotated.vault.kek_id: 40}
    for n, account in enumerate(accounts):  # every identity opens under the new KEK alone
        opened = disclose(rotated, account, key=f"r{n}")
        assert opened == {"name": f"Person {n}", "id_number": str(n)}
    rotated.close()
    with pytest.raises(LedgerError) as refused:  # and the old KEK no longer opens any
        disclose(ledger, accounts[0], key="old")
    assert refused.value.code == "IDENTITY_UNREADABLE"


def test_the_vault_key_from_the_data_folder_is_stable(data_dir: Path) -> None:
    first = Vault.from_environment(data_dir)
    second = Vault.from_environment(data_dir)
    account = UUID(int=1)
    sealed, key = first.seal(account, {"name": "x"})
    assert second.open(account, sealed, key) == {"name": "x"}
    assert oct((data_dir / "cipher.key").stat().st_mode)[-3:] == "600"


def test_an_erased_identity_no_longer_counts_as_verified(ledger: Ledger) -> None:
    world = World(ledger)
    account = world.account(kind="personal")
    world.run(c.EraseIdentity, account_id=account, reason="holder's request")
    with pytest.raises(LedgerError) as refused:
        world.post(account)
    assert refused.value.code == "ACCOUNT_NOT_VERIFIED"
    world.run(c.VerifyIdentity, account_id=account, real_name="Li Lei", id_number="1",
              method="id_card")  # fmt: skip
    world.post(account)
    assert disclose(ledger, account) == {"name": "Li Lei", "id_number": "1"}


def test_the_vault_key_in_the_environment_does_not_reconfigure_the_event_store(
    make_ledger, monkeypatch: pytest.MonkeyPatch, database: Database, schema: str
) -> None:  # type: ignore[no-untyped-def]
    # eventsourcing reads <APP NAME>_CIPHER_KEY from the environment; ours must not reach it.
    monkeypatch.setenv("LEDGER_CIPHER_KEY", base64.b64encode(b"k" * 32).decode())
    World(make_ledger())
    with database.connect() as conn:
        state = conn.execute(
            sql.SQL("SELECT state FROM {}.ledger_events LIMIT 1").format(sql.Identifier(schema))
        ).fetchone()
    assert state is not None and bytes(state[0]).startswith(b"{")


def test_the_key_table_dumps_on_its_own(database: Database, schema: str, ledger: Ledger) -> None:
    verified(World(ledger))
    with database.connect(schema) as conn:
        rows = conn.execute("SELECT count(*) FROM ledger_identity_keys").fetchone()
    assert rows == (1,)
    _ = psycopg  # the table is its own: pg_dump -t <schema>.ledger_identity_keys


def test_keys_restored_from_an_old_backup_are_shredded_again(
    ledger: Ledger, database: Database, schema: str
) -> None:
    world = World(ledger)
    gone, kept = verified(world), verified(world, "Li Lei", "1")
    with database.connect(schema) as conn:
        backup = conn.execute("SELECT * FROM ledger_identity_keys").fetchall()
    world.run(c.EraseIdentity, account_id=gone, reason="the holder's request")
    with database.connect(schema) as conn:  # the key table restored from before the erasure
        conn.execute("DELETE FROM ledger_identity_keys")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO ledger_identity_keys VALUES (%s, %s, %s, %s, %s)", backup)
    assert len(ledger.store.data_keys(gone)) == 1
    assert ledger.shred_erased() == 1
    assert ledger.store.data_keys(gone) == []
    assert disclose(ledger, kept) == {"name": "Li Lei", "id_number": "1"}
