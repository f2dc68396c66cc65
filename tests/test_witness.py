"""`ledger witness`: the c2sp.org/tlog-witness protocol, served by a real process and spoken
to by httpx; its state survives a restart; split views are refused with evidence kept."""

from __future__ import annotations

import base64
import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from ledger.merkle import EMPTY_ROOT
from ledger.tlog.checkpoint import Checkpoint
from ledger.tlog.note import (
    CosignatureVerifier,
    UnverifiedNote,
    cosignature_timestamp,
    open_note,
    parse_note,
    sign_note,
    verifier_from_key,
)
from tests.witnesses import (
    SpecLog,
    WitnessProcess,
    env_without_ledger,
    ledger,
    request_body,
    witnesses,
)

ORIGIN = "ledger.test/witnessed"


def cosigned(response: httpx.Response, note: str, witness: WitnessProcess) -> str:
    """The note with the witness's cosignature, verified against its vkey."""
    assert response.status_code == 200, response.text
    assert response.text.startswith("— ") and response.text.endswith("\n")
    verifier = verifier_from_key(witness.vkey)
    assert isinstance(verifier, CosignatureVerifier)
    opened = open_note(note + response.text, [verifier])
    (signature,) = opened.signatures
    assert abs(cosignature_timestamp(signature) - time.time()) < 120
    return note + response.text


def test_cold_start_cosigns_then_follows_with_proofs_and_serves_the_latest(tmp_path: Path) -> None:
    log = SpecLog(ORIGIN)
    log.append(*(f"e{i}".encode() for i in range(5)))
    with witnesses(tmp_path, [log.vkey]) as (w,):
        first = log.checkpoint()
        cosigned(w.add_checkpoint(0, [], first), first, w)
        for more in (1, 2, 250, 7):  # proofs across tile and power-of-two edges
            old = log.size
            log.append(*(f"x{old + i}".encode() for i in range(more)))
            note = log.checkpoint()
            cosigned(w.add_checkpoint(old, log.proof(old), note), note, w)
        # the same checkpoint again: equal sizes, equal roots, no proof
        note = log.checkpoint()
        cosigned(w.add_checkpoint(log.size, [], note), note, w)
        held = httpx.get(f"{w.url}/{hashlib.sha256(ORIGIN.encode()).hexdigest()}/checkpoint")
        assert held.status_code == 200 and held.headers["cache-control"] == "no-cache"
        opened = open_note(held.text, [log.signer.verifier, verifier_from_key(w.vkey)])
        assert len(opened.signatures) == 2
        assert Checkpoint.parse(opened.text).size == log.size == 265
        assert httpx.get(f"{w.url}/{'0' * 64}/checkpoint").status_code == 404


def test_409_tells_the_size_held_and_the_log_resyncs(tmp_path: Path) -> None:
    log = SpecLog(ORIGIN)
    log.append(*(bytes([i]) for i in range(10)))
    with witnesses(tmp_path, [log.vkey]) as (w,):
        cosigned(w.add_checkpoint(0, [], log.checkpoint()), log.checkpoint(), w)
        log.append(b"eleven", b"twelve")
        conflict = w.add_checkpoint(0, [], log.checkpoint())
        assert conflict.status_code == 409
        assert conflict.headers["content-type"] == "text/x.tlog.size"
        assert conflict.text == "10\n"
        assert w.add_checkpoint(3, log.proof(3), log.checkpoint()).status_code == 409
        held = int(conflict.text)
        cosigned(w.add_checkpoint(held, log.proof(held), log.checkpoint()), log.checkpoint(), w)
        assert w.add_checkpoint(10, log.proof(10), log.checkpoint()).text == "12\n"


def test_state_survives_a_killed_witness_and_a_second_process_reads_it(tmp_path: Path) -> None:
    log = SpecLog(ORIGIN)
    log.append(b"a", b"b", b"c")
    with witnesses(tmp_path, [log.vkey]) as (w,):
        cosigned(w.add_checkpoint(0, [], log.checkpoint()), log.checkpoint(), w)
        w.stop(signal.SIGKILL)
        w.start()
        assert w.add_checkpoint(0, [], log.checkpoint()).text == "3\n"
        log.append(b"d")
        cosigned(w.add_checkpoint(3, log.proof(3), log.checkpoint()), log.checkpoint(), w)
        w.stop()
        w.start()
        assert w.add_checkpoint(0, [], log.checkpoint()).text == "4\n"
        # the same key and state file, read by another command: nothing refused so far
        assert ledger("witness", "evidence", "--config", str(w.config)) == ""


