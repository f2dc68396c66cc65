"""The Merkle tree (`ledger.merkle`) and the auditors' stand-alone verifier (`ledger.proofcheck`).

Known answers: the 8-leaf test vectors of the certificate-transparency reference
implementation (C++ ``merkle_tree_test``), as carried on by Go ``trillian`` and
``github.com/transparency-dev/merkle`` (``proof/verify_test.go``: ``leaves``, ``roots``,
``inclusionProofs``, ``consistencyProofs``), and the node IDs of the proofs in
``proof/proof_test.go`` of the same repository. Everything else is checked against a naive
recursive MTH / PATH / PROOF written straight from RFC 9162 §2.1 in this file.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle, proofcheck
from ledger.merkle import DictNodeStore, MerkleTree

# -- known answers -----------------------------------------------------------------------------

# Leaf *data* (hex) of the CT reference tests; the tree's leaves are their leaf hashes.
CT_LEAVES = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
]

# MTH of the first n leaves, n = 0..8.
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]

# (0-based leaf index, tree size, audit path). The Go file numbers leaves from 1.
CT_INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]

# (old size, new size, consistency proof).
CT_CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]

# Perfect-subtree nodes (level, index) each proof is made of, from transparency-dev/merkle
# proof/proof_test.go (a non-perfect right edge is listed as the nodes it is rehashed from).
GO_INCLUSION_NODES = {
    (0, 1): set(),
    (0, 2): {(0, 1)},
    (1, 2): {(0, 0)},
    (1, 3): {(0, 0), (0, 2)},
    (0, 7): {(0, 1), (1, 1), (0, 6), (1, 2)},
    (2, 7): {(0, 3), (1, 0), (0, 6), (1, 2)},
    (4, 7): {(0, 5), (0, 6), (2, 0)},
    (6, 7): {(1, 2), (2, 0)},
    (2, 4): {(0, 3), (1, 0)},
    (3, 5): {(0, 2), (1, 0), (0, 4)},
    (3, 6): {(0, 2), (1, 0), (1, 2)},
    (4, 6): {(0, 5), (2, 0)},
    (10, 15): {(0, 11), (1, 4), (0, 14), (1, 6), (3, 0)},
    (24, 31): {(0, 25), (1, 13), (0, 30), (1, 14), (3, 2), (4, 0)},
    (81, 95): {(0, 80), (1, 41), (2, 21), (0, 94), (1, 46), (2, 22), (4, 4), (6, 0)},
}
GO_CONSISTENCY_NODES = {
    (1, 2): {(0, 1)},
    (1, 4): {(0, 1), (1, 1)},
    (1, 6): {(0, 1), (1, 1), (1, 2)},
    (2, 3): {(0, 2)},
    (2, 8): {(1, 1), (2, 1)},
    (3, 7): {(0, 2), (0, 3), (1, 0), (0, 6), (1, 2)},
    (4, 7): {(0, 6), (1, 2)},
    (5, 7): {(0, 4), (0, 5), (0, 6), (2, 0)},
    (6, 7): {(1, 2), (0, 6), (2, 0)},
    (7, 8): {(0, 6), (0, 7), (1, 2), (2, 0)},
    (2, 4): {(1, 1)},
    (3, 5): {(0, 2), (0, 3), (1, 0), (0, 4)},
    (3, 6): {(0, 2), (0, 3), (1, 0), (1, 2)},
    (4, 6): {(1, 2)},
    (1, 7): {(0, 1), (1, 1), (0, 6), (1, 2)},
    (10, 15): {(1, 4), (1, 5), (0, 14), (1, 6), (3, 0)},
    (24, 31): {(3, 2), (0, 30), (1, 14), (2, 6), (4, 0)},
    (81, 95): {(0, 80), (0, 81), (1, 41), (2, 21), (0, 94), (1, 46), (2, 22), (4, 4), (6, 0)},
    (5, 5): set(),
}


def unhex(hashes: Iterable[str]) -> list[bytes]:
    return [bytes.fromhex(h) for h in hashes]


CT_LEAF_HASHES = [merkle.leaf_hash(bytes.fromhex(d)) for d in CT_LEAVES]


# -- a naive reference, straight from RFC 9162 §2.1 ----------------------------------------------


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _k(n: int) -> int:
    """The largest power of two smaller than n."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


