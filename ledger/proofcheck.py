"""Stand-alone verifier for the compliance ledger's Merkle proofs and signed tree heads.

This file is meant to be copied: it depends only on the Python standard library and the
``cryptography`` package (for Ed25519), and imports nothing else from the ledger. It needs
Python 3.11 or later (for `datetime.fromisoformat` to read every ISO-8601 timestamp).

    python proofcheck.py PROOF.json --public-key HEX

checks the signed tree head(s) in PROOF.json against the ledger's Ed25519 public key (32 raw
bytes, hex), checks that the proof refers to those heads, verifies the proof, prints one
line ``OK: ...`` or ``FAILED: <reason>`` and exits 0 or 1.

Leaf encoding (the contract)
----------------------------
The leaf data of an event is the UTF-8 bytes of:
``"ledger-event-v1\\n" + str(position) + "\\n" + originator_id (lowercase canonical UUID) +
"\\n" + str(originator_version) + "\\n" + topic + "\\n"`` followed by the stored state bytes
exactly as recorded; the leaf hash is SHA-256(0x00 || leaf data).

`event_leaf_data` builds it.

Merkle tree
-----------
RFC 6962 §2.1 / RFC 9162 §2.1 with SHA-256: node hash = SHA-256(0x01 || left || right), the
root of the empty tree is SHA-256(""). Inclusion and consistency proofs are verified with the
algorithms of RFC 9162 §2.1.3.2 and §2.1.4.2.

Signed tree heads
-----------------
A signed head is the JSON object::

    {"tree_size": int, "root_hash": hex, "timestamp": ISO-8601 str, "signature": hex}

``root_hash`` is 64 lowercase hex digits; ``timestamp`` is one line that
`datetime.fromisoformat` accepts. ``signature`` is the 64-byte Ed25519 signature,
in hex, over the canonical message that `head_message` returns::

    b"ledger-tree-head-v1\\n" + f"{tree_size}\\n{root_hash}\\n{timestamp}".encode()

(UTF-8; ``tree_size`` in decimal; no trailing newline). Signer and checker both build the
message with `head_message`.

PROOF.json is one of::

    {"kind": "inclusion", "leaf_hash": hex, "index": int, "tree_size": int,
     "proof": [hex, ...], "head": {signed head}}
    {"kind": "consistency", "old_head": {signed head}, "new_head": {signed head},
     "proof": [hex, ...]}
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "EMPTY_ROOT",
    "HEAD_PREFIX",
    "LEAF_PREFIX",
    "event_leaf_data",
    "head_message",
    "leaf_hash",
    "main",
    "node_hash",
    "verify_consistency",
    "verify_inclusion",
    "verify_signed_head",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
LEAF_PREFIX = b"ledger-event-v1\n"
HEAD_PREFIX = b"ledger-tree-head-v1\n"


# -- leaves and hashing ------------------------------------------------------------------------


def event_leaf_data(
    position: int, originator_id: str, originator_version: int, topic: str, state: bytes
) -> bytes:
    """The leaf data of a ledger event (see the module docstring for the contract).

    ``originator_id`` may be given in any form `uuid.UUID` accepts; it is encoded as the
    lowercase canonical UUID. A topic containing a newline is refused: it would make the
    encoding ambiguous.
    """
    for name, number in (("position", position), ("originator_version", originator_version)):
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise ValueError(f"{name} must be a non-negative int, not {number!r}")
    if "\n" in topic:
        raise ValueError(f"topic contains a newline: {topic!r}")
    canonical_id = str(uuid.UUID(originator_id))
    header = f"{position}\n{canonical_id}\n{originator_version}\n{topic}\n"
    return LEAF_PREFIX + header.encode("utf-8") + bytes(state)


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


# -- proofs (RFC 9162 §2.1.3.2 and §2.1.4.2) ---------------------------------------------------


def _hashes_ok(hashes: Sequence[bytes]) -> bool:
    return all(isinstance(h, bytes) and len(h) == HASH_SIZE for h in hashes)


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether ``proof`` is a valid audit path for the leaf hash ``leaf_hash`` at ``index``
    in the tree of ``size`` leaves with root ``root``."""
    if not _hashes_ok([leaf_hash, root, *proof]) or not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether ``proof`` shows the tree (old_size, old_root) is a prefix of the tree
    (new_size, new_root). Equal sizes need an empty proof and equal roots; old size 0 needs
    an empty proof and the empty tree's root."""
    if not _hashes_ok([old_root, new_root, *proof]) or not 0 <= old_size <= new_size:
        return False
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr == old_root and sr == new_root and sn == 0


# -- signed tree heads -------------------------------------------------------------------------