def test_two_witnesses_cosign_independently_and_a_client_verifies_both(tmp_path: Path) -> None:
    log = SpecLog(ORIGIN)
    log.append(b"one")
    with witnesses(tmp_path, [log.vkey], count=2) as (w0, w1):
        assert w0.vkey != w1.vkey
        note = log.checkpoint()
        with_w0 = cosigned(w0.add_checkpoint(0, [], note), note, w0)
        with_both = cosigned(w1.add_checkpoint(0, [], note), with_w0, w1)
        opened = open_note(
            with_both, [log.signer.verifier, *map(verifier_from_key, (w0.vkey, w1.vkey))]
        )
        assert [s.name for s in opened.signatures] == [ORIGIN, w0.name, w1.name]
        log.append(b"two", b"three")
        note = log.checkpoint()
        cosigned(w1.add_checkpoint(1, log.proof(1), note), note, w1)  # w0 stays at 1
        assert w0.add_checkpoint(3, [], note).text == "1\n"


def test_concurrent_submissions_cannot_roll_a_log_back(tmp_path: Path) -> None:
    log = SpecLog(ORIGIN)
    log.append(b"base")
    with witnesses(tmp_path, [log.vkey]) as (w,):
        cosigned(w.add_checkpoint(0, [], log.checkpoint()), log.checkpoint(), w)
        log.append(*(str(i).encode() for i in range(40)))
        sizes = range(2, 42)
        bodies = [request_body(1, log.proof(1, n), log.checkpoint(n)) for n in sizes]
        with httpx.Client() as client, ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(lambda b: client.post(w.url + "/add-checkpoint", content=b), bodies)
            )
        codes = [a.status_code for a in answers]
        assert codes.count(200) == 1 and codes.count(409) == len(sizes) - 1
        winner = sizes[codes.index(200)]
        assert all(a.text == f"{winner}\n" for a in answers if a.status_code == 409)


def test_split_view_is_refused_and_the_evidence_kept(tmp_path: Path) -> None:
    honest = SpecLog(ORIGIN)
    honest.append(*(f"event {i}".encode() for i in range(10)))
    # the operator rewrites event 4 and re-signs under the same key
    forked = SpecLog(ORIGIN, honest.signer.private_key)
    forked.append(*(f"event {i}".encode() if i != 4 else b"rewritten" for i in range(10)))
    with witnesses(tmp_path, [honest.vkey]) as (w,):
        seen = honest.checkpoint()
        cosigned(w.add_checkpoint(0, [], seen), seen, w)
        forked.append(b"event 10", b"event 11")
        offered = forked.checkpoint()
        refused = w.add_checkpoint(10, forked.proof(10), offered)
        assert refused.status_code == 422 and "does not verify" in refused.text
        again = w.add_checkpoint(10, forked.proof(10), offered)  # a retry: no second record
        assert again.status_code == 422
        same_size = forked.checkpoint(10)
        assert w.add_checkpoint(10, [], same_size).status_code == 422
        assert w.add_checkpoint(0, [], offered).text == "10\n"  # still holds the honest view
        w.stop(signal.SIGKILL)
        records = [
            json.loads(line)
            for line in ledger("witness", "evidence", "--config", str(w.config)).splitlines()
        ]
        assert [r["offered_checkpoint"] for r in records] == [offered, same_size]
        for record in records:
            assert record["origin"] == ORIGIN and record["old_size"] == 10
            held = open_note(
                record["held_checkpoint"], [honest.signer.verifier, verifier_from_key(w.vkey)]
            )
            assert Checkpoint.parse(held.text).root == honest.tree.root(10)
            # both views carry the log's own valid signature: proof of a split view
            assert open_note(record["offered_checkpoint"], [honest.signer.verifier]).signatures
        assert records[0]["proof"] == [base64.b64encode(h).decode() for h in forked.proof(10)]
        assert "REFUSED" in w.stderr()
        w.start()
        honest.append(b"event 10")
        cosigned(
            w.add_checkpoint(10, honest.proof(10), honest.checkpoint()), honest.checkpoint(), w
        )


