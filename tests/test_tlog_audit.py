"""`ledger export` and `ledger audit`: an export is the /log/ tree as files; the audit
checks every entry, tile and checkpoint, replays the entries into a database of its own
and rebuilds read models equal to the live ones; one altered byte anywhere, or a
checkpoint of another history, is found."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from psycopg import sql

from ledger import Database, Ledger
from ledger.tlog.checkpoint import Checkpoint, sign_checkpoint
from ledger.tlog.note import Ed25519Signer
from ledger.tlog.tiles import Tile
from projections.registry import ALL as PROJECTIONS
from projections.runner import Projector
from projections.sealer import Sealer
from tests.test_integrity import run_ledger, sql_conn, write_some
from tests.test_tlog_client import serving


@pytest.fixture
def exported(
    ledger: Ledger, database: Database, schema: str, data_dir: Path, projector: Projector,
    tmp_path: Path,
) -> tuple[Path, str, Sealer]:  # fmt: skip
    """A live ledger (read models caught up, several checkpoints) exported to a folder;
    the folder, the log's verifier key and the sealer."""
    world = write_some(ledger, 12)
    sealer = Sealer(ledger, database, schema, page_size=50)
    sealer.setup()
    sealer.sign_now()
    while ledger.head() < 600:
        write_some(ledger, 6, world)
        sealer.sign_now()
    projector.catch_up()
    out = tmp_path / "export"
    done = run_ledger(database, schema, "export", str(out))
    assert done.returncode == 0, done.stderr
    vkey = run_ledger(database, schema, "keys").stdout.split()[1]
    return out, vkey, sealer


