"""The event store's recorder: eventsourcing's Postgres application recorder, plus

- an idempotency table written in the same transaction as a command's events, so a
  retried command is recognised across processes and restarts;
- the queries the ledger needs beyond the library: the log filtered by originator,
  and the version of an aggregate at a log position or at a moment.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    InterfaceError,
    Notification,
    OperationalError,
    ProgrammingError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.utils import retry
from psycopg import Connection, Cursor
from psycopg.rows import DictRow, dict_row
from psycopg.sql import SQL, Composable, Composed, Identifier, Literal

from ledger import errors
from ledger.vault import DataKey


@dataclass(frozen=True)
class IdempotencyRecord:
    """What a command did, kept under its actor's idempotency key."""

    actor_id: str
    key: str
    command: str
    request_mac: bytes
    result: dict[str, Any]
    last_originator_id: UUID
    last_originator_version: int


@dataclass
class KeyChanges:
    """What a submission does to the key table, in the same transaction as its events:
    data keys to add, accounts whose keys to destroy (erasure), and accounts whose keys
    to read under a share lock (disclosure: an erasure waits until it commits)."""

    new: list[DataKey] = field(default_factory=list)
    shred: list[UUID] = field(default_factory=list)
    read: dict[UUID, UUID] = field(default_factory=dict)  # account id -> key id
    # Webhook endpoints' signing keys: new ones, endpoints whose current keys stay valid
    # only until a moment (rotation), endpoints whose keys to destroy (deletion).
    webhook_new: list[DataKey] = field(default_factory=list)
    webhook_retire: list[tuple[UUID, datetime]] = field(default_factory=list)
    webhook_shred: list[UUID] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.new
            or self.shred
            or self.read
            or self.webhook_new
            or self.webhook_retire
            or self.webhook_shred
        )

    def merge(self, other: KeyChanges) -> None:
        self.new += other.new
        self.shred += other.shred
        self.read.update(other.read)
        self.webhook_new += other.webhook_new
        self.webhook_retire += other.webhook_retire
        self.webhook_shred += other.webhook_shred


@dataclass(frozen=True)
class PriorOutcome:
    command: str
    request_mac: bytes
    result: dict[str, Any]
    position: int | None


@dataclass(frozen=True)
class Stored:
    """An aggregate's stored state as one read found it: its latest snapshot (when
    asked for) and the events after it, in version order."""

    snapshot: StoredEvent | None = None
    events: list[StoredEvent] = field(default_factory=list)


@dataclass(frozen=True)
class Prefetched:
    prior: dict[tuple[str, str], PriorOutcome]
    stored: dict[UUID, Stored]


def _prior(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], PriorOutcome]:
    return {
        (r["actor_id"], r["key"]): PriorOutcome(
            r["command"], bytes(r["request_mac"]), r["result"], r["notification_id"]
        )
        for r in rows
    }


def _stored(rows: Sequence[Mapping[str, Any]]) -> dict[UUID, Stored]:
    out: dict[UUID, Stored] = {}
    for r in rows:
        originator_id: UUID = r["originator_id"]
        record = StoredEvent(originator_id, r["originator_version"], r["topic"], bytes(r["state"]))
        if r["snapshot"]:
            out[originator_id] = Stored(record)
        else:
            out.setdefault(originator_id, Stored()).events.append(record)
    return out


