"""C2SP tlog-tiles (https://c2sp.org/tlog-tiles): tile coordinates, paths and entry bundles.

A tile at level ``L``, index ``N`` and width ``W`` holds the ``W`` Merkle Tree Hashes
``MTH(D[(N*256 + i) * 256**L : (N*256 + i + 1) * 256**L])`` for ``i < W``: the perfect
subtrees of height ``8*L`` at indexes ``N*256 .. N*256 + W - 1``, which `ledger.merkle`
stores as nodes ``(8*L, N*256 + i)``. A full tile is 256 hashes wide; the rightmost tile
of a level may be partial (1 to 255 hashes, path suffix ``.p/<W>``). Entry bundles
(``tile/entries/<N>[.p/<W>]``) hold the leaf data of the same leaves as level-0 tile
``N``, each prefixed by its length as a big-endian uint16.

Everything here is pure: paths and bytes, no storage.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ledger.merkle import HASH_SIZE, node_hash

__all__ = [
    "ENTRIES",
    "MAX_ENTRY_BYTES",
    "MAX_LEVEL",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "Tile",
    "TilePathError",
    "decode_bundle",
    "encode_bundle",
    "new_tiles",
    "parse_tile_path",
    "subtree_hash",
    "tile_coordinates",
    "tiles_for_size",
]

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
MAX_LEVEL = 63
ENTRIES = -1
"""The level of entry bundles (path element ``entries``)."""
MAX_ENTRY_BYTES = 0xFFFF
"""The largest entry a bundle can hold: its length is a uint16."""

_PATH_BASE = 1000
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


class TilePathError(ValueError):
    """A path that names no tile (malformed, or not in canonical form)."""


@dataclass(frozen=True, order=True)
class Tile:
    level: int  # 0..63, or ENTRIES for an entry bundle
    index: int  # N, the tile's number within its level
    width: int = TILE_WIDTH  # W, 1..256; 256 is a full tile

    def __post_init__(self) -> None:
        if not (ENTRIES <= self.level <= MAX_LEVEL and self.index >= 0):
            raise TilePathError(f"no tile at level {self.level}, index {self.index}")
        if not 1 <= self.width <= TILE_WIDTH:
            raise TilePathError(f"a tile is 1 to {TILE_WIDTH} hashes wide, not {self.width}")

    @property
    def full(self) -> bool:
        return self.width == TILE_WIDTH

    @property
    def path(self) -> str:
        """``tile/<L>/<N>[.p/<W>]``, or ``tile/entries/<N>[.p/<W>]``."""
        level = "entries" if self.level == ENTRIES else str(self.level)
        suffix = "" if self.full else f".p/{self.width}"
        return f"tile/{level}/{encode_index(self.index)}{suffix}"

    @property
    def node_level(self) -> int:
        """The `ledger.merkle` level of the hashes this tile holds (entries: the leaves)."""
        return TILE_HEIGHT * max(self.level, 0)

    def nodes(self) -> range:
        """The `ledger.merkle` indexes (at `node_level`) of the hashes this tile holds."""
        first = self.index * TILE_WIDTH
        return range(first, first + self.width)

    def leaves_needed(self) -> int:
        """The smallest tree size that holds every hash of this tile."""
        return (self.index * TILE_WIDTH + self.width) << self.node_level

    @property
    def byte_length(self) -> int:
        """The exact length of a hash tile's body (entry bundles vary)."""
        return self.width * HASH_SIZE


def encode_index(n: int) -> str:
    """N as zero-padded 3-digit path elements, all but the last prefixed with ``x``:
    1234067 -> ``x001/x234/067``."""
    parts = [f"{n % _PATH_BASE:03d}"]
    n //= _PATH_BASE
    while n:
        parts.append(f"x{n % _PATH_BASE:03d}")
        n //= _PATH_BASE
    return "/".join(reversed(parts))


