"""Sealing, proofs and verification of the Merkle log, against raw hashing and raw reads
measured in the same run.

The data set is the demo (`ledger demo`) scaled to `--accounts` (2,000: about 70,000
events; `--quick`: 300, about 10,000), loaded through `Ledger.submit` with the demo's
simulated clock into the schema `bench_integrity_<accounts>`. `--keep` leaves that schema
in place and the next run reuses it; by default it is dropped at the end. (The live
measurement appends to it, so a kept data set grows by a few thousand events per run.)
The sealer's tables go into a scratch schema, dropped at the end; its signing key is one
generated for the run (no key file is read or written).

1. Sealing, each `--repeats` times, interleaved so that drift falls on all alike:

   - raw read: the log paged with plain psycopg, as the sealer reads it (1,000 a query);
   - raw SHA-256: `hashlib` over the leaf data of every event (`event_leaf_data`, built
     beforehand), SHA-256(0x00 || data), then over every perfect subtree above them,
     SHA-256(0x01 || left || right): the hashing the sealer must do, and nothing else;
   - leaf_of + MerkleTree.append: the sealer's own code for that, a page at a time, into
     a dict instead of PostgreSQL (its CPU work without the database);
   - `Sealer.catch_up()` of the whole log from an empty tree (read, hash, write leaves and
     nodes, move the position, sign heads), reset before each repeat.

2. Live lag: a steady write load of `--rate` `PublishPost` commands/s for `--seconds` s
   (on accounts registered, verified, signed and approved for the run under a demo
   provider, from `--writers` threads, on a fixed schedule). First without a sealer: the
   commit latency of `Ledger.execute`, and the wake-up floor of any follower: a thread
   that LISTENs on the log's channel and reads the head position on each notification.
   Then with a `Sealer` following the log in a background thread of this process: per
   command, the time from `execute` returning to the `merkle` position reaching the
   command's position, polled every `--poll-ms` ms from another connection (exact to
   about one poll interval); and how many tree heads it signs a second.

3. Proofs at `--leaves` (1,000,000) leaves: a tree of synthetic leaves built in memory
   and copied into `merkle_leaves` / `merkle_nodes` of another scratch schema, with
   `--heads` signed heads at random sizes (and the full size). Then `--proofs` calls of
   `inclusion_proof` for random leaves in the full tree and of `consistency_proof` between
   random pairs of signed sizes, each proof checked with `ledger.proofcheck`. Beside them:
   one primary-key SELECT on `merkle_nodes` (the floor of each of a proof's reads; a few
   timed after each proof call, so both meet the same conditions), how many reads a proof
   takes (the node reads of `MerkleTree` plus the head and leaf lookups), and the same
   proofs computed from the tree in memory.

4. Verification, in the same repeats, of the log the sealer just sealed: `verify_log` over
   `stored_events`, `stored_leaves` and `all_heads` (recompute every leaf and every signed
   root), beside a raw psycopg read of the same events and leaves, and the raw SHA-256.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import random
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eventsourcing.persistence import Notification
from psycopg import sql

from bench.common import (
    LIVE_ACCOUNTS,
    PositionWatch,
    Seen,
    Writer,
    Written,
    events_per_second,
    events_query,
    fixed_key,
    load_demo,
    log,
    notification,
    paced,
    pages,
    quantiles,
    server_name,
    server_version,
)
from ledger import Database, Ledger
from ledger import commands as c
from ledger.merkle import DictNodeStore, MerkleTree, root
from ledger.proofcheck import (
    event_leaf_data,
    verify_consistency,
    verify_inclusion,
    verify_signed_head,
)
from ledger.signing import Signer
from ledger.vault import Vault
from projections.integrity import (
    all_heads,
    consistency_proof,
    inclusion_proof,
    stored_events,
    stored_leaves,
    verify_log,
)
from projections.sealer import DDL, Sealer, leaf_of

PAGE = 1000  # the sealer's page (projections.runner.PAGE_SIZE)
VERIFY_PAGE = 5000  # the page of stored_events / stored_leaves
VAULT_KEY = fixed_key("bench.integrity")
SEED = 7  # of the proofs' random choices
SELECTS = 5  # primary-key SELECTs timed after each proof


def connect(db: Database, schema: str) -> psycopg.Connection[Any]:
    return db.connect(schema, autocommit=True)


# ----- 1 and 4: sealing and verification -----------------------------------------------


LEAVES_QUERY = sql.SQL(
    "SELECT leaf_index, position, hash FROM merkle_leaves WHERE leaf_index > %s"
    " ORDER BY leaf_index LIMIT %s"
)


def read_events(conn: psycopg.Connection[Any], events_table: sql.Composable) -> int:
    return sum(len(rows) for rows in pages(conn, events_query(events_table), PAGE))


def read_events_and_leaves(conn: psycopg.Connection[Any], events_table: sql.Composable) -> int:
    """What verify_log reads, with psycopg alone: the events, then the leaves."""
    n = sum(len(rows) for rows in pages(conn, events_query(events_table), VERIFY_PAGE))
    leaves = sum(len(rows) for rows in pages(conn, LEAVES_QUERY, VERIFY_PAGE))
    assert leaves == n, (leaves, n)
    return n


def hash_tree(data: Sequence[bytes]) -> list[list[bytes]]:
    """Every perfect subtree of the tree over `data`, level by level (level 0: the leaf
    hashes), with hashlib alone: the ~2n SHA-256 calls of sealing n leaves."""
    sha256 = hashlib.sha256
    levels = [[sha256(b"\x00" + d).digest() for d in data]]
    while len(below := levels[-1]) > 1:
        levels.append(
            [
                sha256(b"\x01" + below[i] + below[i + 1]).digest()
                for i in range(0, len(below) - 1, 2)
            ]
        )
    return levels


def raw_hash(data: Sequence[bytes]) -> int:
    hash_tree(data)
    return len(data)


def seal_in_memory(events: Sequence[Notification]) -> int:
    """The sealer's hashing code, a page at a time, with a dict for a node store."""
    tree = MerkleTree(DictNodeStore())
    size = 0
    for i in range(0, len(events), PAGE):
        hashes = [leaf_of(n) for n in events[i : i + PAGE]]
        tree.store.put_many(tree.append(hashes, size))
        size += len(hashes)
    return size


