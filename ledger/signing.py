"""The tree-head signing key: Ed25519, kept outside the database.

`LEDGER_SIGNING_KEY` names the key file; absent, `<data dir>/signing.key` is generated
(mode 0600). The file holds the 32-byte private key in hex. `ledger keys` prints the
public key auditors check signatures with.

The same key signs the log's C2SP checkpoints, as the signed-note key named after the
log's origin (`LEDGER_LOG_ORIGIN`, default `localhost:8000/log`, what `make run` serves):
its verifier key is ``origin+hex8+base64``. The two signed forms cannot be confused: a
tree head's message starts with ``ledger-tree-head-v1`` and does not end in a newline; a
note text does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger.proofcheck import head_message
from ledger.tlog.note import Ed25519Signer, is_valid_name

KEY_FILE = "signing.key"
DEFAULT_ORIGIN = "localhost:8000/log"


def log_origin() -> str:
    """The log's checkpoint origin: `LEDGER_LOG_ORIGIN`, a scheme-less URL such as
    ``ledger.example.org/cac-2014``; `SigningKeyError` when it cannot name a note key."""
    origin = os.environ.get("LEDGER_LOG_ORIGIN") or DEFAULT_ORIGIN
    if not is_valid_name(origin) or origin != origin.strip("/") or "://" in origin:
        raise SigningKeyError(
            f"LEDGER_LOG_ORIGIN: {origin!r} is not a scheme-less origin such as"
            " ledger.example.org/log (no spaces, no '+', no trailing slash)"
        )
    return origin


class SigningKeyError(ValueError):
    pass


@dataclass(frozen=True)
class SignedHead:
    tree_size: int
    root_hash: str  # hex
    timestamp: str  # ISO-8601
    signature: str  # hex

    def as_dict(self) -> dict[str, object]:
        return {
            "tree_size": self.tree_size,
            "root_hash": self.root_hash,
            "timestamp": self.timestamp,
            "signature": self.signature,
        }


class Signer:
    def __init__(self, key: Ed25519PrivateKey) -> None:
        self.key = key

    @classmethod
    def from_environment(cls, data_dir: Path) -> Signer:
        configured = os.environ.get("LEDGER_SIGNING_KEY")
        path = Path(configured) if configured else data_dir / KEY_FILE
        if not path.exists():
            if configured:
                raise SigningKeyError(f"LEDGER_SIGNING_KEY: no such file: {path}")
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(Ed25519PrivateKey.generate().private_bytes_raw().hex() + "\n")
        try:
            raw = bytes.fromhex(path.read_text().strip())
            return cls(Ed25519PrivateKey.from_private_bytes(raw))
        except ValueError:
            raise SigningKeyError(
                f"{path}: not an Ed25519 private key (64 hexadecimal digits)"
            ) from None

    @property
    def public_key_hex(self) -> str:
        return self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()

    def checkpoint_signer(self, origin: str | None = None) -> Ed25519Signer:
        """The signed-note signer of the log's checkpoints: this key, named the origin."""
        return Ed25519Signer(origin or log_origin(), self.key)

    def sign(self, tree_size: int, root: bytes, at: datetime) -> SignedHead:
        timestamp = at.isoformat()
        signature = self.key.sign(head_message(tree_size, root.hex(), timestamp))
        return SignedHead(tree_size, root.hex(), timestamp, signature.hex())
