"""The personal-data vault: real identities are sealed before they enter an event.

A sealed identity is `v1:<key id>:<base64(nonce + AES-256-GCM ciphertext)>`, bound to its
account id as associated data, so a ciphertext copied to another account does not open.
The key comes from `LEDGER_CIPHER_KEY` (base64 of 32 bytes) or from `cipher.key` in the
data folder, generated there on first use. Identities never appear in clear in the event
table, in a log line or in an error message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from uuid import UUID

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ledger.errors import InvalidArgument

KEY_FILE = "cipher.key"


class Vault:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the cipher key must be 32 bytes")
        self._aead = AESGCM(key)
        self._mac_key = hashlib.sha256(b"ledger-request-mac" + key).digest()
        self.key_id = hashlib.sha256(key).hexdigest()[:8]

    @classmethod
    def from_environment(cls, data_dir: Path) -> Vault:
        configured = os.environ.get("LEDGER_CIPHER_KEY")
        if configured:
            try:
                return cls(base64.b64decode(configured, validate=True))
            except ValueError:
                raise ValueError("LEDGER_CIPHER_KEY must be the base64 of 32 bytes") from None
        path = data_dir / KEY_FILE
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(base64.b64encode(secrets.token_bytes(32)).decode())
        try:
            return cls(base64.b64decode(path.read_text().strip(), validate=True))
        except ValueError:
            raise ValueError(f"{path} must hold the base64 of 32 bytes") from None

    def seal(self, account_id: UUID, identity: dict[str, str]) -> str:
        nonce = secrets.token_bytes(12)
        plain = json.dumps(identity, sort_keys=True).encode()
        sealed = self._aead.encrypt(nonce, plain, account_id.bytes)
        return f"v1:{self.key_id}:{base64.b64encode(nonce + sealed).decode()}"

    def open(self, account_id: UUID, sealed: str) -> dict[str, str]:
        try:
            version, key_id, body = sealed.split(":", 2)
            raw = base64.b64decode(body)
            if version != "v1" or key_id != self.key_id:
                raise ValueError
            plain = self._aead.decrypt(raw[:12], raw[12:], account_id.bytes)
        except Exception:
            raise InvalidArgument("the sealed identity cannot be opened with this key") from None
        result: dict[str, str] = json.loads(plain)
        return result

    def mac(self, data: bytes) -> bytes:
        """A keyed hash: fingerprints requests without exposing guessable personal data."""
        return hmac.new(self._mac_key, data, hashlib.sha256).digest()