def reset(conn: psycopg.Connection[Any]) -> None:
    """An empty tree at position zero (the sealer's schema on `conn`'s search path)."""
    with conn.transaction():
        conn.execute("TRUNCATE merkle_leaves, merkle_nodes, tree_heads")
        conn.execute("UPDATE projection_positions SET position = 0 WHERE name = 'merkle'")


def seal(conn: psycopg.Connection[Any], sealer: Sealer) -> int:
    reset(conn)
    return sealer.catch_up()


def verify(conn: psycopg.Connection[Any], events_table: sql.Composable, public_key: str) -> int:
    report = verify_log(
        stored_events(conn, events_table), stored_leaves(conn), all_heads(conn), public_key
    )
    if not report.ok or report.unsealed:
        raise RuntimeError(f"verify_log: {[str(f) for f in report.findings]}, {report.unsealed}")
    return report.events


def heads_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM tree_heads").fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class Catchup:
    events: int
    leaf_bytes: float  # mean size of an event's leaf data
    heads: int  # signed heads after the last sealing
    rates: dict[str, list[float]]  # events/s per measurement and repeat


def catch_up(
    args: argparse.Namespace,
    db: Database,
    ledger: Ledger,
    sealer: Sealer,
    seal_schema: str,
    public_key: str,
) -> Catchup:
    table = ledger.store.events_table
    with contextlib.ExitStack() as cleanup:
        conn = cleanup.enter_context(connect(db, seal_schema))
        rows = [r for page in pages(conn, events_query(table), PAGE) for r in page]
        events = [notification(r) for r in rows]
        data = [
            event_leaf_data(n.id, str(n.originator_id), n.originator_version, n.topic, n.state)
            for n in events
        ]
        assert hash_tree(data)[0] == [leaf_of(n) for n in events]  # the same bytes as sealed

        measurements: dict[str, Callable[[], int]] = {
            "read": lambda: read_events(conn, table),
            "hash": lambda: raw_hash(data),
            "memory": lambda: seal_in_memory(events),
            "seal": lambda: seal(conn, sealer),
            "vread": lambda: read_events_and_leaves(conn, table),
            "verify": lambda: verify(conn, table, public_key),
        }
        # Warm-up: connections, prepared statements, the server's cache.
        read_events(conn, table)
        seal(conn, sealer)
        rates: dict[str, list[float]] = {k: [] for k in measurements}
        for repeat in range(args.repeats):
            log(f"sealing and verifying: repeat {repeat + 1} of {args.repeats}")
            for key, run in measurements.items():
                rate, n = events_per_second(run)
                if n != len(events):
                    raise RuntimeError(f"{key}: {n} events, expected {len(events)}")
                rates[key].append(rate)
        heads = heads_count(conn)
    return Catchup(len(events), statistics.fmean(len(d) for d in data), heads, rates)