class LedgerRecorder(PostgresApplicationRecorder):
    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        prefix = events_table_name.removesuffix("_events")
        self.idempotency_table = Identifier(datastore.schema, f"{prefix}_idempotency")
        self.events_table = Identifier(datastore.schema, events_table_name)
        self.snapshots_table = Identifier(datastore.schema, f"{prefix}_snapshots")
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {t} ("
                " actor_id text NOT NULL,"
                " key text NOT NULL,"
                " command text NOT NULL,"
                " request_mac bytea NOT NULL,"
                " result jsonb NOT NULL,"
                " last_originator_id uuid NOT NULL,"
                " last_originator_version bigint NOT NULL,"
                " recorded_at timestamptz NOT NULL DEFAULT now(),"
                " PRIMARY KEY (actor_id, key))"
            ).format(t=self.idempotency_table)
        )
        self.idempotency_constraint = f"{prefix}_idempotency_pkey"
        # The data keys of identities: outside the event log, so erasure can destroy them.
        self.keys_table = Identifier(datastore.schema, f"{prefix}_identity_keys")
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {t} ("
                " key_id uuid PRIMARY KEY,"
                " account_id uuid NOT NULL,"
                " kek_id text NOT NULL,"
                " wrapped bytea NOT NULL,"
                " created_at timestamptz NOT NULL DEFAULT now())"
            ).format(t=self.keys_table)
        )
        self.sql_create_statements.append(
            SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} (account_id)").format(
                i=Identifier(f"{prefix}_identity_keys_account"), t=self.keys_table
            )
        )
        # Webhook endpoints' signing secrets, wrapped by the KEK like the identity keys.
        # `valid_until` is set when a rotation retires a key (its grace period).
        self.webhook_keys_table = Identifier(datastore.schema, f"{prefix}_webhook_keys")
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {t} ("
                " key_id uuid PRIMARY KEY,"
                " endpoint_id uuid NOT NULL,"
                " kek_id text NOT NULL,"
                " wrapped bytea NOT NULL,"
                " created_at timestamptz NOT NULL DEFAULT now(),"
                " valid_until timestamptz)"
            ).format(t=self.webhook_keys_table)
        )
        self.sql_create_statements.append(
            SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} (endpoint_id)").format(
                i=Identifier(f"{prefix}_webhook_keys_endpoint"), t=self.webhook_keys_table
            )
        )

    def _create_table(self, curs: Cursor[DictRow]) -> None:
        # Processes starting at once would race on the catalog ("tuple concurrently
        # updated"): one creates the tables while the others wait.
        curs.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))",
            [f"{self.datastore.schema}.{self.events_table_name}"],
            prepare=False,
        )
        super()._create_table(curs)

    def _insert_events(
        self,
        curs: Cursor[DictRow],
        stored_events: Sequence[StoredEvent],
        *,
        idempotency: Sequence[IdempotencyRecord] = (),
        keys: KeyChanges | None = None,
        **kwargs: Any,
    ) -> None:
        # The table lock first, whatever follows: a process creating the tables at
        # start-up locks the events table, then the others; the other order deadlocked
        # the two. The events (with the idempotency rows) follow in one statement.
        if stored_events or keys or idempotency:
            self._lock_table(curs)
        if keys:
            self._change_keys(curs, keys)
        if idempotency and not stored_events:
            curs.execute(self._statements.idempotency_only, _idempotency_columns(idempotency))

    def _lock_table(self, curs: Cursor[DictRow]) -> None:
        for statement in self._statements.lock:
            curs.execute(statement, prepare=True)

    def _insert_stored_events(
        self,
        curs: Cursor[DictRow],
        stored_events: Sequence[StoredEvent],
        *,
        idempotency: Sequence[IdempotencyRecord] = (),
        **kwargs: Any,
    ) -> None:
        """The events and their idempotency rows in one statement, as arrays of plain
        columns: each event's state is sent as the bytes the mapper made (the library's
        composite-type array re-encodes every state as text), and the NOTIFY of the
        library's followers. The table is locked."""
        columns = [
            [e.originator_id for e in stored_events],
            [e.originator_version for e in stored_events],
            [e.topic for e in stored_events],
            [e.state for e in stored_events],
        ]
        if idempotency:
            curs.execute(
                self._statements.events_and_idempotency,
                columns + _idempotency_columns(idempotency),
                prepare=True,
            )
        else:
            curs.execute(self._statements.events, columns, prepare=True)

    def _fetch_ids_after_insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **_: Any
    ) -> Sequence[int] | None:
        ids = [row["notification_id"] for row in curs.fetchall()]
        if len(ids) != len(stored_events):
            raise ProgrammingError(f"got {len(ids)} notification ids for {len(stored_events)}")
        return ids

    @cached_property
    def _statements(self) -> _Statements:
        return _Statements.of(self)

    def _change_keys(self, curs: Cursor[DictRow], keys: KeyChanges) -> None:
        if keys.shred:
            curs.execute(
                SQL("DELETE FROM {t} WHERE account_id = ANY(%s)").format(t=self.keys_table),
                [list(keys.shred)],
            )
        if keys.new:
            curs.executemany(
                SQL(
                    "INSERT INTO {t} (key_id, account_id, kek_id, wrapped) VALUES (%s, %s, %s, %s)"
                ).format(t=self.keys_table),
                [(k.key_id, k.account_id, k.kek_id, k.wrapped) for k in keys.new],
            )
        if keys.read:
            curs.execute(
                SQL("SELECT key_id FROM {t} WHERE key_id = ANY(%s) FOR SHARE").format(
                    t=self.keys_table
                ),
                [list(keys.read.values())],
            )
            if len(curs.fetchall()) < len(keys.read):
                raise errors.IdentityErased("the account's identity was erased")
        self._change_webhook_keys(curs, keys)

    def _change_webhook_keys(self, curs: Cursor[DictRow], keys: KeyChanges) -> None:
        t = self.webhook_keys_table
        for endpoint_id, until in keys.webhook_retire:
            curs.execute(
                SQL(
                    "UPDATE {t} SET valid_until = %s WHERE endpoint_id = %s"
                    " AND (valid_until IS NULL OR valid_until > %s)"
                ).format(t=t),
                [until, endpoint_id, until],
            )
        if keys.webhook_shred:
            curs.execute(
                SQL("DELETE FROM {t} WHERE endpoint_id = ANY(%s)").format(t=t),
                [list(keys.webhook_shred)],
            )
        if keys.webhook_new:
            curs.executemany(
                SQL(
                    "INSERT INTO {t} (key_id, endpoint_id, kek_id, wrapped) VALUES (%s, %s, %s, %s)"
                ).format(t=t),
                [(k.key_id, k.account_id, k.kek_id, k.wrapped) for k in keys.webhook_new],
            )

    def webhook_keys(self, endpoint_id: UUID, at: datetime | None = None) -> list[DataKey]:
        """An endpoint's signing keys, newest first: all of them, or those valid at `at`."""
        rows = self._rows(
            SQL(
                "SELECT key_id, endpoint_id AS account_id, kek_id, wrapped FROM {t}"
                " WHERE endpoint_id = %s AND (%s::timestamptz IS NULL OR valid_until IS NULL"
                " OR valid_until > %s) ORDER BY created_at DESC, key_id"
            ).format(t=self.webhook_keys_table),
            [endpoint_id, at, at],
        )
        return [_data_key(r) for r in rows]

    def data_keys(self, account_id: UUID) -> list[DataKey]:
        """The data keys of an account (none once its identity was erased)."""
        rows = self._rows(
            SQL("SELECT key_id, account_id, kek_id, wrapped FROM {t} WHERE account_id = %s").format(
                t=self.keys_table
            ),
            [account_id],
        )
        return [_data_key(r) for r in rows]

    def keys_not_under(
        self, kek_id: str, limit: int, *, webhooks: bool = False
    ) -> list[DataKey]:
        """Data keys (or, with `webhooks`, webhook endpoints' keys) wrapped by another KEK."""
        owner = "endpoint_id" if webhooks else "account_id"
        rows = self._rows(
            SQL(
                "SELECT key_id, {owner} AS account_id, kek_id, wrapped FROM {t}"
                " WHERE kek_id <> %s ORDER BY key_id LIMIT %s"
            ).format(owner=Identifier(owner), t=self._key_table(webhooks)),
            [kek_id, limit],
        )
        return [_data_key(r) for r in rows]

    def replace_keys(
        self, rewrapped: Sequence[tuple[DataKey, DataKey]], *, webhooks: bool = False
    ) -> int:
        """Store rewrapped keys (old, new), each only if its row is still the old one."""
        with self.datastore.transaction(commit=True) as curs:
            curs.executemany(
                SQL(
                    "UPDATE {t} SET kek_id = %s, wrapped = %s WHERE key_id = %s AND kek_id = %s"
                ).format(t=self._key_table(webhooks)),
                [(new.kek_id, new.wrapped, old.key_id, old.kek_id) for old, new in rewrapped],
            )
        return len(rewrapped)

    def _key_table(self, webhooks: bool) -> Identifier:
        return self.webhook_keys_table if webhooks else self.keys_table

    def delete_keys(self, account_ids: Sequence[UUID]) -> int:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                SQL("DELETE FROM {t} WHERE account_id = ANY(%s)").format(t=self.keys_table),
                [list(account_ids)],
            )
            return curs.rowcount

    def keys_by_kek(self, *, webhooks: bool = False) -> dict[str, int]:
        rows = self._rows(
            SQL("SELECT kek_id, count(*) AS n FROM {t} GROUP BY kek_id ORDER BY kek_id").format(
                t=self._key_table(webhooks)
            ),
            [],
        )
        return {r["kek_id"]: r["n"] for r in rows}

    # A connection the server closed (restart, terminated backend) fails at once; the
    # pool drops it and the next attempt takes another, as the library's own reads do.
    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.05)
    def _rows(self, query: Composed, params: Sequence[Any]) -> list[DictRow]:
        # Unprepared, so every run is planned for its own parameters: a prepared
        # statement's cached generic plan, made while a table was small, seq-scans it
        # for good once it has grown.
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(query, params, prepare=False)
            return curs.fetchall()

    def prior_outcomes(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], PriorOutcome]:
        prefetched: Prefetched = self.prefetch(keys, {})
        return prefetched.prior

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.05)
    def prefetch(self, keys: Sequence[tuple[str, str]], since: Mapping[UUID, int]) -> Prefetched:
        """What a submission reads, in one round trip: the prior outcomes of its
        idempotency keys, and for each aggregate the events stored after version
        `since[id]`; 0 means not held in memory, so its latest snapshot comes too and
        the events after it."""
        ids, versions = list(since), list(since.values())
        with (
            self.datastore.get_connection() as conn,
            conn.pipeline(),
            conn.cursor() as prior,
            conn.cursor() as stored,
        ):
            if keys:
                pairs = [[a for a, _ in keys], [k for _, k in keys]]
                prior.execute(self._prior_sql, pairs, prepare=False)
            if ids:
                stored.execute(self._stored_sql, [ids, versions], prepare=False)
            return Prefetched(
                _prior(prior.fetchall() if keys else []),
                _stored(stored.fetchall() if ids else []),
            )

    @cached_property  # composed once: it runs before every command
    def _prior_sql(self) -> Composed:
        return SQL(
            "SELECT k.actor_id, k.key, k.command, k.request_mac, k.result, e.notification_id"
            " FROM {k} k LEFT JOIN {e} e ON e.originator_id = k.last_originator_id"
            " AND e.originator_version = k.last_originator_version"
            " WHERE (k.actor_id, k.key) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
        ).format(k=self.idempotency_table, e=self.events_table)

    @cached_property
    def _stored_sql(self) -> Composed:
        # One statement, so the snapshot and the events after it are read consistently.
        return SQL(
            "WITH t AS (SELECT * FROM unnest(%s::uuid[], %s::bigint[]) AS t(id, v)),"
            " s AS (SELECT DISTINCT ON (n.originator_id) n.originator_id,"
            "   n.originator_version, n.topic, n.state FROM t JOIN {s} n"
            "   ON n.originator_id = t.id AND t.v = 0"
            "   ORDER BY n.originator_id, n.originator_version DESC)"
            " SELECT true AS snapshot, * FROM s"
            " UNION ALL"
            " SELECT false, e.originator_id, e.originator_version, e.topic, e.state"
            " FROM t JOIN {e} e ON e.originator_id = t.id AND e.originator_version > greatest("
            "   t.v, coalesce((SELECT s.originator_version FROM s WHERE s.originator_id = t.id),"
            "   0))"
            " ORDER BY 2, 1 DESC, 3"
        ).format(s=self.snapshots_table, e=self.events_table)

    def select_log(
        self, after: int, limit: int, topics: Sequence[str] = (), originator_id: UUID | None = None
    ) -> list[Notification]:
        clauses = [SQL("notification_id > %s")]
        params: list[Any] = [after]
        if topics:
            clauses.append(SQL("topic = ANY(%s)"))
            params.append(list(topics))
        if originator_id is not None:
            clauses.append(SQL("originator_id = %s"))
            params.append(originator_id)
        params.append(limit)
        query = _log_query(self.events_table, SQL(" AND ").join(clauses))
        return [_notification(r) for r in self._rows(query, params)]

    def version_at_position(self, originator_id: UUID, position: int) -> int | None:
        rows = self._rows(
            SQL(
                "SELECT max(originator_version) AS v FROM {e}"
                " WHERE originator_id = %s AND notification_id <= %s"
            ).format(e=self.events_table),
            [originator_id, position],
        )
        version: int | None = rows[0]["v"]
        return version

    def version_at_time(self, originator_id: UUID, at: datetime) -> int | None:
        # Events are stored as JSON; the event's own timestamp is recorded in it.
        rows = self._rows(
            SQL(
                "SELECT max(originator_version) AS v FROM {e} WHERE originator_id = %s"
                " AND (convert_from(state, 'UTF8')::json #>> '{{timestamp,_data_}}')::timestamptz"
                " <= %s"
            ).format(e=self.events_table),
            [originator_id, at],
        )
        version: int | None = rows[0]["v"]
        return version

    def count_by_type(self) -> dict[str, int]:
        rows = self._rows(
            SQL("SELECT topic, count(*) AS n FROM {e} GROUP BY topic ORDER BY topic").format(
                e=self.events_table
            ),
            [],
        )
        return {r["topic"]: r["n"] for r in rows}


