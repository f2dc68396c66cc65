"""The `Ledger` application: commands in, events out; reads by id, by time, and the log."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar, cast, overload
from uuid import UUID

from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    ProcessingEvent,
    project_aggregate,
)
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    IntegrityError,
    JSONTranscoder,
    PersistenceError,
    Transcoding,
)
from eventsourcing.utils import Environment, EnvType

from ledger import commands as c
from ledger import errors
from ledger.actors import Actor
from ledger.database import Database, data_dir
from ledger.domain import EVENT_TYPES, Account, Post, Provider
from ledger.group_commit import GroupCommit, Member
from ledger.log import LoggedEvent
from ledger.ruleset import Ruleset, load_ruleset
from ledger.store import IdempotencyRecord, KeyChanges, LedgerRecorder, PriorOutcome, Stored
from ledger.tlog.tiles import MAX_ENTRY_BYTES, entry_size
from ledger.unit_of_work import UnitOfWork, fork
from ledger.vault import Vault

log = logging.getLogger(__name__)

C = TypeVar("C", bound=c.Command)
A = TypeVar("A", bound=Aggregate)
SNAPSHOT_INTERVAL = 100
# Told of every submission: its command types, its outcome ("ok" or the refusal's code),
# its seconds and the events it appended. The API counts them; the ledger knows no more.
SubmitObserver = Callable[[Sequence[str], str, float, int], None]
STRIPES = 64


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class CommandResult:
    command: str
    value: dict[str, Any]
    # Log position of the command's last event: wait for it to read your writes.
    position: int | None
    # True when the idempotency key was seen before and nothing was written.
    replayed: bool
    # A disclosure's identity in clear: never stored, never logged.
    identity: dict[str, str] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class DueExpiry:
    account_id: UUID
    sanction_id: str
    level: str
    expires_at: datetime


class ActorAsDict(Transcoding):
    type = Actor
    name = "actor"

    def encode(self, obj: Actor) -> dict[str, Any]:
        return obj.as_dict()

    def decode(self, data: dict[str, Any]) -> Actor:
        return Actor.from_dict(data)


class _CommandMethod(Generic[C]):
    """`ledger.register_account(actor=..., idempotency_key=..., ...)` runs that command."""

    def __init__(self, command: type[C]) -> None:
        self.command = command

    @overload
    def __get__(self, ledger: None, owner: type[Ledger]) -> _CommandMethod[C]: ...

    @overload
    def __get__(self, ledger: Ledger, owner: type[Ledger]) -> Callable[..., CommandResult]: ...

    def __get__(
        self, ledger: Ledger | None, owner: type[Ledger]
    ) -> _CommandMethod[C] | Callable[..., CommandResult]:
        if ledger is None:
            return self
        command = self.command

        def run(**arguments: Any) -> CommandResult:
            return ledger.execute(command(**arguments))

        run.__doc__ = command.__doc__
        return run


class Ledger(Application[UUID]):
    name = "Ledger"
    snapshotting_intervals = {
        Provider: SNAPSHOT_INTERVAL,
        Account: SNAPSHOT_INTERVAL,
        Post: SNAPSHOT_INTERVAL,
    }
    MAX_ATTEMPTS = 25

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        vault: Vault,
        ruleset: Ruleset | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__(dict(env) if env is not None else None)
        self.vault = vault
        self.ruleset = ruleset or load_ruleset()
        self.clock = clock
        self._stripes = [threading.Lock() for _ in range(STRIPES)]
        self.group_commit = GroupCommit(
            self._write_group, max_size=int(os.environ.get("LEDGER_GROUP_SIZE", "100"))
        )
        self.observers: list[SubmitObserver] = []

    @classmethod
    def open(cls, database: Database, schema: str | None = None, **kwargs: Any) -> Ledger:
        """A ledger on a started database, configured from the environment."""
        schema = schema or os.environ.get("LEDGER_SCHEMA") or "public"
        if schema != "public":
            database.create_schema(schema)
        return cls(
            database.eventsourcing_env(schema),
            vault=kwargs.pop("vault", None) or Vault.from_environment(data_dir()),
            ruleset=kwargs.pop("ruleset", None) or load_ruleset(os.environ.get("LEDGER_RULESET")),
            **kwargs,
        )

    def construct_env(self, name: str, env: EnvType | None = None) -> Environment:
        # The library would also read os.environ, where its keys prefixed with the
        # application's name are ours: LEDGER_CIPHER_KEY (the vault's key) would turn on
        # the library's own cipher. Configuration comes only from `env`.
        settings = dict(type(self).env)
        settings["IS_SNAPSHOTTING_ENABLED"] = "y"
        # Aggregates stay in memory and are fast-forwarded with the events stored since
        # (one small read). Commands change copies (`unit_of_work.fork`), so a refused
        # command leaves nothing behind; the library's own reads still get deep copies.
        # The version check at insert stays the arbiter of races.
        settings["AGGREGATE_CACHE_MAXSIZE"] = os.environ.get("LEDGER_AGGREGATE_CACHE", "10000")
        settings["AGGREGATE_CACHE_FASTFORWARD"] = "y"
        settings["DEEPCOPY_FROM_AGGREGATE_CACHE"] = "y"
        settings.update(env or {})
        return Environment(name, settings)

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(ActorAsDict())

    @property
    def store(self) -> LedgerRecorder:
        return cast(LedgerRecorder, self.recorder)

    # ----- commands -------------------------------------------------------------------

    register_provider = _CommandMethod(c.RegisterProvider)
    record_qualification = _CommandMethod(c.RecordQualification)
    register_account = _CommandMethod(c.RegisterAccount)
    verify_identity = _CommandMethod(c.VerifyIdentity)
    erase_identity = _CommandMethod(c.EraseIdentity)
    sign_agreement = _CommandMethod(c.SignAgreement)
    review_account = _CommandMethod(c.ReviewAccount)
    file_account = _CommandMethod(c.FileAccount)
    grant_news_permission = _CommandMethod(c.GrantNewsPermission)
    revoke_news_permission = _CommandMethod(c.RevokeNewsPermission)
    mark_account = _CommandMethod(c.MarkAccount)
    unmark_account = _CommandMethod(c.UnmarkAccount)
    publish_post = _CommandMethod(c.PublishPost)
    record_reach = _CommandMethod(c.RecordReach)
    report_post = _CommandMethod(c.ReportPost)
    resolve_report = _CommandMethod(c.ResolveReport)
    remove_post = _CommandMethod(c.RemovePost)
    impose_sanction = _CommandMethod(c.ImposeSanction)
    lift_sanction = _CommandMethod(c.LiftSanction)
    appeal_sanction = _CommandMethod(c.AppealSanction)
    decide_appeal = _CommandMethod(c.DecideAppeal)
    disclose_identity = _CommandMethod(c.DiscloseIdentity)
    register_webhook_endpoint = _CommandMethod(c.RegisterWebhookEndpoint)
    update_webhook_endpoint = _CommandMethod(c.UpdateWebhookEndpoint)
    pause_webhook_endpoint = _CommandMethod(c.PauseWebhookEndpoint)
    resume_webhook_endpoint = _CommandMethod(c.ResumeWebhookEndpoint)
    delete_webhook_endpoint = _CommandMethod(c.DeleteWebhookEndpoint)
    rotate_webhook_secret = _CommandMethod(c.RotateWebhookSecret)
    replay_webhook_endpoint = _CommandMethod(c.ReplayWebhookEndpoint)

    def execute(self, command: c.Command) -> CommandResult:
        return self.submit([command])[0]

    def submit(self, commands: Sequence[c.Command]) -> list[CommandResult]:
        """Run commands as one transaction: all are recorded, or none.

        A command whose idempotency key its actor used before returns its first result
        and writes nothing. A lost version race reruns the whole submission.
        """
        commands = list(commands)
        started, outcome, appended = time.monotonic(), "INTERNAL", 0
        try:
            results, appended = self._submit(commands)
            outcome = "ok"
            return results
        except errors.LedgerError as e:
            outcome = e.code
            raise
        finally:
            seconds, types = time.monotonic() - started, [cmd.type_name for cmd in commands]
            for observe in self.observers:
                try:
                    observe(types, outcome, seconds, appended)
                except Exception:
                    log.exception("a submission observer failed")

    def _submit(self, commands: list[c.Command]) -> tuple[list[CommandResult], int]:
        keys = [(cmd.actor.id, cmd.idempotency_key) for cmd in commands]
        if len(set(keys)) != len(keys):
            raise errors.InvalidArgument("a batch repeats an actor's idempotency key")
        for index, cmd in enumerate(commands):
            with _in_batch(index, len(commands)):
                cmd.authorize()
        macs = [self.vault.mac(cmd.fingerprint()) for cmd in commands]
        stripes = self._stripes_of(commands)
        targets = {v for cmd in commands for v in vars(cmd).values() if isinstance(v, UUID)}
        for attempt in range(self.MAX_ATTEMPTS):
            try:
                with _holding(stripes):
                    prior, loaded = self._prefetch(keys, targets)
                    return self._attempt(commands, keys, macs, prior, loaded, targets)
            except IntegrityError:
                # A concurrent writer got there first: another version of an aggregate,
                # or the same idempotency key. Rerun against what is now recorded.
                time.sleep(random.uniform(0, min(0.05, 0.002 * 2**attempt)))
            except PersistenceError as e:
                log.warning("event store unavailable: %s", type(e).__name__)
                raise errors.StorageUnavailable("the event store is unavailable; retry") from None
        raise errors.Conflict(
            f"gave up after {self.MAX_ATTEMPTS} attempts lost to concurrent writers; retry"
        )

    def _attempt(
        self,
        commands: list[c.Command],
        keys: list[tuple[str, str]],
        macs: list[bytes],
        prior: Mapping[tuple[str, str], PriorOutcome],
        loaded: dict[UUID, Aggregate | None],
        targets: set[UUID],
    ) -> tuple[list[CommandResult], int]:
        """The results, and how many events were appended."""
        uow = UnitOfWork(
            self.repository, self.ruleset, self.vault, self.clock(), self.store.data_keys
        )
        uow.preload(loaded)
        results: list[CommandResult | None] = [None] * len(commands)
        records: list[IdempotencyRecord] = []
        spans: list[tuple[int, int, dict[str, Any]]] = []
        for index, (cmd, key, mac) in enumerate(zip(commands, keys, macs, strict=True)):
            with _in_batch(index, len(commands)):
                if key in prior:
                    results[index] = _replay(cmd, mac, prior[key])
                    continue
                uow.now = self.clock()
                uow.command_index = index
                value = cmd.execute(uow)
                new = uow.collect()
                self._check_entries(new)
            last = new[-1]
            records.append(
                IdempotencyRecord(
                    actor_id=key[0],
                    key=key[1],
                    command=cmd.type_name,
                    request_mac=mac,
                    result=value,
                    last_originator_id=last.originator_id,
                    last_originator_version=last.originator_version,
                )
            )
            spans.append((index, len(uow.events) - 1, value))
        # That what this submission creates is new, the event table's key checks at
        # insert; a rerun after that conflict reads these ids and refuses at `uow.add`.
        targets.update(uow.created)
        if records:
            written = {e.originator_id for e in uow.events}
            recordings = self.group_commit.commit(
                Member(
                    events=uow.events,
                    # Only what this submission wrote: a group must not snapshot another
                    # member's aggregate from a copy this one merely read.
                    aggregates=[a for a in uow.aggregates if a.id in written],
                    kwargs={"idempotency": records, "keys": uow.keys},
                    touches=frozenset(written | {(r.actor_id, r.key) for r in records}),
                )
            )
            self._keep(a for a in uow.aggregates if a.id in written)
            for index, last_event, value in spans:
                position = recordings[last_event].notification.id
                results[index] = CommandResult(commands[index].type_name, value, position, False)
        disclosed = [self._disclosed(uow, i, r) for i, r in enumerate(results) if r is not None]
        return disclosed, len(uow.events) if records else 0

    def _check_entries(self, events: Sequence[Any]) -> None:
        """Refuse an event whose log entry (C2SP entry bundles hold at most 65,535 bytes)
        would not fit: its stored state plus the longest header a position can make."""
        for event in events:
            stored = self.mapper.to_stored_event(event)
            size = entry_size(stored.originator_version, stored.topic, len(stored.state))
            if size > MAX_ENTRY_BYTES:
                raise errors.EntryTooLarge(
                    f"the event would be a log entry of {size} bytes; at most"
                    f" {MAX_ENTRY_BYTES} fit: send fewer or shorter items",
                    entry_bytes=size,
                )

    def _disclosed(self, uow: UnitOfWork, index: int, result: CommandResult) -> CommandResult:
        """A disclosure's result with the identity opened: with the key read in its own
        transaction, or, for a replay, with the key as it is now."""
        if result.command != c.DiscloseIdentity.__name__:
            return result
        if index in uow.disclosures:
            return replace(result, identity=uow.disclosures[index])
        account_id = UUID(result.value["account_id"])
        sealed = self.get_account(account_id).identity
        if sealed is None:
            raise errors.IdentityErased("the account's identity was erased")
        identity = self.vault.open_with(account_id, sealed, self.store.data_keys(account_id))
        return replace(result, identity=identity)

    def _stripes_of(self, commands: Sequence[c.Command]) -> list[threading.Lock]:
        """The locks of the aggregates these commands target. Writers in this process
        take turns on an aggregate instead of all losing the version race to one another
        (optimistic concurrency starves a hot account); other processes still race."""
        targets = {
            getattr(cmd, name)
            for cmd in commands
            for name in ("account_id", "post_id", "provider_id")
            if getattr(cmd, name, None) is not None
        }
        indexes = sorted({hash(t) % len(self._stripes) for t in targets})
        return [self._stripes[i] for i in indexes]

    def _write_group(self, members: Sequence[Member]) -> list[list[Any]]:
        """One transaction for the members' events, idempotency records and key changes;
        the recordings, member by member."""
        keys = KeyChanges()
        for m in members:
            keys.merge(m.kwargs["keys"])
        # What `save` does, without its per-object protocol checks (`isinstance` against
        # runtime protocols: a tenth of a batch's time): the members' events are
        # collected already, and their aggregates have none pending.
        processing: ProcessingEvent[UUID] = ProcessingEvent()
        processing.events = [e for m in members for e in m.events]
        processing.aggregates = {a.id: a for m in members for a in m.aggregates}
        processing.saved_kwargs = {
            "idempotency": [r for m in members for r in m.kwargs["idempotency"]],
            "keys": keys,
        }
        recordings = self._record(processing)
        self._take_snapshots(processing)
        out, start = [], 0
        for m in members:
            out.append(recordings[start : start + len(m.events)])
            start += len(m.events)
        return out

    def _prefetch(
        self, keys: list[tuple[str, str]], targets: set[UUID]
    ) -> tuple[dict[tuple[str, str], PriorOutcome], dict[UUID, Aggregate | None]]:
        """Prior outcomes and the target aggregates, current, in one round trip: those
        held in memory are brought forward by the events stored since."""
        held = {t: a for t in targets if (a := self._cached(t)) is not None}
        fetched = self.store.prefetch(
            keys, {t: held[t].version if t in held else 0 for t in targets}
        )
        loaded: dict[UUID, Aggregate | None] = {}
        for target in targets:
            stored = fetched.stored.get(target, Stored())
            events = [
                self.mapper.to_domain_event(s)
                for s in ([stored.snapshot] if stored.snapshot else []) + stored.events
            ]
            aggregate = held.get(target)
            if events:
                aggregate = project_aggregate(fork(aggregate), events)
                self._keep([aggregate])
            # A copy: a refused command must leave nothing behind in memory.
            loaded[target] = fork(aggregate)
        return fetched.prior, loaded

    def _cached(self, aggregate_id: UUID) -> Aggregate | None:
        if self.repository.cache is None:
            return None
        try:
            return cast(Aggregate, self.repository.cache.get(aggregate_id))
        except KeyError:
            return None

    def _keep(self, aggregates: Iterable[Aggregate | None]) -> None:
        """Hold current aggregates in memory; a stale one only costs a longer read, as
        the version check at insert stays the arbiter."""
        if self.repository.cache is not None:
            for aggregate in aggregates:
                if aggregate is not None:
                    self.repository.cache.put(aggregate.id, aggregate)

    # ----- personal data -----------------------------------------------------------

    def rotate_kek(
        self, batch: int = 500, pause: float = 0.0, progress: Callable[[int], None] | None = None
    ) -> int:
        """Rewrap every data key and every webhook endpoint's key not under the current KEK,
        a batch per transaction; no event is touched. Safe to interrupt and run again: it
        goes on where it stopped."""
        done = 0
        for webhooks, rewrap in ((False, self.vault.rewrap),
                                 (True, self.vault.rewrap_webhook_key)):  # fmt: skip
            while keys := self.store.keys_not_under(self.vault.kek_id, batch, webhooks=webhooks):
                done += self.store.replace_keys(
                    [(k, rewrap(k)) for k in keys], webhooks=webhooks
                )
                if progress:
                    progress(done)
                time.sleep(pause)
        return done

    def shred_erased(self) -> int:
        """Delete the data keys of every account whose identity was erased last: after a
        key table was restored from a backup older than some erasures. Returns keys gone."""
        last: dict[UUID, str] = {}
        types = ["Account.IdentityVerified", "Account.IdentityErased"]
        for e in self.read_log(types=types):
            last[e.originator_id] = e.type
        erased = [a for a, t in last.items() if t == "Account.IdentityErased"]
        return self.store.delete_keys(erased)

    # ----- webhook endpoints' secrets ------------------------------------------------

    def webhook_secrets(
        self, endpoint_id: UUID, at: datetime | None = None
    ) -> list[tuple[UUID, bytes]]:
        """An endpoint's key material (id, raw bytes), newest first: every key it holds, or
        those valid at `at` (a rotated key stays valid through its grace period)."""
        return [
            (k.key_id, self.vault.unwrap_webhook_key(k))
            for k in self.store.webhook_keys(endpoint_id, at)
        ]

    # ----- reads ----------------------------------------------------------------------

    def _aggregate(self, cls: type[A], aggregate_id: UUID | str, version: int | None = None) -> A:
        missing = {Account: errors.AccountNotFound, Post: errors.PostNotFound}.get(
            cls, errors.ProviderNotFound
        )
        found: Aggregate | None
        try:
            found = self.repository.get(_as_uuid(aggregate_id), version=version)
        except AggregateNotFoundError:
            found = None
        if not isinstance(found, cls):
            raise missing(f"no such {cls.__name__.lower()}", id=str(aggregate_id))
        return found

    def get_provider(self, provider_id: UUID | str) -> Provider:
        return self._aggregate(Provider, provider_id)

    def get_account(self, account_id: UUID | str) -> Account:
        return self._aggregate(Account, account_id)

    def get_post(self, post_id: UUID | str) -> Post:
        return self._aggregate(Post, post_id)

    def account_at(
        self, account_id: UUID | str, *, position: int | None = None, at: datetime | None = None
    ) -> Account:
        """The account as it stood at a log position or at a moment."""
        return self._aggregate_at(Account, account_id, position, at)

    def post_at(
        self, post_id: UUID | str, *, position: int | None = None, at: datetime | None = None
    ) -> Post:
        return self._aggregate_at(Post, post_id, position, at)

    def _aggregate_at(
        self, cls: type[A], aggregate_id: UUID | str, position: int | None, at: datetime | None
    ) -> A:
        if (position is None) == (at is None):
            raise errors.InvalidArgument("give exactly one of position and at")
        uid = _as_uuid(aggregate_id)
        if position is not None:
            version = self.store.version_at_position(uid, position)
        else:
            assert at is not None
            if at.tzinfo is None:
                raise errors.InvalidArgument("at must carry a time zone")
            version = self.store.version_at_time(uid, at)
        if version is None:
            self._aggregate(cls, uid)  # raises when it never existed
            raise errors.NotFoundAtPosition(
                f"the {cls.__name__.lower()} did not exist yet then", id=str(uid)
            )
        return self._aggregate(cls, uid, version)

    def head(self) -> int:
        """The position of the last event in the log (0 when empty)."""
        return self.recorder.max_notification_id() or 0

    def read_log(
        self,
        after: int = 0,
        *,
        types: Sequence[str] = (),
        originator_id: UUID | str | None = None,
        limit: int | None = None,
        page_size: int = 1000,
    ) -> Iterator[LoggedEvent]:
        """Events after a position, in log order, read page by page."""
        unknown = sorted(set(types) - set(EVENT_TYPES))
        if unknown:
            raise errors.InvalidArgument(
                f"unknown event types {unknown}; known: {list(EVENT_TYPES)}"
            )
        if after < 0 or (limit is not None and limit < 0):
            raise errors.InvalidArgument("after and limit must not be negative")
        origin = _as_uuid(originator_id) if originator_id is not None else None
        remaining = limit
        while remaining is None or remaining > 0:
            size = page_size if remaining is None else min(page_size, remaining)
            page = self.store.select_log(after, size, types, origin)
            for notification in page:
                event = self.mapper.to_domain_event(notification)
                yield LoggedEvent.from_notification(notification, event)
            if len(page) < size:
                return
            after = page[-1].id
            if remaining is not None:
                remaining -= len(page)

    def due_expiries(self, until: datetime | None = None) -> list[DueExpiry]:
        """Sanctions still recorded as in force whose expiry is at or before `until`."""
        now = self.clock()
        until = until or now
        accounts = {
            e.originator_id
            for e in self.read_log(types=["Account.SanctionImposed"])
            if e.payload["expires_at"] is not None
            and datetime.fromisoformat(e.payload["expires_at"]) <= until
        }
        due = [
            DueExpiry(account_id, s["id"], s["level"], cast(datetime, s["expires_at"]))
            for account_id in accounts
            for s in self.get_account(account_id).expiring_sanctions(until, now)
        ]
        return sorted(due, key=lambda d: (d.expires_at, d.sanction_id))


def _replay(cmd: c.Command, mac: bytes, prior: PriorOutcome) -> CommandResult:
    if prior.command != cmd.type_name or prior.request_mac != mac:
        raise errors.IdempotencyKeyReused(
            "this idempotency key was used before with other arguments",
            idempotency_key=cmd.idempotency_key,
        )
    return CommandResult(cmd.type_name, prior.result, prior.position, True)


def _as_uuid(value: UUID | str) -> UUID:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(value)
    except (ValueError, TypeError, AttributeError):
        raise errors.InvalidArgument(f"not a valid id: {str(value)[:80]!r}") from None


@contextmanager
def _holding(locks: Sequence[threading.Lock]) -> Iterator[None]:
    with ExitStack() as stack:
        for lock in locks:  # in index order: no two submissions wait on each other
            stack.enter_context(lock)
        yield


class _in_batch:
    """Tag an error raised inside a batch with the index of the command that raised it."""

    def __init__(self, index: int, size: int) -> None:
        self.index = index if size > 1 else None

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, errors.LedgerError) and self.index is not None:
            exc.batch_index = self.index
