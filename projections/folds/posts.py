"""posts, folded: mirrors `projections.posts`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ledger.log import LoggedEvent
from ledger.ruleset import Ruleset
from projections.folds.base import Fold, Row, insert

COLUMNS = (
    "post_id", "account_id", "provider_id", "ref", "origin", "category", "content_sha256",
    "source_post_id", "published_at", "views", "reposts", "reports_open", "reports_total",
    "removed_at", "removal_reason", "removal_rule_ids", "position", "last_position",
)  # fmt: skip
_AT = {name: i for i, name in enumerate(COLUMNS)}
ACCOUNT, PROVIDER, VIEWS, REPOSTS = (
    _AT["account_id"],
    _AT["provider_id"],
    _AT["views"],
    _AT["reposts"],
)
OPEN, TOTAL, LAST = _AT["reports_open"], _AT["reports_total"], _AT["last_position"]
REMOVED_AT, REASON, RULES = _AT["removed_at"], _AT["removal_reason"], _AT["removal_rule_ids"]


class PostsFold(Fold):
    name = "posts"
    columns = {"posts": COLUMNS}

    def __init__(self, ruleset: Ruleset, folds: Mapping[str, Fold]) -> None:
        super().__init__(ruleset, folds)
        self.posts: dict[str, Row] = {}
        self.handlers = {
            "Post.Published": self.published,
            "Post.ReachRecorded": self.reach,
            "Post.ThresholdCrossed": self.touched,
            "Post.Reported": self.reported,
            "Post.ReportResolved": self.resolved,
            "Post.Removed": self.removed,
        }

    def rows(self) -> Mapping[str, Iterable[Sequence[Any]]]:
        return {"posts": self.posts.values()}

    def published(self, e: LoggedEvent, oid: str) -> None:
        p = e.payload
        insert(self.posts, oid, [
            oid, p["account_id"], p["provider_id"], p["ref"], p["origin"], p["category"],
            p["content_sha256"], p["source_post_id"], e.timestamp, 0, 0, 0, 0, None, None,
            None, e.position, e.position,
        ])  # fmt: skip

    def reach(self, e: LoggedEvent, oid: str) -> None:
        row = self.posts.get(oid)
        if row is not None:
            row[VIEWS], row[REPOSTS] = e.payload["views"], e.payload["reposts"]
            row[LAST] = e.position

    def touched(self, e: LoggedEvent, oid: str) -> None:
        row = self.posts.get(oid)
        if row is not None:
            row[LAST] = e.position

    def reported(self, e: LoggedEvent, oid: str) -> None:
        row = self.posts.get(oid)
        if row is not None:
            row[OPEN] += 1
            row[TOTAL] += 1
            row[LAST] = e.position

    def resolved(self, e: LoggedEvent, oid: str) -> None:
        row = self.posts.get(oid)
        if row is not None:
            row[OPEN] -= 1
            row[LAST] = e.position

    def removed(self, e: LoggedEvent, oid: str) -> None:
        row = self.posts.get(oid)
        if row is not None:
            row[REMOVED_AT], row[REASON] = e.timestamp, e.payload["reason"]
            row[RULES], row[LAST] = e.payload["rule_ids"], e.position

    def owner(self, post_id: str) -> tuple[str, str] | None:
        """(account, provider) of a post, if it is known."""
        row = self.posts.get(post_id)
        return None if row is None else (row[ACCOUNT], row[PROVIDER])