class Naive:
    """MTH, PATH and PROOF by the RFC's recursive definitions over a fixed list of leaves."""

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        self.d = list(leaf_hashes)
        self.mth = functools.cache(self._mth)

    def _mth(self, lo: int, hi: int) -> bytes:
        n = hi - lo
        if n == 0:
            return _sha(b"")
        if n == 1:
            return self.d[lo]
        k = _k(n)
        return _sha(b"\x01" + self.mth(lo, lo + k) + self.mth(lo + k, hi))

    def path(self, m: int, lo: int, hi: int) -> list[bytes]:
        n = hi - lo
        if n == 1:
            return []
        k = _k(n)
        if m < k:
            return [*self.path(m, lo, lo + k), self.mth(lo + k, hi)]
        return [*self.path(m - k, lo + k, hi), self.mth(lo, lo + k)]

    def subproof(self, m: int, lo: int, hi: int, b: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if b else [self.mth(lo, hi)]
        k = _k(n)
        if m <= k:
            return [*self.subproof(m, lo, lo + k, b), self.mth(lo + k, hi)]
        return [*self.subproof(m - k, lo + k, hi, False), self.mth(lo, lo + k)]

    def proof(self, m: int, n: int) -> list[bytes]:
        return [] if m in (0, n) else self.subproof(m, 0, n, True)


def make_leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(f"leaf {i}".encode()) for i in range(n)]


def build(leaf_hashes: Sequence[bytes]) -> MerkleTree:
    tree = MerkleTree(DictNodeStore())
    tree.extend(leaf_hashes, 0)
    return tree


MAX = 300
BIG_LEAVES = make_leaves(MAX)
BIG_TREE = build(BIG_LEAVES)
BIG_NAIVE = Naive(BIG_LEAVES)
CT_TREE = build(CT_LEAF_HASHES)


class RecordingStore(DictNodeStore):
    """A DictNodeStore that records every read."""

    def __init__(self, nodes: dict[tuple[int, int], bytes]) -> None:
        super().__init__()
        self.nodes = dict(nodes)
        self.reads: list[tuple[int, int]] = []

    def get(self, level: int, index: int) -> bytes:
        self.reads.append((level, index))
        return super().get(level, index)


def recording(tree: MerkleTree) -> tuple[MerkleTree, RecordingStore]:
    assert isinstance(tree.store, DictNodeStore)
    store = RecordingStore(tree.store.nodes)
    return MerkleTree(store), store


# -- hashing and roots -------------------------------------------------------------------------


def test_hashing_is_domain_separated_sha256() -> None:
    for mod in (merkle, proofcheck):
        assert mod.leaf_hash(b"abc") == _sha(b"\x00abc")
        assert mod.node_hash(b"l" * 32, b"r" * 32) == _sha(b"\x01" + b"l" * 32 + b"r" * 32)
        assert mod.EMPTY_ROOT.hex() == CT_ROOTS[0]


@pytest.mark.parametrize("size", range(9))
def test_ct_roots(size: int) -> None:
    expected = bytes.fromhex(CT_ROOTS[size])
    assert merkle.root(CT_LEAF_HASHES[:size]) == expected
    assert CT_TREE.root(size) == expected
    assert Naive(CT_LEAF_HASHES).mth(0, size) == expected


@pytest.mark.parametrize(("index", "size", "path"), CT_INCLUSION)
def test_ct_inclusion_proofs(index: int, size: int, path: list[str]) -> None:
    proof = unhex(path)
    root = bytes.fromhex(CT_ROOTS[size])
    leaf = CT_LEAF_HASHES[index]
    assert CT_TREE.inclusion_proof(index, size) == proof
    assert Naive(CT_LEAF_HASHES).path(index, 0, size) == proof
    for verify in (merkle.verify_inclusion, proofcheck.verify_inclusion):
        assert verify(leaf, index, size, proof, root)
        for probe in corrupt_inclusion(leaf, index, size, proof, root):
            assert not verify(*probe), probe


