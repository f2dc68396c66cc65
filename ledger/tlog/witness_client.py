"""The log's side of c2sp.org/tlog-witness: which witnesses to ask (`LEDGER_WITNESSES`), and
one add-checkpoint exchange with one of them, 409 resync included.

`LEDGER_WITNESSES` lists witnesses separated by commas or whitespace, each as its
cosignature/v1 verifier key, ``=``, and its submission prefix::

    witness.example.org/w1+1a2b3c4d+BAbc...=https://w1.example.org/witness

(a 33-byte key's base64 has no ``=`` of its own, so the first ``=`` ends the key).
"""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ledger.tlog.note import (
    CosignatureVerifier,
    NoteError,
    Signature,
    open_note,
    verifier_from_key,
)
from ledger.tlog.witness import SIZE_CONTENT_TYPE

__all__ = [
    "Cosigned",
    "WitnessEndpoint",
    "WitnessError",
    "add_checkpoint",
    "parse_witnesses",
]

MAX_RESYNCS = 3
MAX_ANSWER_BYTES = 64 * 1024


class WitnessError(Exception):
    """A witness did not cosign: unreachable, refusing, or answering nonsense."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class WitnessConflict(WitnessError):
    """The witness holds a larger tree than the checkpoint offered: it has seen another,
    newer view of this log (or the log lost entries)."""

    def __init__(self, held: int, offered: int) -> None:
        super().__init__(f"the witness holds size {held}, past the checkpoint's {offered}", 409)
        self.held = held


@dataclass(frozen=True)
class WitnessEndpoint:
    verifier: CosignatureVerifier
    url: str

    @property
    def name(self) -> str:
        return self.verifier.name


@dataclass(frozen=True)
class Cosigned:
    size: int
    signature: Signature
    old_size: int  # the size the proof was from, after any resync


def parse_witnesses(text: str) -> list[WitnessEndpoint]:
    """`LEDGER_WITNESSES`'s value; `ValueError` naming the first bad item."""
    endpoints: list[WitnessEndpoint] = []
    for item in text.replace(",", " ").split():
        vkey, eq, url = item.partition("=")
        if not eq or not url.startswith(("http://", "https://")):
            raise ValueError(f"{item!r}: expected <witness vkey>=<http(s) URL>")
        try:
            verifier = verifier_from_key(vkey)
        except NoteError as e:
            raise ValueError(f"{vkey!r}: not a verifier key ({e})") from None
        if not isinstance(verifier, CosignatureVerifier):
            raise ValueError(f"{vkey!r}: a witness key is of type cosignature/v1 (0x04)")
        if any(e.name == verifier.name for e in endpoints):
            raise ValueError(f"{verifier.name!r}: the same witness is listed twice")
        endpoints.append(WitnessEndpoint(verifier, url.rstrip("/")))
    return endpoints


def _body(old: int, proof: Sequence[bytes], note: str) -> bytes:
    lines = [f"old {old}", *(base64.b64encode(h).decode() for h in proof)]
    return ("\n".join(lines) + "\n\n" + note).encode()


def _post(url: str, body: bytes, timeout: float) -> tuple[int, str, str]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"content-type": "text/plain"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, _text(response.read(MAX_ANSWER_BYTES)), ""
    except urllib.error.HTTPError as e:
        with e:
            return e.code, _text(e.read(MAX_ANSWER_BYTES)), e.headers.get("content-type", "")
    except (OSError, ValueError) as e:  # URLError, timeouts, refused connections
        raise WitnessError(f"unreachable: {getattr(e, 'reason', e)}") from None


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def add_checkpoint(
    endpoint: WitnessEndpoint,
    note: str,
    size: int,
    old_size: int,
    proof_for: Callable[[int, int], Sequence[bytes]],
    timeout: float = 10.0,
) -> Cosigned:
    """Ask ``endpoint`` to cosign the signed checkpoint ``note`` (of ``size`` leaves),
    proving consistency from ``old_size`` (the size it last cosigned, as far as the log
    knows). On 409 the witness says the size it holds; the proof is made again from there.

    Returns the verified cosignature; raises `WitnessError` otherwise."""
    old = old_size
    for _ in range(MAX_RESYNCS + 1):
        if old > size:
            raise WitnessConflict(old, size)
        proof = proof_for(old, size) if 0 < old < size else []
        status, text, content_type = _post(
            endpoint.url + "/add-checkpoint", _body(old, proof, note), timeout
        )
        if status == 200:
            return Cosigned(size, _cosignature(endpoint, note, text), old)
        if status != 409:
            raise WitnessError(f"answered {status}: {text.strip()[:200]}", status)
        held = text.strip()
        if not content_type.startswith(SIZE_CONTENT_TYPE) or not held.isdecimal():
            raise WitnessError(f"answered 409 without a size: {held[:200]!r}", 409)
        old = int(held)
    raise WitnessError(f"still in conflict after {MAX_RESYNCS} resyncs", 409)


def _cosignature(endpoint: WitnessEndpoint, note: str, lines: str) -> Signature:
    """The endpoint's cosignature among the lines it answered, verified on ``note``."""
    if not lines.endswith("\n"):
        raise WitnessError("answered 200 without signature lines")
    try:
        opened = open_note(note + lines, [endpoint.verifier])
    except NoteError as e:
        raise WitnessError(f"answered 200 without a valid cosignature: {e}") from None
    return opened.signatures[0]
