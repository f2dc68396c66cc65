"""Witnessing: sends each new signed checkpoint to every configured witness
(`LEDGER_WITNESSES`, see `ledger.tlog.witness_client`) with a consistency proof from the
size that witness last cosigned, and keeps the cosignatures it receives in `cosignatures`
(beside `checkpoints`, `projections.tlog`), so `/log/checkpoint` serves them.

It runs as its own child process of `ledger serve` (`ledger project --only witnesses`),
not inside the sealer: a witness that is slow, down or refusing only delays its own
cosignatures and never holds a sealing transaction. Each witness is followed by its own
thread, so one witness's timeouts never delay another's cosignature. Two servers'
workers take turns through a session advisory lock per witness.

It wakes on a notification (`LISTEN ledger_checkpoints`, sent by a trigger when a
checkpoint commits) and looks anyway once a second. Nothing it holds in memory outlives a
restart that matters: the size a witness last cosigned is read back from `cosignatures`,
and a 409 from the witness corrects it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import psycopg

from ledger.database import Database, one_line
from ledger.merkle import MerkleTree
from ledger.tlog.witness_client import (
    WitnessConflict,
    WitnessEndpoint,
    WitnessError,
    add_checkpoint,
    parse_witnesses,
)
from projections.sealer import PgNodeStore

log = logging.getLogger("ledger.witnessing")

CHANNEL = "ledger_checkpoints"  # notified by a trigger on checkpoints (projections.tlog)
WAKE_SECONDS = 1.0  # looks anyway this often: a safety net under LISTEN
FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
DEFAULT_TIMEOUT_SECONDS = 10.0


def endpoints_from_env() -> list[WitnessEndpoint]:
    return parse_witnesses(os.environ.get("LEDGER_WITNESSES", ""))


def timeout_from_env() -> float:
    return float(os.environ.get("LEDGER_WITNESS_TIMEOUT", DEFAULT_TIMEOUT_SECONDS))


def latest_checkpoint(conn: psycopg.Connection[Any]) -> tuple[int, str] | None:
    """The latest signed checkpoint (size, note), without cosignatures."""
    row = conn.execute(
        "SELECT tree_size, note FROM checkpoints ORDER BY tree_size DESC LIMIT 1"
    ).fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


def cosigned_size(conn: psycopg.Connection[Any], witness: str) -> int:
    row = conn.execute(
        "SELECT coalesce(max(tree_size), 0) FROM cosignatures WHERE witness = %s", (witness,)
    ).fetchone()
    return int(row[0]) if row else 0


def store_cosignature(conn: psycopg.Connection[Any], size: int, witness: str, line: str) -> None:
    conn.execute(
        "INSERT INTO cosignatures (tree_size, witness, line) VALUES (%s, %s, %s)"
        " ON CONFLICT (tree_size, witness) DO NOTHING",
        (size, witness, line.rstrip("\n")),
    )


class Witnessing:
    def __init__(
        self,
        database: Database,
        schema: str,
        endpoints: Sequence[WitnessEndpoint] | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self.database = database
        self.schema = schema
        self.endpoints = list(endpoints if endpoints is not None else endpoints_from_env())
        self.timeout_s = timeout_s if timeout_s is not None else timeout_from_env()

    def follow(self, stop: threading.Event) -> None:
        """Follow every witness until ``stop`` is set."""
        threads = [
            threading.Thread(target=self._supervise, args=(e, stop), name=f"witness {e.name}")
            for e in self.endpoints
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _supervise(self, endpoint: WitnessEndpoint, stop: threading.Event) -> None:
        """Reconnect with backoff whenever the database connection is lost."""
        backoff = FIRST_BACKOFF_SECONDS
        while not stop.is_set():
            try:
                with self.database.connect(
                    self.schema, autocommit=True, application_name="ledger-witnessing"
                ) as conn:
                    conn.execute("SET lock_timeout = '5s'")
                    conn.execute("SET statement_timeout = '30s'")
                    backoff = FIRST_BACKOFF_SECONDS
                    self._lead(conn, endpoint, stop)
            except psycopg.Error as e:
                log.warning("witness %s: database: %s; again in %.1f s",
                            endpoint.name, one_line(e), backoff)  # fmt: skip
                stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            except Exception:  # a bug or a tree short of the checkpoint: logged, retried
                log.exception("witness %s: failed; again in %.1f s", endpoint.name, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    def _lead(
        self, conn: psycopg.Connection[Any], endpoint: WitnessEndpoint, stop: threading.Event
    ) -> None:
        lock = "SELECT pg_try_advisory_lock(hashtext(current_schema() || '.witness ' || %s))"
        while not stop.is_set():
            row = conn.execute(lock, (endpoint.name,)).fetchone()
            if row and row[0]:
                break
            stop.wait(1.0)  # another server's worker follows this witness
        else:
            return
        conn.execute(f"LISTEN {CHANNEL}")
        log.info("witness %s: following (%s)", endpoint.name, endpoint.url)
        self._run(conn, endpoint, stop)

    def _run(
        self, conn: psycopg.Connection[Any], endpoint: WitnessEndpoint, stop: threading.Event
    ) -> None:
        held = cosigned_size(conn, endpoint.name)
        backoff = FIRST_BACKOFF_SECONDS
        while not stop.is_set():
            latest = latest_checkpoint(conn)
            if latest is None or latest[0] <= held:
                # Until a checkpoint commits (notifications that came while busy are
                # kept by psycopg and end the wait at once).
                for _ in conn.notifies(timeout=WAKE_SECONDS, stop_after=1):
                    pass
                continue
            size, note = latest
            try:
                held = self.submit(conn, endpoint, note, size, held)
                backoff = FIRST_BACKOFF_SECONDS
            except WitnessError as e:
                if isinstance(e, WitnessConflict) or e.status == 422:
                    log.error("witness %s: REFUSES this log's view: %s", endpoint.name, e)
                else:
                    log.warning("witness %s: %s; again in %.1f s", endpoint.name, e, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    def submit(
        self,
        conn: psycopg.Connection[Any],
        endpoint: WitnessEndpoint,
        note: str,
        size: int,
        held: int,
    ) -> int:
        """Send one checkpoint, store the cosignature; the size now cosigned."""
        tree = MerkleTree(PgNodeStore(conn))
        cosigned = add_checkpoint(
            endpoint, note, size, held, tree.consistency_proof, self.timeout_s
        )
        store_cosignature(conn, cosigned.size, endpoint.name, cosigned.signature.line())
        return cosigned.size


# Per configured witness, at each scrape (api.metrics): the size it last cosigned, the
# latest checkpoint's size, and the age of the oldest checkpoint it has not covered.
FIGURES = (
    "SELECT w.name, coalesce(s.cosigned, 0) AS cosigned, h.latest,"
    " (SELECT extract(epoch FROM now() - min(c.signed_at)) FROM checkpoints c"
    "  WHERE c.tree_size > coalesce(s.cosigned, 0)) AS lag_seconds"
    " FROM unnest({names}::text[]) AS w(name)"
    " CROSS JOIN (SELECT coalesce(max(tree_size), 0) AS latest FROM checkpoints) h"
    " LEFT JOIN LATERAL (SELECT max(tree_size) AS cosigned FROM cosignatures"
    "  WHERE witness = w.name) s ON true"
)
