"""C2SP tlog-tiles: paths, tile hashes and entry bundles, with known answers from the
specification (c2sp.org/tlog-tiles) and golang.org/x/mod/sumdb/tlog's tests."""

from __future__ import annotations

import base64
import hashlib

import pytest

from ledger.merkle import DictNodeStore, MerkleTree, leaf_hash, root
from ledger.tlog.tiles import (
    ENTRIES,
    Tile,
    TilePathError,
    decode_bundle,
    encode_bundle,
    new_tiles,
    parse_tile_path,
    subtree_hash,
    tile_coordinates,
    tiles_for_size,
)

# sumdb/tlog's TestTilePath, whose paths carry a height element (tile/H/L/N) that C2SP
# fixes at 8 and leaves out: the N encodings are the same.
PATHS = [
    ("tile/0/001", Tile(0, 1)),
    ("tile/0/001.p/5", Tile(0, 1, 5)),
    ("tile/5/x123/x456/078", Tile(5, 123456078)),
    ("tile/5/x123/x456/078.p/2", Tile(5, 123456078, 2)),
    ("tile/0/x003/x057/500", Tile(0, 3057500)),
    ("tile/entries/x003/x057/500", Tile(ENTRIES, 3057500)),
    ("tile/entries/000.p/1", Tile(ENTRIES, 0, 1)),
    # C2SP's own example of N
    ("tile/0/x001/x234/067", Tile(0, 1234067)),
    ("tile/63/000", Tile(63, 0)),
]


@pytest.mark.parametrize(("path", "tile"), PATHS)
def test_tile_paths_round_trip(path: str, tile: Tile) -> None:
    assert tile.path == path
    assert parse_tile_path(path) == tile


MALFORMED = [
    "tile/5/123/456/078",  # sumdb/tlog: a missing x
    "tile/-1/123/456/078",  # sumdb/tlog: a negative level
    "tile/00/000",  # a leading zero in L
    "tile/01/000",
    "tile/64/000",  # L > 63
    "tile/99999999999999999999999/000",
    "tile/0/0000",  # not 3 digits
    "tile/0/01",
    "tile/0/x000/001",  # a leading x000 group
    "tile/0/x001",  # x on the last group
    "tile/0/001/002",  # a missing x in a middle group
    "tile/0/000.p/0",  # W = 0
    "tile/0/000.p/256",  # W >= 256
    "tile/0/000.p/300",
    "tile/0/000.p/05",  # a leading zero in W
    "tile/0/000.p/",
    "tile/0/000.p",
    "tile/0/000.p/1/2",
    "tile/0/-01",
    "tile/0/+01",
    "tile/0/ 01",
    "tile/0/\u0660\u0660\u0661",  # Arabic-Indic digits are digits to str.isdigit
    "tile/data/000",
    "tile/entries",
    "tile/0",
    "tile",
    "",
    "tiles/0/000",
    "tile/0/000/",
    "tile//000",
    "tile/0x1/000",
    "tile/0/\x00\x00\x00",
]


@pytest.mark.parametrize("path", MALFORMED)
def test_malformed_tile_paths_are_refused(path: str) -> None:
    with pytest.raises(TilePathError):
        parse_tile_path(path)


# sumdb/tlog's TestNewTilesForSize (height 10)
@pytest.mark.parametrize(
    ("old", "new", "want"),
    [(1, 1, 0), (100, 101, 1), (1023, 1025, 3), (1024, 1030, 1), (1030, 2000, 1),
     (1030, 10000, 10), (49516517, 49516586, 3)],
)
def test_new_tiles_known_answers(old: int, new: int, want: int) -> None:
    assert len(tile_coordinates(old, new, 10)) == want


def test_the_specifications_examples_of_tiles_for_a_size() -> None:
    # "a tree of size 70,000 will be represented by 273 full level 0 tiles, one partial
    # level 0 tile of width 112, one full level 1 tile, one partial level 1 tile of width
    # 17, and one partial level 2 tile of width 1"
    tiles = tiles_for_size(70_000)
    assert sum(t.full and t.level == 0 for t in tiles) == 273
    assert [t for t in tiles if not t.full] == [Tile(0, 273, 112), Tile(1, 1, 17), Tile(2, 0, 1)]
    assert Tile(1, 0) in tiles and len(tiles) == 277
    # "a tree of size 256 will be represented by a full level 0 tile and a partial level
    # 1 tile of width 1"
    assert tiles_for_size(256) == [Tile(0, 0), Tile(1, 0, 1)]
    assert tiles_for_size(0) == []
    assert new_tiles(70_000, 70_000) == []


def test_record_hash_known_answer() -> None:
    # sumdb/tlog's TestFormatTree: RecordHash("hello world")
    assert (
        base64.b64encode(leaf_hash(b"hello world")).decode()
        == "TszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0="
    )


def test_tile_hashes_are_the_specifications_subtree_hashes() -> None:
    """Hash i of tile (L, N) is MTH(D[(N*256 + i) * 256**L : (N*256 + i + 1) * 256**L]),
    read from the tree's stored nodes; a full tile hashes to its hash one level up."""
    size = 70_000
    leaves = [leaf_hash(f"leaf {i}".encode()) for i in range(size)]
    store = DictNodeStore()
    MerkleTree(store).extend(leaves, 0)
    bodies: dict[Tile, bytes] = {}
    for tile in tiles_for_size(size):
        body = b"".join(store.get(tile.node_level, i) for i in tile.nodes())
        assert len(body) == tile.byte_length
        bodies[tile] = body
        span = 256**tile.level
        for i in (0, tile.width - 1):
            first = (tile.index * 256 + i) * span
            assert body[i * 32 : (i + 1) * 32] == root(leaves[first : first + span])
    # A full tile at level L hashes to one hash of the tile at level L + 1.
    assert subtree_hash(bodies[Tile(0, 5)]) == bodies[Tile(1, 0)][5 * 32 : 6 * 32]
    assert subtree_hash(bodies[Tile(0, 261)]) == bodies[Tile(1, 1, 17)][5 * 32 : 6 * 32]
    assert subtree_hash(bodies[Tile(1, 0)]) == bodies[Tile(2, 0, 1)]


def test_entry_bundles_are_uint16_length_prefixed() -> None:
    entries = [b"", b"a", bytes(range(256)) * 10, b"\xff" * 65_535]
    bundle = encode_bundle(entries)
    assert bundle[:3] == b"\x00\x00\x00" and bundle[3] == 1
    assert decode_bundle(bundle) == entries
    assert leaf_hash(decode_bundle(bundle)[1]) == hashlib.sha256(b"\x00a").digest()
    with pytest.raises(ValueError):
        encode_bundle([b"x" * 65_536])
    for broken in (b"\x00", b"\x00\x05abc", bundle[:-1]):
        with pytest.raises(ValueError):
            decode_bundle(broken)


def test_tiles_refuse_impossible_coordinates() -> None:
    for level, index, width in ((64, 0, 1), (-2, 0, 1), (0, -1, 1), (0, 0, 0), (0, 0, 257)):
        with pytest.raises(TilePathError):
            Tile(level, index, width)
    assert Tile(1, 2, 3).leaves_needed() == (2 * 256 + 3) * 256