def head_message(tree_size: int, root_hash_hex: str, timestamp: str) -> bytes:
    """The canonical bytes a tree head's Ed25519 signature covers.

    Raises `ValueError` for a head that has no canonical form: a negative or non-int size,
    a root that is not 64 lowercase hex digits, a timestamp that is not ISO-8601 or that
    contains a newline.
    """
    if isinstance(tree_size, bool) or not isinstance(tree_size, int) or tree_size < 0:
        raise ValueError(f"tree_size must be a non-negative int, not {tree_size!r}")
    if (
        not isinstance(root_hash_hex, str)
        or len(root_hash_hex) != 2 * HASH_SIZE
        or any(c not in "0123456789abcdef" for c in root_hash_hex)
    ):
        raise ValueError(f"root_hash must be {2 * HASH_SIZE} lowercase hex digits")
    if not isinstance(timestamp, str) or "\n" in timestamp:
        raise ValueError("timestamp must be a one-line string")
    datetime.fromisoformat(timestamp)  # raises ValueError unless ISO-8601
    return HEAD_PREFIX + f"{tree_size}\n{root_hash_hex}\n{timestamp}".encode()


def _public_key(public_key_hex: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex))
    except ValueError as e:
        raise ValueError(f"not an Ed25519 public key (32 bytes, hex): {e}") from None


def verify_signed_head(head: Mapping[str, Any], public_key_hex: str) -> bool:
    """Whether ``head`` is a well-formed tree head signed by the Ed25519 key
    ``public_key_hex`` (32 raw bytes in hex; a malformed key raises `ValueError`)."""
    key = _public_key(public_key_hex)
    try:
        message = head_message(head["tree_size"], head["root_hash"], head["timestamp"])
        signature = head["signature"]
        if not isinstance(signature, str):
            return False
        key.verify(bytes.fromhex(signature), message)
    except (KeyError, TypeError, ValueError, InvalidSignature):
        return False
    return True


# -- command line ------------------------------------------------------------------------------


class _Failed(Exception):
    """A check failed; the message is the reason printed after ``FAILED:``."""


def _field(obj: Any, key: str, what: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise _Failed(f"{what} has no {key!r}")
    return obj[key]


def _int(obj: Any, key: str, what: str) -> int:
    value = _field(obj, key, what)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Failed(f"{what}.{key} is not a non-negative integer")
    return value


def _hash(value: Any, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != HASH_SIZE:
        raise _Failed(f"{what} is not a {HASH_SIZE}-byte hex hash")
    return raw


def _proof(obj: Any) -> list[bytes]:
    hashes = _field(obj, "proof", "proof file")
    if not isinstance(hashes, list):
        raise _Failed("proof is not a list")
    return [_hash(h, f"proof[{i}]") for i, h in enumerate(hashes)]


def _signed_head(obj: Any, key: str, public_key_hex: str) -> tuple[int, bytes, str]:
    head = _field(obj, key, "proof file")
    if not isinstance(head, dict):
        raise _Failed(f"{key} is not an object")
    if not verify_signed_head(head, public_key_hex):
        raise _Failed(f"{key}: bad signature or malformed signed tree head")
    return int(head["tree_size"]), bytes.fromhex(head["root_hash"]), str(head["timestamp"])


def _check(doc: Any, public_key_hex: str) -> str:
    kind = _field(doc, "kind", "proof file")
    if kind == "inclusion":
        size, root, when = _signed_head(doc, "head", public_key_hex)
        leaf = _hash(_field(doc, "leaf_hash", "proof file"), "leaf_hash")
        index = _int(doc, "index", "proof file")
        if _int(doc, "tree_size", "proof file") != size:
            raise _Failed(f"proof is for tree size {doc['tree_size']}, the head has {size}")
        if not verify_inclusion(leaf, index, size, _proof(doc), root):
            raise _Failed(f"inclusion proof for leaf {index} does not verify")
        return (
            f"OK: leaf {index} ({leaf.hex()}) is in the signed tree of size {size} "
            f"(root {root.hex()}, {when})"
        )
    if kind == "consistency":
        old_size, old_root, old_when = _signed_head(doc, "old_head", public_key_hex)
        new_size, new_root, new_when = _signed_head(doc, "new_head", public_key_hex)
        if old_size > new_size:
            raise _Failed(f"old head size {old_size} is larger than new head size {new_size}")
        if not verify_consistency(old_size, new_size, old_root, new_root, _proof(doc)):
            raise _Failed(f"consistency proof from size {old_size} to {new_size} does not verify")
        return (
            f"OK: signed tree of size {old_size} ({old_when}) is a prefix of "
            f"signed tree of size {new_size} ({new_when})"
        )
    raise _Failed(f"unknown proof kind {kind!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """``proofcheck.py PROOF.json --public-key HEX``: 0 when every check passes, else 1."""
    parser = argparse.ArgumentParser(
        prog="proofcheck.py", description="Verify a ledger Merkle proof against signed heads."
    )
    parser.add_argument("proof_file", metavar="PROOF.json")
    parser.add_argument("--public-key", required=True, metavar="HEX")
    args = parser.parse_args(argv)
    try:
        _public_key(args.public_key)
        with open(args.proof_file, encoding="utf-8") as f:
            doc = json.load(f)
        print(_check(doc, args.public_key))
    except (_Failed, ValueError, OSError) as e:
        reason = " ".join(str(e).split())  # keep it to one line
        print(f"FAILED: {reason}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