def log_page(
    conn: Connection[Any], events_table: Composable, after: int, limit: int
) -> list[Notification]:
    """The log after a position, read on the caller's connection (and transaction)."""
    query = _log_query(events_table, SQL("notification_id > %s"))
    rows = conn.cursor(row_factory=dict_row).execute(query, (after, limit)).fetchall()
    return [_notification(r) for r in rows]


def _data_key(row: Mapping[str, Any]) -> DataKey:
    return DataKey(row["key_id"], row["account_id"], row["kek_id"], bytes(row["wrapped"]))


def _log_query(events_table: Composable, where: Composable) -> Composed:
    return SQL(
        "SELECT notification_id, originator_id, originator_version, topic, state"
        " FROM {e} WHERE {where} ORDER BY notification_id LIMIT %s"
    ).format(e=events_table, where=where)


def _notification(r: Mapping[str, Any]) -> Notification:
    return Notification(
        id=r["notification_id"],
        originator_id=r["originator_id"],
        originator_version=r["originator_version"],
        topic=r["topic"],
        state=bytes(r["state"]),
    )


def _idempotency_columns(records: Sequence[IdempotencyRecord]) -> list[list[Any]]:
    return [
        [r.actor_id for r in records],
        [r.key for r in records],
        [r.command for r in records],
        [r.request_mac for r in records],
        [json.dumps(r.result) for r in records],
        [r.last_originator_id for r in records],
        [r.last_originator_version for r in records],
    ]


