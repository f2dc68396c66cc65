"""A C2SP tlog-tiles client written from the specifications alone (tlog-tiles,
tlog-checkpoint, signed-note, RFC 6962/9162), for the tests to check the ledger's /log/
tree and its exports with code that shares nothing with the server: it imports no module
of this repository. It reads a base URL (with httpx) or a folder laid out the same way."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


# ----- signed notes and checkpoints ------------------------------------------------------


@dataclass(frozen=True)
class Key:
    name: str
    key_id: bytes
    public: Ed25519PublicKey


def parse_vkey(vkey: str) -> Key:
    """``name+hex8+base64(0x01 || key)``, checked against its own key id."""
    name, hex8, material = vkey.split("+", 2)
    raw = base64.b64decode(material)
    assert raw[0] == 0x01 and len(raw) == 33, "not an Ed25519 verifier key"
    key_id = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    assert key_id.hex() == hex8, "the key id does not match the key"
    return Key(name, key_id, Ed25519PublicKey.from_public_bytes(raw[1:]))


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    note: str


def open_checkpoint(note: str, key: Key) -> Checkpoint:
    """Verify the log's signature on a checkpoint note and read its first three lines."""
    cut = note.rindex("\n\n")
    text, signatures = note[: cut + 1], note[cut + 2 :].splitlines()
    verified = False
    for line in signatures:
        assert line.startswith("\u2014 "), f"not a signature line: {line!r}"
        name, blob = line[2:].split(" ")
        raw = base64.b64decode(blob)
        if name == key.name and raw[:4] == key.key_id:
            try:
                key.public.verify(raw[4:], text.encode())
                verified = True
            except InvalidSignature:
                raise AssertionError("the log's signature does not verify") from None
    assert verified, "no signature by the log's key"
    origin, size, root, *_ = text.split("\n")
    assert origin == key.name
    return Checkpoint(origin, int(size), base64.b64decode(root), note)


# ----- reading tiles ---------------------------------------------------------------------


def tile_path(level: int | str, index: int, width: int) -> str:
    parts = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        parts.append(f"x{index % 1000:03d}")
        index //= 1000
    suffix = "" if width == 256 else f".p/{width}"
    return f"tile/{level}/{'/'.join(reversed(parts))}{suffix}"


class Source:
    """GET a path of the tree: from a base URL (ending in /) or a folder."""

    def __init__(self, where: str | Path, token: str | None = None) -> None:
        self.where = where
        self.client = None
        if isinstance(where, str):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            self.client = httpx.Client(headers=headers, timeout=60)
        self.fetches = 0

    def get(self, path: str) -> bytes:
        self.fetches += 1
        if self.client is None:
            return (Path(self.where) / path).read_bytes()
        response = self.client.get(f"{self.where}{path}")
        assert response.status_code == 200, (path, response.status_code, response.text[:200])
        return response.content

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


class Tiles:
    """The hashes of a tree of `size` leaves, fetched tile by tile as needed and kept."""

    def __init__(self, source: Source, size: int) -> None:
        self.source, self.size = source, size
        self.tiles: dict[tuple[int, int], bytes] = {}

    def tile(self, level: int, index: int) -> bytes:
        if (level, index) not in self.tiles:
            hashes_at_level = self.size >> (8 * level)
            width = min(256, hashes_at_level - index * 256)
            assert width > 0, f"no tile {level}/{index} in a tree of {self.size}"
            body = self.source.get(tile_path(level, index, width))
            assert len(body) == 32 * width, f"tile {level}/{index}: {len(body)} bytes"
            self.tiles[(level, index)] = body
        return self.tiles[(level, index)]

    def node(self, height: int, index: int) -> bytes:
        """MTH(D[index * 2**height : (index + 1) * 2**height]): the tile at level
        height // 8 holds the hashes below it, hashed up height % 8 times."""
        level, rest = divmod(height, 8)
        first = index << rest
        body = self.tile(level, first >> 8)
        at = first & 255
        hashes = [body[i * 32 : i * 32 + 32] for i in range(at, at + (1 << rest))]
        while len(hashes) > 1:
            hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
        return hashes[0]

    def mth(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for the ranges the RFC 6962 recursion visits."""
        n = end - start
        if n & (n - 1) == 0 and start % n == 0:
            return self.node(n.bit_length() - 1, start // n)
        k = 1 << ((n - 1).bit_length() - 1)
        return node_hash(self.mth(start, start + k), self.mth(start + k, end))

    def inclusion(self, m: int, start: int, end: int) -> list[bytes]:
        """PATH(m, D[start:end]) of RFC 6962 §2.1.1, leaf end first."""
        n = end - start
        if n == 1:
            return []
        k = 1 << ((n - 1).bit_length() - 1)
        if m < k:
            return [*self.inclusion(m, start, start + k), self.mth(start + k, end)]
        return [*self.inclusion(m - k, start + k, end), self.mth(start, start + k)]

    def consistency(self, m: int, start: int, end: int, whole: bool = True) -> list[bytes]:
        """SUBPROOF(m, D[start:end], b) of RFC 6962 §2.1.2."""
        n = end - start
        if m == n:
            return [] if whole else [self.mth(start, end)]
        k = 1 << ((n - 1).bit_length() - 1)
        if m <= k:
            return [*self.consistency(m, start, start + k, whole), self.mth(start + k, end)]
        return [*self.consistency(m - k, start + k, end, False), self.mth(start, start + k)]


# ----- RFC 9162 verification -------------------------------------------------------------


def verify_inclusion(leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(
    m: int, n: int, old_root: bytes, new_root: bytes, proof: list[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2 (0 < m < n)."""
    if not proof:
        return False
    path = [old_root, *proof] if m & (m - 1) == 0 else list(proof)
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr == old_root and sr == new_root and sn == 0


def entries(source: Source, index: int, width: int) -> list[bytes]:
    """An entry bundle's entries: uint16 big-endian length, then the bytes."""
    body, out, at = source.get(tile_path("entries", index, width)), [], 0
    while at < len(body):
        length = int.from_bytes(body[at : at + 2], "big")
        out.append(body[at + 2 : at + 2 + length])
        at += 2 + length
    assert at == len(body) and len(out) == width, "a malformed entry bundle"
    return out


Progress = Callable[[int], None]
