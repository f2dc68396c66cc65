"""Merkle tree mathematics of RFC 6962 §2.1 / RFC 9162 §2.1, over SHA-256.

Hashing, with domain separation between leaves and interior nodes::

    leaf hash  = SHA-256(0x00 || data)
    node hash  = SHA-256(0x01 || left || right)
    MTH({})    = SHA-256("")                       (the empty tree)
    MTH(D[n])  = node_hash(MTH(D[0:k]), MTH(D[k:n]))   k = largest power of 2 < n

Storage: an append-only tree is kept as its *perfect subtrees*. Node ``(level, index)`` is
the MTH of the leaves ``[index * 2**level, (index + 1) * 2**level)``; it exists (is stored)
once all ``2**level`` of those leaves have been appended, and never changes after that. Level
0 holds the leaf hashes. Every subtree an RFC 9162 audit path or consistency proof refers to
is either such a perfect subtree or the tree's non-perfect right edge, which is the right
fold of at most ``log2(n)`` perfect subtrees (the binary decomposition of its size). So a
root, an inclusion proof or a consistency proof costs O(log n) node reads.

Everything here is pure: functions over bytes and a `NodeStore` the caller provides.
The leaf encoding of ledger events (``event_leaf_data``) lives in `ledger.proofcheck`, the
stand-alone verifier that auditors copy; this module does not repeat it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Protocol

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "DictNodeStore",
    "MerkleTree",
    "NodeStore",
    "leaf_hash",
    "node_hash",
    "perfect_subtrees",
    "root",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
"""Length in bytes of every hash: leaf hashes, node hashes, roots, proof elements."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""MTH of the empty tree: SHA-256 of the empty string."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """The hash of a leaf: SHA-256(0x00 || data)."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


class CompactRange:
    """The MTH of a growing list of leaf hashes, kept as a stack of perfect subtrees.

    Each pushed leaf merges with equal-sized neighbours, so the stack holds the perfect
    subtrees of the binary decomposition of `size`, largest first; their right fold is
    the MTH. O(1) amortised per leaf, O(log n) memory.
    """

    def __init__(self) -> None:
        self.stack: list[tuple[int, bytes]] = []  # (level, hash), levels strictly decreasing
        self.size = 0

    def push(self, leaf: bytes) -> None:
        self.size += 1
        level, h = 0, leaf
        while self.stack and self.stack[-1][0] == level:
            h = node_hash(self.stack.pop()[1], h)
            level += 1
        self.stack.append((level, h))

    def root(self) -> bytes:
        if not self.stack:
            return EMPTY_ROOT
        acc = self.stack[-1][1]
        for _, h in reversed(self.stack[:-1]):
            acc = node_hash(h, acc)
        return acc


def root(leaves: Sequence[bytes]) -> bytes:
    """The Merkle Tree Hash (MTH) of a list of *leaf hashes*, in O(n) time."""
    compact = CompactRange()
    for leaf in leaves:
        compact.push(leaf)
    return compact.root()


def perfect_subtrees(start: int, end: int) -> list[tuple[int, int]]:
    """The ``(level, index)`` addresses of the perfect subtrees that tile leaves [start, end).

    Greedy from the left: at each position take the largest aligned perfect subtree that
    fits. For the ranges that occur in RFC 9162 proofs (``start`` is a multiple of a power of
    two >= ``end - start``) the levels come out strictly decreasing, and the right fold of
    their hashes is the MTH of the range.
    """
    if not 0 <= start <= end:
        raise ValueError(f"bad leaf range [{start}, {end})")
    out: list[tuple[int, int]] = []
    pos = start
    while pos < end:
        level = (end - pos).bit_length() - 1
        if pos:
            level = min(level, (pos & -pos).bit_length() - 1)
        out.append((level, pos >> level))
        pos += 1 << level
    return out


def _largest_power_of_two_below(n: int) -> int:
    """The k of the RFC split: the largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class NodeStore(Protocol):
    """Where a `MerkleTree` keeps its perfect-subtree nodes.

    ``get`` must return the hash stored at ``(level, index)`` and raise `KeyError` when no
    such node is stored. ``put_many`` stores nodes; storing a node that is already present
    with the same hash must be harmless (nodes never change once complete).
    """

    def get(self, level: int, index: int) -> bytes: ...

    def put_many(self, nodes: Iterable[tuple[int, int, bytes]]) -> None: ...


class DictNodeStore:
    """An in-memory `NodeStore`, for tests and small tools."""

    def __init__(self) -> None:
        self.nodes: dict[tuple[int, int], bytes] = {}

    def get(self, level: int, index: int) -> bytes:
        return self.nodes[(level, index)]

    def put_many(self, nodes: Iterable[tuple[int, int, bytes]]) -> None:
        for level, index, h in nodes:
            self.nodes[(level, index)] = h


