"""Tamper evidence: the sealer's Merkle log, proofs checked offline, and `ledger verify`
catching events altered, deleted, swapped or forged directly in PostgreSQL."""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest

from ledger import Database, Ledger, proofcheck
from ledger.signing import Signer
from projections.integrity import consistency_proof, head, inclusion_proof
from projections.sealer import Sealer
from tests.world import World

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def sealer(ledger: Ledger, database: Database, schema: str, data_dir: Path) -> Sealer:
    s = Sealer(ledger, database, schema, page_size=50)
    s.setup()
    yield s
    s.close()


def write_some(ledger: Ledger, accounts: int = 4, world: World | None = None) -> World:
    world = world or World(ledger)
    for _ in range(accounts):
        a = world.account()
        world.post(a)
        world.sanction(a, "warning")
    return world


def sql_conn(database: Database, schema: str) -> psycopg.Connection[object]:
    return database.connect(schema, autocommit=True)


def run_ledger(database: Database, schema: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LEDGER_DATABASE_URL": database.conninfo, "LEDGER_SCHEMA": schema}
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_inclusion_and_consistency_proofs_verify_offline(
    ledger: Ledger, database: Database, schema: str, sealer: Sealer, tmp_path: Path
) -> None:
    world = write_some(ledger)
    first = sealer.sign_now()
    write_some(ledger, world=world)
    second = sealer.sign_now()
    assert second > first
    key = Signer.from_environment(Path(os.environ["LEDGER_DATA_DIR"])).public_key_hex
    positions = [e.position for e in ledger.read_log()]
    with sql_conn(database, schema) as conn:
        for position in random.Random(1).sample(positions[:first], 10):
            proof = inclusion_proof(conn, position, first)
            assert _check(proof, key, tmp_path) == 0
        later = inclusion_proof(conn, positions[-1])
        assert later["tree_size"] == second
        consistency = consistency_proof(conn, first, second)
    assert _check(later, key, tmp_path) == 0
    assert _check(consistency, key, tmp_path) == 0
    tampered = {**consistency, "proof": consistency["proof"][::-1]}
    assert _check(tampered, key, tmp_path) == 1
    forged = {**later, "leaf_hash": "00" * 32}
    assert _check(forged, key, tmp_path) == 1


def _check(proof: dict[str, object], key: str, tmp_path: Path) -> int:
    path = tmp_path / "proof.json"
    path.write_text(json.dumps(proof))
    return proofcheck.main([str(path), "--public-key", key])


def test_an_untouched_ledger_verifies_clean(
    ledger: Ledger, database: Database, schema: str, sealer: Sealer
) -> None:
    write_some(ledger)
    sealer.sign_now()
    result = run_ledger(database, schema, "verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


TAMPERING = {
    "update": "UPDATE ledger_events SET state = convert_to(replace(convert_from(state, 'UTF8'),"
    " 'breach', 'nothing'), 'UTF8') WHERE notification_id = %(p)s",
    "delete": "DELETE FROM ledger_events WHERE notification_id = %(p)s",
    "swap": "UPDATE ledger_events e SET state = o.state FROM ledger_events o"
    " WHERE (e.notification_id, o.notification_id) IN ((%(p)s, %(q)s), (%(q)s, %(p)s))",
}


@pytest.mark.parametrize("how", sorted(TAMPERING))
def test_tampering_is_found_and_named(
    ledger: Ledger, database: Database, schema: str, sealer: Sealer, how: str
) -> None:
    write_some(ledger)
    sealer.sign_now()
    sanctions = [e.position for e in ledger.read_log(types=["Account.SanctionImposed"])]
    p, q = sanctions[1], sanctions[2]
    with sql_conn(database, schema) as conn:
        conn.execute(TAMPERING[how], {"p": p, "q": q})
    result = run_ledger(database, schema, "verify")
    assert result.returncode == 1, result.stdout
    assert f"FAILED at position {p}:" in result.stdout


def test_a_forged_event_inside_the_sealed_range_is_found(
    ledger: Ledger, database: Database, schema: str, sealer: Sealer
) -> None:
    world = write_some(ledger)
    with sql_conn(database, schema) as conn:  # leave a gap, as a rolled-back insert does
        seq = conn.execute("SELECT pg_get_serial_sequence('ledger_events', 'notification_id')")
        conn.execute("SELECT setval(%s, nextval(%s) + 5)", [seq.fetchone()[0]] * 2)  # type: ignore[index]
    write_some(ledger, 1, world)
    sealer.sign_now()
    positions = [e.position for e in ledger.read_log()]
    gap = next(p + 1 for p, n in itertools.pairwise(positions) if n != p + 1)
    with sql_conn(database, schema) as conn:
        conn.execute(
            "INSERT INTO ledger_events (notification_id, originator_id, originator_version,"
            " topic, state) SELECT %s, originator_id, 999, topic, state FROM ledger_events"
            " WHERE notification_id = %s",
            (gap, positions[-1]),
        )
    result = run_ledger(database, schema, "verify")
    assert result.returncode == 1, result.stdout
    assert f"FAILED at position {gap}: an event that was never sealed" in result.stdout


def test_a_rewritten_ledger_fails_against_a_head_kept_outside(
    ledger: Ledger, database: Database, schema: str, sealer: Sealer, tmp_path: Path
) -> None:
    write_some(ledger)
    sealer.sign_now()
    with sql_conn(database, schema) as conn:
        kept = head(conn)
    (tmp_path / "head.json").write_text(json.dumps(kept))
    # The operator alters an event and re-seals everything with the same key.
    target = next(e.position for e in ledger.read_log(types=["Account.SanctionImposed"]))
    with sql_conn(database, schema) as conn:
        conn.execute(TAMPERING["update"], {"p": target, "q": target})
        conn.execute("TRUNCATE merkle_leaves, merkle_nodes, tree_heads")
        # The signed checkpoints refuse a second root for a size; an operator owning the
        # database can still take its triggers off and empty them.
        conn.execute("ALTER TABLE checkpoints DISABLE TRIGGER USER")
        conn.execute("TRUNCATE checkpoints")
        conn.execute("UPDATE projection_positions SET position = 0 WHERE name = 'merkle'")
    sealer.sign_now()
    assert run_ledger(database, schema, "verify").returncode == 0  # consistent with itself
    result = run_ledger(database, schema, "verify", "--from-head", str(tmp_path / "head.json"))
    assert result.returncode == 1
    assert f"differs from signed head {kept['tree_size']}" in result.stdout


def test_two_sealers_seal_each_event_once(
    ledger: Ledger, database: Database, schema: str, data_dir: Path
) -> None:
    write_some(ledger, 8)
    sealers = [Sealer(ledger, database, schema, page_size=10) for _ in range(2)]
    sealers[0].setup()
    threads = [threading.Thread(target=s.catch_up) for s in sealers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for s in sealers:
        s.sign_now()
        s.close()
    result = run_ledger(database, schema, "verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{ledger.head()} events" in result.stdout and "0 not yet sealed" in result.stdout


def test_keys_prints_the_public_key_and_verify_proof_runs_without_a_database(
    ledger: Ledger, database: Database, schema: str, sealer: Sealer, tmp_path: Path
) -> None:
    write_some(ledger, 1)
    sealer.sign_now()
    key = run_ledger(database, schema, "keys").stdout.split()[0]
    assert key == sealer.signer.public_key_hex
    with sql_conn(database, schema) as conn:
        proof = inclusion_proof(conn, ledger.head())
    (tmp_path / "p.json").write_text(json.dumps(proof))
    env = {k: v for k, v in os.environ.items() if k != "LEDGER_DATABASE_URL"}
    checked = subprocess.run(
        [sys.executable, str(ROOT / "ledger" / "proofcheck.py"), str(tmp_path / "p.json"),
         "--public-key", key],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert checked.returncode == 0 and checked.stdout.startswith("OK"), checked.stdout
