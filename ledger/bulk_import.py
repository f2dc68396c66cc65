"""Recording a trusted batch in bulk (`ledger import --bulk`).

The command path reads, validates and writes each submission on its own. For a file the
operator trusts, a batch of thousands of commands is instead:

- read once: the prior outcomes of all its idempotency keys and every aggregate it
  targets, in one round trip (`Ledger._prefetch`);
- validated one command after another against that state, as `Ledger.submit` does, each
  command on copies of what it touches (`unit_of_work.fork`), so a refused one leaves the
  state as it was and is reported with the code the command path gives it;
- written in one transaction: the table lock, the key table's changes, the events and the
  idempotency rows each as one binary COPY, and the NOTIFY of the followers.

The version check at insert stays: a concurrent writer that changed an aggregate since the
read makes the COPY fail on the events table's key, and the caller records the batch by
the command path instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any
from uuid import UUID

from eventsourcing.application import ProcessingEvent
from eventsourcing.domain import Aggregate
from psycopg import Cursor, sql

from ledger import commands as c
from ledger import errors
from ledger.application import CommandResult, Ledger, _replay
from ledger.store import IdempotencyRecord, KeyChanges, sql_text
from ledger.unit_of_work import UnitOfWork, fork

Outcome = CommandResult | errors.LedgerError
IDEMPOTENCY_COLUMNS = [f.name for f in fields(IdempotencyRecord)]  # the table's, in order
IDEMPOTENCY_TYPES = ("text", "text", "text", "bytea", "jsonb", "uuid", "int8")


class _IsolatedUnitOfWork(UnitOfWork):
    """A unit of work whose commands can each be undone: a command changes forks of the
    aggregates it touches, and `undo` puts the originals back."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._before: dict[UUID, Aggregate | None] = {}
        self._keys_before = (0, 0, 0, 0)

    def begin(self, index: int) -> None:
        self.command_index = index
        self._before = {}
        k = self.keys
        self._keys_before = (len(k.new), len(k.shred), len(k.read), len(self.disclosures))

    def _load(self, aggregate_id: UUID) -> Aggregate | None:
        found = super()._load(aggregate_id)
        if aggregate_id not in self._before:
            self._before[aggregate_id] = found
            found = self._loaded[aggregate_id] = fork(found)
        return found

    def add(self, aggregate: Aggregate) -> None:
        self._before.setdefault(aggregate.id, self._loaded.get(aggregate.id))
        super().add(aggregate)

    def undo(self) -> None:
        for aggregate_id, before in self._before.items():
            self._loaded[aggregate_id] = before
            if self.created.get(aggregate_id) == self.command_index:
                del self.created[aggregate_id]
        self._handed.clear()
        new, shred, read, disclosed = self._keys_before
        del self.keys.new[new:]
        del self.keys.shred[shred:]
        for account_id in list(self.keys.read)[read:]:
            del self.keys.read[account_id]
        for index in list(self.disclosures)[disclosed:]:
            del self.disclosures[index]


@dataclass
class Validated:
    """A batch validated against state read once: each command's outcome, and what the
    accepted ones write."""

    outcomes: list[Outcome]
    events: list[Any] = field(default_factory=list)
    aggregates: list[Aggregate] = field(default_factory=list)
    records: list[IdempotencyRecord] = field(default_factory=list)
    keys: KeyChanges = field(default_factory=KeyChanges)


