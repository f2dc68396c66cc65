"""GraphQL's tlogProof: a c2sp.org/tlog-proof@v1 text that a verifier written from the
specification checks with the log's verifier key alone."""

from __future__ import annotations

import base64
import hashlib
import time
import uuid

from ledger.database import data_dir
from ledger.signing import Signer
from ledger.tlog.checkpoint import open_checkpoint
from ledger.tlog.note import verifier_from_key
from tests.api_server import ApiServer
from tests.test_integrity import write_some
from tests.test_tlog_client import verify_inclusion

QUERY = "query ($p: Position!, $s: Position) { tlogProof(position: $p, treeSize: $s) { text } }"


def check(text: str, vkey: str) -> tuple[int, bytes]:
    """The index and entry a tlog-proof text proves; AssertionError when it does not."""
    head, _, signed = text.partition("\n\n")
    lines = head.split("\n")
    assert lines[0] == "c2sp.org/tlog-proof@v1"
    assert lines[1].startswith("extra ") and lines[2].startswith("index ")
    entry = base64.b64decode(lines[1].removeprefix("extra "))
    index = int(lines[2].removeprefix("index "))
    proof = [base64.b64decode(line) for line in lines[3:]]
    checkpoint, _ = open_checkpoint(signed, [verifier_from_key(vkey)])
    leaf = hashlib.sha256(b"\x00" + entry).digest()
    assert verify_inclusion(leaf, index, checkpoint.size, proof, checkpoint.root)
    return index, entry


def test_tlog_proofs_verify_from_the_specification(server: ApiServer) -> None:
    world = write_some(server.ledger, 10)
    auditor = server.token("auditor")
    server.settle()
    vkey = Signer.from_environment(data_dir()).checkpoint_signer().vkey
    position = next(e.position for e in server.ledger.read_log(types=["Account.SanctionImposed"]))
    text = wait_for_proof(server, auditor, position)
    _index, entry = check(text, vkey)
    assert entry.startswith(f"ledger-event-v1\n{position}\n".encode())
    # Altered anywhere, it fails.
    for old, new in (("index ", "index 1"), ("\n—", "\n— x")):
        bad = text.replace(old, new, 1)
        try:
            check(bad, vkey)
        except Exception:
            continue
        raise AssertionError(f"an altered proof verified: {old!r}")
    write_some(server.ledger, 1, world)
    refused = server.gql(QUERY, server.token("provider", uuid.uuid4()), p=position)
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    missing = server.gql(QUERY, auditor, p=position, s=1)
    assert missing["errors"][0]["extensions"]["code"] == "NOT_FOUND"


def wait_for_proof(server: ApiServer, token: str, position: int) -> str:
    deadline = time.monotonic() + 20
    while True:
        result = server.gql(QUERY, token, p=position)
        if "errors" not in result:
            return str(result["data"]["tlogProof"]["text"])
        assert time.monotonic() < deadline, result["errors"]
        time.sleep(0.2)
