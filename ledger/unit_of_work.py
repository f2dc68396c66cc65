"""A unit of work: the aggregates one submission touches, loaded once, saved together.

Commands of a batch run one after another against the same unit of work, so a later
command sees what an earlier one did; all their events are saved in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Repository
from eventsourcing.domain import Aggregate, DomainEventProtocol

from ledger import errors
from ledger.actors import Actor, Role
from ledger.domain import Account, Post, Provider
from ledger.ruleset import Ruleset
from ledger.store import KeyChanges
from ledger.vault import DataKey, Vault, key_id_in

A = TypeVar("A", bound=Aggregate)
T = TypeVar("T", bound=Aggregate | None)


def fork(aggregate: T) -> T:
    """A copy to change: its attributes are the original's, shared, not copied.

    That is safe because the aggregates' event handlers replace state (a new dict, a new
    list) and never change a container in place: the copy's events leave the original as
    it was, so a refused command leaves nothing behind in memory. It costs one dict copy
    where a deep copy walked every sanction, report and grant.
    """
    if aggregate is None:
        return aggregate
    copy = object.__new__(type(aggregate))
    copy.__dict__.update(aggregate.__dict__)
    copy._pending_events = []
    return copy


class UnitOfWork:
    def __init__(
        self,
        repository: Repository[UUID],
        ruleset: Ruleset,
        vault: Vault,
        now: datetime,
        data_keys: Callable[[UUID], list[DataKey]] = lambda account_id: [],
    ):
        self.repository = repository
        self.data_keys = data_keys
        self.ruleset = ruleset
        self.vault = vault
        self.now = now
        self._loaded: dict[UUID, Aggregate | None] = {}
        # Handed out since the last `collect`: only these can have pending events, and a
        # batch of a hundred commands must not walk every aggregate after each one.
        self._handed: dict[UUID, Aggregate] = {}
        self.events: list[DomainEventProtocol[UUID]] = []
        # Aggregates created here, by the index of the command that created them. That
        # none exists yet is checked for all of them at once, before saving.
        self.created: dict[UUID, int] = {}
        self.command_index = 0
        # The key table's part of the submission, and the identities disclosed, by the
        # index of the disclosing command (in memory only, never saved).
        self.keys = KeyChanges()
        self.disclosures: dict[int, dict[str, str]] = {}

    def add_key(self, key: DataKey) -> None:
        self.keys.new.append(key)

    def shred_keys(self, account_id: UUID) -> None:
        # Keys an earlier command of this batch created go too; the DELETE runs first.
        self.keys.new = [k for k in self.keys.new if k.account_id != account_id]
        self.keys.shred.append(account_id)

    def add_webhook_key(self, endpoint_id: UUID, key_id: UUID, material: bytes) -> None:
        self.keys.webhook_new.append(self.vault.wrap_webhook_key(endpoint_id, key_id, material))

    def retire_webhook_keys(self, endpoint_id: UUID, until: datetime) -> None:
        self.keys.webhook_retire.append((endpoint_id, until))

    def shred_webhook_keys(self, endpoint_id: UUID) -> None:
        self.keys.webhook_new = [k for k in self.keys.webhook_new if k.account_id != endpoint_id]
        self.keys.webhook_shred.append(endpoint_id)

    def disclose(self, account_id: UUID, sealed: str) -> None:
        """Open the identity now, before anything is written (a wrong KEK or a corrupt
        key refuses the command), and have the transaction hold its key: an erasure
        committing first makes the disclosure fail, never answer without a trace."""
        identity = self.vault.open_with(account_id, sealed, self.data_keys(account_id))
        self.disclosures[self.command_index] = identity
        self.keys.read[account_id] = key_id_in(sealed)

    def preload(self, aggregates: dict[UUID, Aggregate | None]) -> None:
        """Aggregates read beforehand (None: none stored under that id)."""
        self._loaded.update(aggregates)

    def _load(self, aggregate_id: UUID) -> Aggregate | None:
        if aggregate_id not in self._loaded:
            try:
                self._loaded[aggregate_id] = self.repository.get(aggregate_id)
            except AggregateNotFoundError:
                self._loaded[aggregate_id] = None
        return self._loaded[aggregate_id]

    def _get(
        self, cls: type[A], aggregate_id: UUID, missing: Callable[[], errors.LedgerError]
    ) -> A:
        found = self._load(aggregate_id)
        if not isinstance(found, cls):
            raise missing()
        self._handed[aggregate_id] = found
        return found

    def provider(self, provider_id: UUID) -> Provider:
        return self._get(
            Provider,
            provider_id,
            lambda: errors.ProviderNotFound("no such provider", provider_id=str(provider_id)),
        )

    def account(self, account_id: UUID) -> Account:
        return self._get(
            Account,
            account_id,
            lambda: errors.AccountNotFound("no such account", account_id=str(account_id)),
        )

    def post(self, post_id: UUID) -> Post:
        return self._get(
            Post, post_id, lambda: errors.PostNotFound("no such post", post_id=str(post_id))
        )

    def visible_post(self, post_id: UUID, actor: Actor) -> Post:
        """A post the actor may cite: to a provider, another provider's post is missing."""
        post = self.post(post_id)
        if actor.role is Role.PROVIDER and actor.provider_id != post.provider_id:
            raise errors.PostNotFound("no such post", post_id=str(post_id))
        return post

    def own_account(self, account_id: UUID, actor: Actor) -> Account:
        account = self.account(account_id)
        require_own(actor, account.provider_id, account_id=str(account_id))
        return account

    def own_post(self, post_id: UUID, actor: Actor) -> Post:
        post = self.post(post_id)
        require_own(actor, post.provider_id, post_id=str(post_id))
        return post

    def add(self, aggregate: Aggregate) -> None:
        if self._loaded.get(aggregate.id) is not None:
            raise errors.AlreadyExists("it is already registered", id=str(aggregate.id))
        self._loaded[aggregate.id] = aggregate
        self._handed[aggregate.id] = aggregate
        self.created[aggregate.id] = self.command_index

    def collect(self) -> list[DomainEventProtocol[UUID]]:
        """Move pending events of every touched aggregate into the unit's event list."""
        new: list[DomainEventProtocol[UUID]] = []
        for aggregate in self._handed.values():
            new.extend(aggregate.collect_events())
        self._handed.clear()
        self.events.extend(new)
        return new

    @property
    def aggregates(self) -> list[Any]:
        return [a for a in self._loaded.values() if a is not None]


def require_own(actor: Actor, provider_id: UUID, **what: str) -> None:
    """`what` names the thing acted on (account_id=…, post_id=…, provider_id=…)."""
    if actor.role is Role.PROVIDER and actor.provider_id != provider_id:
        raise errors.NotYourAccount(
            "a provider acts only on its own accounts and posts",
            **(what or {"provider_id": str(provider_id)}),
        )
