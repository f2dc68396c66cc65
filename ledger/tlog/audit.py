"""The auditor's check of a C2SP tiled log, read from any source of its files (an export
folder or a /log/ URL): every entry against its level-0 tile, every tile against the
tiles below it, every checkpoint's signature and root against the tree the entries make,
so each checkpoint is checked against every one before it. Two checkpoints that cannot
both be of this log (one size, two roots; a root the entries do not make) are a fork.

Pure: it reads through a `fetch(path) -> bytes` the caller provides, and hands each
verified bundle of entries to a callback (the replay into the auditor's database).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ledger.merkle import HASH_SIZE, node_hash
from ledger.tlog.checkpoint import Checkpoint, CheckpointError, open_checkpoint
from ledger.tlog.note import NoteError, Verifier
from ledger.tlog.tiles import ENTRIES, TILE_WIDTH, Tile, decode_bundle, subtree_hash

Fetch = Callable[[str], bytes]
OnEntries = Callable[[int, Sequence[bytes]], None]  # (first leaf index, entries)


class Missing(Exception):
    """A resource the source does not have."""


@dataclass
class Finding:
    kind: str  # entry, tile, checkpoint, fork
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


@dataclass
class Report:
    size: int = 0
    entries: int = 0
    tiles: int = 0
    checkpoints: int = 0
    hashed_bytes: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def add(self, kind: str, message: str) -> None:
        self.findings.append(Finding(kind, message))


@dataclass(frozen=True)
class Signed:
    checkpoint: Checkpoint
    note: str
    where: str  # what it was read from, for the report


def read_checkpoints(
    fetch: Fetch, verifiers: Sequence[Verifier], kept: Iterable[tuple[str, str]], report: Report
) -> tuple[Signed | None, list[Signed]]:
    """The latest checkpoint and every other one (the source's, then those kept apart),
    each verified; what fails is a finding."""

    def opened(note: str, where: str) -> Signed | None:
        try:
            checkpoint, _ = open_checkpoint(note, verifiers)
        except (NoteError, CheckpointError, UnicodeDecodeError) as e:
            report.findings.append(Finding("checkpoint", f"{where}: {e}"))
            return None
        report.checkpoints += 1
        return Signed(checkpoint, note, where)

    latest = opened(_text(fetch, "checkpoint"), "checkpoint")
    others: list[Signed] = []
    try:
        sizes = _text(fetch, "checkpoints/index").split()
    except Missing:
        sizes = []
    for size in sizes:
        found = opened(_text(fetch, f"checkpoints/{size}"), f"checkpoints/{size}")
        if found is not None and str(found.checkpoint.size) != size:
            report.findings.append(Finding("checkpoint", f"checkpoints/{size} is of another size"))
        elif found is not None:
            others.append(found)
    for where, note in kept:
        found = opened(note, where)
        if found is not None:
            others.append(found)
    return latest, others


def _text(fetch: Fetch, path: str) -> str:
    return fetch(path).decode("utf-8")


def forks(checkpoints: Sequence[Signed], report: Report) -> None:
    """Two checkpoints of one size with two roots."""
    by_size: dict[int, Signed] = {}
    for s in checkpoints:
        first = by_size.setdefault(s.checkpoint.size, s)
        if first.checkpoint.root != s.checkpoint.root:
            report.findings.append(Finding("fork", (
                f"{first.where} and {s.where} both sign size {s.checkpoint.size}, with"
                f" different roots:\n{first.note}\n{s.note}")))  # fmt: skip


class _Roots:
    """The roots of the growing tree at the sizes wanted, from perfect subtrees pushed
    left to right (the RFC 6962 tree of a prefix is the right fold of its decomposition)."""

    def __init__(self) -> None:
        self.stack: list[tuple[int, bytes]] = []

    def push(self, level: int, h: bytes) -> None:
        while self.stack and self.stack[-1][0] == level:
            h = node_hash(self.stack.pop()[1], h)
            level += 1
        self.stack.append((level, h))

    def root(self, extra: Sequence[bytes] = ()) -> bytes:
        """The root with `extra` leaf hashes pushed after (without keeping them)."""
        saved = list(self.stack)
        for leaf in extra:
            self.push(0, leaf)
        acc = self.stack[-1][1]
        for _, h in reversed(self.stack[:-1]):
            acc = node_hash(h, acc)
        self.stack = saved
        return acc


def audit(
    fetch: Fetch,
    verifiers: Sequence[Verifier],
    kept: Iterable[tuple[str, str]] = (),
    on_entries: OnEntries | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Report:
    """Check the log a source holds; `kept` are checkpoints held apart (name, note)."""
    report = Report()
    latest, others = read_checkpoints(fetch, verifiers, kept, report)
    if latest is None:
        return report
    every = [latest, *others]
    forks(every, report)
    size = report.size = latest.checkpoint.size
    beyond = [s for s in every if s.checkpoint.size > size]
    for s in beyond:
        report.findings.append(Finding("fork", (
            f"{s.where} signs size {s.checkpoint.size}, beyond the log's latest checkpoint"
            f" ({size}): the log was rolled back or forked")))  # fmt: skip
    wanted: dict[int, list[Signed]] = {}
    for s in every:
        if 0 < s.checkpoint.size <= size:
            wanted.setdefault(s.checkpoint.size, []).append(s)
    partials = _partial_widths(wanted, size)
    below = _level_zero(fetch, size, wanted, partials, report, on_entries, progress)
    level = 1
    while size >> (8 * level):
        below = _level(fetch, level, size, below, partials, report)
        level += 1
    return report


def _partial_widths(wanted: dict[int, list[Signed]], size: int) -> dict[tuple[int, int], set[int]]:
    """The partial tiles older checkpoints need, by (level, index): their widths."""
    out: dict[tuple[int, int], set[int]] = {}
    for m in wanted:
        level = 0
        while m >> (8 * level):
            count = m >> (8 * level)
            if count % TILE_WIDTH and m != size:
                out.setdefault((level, count // TILE_WIDTH), set()).add(count % TILE_WIDTH)
            level += 1
    return out


def _fetch_tile(fetch: Fetch, tile: Tile, report: Report) -> bytes | None:
    try:
        body = fetch(tile.path)
    except Missing:
        report.findings.append(Finding("tile", f"{tile.path} is missing"))
        return None
    if tile.level != ENTRIES and len(body) != tile.byte_length:
        report.findings.append(
            Finding("tile", f"{tile.path}: {len(body)} bytes, not {tile.byte_length}")
        )
        return None
    report.tiles += 1
    return body


def _check_partials(
    fetch: Fetch, level: int, index: int, body: bytes,
    partials: dict[tuple[int, int], set[int]], report: Report,
) -> None:  # fmt: skip
    for width in sorted(partials.get((level, index), ())):
        older = _fetch_tile(fetch, Tile(level, index, width), report)
        if older is not None and older != body[: width * HASH_SIZE]:
            partial, full = Tile(level, index, width).path, Tile(level, index).path
            report.add("tile", f"{partial} differs from {full}")


def _level_zero(
    fetch: Fetch, size: int, wanted: dict[int, list[Signed]],
    partials: dict[tuple[int, int], set[int]], report: Report,
    on_entries: OnEntries | None, progress: Callable[[int, int], None] | None,
) -> list[bytes]:  # fmt: skip
    """Every entry against its level-0 tile, and every checkpoint's root; the hashes of
    the full level-0 tiles (what level 1 must hold)."""
    roots = _Roots()
    full_hashes: list[bytes] = []
    for index in range((size + TILE_WIDTH - 1) // TILE_WIDTH):
        first = index * TILE_WIDTH
        width = min(TILE_WIDTH, size - first)
        tile = Tile(0, index, width)
        body = _fetch_tile(fetch, tile, report)
        bundle = _fetch_tile(fetch, Tile(ENTRIES, index, width), report)
        if body is None or bundle is None:
            return full_hashes
        try:
            entries = decode_bundle(bundle)
        except ValueError as e:
            report.findings.append(Finding("entry", f"{Tile(ENTRIES, index, width).path}: {e}"))
            return full_hashes
        if len(entries) != width:
            where = Tile(ENTRIES, index, width).path
            report.add("entry", f"{where} holds {len(entries)} entries, not {width}")
            return full_hashes
        leaves = [hashlib.sha256(b"\x00" + e).digest() for e in entries]
        report.hashed_bytes += sum(len(e) for e in entries)
        for i, leaf in enumerate(leaves):
            if leaf != body[i * HASH_SIZE : (i + 1) * HASH_SIZE]:
                report.findings.append(Finding(
                    "entry", f"entry {first + i} ({_position(entries[i])}) does not hash to"
                    f" its leaf in {tile.path}: altered"))  # fmt: skip
                return full_hashes
        _check_partials(fetch, 0, index, body, partials, report)
        for m in sorted(k for k in wanted if first < k <= first + width):
            root = roots.root(leaves[: m - first])
            for s in wanted[m]:
                if root != s.checkpoint.root:
                    report.add(
                        "fork",
                        f"{s.where} (size {m}) signs a root the log's entries"
                        f" do not make: rewritten after it was signed, or forked\n{s.note}",
                    )
        if width == TILE_WIDTH:
            tile_hash = subtree_hash(body)
            full_hashes.append(tile_hash)
            roots.push(8, tile_hash)
        report.entries += width
        if on_entries is not None:
            on_entries(first, entries)
        if progress is not None:
            progress(report.entries, size)
    return full_hashes


def _level(
    fetch: Fetch, level: int, size: int, expected: list[bytes],
    partials: dict[tuple[int, int], set[int]], report: Report,
) -> list[bytes]:  # fmt: skip
    """The tiles of one level against the hashes of the full tiles below; the hashes of
    this level's full tiles."""
    count = size >> (8 * level)
    out: list[bytes] = []
    for index in range((count + TILE_WIDTH - 1) // TILE_WIDTH):
        width = min(TILE_WIDTH, count - index * TILE_WIDTH)
        tile = Tile(level, index, width)
        body = _fetch_tile(fetch, tile, report)
        if body is None:
            return out
        want = b"".join(expected[index * TILE_WIDTH : index * TILE_WIDTH + width])
        if body != want:
            report.findings.append(Finding("tile", f"{tile.path} differs from the tiles below it"))
            return out
        _check_partials(fetch, level, index, body, partials, report)
        if width == TILE_WIDTH:
            out.append(subtree_hash(body))
    return out


def _position(entry: bytes) -> str:
    """'position N' from an entry's header, for the report."""
    parts = entry.split(b"\n", 2)
    if len(parts) > 1 and parts[1].isdigit():
        return f"position {int(parts[1])}"
    return "no position"
