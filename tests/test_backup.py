"""The backup and restore drill of docs/operations.md ("Backup and restore"), on a PostgreSQL
cluster of the test's own, with the embedded server's pg_dump and pg_restore.

A live ledger (its own schema: events through the commands and the demo, the read side
and the sealer running as `ledger project`, a writer still writing) is dumped twice while
it runs: the main dump without the key table, then the key table alone. Restored into an
empty database:

- `ledger verify --from-head` passes with a signed head saved before the backup;
- inclusion proofs issued before the backup are the restored log's own proofs, and the
  restored log, written on, proves itself an extension of the saved head;
- `ledger rebuild --verify` finds the restored read side identical to a fresh rebuild;
- every identity in the restored log opens: a regulator's disclosure works.

And the ways it goes wrong: the main dump alone leaves identities sealed; an older key
dump brings an erased key back until `ledger keys shred-erased`; a restore over a
database that holds a ledger is refused with the documented flags, and without them
rewinds the log's sequence while reporting only "errors ignored".
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest

from ledger import Actor, Database, Ledger, Role
from ledger import errors as ledger_errors
from ledger.vault import Vault
from projections.integrity import consistency_proof, inclusion_proof
from tests.cluster import BIN, Cluster
from tests.world import REGULATOR, World

SCHEMA = "ledger"
KEYS = f"{SCHEMA}.ledger_identity_keys"
LEDGER = Path(sys.executable).parent / "ledger"
INSPECTOR = Actor("inspector", Role.REGULATOR)


@dataclass
class Site:
    """One database of the cluster, and how the ledger's processes reach it."""

    cluster: Cluster
    name: str
    data_dir: Path  # cipher.key and signing.key, as an operator keeps them

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.cluster.port}/{self.name}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        env.update(
            LEDGER_DATABASE_URL=self.url, LEDGER_SCHEMA=SCHEMA, LEDGER_DATA_DIR=str(self.data_dir)
        )
        return env

    def ledger(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(LEDGER), *args], env=self.env(), capture_output=True, text=True, timeout=300
        )
        if check:
            assert done.returncode == 0, f"ledger {' '.join(args)}: {done.stdout}{done.stderr}"
        return done

    def connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.url, autocommit=True)
        conn.execute(f"SET search_path TO {SCHEMA}")
        return conn

    def open(self) -> tuple[Database, Ledger]:
        database = Database(self.url).start()
        return database, Ledger.open(database, SCHEMA, vault=Vault.from_environment(self.data_dir))

    def scalar(self, query: str) -> Any:
        with self.connect() as conn:
            row = conn.execute(query).fetchone()
        assert row is not None
        return row[0]


def sealed(site: Site) -> int:
    """The size of the latest signed tree head; 0 before the sealer made its tables."""
    try:
        return int(site.scalar("SELECT coalesce(max(tree_size), 0) FROM tree_heads"))
    except psycopg.errors.UndefinedTable:
        return 0