def test_every_refusal_is_typed_and_changes_nothing(tmp_path: Path) -> None:
    log = SpecLog(ORIGIN)
    log.append(b"a", b"b", b"c", b"d")
    stranger = SpecLog("ledger.test/unknown")
    stranger.append(b"a")
    impostor = SpecLog(ORIGIN)  # same origin, another key
    impostor.tree, impostor.size = log.tree, log.size
    with witnesses(tmp_path, [log.vkey]) as (w,):
        good = log.checkpoint()
        text, (sig,) = parse_note(good)
        other_sig = parse_note(impostor.checkpoint())[1][0]
        bad_sig = sig.base64[:10] + ("A" if sig.base64[10] != "A" else "B") + sig.base64[11:]
        empty_wrong_root = sign_note(
            Checkpoint(ORIGIN, 0, hashlib.sha256(b"x").digest()).text, [log.signer]
        )
        cases: list[tuple[int, bytes]] = [
            (404, request_body(0, [], stranger.checkpoint())),
            (403, request_body(0, [], impostor.checkpoint())),
            (403, request_body(0, [], text + "\n" + f"— {ORIGIN} {bad_sig}\n")),
            (403, request_body(0, [], text + "\n" + other_sig.line())),
            (400, request_body(5, [], good)),
            (422, request_body(0, [], empty_wrong_root)),
            (422, request_body(0, [EMPTY_ROOT], good)),
            (400, b"old 0\n\n" + b"\x00" + good.encode()),
            # a lone surrogate, encoded
            (400, b"old 0\n\n" + good.encode().replace(b"ledger", b"l\xed\xa0\x80edger", 1)),
            (400, b"old 00\n\n" + good.encode()),
            (400, b"old -1\n\n" + good.encode()),
            (400, b"old 0\n" + good.encode()),
            (400, b"old 0\nnot base64!\n\n" + good.encode()),
            (400, request_body(2, [EMPTY_ROOT] * 64, good)),
            (400, b"old 0\n\n" + good.encode()[:-1]),
            (400, b"\xff\xfe"),
            (400, b""),
            (413, b"old 0\n\n" + b"a" * (1 << 20)),
        ]
        for status, body in cases:
            answer = httpx.post(w.url + "/add-checkpoint", content=body, timeout=30)
            assert answer.status_code == status, (body[:80], answer.text)
            assert "Traceback" not in answer.text and len(answer.text) < 200
        assert httpx.get(w.url + "/add-checkpoint").status_code == 405
        cosigned(w.add_checkpoint(0, [], good), good, w)  # nothing above changed the state
        with pytest.raises(UnverifiedNote):
            open_note(good, [verifier_from_key(w.vkey)])


def test_a_witness_killed_mid_stream_keeps_every_size_it_acknowledged(tmp_path: Path) -> None:
    log = SpecLog(ORIGIN)
    log.append(*(str(i).encode() for i in range(2000)))
    progress = {"acknowledged": 0, "attempted": 0}

    def submit(w: WitnessProcess) -> None:
        with httpx.Client() as client:
            for size in range(1, 2001):
                progress["attempted"] = size
                held = progress["acknowledged"]
                note = log.checkpoint(size)
                try:
                    answer = w.add_checkpoint(held, log.proof(held, size), note, client)
                except httpx.HTTPError:
                    return  # killed
                assert answer.status_code == 200, answer.text
                progress["acknowledged"] = size

    with witnesses(tmp_path, [log.vkey]) as (w,):
        submitter = threading.Thread(target=submit, args=(w,))
        submitter.start()
        while progress["acknowledged"] < 30:
            time.sleep(0.005)
        assert w.process is not None
        w.process.kill()  # mid-request, as likely as not
        submitter.join()
        acknowledged, attempted = progress["acknowledged"], progress["attempted"]
        assert 30 <= acknowledged < 2000, "the witness was not killed mid-stream"
        w.stop()
        w.start()
        held = int(w.add_checkpoint(0, [], log.checkpoint()).text)
        # committed before it answered: never behind what it acknowledged
        assert held in (acknowledged, attempted)
        cosigned(w.add_checkpoint(held, log.proof(held), log.checkpoint()), log.checkpoint(), w)


