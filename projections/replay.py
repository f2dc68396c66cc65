"""An auditor's replay: a log's entries (C2SP entry bundles, each an event's leaf data)
recorded into an event store of the auditor's own, then the read models rebuilt from it
by the same projections the ledger runs."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from ledger.application import Ledger
from ledger.database import Database
from ledger.proofcheck import LEAF_PREFIX
from projections.rebuild import rebuild
from projections.registry import ALL as PROJECTIONS


class NotAnEntry(ValueError):
    pass


def parse_entry(entry: bytes) -> tuple[int, UUID, int, str, bytes]:
    """(position, originator id, version, topic, state) of an event's leaf data."""
    if not entry.startswith(LEAF_PREFIX):
        raise NotAnEntry("an entry that is not a ledger event")
    try:
        position, originator, version, topic, state = entry[len(LEAF_PREFIX) :].split(b"\n", 4)
        return int(position), UUID(originator.decode()), int(version), topic.decode(), state
    except ValueError:
        raise NotAnEntry("an entry whose header is malformed") from None


class Replay:
    """Receives verified entries (`ledger.tlog.audit`'s callback) into `ledger`'s store."""

    def __init__(self, ledger: Ledger, database: Database, schema: str) -> None:
        self.ledger, self.database, self.schema = ledger, database, schema
        self.conn = database.connect(schema)
        self.events = 0

    def __call__(self, first: int, entries: Sequence[bytes]) -> None:
        table = self.ledger.store.events_table
        columns = "(notification_id, originator_id, originator_version, topic, state)"
        with (
            self.conn.cursor() as cur,
            cur.copy(f"COPY {table.as_string(cur)} {columns} FROM STDIN") as copy,
        ):
            for entry in entries:
                copy.write_row(parse_entry(entry))
        self.conn.commit()
        self.events += len(entries)

    def finish(self) -> int:
        """Rebuild every read model from the replayed log; the events read."""
        self.conn.close()
        return rebuild(self.ledger, self.database, PROJECTIONS, self.schema)
