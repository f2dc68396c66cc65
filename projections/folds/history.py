"""history, flagged_posts and disclosures, folded: rows inserted once per event, with the
account and provider read from the posts and accounts folds (`projections.history`,
`projections.flagged_posts`, `projections.disclosures`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ledger.log import LoggedEvent
from ledger.ruleset import Ruleset
from projections.base import actor_id, actor_role
from projections.folds.accounts import AccountsFold
from projections.folds.base import Fold, Row, Unfoldable
from projections.folds.posts import PostsFold
from projections.history import SUMMARIES, _values


class OwnersFold(Fold):
    """Only who owns each account and post: what history needs of the posts and accounts
    folds, for a process that folds history alone (`projections.folds.run`). An account
    or post is known from the event that inserts its row there, and never changes owner."""

    name = "owners"

    def __init__(self, ruleset: Ruleset, folds: Mapping[str, Fold]) -> None:
        super().__init__(ruleset, folds)
        self.accounts: dict[str, str] = {}
        self.posts: dict[str, tuple[str, str]] = {}
        self.handlers = {"Account.Registered": self.registered, "Post.Published": self.published}

    def rows(self) -> Mapping[str, Iterable[Sequence[Any]]]:
        return {}

    def registered(self, e: LoggedEvent, oid: str) -> None:
        self.accounts.setdefault(oid, e.payload["provider_id"])

    def published(self, e: LoggedEvent, oid: str) -> None:
        self.posts.setdefault(oid, (e.payload["account_id"], e.payload["provider_id"]))

    def provider(self, account_id: str) -> str | None:
        return self.accounts.get(account_id)

    def owner(self, post_id: str) -> tuple[str, str] | None:
        return self.posts.get(post_id)


class _Owned(Fold):
    """A fold that reads owners: from the posts and accounts folds, or the owners one."""

    def __init__(self, ruleset: Ruleset, folds: Mapping[str, Fold]) -> None:
        super().__init__(ruleset, folds)
        posts, accounts = folds.get("posts"), folds.get("accounts")
        owners = folds.get("owners")
        self.posts: PostsFold | OwnersFold | None = (
            posts if isinstance(posts, PostsFold) else owners if isinstance(owners, OwnersFold)
            else None
        )  # fmt: skip
        self.accounts: AccountsFold | OwnersFold | None = (
            accounts if isinstance(accounts, AccountsFold)
            else owners if isinstance(owners, OwnersFold) else None
        )  # fmt: skip


class HistoryFold(_Owned):
    name = "history"
    columns = {
        "history": (
            "position", "account_id", "provider_id", "post_id", "type", "at", "actor_id",
            "actor_role", "rule_ids", "summary",
        )
    }  # fmt: skip

    def __init__(self, ruleset: Ruleset, folds: Mapping[str, Fold]) -> None:
        super().__init__(ruleset, folds)
        self.history: list[Row] = []
        self.handlers = {
            topic: self.account_event if topic.startswith("Account.") else self.post_event
            for topic in SUMMARIES
        }

    def rows(self) -> Mapping[str, Iterable[Sequence[Any]]]:
        return {"history": self.history}

    def account_event(self, e: LoggedEvent, oid: str) -> None:
        assert self.accounts is not None
        provider = self.accounts.provider(oid)
        if provider is not None:
            position, type_, at, who, role, rules, summary = _values(e)
            self.history.append([position, oid, provider, None, type_, at, who, role, rules,
                                 summary])  # fmt: skip

    def post_event(self, e: LoggedEvent, oid: str) -> None:
        assert self.posts is not None
        owner = self.posts.owner(oid)
        if owner is not None:
            position, type_, at, who, role, rules, summary = _values(e)
            self.history.append([position, owner[0], owner[1], oid, type_, at, who, role, rules,
                                 summary])  # fmt: skip


class FlaggedPostsFold(_Owned):
    name = "flagged_posts"
    columns = {
        "flagged_posts": (
            "post_id", "metric", "threshold", "value", "account_id", "provider_id",
            "crossed_at", "removed_at", "position",
        )
    }  # fmt: skip

    def __init__(self, ruleset: Ruleset, folds: Mapping[str, Fold]) -> None:
        super().__init__(ruleset, folds)
        self.flagged: dict[tuple[str, Any, Any], Row] = {}
        self.by_post: dict[str, list[Row]] = {}
        self.handlers = {"Post.ThresholdCrossed": self.crossed, "Post.Removed": self.removed}

    def rows(self) -> Mapping[str, Iterable[Sequence[Any]]]:
        return {"flagged_posts": self.flagged.values()}

    def crossed(self, e: LoggedEvent, oid: str) -> None:
        assert self.posts is not None
        owner = self.posts.owner(oid)
        if owner is None:
            return
        p = e.payload
        key = (oid, p["metric"], p["threshold"])
        if key in self.flagged:
            raise Unfoldable(f"post {oid} crossed {key[1:]} twice")
        row = [oid, p["metric"], p["threshold"], p["value"], owner[0], owner[1], e.timestamp,
               None, e.position]  # fmt: skip
        self.flagged[key] = row
        self.by_post.setdefault(oid, []).append(row)

    def removed(self, e: LoggedEvent, oid: str) -> None:
        for row in self.by_post.get(oid, ()):
            row[_REMOVED_AT] = e.timestamp


_REMOVED_AT = FlaggedPostsFold.columns["flagged_posts"].index("removed_at")


class DisclosuresFold(_Owned):
    name = "disclosures"
    columns = {
        "disclosures": (
            "position", "account_id", "provider_id", "at", "actor_id", "actor_role", "basis",
            "case_reference",
        )
    }  # fmt: skip

    def __init__(self, ruleset: Ruleset, folds: Mapping[str, Fold]) -> None:
        super().__init__(ruleset, folds)
        self.disclosures: list[Row] = []
        self.handlers = {"Account.IdentityDisclosed": self.disclosed}

    def rows(self) -> Mapping[str, Iterable[Sequence[Any]]]:
        return {"disclosures": self.disclosures}

    def disclosed(self, e: LoggedEvent, oid: str) -> None:
        assert self.accounts is not None
        provider = self.accounts.provider(oid)
        if provider is not None:
            p = e.payload
            self.disclosures.append([e.position, oid, provider, e.timestamp, actor_id(e),
                                     actor_role(e), p["basis"], p["case_reference"]])  # fmt: skip
