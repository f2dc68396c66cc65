"""Reading the Merkle log: signed heads, inclusion and consistency proofs, and the full
verification of the stored events against every signed head."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from eventsourcing.persistence import Notification
from psycopg import sql

from ledger.merkle import CompactRange, DictNodeStore, MerkleTree
from ledger.proofcheck import event_leaf_data, leaf_hash, verify_signed_head
from ledger.store import log_page
from projections.sealer import leaf_of


class ProofError(ValueError):
    """A proof was asked for something no signed head covers."""


def head(conn: psycopg.Connection[Any], size: int | None = None) -> dict[str, Any] | None:
    """The signed head of that size, or the latest."""
    if size is None:
        query = "SELECT * FROM tree_heads ORDER BY tree_size DESC LIMIT 1"
        row = conn.execute(query).fetchone()
    else:
        row = conn.execute("SELECT * FROM tree_heads WHERE tree_size = %s", (size,)).fetchone()
    return _as_head(row) if row else None


def _as_head(row: Any) -> dict[str, Any]:
    values = (
        row
        if isinstance(row, dict)
        else dict(zip(("tree_size", "root_hash", "timestamp", "signature"), row, strict=True))
    )
    return {k: values[k] for k in ("tree_size", "root_hash", "timestamp", "signature")}


def _signed(conn: psycopg.Connection[Any], size: int) -> dict[str, Any]:
    found = head(conn, size)
    if found is None:
        raise ProofError(f"no signed tree head of size {size}")
    return found


_HEAD_AND_LEAF = """SELECT h.tree_size, h.root_hash, h.timestamp, h.signature,
    l.leaf_index, l.hash
    FROM (SELECT * FROM tree_heads {where} ORDER BY tree_size DESC LIMIT 1) h
    LEFT JOIN merkle_leaves l ON l.position = %(position)s"""


def inclusion_proof(
    conn: psycopg.Connection[Any], position: int, tree_size: int | None = None
) -> dict[str, Any]:
    """Proof that the event at a log position is in a signed tree (the latest by default).

    Two round trips: the head and the leaf together, then every node the proof needs."""
    where = "" if tree_size is None else "WHERE tree_size = %(size)s"
    row = conn.execute(
        _HEAD_AND_LEAF.format(where=where), {"position": position, "size": tree_size}
    ).fetchone()
    if row is None:
        if tree_size is not None:
            raise ProofError(f"no signed tree head of size {tree_size}")
        raise ProofError("nothing is sealed yet")
    values = list(row.values()) if isinstance(row, dict) else list(row)
    signed = _as_head(tuple(values[:4]))
    index, leaf = values[4], values[5]
    if index is None:
        raise ProofError(f"no sealed event at position {position}")
    if index >= signed["tree_size"]:
        raise ProofError(f"position {position} is not in the tree of size {signed['tree_size']}")
    proof = _prefetched(conn, lambda tree: tree.inclusion_proof(index, signed["tree_size"]))
    return {
        "kind": "inclusion",
        "position": position,
        "index": index,
        "leaf_hash": bytes(leaf).hex(),
        "tree_size": signed["tree_size"],
        "proof": [p.hex() for p in proof],
        "head": signed,
    }


def consistency_proof(conn: psycopg.Connection[Any], old: int, new: int) -> dict[str, Any]:
    """Proof that the signed tree of size `old` is a prefix of the one of size `new`."""
    if old > new:
        raise ProofError("the first tree must not be larger than the second")
    old_head, new_head = _signed(conn, old), _signed(conn, new)
    proof = _prefetched(conn, lambda tree: tree.consistency_proof(old, new))
    return {
        "kind": "consistency",
        "old_head": old_head,
        "new_head": new_head,
        "proof": [p.hex() for p in proof],
    }


class _Wanted:
    """A node store that only notes which nodes a proof reads (their places, not their
    hashes, decide which: the walk depends on the sizes alone)."""

    def __init__(self) -> None:
        self.nodes: list[tuple[int, int]] = []

    def get(self, level: int, index: int) -> bytes:
        self.nodes.append((level, index))
        return bytes(32)

    def put_many(self, nodes: Any) -> None:
        raise AssertionError("a proof writes nothing")


NODES = """SELECT 0 AS level, leaf_index AS idx, hash FROM merkle_leaves
    WHERE leaf_index = ANY(%(leaves)s)
    UNION ALL
    SELECT level, idx, hash FROM merkle_nodes
    WHERE (level, idx) IN (SELECT * FROM unnest(%(levels)s::smallint[], %(indexes)s::bigint[]))"""


def _prefetched(
    conn: psycopg.Connection[Any], prove: Callable[[MerkleTree], list[bytes]]
) -> list[bytes]:
    """Run a proof with every node it needs fetched in one query (log2 n of them, which
    one at a time cost as many round trips)."""
    wanted = _Wanted()
    prove(MerkleTree(wanted))
    leaves = [i for level, i in wanted.nodes if level == 0]
    inner = [(level, i) for level, i in wanted.nodes if level > 0]
    rows = conn.execute(
        NODES,
        {"leaves": leaves, "levels": [lv for lv, _ in inner], "indexes": [i for _, i in inner]},
    ).fetchall()
    store = DictNodeStore()
    store.put_many(
        (r["level"], r["idx"], bytes(r["hash"]))
        if isinstance(r, dict)
        else (r[0], r[1], bytes(r[2]))
        for r in rows
    )
    return prove(MerkleTree(store))


# ----- full verification ---------------------------------------------------------------


@dataclass
class Finding:
    position: int | None
    problem: str

    def __str__(self) -> str:
        where = f"position {self.position}" if self.position is not None else "the log"
        return f"{where}: {self.problem}"


@dataclass
class Report:
    events: int = 0
    heads_checked: int = 0
    unsealed: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def verify_log(
    events: Iterator[Notification],
    leaves: Iterator[tuple[int, int, bytes]],
    heads: Sequence[dict[str, Any]],
    public_key_hex: str,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Recompute every leaf from the stored events and every signed root from them.

    `events` in position order; `leaves` (leaf index, position, hash) in index order, as
    stored; `heads` every signed head to check. Stops at the first difference in the
    events and names its position: altered (the leaf differs), missing (a sealed position
    has no event), extra (an event inside the sealed range was never sealed), reordered
    (shows as altered at the first swapped position).
    """
    report = Report()
    by_size: dict[int, list[dict[str, Any]]] = {}
    for h in heads:
        if not verify_signed_head(h, public_key_hex):
            report.findings.append(
                Finding(None, f"the head of size {h.get('tree_size')} has a bad signature")
            )
        else:
            by_size.setdefault(int(h["tree_size"]), []).append(h)
    largest = max(by_size, default=0)
    roots = CompactRange()
    stored = next(leaves, None)
    for event in events:
        report.events += 1
        if progress and report.events % 10_000 == 0:
            progress(report.events)
        if stored is None:
            report.unsealed += 1
            continue
        _, position, sealed_hash = stored
        if event.id < position:
            report.findings.append(Finding(event.id, "an event that was never sealed (extra)"))
            return report
        if event.id > position:
            report.findings.append(Finding(position, "a sealed event is missing"))
            return report
        leaf = leaf_of(event)
        if leaf != bytes(sealed_hash):
            report.findings.append(
                Finding(event.id, "the event differs from what was sealed (altered or reordered)")
            )
            return report
        roots.push(leaf)
        _check_heads(roots, by_size.get(roots.size, ()), report)
        stored = next(leaves, None)
    if stored is not None:
        report.findings.append(Finding(stored[1], "a sealed event is missing"))
    elif roots.size < largest:
        report.findings.append(Finding(None, f"the log ends before signed size {largest}"))
    return report


