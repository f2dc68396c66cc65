"""History folded in a process of its own (see `projections.folds.run`).

`python -m projections.folds.apart` reads its job as JSON from LEDGER_FOLD_JOB (conninfo,
schema, the log query, head), folds history from the log into the schema's empty table,
streaming its rows in with one COPY and committing at the end, and prints the rows it
wrote. It reads events only from their JSON (`decode_plain`); an event only the mapper
can read, or any other failure, exits non-zero with the reason on standard error.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from uuid import UUID

import psycopg
from psycopg import sql

from ledger.database import CONNECT_TIMEOUT_S
from ledger.log import LoggedEvent
from ledger.ruleset import load_ruleset
from projections.decode import decode_plain
from projections.folds.base import Unfoldable
from projections.folds.history import HistoryFold, OwnersFold
from projections.folds.run import APART, copy_into, fold_page, log_pages, routes


def _decode(
    position: int, originator_id: UUID, version: int, topic: str, state: bytes
) -> LoggedEvent:
    event = decode_plain(position, originator_id, version, topic, state)
    if event is None:
        raise Unfoldable(f"event {position} ({topic}) is read by the mapper only")
    return event


def fold_history(conninfo: str, schema: str, query: str, head: int) -> int:
    """Fold history into `schema`'s empty table; the rows written."""
    ruleset = load_ruleset()  # read by neither fold
    owners = OwnersFold(ruleset, {})
    history = HistoryFold(ruleset, {"owners": owners})
    by_type = routes((owners, history))
    copy = copy_into(sql.Identifier(schema, APART), history.columns[APART])
    written = 0
    connection = psycopg.connect(conninfo, connect_timeout=CONNECT_TIMEOUT_S)
    with connection as conn, conn.cursor().copy(copy) as out:
        for page in log_pages(conninfo, query, head, _decode):
            fold_page(page, by_type)
            for row in history.history:
                out.write_row(row)
            written += len(history.history)
            history.history.clear()
    return written


def main() -> int:
    job = json.loads(os.environ["LEDGER_FOLD_JOB"])
    gc.disable()  # nothing it keeps is a cycle; see projections.folds.run
    try:
        written = fold_history(job["conninfo"], job["schema"], job["query"], job["head"])
    except Exception as exc:  # the parent says why and rebuilds in bulk
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