def parse_tile_path(path: str) -> Tile:
    """The tile a path names, relative to the log's prefix (``tile/...``).

    Only the canonical form is accepted: no leading zeros in L or W, 3-digit groups of N
    with ``x`` on all but the last and no leading ``x000``, W from 1 to 255 after ``.p/``.
    """
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "tile":
        raise TilePathError(f"not a tile path: {path!r}")
    level_text, rest = parts[1], parts[2:]
    width = TILE_WIDTH
    if len(rest) >= 2 and rest[-2].endswith(".p"):
        width = _decimal(rest[-1], path)
        if not 1 <= width < TILE_WIDTH:
            raise TilePathError(f"a partial tile is 1 to 255 hashes wide: {path!r}")
        rest = [*rest[:-2], rest[-2][: -len(".p")]]
    if level_text == "entries":
        level = ENTRIES
    else:
        level = _decimal(level_text, path)
        if level > MAX_LEVEL:
            raise TilePathError(f"tile levels go up to {MAX_LEVEL}: {path!r}")
    index = 0
    for element in rest:
        digits = element[1:] if element.startswith("x") else element
        if len(digits) != 3 or not digits.isascii() or not digits.isdigit():
            raise TilePathError(f"malformed tile index in {path!r}")
        index = index * _PATH_BASE + int(digits)
    tile = Tile(level, index, width)
    if tile.path != path:  # a missing or extra `x`, a leading x000, ...
        raise TilePathError(f"not a canonical tile path: {path!r}")
    return tile


def _decimal(text: str, path: str) -> int:
    if not _DECIMAL.fullmatch(text) or len(text) > 20:
        raise TilePathError(f"malformed number {text!r} in {path!r}")
    return int(text)


def tiles_for_size(size: int) -> list[Tile]:
    """Every tile (full and, at the right edge, partial) of a tree of ``size`` leaves,
    level by level: what a log publishes for a checkpoint of that size."""
    return new_tiles(0, size)


def new_tiles(old_size: int, new_size: int) -> list[Tile]:
    """The tiles to publish when a tree grows from ``old_size`` to ``new_size`` leaves."""
    return [Tile(*c) for c in tile_coordinates(old_size, new_size, TILE_HEIGHT)]


def tile_coordinates(old_size: int, new_size: int, height: int) -> list[tuple[int, int, int]]:
    """``(level, index, width)`` of the tiles of ``height`` to publish when a tree grows
    from ``old_size`` to ``new_size`` leaves (golang.org/x/mod/sumdb/tlog's NewTiles)."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no tiles from size {old_size} to {new_size}")
    out: list[tuple[int, int, int]] = []
    level = 0
    while new_size >> (height * level) > 0:
        old_n, new_n = old_size >> (height * level), new_size >> (height * level)
        if old_n != new_n:
            out += [(level, n, 1 << height) for n in range(old_n >> height, new_n >> height)]
            n = new_n >> height
            if width := new_n - (n << height):
                out.append((level, n, width))
        level += 1
    return out


def subtree_hash(hashes: bytes) -> bytes:
    """The root of the perfect subtree whose leaves are ``hashes`` (a power-of-two count
    of 32-byte hashes): a full tile's hash, which is one hash of the tile above."""
    count = len(hashes) // HASH_SIZE
    if count == 0 or count & (count - 1) or len(hashes) % HASH_SIZE:
        raise ValueError(f"{len(hashes)} bytes are not a power-of-two count of hashes")
    level = [hashes[i : i + HASH_SIZE] for i in range(0, len(hashes), HASH_SIZE)]
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def encode_bundle(entries: Sequence[bytes]) -> bytes:
    """An entry bundle: each entry as a big-endian uint16 length, then its bytes."""
    out = bytearray()
    for entry in entries:
        if len(entry) > MAX_ENTRY_BYTES:
            raise ValueError(f"an entry of {len(entry)} bytes does not fit a bundle")
        out += len(entry).to_bytes(2, "big") + entry
    return bytes(out)


def decode_bundle(data: bytes) -> list[bytes]:
    """The entries of a bundle; `ValueError` when the lengths do not add up."""
    entries, at = [], 0
    while at < len(data):
        if at + 2 > len(data):
            raise ValueError("an entry bundle ends inside a length prefix")
        length = int.from_bytes(data[at : at + 2], "big")
        at += 2
        if at + length > len(data):
            raise ValueError("an entry bundle ends inside an entry")
        entries.append(data[at : at + length])
        at += length
    return entries