class Session:
    """Validation across the batches of one import: what a batch wrote is the state the
    next one is validated against, held in memory, so a batch can be validated while the
    one before it is written. Once a batch is committed (two batches on), what it wrote is
    dropped, to be read again from the store and the ledger's cache; what a batch only
    read is read again by the next."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.reset()

    def reset(self) -> None:
        """Forget everything: after a batch that was not written."""
        ledger = self.ledger
        self.uow = _IsolatedUnitOfWork(
            ledger.repository, ledger.ruleset, ledger.vault, ledger.clock(), ledger.store.data_keys
        )
        # Keys recorded by the batches still held, and the batch that last touched each
        # aggregate or key: a repeat replays, as it would line by line.
        self.done: dict[tuple[str, str], IdempotencyRecord] = {}
        self.touched: dict[Any, int] = {}
        self.batches = 0

    def validate(self, commands: Sequence[c.Command], stop: bool = False) -> Validated:
        """Run the commands one after another against the state they target, read once;
        with `stop`, none after the first refused."""
        self.batches += 1
        self._forget(self.batches - 2)
        uow = self.uow
        uow.events, uow.keys, uow.created, uow.disclosures = [], KeyChanges(), {}, {}
        keys = [(cmd.actor.id, cmd.idempotency_key) for cmd in commands]
        targets = {v for cmd in commands for v in vars(cmd).values() if isinstance(v, UUID)}
        unread = [k for k in dict.fromkeys(keys) if k not in self.done]
        prior, loaded = self.ledger._prefetch(unread, targets - set(uow._loaded))
        uow.preload(loaded)
        outcomes: list[Outcome] = []
        records: list[IdempotencyRecord] = []
        for cmd, key in zip(commands, keys, strict=True):
            try:
                outcomes.append(self._one(len(outcomes), cmd, key, prior, records))
            except errors.LedgerError as e:
                uow.undo()
                outcomes.append(e)
                if stop:
                    break
        written = {e.originator_id for e in uow.events}
        for name in [*written, *((r.actor_id, r.key) for r in records)]:
            self.touched[name] = self.batches
        aggregates = [a for a in uow.aggregates if a.id in written]
        # What was only read is read again by the next batch, as the command path reads
        # it for each submission: another writer may have changed it since.
        for aggregate_id in [i for i in uow._loaded if i not in self.touched]:
            del uow._loaded[aggregate_id]
        return Validated(outcomes, uow.events, aggregates, records, uow.keys)

    def _forget(self, committed: int) -> None:
        gone = [name for name, batch in self.touched.items() if batch <= committed]
        for name in gone:
            del self.touched[name]
            self.uow._loaded.pop(name, None)
            self.done.pop(name, None)

    def _one(
        self,
        index: int,
        cmd: c.Command,
        key: tuple[str, str],
        prior: dict[tuple[str, str], Any],
        records: list[IdempotencyRecord],
    ) -> CommandResult:
        ledger, uow = self.ledger, self.uow
        uow.begin(index)
        cmd.authorize()
        mac = ledger.vault.mac(cmd.fingerprint())
        if key in prior:
            return _replay(cmd, mac, prior[key])
        if key in self.done:
            first = self.done[key]
            if first.command != cmd.type_name or first.request_mac != mac:
                raise errors.IdempotencyKeyReused(
                    "this idempotency key was used before with other arguments",
                    idempotency_key=cmd.idempotency_key,
                )
            return CommandResult(cmd.type_name, first.result, None, True)
        uow.now = ledger.clock()
        value = cmd.execute(uow)
        last = uow.collect()[-1]
        record = IdempotencyRecord(
            key[0], key[1], cmd.type_name, mac, value, last.originator_id, last.originator_version
        )
        records.append(record)
        self.done[key] = record
        return CommandResult(cmd.type_name, value, None, False)


def validate(ledger: Ledger, commands: Sequence[c.Command], stop: bool = False) -> Validated:
    """One batch on its own (see `Session.validate`)."""
    return Session(ledger).validate(commands, stop)


def write(ledger: Ledger, batch: Validated) -> None:
    """Write what a validated batch accepted, in one transaction (nothing: no-op)."""
    if not batch.events:
        return
    store = ledger.store
    stored = [ledger.mapper.to_stored_event(e) for e in batch.events]
    with store.datastore.transaction(commit=True) as curs:
        store._lock_table(curs)
        if batch.keys:
            store._change_keys(curs, batch.keys)
        _copy(
            curs,
            store.events_table,
            ("originator_id", "originator_version", "topic", "state"),
            ("uuid", "int8", "text", "bytea"),
            [(s.originator_id, s.originator_version, s.topic, s.state) for s in stored],
        )
        records = [tuple(getattr(r, n) for n in IDEMPOTENCY_COLUMNS) for r in batch.records]
        _copy(curs, store.idempotency_table, IDEMPOTENCY_COLUMNS, IDEMPOTENCY_TYPES, records)
        curs.execute(sql.SQL("NOTIFY {}").format(sql.Identifier(store.channel_name)))
    processing: ProcessingEvent[UUID] = ProcessingEvent()
    processing.events = batch.events
    processing.aggregates = {a.id: a for a in batch.aggregates}
    ledger._take_snapshots(processing)
    ledger._keep(batch.aggregates)


def _copy(
    curs: Cursor[Any],
    table: sql.Composable,
    columns: Sequence[str],
    types: Sequence[str],
    rows: Sequence[Sequence[Any]],
) -> None:
    query = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        table, sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with curs.copy(sql_text(query.as_string(curs))) as copy:
        copy.set_types(list(types))
        for row in rows:
            copy.write_row(row)
