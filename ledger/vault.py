"""The personal-data vault: envelope encryption, a key per person.

Each verified identity is sealed under a random data key of its own (AES-256-GCM, bound
to the account and the key id as associated data). The event holds only
`v2:<key id>:<base64(nonce + ciphertext)>`. The data key lives in the key table, outside
the event log, wrapped by a key-encryption key (KEK): `LEDGER_CIPHER_KEY` (base64 of 32
bytes) or `cipher.key` in the data folder, generated there on first use. Retired KEKs
(`LEDGER_CIPHER_KEYS_RETIRED`, comma-separated, or `retired-keys/*.key` in the data
folder) still unwrap keys until `ledger keys rotate-kek` has rewrapped them all.

Erasure destroys the data key: the ciphertext stays in the immutable log, and nobody,
holding the KEK or not, can open it again. Identities never appear in clear in a table,
a log line or an error message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID, uuid4

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ledger import errors

KEY_FILE = "cipher.key"
RETIRED_DIR = "retired-keys"
VERSION = "v2"


@dataclass(frozen=True)
class DataKey:
    """A row of the key table: one person's data key, wrapped by a KEK."""

    key_id: UUID
    account_id: UUID
    kek_id: str
    wrapped: bytes


def kek_id_of(kek: bytes) -> str:
    return hashlib.sha256(b"ledger-kek" + kek).hexdigest()[:16]


def _identity_aad(account_id: UUID, key_id: UUID) -> bytes:
    return b"identity" + account_id.bytes + key_id.bytes


def _key_aad(account_id: UUID, key_id: UUID) -> bytes:
    return b"data-key" + account_id.bytes + key_id.bytes


def _webhook_aad(endpoint_id: UUID, key_id: UUID) -> bytes:
    return b"webhook-key" + endpoint_id.bytes + key_id.bytes


def key_id_in(sealed: str) -> UUID:
    """The data key a sealed identity names."""
    version, key_id, _ = sealed.split(":", 2)
    if version != VERSION:
        raise errors.IdentityUnreadable(
            f"the identity is sealed in the format {version!r}, which this release no longer"
            " reads (one key for the whole ledger); verify the identity again"
        )
    return UUID(key_id)