# ----- 2: live lag -----------------------------------------------------------------------


class HeadListener(Seen):
    """The wake-up floor of a follower: LISTEN on the log's channel and, on each
    notification, read the head position (and do nothing else)."""

    def __init__(self, db: Database, ledger: Ledger) -> None:
        super().__init__(db, "head-listener")
        self.channel = sql.Identifier(ledger.store.channel_name)
        self.query = sql.SQL("SELECT coalesce(max(notification_id), 0) FROM {}").format(
            ledger.store.events_table
        )

    def run(self) -> None:
        with self.db.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("LISTEN {}").format(self.channel))
            started = time.perf_counter()
            self.ready.set()
            while not self.stop.is_set():
                for _ in conn.notifies(timeout=0.1, stop_after=1):
                    pass
                row = conn.execute(self.query, prepare=True).fetchone()
                self.record(int(row[0]) if row else 0)
            self.span = (started, time.perf_counter())


@dataclass(frozen=True)
class Live:
    commands: int  # per phase
    rate_alone: float  # commands/s achieved without a sealer
    rate_followed: float  # and with one
    commit_alone: list[float]  # seconds in `execute`, without a sealer
    commit_followed: list[float]  # and with one
    woken: list[float]  # seconds from commit to a listener reading the position
    lag: list[float]  # seconds from commit to sealed
    poll: float  # mean seconds between polls of the sealer's position
    heads: int  # heads signed while following
    seconds: float  # from the start of the load to the last command sealed
    events: int  # events sealed in that time


def observed(
    watch: Seen, written: Sequence[Written], what: str, failed: Sequence[BaseException] = ()
) -> list[float]:
    watch.wait_for(written[-1].position)
    watch.stop.set()
    watch.join()
    if failed:
        raise failed[0]
    lags = [watch.lag(w) for w in written]
    seen = [x for x in lags if x is not None]
    if len(seen) < len(lags):
        log(f"warning: {len(lags) - len(seen)} positions not {what} within 30 s")
    return seen


