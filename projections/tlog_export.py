"""`ledger export DIR`: the log's /log/ tree as files, laid out exactly as it is served
(checkpoint, checkpoints/, tile/, tile/entries/, keys), for any static file server.

Full tiles and full entry bundles never change: a file already there is kept, so running
the export again only adds what the log has grown by. Each file is written whole under a
temporary name, then renamed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from ledger.tlog.tiles import (
    ENTRIES,
    MAX_ENTRY_BYTES,
    TILE_HEIGHT,
    TILE_WIDTH,
    Tile,
    encode_bundle,
    tiles_for_size,
)
from projections import tlog

CHUNK_TILES = 64  # tiles read per query


class NothingSigned(Exception):
    pass


class MissingEvents(Exception):
    pass


@dataclass
class Exported:
    size: int = 0
    checkpoints: int = 0
    written: int = 0
    kept: int = 0
    too_large: list[str] = field(default_factory=list)


def write_file(path: Path, body: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(body)
    os.replace(temporary, path)


def export(
    conn: psycopg.Connection[Any],
    events_table: sql.Composable,
    directory: Path,
    keys: Sequence[str],
    progress: Callable[[int, int], None] | None = None,
) -> Exported:
    """Write the tree of the latest checkpoint (and every older checkpoint's partial
    tiles) into `directory`; `keys` are the verifier keys to publish beside it."""
    found = tlog.checkpoint(conn)
    if found is None:
        raise NothingSigned("nothing is signed yet: run `ledger seal` or `ledger serve`")
    size, latest = found
    done = Exported(size=size)
    every = tlog.all_checkpoints(conn)
    write_file(directory / "checkpoint", latest.encode())
    write_file(directory / "keys", "".join(k + "\n" for k in keys).encode())
    write_file(directory / "checkpoints" / "index", "".join(f"{s}\n" for s, _ in every).encode())
    for s, note in every:
        write_file(directory / "checkpoints" / str(s), note.encode())
    done.checkpoints = len(every)
    wanted = set(tiles_for_size(size))
    for s, _ in every:
        wanted |= {t for t in tiles_for_size(s) if not t.full}
    hashes = sorted(t for t in wanted)
    for start in range(0, len(hashes), CHUNK_TILES):
        _write_hash_tiles(conn, directory, hashes[start : start + CHUNK_TILES], done)
    bundles = sorted(Tile(ENTRIES, t.index, t.width) for t in wanted if t.level == 0)
    for start in range(0, len(bundles), CHUNK_TILES):
        _write_bundles(conn, events_table, directory, bundles[start : start + CHUNK_TILES], done)
        if progress is not None:
            progress(min(size, bundles[start].index * TILE_WIDTH + CHUNK_TILES * TILE_WIDTH), size)
    return done


def _missing(directory: Path, tiles: Sequence[Tile], done: Exported) -> list[Tile]:
    """The tiles to write: partial ones always, full ones unless already there."""
    out = []
    for t in tiles:
        if t.full and (directory / t.path).exists():
            done.kept += 1
        else:
            out.append(t)
    return out


def _write_hash_tiles(
    conn: psycopg.Connection[Any], directory: Path, tiles: Sequence[Tile], done: Exported
) -> None:
    tiles = _missing(directory, tiles, done)
    for level in sorted({t.level for t in tiles}):
        mine = [t for t in tiles if t.level == level]
        first, last = mine[0].nodes().start, max(t.nodes().stop for t in mine)
        if level == 0:
            query = "SELECT leaf_index, hash FROM merkle_leaves WHERE leaf_index >= %s"
            rows = conn.execute(query + " AND leaf_index < %s", (first, last)).fetchall()
        else:
            query = "SELECT idx, hash FROM merkle_nodes WHERE level = %s AND idx >= %s AND idx < %s"
            rows = conn.execute(query, (TILE_HEIGHT * level, first, last)).fetchall()
        found = {int(r[0]): bytes(r[1]) for r in rows}
        for t in mine:
            write_file(directory / t.path, b"".join(found[i] for i in t.nodes()))
            done.written += 1


def _write_bundles(
    conn: psycopg.Connection[Any],
    events_table: sql.Composable,
    directory: Path,
    bundles: Sequence[Tile],
    done: Exported,
) -> None:
    bundles = _missing(directory, bundles, done)
    if not bundles:
        return
    span = Tile(ENTRIES, bundles[0].index, 1)
    last = max(b.nodes().stop for b in bundles)
    query, _ = tlog.entries_query(events_table, span)
    rows = conn.execute(query, (span.nodes().start, last, 0)).fetchall()
    first = span.nodes().start
    if len(rows) != last - first:
        raise MissingEvents(f"sealed events missing from the log among leaves {first}-{last - 1}:"
                            " run `ledger verify`")  # fmt: skip
    entries = _leaf_data(rows)
    for b in bundles:
        mine = entries[b.nodes().start - first : b.nodes().stop - first]
        if any(len(e) > MAX_ENTRY_BYTES for e in mine):
            done.too_large.append(b.path)  # an event older than the limit: no bundle holds it
            continue
        write_file(directory / b.path, encode_bundle(mine))
        done.written += 1


def _leaf_data(rows: Sequence[Any]) -> list[bytes]:
    from ledger.proofcheck import event_leaf_data

    return [event_leaf_data(int(r[0]), str(r[1]), int(r[2]), str(r[3]), bytes(r[4])) for r in rows]
