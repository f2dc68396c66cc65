"""The log as C2SP tlog-tiles read it: signed checkpoints (append-only), hash tiles and
entry bundles, all from the sealer's tables (`projections.sealer`).

A tile's hashes are nodes the sealer already keeps: level-0 tiles are leaf hashes
(`merkle_leaves`), a level-L tile's hashes are the perfect subtrees of height 8*L
(`merkle_nodes`). An entry is the leaf data of one event (`ledger.proofcheck`'s
`event_leaf_data`), read from the event store.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from ledger.proofcheck import event_leaf_data
from ledger.tlog.checkpoint import Checkpoint, sign_checkpoint
from ledger.tlog.note import Signer
from ledger.tlog.tiles import Tile

DDL = (
    """CREATE TABLE IF NOT EXISTS checkpoints (
        tree_size bigint PRIMARY KEY,
        root_hash bytea NOT NULL CHECK (length(root_hash) = 32),
        note text NOT NULL,
        signed_at timestamptz NOT NULL DEFAULT now())""",
    # Append-only: a signed checkpoint is never changed or taken back.
    """CREATE OR REPLACE FUNCTION checkpoints_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$ BEGIN
        RAISE EXCEPTION 'checkpoints are append-only: % of size %', TG_OP, OLD.tree_size;
        END $$""",
    """CREATE OR REPLACE TRIGGER checkpoints_append_only
        BEFORE UPDATE OR DELETE ON checkpoints
        FOR EACH ROW EXECUTE FUNCTION checkpoints_append_only()""",
    """CREATE OR REPLACE FUNCTION checkpoints_no_truncate() RETURNS trigger
        LANGUAGE plpgsql AS $$ BEGIN
        RAISE EXCEPTION 'checkpoints are append-only: TRUNCATE';
        END $$""",
    """CREATE OR REPLACE TRIGGER checkpoints_no_truncate
        BEFORE TRUNCATE ON checkpoints
        FOR EACH STATEMENT EXECUTE FUNCTION checkpoints_no_truncate()""",
    # Witnesses' cosignature lines, as the ledger's witness client receives them.
    """CREATE TABLE IF NOT EXISTS cosignatures (
        tree_size bigint NOT NULL,
        witness text NOT NULL,
        line text NOT NULL,
        received_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tree_size, witness))""",
    # The size each witness last cosigned, read by the witnessing worker and /metrics.
    "CREATE INDEX IF NOT EXISTS cosignatures_by_witness ON cosignatures (witness, tree_size)",
    # Wakes the witnessing worker (projections.witnessing) when a checkpoint commits.
    """CREATE OR REPLACE FUNCTION checkpoints_notify() RETURNS trigger
        LANGUAGE plpgsql AS $$ BEGIN
        PERFORM pg_notify('ledger_checkpoints', TG_TABLE_SCHEMA); RETURN NULL;
        END $$""",
    """CREATE OR REPLACE TRIGGER checkpoints_notify
        AFTER INSERT ON checkpoints
        FOR EACH ROW EXECUTE FUNCTION checkpoints_notify()""",
)
TABLES = ("checkpoints", "cosignatures")


class CheckpointConflict(Exception):
    """A second, different root for a size already signed: never signed."""


def sign(conn: psycopg.Connection[Any], signer: Signer, size: int, root: bytes) -> str:
    """Sign and store the checkpoint of `size` (in the caller's transaction); the note.

    Signing the same root again returns the stored note; a different root for a size
    already signed raises `CheckpointConflict` (and the table's key would refuse it)."""
    row = conn.execute(
        "SELECT root_hash, note FROM checkpoints WHERE tree_size = %s", (size,)
    ).fetchone()
    if row is not None:
        if bytes(row[0]) != root:
            raise CheckpointConflict(
                f"a checkpoint of size {size} is signed already, with another root"
            )
        return str(row[1])
    note = sign_checkpoint(Checkpoint(signer.name, size, root), [signer])
    conn.execute(
        "INSERT INTO checkpoints (tree_size, root_hash, note) VALUES (%s, %s, %s)",
        (size, root, note),
    )
    return note


LATEST = """SELECT c.tree_size, c.note, coalesce(
        (SELECT string_agg(s.line || E'\\n', '' ORDER BY s.witness)
         FROM cosignatures s WHERE s.tree_size = c.tree_size), '') AS cosigned
    FROM checkpoints c {where} ORDER BY c.tree_size DESC LIMIT 1"""


def with_cosignatures(note: str, lines: str) -> str:
    """A signed note with more signature lines appended (each ending in a newline)."""
    return note + lines


def checkpoint(conn: psycopg.Connection[Any], size: int | None = None) -> tuple[int, str] | None:
    """The latest checkpoint (or the one of `size`) with every cosignature held."""
    where = "" if size is None else "WHERE c.tree_size = %s"
    row = conn.execute(
        sql.SQL(LATEST.format(where=where)), () if size is None else (size,)
    ).fetchone()
    if row is None:
        return None
    return int(row[0]), with_cosignatures(row[1], row[2])


def all_checkpoints(conn: psycopg.Connection[Any]) -> list[tuple[int, str]]:
    """Every checkpoint, oldest first, each with its cosignatures."""
    rows = conn.execute(
        """SELECT c.tree_size, c.note || coalesce((SELECT string_agg(s.line || E'\\n', ''
            ORDER BY s.witness) FROM cosignatures s WHERE s.tree_size = c.tree_size), '')
           FROM checkpoints c ORDER BY c.tree_size"""
    ).fetchall()
    return [(int(r[0]), str(r[1])) for r in rows]


# A resource is served once the latest checkpoint covers it, never before.
_SIGNED = " AND %s <= (SELECT coalesce(max(tree_size), 0) FROM checkpoints)"


def tile_query(tile: Tile) -> tuple[sql.Composable, tuple[int, ...]]:
    """The statement reading a hash tile's hashes, in order, and its parameters: no row
    unless the latest checkpoint covers the whole tile."""
    nodes, signed = tile.nodes(), tile.leaves_needed()
    if tile.level == 0:
        query = "SELECT hash FROM merkle_leaves WHERE leaf_index >= %s AND leaf_index < %s"
        return sql.SQL(query + _SIGNED + " ORDER BY leaf_index"), (nodes.start, nodes.stop, signed)
    query = "SELECT hash FROM merkle_nodes WHERE level = %s AND idx >= %s AND idx < %s"
    return (
        sql.SQL(query + _SIGNED + " ORDER BY idx"),
        (tile.node_level, nodes.start, nodes.stop, signed),
    )


def tile_bytes(rows: Sequence[Any], tile: Tile) -> bytes | None:
    """A tile's body from its rows; None unless every hash is there."""
    hashes = [bytes(r["hash"] if isinstance(r, dict) else r[0]) for r in rows]
    return b"".join(hashes) if len(hashes) == tile.width else None


def entries_query(
    events_table: sql.Composable, tile: Tile
) -> tuple[sql.Composed, tuple[int, int, int]]:
    """The statement reading an entry bundle's events, in leaf order, and its parameters:
    no row unless the latest checkpoint covers the whole bundle."""
    nodes = tile.nodes()
    query = sql.SQL(
        "SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state"
        " FROM merkle_leaves l JOIN {events} e ON e.notification_id = l.position"
        " WHERE l.leaf_index >= %s AND l.leaf_index < %s" + _SIGNED + " ORDER BY l.leaf_index"
    ).format(events=events_table)
    return query, (nodes.start, nodes.stop, tile.leaves_needed())


def entries_of(rows: Sequence[Any], tile: Tile) -> list[bytes] | None:
    """An entry bundle's entries (leaf data) from its rows; None unless all are there."""
    if len(rows) != tile.width:
        return None
    keys = ("notification_id", "originator_id", "originator_version", "topic", "state")
    out = []
    for r in rows:
        position, originator, version, topic, state = (
            [r[k] for k in keys] if isinstance(r, dict) else r
        )
        out.append(event_leaf_data(position, str(originator), version, topic, bytes(state)))
    return out


def read_tile(conn: psycopg.Connection[Any], tile: Tile) -> bytes | None:
    query, params = tile_query(tile)
    return tile_bytes(conn.execute(query, params).fetchall(), tile)


def read_entries(
    conn: psycopg.Connection[Any], events_table: sql.Composable, tile: Tile
) -> list[bytes] | None:
    query, params = entries_query(events_table, tile)
    return entries_of(conn.execute(query, params).fetchall(), tile)


PROOF_HEADER = "c2sp.org/tlog-proof@v1"


def tlog_proof(
    conn: psycopg.Connection[Any], events_table: sql.Composable, position: int,
    size: int | None = None,
) -> str:  # fmt: skip
    """A c2sp.org/tlog-proof@v1 text for the event at `position`, in the latest checkpoint
    (or the one of `size`) with its cosignatures. Its `extra` line is the event's entry
    (leaf data), from which a verifier recomputes the leaf hash."""
    from projections.integrity import ProofError, inclusion_proof

    found = checkpoint(conn, size)
    if found is None:
        raise ProofError(
            "nothing is sealed yet" if size is None else f"no checkpoint of size {size}"
        )
    signed_size, note = found
    proof = inclusion_proof(conn, position, signed_size)
    rows = conn.execute(
        sql.SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state FROM {}"
            " WHERE notification_id = %s"
        ).format(events_table),
        (position,),
    ).fetchall()
    (entry,) = entries_of(rows, Tile(0, 0, 1)) or [b""]
    lines = [
        PROOF_HEADER,
        "extra " + base64.b64encode(entry).decode(),
        f"index {proof['index']}",
        *(base64.b64encode(bytes.fromhex(h)).decode() for h in proof["proof"]),
        "",
    ]
    return "\n".join(lines) + "\n" + note