def _check_heads(roots: CompactRange, heads: Sequence[dict[str, Any]], report: Report) -> None:
    for h in heads:
        report.heads_checked += 1
        if roots.root().hex() != h["root_hash"]:
            report.findings.append(
                Finding(None, f"the recomputed root differs from signed head {h['tree_size']}")
            )


def stored_events(
    conn: psycopg.Connection[Any], events_table: sql.Composable, page: int = 5000
) -> Iterator[Notification]:
    after = 0
    while True:
        rows = log_page(conn, events_table, after, page)
        yield from rows
        if len(rows) < page:
            return
        after = rows[-1].id


def stored_leaves(
    conn: psycopg.Connection[Any], page: int = 5000
) -> Iterator[tuple[int, int, bytes]]:
    after = -1
    while True:
        rows = conn.execute(
            "SELECT leaf_index, position, hash FROM merkle_leaves WHERE leaf_index > %s"
            " ORDER BY leaf_index LIMIT %s",
            (after, page),
        ).fetchall()
        yield from ((r[0], r[1], bytes(r[2])) for r in rows)
        if len(rows) < page:
            return
        after = rows[-1][0]


def all_heads(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT tree_size, root_hash, timestamp, signature FROM tree_heads ORDER BY tree_size"
    ).fetchall()
    return [_as_head(r) for r in rows]


def stored_leaf(
    conn: psycopg.Connection[Any], events_table: sql.Composable, position: int
) -> dict[str, Any] | None:
    """The leaf of the event stored at `position` as it is stored now (which a tampered
    store no longer matches the sealed leaf hash of): its leaf data, withheld (None) when
    the event carries a sealed identity, which never leaves the ledger, and its hash."""
    rows = log_page(conn, events_table, position - 1, 1)
    if not rows or rows[0].id != position:
        return None
    n = rows[0]
    data = event_leaf_data(n.id, str(n.originator_id), n.originator_version, n.topic, n.state)
    return {
        "leaf_data": None if _carries_identity(n.state) else data,
        "leaf_hash": leaf_hash(data).hex(),
    }


def _carries_identity(state: bytes) -> bool:
    try:
        payload = json.loads(state)
    except ValueError:
        return b"identity" in state  # unreadable: withhold it if it might hold one
    return isinstance(payload, dict) and "identity" in payload
