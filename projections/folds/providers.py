"""providers and reports, folded: mirrors `projections.providers`; the report figures and
resolution buckets are recounted in SQL from the written rows (`providers.RECOUNT`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ledger.log import LoggedEvent
from ledger.ruleset import Ruleset
from projections import providers
from projections.base import actor_id, actor_role
from projections.folds.base import Fold, Row, insert, statements, with_jsonb
from projections.folds.posts import PostsFold

PROVIDER_COLUMNS = (
    "provider_id", "code", "name", "licence_ref", "registered_at", "qualifications",
    "position", "last_position",
)  # fmt: skip
REPORT_COLUMNS = (
    "report_id", "post_id", "account_id", "provider_id", "reason", "reported_at", "outcome",
    "resolved_at", "handler_id", "handler_role", "seconds_to_resolve", "resolution_bucket",
    "position",
)  # fmt: skip
QUALIFICATIONS = PROVIDER_COLUMNS.index("qualifications")
LAST = PROVIDER_COLUMNS.index("last_position")
# A resolution sets these, in this order.
RESOLVED = slice(REPORT_COLUMNS.index("outcome"), REPORT_COLUMNS.index("resolution_bucket") + 1)


class ProvidersFold(Fold):
    name = "providers"
    columns = {"providers": PROVIDER_COLUMNS, "reports": REPORT_COLUMNS}
    after = statements(providers.RECOUNT)

    def __init__(self, ruleset: Ruleset, folds: Mapping[str, Fold]) -> None:
        super().__init__(ruleset, folds)
        posts = folds["posts"]
        assert isinstance(posts, PostsFold)
        self.posts = posts
        self.providers: dict[str, Row] = {}
        self.reports: dict[str, Row] = {}
        self.handlers = {
            "Provider.Registered": self.registered,
            "Provider.QualificationRecorded": self.qualified,
            "Post.Reported": self.reported,
            "Post.ReportResolved": self.resolved,
        }

    def rows(self) -> Mapping[str, Iterable[Sequence[Any]]]:
        return {
            "providers": with_jsonb(self.providers.values(), (QUALIFICATIONS,)),
            "reports": self.reports.values(),
        }

    def registered(self, e: LoggedEvent, oid: str) -> None:
        p = e.payload
        insert(self.providers, oid, [
            oid, p["code"], p["name"], p["licence_ref"], e.timestamp, [], e.position, e.position
        ])  # fmt: skip

    def qualified(self, e: LoggedEvent, oid: str) -> None:
        row = self.providers.get(oid)
        if row is not None:
            entry = {**e.payload, "recorded_at": e.timestamp.isoformat()}
            row[QUALIFICATIONS] = [*row[QUALIFICATIONS], entry]
            row[LAST] = e.position

    def reported(self, e: LoggedEvent, oid: str) -> None:
        owner = self.posts.owner(oid)
        if owner is None:
            return
        p = e.payload
        insert(self.reports, p["report_id"], [
            p["report_id"], oid, owner[0], owner[1], p["reason"], e.timestamp, None, None, None,
            None, None, None, e.position,
        ])  # fmt: skip

    def resolved(self, e: LoggedEvent, _: str) -> None:
        p = e.payload
        row = self.reports.get(p["report_id"])
        if row is not None:
            seconds = p["seconds_to_resolve"]
            row[RESOLVED] = [p["outcome"], e.timestamp, actor_id(e), actor_role(e), seconds,
                         providers.resolution_bucket(seconds)]  # fmt: skip
