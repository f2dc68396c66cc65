"""A transparency-log witness (c2sp.org/tlog-witness): cosigns a log's checkpoint only when
it is consistent with the last one it cosigned for that log.

The witness's state is a SQLite file of its own, never the ledger's database:

- ``latest``: per log origin, the last checkpoint cosigned (size, root, and the note as
  cosigned: the log's verified signatures and the witness's);
- ``evidence``: append-only; each validly signed checkpoint the witness refused because it
  contradicts one it cosigned, stored with the cosigned checkpoint and the proof offered.

`Witness.add_checkpoint` is the protocol's ``add-checkpoint``, transport aside: it takes
the request body and returns the status, body and content type to answer. The check of
the old size and the update of ``latest`` happen in one write transaction, so two
concurrent submissions cannot roll a log back.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ledger.merkle import EMPTY_ROOT, HASH_SIZE
from ledger.tlog.checkpoint import Checkpoint, CheckpointError, consistent
from ledger.tlog.note import (
    CosignatureSigner,
    NoteError,
    Signature,
    Verifier,
    open_note,
    parse_note,
    sign_note,
)

__all__ = [
    "MAX_PROOF_LINES",
    "MAX_REQUEST_BYTES",
    "SIZE_CONTENT_TYPE",
    "Answer",
    "Evidence",
    "LogKeys",
    "Witness",
    "origin_hash",
    "parse_add_checkpoint",
]

log = logging.getLogger("ledger.witness")

MAX_PROOF_LINES = 63
MAX_REQUEST_BYTES = 256 * 1024
SIZE_CONTENT_TYPE = "text/x.tlog.size"
_OLD = re.compile(r"old (0|[1-9][0-9]{0,18})")

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS latest (
        origin TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        root BLOB NOT NULL,
        checkpoint TEXT NOT NULL,
        cosigned_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS evidence (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        origin TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        reason TEXT NOT NULL,
        held TEXT NOT NULL,
        offered TEXT NOT NULL,
        old_size INTEGER NOT NULL,
        proof TEXT NOT NULL)""",
    """CREATE TRIGGER IF NOT EXISTS evidence_is_kept BEFORE UPDATE ON evidence
        BEGIN SELECT RAISE(ABORT, 'evidence is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS evidence_is_not_deleted BEFORE DELETE ON evidence
        BEGIN SELECT RAISE(ABORT, 'evidence is append-only'); END""",
)


class BadRequest(ValueError):
    pass


@dataclass(frozen=True)
class Answer:
    status: int
    body: str
    content_type: str = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class LogKeys:
    """A log the witness follows: its origin and the verifier keys of its checkpoints."""

    origin: str
    verifiers: tuple[Verifier, ...]


@dataclass(frozen=True)
class Evidence:
    id: int
    origin: str
    recorded_at: str
    reason: str
    held: str
    offered: str
    old_size: int
    proof: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "origin": self.origin,
            "recorded_at": self.recorded_at,
            "reason": self.reason,
            "held_checkpoint": self.held,
            "offered_checkpoint": self.offered,
            "old_size": self.old_size,
            "proof": list(self.proof),
        }


def origin_hash(origin: str) -> str:
    """The monitoring path element of a log: lowercase hex SHA-256 of its origin."""
    return hashlib.sha256(origin.encode()).hexdigest()


def parse_add_checkpoint(body: bytes) -> tuple[int, list[bytes], str]:
    """Split an add-checkpoint body into (old size, consistency proof, signed checkpoint).

    Raises `BadRequest` for anything but an ``old N`` line, at most 63 base64 hash lines,
    an empty line, and a note."""
    if len(body) > MAX_REQUEST_BYTES:
        raise BadRequest("request too large")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the request is not UTF-8") from None
    first, newline, rest = text.partition("\n")
    match = _OLD.fullmatch(first)
    if not match or not newline:
        raise BadRequest("the first line must be 'old <size>'")
    proof: list[bytes] = []
    while True:
        line, newline, rest = rest.partition("\n")
        if not newline:
            raise BadRequest("the proof must end with an empty line")
        if not line:
            break
        if len(proof) == MAX_PROOF_LINES:
            raise BadRequest(f"more than {MAX_PROOF_LINES} consistency proof lines")
        proof.append(_hash_line(line))
    return int(match.group(1)), proof, rest