@pytest.mark.parametrize(("old", "new", "path"), CT_CONSISTENCY)
def test_ct_consistency_proofs(old: int, new: int, path: list[str]) -> None:
    proof = unhex(path)
    old_root, new_root = bytes.fromhex(CT_ROOTS[old]), bytes.fromhex(CT_ROOTS[new])
    assert CT_TREE.consistency_proof(old, new) == proof
    assert Naive(CT_LEAF_HASHES).proof(old, new) == proof
    for verify in (merkle.verify_consistency, proofcheck.verify_consistency):
        assert verify(old, new, old_root, new_root, proof)
        if proof:
            for probe in corrupt_consistency(old, new, old_root, new_root, proof):
                assert not verify(*probe), probe


def test_ct_all_proofs_of_the_8_leaf_tree_verify() -> None:
    naive = Naive(CT_LEAF_HASHES)
    for n in range(1, 9):
        root = bytes.fromhex(CT_ROOTS[n])
        for i in range(n):
            proof = CT_TREE.inclusion_proof(i, n)
            assert proof == naive.path(i, 0, n)
            assert merkle.verify_inclusion(CT_LEAF_HASHES[i], i, n, proof, root)
        for m in range(n + 1):
            proof = CT_TREE.consistency_proof(m, n)
            assert proof == naive.proof(m, n)
            old_root = bytes.fromhex(CT_ROOTS[m])
            assert merkle.verify_consistency(m, n, old_root, root, proof)


@pytest.mark.parametrize(("at", "nodes"), GO_INCLUSION_NODES.items(), ids=str)
def test_inclusion_proof_reads_exactly_the_proof_nodes(
    at: tuple[int, int], nodes: set[tuple[int, int]]
) -> None:
    tree, store = recording(BIG_TREE)
    index, size = at
    assert tree.inclusion_proof(index, size) == BIG_NAIVE.path(index, 0, size)
    assert set(store.reads) == nodes
    assert len(store.reads) == len(nodes)


@pytest.mark.parametrize(("at", "nodes"), GO_CONSISTENCY_NODES.items(), ids=str)
def test_consistency_proof_reads_exactly_the_proof_nodes(
    at: tuple[int, int], nodes: set[tuple[int, int]]
) -> None:
    tree, store = recording(BIG_TREE)
    old, new = at
    assert tree.consistency_proof(old, new) == BIG_NAIVE.proof(old, new)
    assert set(store.reads) == nodes
    assert len(store.reads) == len(nodes)


def test_root_reads_the_binary_decomposition() -> None:
    tree, store = recording(BIG_TREE)
    assert tree.root(0) == merkle.EMPTY_ROOT
    assert store.reads == []
    assert tree.root(95) == BIG_NAIVE.mth(0, 95)  # 95 = 64 + 16 + 8 + 4 + 2 + 1
    assert set(store.reads) == {(6, 0), (4, 4), (3, 10), (2, 22), (1, 46), (0, 94)}


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        BIG_TREE.inclusion_proof(0, 0)
    with pytest.raises(ValueError):
        BIG_TREE.inclusion_proof(5, 5)
    with pytest.raises(ValueError):
        BIG_TREE.inclusion_proof(-1, 5)
    with pytest.raises(ValueError):
        BIG_TREE.consistency_proof(9, 8)
    with pytest.raises(ValueError):
        BIG_TREE.root(-1)
    with pytest.raises(ValueError):
        BIG_TREE.append([b"short"], MAX)
    with pytest.raises(KeyError):  # nodes beyond what was stored
        BIG_TREE.root(MAX + 1)


