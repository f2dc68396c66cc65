"""One published item: its reach, the thresholds it crossed, reports and removal."""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict
from uuid import UUID

from eventsourcing.domain import Aggregate, event
from eventsourcing.domain import Snapshot as BaseSnapshot

from ledger import errors
from ledger.actors import SYSTEM, Actor
from ledger.ruleset import Ruleset


class Report(TypedDict):
    reporter: str
    reason: str
    reported_at: datetime
    outcome: str | None
    handler: Actor | None
    resolved_at: datetime | None
    seconds_to_resolve: float | None


class Post(Aggregate):
    TOPIC = "Post"

    class Event(Aggregate.Event):
        pass

    class Created(Event, Aggregate.Created):
        TOPIC = "Post.Created"

    class Snapshot(BaseSnapshot):
        TOPIC = "Post.Snapshot"

    @event("Published", topic="Post.Published")
    def __init__(
        self,
        id: UUID,
        account_id: UUID,
        provider_id: UUID,
        ref: str,
        origin: str,
        category: str,
        content_sha256: str,
        source_post_id: UUID | None,
        actor: Actor,
        timestamp: datetime,
    ) -> None:
        self.account_id = account_id
        self.provider_id = provider_id
        self.ref = ref
        self.origin = origin
        self.category = category
        self.content_sha256 = content_sha256
        self.source_post_id = source_post_id
        self.published_at = timestamp
        self.views = 0
        self.reposts = 0
        self.crossed: list[str] = []
        self.reports: dict[str, Report] = {}
        self.removed: dict[str, object] | None = None

    def require_not_removed(self) -> None:
        if self.removed is not None:
            raise errors.PostRemoved("the post was removed")

    def record_reach(
        self, views: int, reposts: int, ruleset: Ruleset, actor: Actor, now: datetime
    ) -> None:
        """Cumulative counts; never lower. Raises ThresholdCrossed once per threshold."""
        self.require_not_removed()
        if views < self.views or reposts < self.reposts:
            raise errors.ReachDecreased(
                f"reach is cumulative: views {self.views} and reposts {self.reposts} "
                "may not go down"
            )
        self._reach_recorded(views=views, reposts=reposts, actor=actor, timestamp=now)
        for metric, value in (("views", views), ("reposts", reposts)):
            for threshold in ruleset.thresholds[metric]:
                if value >= threshold and f"{metric}:{threshold}" not in self.crossed:
                    self._threshold_crossed(
                        metric=metric,
                        threshold=threshold,
                        value=value,
                        actor=SYSTEM,
                        timestamp=now,
                    )

    def report(
        self, report_id: UUID, reporter: str, reason: str, actor: Actor, now: datetime
    ) -> None:
        self.require_not_removed()
        self._reported(
            report_id=str(report_id), reporter=reporter, reason=reason, actor=actor, timestamp=now
        )

    def resolve_report(
        self, report_id: UUID, outcome: str, reason: str, actor: Actor, now: datetime
    ) -> None:
        report = self.reports.get(str(report_id))
        if report is None:
            raise errors.ReportNotFound("no such report on this post", report_id=str(report_id))
        if report["outcome"] is not None:
            raise errors.ReportAlreadyResolved("the report is already resolved")
        seconds = (now - report["reported_at"]).total_seconds()
        self._report_resolved(
            report_id=str(report_id),
            outcome=outcome,
            reason=reason,
            seconds_to_resolve=seconds,
            actor=actor,
            timestamp=now,
        )

    def remove(self, rule_ids: list[str], reason: str, actor: Actor, now: datetime) -> None:
        self.require_not_removed()
        self._removed(rule_ids=rule_ids, reason=reason, actor=actor, timestamp=now)

    @event("ReachRecorded", topic="Post.ReachRecorded")
    def _reach_recorded(self, views: int, reposts: int, actor: Actor, timestamp: datetime) -> None:
        self.views = views
        self.reposts = reposts

    @event("ThresholdCrossed", topic="Post.ThresholdCrossed")
    def _threshold_crossed(
        self, metric: str, threshold: int, value: int, actor: Actor, timestamp: datetime
    ) -> None:
        self.crossed = [*self.crossed, f"{metric}:{threshold}"]

    @event("Reported", topic="Post.Reported")
    def _reported(
        self, report_id: str, reporter: str, reason: str, actor: Actor, timestamp: datetime
    ) -> None:
        report = Report(
            reporter=reporter,
            reason=reason,
            reported_at=timestamp,
            outcome=None,
            handler=None,
            resolved_at=None,
            seconds_to_resolve=None,
        )
        self.reports = {**self.reports, report_id: report}

    @event("ReportResolved", topic="Post.ReportResolved")
    def _report_resolved(
        self,
        report_id: str,
        outcome: str,
        reason: str,
        seconds_to_resolve: float,
        actor: Actor,
        timestamp: datetime,
    ) -> None:
        resolved = Report(
            {
                **self.reports[report_id],
                "outcome": outcome,
                "handler": actor,
                "resolved_at": timestamp,
                "seconds_to_resolve": seconds_to_resolve,
            }
        )
        self.reports = {**self.reports, report_id: resolved}

    @event("Removed", topic="Post.Removed")
    def _removed(self, rule_ids: list[str], reason: str, actor: Actor, timestamp: datetime) -> None:
        self.removed = {
            "rule_ids": rule_ids,
            "reason": reason,
            "by": actor,
            "removed_at": timestamp,
        }
