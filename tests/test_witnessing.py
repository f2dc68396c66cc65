"""The ledger's side of witnessing: `ledger project --only witnesses` (a real child process)
sends each checkpoint the sealer signs to every witness in `LEDGER_WITNESSES` (real
`ledger witness` processes), keeps the cosignatures, resyncs on 409, keeps sealing while a
witness is down, and a ledger rewritten and re-signed under the same key is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from ledger import Database, Ledger
from ledger.merkle import MerkleTree
from ledger.tlog.checkpoint import Checkpoint, open_checkpoint
from ledger.tlog.forks import compare_with_witness, fetch_witness_checkpoint
from ledger.tlog.note import open_note, verifier_from_key
from projections import tlog
from projections.sealer import PgNodeStore, Sealer
from tests.api_server import free_port
from tests.cold import ColdProcess
from tests.test_integrity import run_ledger, sql_conn, write_some
from tests.test_tlog_audit import audit
from tests.witnesses import WitnessProcess, witnesses
from tests.witnesses import ledger as ledger_cli

ORIGIN = "ledger.example.org/witnessed"


@pytest.fixture
def sealer(
    ledger: Ledger, database: Database, schema: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Sealer]:
    monkeypatch.setenv("LEDGER_LOG_ORIGIN", ORIGIN)
    s = Sealer(ledger, database, schema, page_size=50)
    s.setup()
    yield s
    s.close()


@contextmanager
def witnessing(
    database: Database, schema: str, data_dir: Path, ws: list[WitnessProcess], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "LEDGER_DATABASE_URL": database.conninfo,
        "LEDGER_SCHEMA": schema,
        "LEDGER_DATA_DIR": str(data_dir),
        "LEDGER_WITNESSES": ",".join(f"{w.vkey}={w.url}" for w in ws),
        "LEDGER_WITNESS_TIMEOUT": "2",
    }
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "project", "--only", "witnesses"],
            env=env, stderr=out,
        )  # fmt: skip
    try:
        yield process
    finally:
        process.terminate()
        assert process.wait(30) == 0


def eventually(check: Callable[[], object], timeout: float = 60.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.1)


def cosigned_by(database: Database, schema: str, size: int) -> set[str]:
    with sql_conn(database, schema) as conn:
        rows = conn.execute("SELECT witness FROM cosignatures WHERE tree_size = %s", (size,))
        return {str(r[0]) for r in rows.fetchall()}


def tree_root(database: Database, schema: str, size: int) -> bytes:
    with sql_conn(database, schema) as conn:
        return MerkleTree(PgNodeStore(conn)).root(size)


def served_checkpoint(database: Database, schema: str) -> tuple[int, str]:
    with sql_conn(database, schema) as conn:
        found = tlog.checkpoint(conn)
    assert found is not None
    return found


def test_every_checkpoint_is_cosigned_by_two_witnesses_and_served_with_them(
    ledger: Ledger, database: Database, schema: str, sealer: Sealer, data_dir: Path, tmp_path: Path
) -> None:
    world = write_some(ledger, 2)
    first = sealer.sign_now()
    vkey = sealer.checkpoint_signer.vkey
    with (
        witnesses(tmp_path, [vkey], count=2) as ws,
        witnessing(database, schema, data_dir, ws, tmp_path / "worker.log"),
    ):
        names = {w.name for w in ws}
        eventually(lambda: cosigned_by(database, schema, first) == names)
        write_some(ledger, 3, world)
        second = sealer.sign_now()
        eventually(lambda: cosigned_by(database, schema, second) == names)
        size, note = served_checkpoint(database, schema)
        assert size == second
        verifiers = [verifier_from_key(vkey), *(verifier_from_key(w.vkey) for w in ws)]
        opened = open_note(note, verifiers)
        assert sorted(s.name for s in opened.signatures) == sorted([ORIGIN, *names])
        # each witness holds the same checkpoint, by its own account
        for w in ws:
            assert w.add_checkpoint(0, [], note).text == f"{second}\n"


def test_a_witness_down_never_stops_sealing_and_catches_up_from_a_cold_start(
    ledger: Ledger, database: Database, schema: str, sealer: Sealer, data_dir: Path, tmp_path: Path
) -> None:
    world = write_some(ledger, 1)
    first = sealer.sign_now()
    with witnesses(tmp_path, [sealer.checkpoint_signer.vkey], count=2) as (w0, w1):
        log = tmp_path / "worker.log"
        with witnessing(database, schema, data_dir, [w0, w1], log):
            eventually(lambda: cosigned_by(database, schema, first) == {w0.name, w1.name})
            w1.stop()
            write_some(ledger, 2, world)
            second = sealer.sign_now()  # sealing goes on
            eventually(lambda: cosigned_by(database, schema, second) == {w0.name})
            eventually(lambda: "unreachable" in log.read_text())  # w1 was tried, and logged
        # the worker is stopped; a new process starts from what the database holds
        w1.start()
        write_some(ledger, 1, world)
        third = sealer.sign_now()
        with witnessing(database, schema, data_dir, [w0, w1], log):
            eventually(lambda: cosigned_by(database, schema, third) == {w0.name, w1.name})


def test_a_witness_ahead_of_the_ledgers_record_answers_409_and_the_worker_resyncs(
    ledger: Ledger, database: Database, schema: str, sealer: Sealer, data_dir: Path, tmp_path: Path
) -> None:
    world = write_some(ledger, 2)
    first = sealer.sign_now()
    with witnesses(tmp_path, [sealer.checkpoint_signer.vkey]) as (w,):
        # the witness learns of `first` from elsewhere: the ledger has no record of it
        _, note = served_checkpoint(database, schema)
        assert w.add_checkpoint(0, [], note).status_code == 200
        write_some(ledger, 2, world)
        second = sealer.sign_now()
        with witnessing(database, schema, data_dir, [w], tmp_path / "worker.log"):
            eventually(lambda: cosigned_by(database, schema, second) == {w.name})
        assert cosigned_by(database, schema, first) == set()
        assert w.add_checkpoint(0, [], note).text == f"{second}\n"


def test_a_ledger_rewritten_and_resigned_under_the_same_key_is_refused_with_evidence(
    ledger: Ledger, database: Database, schema: str, sealer: Sealer, data_dir: Path, tmp_path: Path
) -> None:
    write_some(ledger, 3)
    honest = sealer.sign_now()
    key = sealer.checkpoint_signer.vkey
    log = tmp_path / "worker.log"
    with witnesses(tmp_path, [key]) as (w,):
        with witnessing(database, schema, data_dir, [w], log):
            eventually(lambda: cosigned_by(database, schema, honest) == {w.name})
        _, honest_note = served_checkpoint(database, schema)
        log_keys, witness_keys = [verifier_from_key(key)], [verifier_from_key(w.vkey)]
        assert compare_with_witness(
            fetch_witness_checkpoint(w.url, ORIGIN) or "", log_keys, witness_keys, honest,
            lambda n: tree_root(database, schema, n),
        ) is None  # fmt: skip
        # The operator rewrites an early event, drops the tree, checkpoints and
        # cosignatures, and has the sealer sign the rewritten history with the same key.
        with sql_conn(database, schema) as conn:
            conn.execute(
                "UPDATE ledger_events SET state = convert_to(replace(convert_from(state, 'UTF8'),"
                " 'e', 'E'), 'UTF8') WHERE notification_id = 2"
            )
        sealer.reset()
        write_some(ledger, 1)
        forged = sealer.sign_now()
        _, forged_note = served_checkpoint(database, schema)
        forged_cp, _ = open_checkpoint(forged_note, [verifier_from_key(key)])  # validly signed
        with witnessing(database, schema, data_dir, [w], log):
            eventually(lambda: "REFUSED" in w.stderr(), timeout=60)
            time.sleep(1)
        assert cosigned_by(database, schema, forged) == set()
        assert w.add_checkpoint(0, [], forged_note).text == f"{honest}\n"  # still the old view
        (record,) = [
            json.loads(x)
            for x in ledger_cli("witness", "evidence", "--config", str(w.config)).splitlines()
        ][:1]
        assert record["offered_checkpoint"] == forged_note
        held = open_note(
            record["held_checkpoint"], [verifier_from_key(key), verifier_from_key(w.vkey)]
        )
        assert held.text == open_note(honest_note, [verifier_from_key(key)]).text
        assert Checkpoint.parse(held.text).size == honest and forged_cp.size == forged
        assert "REFUSES" in log.read_text() or "answered 422" in log.read_text()
        # An auditor holding the rewritten tree asks the witness what it cosigned: a fork.
        finding = compare_with_witness(
            fetch_witness_checkpoint(w.url, ORIGIN) or "", log_keys, witness_keys, forged,
            lambda n: tree_root(database, schema, n),
        )  # fmt: skip
        assert finding is not None and finding.kind == "fork", finding
        assert f"size {honest}" in finding.message and w.name in finding.message
        assert compare_with_witness(
            fetch_witness_checkpoint(w.url, ORIGIN) or "", log_keys, witness_keys, honest - 1,
            lambda n: tree_root(database, schema, n),
        ).kind == "behind"  # type: ignore[union-attr]  # fmt: skip
        assert fetch_witness_checkpoint(w.url, "ledger.example.org/other") is None
        # ... and so does `ledger audit` of the rewritten ledger's export, asking the witness
        rewritten = tmp_path / "rewritten"
        assert run_ledger(database, schema, "export", str(rewritten)).returncode == 0
        shown = audit(database, schema, rewritten, key, "--witness", f"{w.vkey}={w.url}")
        assert "FAILED fork:" in shown and f"witness {w.name} cosigned" in shown


def test_ledger_serve_runs_the_witnessing_worker_and_reports_the_lag(
    cold: ColdProcess, ledger: Ledger, database: Database, schema: str, tmp_path: Path
) -> None:
    from tests.test_metrics import ledger_serve, scrape, value

    vkey = cold.cli("keys").stdout.split()[1]  # the checkpoint key, named LEDGER_LOG_ORIGIN
    port = free_port()
    with witnesses(tmp_path, [vkey], count=2) as ws, ledger_serve(
        cold, port, tmp_path / "serve.log",
        LEDGER_WITNESSES=" ".join(f"{w.vkey}={w.url}" for w in ws),
    ):  # fmt: skip
        write_some(ledger, 2)
        url = f"http://127.0.0.1:{port}/graphql"

        def caught_up() -> bool:
            samples = scrape(url)
            sizes = [value(samples, "ledger_witness_cosigned_size", witness=w.name) for w in ws]
            return min(sizes) >= 1 and all(
                value(samples, "ledger_witness_lag_leaves", witness=w.name) == 0 for w in ws
            )

        eventually(caught_up, timeout=90)
        served = httpx.get(f"http://127.0.0.1:{port}/log/checkpoint", timeout=10)
        assert served.status_code == 200
        note = served.text
        opened = open_note(
            note, [verifier_from_key(vkey), *(verifier_from_key(w.vkey) for w in ws)]
        )
        assert len(opened.signatures) == 3
        ws[1].stop()
        write_some(ledger, 1)
        eventually(lambda: value(scrape(url), "ledger_witness_lag_seconds", witness=ws[1].name) > 1)
        assert value(scrape(url), "ledger_witness_lag_leaves", witness=ws[0].name) == 0
