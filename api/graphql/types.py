"""The GraphQL object types, each built from a read-table row.

The types import none of the modules that read (reads, loaders, queries): a nested
field loads through the request's DataLoaders, which the context holds
(`info.context.loaders`, made in api.graphql.loaders)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, Generic, TypeVar
from uuid import UUID

import strawberry
from strawberry.scalars import JSON

from api.graphql.scalars import Position
from projections.statements import statement_of_reasons

T = TypeVar("T")


@strawberry.enum
class AccountStatus(Enum):
    ACTIVE = "active"
    PUBLISHING_RESTRICTED = "publishing_restricted"
    UPDATES_SUSPENDED = "updates_suspended"
    CLOSED = "closed"


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo


@strawberry.type
class Actor:
    id: str
    role: str
    provider_id: strawberry.ID | None

    @classmethod
    def of(cls, data: dict[str, Any] | None) -> Actor | None:
        if not data:
            return None
        return cls(id=data["id"], role=data["role"], provider_id=data.get("provider_id"))


@strawberry.type
class LevelCount:
    level: str
    count: int


@strawberry.type
class ActiveSanction:
    sanction_id: strawberry.ID
    level: str
    expires_at: datetime | None


@strawberry.type
class Account:
    id: strawberry.ID
    provider_id: strawberry.ID
    handle: str
    kind: str
    category: str | None
    legacy: bool
    registered_at: datetime
    verified: bool
    verified_at: datetime | None
    verification_method: str | None
    agreement_version: str | None
    agreement_signed_at: datetime | None
    review_outcome: str | None
    reviewed_at: datetime | None
    filing_reference: str | None
    filed_at: datetime | None
    news_scopes: list[str]
    marked: bool
    status: AccountStatus
    active_sanctions: list[ActiveSanction]
    sanctions_by_level: list[LevelCount]
    post_count: int
    last_position: Position  # type: ignore[valid-type]

    @classmethod
    def of(cls, r: dict[str, Any]) -> Account:
        now = r["now"]
        return cls(
            id=strawberry.ID(str(r["account_id"])),
            provider_id=strawberry.ID(str(r["provider_id"])),
            handle=r["handle"],
            kind=r["kind"],
            category=r["category"],
            legacy=r["legacy"],
            registered_at=r["registered_at"],
            verified=r["verified"],
            verified_at=r["verified_at"],
            verification_method=r["verification_method"],
            agreement_version=r["agreement_version"],
            agreement_signed_at=r["agreement_signed_at"],
            review_outcome=r["review_outcome"],
            reviewed_at=r["reviewed_at"],
            filing_reference=r["filing_reference"],
            filed_at=r["filed_at"],
            news_scopes=r["news_scopes"],
            marked=r["marked"],
            status=AccountStatus(r["status"]),
            active_sanctions=[
                ActiveSanction(
                    sanction_id=strawberry.ID(s["sanction_id"]),
                    level=s["level"],
                    expires_at=datetime.fromisoformat(s["expires_at"]) if s["expires_at"] else None,
                )
                for s in r["active_sanctions"]
                if not s["expires_at"] or datetime.fromisoformat(s["expires_at"]) > now
            ],
            sanctions_by_level=[
                LevelCount(level=k, count=v) for k, v in sorted(r["sanctions_by_level"].items())
            ],
            post_count=r["post_count"],
            last_position=r["last_position"],
        )


@strawberry.type
class Sanction:
    id: strawberry.ID
    account_id: strawberry.ID
    provider_id: strawberry.ID
    level: str
    rule_ids: list[str]
    evidence_post_ids: list[strawberry.ID]
    reason: str
    issuer_id: str
    issuer_role: str
    imposed_at: datetime
    expires_at: datetime | None
    lifted_at: datetime | None
    lift_reason: str | None
    appeal_state: str
    appeal_grounds: str | None
    appeal_decided_at: datetime | None
    appeal_reason: str | None
    position: Position  # type: ignore[valid-type]

    @strawberry.field(description="The sanctioned account (batched per request).")
    async def account(self, info: strawberry.Info) -> Account | None:
        return await _account(info, self.account_id)

    @strawberry.field(
        description="The sanction as a statement of reasons in the schema of the EU DSA"
        " Transparency Database (puid: the sanction's id; no personal data)."
    )
    def statement_of_reasons(self, info: strawberry.Info) -> JSON:
        row = {
            "sanction_id": self.id, "level": self.level, "rule_ids": self.rule_ids,
            "evidence_post_ids": self.evidence_post_ids, "issuer_role": self.issuer_role,
            "imposed_at": self.imposed_at, "expires_at": self.expires_at,
        }  # fmt: skip
        return statement_of_reasons(row, info.context.state.ledger.ruleset)

    @classmethod
    def of(cls, r: dict[str, Any]) -> Sanction:
        return cls(
            id=strawberry.ID(str(r["sanction_id"])),
            account_id=strawberry.ID(str(r["account_id"])),
            provider_id=strawberry.ID(str(r["provider_id"])),
            level=r["level"],
            rule_ids=r["rule_ids"],
            evidence_post_ids=[strawberry.ID(str(p)) for p in r["evidence_post_ids"]],
            reason=r["reason"],
            issuer_id=r["issuer_id"],
            issuer_role=r["issuer_role"],
            imposed_at=r["imposed_at"],
            expires_at=r["expires_at"],
            lifted_at=r["lifted_at"],
            lift_reason=r["lift_reason"],
            appeal_state=r["appeal_state"],
            appeal_grounds=r["appeal_grounds"],
            appeal_decided_at=r["appeal_decided_at"],
            appeal_reason=r["appeal_reason"],
            position=r["position"],
        )


@strawberry.type
class HistoryEntry:
    position: Position  # type: ignore[valid-type]
    account_id: strawberry.ID
    post_id: strawberry.ID | None
    type: str
    at: datetime
    actor_id: str | None
    actor_role: str | None
    rule_ids: list[str]
    summary: str

    @classmethod
    def of(cls, r: dict[str, Any]) -> HistoryEntry:
        return cls(
            position=r["position"],
            account_id=strawberry.ID(str(r["account_id"])),
            post_id=strawberry.ID(str(r["post_id"])) if r["post_id"] else None,
            type=r["type"],
            at=r["at"],
            actor_id=r["actor_id"],
            actor_role=r["actor_role"],
            rule_ids=r["rule_ids"],
            summary=r["summary"],
        )


@strawberry.type
class Post:
    id: strawberry.ID
    account_id: strawberry.ID
    provider_id: strawberry.ID
    ref: str
    origin: str
    category: str
    content_sha256: str
    source_post_id: strawberry.ID | None
    published_at: datetime
    views: int
    reposts: int
    reports_open: int
    reports_total: int
    removed_at: datetime | None
    removal_reason: str | None
    position: Position  # type: ignore[valid-type]

    @strawberry.field(description="The account that published it (batched per request).")
    async def account(self, info: strawberry.Info) -> Account | None:
        return await _account(info, self.account_id)

    @classmethod
    def of(cls, r: dict[str, Any]) -> Post:
        return cls(
            id=strawberry.ID(str(r["post_id"])),
            account_id=strawberry.ID(str(r["account_id"])),
            provider_id=strawberry.ID(str(r["provider_id"])),
            ref=r["ref"],
            origin=r["origin"],
            category=r["category"],
            content_sha256=r["content_sha256"],
            source_post_id=strawberry.ID(str(r["source_post_id"])) if r["source_post_id"] else None,
            published_at=r["published_at"],
            views=r["views"],
            reposts=r["reposts"],
            reports_open=r["reports_open"],
            reports_total=r["reports_total"],
            removed_at=r["removed_at"],
            removal_reason=r["removal_reason"],
            position=r["position"],
        )


@strawberry.type
class FlaggedPost:
    post_id: strawberry.ID
    account_id: strawberry.ID
    provider_id: strawberry.ID
    metric: str
    threshold: int
    value: int
    crossed_at: datetime
    removed: bool
    removed_at: datetime | None
    position: Position  # type: ignore[valid-type]

    @strawberry.field(description="The post (batched per request).")
    async def post(self, info: strawberry.Info) -> Post | None:
        row = await info.context.loaders.posts.load(UUID(self.post_id))
        return Post.of(row) if row else None

    @strawberry.field(description="The account (batched per request).")
    async def account(self, info: strawberry.Info) -> Account | None:
        return await _account(info, self.account_id)

    @classmethod
    def of(cls, r: dict[str, Any]) -> FlaggedPost:
        return cls(
            post_id=strawberry.ID(str(r["post_id"])),
            account_id=strawberry.ID(str(r["account_id"])),
            provider_id=strawberry.ID(str(r["provider_id"])),
            metric=r["metric"],
            threshold=r["threshold"],
            value=r["value"],
            crossed_at=r["crossed_at"],
            removed=r["removed_at"] is not None,
            removed_at=r["removed_at"],
            position=r["position"],
        )


@strawberry.type
class Count:
    key: str
    count: int


def counts(mapping: dict[str, int]) -> list[Count]:
    return [Count(key=k, count=v) for k, v in sorted(mapping.items())]


@strawberry.type
class Provider:
    id: strawberry.ID
    code: str
    name: str
    licence_ref: str
    registered_at: datetime
    qualifications: JSON
    accounts: int
    accounts_by_kind: list[Count]
    accounts_by_status: list[Count]
    share_verified: float | None
    share_public_reviewed: float | None
    share_public_filed: float | None
    sanctions_by_level: list[Count]
    sanctions_by_issuer_role: list[Count]
    open_reports: int
    resolution_seconds_p50: float | None
    resolution_seconds_p95: float | None

    @classmethod
    def of(cls, f: dict[str, Any]) -> Provider:
        return cls(
            id=strawberry.ID(str(f["provider_id"])),
            code=f["code"],
            name=f["name"],
            licence_ref=f["licence_ref"],
            registered_at=f["registered_at"],
            qualifications=f["qualifications"],
            accounts=f["accounts"],
            accounts_by_kind=counts(f["accounts_by_kind"]),
            accounts_by_status=counts(f["accounts_by_status"]),
            share_verified=f["share_verified"],
            share_public_reviewed=f["share_public_reviewed"],
            share_public_filed=f["share_public_filed"],
            sanctions_by_level=counts(f["sanctions_by_level"]),
            sanctions_by_issuer_role=counts(f["sanctions_by_issuer_role"]),
            open_reports=f["open_reports"],
            resolution_seconds_p50=f["resolution_seconds_p50"],
            resolution_seconds_p95=f["resolution_seconds_p95"],
        )


@strawberry.type
class LogEvent:
    position: Position  # type: ignore[valid-type]
    cursor: str
    type: str
    originator_id: strawberry.ID
    originator_version: int
    at: datetime
    actor: Actor | None
    payload: JSON


@strawberry.type
class AccountAsOf:
    id: strawberry.ID
    as_of_position: Position | None  # type: ignore[valid-type]
    as_of_time: datetime
    version: int
    status: AccountStatus
    state: JSON


@strawberry.type
class ProjectionLag:
    name: str
    position: Position  # type: ignore[valid-type]
    lag_events: int
    lag_seconds: float
    failures: int = strawberry.field(
        description="Events this projection could not apply and skipped (dead letters)."
    )


@strawberry.type
class LedgerStatus:
    head: Position  # type: ignore[valid-type]
    projections: list[ProjectionLag]


async def _account(info: strawberry.Info, account_id: str) -> Account | None:
    row = await info.context.loaders.accounts.load(UUID(account_id))
    return Account.of(row) if row else None
