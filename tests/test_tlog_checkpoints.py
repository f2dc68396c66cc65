"""Signed checkpoints: the sealer signs a C2SP checkpoint beside each tree head, keeps
every one append-only, and refuses a second root for a size it signed."""

from __future__ import annotations

import base64
from pathlib import Path

import psycopg
import pytest

from ledger import Database, Ledger
from ledger.tlog.checkpoint import open_checkpoint
from ledger.tlog.note import verifier_from_key
from projections import tlog
from projections.integrity import all_heads
from projections.sealer import Sealer
from tests.test_integrity import TAMPERING, run_ledger, sql_conn, write_some


@pytest.fixture
def sealer(
    ledger: Ledger, database: Database, schema: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Sealer:
    monkeypatch.setenv("LEDGER_LOG_ORIGIN", "ledger.example.org/cac-2014")
    s = Sealer(ledger, database, schema, page_size=50)
    s.setup()
    yield s
    s.close()


def test_each_seal_signs_a_checkpoint_that_verifies_with_the_printed_key(
    ledger: Ledger, database: Database, schema: str, sealer: Sealer
) -> None:
    world = write_some(ledger, 2)
    first = sealer.sign_now()
    write_some(ledger, 1, world)
    second = sealer.sign_now()
    printed = run_ledger(database, schema, "keys").stdout.split()
    assert printed[0] == sealer.signer.public_key_hex
    assert printed[1].startswith("ledger.example.org/cac-2014+")
    verifier = verifier_from_key(printed[1])
    with sql_conn(database, schema) as conn:
        stored = tlog.all_checkpoints(conn)
        heads = {h["tree_size"]: h["root_hash"] for h in all_heads(conn)}
        latest = tlog.checkpoint(conn)
    assert [size for size, _ in stored] == [first, second]
    for size, note in stored:
        checkpoint, _ = open_checkpoint(note, [verifier])
        assert checkpoint.origin == "ledger.example.org/cac-2014"
        assert checkpoint.size == size
        assert checkpoint.root.hex() == heads[size]  # the JSON head's root, same tree
    assert latest == stored[-1]
    assert stored[-1][1].startswith(f"ledger.example.org/cac-2014\n{second}\n")


def test_checkpoints_are_append_only_and_one_root_per_size(
    ledger: Ledger, database: Database, schema: str, sealer: Sealer
) -> None:
    write_some(ledger, 1)
    size = sealer.sign_now()
    with sql_conn(database, schema) as conn:
        (note,) = [n for _, n in tlog.all_checkpoints(conn)]
        root = base64.b64decode(note.split("\n")[2])
        # The same root again: the stored note, nothing new.
        with conn.transaction():
            assert tlog.sign(conn, sealer.checkpoint_signer, size, root) == note
        # Another root for that size: refused by the code...
        with pytest.raises(tlog.CheckpointConflict), conn.transaction():
            tlog.sign(conn, sealer.checkpoint_signer, size, bytes(32))
        # ... and by the table, whatever writes to it.
        for statement, params in (
            ("INSERT INTO checkpoints (tree_size, root_hash, note) VALUES (%s, %s, 'x')",
             (size, bytes(32))),
            ("UPDATE checkpoints SET root_hash = %s WHERE tree_size = %s", (bytes(32), size)),
            ("DELETE FROM checkpoints WHERE tree_size = %s", (size,)),
            ("TRUNCATE checkpoints", ()),
        ):  # fmt: skip
            with pytest.raises(psycopg.Error), conn.transaction():
                conn.execute(statement, params)  # type: ignore[arg-type]
        assert tlog.all_checkpoints(conn) == [(size, note)]


def test_a_rewritten_log_is_not_re_signed(
    ledger: Ledger, database: Database, schema: str, sealer: Sealer
) -> None:
    """An operator who rewrites an event and re-seals: the sealer refuses to sign a second
    root for a size already signed, and stops rather than serve it."""
    write_some(ledger, 1)
    sealer.sign_now()
    target = next(e.position for e in ledger.read_log(types=["Account.SanctionImposed"]))
    with sql_conn(database, schema) as conn:
        conn.execute("TRUNCATE merkle_leaves, merkle_nodes, tree_heads")
        conn.execute("UPDATE projection_positions SET position = 0 WHERE name = 'merkle'")
        conn.execute(TAMPERING["update"], {"p": target})
    with pytest.raises(tlog.CheckpointConflict):
        sealer.sign_now()


def test_the_origin_must_be_a_note_key_name(
    database: Database, schema: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for bad in ("has space/x", "a+b", "https://ledger.example.org", "ledger.example.org/"):
        monkeypatch.setenv("LEDGER_LOG_ORIGIN", bad)
        result = run_ledger(database, schema, "keys")
        assert result.returncode != 0
        assert "LEDGER_LOG_ORIGIN" in result.stderr and "Traceback" not in result.stderr