def test_verify_edge_cases() -> None:
    some = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
    empty = merkle.EMPTY_ROOT
    for mod in (merkle, proofcheck):
        # Inclusion in an empty or too small tree, wrong-sized hashes.
        for index, size in ((0, 0), (1, 0), (1, 1), (2, 1)):
            assert not mod.verify_inclusion(some, index, size, [], some)
        leaf = mod.leaf_hash(b"data")
        assert mod.verify_inclusion(leaf, 0, 1, [], leaf)
        assert not mod.verify_inclusion(leaf, 0, 1, [], b"")
        assert not mod.verify_inclusion(b"", 0, 1, [], leaf)
        assert not mod.verify_inclusion(leaf[:31], 0, 1, [], leaf[:31])
        # Consistency: trivial cases, time travel, proofs where none is due.
        assert mod.verify_consistency(0, 0, empty, empty, [])
        assert mod.verify_consistency(0, 5, empty, some, [])
        assert not mod.verify_consistency(0, 5, some, some, [])
        assert not mod.verify_consistency(0, 5, empty, some, [empty])
        assert mod.verify_consistency(3, 3, some, some, [])
        assert not mod.verify_consistency(3, 3, some, empty, [])
        assert not mod.verify_consistency(3, 3, some, some, [empty])
        assert not mod.verify_consistency(1, 0, some, some, [])
        assert not mod.verify_consistency(2, 1, some, some, [some])
        assert not mod.verify_consistency(1, 2, some, empty, [])


# -- corruption probes (after transparency-dev/merkle proof/verify_test.go) ---------------------
#
# A wrong size of size +- 1 is not among them: it is not detectable from a proof alone (the
# path of leaf 0 in a tree of 3, [l1, l2], hashes exactly like the path in a tree of 4,
# [l1, MTH(l2, l3)]). The signed tree head is what binds a size to its root.

SOME = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def flip(proof: Sequence[bytes], i: int, bit: int) -> list[bytes]:
    out = list(proof)
    out[i] = bytes([out[i][0] ^ (1 << bit)]) + out[i][1:]
    return out


