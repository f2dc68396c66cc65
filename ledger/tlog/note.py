"""C2SP signed notes (c2sp.org/signed-note) and Ed25519 cosignatures (c2sp.org/tlog-cosignature).

A note is UTF-8 text ending in a newline, a blank line, then signature lines::

    — <key name> base64(uint32 key id || signature)

Keys are identified by (name, key id), where key id = SHA-256(name || "\\n" || type || public
key)[:4]. Verifier keys are written ``name+hex8(key id)+base64(type || public key)``; signer
keys, as in Go's golang.org/x/mod/sumdb/note, ``PRIVATE+KEY+name+hex8+base64(type || seed)``.

Two signature types are supported:
- ``0x01`` Ed25519 over the note text (the log's checkpoint signature);
- ``0x04`` ``cosignature/v1``: Ed25519 over ``"cosignature/v1\\ntime <T>\\n" || text``, the
  signature being ``uint64 T || ed25519 signature`` (a witness's cosignature).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "ALG_COSIGNATURE_V1",
    "ALG_ED25519",
    "MAX_SIGNATURES",
    "CosignatureSigner",
    "CosignatureVerifier",
    "Ed25519Signer",
    "Ed25519Verifier",
    "InvalidNoteSignature",
    "MalformedNote",
    "Note",
    "NoteError",
    "Signature",
    "Signer",
    "UnverifiedNote",
    "Verifier",
    "cosignature_timestamp",
    "generate_signer_key",
    "is_valid_name",
    "key_id",
    "open_note",
    "parse_note",
    "sign_note",
    "signer_from_key",
    "verifier_from_key",
]

ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
MAX_SIGNATURES = 100
"""Go's limit; the specification asks verifiers to accept at least 16."""

_SIG_PREFIX = "— "
_PRIVATE_PREFIX = "PRIVATE+KEY+"
_COSIGNATURE_HEADER = "cosignature/v1\n"
_MAX_TIMESTAMP = 2**63 - 1


class NoteError(ValueError):
    """A note, key or signature that cannot be used."""


class MalformedNote(NoteError):
    def __init__(self, why: str = "malformed note") -> None:
        super().__init__(why)


class InvalidNoteSignature(NoteError):
    """A signature from a known key (name and id match) failed to verify."""

    def __init__(self, name: str, key_id: int) -> None:
        super().__init__(f"invalid signature for key {name}+{key_id:08x}")
        self.name = name
        self.key_id = key_id


class UnverifiedNote(NoteError):
    """No signature from a known key: the note's text must be ignored."""

    def __init__(self, note: Note) -> None:
        super().__init__("note has no verifiable signatures")
        self.note = note


@dataclass(frozen=True)
class Signature:
    name: str
    key_id: int
    base64: str

    @property
    def raw(self) -> bytes:
        """The signature bytes after the 4-byte key id."""
        return base64.b64decode(self.base64)[4:]

    def line(self) -> str:
        return f"{_SIG_PREFIX}{self.name} {self.base64}\n"


@dataclass(frozen=True)
class Note:
    text: str
    signatures: tuple[Signature, ...] = ()
    """Signatures verified by a known key, in note order."""
    unverified: tuple[Signature, ...] = field(default=())
    """Signatures from unknown keys, kept (deduplicated) but not trusted."""


