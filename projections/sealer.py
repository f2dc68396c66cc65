"""The sealer: follows the log exactly once (the projections' pattern) and appends each
event's leaf hash to a Merkle tree kept in PostgreSQL, signing a tree head once a second
while events arrive, and whenever asked (`sign_now`).

Tables: `merkle_leaves` (leaf index, log position, leaf hash), `merkle_nodes` (every
complete perfect subtree above the leaves, so a proof reads O(log n) rows),
`tree_heads` (signed heads) and, beside each head, its C2SP checkpoint (`checkpoints`,
append-only; `projections.tlog`). The position row `merkle` in `projection_positions` moves in
the same transaction as the leaves.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import psycopg
from eventsourcing.persistence import Notification

from ledger.application import Ledger
from ledger.database import Database, data_dir
from ledger.merkle import MerkleTree
from ledger.proofcheck import event_leaf_data, leaf_hash
from ledger.signing import SignedHead, Signer
from projections import tlog
from projections.base import Projection
from projections.runner import Projector, Step

SIGN_EVERY_SECONDS = 1.0

DDL = (
    """CREATE TABLE IF NOT EXISTS merkle_leaves (
        leaf_index bigint PRIMARY KEY,
        position bigint NOT NULL UNIQUE,
        hash bytea NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS merkle_nodes (
        level smallint NOT NULL,
        idx bigint NOT NULL,
        hash bytea NOT NULL,
        PRIMARY KEY (level, idx))""",
    """CREATE TABLE IF NOT EXISTS tree_heads (
        tree_size bigint PRIMARY KEY,
        root_hash text NOT NULL,
        timestamp text NOT NULL,
        signature text NOT NULL)""",
)

# Registered like a projection so the runner's setup, positions and versions apply.
MERKLE = Projection(
    name="merkle",
    version=1,
    tables=("merkle_leaves", "merkle_nodes", "tree_heads", *tlog.TABLES),
    ddl=DDL + tlog.DDL,
    handlers={},
)


def leaf_of(n: Notification) -> bytes:
    return leaf_hash(
        event_leaf_data(n.id, str(n.originator_id), n.originator_version, n.topic, n.state)
    )


class PgNodeStore:
    """The tree's nodes in the sealer's tables, read through one connection."""

    def __init__(self, conn: psycopg.Connection[object]) -> None:
        self.conn = conn

    def get(self, level: int, index: int) -> bytes:
        if level == 0:
            query = "SELECT hash FROM merkle_leaves WHERE leaf_index = %s"
            row = self.conn.execute(query, (index,)).fetchone()
        else:
            query = "SELECT hash FROM merkle_nodes WHERE level = %s AND idx = %s"
            row = self.conn.execute(query, (level, index)).fetchone()
        if row is None:
            raise KeyError(f"no Merkle node at level {level}, index {index}")
        return bytes(row[0])  # type: ignore[index]

    def put_many(self, nodes: Iterable[tuple[int, int, bytes]]) -> None:
        rows = [n for n in nodes if n[0] > 0]
        with self.conn.cursor() as cur:
            cur.executemany("INSERT INTO merkle_nodes (level, idx, hash) VALUES (%s, %s, %s)", rows)


def tree_size(conn: psycopg.Connection[object]) -> int:
    row = conn.execute("SELECT coalesce(max(leaf_index) + 1, 0) FROM merkle_leaves").fetchone()
    return int(row[0])  # type: ignore[index]


def last_head_size(conn: psycopg.Connection[object]) -> int:
    row = conn.execute("SELECT coalesce(max(tree_size), 0) FROM tree_heads").fetchone()
    return int(row[0])  # type: ignore[index]


class Sealer(Projector):
    def __init__(
        self,
        ledger: Ledger,
        database: Database,
        schema: str | None = None,
        signer: Signer | None = None,
        page_size: int | None = None,
    ) -> None:
        super().__init__(ledger, database, schema, (MERKLE,), page_size)
        self.signer = signer or Signer.from_environment(data_dir())
        self.checkpoint_signer = self.signer.checkpoint_signer()
        self.signed_at = 0.0

    def step(self, until: dict[str, int] | None = None) -> Step:
        conn = self.conn
        with conn.transaction():
            row = conn.execute(
                "SELECT position FROM projection_positions WHERE name = 'merkle' FOR UPDATE"
            ).fetchone()
            at = int(row[0])  # type: ignore[index]
            size = tree_size(conn)
            page = self._read(conn, at, self.page_size)
            if page:
                self._append(conn, page, size)
                size += len(page)
                conn.execute(
                    "UPDATE projection_positions SET position = %s, updated_at = now()"
                    " WHERE name = 'merkle'",
                    (page[-1].id,),
                )
            # At most one head a second; the follow loop wakes at least every second,
            # so the last events of a burst are signed within about a second.
            due = time.monotonic() - self.signed_at >= SIGN_EVERY_SECONDS
            if due and size > last_head_size(conn):
                self._sign(conn, size)
        return Step(len(page), page[-1].id if page else at)

    def _append(
        self, conn: psycopg.Connection[object], page: Sequence[Notification], size: int
    ) -> None:
        hashes = [leaf_of(n) for n in page]
        store = PgNodeStore(conn)
        nodes = MerkleTree(store).append(hashes, size)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO merkle_leaves (leaf_index, position, hash) VALUES (%s, %s, %s)",
                [(size + i, n.id, h) for i, (n, h) in enumerate(zip(page, hashes, strict=True))],
            )
        store.put_many(nodes)

    def _sign(self, conn: psycopg.Connection[object], size: int) -> SignedHead:
        root = MerkleTree(PgNodeStore(conn)).root(size)
        head = self.signer.sign(size, root, datetime.now(UTC))
        conn.execute(
            "INSERT INTO tree_heads (tree_size, root_hash, timestamp, signature)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (tree_size) DO NOTHING",
            (head.tree_size, head.root_hash, head.timestamp, head.signature),
        )
        tlog.sign(conn, self.checkpoint_signer, size, root)
        self.signed_at = time.monotonic()
        return head

    def sign_now(self) -> int:
        """Catch up, then sign a head for the current size if none exists; the size."""
        self.catch_up()
        conn = self.conn
        with conn.transaction():
            conn.execute("SELECT 1 FROM projection_positions WHERE name = 'merkle' FOR UPDATE")
            size = tree_size(conn)
            if size > last_head_size(conn):
                self._sign(conn, size)
        return size