def corrupt_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> list[tuple[bytes, int, int, list[bytes], bytes]]:
    p = list(proof)
    probes = [
        (leaf, index - 1, size, p, root),
        (leaf, index + 1, size, p, root),
        (leaf, index ^ 2, size, p, root),
        (leaf, index, size * 2, p, root),
        (leaf, index, size // 2, p, root),
        (_sha(b"WrongLeaf"), index, size, p, root),
        (leaf, index, size, p, merkle.EMPTY_ROOT),
        (leaf, index, size, p, SOME),
        (leaf, index, size, [*p, b""], root),
        (leaf, index, size, [*p, root], root),
        (leaf, index, size, [b"", *p], root),
        (leaf, index, size, [root, *p], root),
        (leaf, index, size, [*p, SOME], root),
        # A path extended past the root, against the root it extends to.
        (leaf, index, size, [*p, SOME], merkle.node_hash(SOME, root)),
    ]
    probes += [(leaf, index, size, flip(p, i, 3), root) for i in range(len(p))]
    if p:
        probes.append((leaf, index, size, p[:-1], root))
        probes.append((leaf, index, size, p[1:], root))
    if len(p) > 1:
        probes.append((leaf, index, size, [p[0], SOME, *p[1:]], root))
        probes.append((leaf, index, size, [p[1], p[0], *p[2:]], root))
    return probes


def corrupt_consistency(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> list[tuple[int, int, bytes, bytes, list[bytes]]]:
    p = list(proof)
    wrong = _sha(b"WrongRoot")
    probes = [
        (old - 1, new, old_root, new_root, p),
        (old + 1, new, old_root, new_root, p),
        (old ^ 2, new, old_root, new_root, p),
        (old, new * 2, old_root, new_root, p),
        (old, new // 2, old_root, new_root, p),
        (old, new, wrong, new_root, p),
        (old, new, old_root, wrong, p),
        (old, new, new_root, old_root, p),
        (old, new, old_root, new_root, []),
        (old, new, old_root, new_root, [*p, b""]),
        (old, new, old_root, new_root, [*p, old_root]),
        (old, new, old_root, new_root, [*p, new_root]),
        (old, new, old_root, merkle.node_hash(SOME, new_root), [*p, SOME]),
        (old, new, old_root, new_root, [b"", *p]),
        (old, new, old_root, new_root, [old_root, *p]),
        (old, new, old_root, new_root, [new_root, *p]),
        (old, new, old_root, new_root, [p[0], *p]),
        (old, new, old_root, new_root, p[:-1]),
        (old, new, old_root, new_root, p[1:]),
    ]
    probes += [(old, new, old_root, new_root, flip(p, i, 4)) for i in range(len(p))]
    return probes


# -- properties --------------------------------------------------------------------------------

sizes = st.integers(min_value=1, max_value=MAX)


@st.composite
def size_and_index(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(sizes)
    return size, draw(st.integers(min_value=0, max_value=size - 1))


@st.composite
def two_sizes(draw: st.DrawFn) -> tuple[int, int]:
    new = draw(sizes)
    return draw(st.integers(min_value=0, max_value=new)), new


@settings(max_examples=500, deadline=None)
@given(size_and_index())
def test_every_inclusion_proof_verifies_and_every_tampered_one_fails(at: tuple[int, int]) -> None:
    size, index = at
    tree, store = recording(BIG_TREE)
    proof = tree.inclusion_proof(index, size)
    assert len(store.reads) <= 2 * size.bit_length()  # O(log n) reads
    assert proof == BIG_NAIVE.path(index, 0, size)
    root = BIG_TREE.root(size)
    leaf = BIG_LEAVES[index]
    assert merkle.verify_inclusion(leaf, index, size, proof, root)
    assert proofcheck.verify_inclusion(leaf, index, size, proof, root)
    for probe in corrupt_inclusion(leaf, index, size, proof, root):
        assert not merkle.verify_inclusion(*probe), probe
        assert not proofcheck.verify_inclusion(*probe), probe
    # Another leaf's hash at this index does not verify either.
    other = BIG_LEAVES[(index + 1) % MAX]
    assert not merkle.verify_inclusion(other, index, size, proof, root)


@settings(max_examples=500, deadline=None)
@given(two_sizes())
def test_every_consistency_proof_verifies_and_every_tampered_one_fails(
    at: tuple[int, int],
) -> None:
    old, new = at
    tree, store = recording(BIG_TREE)
    proof = tree.consistency_proof(old, new)
    assert len(store.reads) <= 2 * new.bit_length() + 1  # O(log n) reads
    assert proof == BIG_NAIVE.proof(old, new)
    old_root, new_root = BIG_TREE.root(old), BIG_TREE.root(new)
    for verify in (merkle.verify_consistency, proofcheck.verify_consistency):
        assert verify(old, new, old_root, new_root, proof)
        if proof:
            for probe in corrupt_consistency(old, new, old_root, new_root, proof):
                assert not verify(*probe), probe
        else:
            assert not verify(old, new, old_root, new_root, [SOME])
            assert not verify(old, new, SOME, new_root, proof)
    # A proof from a tree that was not a prefix fails: change one old leaf.
    if old:
        forked = list(BIG_LEAVES[:old])
        forked[old // 2] = _sha(b"forked")
        forked_root = merkle.root(forked)
        assert not merkle.verify_consistency(old, new, forked_root, new_root, proof)
        assert not proofcheck.verify_consistency(old, new, forked_root, new_root, proof)


@st.composite
def tampered(draw: st.DrawFn) -> tuple[Callable[..., bool], Callable[..., bool], tuple[Any, ...]]:
    """Random, often malformed, arguments for both modules' verifiers."""
    pool = [*BIG_LEAVES[:8], merkle.EMPTY_ROOT, SOME, b"", b"\x00" * 31]
    hashes = st.sampled_from(pool)
    args: tuple[Any, ...]
    if draw(st.booleans()):
        args = (
            draw(hashes),
            draw(st.integers(-2, 20)),
            draw(st.integers(-2, 20)),
            draw(st.lists(hashes, max_size=6)),
            draw(hashes),
        )
        return merkle.verify_inclusion, proofcheck.verify_inclusion, args
    args = (
        draw(st.integers(-2, 20)),
        draw(st.integers(-2, 20)),
        draw(hashes),
        draw(hashes),
        draw(st.lists(hashes, max_size=6)),
    )
    return merkle.verify_consistency, proofcheck.verify_consistency, args


@settings(max_examples=500, deadline=None)
@given(tampered())
def test_proofcheck_agrees_with_merkle_on_arbitrary_input(
    case: tuple[Callable[..., bool], Callable[..., bool], tuple[Any, ...]],
) -> None:
    ours, theirs, args = case
    assert ours(*args) == theirs(*args)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(min_value=0, max_value=MAX),
    st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=MAX),
    st.data(),
)
def test_incremental_build_equals_one_go_and_naive(
    total: int, chunks: list[int], data: st.DataObject
) -> None:
    leaves = BIG_LEAVES[:total]
    store = RecordingStore({})
    tree = MerkleTree(store)
    size = 0
    for chunk in chunks:
        if size == total:
            break
        batch = leaves[size : size + chunk]
        store.reads.clear()
        nodes = tree.append(batch, size)
        # Only the old tree's right-edge nodes are read: at most one per level.
        assert len(store.reads) <= max(size.bit_length(), 1)
        store.put_many(nodes)
        size += len(batch)
        assert tree.root(size) == merkle.root(leaves[:size]) == BIG_NAIVE.mth(0, size)
    if size < total:
        size = tree.extend(leaves[size:], size)
    assert size == total
    # Exactly the perfect subtrees of the first `total` leaves are stored, with their MTH.
    assert isinstance(BIG_TREE.store, DictNodeStore)
    expected = {
        key: h for key, h in BIG_TREE.store.nodes.items() if (key[1] + 1) << key[0] <= total
    }
    assert store.nodes == expected
    assert build(leaves).store.nodes == expected  # type: ignore[attr-defined]
    for (level, index), h in list(expected.items())[:50]:
        assert h == BIG_NAIVE.mth(index << level, (index + 1) << level)
    if total:
        index = data.draw(st.integers(0, total - 1))
        assert tree.inclusion_proof(index, total) == BIG_TREE.inclusion_proof(index, total)
        old = data.draw(st.integers(0, total))
        assert tree.consistency_proof(old, total) == BIG_NAIVE.proof(old, total)
    assert tree.root(total) == BIG_NAIVE.mth(0, total)


@given(st.lists(st.binary(max_size=20), max_size=40))
def test_root_of_any_leaves_matches_naive(data: list[bytes]) -> None:
    leaves = [merkle.leaf_hash(d) for d in data]
    assert merkle.root(leaves) == Naive(leaves).mth(0, len(leaves))
    assert build(leaves).root(len(leaves)) == merkle.root(leaves)


def test_perfect_subtrees_of_ranges() -> None:
    assert merkle.perfect_subtrees(0, 0) == []
    assert merkle.perfect_subtrees(0, 7) == [(2, 0), (1, 2), (0, 6)]
    assert merkle.perfect_subtrees(16, 31) == [(3, 2), (2, 6), (1, 14), (0, 30)]
    assert merkle.perfect_subtrees(3, 8) == [(0, 3), (2, 1)]  # unaligned: tiling only
    with pytest.raises(ValueError):
        merkle.perfect_subtrees(5, 4)


# -- leaf encoding -----------------------------------------------------------------------------


def test_event_leaf_data_is_the_documented_encoding() -> None:
    state = b'{"a": 1}\n\x00\xff'
    data = proofcheck.event_leaf_data(
        42, "6BA7B810-9DAD-11D1-80B4-00C04FD430C8", 3, "ledger.domain:Account.Opened", state
    )
    assert data == (
        b"ledger-event-v1\n42\n6ba7b810-9dad-11d1-80b4-00c04fd430c8\n3\n"
        b"ledger.domain:Account.Opened\n" + state
    )
    assert merkle.leaf_hash(data) == _sha(b"\x00" + data)
    assert "ledger-event-v1" in (proofcheck.__doc__ or "")
    with pytest.raises(ValueError):
        proofcheck.event_leaf_data(1, "not-a-uuid", 1, "t", b"")
    with pytest.raises(ValueError):
        proofcheck.event_leaf_data(1, "6ba7b810-9dad-11d1-80b4-00c04fd430c8", 1, "a\nb", b"")
    with pytest.raises(ValueError):
        proofcheck.event_leaf_data(-1, "6ba7b810-9dad-11d1-80b4-00c04fd430c8", 1, "t", b"")


def test_proofcheck_imports_only_the_standard_library_and_cryptography() -> None:
    tree = ast.parse(Path(proofcheck.__file__).read_text(encoding="utf-8"))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import"
            assert node.module is not None
            roots.add(node.module.split(".")[0])
    roots.discard("__future__")
    assert roots - set(sys.stdlib_module_names) == {"cryptography"}


# -- signed heads and the command line ---------------------------------------------------------

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC_HEX = KEY.public_key().public_bytes_raw().hex()
OTHER_PUBLIC_HEX = Ed25519PrivateKey.generate().public_key().public_bytes_raw().hex()


def sign_head(size: int, timestamp: str = "2024-03-01T09:00:00+00:00") -> dict[str, Any]:
    root_hex = BIG_TREE.root(size).hex()
    message = proofcheck.head_message(size, root_hex, timestamp)
    return {
        "tree_size": size,
        "root_hash": root_hex,
        "timestamp": timestamp,
        "signature": KEY.sign(message).hex(),
    }


def test_head_message_is_canonical() -> None:
    root_hex = "ab" * 32
    assert proofcheck.head_message(7, root_hex, "2024-03-01T09:00:00Z") == (
        b"ledger-tree-head-v1\n7\n" + root_hex.encode() + b"\n2024-03-01T09:00:00Z"
    )
    for bad in (
        (-1, root_hex, "2024-03-01T09:00:00Z"),
        (True, root_hex, "2024-03-01T09:00:00Z"),
        (7, root_hex.upper(), "2024-03-01T09:00:00Z"),
        (7, root_hex[:-2], "2024-03-01T09:00:00Z"),
        (7, root_hex, "yesterday"),
        (7, root_hex, "2024-03-01T09:00:00Z\n"),
    ):
        with pytest.raises(ValueError):
            proofcheck.head_message(*bad)


def test_verify_signed_head() -> None:
    head = sign_head(17)
    assert proofcheck.verify_signed_head(head, PUBLIC_HEX)
    assert not proofcheck.verify_signed_head(head, OTHER_PUBLIC_HEX)
    changes: list[tuple[str, Any]] = [
        ("tree_size", 18),
        ("tree_size", 16),
        ("tree_size", "17"),
        ("root_hash", BIG_TREE.root(18).hex()),
        ("root_hash", head["root_hash"].upper()),
        ("timestamp", "2024-03-01T09:00:01+00:00"),
        ("signature", KEY.sign(b"something else").hex()),
        ("signature", head["signature"][:-2]),
        ("signature", "zz"),
        ("signature", None),
    ]
    for key, value in changes:
        assert not proofcheck.verify_signed_head({**head, key: value}, PUBLIC_HEX), key
    for key in head:
        assert not proofcheck.verify_signed_head(
            {k: v for k, v in head.items() if k != key}, PUBLIC_HEX
        )
    with pytest.raises(ValueError):
        proofcheck.verify_signed_head(head, "00" * 31)
    with pytest.raises(ValueError):
        proofcheck.verify_signed_head(head, "not hex")


def inclusion_doc(index: int, size: int) -> dict[str, Any]:
    return {
        "kind": "inclusion",
        "leaf_hash": BIG_LEAVES[index].hex(),
        "index": index,
        "tree_size": size,
        "proof": [h.hex() for h in BIG_TREE.inclusion_proof(index, size)],
        "head": sign_head(size),
    }


def consistency_doc(old: int, new: int) -> dict[str, Any]:
    return {
        "kind": "consistency",
        "old_head": sign_head(old, "2024-03-01T09:00:00+00:00"),
        "new_head": sign_head(new, "2024-03-02T09:00:00+00:00"),
        "proof": [h.hex() for h in BIG_TREE.consistency_proof(old, new)],
    }


def run_main(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], doc: Any, key: str = PUBLIC_HEX
) -> tuple[int, str]:
    path = tmp_path / "proof.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    code = proofcheck.main([str(path), "--public-key", key])
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out  # exactly one line
    return code, out.strip()


def test_cli_accepts_valid_proofs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for doc in (
        inclusion_doc(5, 8),
        inclusion_doc(0, 1),
        inclusion_doc(200, 299),
        consistency_doc(6, 8),
        consistency_doc(0, 8),
        consistency_doc(8, 8),
        consistency_doc(97, 300),
    ):
        code, out = run_main(tmp_path, capsys, doc)
        assert code == 0, out
        assert out.startswith("OK: "), out


def _tampered_docs() -> list[tuple[str, Any]]:
    def edit(doc: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        doc = json.loads(json.dumps(doc))
        change(doc)
        return doc

    inc, con = inclusion_doc(5, 99), consistency_doc(37, 99)
    bit = "1" if inc["proof"][0][0] == "0" else "0"
    return [
        (
            "flipped proof hash",
            edit(inc, lambda d: d["proof"].__setitem__(0, bit + d["proof"][0][1:])),
        ),
        ("dropped proof hash", edit(inc, lambda d: d["proof"].pop())),
        ("added proof hash", edit(inc, lambda d: d["proof"].append("00" * 32))),
        ("wrong index", edit(inc, lambda d: d.__setitem__("index", 4))),
        ("wrong leaf", edit(inc, lambda d: d.__setitem__("leaf_hash", BIG_LEAVES[4].hex()))),
        ("size mismatch", edit(inc, lambda d: d.__setitem__("tree_size", 98))),
        ("head size changed", edit(inc, lambda d: d["head"].__setitem__("tree_size", 98))),
        ("head root changed", edit(inc, lambda d: d["head"].__setitem__("root_hash", "00" * 32))),
        ("head signed for another size", edit(inc, lambda d: d.__setitem__("head", sign_head(98)))),
        (
            "head time changed",
            edit(inc, lambda d: d["head"].__setitem__("timestamp", "2030-01-01")),
        ),
        ("no head", edit(inc, lambda d: d.pop("head"))),
        ("bad hex", edit(inc, lambda d: d["proof"].__setitem__(0, "xyz"))),
        ("unknown kind", edit(inc, lambda d: d.__setitem__("kind", "exclusion"))),
        ("consistency flipped", edit(con, lambda d: d["proof"].__setitem__(0, "00" * 32))),
        ("consistency truncated", edit(con, lambda d: d["proof"].pop())),
        (
            "swapped heads",
            edit(con, lambda d: d.update(old_head=d["new_head"], new_head=d["old_head"])),
        ),
        ("old head re-signed", edit(con, lambda d: d.__setitem__("old_head", sign_head(36)))),
        ("new head forged", edit(con, lambda d: d["new_head"].__setitem__("tree_size", 100))),
        ("not json", "{not json"),
        ("not an object", "[1, 2]"),
    ]


TAMPERED = _tampered_docs()


@pytest.mark.parametrize(("what", "doc"), TAMPERED, ids=[what for what, _ in TAMPERED])
def test_cli_rejects_tampered_proofs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str, doc: Any
) -> None:
    code, out = run_main(tmp_path, capsys, doc)
    assert code == 1, (what, out)
    assert out.startswith("FAILED: "), out


def test_cli_rejects_the_wrong_key_and_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_main(tmp_path, capsys, inclusion_doc(1, 5), OTHER_PUBLIC_HEX)
    assert (code, out.split(":")[0]) == (1, "FAILED")
    code, out = run_main(tmp_path, capsys, inclusion_doc(1, 5), "12")
    assert (code, out.split(":")[0]) == (1, "FAILED")
    assert proofcheck.main([str(tmp_path / "missing.json"), "--public-key", PUBLIC_HEX]) == 1
    assert capsys.readouterr().out.startswith("FAILED: ")


def test_proofcheck_runs_as_a_single_copied_file(tmp_path: Path) -> None:
    script = tmp_path / "proofcheck.py"
    shutil.copy(proofcheck.__file__, script)
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(consistency_doc(3, 7)), encoding="utf-8")
    doc = consistency_doc(3, 7)
    doc["proof"].reverse()
    bad.write_text(json.dumps(doc), encoding="utf-8")
    for path, code, prefix in ((good, 0, "OK: "), (bad, 1, "FAILED: ")):
        done = subprocess.run(
            [sys.executable, "-I", str(script), str(path), "--public-key", PUBLIC_HEX],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == code, done
        assert done.stdout.startswith(prefix) and done.stdout.count("\n") == 1, done