def test_the_witness_command_refuses_bad_settings_in_one_line(tmp_path: Path) -> None:
    log = SpecLog(ORIGIN)
    key = tmp_path / "w.key"
    ledger("witness", "keygen", "witness.test/cli", "--key-file", str(key))
    plain = tmp_path / "plain.key"
    plain.write_text(log.signer.skey + "\n")  # an Ed25519 (0x01) key: not a witness key
    garbage = tmp_path / "garbage.key"
    garbage.write_text("PRIVATE+KEY+x+00000000+AAAA\n")

    def config(body: str) -> str:
        path = tmp_path / "bad.toml"
        path.write_text(f'key_file = "w.key"\ndatabase = "s.sqlite3"\n{body}')
        return str(path)

    refusals: list[tuple[int, list[str]]] = [
        (2, ["keygen", "a b", "--key-file", str(tmp_path / "k1")]),
        (2, ["keygen", "a+b", "--key-file", str(tmp_path / "k2")]),
        (2, ["keygen", "", "--key-file", str(tmp_path / "k3")]),
        (1, ["keygen", "witness.test/again", "--key-file", str(key)]),  # never overwritten
        (2, ["vkey", "--key-file", str(plain)]),
        (2, ["vkey", "--key-file", str(garbage)]),
        (2, ["serve", "--key-file", str(key)]),
        (2, ["serve", "--key-file", str(key), "--database", str(tmp_path / "s")]),
        (2, ["serve", "--config", config(f'[[log]]\nkey = "{log.vkey}"\n'), "--listen", "x"]),
        (2, ["serve", "--config", config('[[log]]\nkey = "not a key"\n')]),
        (2, ["serve", "--config", config(f'[[log]]\nkey = "{log.vkey}"\norigin = "a\\u0000b"\n')]),
        (2, ["serve", "--config", config(f'[[log]]\nkey = "{log.vkey}"\norigin = "\\ud800"\n')]),
        (
            2,
            [
                "serve",
                "--config",
                config(f'[[log]]\nkey = "{log.vkey}"\n[[log]]\nkey = "{log.vkey}"\n'),
            ],
        ),
        (2, ["serve", "--config", config('colour = "blue"\n')]),
        (2, ["serve", "--config", config("log = 3\n")]),
    ]
    for status, args in refusals:
        done = subprocess.run(
            [sys.executable, "-m", "api.cli", "witness", *args],
            capture_output=True, text=True, timeout=60, env=env_without_ledger(),
        )  # fmt: skip
        assert done.returncode == status, (args, done.stderr)
        assert done.stderr.startswith("ledger: ") and done.stderr.count("\n") == 1, done.stderr
    assert key.read_text().startswith("PRIVATE+KEY+witness.test/cli+")


def test_one_witness_follows_several_logs_each_on_its_own(tmp_path: Path) -> None:
    first, second = SpecLog(ORIGIN), SpecLog("ledger.test/another-regulator")
    first.append(b"a", b"b")
    second.append(b"x")
    with witnesses(tmp_path, [first.vkey, second.vkey]) as (w,):
        for log in (first, second):
            cosigned(w.add_checkpoint(0, [], log.checkpoint()), log.checkpoint(), w)
        second.append(b"y", b"z")
        cosigned(w.add_checkpoint(1, second.proof(1), second.checkpoint()), second.checkpoint(), w)
        assert w.add_checkpoint(0, [], first.checkpoint()).text == "2\n"
        assert w.add_checkpoint(0, [], second.checkpoint()).text == "3\n"
        # a checkpoint of one log signed with the other's key is not trusted
        borrowed = sign_note(Checkpoint(ORIGIN, 3, second.tree.root(3)).text, [second.signer])
        assert w.add_checkpoint(2, [], borrowed).status_code == 403
        about = httpx.get(w.url + "/").text
        assert f"log {ORIGIN}\n" in about and "log ledger.test/another-regulator\n" in about
