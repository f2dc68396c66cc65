"""C2SP checkpoints (c2sp.org/tlog-checkpoint): the note text naming a tree head.

    <origin>\\n<size>\\n<base64 root>\\n[<extension line>\\n ...]

Parsing is strict: a non-empty origin, a decimal size without leading zeroes, the canonical
base64 of a 32-byte root, and only non-empty extension lines. Consistency between two
checkpoints is checked with the RFC 9162 verifier of `ledger.merkle`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ledger.merkle import HASH_SIZE, verify_consistency
from ledger.tlog.note import Note, Signer, Verifier, open_note, sign_note

__all__ = [
    "MAX_SIZE",
    "Checkpoint",
    "CheckpointError",
    "consistent",
    "open_checkpoint",
    "sign_checkpoint",
]

MAX_SIZE = 2**63 - 1
_SIZE = re.compile(r"0|[1-9][0-9]{0,18}")


class CheckpointError(ValueError):
    """A note text that is not a well-formed checkpoint."""


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise CheckpointError("the origin must be one non-empty line")
        if not 0 <= self.size <= MAX_SIZE:
            raise CheckpointError("the size must be between 0 and 2**63 - 1")
        if len(self.root) != HASH_SIZE:
            raise CheckpointError(f"the root hash must be {HASH_SIZE} bytes")
        if any(not line or "\n" in line for line in self.extensions):
            raise CheckpointError("an extension line must be one non-empty line")

    @property
    def text(self) -> str:
        """The note text (newline-terminated lines)."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode()]
        return "".join(line + "\n" for line in [*lines, *self.extensions])

    @property
    def is_empty_tree(self) -> bool:
        return self.size == 0

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a checkpoint's note text (not the signatures): raises `CheckpointError`."""
        if not text.endswith("\n"):
            raise CheckpointError("a checkpoint ends with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3 or any(not line for line in lines):
            raise CheckpointError("a checkpoint is at least three non-empty lines")
        origin, size, root, *extensions = lines
        if not _SIZE.fullmatch(size) or int(size) > MAX_SIZE:
            raise CheckpointError("the size line is not a decimal without leading zeroes")
        try:
            raw = base64.b64decode(root.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise CheckpointError("the root line is not base64") from None
        if len(raw) != HASH_SIZE or base64.b64encode(raw).decode() != root:
            raise CheckpointError("the root line is not the base64 of a 32-byte hash")
        return cls(origin, int(size), raw, tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signers: Iterable[Signer]) -> str:
    """The signed note of ``checkpoint``."""
    return sign_note(checkpoint.text, signers)


def open_checkpoint(message: bytes | str, verifiers: Iterable[Verifier]) -> tuple[Checkpoint, Note]:
    """Verify a signed checkpoint against ``verifiers`` and parse its text.

    Raises the `ledger.tlog.note` errors for the signatures, `CheckpointError` for the text.
    """
    note = open_note(message, verifiers)
    return Checkpoint.parse(note.text), note


def consistent(old: Checkpoint, new: Checkpoint, proof: Sequence[bytes]) -> bool:
    """Whether ``proof`` (RFC 9162 §2.1.4) shows ``old``'s tree is a prefix of ``new``'s.

    Both must name the same origin. An old size of 0 needs an empty proof; equal sizes
    need an empty proof and equal roots.
    """
    if old.origin != new.origin:
        return False
    return verify_consistency(old.size, new.size, old.root, new.root, proof)