def test_the_export_is_the_http_tree(
    exported: tuple[Path, str, Sealer], database: Database, ledger: Ledger, schema: str
) -> None:
    out, vkey, _ = exported
    size = int((out / "checkpoint").read_text().split("\n")[1])
    assert (out / "keys").read_text() == vkey + "\n"
    assert len((out / "tile/0/000").read_bytes()) == 8192
    assert (out / Tile(0, size // 256, size % 256).path).exists()
    with serving(database, ledger, schema) as base:
        import httpx

        for path in ("checkpoint", "tile/0/001", f"tile/1/000.p/{size // 256}",
                     "checkpoints/index"):  # fmt: skip
            assert httpx.get(f"{base}/log/{path}").content == (out / path).read_bytes(), path
    again = run_ledger(database, schema, "export", str(out))
    assert again.returncode == 0 and " 0 full tiles kept" not in again.stdout


def test_an_audit_of_the_export_rebuilds_the_live_read_models(
    exported: tuple[Path, str, Sealer], ledger: Ledger, database: Database, schema: str
) -> None:
    out, vkey, _ = exported
    verify = run_ledger(database, schema, "rebuild", "--verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    account = next(e.originator_id for e in ledger.read_log(types=["Account.SanctionImposed"]))
    at = next(e.position for e in ledger.read_log(types=["Account.SanctionImposed"]))
    mine = f"audit_{schema}"
    try:
        done = run_ledger(database, schema, "audit", str(out), "--key", vkey, "--database",
                          database.conninfo, "--schema", mine, "--account", str(account),
                          "--at", str(at))  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert "OK: every entry, tile and checkpoint agrees" in done.stdout
        shown = json.loads(done.stdout[done.stdout.index("{") :])
        live = run_ledger(database, schema, "account", str(account), "--as-of", str(at))
        assert shown == json.loads(live.stdout)
        with sql_conn(database, schema) as conn:
            for table in (t for p in PROJECTIONS for t in p.tables):
                for a, b in ((schema, mine), (mine, schema)):
                    query = sql.SQL("SELECT count(*) FROM (SELECT * FROM {}.{} EXCEPT ALL"
                                    " SELECT * FROM {}.{}) d").format(
                        sql.Identifier(a), sql.Identifier(table), sql.Identifier(b),
                        sql.Identifier(table))  # fmt: skip
                    assert conn.execute(query).fetchone() == (0,), (table, a)
    finally:
        database.drop_schema(mine)


def flip(path: Path, at: int) -> None:
    body = bytearray(path.read_bytes())
    body[at] ^= 0x01
    path.write_bytes(bytes(body))


def audit(database: Database, schema: str, folder: Path, vkey: str, *more: str) -> str:
    done = run_ledger(database, schema, "audit", str(folder), "--key", vkey, "--no-replay", *more)
    ok = any(line.startswith("OK: ") for line in done.stdout.splitlines())
    assert done.returncode == (0 if ok else 1), done.stdout + done.stderr
    return done.stdout


def test_one_altered_byte_is_found(
    exported: tuple[Path, str, Sealer], database: Database, schema: str, tmp_path: Path
) -> None:
    out, vkey, _ = exported
    assert "OK:" in audit(database, schema, out, vkey)
    size = int((out / "checkpoint").read_text().split("\n")[1])
    level1 = f"tile/1/000.p/{size // 256}"
    for path, at, finding in (
        ("tile/entries/001", 300, "FAILED entry: entry 256"),  # inside the first event's state
        ("tile/0/001", 40, "FAILED entry: entry 257"),  # a leaf hash
        (level1, 3, f"FAILED tile: {level1} differs from the tiles below it"),
        ("checkpoint", 5, "FAILED checkpoint: checkpoint"),  # the origin line
    ):
        copy = tmp_path / path.replace("/", "_")
        shutil.copytree(out, copy)
        flip(copy / path, at)
        assert finding in audit(database, schema, copy, vkey), path
    # The root line of the checkpoint: its signature no longer verifies either.
    shutil.copytree(out, tmp_path / "root")
    text = (out / "checkpoint").read_text()
    root = text.split("\n")[2]
    other = root[:5] + ("A" if root[5] != "A" else "B") + root[6:]
    (tmp_path / "root" / "checkpoint").write_text(text.replace(root, other))
    assert "FAILED checkpoint" in audit(database, schema, tmp_path / "root", vkey)


def test_a_checkpoint_of_another_history_is_a_fork(
    exported: tuple[Path, str, Sealer], database: Database, schema: str, tmp_path: Path
) -> None:
    """The operator signs, under the same key, a root for a size the log holds that its
    entries do not make (the view it showed someone else): kept apart, it is a fork."""
    out, vkey, sealer = exported
    size = int((out / "checkpoints/index").read_text().split()[1])
    signer = Ed25519Signer(vkey.split("+")[0], sealer.signer.key)
    other = sign_checkpoint(Checkpoint(signer.name, size, bytes(32)), [signer])
    (tmp_path / "seen-elsewhere").write_text(other)
    shown = audit(database, schema, out, vkey, "--checkpoint", str(tmp_path / "seen-elsewhere"))
    assert "FAILED fork:" in shown and other in shown
    assert f"both sign size {size}" in shown
    beyond = sign_checkpoint(Checkpoint(signer.name, 10**6, bytes(32)), [signer])
    (tmp_path / "later").write_text(beyond)
    shown = audit(database, schema, out, vkey, "--checkpoint", str(tmp_path / "later"))
    assert "beyond the log's latest checkpoint" in shown


def test_an_audit_over_http(
    exported: tuple[Path, str, Sealer], ledger: Ledger, database: Database, schema: str
) -> None:
    _, vkey, _ = exported
    with serving(database, ledger, schema) as base:
        from api.auth import create_token

        with database.connect() as conn:
            token = create_token(conn, schema, "auditor", None, "audit")[1]
        done = run_ledger(database, schema, "audit", f"{base}/log/", "--token", token,
                          "--no-replay")  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert "checking against the key the source publishes" in done.stdout
        denied = run_ledger(database, schema, "audit", f"{base}/log", "--key", vkey, "--no-replay")
        assert denied.returncode == 1 and "HTTP 401" in denied.stderr


def test_audit_reports_the_fork_a_witness_cosigned_the_other_side_of(
    ledger: Ledger, database: Database, schema: str, data_dir: Path, tmp_path: Path
) -> None:
    """Split view: the operator rewrites an event, re-seals and re-signs under the same
    key. The export of the new history verifies on its own; asked what it cosigned, the
    witness shows the other history, and the audit reports the fork."""
    from projections import tlog
    from tests.test_integrity import TAMPERING
    from tests.witnesses import witnesses

    write_some(ledger, 4)
    sealer = Sealer(ledger, database, schema, page_size=50)
    sealer.setup()
    sealer.sign_now()
    vkey = run_ledger(database, schema, "keys").stdout.split()[1]
    with witnesses(tmp_path, [vkey], count=1) as (w,):
        with sql_conn(database, schema) as conn:
            size, note = tlog.checkpoint(conn) or (0, "")
        assert w.add_checkpoint(0, [], note).status_code == 200
        honest = tmp_path / "honest"
        assert run_ledger(database, schema, "export", str(honest)).returncode == 0
        asked = ("--witness", f"{w.vkey}={w.url}")
        assert "OK:" in audit(database, schema, honest, vkey, *asked)

        target = next(e.position for e in ledger.read_log(types=["Account.SanctionImposed"]))
        with sql_conn(database, schema) as conn:
            conn.execute(TAMPERING["update"], {"p": target})
            conn.execute("TRUNCATE merkle_leaves, merkle_nodes, tree_heads")
            conn.execute("ALTER TABLE checkpoints DISABLE TRIGGER USER")
            conn.execute("TRUNCATE checkpoints")
            conn.execute("UPDATE projection_positions SET position = 0 WHERE name = 'merkle'")
        assert sealer.sign_now() == size
        rewritten = tmp_path / "rewritten"
        assert run_ledger(database, schema, "export", str(rewritten)).returncode == 0
        assert "OK:" in audit(database, schema, rewritten, vkey)  # consistent with itself
        shown = audit(database, schema, rewritten, vkey, *asked)
        assert "FAILED fork:" in shown and f"witness {w.name} cosigned" in shown
        assert note.split("\n\n")[0] in shown  # the evidence: what the witness cosigned
    sealer.close()