class Vault:
    def __init__(self, key: bytes, retired: Sequence[bytes] = ()) -> None:
        for k in (key, *retired):
            if len(k) != 32:
                raise ValueError("a key-encryption key must be 32 bytes")
        self.kek_id = kek_id_of(key)
        self._keks = {kek_id_of(k): AESGCM(k) for k in (*retired, key)}
        self._mac_key = hashlib.sha256(b"ledger-request-mac" + key).digest()

    @classmethod
    def from_environment(cls, data_dir: Path) -> Vault:
        return cls(_current_kek(data_dir), _retired_keks(data_dir))

    # ----- identities ------------------------------------------------------------------

    def seal(self, account_id: UUID, identity: dict[str, str]) -> tuple[str, DataKey]:
        """The sealed identity for the event, and its new data key for the key table."""
        data_key, key_id = AESGCM.generate_key(256), uuid4()
        nonce = secrets.token_bytes(12)
        plain = json.dumps(identity, sort_keys=True).encode()
        sealed = AESGCM(data_key).encrypt(nonce, plain, _identity_aad(account_id, key_id))
        body = base64.b64encode(nonce + sealed).decode()
        return f"{VERSION}:{key_id}:{body}", self._wrap(account_id, key_id, data_key)

    def open(self, account_id: UUID, sealed: str, key: DataKey | None) -> dict[str, str]:
        """The identity in clear; IdentityErased when its data key is gone."""
        try:
            key_id = key_id_in(sealed)
        except ValueError:
            raise errors.IdentityUnreadable("the sealed identity is malformed") from None
        if key is None or key.key_id != key_id or key.account_id != account_id:
            raise errors.IdentityErased("the identity was erased: its key no longer exists")
        try:
            raw = base64.b64decode(sealed.split(":", 2)[2], validate=True)
            aead = AESGCM(self._unwrap(key))
            plain = aead.decrypt(raw[:12], raw[12:], _identity_aad(account_id, key_id))
        except (InvalidTag, ValueError):
            raise errors.IdentityUnreadable(
                "the sealed identity or its data key is corrupt", key_id=str(key_id)
            ) from None
        opened: dict[str, str] = json.loads(plain)
        return opened

    def open_with(self, account_id: UUID, sealed: str, keys: Sequence[DataKey]) -> dict[str, str]:
        """`open` with the key the sealed identity names, among the account's keys."""
        key_id = key_id_in(sealed)
        return self.open(account_id, sealed, next((k for k in keys if k.key_id == key_id), None))

    # ----- data keys -------------------------------------------------------------------

    def rewrap(self, key: DataKey) -> DataKey:
        """The same data key wrapped by the current KEK."""
        return self._wrap(key.account_id, key.key_id, self._unwrap(key))

    def _wrap(self, account_id: UUID, key_id: UUID, data_key: bytes) -> DataKey:
        nonce = secrets.token_bytes(12)
        wrapped = self._keks[self.kek_id].encrypt(nonce, data_key, _key_aad(account_id, key_id))
        return DataKey(key_id, account_id, self.kek_id, nonce + wrapped)

    def _unwrap(self, key: DataKey) -> bytes:
        kek = self._keks.get(key.kek_id)
        if kek is None:
            raise errors.IdentityUnreadable(
                f"the data key is wrapped by key-encryption key {key.kek_id}, which this"
                " process does not hold (LEDGER_CIPHER_KEYS_RETIRED or retired-keys/)",
                key_id=str(key.key_id),
            )
        try:
            return kek.decrypt(key.wrapped[:12], key.wrapped[12:], _key_aad(key.account_id,
                                                                           key.key_id))  # fmt: skip
        except InvalidTag:
            raise errors.IdentityUnreadable(
                "the data key does not open with its key-encryption key: a wrong KEK or a"
                " corrupt key row",
                key_id=str(key.key_id),
            ) from None

    # ----- webhook endpoints' keys ------------------------------------------------------

    def wrap_webhook_key(self, endpoint_id: UUID, key_id: UUID, material: bytes) -> DataKey:
        """An endpoint's signing secrets wrapped by the current KEK (`account_id` holds the
        endpoint's id: the row's owner)."""
        nonce = secrets.token_bytes(12)
        aad = _webhook_aad(endpoint_id, key_id)
        wrapped = self._keks[self.kek_id].encrypt(nonce, material, aad)
        return DataKey(key_id, endpoint_id, self.kek_id, nonce + wrapped)

    def rewrap_webhook_key(self, key: DataKey) -> DataKey:
        """The same webhook key wrapped by the current KEK."""
        return self.wrap_webhook_key(key.account_id, key.key_id, self.unwrap_webhook_key(key))

    def unwrap_webhook_key(self, key: DataKey) -> bytes:
        kek = self._keks.get(key.kek_id)
        if kek is None:
            raise errors.IdentityUnreadable(
                f"the webhook key is wrapped by key-encryption key {key.kek_id}, which this"
                " process does not hold",
                key_id=str(key.key_id),
            )
        aad = _webhook_aad(key.account_id, key.key_id)
        try:
            return kek.decrypt(key.wrapped[:12], key.wrapped[12:], aad)
        except InvalidTag:
            raise errors.IdentityUnreadable(
                "the webhook key does not open with its key-encryption key",
                key_id=str(key.key_id),
            ) from None

    def mac(self, data: bytes) -> bytes:
        """A keyed hash: fingerprints requests without exposing guessable personal data."""
        return hmac.new(self._mac_key, data, hashlib.sha256).digest()


def _decode(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ValueError(f"{where} must hold the base64 of 32 bytes")
    return key


def _current_kek(data_dir: Path) -> bytes:
    configured = os.environ.get("LEDGER_CIPHER_KEY")
    if configured:
        return _decode(configured, "LEDGER_CIPHER_KEY")
    path = data_dir / KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(base64.b64encode(secrets.token_bytes(32)).decode())
    return _decode(path.read_text(), str(path))


def _retired_keks(data_dir: Path) -> list[bytes]:
    configured = os.environ.get("LEDGER_CIPHER_KEYS_RETIRED", "")
    keys = [_decode(k, "LEDGER_CIPHER_KEYS_RETIRED") for k in configured.split(",") if k.strip()]
    folder = data_dir / RETIRED_DIR
    if folder.is_dir():
        keys += [_decode(p.read_text(), str(p)) for p in sorted(folder.glob("*.key"))]
    return keys