def _hash_line(line: str) -> bytes:
    try:
        raw = base64.b64decode(line.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise BadRequest("a proof line is not base64") from None
    if len(raw) != HASH_SIZE:
        raise BadRequest(f"a proof line is not a {HASH_SIZE}-byte hash")
    return raw


class Witness:
    """One witness: a cosigner key, the logs it follows, and its SQLite state."""

    def __init__(
        self, cosigner: CosignatureSigner, logs: Iterable[LogKeys], database: Path | str
    ) -> None:
        self.cosigner = cosigner
        self.logs = {entry.origin: entry for entry in logs}
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(database), isolation_level=None, check_same_thread=False, timeout=10.0
        )
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            for statement in SCHEMA:
                self._db.execute(statement)
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- the protocol ---------------------------------------------------------------------

    def add_checkpoint(self, body: bytes) -> Answer:
        try:
            old_size, proof, note = parse_add_checkpoint(body)
            text, _ = parse_note(note)
            checkpoint = Checkpoint.parse(text)
        except (BadRequest, NoteError, CheckpointError) as e:
            return Answer(400, f"{e}\n")
        keys = self.logs.get(checkpoint.origin)
        if keys is None:
            return Answer(404, "unknown log origin\n")
        try:
            opened = open_note(note, keys.verifiers)
        except NoteError:
            return Answer(403, "no valid signature from a key this witness trusts for the log\n")
        if old_size > checkpoint.size:
            return Answer(400, "the old size is larger than the checkpoint's\n")
        if checkpoint.size == 0 and checkpoint.root != EMPTY_ROOT:
            return Answer(422, "a checkpoint of size 0 must have the empty tree's root\n")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                answer = self._check_and_cosign(checkpoint, old_size, proof, note, opened.text,
                                                opened.signatures)  # fmt: skip
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return answer

    def _check_and_cosign(
        self,
        checkpoint: Checkpoint,
        old_size: int,
        proof: Sequence[bytes],
        note: str,
        text: str,
        log_signatures: Sequence[Signature],
    ) -> Answer:
        row = self._db.execute(
            "SELECT size, root, checkpoint FROM latest WHERE origin = ?", (checkpoint.origin,)
        ).fetchone()
        held_size = 0 if row is None else int(row[0])
        if old_size != held_size:
            return Answer(409, f"{held_size}\n", SIZE_CONTENT_TYPE)
        if old_size == 0 and proof:
            return Answer(422, "no consistency proof is needed from size 0\n")
        if row is not None:
            held = Checkpoint(checkpoint.origin, held_size, bytes(row[1]))
            if not consistent(held, checkpoint, proof):
                if held.size != checkpoint.size:
                    reason = "its consistency proof from the size cosigned does not verify"
                elif held.root != checkpoint.root:
                    reason = "its root differs from the one cosigned at the same size"
                else:
                    return Answer(422, "equal sizes need an empty consistency proof\n")
                self._keep_evidence(checkpoint.origin, str(row[2]), note, old_size, proof, reason)
                return Answer(422, f"refused: {reason}\n")
        signed = sign_note(text, [self.cosigner], keep=log_signatures)
        ours = signed.splitlines(keepends=True)[-1]
        self._db.execute(
            "INSERT INTO latest (origin, size, root, checkpoint, cosigned_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (origin) DO UPDATE SET size = excluded.size,"
            " root = excluded.root, checkpoint = excluded.checkpoint,"
            " cosigned_at = excluded.cosigned_at",
            (checkpoint.origin, checkpoint.size, checkpoint.root, signed, _now()),
        )
        return Answer(200, ours)

    def _keep_evidence(
        self,
        origin: str,
        held: str,
        offered: str,
        old_size: int,
        proof: Sequence[bytes],
        reason: str,
    ) -> None:
        lines = "".join(base64.b64encode(h).decode() + "\n" for h in proof)
        kept = self._db.execute(
            "SELECT id FROM evidence WHERE origin = ? AND held = ? AND offered = ?",
            (origin, held, offered),
        ).fetchone()  # a log retrying the same checkpoint adds no row
        if kept is None:
            kept = self._db.execute(
                "INSERT INTO evidence (origin, recorded_at, reason, held, offered, old_size,"
                " proof) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (origin, _now(), reason, held, offered, old_size, lines),
            ).fetchone()
        log.critical(
            "witness: REFUSED a validly signed checkpoint of %s: %s (size %d cosigned;"
            " evidence #%d kept: both checkpoints and the proof)",
            origin, reason, old_size, kept[0],
        )  # fmt: skip

    # -- reads ----------------------------------------------------------------------------

    def latest(self, origin: str) -> str | None:
        """The last checkpoint cosigned for ``origin``, with every signature held."""
        with self._lock:
            row = self._db.execute(
                "SELECT checkpoint FROM latest WHERE origin = ?", (origin,)
            ).fetchone()
        return None if row is None else str(row[0])

    def latest_by_hash(self, hashed: str) -> str | None:
        for origin in self.logs:
            if origin_hash(origin) == hashed:
                return self.latest(origin)
        return None

    def evidence(self) -> list[Evidence]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, origin, recorded_at, reason, held, offered, old_size, proof"
                " FROM evidence ORDER BY id"
            ).fetchall()
        return [
            Evidence(r[0], r[1], r[2], r[3], r[4], r[5], r[6], tuple(r[7].splitlines()))
            for r in rows
        ]


def _now() -> str:
    return datetime.now(UTC).isoformat()
