"""An account at one provider: registration, identity, agreement, review, filing,
news permissions, the public mark, and sanctions with their appeals.

Public methods check the invariants that depend on this account alone and then trigger
an event; the `_`-prefixed methods are the events, applied on trigger and on replay.
Status depends on time (a suspension lapses at its expiry), so it takes `now`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypedDict
from uuid import UUID

from eventsourcing.domain import Aggregate, event
from eventsourcing.domain import Snapshot as BaseSnapshot

from ledger import errors
from ledger.actors import Actor
from ledger.ruleset import Ruleset


class AccountStatus(StrEnum):
    ACTIVE = "active"
    PUBLISHING_RESTRICTED = "publishing_restricted"
    UPDATES_SUSPENDED = "updates_suspended"
    CLOSED = "closed"


# Sanction levels that change an account's status, most severe first.
_STATUS_BY_LEVEL = (
    ("closed", AccountStatus.CLOSED),
    ("updates_suspended", AccountStatus.UPDATES_SUSPENDED),
    ("publishing_restricted", AccountStatus.PUBLISHING_RESTRICTED),
)


class Appeal(TypedDict):
    grounds: str
    filed_by: Actor
    filed_at: datetime
    outcome: str | None
    decided_by: Actor | None
    decided_at: datetime | None
    reason: str | None


class Sanction(TypedDict):
    id: str
    level: str
    rule_ids: list[str]
    evidence_post_ids: list[str]
    reason: str
    issuer: Actor
    imposed_at: datetime
    expires_at: datetime | None
    lifted_at: datetime | None
    lift_reason: str | None
    appeal: Appeal | None


def sanction_in_force(sanction: Sanction, now: datetime) -> bool:
    """Not lifted, not overturned on appeal, and not lapsed by its expiry."""
    appeal = sanction["appeal"]
    if sanction["lifted_at"] is not None or (appeal and appeal["outcome"] == "overturned"):
        return False
    expires = sanction["expires_at"]
    return expires is None or now < expires


class Account(Aggregate):
    TOPIC = "Account"

    class Event(Aggregate.Event):
        pass

    class Created(Event, Aggregate.Created):
        TOPIC = "Account.Created"

    class Snapshot(BaseSnapshot):
        TOPIC = "Account.Snapshot"

    @event("Registered", topic="Account.Registered")
    def __init__(
        self,
        id: UUID,
        provider_id: UUID,
        handle: str,
        kind: str,
        category: str | None,
        legacy: bool,
        actor: Actor,
        timestamp: datetime,
    ) -> None:
        self.provider_id = provider_id
        self.handle = handle
        self.kind = kind
        self.category = category
        self.legacy = legacy
        self.registered_at = timestamp
        self.identity: str | None = None
        self.verified_at: datetime | None = None
        self.verification_method: str | None = None
        self.verifier: str | None = None
        self.agreement: dict[str, Any] | None = None
        self.review: dict[str, Any] | None = None
        self.filing: dict[str, Any] | None = None
        self.news_grants: dict[str, dict[str, Any]] = {}
        self.marked = False
        self.sanctions: dict[str, Sanction] = {}
        self.identity_erased = False

    # ----- derived state -------------------------------------------------------------

    @property
    def is_public(self) -> bool:
        return self.kind == "public"

    @property
    def verified(self) -> bool:
        """A real identity is held: verified, and not erased since."""
        return self.verified_at is not None and not self.identity_erased

    def agreement_current(self, ruleset: Ruleset) -> bool:
        a = self.agreement
        current = ruleset.agreement
        return a is not None and (a["id"], a["version"]) == (current.id, current.version)

    @property
    def approved(self) -> bool:
        return self.review is not None and self.review["outcome"] == "approved"

    def news_scopes(self, ruleset: Ruleset) -> frozenset[str]:
        """Political-news scopes held: the category's defaults and any grants."""
        if not self.is_public:
            return frozenset()
        return ruleset.default_scopes(self.category) | frozenset(self.news_grants)

    def sanctions_in_force(self, now: datetime) -> list[Sanction]:
        return [s for s in self.sanctions.values() if sanction_in_force(s, now)]

    def status(self, now: datetime) -> AccountStatus:
        levels = {s["level"] for s in self.sanctions_in_force(now)}
        for level, status in _STATUS_BY_LEVEL:
            if level in levels:
                return status
        return AccountStatus.ACTIVE

    def limited_as_legacy(self, ruleset: Ruleset) -> bool:
        return self.legacy and not (self.verified and self.agreement_current(ruleset))

    def expiring_sanctions(self, until: datetime, now: datetime) -> list[Sanction]:
        """Sanctions still recorded as active whose expiry falls before `until`."""
        return [
            s
            for s in self.sanctions.values()
            if s["expires_at"] is not None
            and s["expires_at"] <= until
            and sanction_in_force(s, min(now, s["expires_at"] - timedelta(microseconds=1)))
        ]

    # ----- guards ---------------------------------------------------------------------

    def require_not_closed(self, now: datetime) -> None:
        if self.status(now) is AccountStatus.CLOSED:
            raise errors.AccountClosed(
                "the account is closed; only an appeal of its closure can reopen it",
                account_id=str(self.id),
            )

    def require_public(self, what: str) -> None:
        if not self.is_public:
            raise errors.NotPublicAccount(f"{what} applies to public accounts only")

    def require_may_publish(self, ruleset: Ruleset, now: datetime) -> None:
        """The account-level conditions of publishing, in the order a reader expects."""
        status = self.status(now)
        if status is AccountStatus.CLOSED:
            self.require_not_closed(now)
        if status is AccountStatus.UPDATES_SUSPENDED:
            raise errors.AccountSuspended("the account's updates are suspended")
        if status is AccountStatus.PUBLISHING_RESTRICTED:
            raise errors.PublishingRestricted("the account's publishing is restricted")
        if self.limited_as_legacy(ruleset):
            raise errors.LegacyAccessLimited(
                "a legacy account may not publish until it verifies its identity "
                "and signs the current agreement"
            )
        if not self.verified:
            raise errors.AccountNotVerified("the account's real identity is not verified")
        if not self.agreement_current(ruleset):
            raise errors.AgreementNotSigned("the account has not signed the current agreement")
        if self.is_public and not self.approved:
            raise errors.AccountNotApproved("a public account must be reviewed and approved")

    def require_news_scope(self, origin: str, ruleset: Ruleset) -> None:
        scopes = self.news_scopes(ruleset)
        needed = {"publish"} if origin == "original" else {"publish", "reprint"}
        if not scopes & needed:
            what = "publish original" if origin == "original" else "reprint"
            raise errors.PoliticalNewsNotPermitted(
                f"the account may not {what} current political news"
            )

    def sanction(self, sanction_id: UUID | str) -> Sanction:
        try:
            return self.sanctions[str(sanction_id)]
        except KeyError:
            raise errors.SanctionNotFound(
                "no such sanction on this account", sanction_id=str(sanction_id)
            ) from None

    # ----- commands -------------------------------------------------------------------

    def verify_identity(
        self, sealed: str, method: str, verifier: str, actor: Actor, now: datetime
    ) -> None:
        self.require_not_closed(now)
        self._identity_verified(
            identity=sealed, method=method, verifier=verifier, actor=actor, timestamp=now
        )

    def erase_identity(self, reason: str, actor: Actor, now: datetime) -> None:
        # Allowed on a closed account too: erasure is the holder's right, not a change
        # to the account's standing.
        if self.identity is None:
            raise errors.InvalidArgument("the account holds no identity to erase")
        self._identity_erased(reason=reason, actor=actor, timestamp=now)

    def disclose_identity(
        self, basis: str, case_reference: str, actor: Actor, now: datetime
    ) -> str:
        """Record that the identity is disclosed (who, when, on what basis, for which
        case; never the identity itself); return the sealed identity to open."""
        if self.identity_erased:
            raise errors.IdentityErased("the account's identity was erased")
        if self.identity is None:
            raise errors.AccountNotVerified("the account's real identity was never verified")
        self._identity_disclosed(
            basis=basis, case_reference=case_reference, actor=actor, timestamp=now
        )
        return self.identity

    def sign_agreement(
        self,
        agreement_id: str,
        version: str,
        sha256: str,
        baselines: list[str],
        ruleset: Ruleset,
        actor: Actor,
        now: datetime,
    ) -> None:
        self.require_not_closed(now)
        current = ruleset.agreement
        if (agreement_id, version, sha256.lower()) != (current.id, current.version, current.sha256):
            raise errors.UnknownAgreement(
                f"the current agreement is {current.id} version {current.version} "
                f"with SHA-256 {current.sha256}"
            )
        missing = sorted(set(current.baselines) - set(baselines))
        if missing:
            raise errors.BaselinesIncomplete("every bottom line must be accepted", missing=missing)
        self._agreement_signed(
            agreement_id=agreement_id,
            version=version,
            sha256=sha256.lower(),
            baselines=sorted(set(baselines)),
            actor=actor,
            timestamp=now,
        )

    def record_review(self, outcome: str, reason: str, actor: Actor, now: datetime) -> None:
        self.require_not_closed(now)
        self.require_public("review")
        self._reviewed(outcome=outcome, reason=reason, actor=actor, timestamp=now)

    def file(
        self, authority: str, reference: str, category: str, actor: Actor, now: datetime
    ) -> None:
        self.require_not_closed(now)
        self.require_public("filing")
        if not self.approved:
            raise errors.AccountNotApproved("only a reviewed and approved account is filed")
        if category != self.category:
            raise errors.CategoryMismatch(
                f"the account is registered as {self.category}, not {category}"
            )
        self._filed(
            authority=authority, reference=reference, category=category, actor=actor, timestamp=now
        )

    def grant_news_permission(
        self, scope: str, basis: str, ruleset: Ruleset, actor: Actor, now: datetime
    ) -> None:
        self.require_not_closed(now)
        self.require_public("a news permission")
        if scope in self.news_scopes(ruleset):
            raise errors.NewsPermissionAlreadyHeld(f"the account already holds scope {scope}")
        self._news_permission_granted(scope=scope, basis=basis, actor=actor, timestamp=now)

    def revoke_news_permission(
        self, scope: str, reason: str, ruleset: Ruleset, actor: Actor, now: datetime
    ) -> None:
        self.require_not_closed(now)
        if scope not in self.news_grants:
            raise errors.NewsPermissionNotHeld(f"the account holds no grant of scope {scope}")
        self._news_permission_revoked(scope=scope, reason=reason, actor=actor, timestamp=now)
        if self.marked and not self.news_scopes(ruleset):
            self._unmarked(reason="news permission revoked", actor=actor, timestamp=now)

    def mark(self, ruleset: Ruleset, actor: Actor, now: datetime) -> None:
        self.require_not_closed(now)
        self.require_public("the political-news mark")
        if self.marked:
            raise errors.AlreadyMarked("the account is already marked")
        if not self.news_scopes(ruleset):
            raise errors.PoliticalNewsNotPermitted(
                "only an account allowed political news may be marked"
            )
        self._marked(actor=actor, timestamp=now)

    def unmark(self, reason: str, actor: Actor, now: datetime) -> None:
        self.require_not_closed(now)
        if not self.marked:
            raise errors.NotMarked("the account is not marked")
        self._unmarked(reason=reason, actor=actor, timestamp=now)

    def impose_sanction(
        self,
        sanction_id: UUID,
        level: str,
        rule_ids: list[str],
        evidence_post_ids: list[str],
        reason: str,
        duration_days: int | None,
        ruleset: Ruleset,
        actor: Actor,
        now: datetime,
    ) -> None:
        self.require_not_closed(now)
        if level not in ruleset.ladder:
            raise errors.UnknownSanctionLevel(
                f"{level!r} is not on the ladder {list(ruleset.ladder)}"
            )
        allowed = ruleset.durations.get(level, ())
        if (duration_days is not None or allowed) and duration_days not in allowed:
            shown = ["indefinite" if d is None else d for d in allowed] or "none"
            raise errors.DurationNotAllowed(
                f"a {level} allows durations {shown}, not {duration_days or 'indefinite'}"
            )
        expires = now + timedelta(days=duration_days) if duration_days else None
        self._sanction_imposed(
            sanction_id=str(sanction_id),
            level=level,
            rule_ids=rule_ids,
            evidence_post_ids=evidence_post_ids,
            reason=reason,
            expires_at=expires,
            actor=actor,
            timestamp=now,
        )

    def lift_sanction(self, sanction_id: UUID, reason: str, actor: Actor, now: datetime) -> None:
        sanction = self.sanction(sanction_id)
        if sanction["level"] != "closed":
            self.require_not_closed(now)
        if not sanction_in_force(sanction, now):
            raise errors.SanctionNotActive("the sanction is no longer in force")
        if sanction["level"] == "closed":
            raise errors.AccountClosed("a closure is undone only by an overturning appeal")
        self._sanction_lifted(
            sanction_id=str(sanction_id), reason=reason, actor=actor, timestamp=now
        )

    def appeal_sanction(self, sanction_id: UUID, grounds: str, actor: Actor, now: datetime) -> None:
        sanction = self.sanction(sanction_id)
        if sanction["appeal"] is not None:
            raise errors.AppealAlreadyFiled("a sanction may be appealed once")
        if sanction["lifted_at"] is not None:
            raise errors.SanctionNotActive("the sanction was lifted")
        self._sanction_appealed(
            sanction_id=str(sanction_id), grounds=grounds, actor=actor, timestamp=now
        )

    def decide_appeal(
        self, sanction_id: UUID, outcome: str, reason: str, actor: Actor, now: datetime
    ) -> None:
        appeal = self.sanction(sanction_id)["appeal"]
        if appeal is None or appeal["outcome"] is not None:
            raise errors.NoPendingAppeal("the sanction has no pending appeal")
        self._appeal_decided(
            sanction_id=str(sanction_id), outcome=outcome, reason=reason, actor=actor, timestamp=now
        )

    # ----- events ---------------------------------------------------------------------

    @event("IdentityVerified", topic="Account.IdentityVerified")
    def _identity_verified(
        self, identity: str, method: str, verifier: str, actor: Actor, timestamp: datetime
    ) -> None:
        self.identity = identity
        self.verification_method = method
        self.verifier = verifier
        self.verified_at = timestamp
        self.identity_erased = False

    @event("IdentityErased", topic="Account.IdentityErased")
    def _identity_erased(self, reason: str, actor: Actor, timestamp: datetime) -> None:
        self.identity = None
        self.identity_erased = True

    @event("IdentityDisclosed", topic="Account.IdentityDisclosed")
    def _identity_disclosed(
        self, basis: str, case_reference: str, actor: Actor, timestamp: datetime
    ) -> None:
        pass

    @event("AgreementSigned", topic="Account.AgreementSigned")
    def _agreement_signed(
        self,
        agreement_id: str,
        version: str,
        sha256: str,
        baselines: list[str],
        actor: Actor,
        timestamp: datetime,
    ) -> None:
        self.agreement = {
            "id": agreement_id,
            "version": version,
            "sha256": sha256,
            "baselines": baselines,
            "signed_at": timestamp,
        }

    @event("Reviewed", topic="Account.Reviewed")
    def _reviewed(self, outcome: str, reason: str, actor: Actor, timestamp: datetime) -> None:
        self.review = {
            "outcome": outcome,
            "reason": reason,
            "reviewer": actor,
            "reviewed_at": timestamp,
        }

    @event("Filed", topic="Account.Filed")
    def _filed(
        self, authority: str, reference: str, category: str, actor: Actor, timestamp: datetime
    ) -> None:
        self.filing = {
            "authority": authority,
            "reference": reference,
            "category": category,
            "filed_at": timestamp,
        }

    @event("NewsPermissionGranted", topic="Account.NewsPermissionGranted")
    def _news_permission_granted(
        self, scope: str, basis: str, actor: Actor, timestamp: datetime
    ) -> None:
        grant = {"basis": basis, "granted_by": actor, "granted_at": timestamp}
        self.news_grants = {**self.news_grants, scope: grant}

    @event("NewsPermissionRevoked", topic="Account.NewsPermissionRevoked")
    def _news_permission_revoked(
        self, scope: str, reason: str, actor: Actor, timestamp: datetime
    ) -> None:
        self.news_grants = {k: v for k, v in self.news_grants.items() if k != scope}

    @event("Marked", topic="Account.Marked")
    def _marked(self, actor: Actor, timestamp: datetime) -> None:
        self.marked = True

    @event("Unmarked", topic="Account.Unmarked")
    def _unmarked(self, reason: str, actor: Actor, timestamp: datetime) -> None:
        self.marked = False

    @event("SanctionImposed", topic="Account.SanctionImposed")
    def _sanction_imposed(
        self,
        sanction_id: str,
        level: str,
        rule_ids: list[str],
        evidence_post_ids: list[str],
        reason: str,
        expires_at: datetime | None,
        actor: Actor,
        timestamp: datetime,
    ) -> None:
        self._put_sanction(
            Sanction(
                id=sanction_id,
                level=level,
                rule_ids=rule_ids,
                evidence_post_ids=evidence_post_ids,
                reason=reason,
                issuer=actor,
                imposed_at=timestamp,
                expires_at=expires_at,
                lifted_at=None,
                lift_reason=None,
                appeal=None,
            )
        )

    @event("SanctionLifted", topic="Account.SanctionLifted")
    def _sanction_lifted(
        self, sanction_id: str, reason: str, actor: Actor, timestamp: datetime
    ) -> None:
        self._put_sanction(
            {**self.sanctions[sanction_id], "lifted_at": timestamp, "lift_reason": reason}
        )

    @event("SanctionAppealed", topic="Account.SanctionAppealed")
    def _sanction_appealed(
        self, sanction_id: str, grounds: str, actor: Actor, timestamp: datetime
    ) -> None:
        appeal = Appeal(
            grounds=grounds,
            filed_by=actor,
            filed_at=timestamp,
            outcome=None,
            decided_by=None,
            decided_at=None,
            reason=None,
        )
        self._put_sanction({**self.sanctions[sanction_id], "appeal": appeal})

    @event("AppealDecided", topic="Account.AppealDecided")
    def _appeal_decided(
        self, sanction_id: str, outcome: str, reason: str, actor: Actor, timestamp: datetime
    ) -> None:
        sanction = self.sanctions[sanction_id]
        appeal = sanction["appeal"]
        assert appeal is not None
        decided = Appeal(
            {
                **appeal,
                "outcome": outcome,
                "decided_by": actor,
                "decided_at": timestamp,
                "reason": reason,
            }
        )
        self._put_sanction({**sanction, "appeal": decided})

    def _put_sanction(self, sanction: Sanction) -> None:
        # Copy on write: state is replaced, never changed in place, so a copy of the
        # aggregate that shares its containers cannot change the original.
        self.sanctions = {**self.sanctions, sanction["id"]: sanction}