def live(
    args: argparse.Namespace, db: Database, ledger: Ledger, sealer: Sealer, seal_schema: str
) -> Live:
    per_writer = max(1, LIVE_ACCOUNTS // args.writers)
    log(f"live: registering {per_writer} accounts for each of {args.writers} writers")
    writers = [Writer(ledger, per_writer) for _ in range(args.writers)]
    n = round(args.rate * args.seconds)

    def streams(total: int) -> list[list[c.Command]]:
        w = len(writers)
        return [x.commands(total // w + (k < total % w)) for k, x in enumerate(writers)]

    paced(ledger, streams(round(args.rate)), args.rate)  # warm-up: one second of the load
    log(f"live: {n} commands at {args.rate:g}/s without a sealer")
    listener = HeadListener(db, ledger)
    listener.start()
    listener.ready.wait()
    baseline, baseline_rate, _ = paced(ledger, streams(n), args.rate)
    woken = observed(listener, baseline, "seen by the listener")

    stop, ready = threading.Event(), threading.Event()
    failed: list[BaseException] = []

    def follow() -> None:
        try:
            sealer.follow(stop, ready.set)
        except BaseException as e:
            failed.append(e)
        finally:
            ready.set()

    follower = threading.Thread(target=follow, name="sealer", daemon=True)
    watch = PositionWatch(db, seal_schema, args.poll_ms / 1000, "merkle")
    follower.start()
    with connect(db, seal_schema) as conn:
        try:
            ready.wait()
            if failed:
                raise failed[0]
            heads_before = heads_count(conn)
            watch.start()
            watch.ready.wait()
            log(f"live: {n} commands at {args.rate:g}/s with the sealer following")
            written, written_rate, start = paced(ledger, streams(n), args.rate)
            lag = observed(watch, written, "sealed", failed)
            seconds = watch.times[-1] - start if watch.times else 0.0
            heads = heads_count(conn) - heads_before
            at = watch.positions[0]  # where the sealer was when the load began
        finally:
            watch.stop.set()
            stop.set()
            follower.join()
    if failed:
        raise failed[0]
    return Live(
        n,
        baseline_rate,
        written_rate,
        [w.latency for w in baseline],
        [w.latency for w in written],
        woken,
        lag,
        watch.mean_interval(),
        heads,
        seconds,
        written[-1].position - at,
    )


# ----- 3: proofs at a million leaves -----------------------------------------------------


class Levels:
    """A `NodeStore` over a tree held as lists of hashes, level by level; counts reads."""

    def __init__(self, levels: list[list[bytes]]) -> None:
        self.levels = levels
        self.reads = 0

    def get(self, level: int, index: int) -> bytes:
        self.reads += 1
        try:
            return self.levels[level][index]
        except IndexError:
            raise KeyError((level, index)) from None

    def put_many(self, nodes: Iterable[tuple[int, int, bytes]]) -> None:
        raise NotImplementedError("a read-only store")


@dataclass(frozen=True)
class Timed:
    seconds: list[float]  # per call, through PostgreSQL
    memory: list[float]  # per call, the same proof from the tree in memory
    reads: list[int]  # SQL reads per call
    verified: int


@dataclass(frozen=True)
class Proofs:
    leaves: int
    nodes: int
    sizes: list[int]  # of the signed heads
    build: float  # seconds to hash the tree in memory
    copy: float  # seconds to COPY it in (and index it)
    select: list[float]  # seconds per primary-key SELECT on merkle_nodes
    inclusion: Timed
    consistency: Timed


def copy_tree(conn: psycopg.Connection[Any], levels: list[list[bytes]]) -> None:
    """The tree into the sealer's tables with binary COPY, their keys built after."""
    with conn.transaction(), conn.cursor() as cur:
        for statement in DDL:
            cur.execute(statement)
        cur.execute(
            "ALTER TABLE merkle_leaves DROP CONSTRAINT merkle_leaves_pkey,"
            " DROP CONSTRAINT merkle_leaves_position_key"
        )
        cur.execute("ALTER TABLE merkle_nodes DROP CONSTRAINT merkle_nodes_pkey")
        leaves = "COPY merkle_leaves (leaf_index, position, hash) FROM STDIN (FORMAT BINARY)"
        with cur.copy(leaves) as copy:
            copy.set_types(["int8", "int8", "bytea"])
            for i, h in enumerate(levels[0]):
                copy.write_row((i, i + 1, h))
        nodes = "COPY merkle_nodes (level, idx, hash) FROM STDIN (FORMAT BINARY)"
        with cur.copy(nodes) as copy:
            copy.set_types(["int2", "int8", "bytea"])
            for level in range(1, len(levels)):
                for i, h in enumerate(levels[level]):
                    copy.write_row((level, i, h))
        cur.execute("ALTER TABLE merkle_leaves ADD PRIMARY KEY (leaf_index), ADD UNIQUE (position)")
        cur.execute("ALTER TABLE merkle_nodes ADD PRIMARY KEY (level, idx)")
    conn.execute("VACUUM ANALYZE merkle_leaves")
    conn.execute("VACUUM ANALYZE merkle_nodes")


def timed_calls(
    calls: int, call: Callable[[], Any], between: Callable[[], object] = lambda: None
) -> tuple[list[float], list[Any]]:
    """Seconds per call and the results; `between` runs after each call, untimed."""
    seconds, results = [], []
    for _ in range(calls):
        t = time.perf_counter()
        results.append(call())
        seconds.append(time.perf_counter() - t)
        between()
    return seconds, results


def proofs(args: argparse.Namespace, db: Database, schema: str) -> Proofs:
    rng = random.Random(SEED)
    n = args.leaves
    log(f"proofs: hashing a tree of {n} synthetic leaves")
    started = time.perf_counter()
    levels = hash_tree([i.to_bytes(8, "big") for i in range(n)])
    build = time.perf_counter() - started
    tree = MerkleTree(Levels(levels))
    assert tree.root(n) == root(levels[0])  # the level loop agrees with the RFC fold
    nodes = sum(len(level) for level in levels[1:])

    signer = Signer(Ed25519PrivateKey.generate())
    key = signer.public_key_hex
    sizes = sorted({*rng.sample(range(1, n), min(args.heads, n) - 1), n})
    roots = {size: tree.root(size) for size in sizes}
    db.create_schema(schema)
    with connect(db, schema) as conn:
        log(f"proofs: copying {n} leaves and {nodes} nodes into schema {schema}")
        started = time.perf_counter()
        copy_tree(conn, levels)
        copy = time.perf_counter() - started
        now = datetime.now(UTC)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO tree_heads (tree_size, root_hash, timestamp, signature)"
                " VALUES (%s, %s, %s, %s)",
                [
                    (h.tree_size, h.root_hash, h.timestamp, h.signature)
                    for h in (signer.sign(s, roots[s], now) for s in sizes)
                ],
            )

        # The floor: one node read, as `PgNodeStore.get` does it, timed between the proofs
        # (SELECTS after each) so that both meet the same conditions.
        query = "SELECT hash FROM merkle_nodes WHERE level = %s AND idx = %s"
        select: list[float] = []

        def selects() -> None:
            for _ in range(SELECTS):
                level = rng.randrange(1, len(levels))
                address = (level, rng.randrange(len(levels[level])))
                t = time.perf_counter()
                row = conn.execute(query, address).fetchone()
                select.append(time.perf_counter() - t)
                assert row is not None and bytes(row[0]) == levels[address[0]][address[1]]

        for _ in range(args.proofs // 10):  # warm-up
            selects()
        select.clear()

        def inclusion() -> Timed:
            indices = [rng.randrange(n) for _ in range(args.proofs)]
            todo = iter(indices)
            for i in indices[: args.proofs // 10]:  # warm-up
                inclusion_proof(conn, i + 1, n)
            seconds, results = timed_calls(
                args.proofs, lambda: inclusion_proof(conn, next(todo) + 1, n), selects
            )
            memory, reads, verified = [], [], 0
            for i, p in zip(indices, results, strict=True):
                store = Levels(levels)
                t = time.perf_counter()
                path = MerkleTree(store).inclusion_proof(i, n)
                memory.append(time.perf_counter() - t)
                reads.append(store.reads + 2)  # and the head, and the leaf by position
                leaf = bytes.fromhex(p["leaf_hash"])
                verified += (
                    verify_signed_head(p["head"], key)
                    and p["index"] == i
                    and leaf == levels[0][i]
                    and [x.hex() for x in path] == p["proof"]
                    and verify_inclusion(
                        leaf, i, n, [bytes.fromhex(x) for x in p["proof"]], roots[n]
                    )
                )
            return Timed(seconds, memory, reads, verified)

        def consistency() -> Timed:
            pairs = [tuple(sorted(rng.sample(sizes, 2))) for _ in range(args.proofs)]
            todo = iter(pairs)
            for old, new in pairs[: args.proofs // 10]:  # warm-up
                consistency_proof(conn, old, new)
            seconds, results = timed_calls(
                args.proofs, lambda: consistency_proof(conn, *next(todo)), selects
            )
            memory, reads, verified = [], [], 0
            for (old, new), p in zip(pairs, results, strict=True):
                store = Levels(levels)
                t = time.perf_counter()
                path = MerkleTree(store).consistency_proof(old, new)
                memory.append(time.perf_counter() - t)
                reads.append(store.reads + 2)  # and the two heads
                verified += (
                    verify_signed_head(p["old_head"], key)
                    and verify_signed_head(p["new_head"], key)
                    and [x.hex() for x in path] == p["proof"]
                    and p["old_head"]["root_hash"] == roots[old].hex()
                    and p["new_head"]["root_hash"] == roots[new].hex()
                    and verify_consistency(
                        old, new, roots[old], roots[new], [bytes.fromhex(x) for x in p["proof"]]
                    )
                )
            return Timed(seconds, memory, reads, verified)

        log(f"proofs: {args.proofs} inclusion and {args.proofs} consistency proofs")
        timed_inclusion, timed_consistency = inclusion(), consistency()
    return Proofs(n, nodes, sizes, build, copy, select, timed_inclusion, timed_consistency)


# ----- the run -------------------------------------------------------------------------


def print_proofs(p: Proofs) -> None:
    print(
        f"3. proofs at {p.leaves} leaves ({p.nodes} nodes; hashed in {p.build:.1f} s, "
        f"copied in and indexed in {p.copy:.1f} s), {len(p.sizes)} signed heads; "
        f"{len(p.inclusion.seconds)} calls each"
    )
    print(f"{'':<40}{'p50 ms':>12}{'p99 ms':>12}{'reads':>16}{'verified':>12}")
    q = quantiles(p.select)
    print(f"{'one primary-key SELECT (per read)':<40}{q[49] * 1000:>12.3f}{q[98] * 1000:>12.3f}")
    for label, t in (("inclusion_proof", p.inclusion), ("consistency_proof", p.consistency)):
        q, m = quantiles(t.seconds), quantiles(t.memory)
        reads = f"{statistics.fmean(t.reads):.1f} ({min(t.reads)}-{max(t.reads)})"
        verified = f"{t.verified}/{len(t.seconds)}"
        print(f"{label:<40}{q[49] * 1000:>12.3f}{q[98] * 1000:>12.3f}{reads:>16}{verified:>12}")
        floor = statistics.fmean(t.reads) * statistics.median(p.select)
        print(f"{'  floor: reads x SELECT p50':<40}{floor * 1000:>12.3f}")
        print(f"{'  the same proof from memory':<40}{m[49] * 1000:>12.3f}{m[98] * 1000:>12.3f}")


def check_proofs(p: Proofs) -> None:
    if p.inclusion.verified < len(p.inclusion.seconds) or p.consistency.verified < len(
        p.consistency.seconds
    ):
        raise SystemExit("some proofs did not verify")


def benchmark(
    args: argparse.Namespace, db: Database, schema: str, seal_schema: str, tree_schema: str
) -> None:
    if args.proofs_only:
        proving = proofs(args, db, tree_schema)
        print(
            f"Integrity benchmark (proofs only) - PostgreSQL {server_version(db)} {server_name(db)}"
        )
        print_proofs(proving)
        check_proofs(proving)
        return
    load_demo(db, schema, args.accounts, VAULT_KEY)
    with contextlib.ExitStack() as cleanup:
        ledger = Ledger.open(db, schema, vault=Vault(VAULT_KEY))
        cleanup.callback(ledger.close)
        signer = Signer(Ed25519PrivateKey.generate())
        sealer = Sealer(ledger, db, seal_schema, signer=signer)
        cleanup.callback(sealer.close)
        sealer.setup()
        sealing = catch_up(args, db, ledger, sealer, seal_schema, signer.public_key_hex)
        following = live(args, db, ledger, sealer, seal_schema)
    proving = proofs(args, db, tree_schema)

    print(
        f"Integrity benchmark - PostgreSQL {server_version(db)} {server_name(db)}, schema {schema}"
    )
    print(
        f"{sealing.events} events ({args.accounts} demo accounts), leaf data "
        f"{sealing.leaf_bytes:.0f} B mean; {args.repeats} repeats, interleaved\n"
    )

    rates = sealing.rates
    hashed = statistics.median(rates["hash"])

    def table(title: str, rows: Sequence[tuple[str, str]], read: str) -> None:
        print(title)
        print(f"{'median (min-max)':<40}{'events/s':>24}{'seconds':>10}{'/read':>8}{'/hash':>8}")
        for label, key in rows:
            r = rates[key]
            median = statistics.median(r)
            cell = f"{median:.0f} ({min(r):.0f}-{max(r):.0f})"
            print(
                f"{label:<40}{cell:>24}{sealing.events / median:>10.2f}"
                f"{median / statistics.median(rates[read]):>8.2f}{median / hashed:>8.2f}"
            )

    table(
        f"1. sealing the whole log from an empty tree, {PAGE} events a page",
        (
            ("raw read (psycopg)", "read"),
            ("raw SHA-256, leaves + nodes (hashlib)", "hash"),
            ("leaf_of + MerkleTree.append (memory)", "memory"),
            ("Sealer.catch_up", "seal"),
        ),
        "read",
    )
    print(f"heads signed by the last catch-up: {sealing.heads}\n")

    f = following
    print(
        f"2. live: {f.commands} PublishPost commands at {args.rate:g}/s for {args.seconds:g} s "
        f"from {args.writers} writer threads;\n"
        f"achieved {f.rate_alone:.0f}/s without, {f.rate_followed:.0f}/s with the sealer "
        f"following; its position polled every {f.poll * 1000:.2f} ms (mean)"
    )
    print(f"{'':<40}{'p50 ms':>12}{'p99 ms':>12}{'max ms':>10}")
    for label, values in (
        ("commit, no sealer (baseline)", f.commit_alone),
        ("commit -> listener woken (floor)", f.woken),
        ("commit, sealer following", f.commit_followed),
        ("commit -> sealed (lag)", f.lag),
    ):
        q = quantiles(values)
        print(f"{label:<40}{q[49] * 1000:>12.2f}{q[98] * 1000:>12.2f}{max(values) * 1000:>10.2f}")
    per_second = f.heads / f.seconds if f.seconds else 0.0
    print(
        f"heads signed: {f.heads} in {f.seconds:.1f} s, {per_second:.1f}/s "
        f"({f.events / max(f.heads, 1):.1f} events a head)\n"
    )

    print_proofs(proving)
    table(
        f"\n4. full verification of the sealed log against its {sealing.heads} signed heads",
        (
            ("raw read, events + leaves (psycopg)", "vread"),
            ("raw SHA-256, leaves + nodes (hashlib)", "hash"),
            ("verify_log", "verify"),
        ),
        "vread",
    )
    check_proofs(proving)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.integrity",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--accounts", type=int, default=2000, help="demo accounts (default 2000: ~70,000 events)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="sealing repeats (default 5)")
    parser.add_argument(
        "--rate", type=float, default=200, help="live write load, commands/s (default 200)"
    )
    parser.add_argument(
        "--seconds", type=float, default=20, help="live write load, seconds per phase (default 20)"
    )
    parser.add_argument(
        "--writers", type=int, default=4, help="live: writer threads sharing the load (default 4)"
    )
    parser.add_argument(
        "--poll-ms", type=float, default=1.0, help="live: position poll interval, ms (default 1)"
    )
    parser.add_argument(
        "--leaves", type=int, default=1_000_000, help="proofs: tree size (default 1,000,000)"
    )
    parser.add_argument("--heads", type=int, default=16, help="proofs: signed heads (default 16)")
    parser.add_argument(
        "--proofs", type=int, default=200, help="proofs: calls of each kind (default 200)"
    )
    parser.add_argument(
        "--proofs-only",
        action="store_true",
        help="only part 3, the proofs over a synthetic tree (e.g. --leaves 10000000)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the data set schema for the next run, which reuses it",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 300 accounts (~10,000 events), 2 repeats, 5 s live, 100,000 leaves",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.accounts, args.repeats, args.seconds, args.leaves = 300, 2, 5, 100_000
    if min(args.accounts, args.repeats, args.writers, args.rate, args.seconds, args.poll_ms) <= 0:
        parser.error(
            "--accounts, --repeats, --writers, --rate, --seconds and --poll-ms must be positive"
        )
    if args.leaves < 2 or args.heads < 2 or args.proofs < 1:
        parser.error("--leaves and --heads must be at least 2, --proofs at least 1")

    schema = f"bench_integrity_{args.accounts}"
    scratch = uuid.uuid4().hex[:12]
    seal_schema, tree_schema = f"bench_integrity_seal_{scratch}", f"bench_integrity_tree_{scratch}"
    with Database() as db:
        try:
            benchmark(args, db, schema, seal_schema, tree_schema)
        finally:
            db.drop_schema(seal_schema)
            db.drop_schema(tree_schema)
            if not args.keep:
                db.drop_schema(schema)


if __name__ == "__main__":
    main()