class Verifier(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def verify(self, text: bytes, signature: bytes) -> bool: ...


class Signer(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def sign(self, text: bytes) -> bytes: ...


def is_valid_name(name: str) -> bool:
    """Non-empty, no Unicode space, no plus; and no control character (a note has none)."""
    return (
        bool(name)
        and "+" not in name
        and not any(c.isspace() or c < " " for c in name)
        and _encodable(name)
    )


def _encodable(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def key_id(name: str, alg: int, public_key: bytes) -> int:
    """SHA-256(name || 0x0A || alg || public key)[:4], big-endian."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise NoteError("not base64") from None


# -- verifiers ---------------------------------------------------------------------------------


class Ed25519Verifier:
    """Checks ``0x01`` Ed25519 signatures over the note text."""

    alg = ALG_ED25519

    def __init__(self, name: str, public_key: bytes) -> None:
        if not is_valid_name(name):
            raise NoteError(f"invalid key name {name!r}")
        if len(public_key) != 32:
            raise NoteError("an Ed25519 public key is 32 bytes")
        self._name = name
        self.public_key = public_key
        self._key = Ed25519PublicKey.from_public_bytes(public_key)
        self._key_id = key_id(name, self.alg, public_key)

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> int:
        return self._key_id

    @property
    def vkey(self) -> str:
        material = base64.b64encode(bytes([self.alg]) + self.public_key).decode()
        return f"{self._name}+{self._key_id:08x}+{material}"

    def _check(self, message: bytes, signature: bytes) -> bool:
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def verify(self, text: bytes, signature: bytes) -> bool:
        return len(signature) == 64 and self._check(text, signature)


class CosignatureVerifier(Ed25519Verifier):
    """Checks ``0x04`` cosignature/v1 signatures: ``uint64 timestamp || Ed25519 signature``."""

    alg = ALG_COSIGNATURE_V1

    def verify(self, text: bytes, signature: bytes) -> bool:
        if len(signature) != 72:
            return False
        (timestamp,) = struct.unpack(">Q", signature[:8])
        if timestamp > _MAX_TIMESTAMP:
            return False
        return self._check(_cosigned_message(timestamp, text), signature[8:])


def _cosigned_message(timestamp: int, text: bytes) -> bytes:
    return f"{_COSIGNATURE_HEADER}time {timestamp}\n".encode() + text


def cosignature_timestamp(signature: Signature) -> int:
    """The POSIX time a cosignature/v1 signature states (raises `NoteError` if it is none)."""
    raw = _b64decode(signature.base64)
    if len(raw) != 4 + 72:
        raise NoteError("not a cosignature/v1 signature")
    (timestamp,) = struct.unpack(">Q", raw[4:12])
    if timestamp > _MAX_TIMESTAMP:
        raise NoteError("cosignature timestamp out of range")
    return int(timestamp)


def _key_parts(text: str, what: str, form: str) -> tuple[str, int, bytes]:
    """The name, key id and `type || key` bytes of a `name+hex8+base64` key text."""
    parts = text.split("+", 2)
    if len(parts) != 3:
        raise NoteError(f"a {what} key is {form}")
    name, id_hex, material_b64 = parts
    if len(id_hex) != 8 or any(c not in "0123456789abcdefABCDEF" for c in id_hex):
        raise NoteError(f"a {what} key's id is 8 hex digits")
    material = _b64decode(material_b64)
    if not is_valid_name(name) or len(material) != 33:
        raise NoteError(f"malformed {what} key")
    return name, int(id_hex, 16), material


def verifier_from_key(vkey: str) -> Ed25519Verifier:
    """Parse ``name+hex8+base64(type || key)`` for type 0x01 (Ed25519) or 0x04 (cosignature/v1)."""
    name, key_id, material = _key_parts(vkey, "verifier", "name+hex8+base64")
    kind: type[Ed25519Verifier]
    if material[0] == ALG_ED25519:
        kind = Ed25519Verifier
    elif material[0] == ALG_COSIGNATURE_V1:
        kind = CosignatureVerifier
    else:
        raise NoteError(f"unknown verifier key type 0x{material[0]:02x}")
    verifier = kind(name, material[1:])
    if verifier.key_id != key_id:
        raise NoteError("verifier key id does not match its key")
    return verifier


# -- signers -----------------------------------------------------------------------------------


class Ed25519Signer:
    """Signs the note text with Ed25519 (type 0x01)."""

    alg = ALG_ED25519
    verifier_class: type[Ed25519Verifier] = Ed25519Verifier

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self.private_key = private_key
        self.verifier = self.verifier_class(name, _raw_public(private_key.public_key()))

    @property
    def name(self) -> str:
        return self.verifier.name

    @property
    def key_id(self) -> int:
        return self.verifier.key_id

    @property
    def vkey(self) -> str:
        return self.verifier.vkey

    @property
    def skey(self) -> str:
        seed = self.private_key.private_bytes_raw()
        material = base64.b64encode(bytes([self.alg]) + seed).decode()
        return f"{_PRIVATE_PREFIX}{self.name}+{self.key_id:08x}+{material}"

    def sign(self, text: bytes) -> bytes:
        return self.private_key.sign(text)


class CosignatureSigner(Ed25519Signer):
    """A witness's cosigner: cosignature/v1 (type 0x04) with a timestamp from ``clock``."""

    alg = ALG_COSIGNATURE_V1
    verifier_class = CosignatureVerifier

    def __init__(
        self,
        name: str,
        private_key: Ed25519PrivateKey,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name, private_key)
        self.clock = clock

    def sign(self, text: bytes) -> bytes:
        timestamp = int(self.clock())
        if not 0 < timestamp <= _MAX_TIMESTAMP:
            raise NoteError("the clock gives no usable cosignature timestamp")
        signature = self.private_key.sign(_cosigned_message(timestamp, text))
        return struct.pack(">Q", timestamp) + signature


def signer_from_key(skey: str) -> Ed25519Signer:
    """Parse ``PRIVATE+KEY+name+hex8+base64(type || 32-byte seed)`` (type 0x01 or 0x04)."""
    if not skey.startswith(_PRIVATE_PREFIX):
        raise NoteError("a signer key starts with PRIVATE+KEY+")
    text = skey[len(_PRIVATE_PREFIX) :]
    name, key_id, material = _key_parts(text, "signer", "PRIVATE+KEY+name+hex8+base64")
    private = Ed25519PrivateKey.from_private_bytes(material[1:])
    kind: type[Ed25519Signer]
    if material[0] == ALG_ED25519:
        kind = Ed25519Signer
    elif material[0] == ALG_COSIGNATURE_V1:
        kind = CosignatureSigner
    else:
        raise NoteError(f"unknown signer key type 0x{material[0]:02x}")
    signer = kind(name, private)
    if signer.key_id != key_id:
        raise NoteError("signer key id does not match its key")
    return signer


def generate_signer_key(name: str, alg: int = ALG_ED25519) -> Ed25519Signer:
    kind = CosignatureSigner if alg == ALG_COSIGNATURE_V1 else Ed25519Signer
    if alg not in (ALG_ED25519, ALG_COSIGNATURE_V1):
        raise NoteError(f"unknown signature type 0x{alg:02x}")
    return kind(name, Ed25519PrivateKey.generate())


# -- notes -------------------------------------------------------------------------------------


def _check_text(text: str) -> None:
    if not text.endswith("\n") or not _encodable(text):
        raise MalformedNote()
    if any(c < " " and c != "\n" for c in text):
        raise MalformedNote()


def sign_note(text: str, signers: Iterable[Signer], keep: Sequence[Signature] = ()) -> str:
    """The signed note: ``text``, a blank line, the signatures in ``keep`` (except those the
    signers replace: same name and key id), then one signature line per signer."""
    _check_text(text)
    fresh: list[Signature] = []
    for signer in signers:
        if not is_valid_name(signer.name):
            raise NoteError("invalid signer name")
        raw = struct.pack(">I", signer.key_id) + signer.sign(text.encode())
        fresh.append(Signature(signer.name, signer.key_id, base64.b64encode(raw).decode()))
    replaced = {(s.name, s.key_id) for s in fresh}
    lines = [s.line() for s in keep if (s.name, s.key_id) not in replaced]
    lines += [s.line() for s in fresh]
    if not lines:
        raise MalformedNote("a note needs at least one signature")
    return text + "\n" + "".join(lines)


def _parse_signature_line(line: str) -> Signature:
    if not line.startswith(_SIG_PREFIX):
        raise MalformedNote()
    name, _, b64 = line[len(_SIG_PREFIX) :].partition(" ")
    try:
        raw = _b64decode(b64)
    except NoteError:
        raise MalformedNote() from None
    if not is_valid_name(name) or len(raw) < 5:
        raise MalformedNote()
    return Signature(name, int.from_bytes(raw[:4], "big"), b64)


def parse_note(message: bytes | str) -> tuple[str, list[Signature]]:
    """Split a signed note into its text and its signature lines, verifying nothing.

    Raises `MalformedNote` unless the message is UTF-8 without control characters other
    than newline, and ends with a blank line and 1 to `MAX_SIGNATURES` signature lines.
    """
    if isinstance(message, bytes):
        try:
            message = message.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedNote() from None
    if not _encodable(message) or any(c < " " and c != "\n" for c in message):
        raise MalformedNote()
    split = message.rfind("\n\n")
    if split < 0:
        raise MalformedNote()
    text, block = message[: split + 1], message[split + 2 :]
    if not block.endswith("\n"):
        raise MalformedNote()
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNote()
    return text, [_parse_signature_line(line) for line in lines]


def open_note(message: bytes | str, verifiers: Iterable[Verifier]) -> Note:
    """Parse and verify a signed note against the known ``verifiers``.

    Signatures from unknown keys (name or key id differ) are kept aside, unverified. A
    signature from a known key that fails raises `InvalidNoteSignature`; a note with no
    signature from a known key raises `UnverifiedNote` (carrying the parsed note).
    """
    text, signatures = parse_note(message)
    known: dict[tuple[str, int], list[Verifier]] = {}
    for v in verifiers:
        known.setdefault((v.name, v.key_id), []).append(v)
    verified: list[Signature] = []
    unverified: list[Signature] = []
    for sig in signatures:
        matches = known.get((sig.name, sig.key_id))
        if not matches:
            if sig not in unverified:
                unverified.append(sig)
            continue
        if len(matches) > 1:
            raise NoteError(f"ambiguous key {sig.name}+{sig.key_id:08x}")
        if any((s.name, s.key_id) == (sig.name, sig.key_id) for s in verified):
            continue
        if not matches[0].verify(text.encode(), sig.raw):
            raise InvalidNoteSignature(sig.name, sig.key_id)
        verified.append(sig)
    note = Note(text, tuple(verified), tuple(unverified))
    if not verified:
        raise UnverifiedNote(note)
    return note