@dataclass(frozen=True)
class _Statements:
    """The write path's statements, rendered to text once: psycopg composes a `Composed`
    again on every execution."""

    lock: list[str]
    events: str
    events_and_idempotency: str
    idempotency_only: str

    @classmethod
    def of(cls, recorder: LedgerRecorder) -> _Statements:
        events = (
            "INSERT INTO {e} (originator_id, originator_version, topic, state)"
            " SELECT * FROM unnest(%s::uuid[], %s::bigint[], %s::text[], %s::bytea[])"
            " RETURNING notification_id"
        )
        idempotency = (
            "INSERT INTO {k} (actor_id, key, command, request_mac, result, last_originator_id,"
            " last_originator_version) SELECT * FROM unnest(%s::text[], %s::text[], %s::text[],"
            " %s::bytea[], %s::jsonb[], %s::uuid[], %s::bigint[])"
        )
        names = {
            "e": recorder.events_table,
            "k": recorder.idempotency_table,
            "channel": Literal(recorder.channel_name),
        }
        # NOTIFY as the library sends it (delivered at commit), without a statement of its
        # own; the notification ids in insert order, as the sequence numbered the rows.
        returning = (
            ", n AS (SELECT pg_notify({channel}, '')) SELECT notification_id FROM e, n"
            " ORDER BY notification_id"
        )

        def text(query: str) -> str:
            return SQL(query).format(**names).as_string(None)

        return cls(
            lock=[sql_text(q) for q in recorder.lock_table_statements],
            events=text(f"WITH e AS ({events}){returning}"),
            events_and_idempotency=text(f"WITH e AS ({events}), k AS ({idempotency}){returning}"),
            idempotency_only=text(idempotency),
        )


def sql_text(query: Any) -> str:
    """A query as text, whatever psycopg type it was built as."""
    if isinstance(query, bytes):
        return query.decode()
    return query if isinstance(query, str) else str(query.as_string(None))