def pg(cluster: Cluster, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    """pg_dump or pg_restore of the embedded server, over TCP like an operator's."""
    connection = ["--host=127.0.0.1", f"--port={cluster.port}", "--username=postgres"]
    return subprocess.run(
        [str(BIN / tool), *connection, *args], capture_output=True, text=True, timeout=300
    )


def dump_main(cluster: Cluster, database: str, path: Path) -> None:
    done = pg(cluster, "pg_dump", "--format=custom", f"--schema={SCHEMA}",
              f"--exclude-table={KEYS}", f"--file={path}", database)  # fmt: skip
    assert done.returncode == 0, done.stderr


def dump_keys(cluster: Cluster, database: str, path: Path) -> None:
    done = pg(cluster, "pg_dump", "--format=custom", f"--table={KEYS}", f"--file={path}",
              database)  # fmt: skip
    assert done.returncode == 0, done.stderr


def restore(
    cluster: Cluster, database: str, path: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return pg(cluster, "pg_restore", "--single-transaction", "--exit-on-error", "--no-owner",
              *extra, f"--dbname={database}", str(path))  # fmt: skip


def create_database(cluster: Cluster, name: str) -> None:
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')


def disclose(ledger: Ledger, account: UUID, case: str) -> dict[str, str]:
    result = ledger.disclose_identity(
        actor=INSPECTOR, idempotency_key=f"disclose-{case}", account_id=account,
        basis="art. 6", case_reference=case,
    )  # fmt: skip
    assert result.identity is not None
    return dict(result.identity)


def identities(ledger: Ledger) -> dict[UUID, str]:
    """Each account's last identity event: verified or erased."""
    last: dict[UUID, str] = {}
    for e in ledger.read_log(types=["Account.IdentityVerified", "Account.IdentityErased"]):
        last[e.originator_id] = e.type
    return last


@dataclass
class Backup:
    main: Path  # everything in the schema but the key table
    keys: Path  # the key table alone, taken after the main dump
    old_keys: Path  # a key dump from before an erasure (a month-old backup)
    head: Path  # a signed head, as `ledger seal` printed it before the backup
    proofs: list[Path]  # inclusion proofs issued before the backup
    public_key: str
    erased: UUID  # erased after old_keys was taken
    kept: UUID  # verified, never erased
    live_head: int  # the log's head when the live ledger stopped


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with Cluster() as c:
        yield c


@pytest.fixture(scope="module")
def backup(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Backup:
    """A live ledger, dumped while it runs."""
    directory = tmp_path_factory.mktemp("backup")
    create_database(cluster, "live")
    live = Site(cluster, "live", directory / "keys")
    live.ledger("demo", "--accounts", "5")
    database, ledger = live.open()
    try:
        world = World(ledger)
        erased, kept = world.account(), world.account()
        world.sanction(kept, "warning")
        world.post(kept)
        old_keys = directory / "old-keys.dump"
        dump_keys(cluster, "live", old_keys)
        ledger.erase_identity(actor=world.ops, idempotency_key="erase-1", account_id=erased,
                              reason="the person asked")  # fmt: skip

        before = ledger.head()
        projector = subprocess.Popen([str(LEDGER), "project"], env=live.env(),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        stop = threading.Event()
        written = itertools.count()

        def writer() -> None:  # the ledger keeps taking commands during the backup
            while not stop.is_set():
                world.account(kind="personal")
                next(written)

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            deadline = time.monotonic() + 60
            while sealed(live) < before:
                assert time.monotonic() < deadline, "the sealer signed nothing"
                time.sleep(0.1)
            # Before the backup: a signed head kept outside the database, and proofs.
            head = directory / "head.json"
            head.write_text(live.ledger("seal").stdout)
            size = json.loads(head.read_text())["tree_size"]
            proofs = []
            with live.connect() as conn:
                positions = [
                    conn.execute(q, (size,)).fetchone()[0]  # type: ignore[index]
                    for q in (
                        "SELECT min(position) FROM merkle_leaves WHERE leaf_index < %s",
                        "SELECT max(position) FROM merkle_leaves WHERE leaf_index < %s",
                    )
                ]
                for position in positions:
                    proof = directory / f"proof-{position}.json"
                    proof.write_text(json.dumps(inclusion_proof(conn, position, size)))
                    proofs.append(proof)
            # The backup: the main dump, then the key table (so every identity in the
            # main dump has its key; a key of a later identity is harmless).
            time.sleep(0.3)
            main, keys = directory / "main.dump", directory / "keys.dump"
            dump_main(cluster, "live", main)
            time.sleep(0.3)
            dump_keys(cluster, "live", keys)
            time.sleep(0.3)
        finally:
            stop.set()
            thread.join()
            projector.send_signal(signal.SIGTERM)
            _, err = projector.communicate(timeout=30)
        assert projector.returncode == 0, err
        assert next(written) > 3, "the writer wrote during the backup"
        live_head = ledger.head()
    finally:
        ledger.close()
        database.stop()
    public_key = live.ledger("keys").stdout.split()[0]
    for proof in proofs:  # the auditor's check, with no database
        live.ledger("verify-proof", str(proof), "--public-key", public_key)
    return Backup(main, keys, old_keys, head, proofs, public_key, erased, kept, live_head)


def operator_keys(backup: Backup, directory: Path) -> Path:
    """cipher.key and signing.key from the operator's safe, on the restoring machine."""
    keys = directory / "keys"
    shutil.copytree(backup.main.parent / "keys", keys)
    return keys


def test_a_restored_ledger_verifies_proves_rebuilds_and_discloses(
    cluster: Cluster, backup: Backup, tmp_path: Path
) -> None:
    create_database(cluster, "restored")
    site = Site(cluster, "restored", operator_keys(backup, tmp_path))
    for dump in (backup.main, backup.keys):  # both, before any ledger process starts
        done = restore(cluster, "restored", dump)
        assert done.returncode == 0, done.stderr
    restored_head = site.scalar("SELECT max(notification_id) FROM ledger_events")
    assert 0 < restored_head < backup.live_head  # a snapshot of a ledger still writing

    # The signed head saved before the backup: every restored event is checked against
    # it and against every head in the restored tree_heads.
    verified = site.ledger("verify", "--from-head", str(backup.head))
    assert "OK: every sealed event matches every signed head" in verified.stdout

    # The proofs issued before the backup are the restored log's own proofs.
    with site.connect() as conn:
        for proof_file in backup.proofs:
            issued = json.loads(proof_file.read_text())
            assert inclusion_proof(conn, issued["position"], issued["tree_size"]) == issued
            site.ledger("verify-proof", str(proof_file), "--public-key", backup.public_key)

    # The read side, restored at its own positions, is what a rebuild makes of the log.
    rebuilt = site.ledger("rebuild", "--verify")
    assert "identical to a fresh rebuild" in rebuilt.stdout

    # Identities: every verified identity of the restored log opens, the last one too.
    database, ledger = site.open()
    try:
        last = identities(ledger)
        verified_accounts = [a for a, t in last.items() if t == "Account.IdentityVerified"]
        assert backup.kept in verified_accounts and last[backup.erased].endswith("Erased")
        with site.connect() as conn:
            keyed = {r[0] for r in conn.execute("SELECT account_id FROM ledger_identity_keys")}
        assert set(verified_accounts) <= keyed, "an identity of the dump without its key"
        for account in (backup.kept, verified_accounts[-1]):
            assert disclose(ledger, account, f"restored-{account}") == {
                "name": "Li Lei", "id_number": "110101199003070011"}  # fmt: skip
        with pytest.raises(ledger_errors.IdentityErased):
            disclose(ledger, backup.erased, "erased")

        # The restored ledger goes on: new events follow the restored head, the sealer
        # catches up, and the log proves itself an extension of the saved head.
        ledger.register_provider(actor=REGULATOR, idempotency_key="after-restore",
                                 code="later", name="Later", licence_ref="L-later")  # fmt: skip
        assert ledger.head() > restored_head
    finally:
        ledger.close()
        database.stop()
    new_head = json.loads(site.ledger("seal").stdout)
    saved = json.loads(backup.head.read_text())
    with site.connect() as conn:
        proof = consistency_proof(conn, saved["tree_size"], new_head["tree_size"])
    assert proof["old_head"] == saved
    (tmp_path / "consistency.json").write_text(json.dumps(proof))
    site.ledger("verify-proof", str(tmp_path / "consistency.json"), "--public-key",
                backup.public_key)  # fmt: skip
    assert "OK" in site.ledger("verify", "--from-head", str(backup.head)).stdout
    site.ledger("rebuild")  # the read side takes in the new event too
    rows = [line.split() for line in site.ledger("status").stdout.splitlines()[2:]]
    assert len(rows) == 8 and all(row[2] == "0" for row in rows), rows  # no lag


def ledger_head(site: Site) -> int:
    return int(site.scalar("SELECT max(notification_id) FROM ledger_events"))


def test_identities_need_the_key_dump_and_old_keys_need_shredding(
    cluster: Cluster, backup: Backup, tmp_path: Path
) -> None:
    create_database(cluster, "no_keys")
    site = Site(cluster, "no_keys", operator_keys(backup, tmp_path))
    assert restore(cluster, "no_keys", backup.main).returncode == 0
    # The main dump alone: the log verifies, but no identity opens.
    assert "OK" in site.ledger("verify", "--from-head", str(backup.head)).stdout
    database, ledger = site.open()  # creates the empty key table, as any process would
    try:
        with pytest.raises(ledger_errors.IdentityErased):
            disclose(ledger, backup.kept, "no-keys")
        # A month-old key dump (from before the erasure), into the table that now
        # exists: data only.
        done = restore(cluster, "no_keys", backup.old_keys, "--data-only")
        assert done.returncode == 0, done.stderr
        assert disclose(ledger, backup.kept, "old-keys")["name"] == "Li Lei"
        with site.connect() as conn:
            back = conn.execute(
                "SELECT count(*) FROM ledger_identity_keys WHERE account_id = %s",
                (backup.erased,),
            ).fetchone()
        assert back == (1,), "the old key dump brought the erased identity's key back"
        shredded = site.ledger("keys", "shred-erased")
        assert shredded.stdout.startswith("deleted 1 data keys of erased identities")
        with pytest.raises(ledger_errors.IdentityErased):
            disclose(ledger, backup.erased, "after-shred")
        assert disclose(ledger, backup.kept, "after-shred")["name"] == "Li Lei"
    finally:
        ledger.close()
        database.stop()


def test_a_restore_over_a_ledger_is_refused(cluster: Cluster, backup: Backup) -> None:
    """What an operator sees. With the documented flags, pg_restore stops at the first
    object that exists and rolls back: nothing changes. Without them it reports errors
    it ignored, changes no row (every table has a primary key) but sets the log's
    sequence back to the dump's value: new events would take ids from there."""
    live = Site(cluster, "live", backup.main.parent / "keys")
    head = ledger_head(live)
    sequence = "SELECT last_value FROM ledger_events_notification_id_seq"
    assert live.scalar(sequence) >= head

    refused = restore(cluster, "live", backup.main)
    assert refused.returncode == 1
    assert 'ERROR:  schema "ledger" already exists' in refused.stderr, refused.stderr
    assert ledger_head(live) == head and live.scalar(sequence) >= head

    keys_refused = restore(cluster, "live", backup.keys)
    assert keys_refused.returncode == 1
    assert 'relation "ledger_identity_keys" already exists' in keys_refused.stderr

    careless = pg(cluster, "pg_restore", "--no-owner", "--dbname=live", str(backup.main))
    assert careless.returncode == 1
    assert "errors ignored on restore" in careless.stderr.splitlines()[-1]
    assert ledger_head(live) == head  # no event added or lost...
    rewound = live.scalar(sequence)
    assert rewound < head  # ...but the next event's id would come from the dump's value
    # The repair: the sequence back to the head; the log verifies as before.
    live.scalar(
        "SELECT setval('ledger_events_notification_id_seq',"
        " (SELECT max(notification_id) FROM ledger_events))"
    )
    assert live.scalar(sequence) == head
    assert "OK" in live.ledger("verify").stdout