class MerkleTree:
    """An append-only RFC 6962 tree whose perfect subtrees live in a `NodeStore`.

    The tree does not know its own size: every method takes the size the caller has
    committed to (typically the size of a signed tree head), so one store serves every
    historical view of the log. All hashes are computed from stored perfect subtrees only.
    """

    def __init__(self, store: NodeStore) -> None:
        self.store = store

    # -- writing ---------------------------------------------------------------------------

    def append(self, leaf_hashes: Sequence[bytes], size: int) -> list[tuple[int, int, bytes]]:
        """The nodes to store when ``leaf_hashes`` are appended to a tree of ``size`` leaves.

        Returns ``(level, index, hash)`` for every new leaf (level 0) and every perfect
        subtree the new leaves complete, children before parents. Nothing is written: the
        caller stores the result with ``put_many`` (typically in the same transaction that
        records the leaves). Reads at most ``log2(size)`` existing nodes, the left siblings
        on the old tree's right edge.
        """
        if size < 0:
            raise ValueError(f"negative tree size {size}")
        new: dict[tuple[int, int], bytes] = {}
        out: list[tuple[int, int, bytes]] = []

        def node(level: int, index: int) -> bytes:
            found = new.get((level, index))
            return found if found is not None else self.store.get(level, index)

        for offset, h in enumerate(leaf_hashes):
            if len(h) != HASH_SIZE:
                raise ValueError(f"leaf hash of {len(h)} bytes, expected {HASH_SIZE}")
            index = size + offset
            new[(0, index)] = h
            out.append((0, index, h))
            level = 0
            # Leaf `index` completes the subtree one level up while it is a right child.
            while index & 1:
                parent = node_hash(node(level, index - 1), node(level, index))
                level, index = level + 1, index >> 1
                new[(level, index)] = parent
                out.append((level, index, parent))
        return out

    def extend(self, leaf_hashes: Sequence[bytes], size: int) -> int:
        """`append` and store the result; returns the new size."""
        self.store.put_many(self.append(leaf_hashes, size))
        return size + len(leaf_hashes)

    # -- reading ---------------------------------------------------------------------------

    def _range_hash(self, start: int, end: int) -> bytes:
        """MTH of leaves [start, end) for a range of the RFC recursion (see perfect_subtrees)."""
        parts = perfect_subtrees(start, end)
        acc = self.store.get(*parts[-1])
        for level, index in reversed(parts[:-1]):
            acc = node_hash(self.store.get(level, index), acc)
        return acc

    def root(self, size: int) -> bytes:
        """MTH of the first ``size`` leaves, from at most ``log2(size) + 1`` stored nodes."""
        if size < 0:
            raise ValueError(f"negative tree size {size}")
        if size == 0:
            return EMPTY_ROOT
        return self._range_hash(0, size)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """The audit path PATH(index, D[0:size]) of RFC 9162 §2.1.3.1, leaf end first."""
        if not 0 <= index < size:
            raise ValueError(f"leaf index {index} is not in a tree of size {size}")
        siblings: list[tuple[int, int]] = []  # leaf ranges, root end first
        lo, hi = 0, size
        while hi - lo > 1:
            mid = lo + _largest_power_of_two_below(hi - lo)
            if index < mid:
                siblings.append((mid, hi))
                hi = mid
            else:
                siblings.append((lo, mid))
                lo = mid
        return [self._range_hash(a, b) for a, b in reversed(siblings)]

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """PROOF(old_size, D[0:new_size]) of RFC 9162 §2.1.4.1; empty when there is nothing
        to prove (``old_size`` is 0 or equal to ``new_size``)."""
        if not 0 <= old_size <= new_size:
            raise ValueError(f"no consistency proof from size {old_size} to {new_size}")
        if old_size in (0, new_size):
            return []
        tail: list[tuple[int, int]] = []  # leaf ranges, root end first
        lo, hi = 0, new_size
        whole = True  # the SUBPROOF flag b: D[lo:old_size] is a complete old tree
        while old_size != hi:
            mid = lo + _largest_power_of_two_below(hi - lo)
            if old_size <= mid:
                tail.append((mid, hi))
                hi = mid
            else:
                tail.append((lo, mid))
                lo = mid
                whole = False
        ranges = ([] if whole else [(lo, hi)]) + tail[::-1]
        return [self._range_hash(a, b) for a, b in ranges]


# -- verification (RFC 9162 §2.1.3.2 and §2.1.4.2) -------------------------------------------


def _hash_list_ok(hashes: Sequence[bytes]) -> bool:
    return all(isinstance(h, bytes) and len(h) == HASH_SIZE for h in hashes)


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether ``proof`` shows the leaf with hash ``leaf_hash`` at ``index`` in the tree of
    ``size`` leaves whose MTH is ``root`` (RFC 9162 §2.1.3.2)."""
    if not _hash_list_ok([leaf_hash, root, *proof]):
        return False
    # 1. The index must be inside the tree.
    if not 0 <= index < size:
        return False
    # 2.-3.
    fn, sn = index, size - 1
    r = leaf_hash
    # 4.
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    # 5.
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether ``proof`` shows that the tree of ``old_size`` leaves with MTH ``old_root`` is a
    prefix of the tree of ``new_size`` leaves with MTH ``new_root`` (RFC 9162 §2.1.4.2).

    The cases the RFC algorithm leaves to its preconditions: ``old_size > new_size`` fails;
    equal sizes need an empty proof and equal roots; an old size of 0 needs an empty proof
    and ``old_root`` to be the empty tree's hash (any new tree extends the empty one).
    """
    if not _hash_list_ok([old_root, new_root, *proof]):
        return False
    if not 0 <= old_size <= new_size:
        return False
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if old_size == new_size:
        return not proof and old_root == new_root
    # 1.
    if not proof:
        return False
    path = list(proof)
    # 2.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    # 3.
    fn, sn = old_size - 1, new_size - 1
    # 4.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5.
    fr = sr = path[0]
    # 6.
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # 7.
    return fr == old_root and sr == new_root and sn == 0
