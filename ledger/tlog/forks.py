"""Finding a split view: compare a checkpoint a witness cosigned with the tree an auditor
holds (an export, or the live log), for `ledger audit`.

A witness serves the last checkpoint it cosigned for a log at
``GET <monitoring prefix>/<hex SHA-256 of the origin>/checkpoint`` (c2sp.org/tlog-witness).
If that checkpoint carries the log's valid signature and the witness's valid cosignature,
and the auditor's tree of the same size has another root, the log signed two histories:
a fork. Its evidence is that checkpoint beside the auditor's root.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ledger.tlog.checkpoint import Checkpoint, CheckpointError, open_checkpoint
from ledger.tlog.note import NoteError, Signature, Verifier
from ledger.tlog.witness import origin_hash

__all__ = ["Finding", "compare_with_witness", "fetch_witness_checkpoint"]

MAX_NOTE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Finding:
    kind: str  # "fork", "behind" (the witness saw a larger tree), or "unverifiable"
    message: str
    witness_checkpoint: str


def fetch_witness_checkpoint(url: str, origin: str, timeout: float = 10.0) -> str | None:
    """The witness's last cosigned checkpoint of ``origin``, or None (404: never cosigned).
    Raises `OSError` when the witness cannot be reached."""
    target = f"{url.rstrip('/')}/{origin_hash(origin)}/checkpoint"
    if urllib.parse.urlsplit(target).scheme not in ("http", "https"):
        raise ValueError(f"{url!r}: not an http(s) URL")
    try:
        with urllib.request.urlopen(target, timeout=timeout) as response:
            return str(response.read(MAX_NOTE_BYTES).decode("utf-8", errors="replace"))
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise OSError(f"{target}: answered {e.code}") from None


def compare_with_witness(
    note: str,
    log_verifiers: Sequence[Verifier],
    witness_verifiers: Sequence[Verifier],
    size: int,
    root_at: Callable[[int], bytes],
) -> Finding | None:
    """Check a witness's cosigned checkpoint ``note`` against the auditor's tree of ``size``
    leaves (``root_at(n)``: its root at ``n <= size``). None when they agree."""
    try:
        checkpoint, _ = open_checkpoint(note, log_verifiers)
        _, cosigned = open_checkpoint(note, witness_verifiers)
    except (NoteError, CheckpointError) as e:
        return Finding("unverifiable", f"the witness's checkpoint does not verify: {e}", note)
    if checkpoint.size > size:
        return Finding(
            "behind",
            f"a witness cosigned size {checkpoint.size}; this tree holds {size}: the source"
            " is stale, or shows a view that dropped entries",
            note,
        )
    ours = root_at(checkpoint.size)
    if ours != checkpoint.root:
        return Finding("fork", _fork_message(checkpoint, ours, cosigned.signatures), note)
    return None


def _fork_message(checkpoint: Checkpoint, ours: bytes, signatures: Sequence[Signature]) -> str:
    names = ", ".join(s.name for s in signatures)
    return (
        f"FORK: the log signed size {checkpoint.size} with root {checkpoint.root.hex()},"
        f" cosigned by {names}, but this tree's root at that size is {ours.hex()}"
    )
