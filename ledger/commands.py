"""The commands: one frozen dataclass each, validated on construction, executed
against a unit of work. Every command names its actor and carries an idempotency key.

A command checks who may issue it (`roles`), loads what it needs, and calls the
aggregates, which check their own invariants. It returns a small JSON-able result.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any, ClassVar
from uuid import UUID, uuid4

from ledger import errors, webhooks
from ledger.actors import Actor, Role
from ledger.domain import EVENT_TYPES, Account, Post, Provider, ids
from ledger.ruleset import NEWS_SCOPES
from ledger.text import check_text
from ledger.unit_of_work import UnitOfWork, require_own

P, R, S = Role.PROVIDER, Role.REGULATOR, Role.SYSTEM
MAX_TEXT = 2000
MAX_ITEM = 200
MAX_ITEMS = 100
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
ACCOUNT_KINDS = ("personal", "public")
POST_ORIGINS = ("original", "reprint")
POST_CATEGORIES = ("political_news", "other")
REVIEW_OUTCOMES = ("approved", "rejected")
APPEAL_OUTCOMES = ("upheld", "overturned")
REPORT_OUTCOMES = ("upheld", "dismissed")


@dataclass(frozen=True, kw_only=True)
class Command:
    actor: Actor
    idempotency_key: str
    roles: ClassVar[frozenset[Role]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A command's docstring is its description in the GraphQL schema and GraphiQL
        # (what it records, who may issue it, the article it serves): one paragraph,
        # without the source's line breaks and indentation.
        if cls.__doc__:
            cls.__doc__ = " ".join(cls.__doc__.split())

    def __post_init__(self) -> None:
        if not isinstance(self.actor, Actor):
            raise errors.InvalidArgument("actor must be an Actor")
        key = self.idempotency_key
        if not isinstance(key, str) or not 1 <= len(key) <= 200:
            raise errors.InvalidArgument("idempotency_key must be 1 to 200 characters")
        check_text("idempotency_key", key)
        self._check_strings()
        self.validate()

    def _check_strings(self) -> None:
        # Every string field, before any other check: what the database cannot store
        # must never reach the log. `_text` refuses line breaks in short fields.
        for f in fields(self):
            value = getattr(self, f.name)
            items = value if isinstance(value, (list, tuple)) else [value]
            for item in items:
                if isinstance(item, str):
                    check_text(f.name, item, multiline=True)

    @property
    def type_name(self) -> str:
        return type(self).__name__

    def validate(self) -> None:
        """Check and normalise the arguments; raise InvalidArgument."""

    def authorize(self) -> None:
        if self.actor.role not in self.roles:
            raise errors.RoleNotPermitted(
                f"role {self.actor.role.value} may not {self.type_name}",
                allowed=sorted(r.value for r in self.roles),
            )

    def execute(self, uow: UnitOfWork) -> dict[str, Any]:
        raise NotImplementedError

    def fingerprint(self) -> bytes:
        """The arguments in canonical form, for recognising a retry."""
        args = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("actor", "idempotency_key")
        }
        return json.dumps([self.type_name, args], sort_keys=True, default=str).encode()

    # ----- argument checks, used by validate() ----------------------------------------

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def _text(self, name: str, *, optional: bool = False, max_len: int = MAX_TEXT) -> None:
        value = getattr(self, name)
        if value is None and optional:
            return
        if not isinstance(value, str) or not value.strip() or len(value) > max_len:
            raise errors.InvalidArgument(
                f"{name} must be a non-empty text of at most {max_len} characters"
            )
        check_text(name, value.strip(), multiline=max_len >= MAX_TEXT)
        self._set(name, value.strip())

    def _choice(self, name: str, options: tuple[str, ...] | list[str]) -> None:
        if getattr(self, name) not in options:
            raise errors.InvalidArgument(f"{name} must be one of {list(options)}")

    def _uuid(self, name: str, *, optional: bool = False) -> None:
        value = getattr(self, name)
        if value is None and optional:
            return
        if isinstance(value, UUID):
            return
        try:
            self._set(name, UUID(str(value)))
        except ValueError:
            raise errors.InvalidArgument(f"{name} must be a UUID") from None

    def _texts(self, name: str) -> None:
        value = getattr(self, name)
        if (
            not isinstance(value, (list, tuple))
            or len(value) > MAX_ITEMS
            or not all(isinstance(v, str) and 0 < len(v) <= MAX_ITEM for v in value)
        ):
            raise errors.InvalidArgument(
                f"{name} must be a list of at most {MAX_ITEMS} texts of 1 to {MAX_ITEM} characters"
            )
        for item in value:
            check_text(name, item)
        self._set(name, tuple(value))

    def _count(self, name: str) -> None:
        value = getattr(self, name)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
            raise errors.InvalidArgument(f"{name} must be a whole number from 0")

    def _sha256(self, name: str) -> None:
        value = getattr(self, name)
        if not isinstance(value, str) or not _SHA256.match(value):
            raise errors.InvalidArgument(f"{name} must be a SHA-256 in 64 hexadecimal digits")
        self._set(name, value.lower())


def _known_rules(uow: UnitOfWork, rule_ids: tuple[str, ...]) -> list[str]:
    if not rule_ids:
        raise errors.NoRuleCited("cite at least one rule of the ruleset")
    unknown = sorted(set(rule_ids) - set(uow.ruleset.rules))
    if unknown:
        raise errors.UnknownRule(
            f"not rules of ruleset {uow.ruleset.id}: {unknown}", unknown=unknown
        )
    return list(dict.fromkeys(rule_ids))


# ----- providers ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RegisterProvider(Command):
    """Records a new service provider: its code, name and licence reference. Only a
    regulator (or the system) may issue it. Serves Art. 4: providers obtain the qualifications
    the law requires."""

    code: str
    name: str
    licence_ref: str
    roles = frozenset({R, S})

    def validate(self) -> None:
        self._text("code", max_len=100)
        self._text("name")
        self._text("licence_ref")

    def execute(self, uow: UnitOfWork) -> dict[str, Any]:
        provider = Provider(
            id=ids.provider_id(self.code),
            code=self.code,
            name=self.name,
            licence_ref=self.licence_ref,
            actor=self.actor,
            timestamp=uow.now,
        )
        uow.add(provider)
        return {"provider_id": str(provider.id)}


@dataclass(frozen=True, kw_only=True)
class RecordQualification(Command):
    """Records a qualification a provider holds, with its reference. A provider records
    its own, a regulator (or the system) any provider's. Serves Art. 4: providers obtain the
    qualifications the law requires."""

    provider_id: UUID
    qualification: str
    reference: str
    roles = frozenset({P, R, S})

    def validate(self) -> None:
        self._uuid("provider_id")
        self._text("qualification")
        self._text("reference")

    def execute(self, uow: UnitOfWork) -> dict[str, Any]:
        provider = uow.provider(self.provider_id)
        require_own(self.actor, provider.id)
        provider.record_qualification(
            qualification=self.qualification,
            reference=self.reference,
            actor=self.actor,
            timestamp=uow.now,
        )
        return {"provider_id": str(provider.id)}


# ----- accounts -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RegisterAccount(Command):
    """Records a new personal or public account at a provider: its handle, its kind, a
    public account's category, and whether it predates the rules (legacy: limited until it
    verifies and signs). A provider registers accounts at itself only (the system anywhere).
    Serves Art. 6 (registration) and, for a public account, Art. 7 (its category)."""

    provider_id: UUID
    handle: str
    kind: str
    category: str | None = None
    legacy: bool = False
    roles = frozenset({P, S})

    def validate(self) -> None:
        self._uuid("provider_id")
        self._text("handle", max_len=200)
        self._choice("kind", ACCOUNT_KINDS)
        if not isinstance(self.legacy, bool):
            raise errors.InvalidArgument("legacy must be true or false")
        if self.kind == "public" and self.category is None:
            raise errors.InvalidArgument("a public account needs a category")
        if self.kind == "personal" and self.category is not None:
            raise errors.InvalidArgument("a personal account has no category")

    def execute(self, uow: UnitOfWork) -> dict[str, Any]:
        if self.category is not None and self.category not in uow.ruleset.categories:
            raise errors.InvalidArgument(f"category must be one of {list(uow.ruleset.categories)}")
        provider = uow.provider(self.provider_id)
        require_own(self.actor, provider.id)
        account = Account(
            id=ids.account_id(provider.id, self.handle),
            provider_id=provider.id,
            handle=self.handle,
            kind=self.kind,
            category=self.category,
            legacy=self.legacy,
            actor=self.actor,
            timestamp=uow.now,
        )
        uow.add(account)
        return {"account_id": str(account.id)}


@dataclass(frozen=True, kw_only=True)
class _AccountCommand(Command):
    account_id: UUID
    roles = frozenset({P, S})

    def validate(self) -> None:
        self._uuid("account_id")

    def account(self, uow: UnitOfWork) -> Account:
        return uow.own_account(self.account_id, self.actor)

    def done(self) -> dict[str, Any]:
        return {"account_id": str(self.account_id)}


@dataclass(frozen=True, kw_only=True)
class VerifyIdentity(_AccountCommand):
    """Records that the holder's real identity was verified, by which method and
    verifier; the identity is sealed under its own key, never kept in the log in clear. A
    provider verifies its own accounts (the system any). Serves Art. 6: real name at the back
    end, voluntary at the front end."""

    real_name: str = field(repr=False)
    id_number: str = field(repr=False)
    method: str
    verifier: str | None = None

    def validate(self) -> None:
        super().validate()
        self._text("real_name", max_len=200)
        self._text("id_number", max_len=100)
        self._text("method", max_len=200)
        self._text("verifier", optional=True, max_len=200)

    def execute(self, uow: UnitOfWork) -> dict[str, Any]:
        account = self.account(uow)
        identity = {"name": self.real_name, "id_number": self.id_number}
        sealed, key = uow.vault.seal(account.id, identity)
        uow.add_key(key)
        account.verify_identity(
            sealed, self.method, self.verifier or self.actor.id, self.actor, uow.now
        )
        return self.done()


@dataclass(frozen=True, kw_only=True)
class EraseIdentity(_AccountCommand):
    """Erases an account's real identity by destroying its data key (crypto-shredding);
    the events stay, and every proof over them still verifies. A provider erases on its own
    accounts, a regulator (or the system) on any. Serves Art. 5: providers protect users'
    personal information and privacy."""

    reason: str
    roles = frozenset({P, R, S})

    def validate(self) -> None:
        super().validate()
        self._text("reason")

    def execute(self, uow: UnitOfWork) -> dict[str, Any]:
        account = self.account(uow)
        account.erase_identity(self.reason, self.actor, uow.now)
        uow.shred_keys(account.id)
        return self.done()


@dataclass(frozen=True, kw_only=True)
class DiscloseIdentity(_AccountCommand):
    """Discloses an account's real identity to a competent authority, recording who, when, on
    what basis and for which case (never the identity) in the transaction that reads its data
    key. Only a regulator may issue it. It opens the real name held at the back end (Art. 6),
    and the record of each read protects personal information (Art. 5)."""

    basis: str
    case_reference: str
    roles = frozenset({R})

    def validate(self) -> None:
        super().validate()
        self._text("basis")
        self._text("case_reference", max_len=200)

    def execute(self, uow: UnitOfWork) -> dict[str, Any]:
        account = self.account(uow)
        sealed = account.disclose_identity(self.basis, self.case_reference, self.actor, uow.now)
        uow.disclose(account.id, sealed)
        return self.done()


@dataclass(frozen=True, kw_only=True)
class SignAgreement(_AccountCommand):
    """Records that the holder signed the current service agreement (its id, version and
    the SHA-256 of its text), accepting every one of the seven bottom lines. A provider records
    it for its own accounts (the system for any). Serves Art. 6: every user signs a service
    agreement committing to the seven bottom lines."""

    agreement_id: str
    version: str
    text_sha256: str
    baselines: tuple[str, ...]

    def validate(self) -> None:
        super().validate()
        self._text("agreement_id")
        self._text("version")
        self._sha256("text_sha256")
        self._texts("baselines")

    def execute(self, uow: UnitOfWork) -> dict[str, Any]:
        self.account(uow).sign_agreement(
            self.agreement_id,
            self.version,
            self.text_sha256,
            list(self.baselines),
            uow.ruleset,
            self.actor,
            uow.now,
        )
        return self.done()


@dataclass(frozen=True, kw_only=True)
class ReviewAccount(_AccountCommand):
    """Records a review of a public account, approved or rejected, with the reason; only
    an approved public account may publish. A provider reviews its own accounts (the system
    any). Serves Art. 7: a provider reviews every public account before it releases
    information."""

    outcome: str
    reason: str

    def validate(self) -> None:
        super().validate()
        self._choice("outcome", REVIEW_OUTCOMES)
        self._text("reason")

    def execute(self, uow: UnitOfWork) -> dict[str, Any]:
        self.account(uow).record_review(self.outcome, self.reason, self.actor, uow.now)
        return self.done()


@dataclass(frozen=True, kw_only=True)
class FileAccount(_AccountCommand):
    """Records that an approved public account was filed with an authority under the
    category it was registered in, with the filing reference. A provider files its own accounts
    (the system any). Serves Art. 7: public accounts are filed by category."""

    authority: str
    reference: str
    category: str

    def validate(self) -> None:
        super().validate()
        self._text("authority")
        self._text("reference")
        self._text("category", max_len=100)

    def execute(self, uow: UnitOfWork) -> dict[str, Any]:
        self.account(uow).file(self.authority, self.reference, self.category, self.actor, uow.now)
        return self.done()


@dataclass(frozen=True, kw_only=True)
class GrantNewsPermission(_AccountCommand):
    """Grants a public account a scope of current political news (publish or reprint)
    beyond its category's default, on the stated basis. Only a regulator (or the system) may
    issue it. Serves Art. 7: only licensed news entities may publish or reprint political news."""

    scope: str
    basis: str
    roles = frozenset({R, S})

    def validate(self) -> None:
        super().validate()
        self._choice("scope", NEWS_SCOPES)
        self._text("basis")

    def execute(self, uow: UnitOfWork) -> dict[str, Any]:
        self.account(uow).grant_news_permission(
            self.scope, self.basis, uow.ruleset, self.actor, uow.now
        )
        return self.done()


@dataclass(frozen=True, kw_only=True)
class RevokeNewsPermission(_AccountCommand):
    """Revokes a news scope granted earlier, with the reason; an account left with no
    scope also loses its mark. Only a regulator (or the system) may issue it. Serves Art. 7
    (current political news)."""

    scope: str
    reason: str
    roles = frozenset({R, S})

    def validate(self) -> None:
        super().validate()
        self._choice("scope", NEWS_SCOPES)
        self._text("reason")

    def execute(self, uow: UnitOfWork) -> dict[str, Any]:
        self.account(uow).revoke_news_permission(
            self.scope, self.reason, uow.ruleset, self.actor, uow.now
        )
        return self.done()


@dataclass(frozen=True, kw_only=True)
class MarkAccount(_AccountCommand):
    """Publicly marks a public account as one that may carry current political news; it
    must hold a publish or reprint scope. A provider marks its own accounts (the system any).
    Serves Art. 7: accounts allowed political news are marked."""

    def execute(self, uow: UnitOfWork) -> dict[str, Any]:
        self.account(uow).mark(uow.ruleset, self.actor, uow.now)
        return self.done()


@dataclass(frozen=True, kw_only=True)
class UnmarkAccount(_AccountCommand):
    """Removes the public political-news mark from an account, with the reason. A provider
    unmarks its own accounts, a regulator (or the system) any. Serves Art. 7."""

    reason: str
    roles = frozenset({P, R, S})

    def validate(self) -> None:
        super().validate()
        self._text("reason")

    def execute(self, uow: UnitOfWork) -> dict[str, Any]:
        self.account(uow).unmark(self.reason, self.actor, uow.now)
        return self.done()


# ----- sanctions ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ImposeSanction(_AccountCommand):
    """Imposes a sanction at a level of the ruleset's ladder (warning, restricted
    publishing, suspended updates, closure), citing rules, optional evidence posts of the
    account and a duration the ruleset allows. A provider sanctions its own accounts, a
    regulator (or the system) any. Serves Art. 9: a breach is met, by its degree, with a
    warning, a restriction, a suspension or closure, and recorded."""

    level: str
    rule_ids: tuple[str, ...]
    reason: str
    evidence_post_ids: tuple[UUID, ...] = ()
    duration_days: int | None = None
    roles = frozenset({P, R, S})

    def validate(self) -> None:
        super().validate()
        self._text("level", max_len=100)
        self._texts("rule_ids")
        self._text("reason")
        try:
            self._set("evidence_post_ids", tuple(UUID(str(p)) for p in self.evidence_post_ids))
        except (ValueError, TypeError):
            raise errors.InvalidArgument("evidence_post_ids must be a list of UUIDs") from None
        days = self.duration_days
        if days is not None and (not isinstance(days, int) or isinstance(days, bool) or days <= 0):
            raise errors.InvalidArgument("duration_days must be a positive whole number or null")

    def execute(self, uow: UnitOfWork) -> dict[str, Any]:
        account = self.account(uow)
        rule_ids = _known_rules(uow, self.rule_ids)
        for post_id in self.evidence_post_ids:
            if uow.visible_post(post_id, self.actor).account_id != account.id:
                raise errors.EvidenceNotOfAccount(
                    "evidence must be posts of the sanctioned account", post_id=str(post_id)
                )
        sanction_id = ids.child_id(account.id, "sanction", self.actor.id, self.idempotency_key)
        account.impose_sanction(
            sanction_id,
            self.level,
            rule_ids,
            [str(p) for p in self.evidence_post_ids],
            self.reason,
            self.duration_days,
            uow.ruleset,
            self.actor,
            uow.now,
        )
        expires = account.sanctions[str(sanction_id)]["expires_at"]
        return {
            **self.done(),
            "sanction_id": str(sanction_id),
            "expires_at": expires.isoformat() if expires else None,
        }


@dataclass(frozen=True, kw_only=True)
class _SanctionCommand(_AccountCommand):
    sanction_id: UUID

    def validate(self) -> None:
        super().validate()
        self._uuid("sanction_id")

    def done(self) -> dict[str, Any]:
        return {**super().done(), "sanction_id": str(self.sanction_id)}


@dataclass(frozen=True, kw_only=True)
class LiftSanction(_SanctionCommand):
    """Lifts a sanction still in force, with the reason; a closure is never lifted, only
    overturned on appeal. A regulator (or the system) lifts any sanction, a provider only one a
    provider imposed on its own account. Serves Art. 9."""

    reason: str
    roles = frozenset({P, R, S})

    def validate(self) -> None:
        super().validate()
        self._text("reason")

    def execute(self, uow: UnitOfWork) -> dict[str, Any]:
        account = self.account(uow)
        issuer = account.sanction(self.sanction_id)["issuer"]
        if self.actor.role is P and issuer.role is not P:
            raise errors.RoleNotPermitted("a provider lifts only sanctions a provider imposed")
        account.lift_sanction(self.sanction_id, self.reason, self.actor, uow.now)
        return self.done()


@dataclass(frozen=True, kw_only=True)
class AppealSanction(_SanctionCommand):
    """Records an appeal against a sanction on the account, with the grounds; each
    sanction is appealed at most once. A provider appeals for its own accounts (the system for
    any). Appeals are the ledger's safeguard over Art. 9 sanctions, not an article of their
    own."""

    grounds: str

    def validate(self) -> None:
        super().validate()
        self._text("grounds")

    def execute(self, uow: UnitOfWork) -> dict[str, Any]:
        self.account(uow).appeal_sanction(self.sanction_id, self.grounds, self.actor, uow.now)
        return self.done()


@dataclass(frozen=True, kw_only=True)
class DecideAppeal(_SanctionCommand):
    """Decides a pending appeal, upheld or overturned, with the reason; an overturned
    sanction is no longer in force, and an overturned closure reopens the account. Only a
    regulator (or the system) may issue it. Completes the appeal of an Art. 9 sanction."""

    outcome: str
    reason: str
    roles = frozenset({R, S})

    def validate(self) -> None:
        super().validate()
        self._choice("outcome", APPEAL_OUTCOMES)
        self._text("reason")

    def execute(self, uow: UnitOfWork) -> dict[str, Any]:
        self.account(uow).decide_appeal(
            self.sanction_id, self.outcome, self.reason, self.actor, uow.now
        )
        return self.done()


# ----- posts --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PublishPost(_AccountCommand):
    """Records a published post (an original, or a reprint naming its source; political
    news or other) by the SHA-256 of its content, never the content. A provider publishes for
    its own accounts (the system for any), only while the account may publish and, for
    political news, holds the scope it needs. Serves Art. 8 (users answer for what they
    publish) and Art. 7 (current political news)."""

    ref: str
    origin: str
    category: str
    content_sha256: str
    source_post_id: UUID | None = None

    def validate(self) -> None:
        super().validate()
        self._text("ref", max_len=200)
        self._choice("origin", POST_ORIGINS)
        self._choice("category", POST_CATEGORIES)
        self._sha256("content_sha256")
        self._uuid("source_post_id", optional=True)
        if (self.origin == "reprint") != (self.source_post_id is not None):
            raise errors.InvalidArgument("a reprint names its source post; an original does not")

    def execute(self, uow: UnitOfWork) -> dict[str, Any]:
        account = self.account(uow)
        account.require_may_publish(uow.ruleset, uow.now)
        if self.category == "political_news":
            account.require_news_scope(self.origin, uow.ruleset)
        if self.source_post_id is not None:
            uow.visible_post(self.source_post_id, self.actor)
        post = Post(
            id=ids.post_id(account.id, self.ref),
            account_id=account.id,
            provider_id=account.provider_id,
            ref=self.ref,
            origin=self.origin,
            category=self.category,
            content_sha256=self.content_sha256,
            source_post_id=self.source_post_id,
            actor=self.actor,
            timestamp=uow.now,
        )
        uow.add(post)
        return {"post_id": str(post.id), "account_id": str(account.id)}


@dataclass(frozen=True, kw_only=True)
class _PostCommand(Command):
    post_id: UUID
    roles = frozenset({P, R, S})

    def validate(self) -> None:
        self._uuid("post_id")

    def post(self, uow: UnitOfWork) -> Post:
        return uow.own_post(self.post_id, self.actor)


@dataclass(frozen=True, kw_only=True)
class RecordReach(_PostCommand):
    """Records a post's cumulative views and reposts, which never go down; passing one of
    the ruleset's reach thresholds (by default 5,000 views or 500 reposts, after the 2013
    judicial interpretation on rumours) records that once. A provider records reach for its
    own posts (the system for any)."""

    views: int
    reposts: int
    roles = frozenset({P, S})

    def validate(self) -> None:
        super().validate()
        self._count("views")
        self._count("reposts")

    def execute(self, uow: UnitOfWork) -> dict[str, Any]:
        post = self.post(uow)
        before = len(post.crossed)
        post.record_reach(self.views, self.reposts, uow.ruleset, self.actor, uow.now)
        return {"post_id": str(post.id), "thresholds_crossed": post.crossed[before:]}


@dataclass(frozen=True, kw_only=True)
class ReportPost(_PostCommand):
    """Records a report of a post, with who reported it and why. A provider reports on its
    own posts, a regulator (or the system) on any. Serves Art. 5: providers accept public
    supervision and handle reported illegal information promptly."""

    reporter: str
    reason: str

    def validate(self) -> None:
        super().validate()
        self._text("reporter", max_len=200)
        self._text("reason")

    def execute(self, uow: UnitOfWork) -> dict[str, Any]:
        post = self.post(uow)
        report_id = ids.child_id(post.id, "report", self.actor.id, self.idempotency_key)
        post.report(report_id, self.reporter, self.reason, self.actor, uow.now)
        return {"post_id": str(post.id), "report_id": str(report_id)}


@dataclass(frozen=True, kw_only=True)
class ResolveReport(_PostCommand):
    """Records a report's outcome, upheld or dismissed, with the reason and the time it
    took. A provider resolves reports on its own posts, a regulator (or the system) on any.
    Serves Art. 5: reported illegal information is handled promptly."""

    report_id: UUID
    outcome: str
    reason: str

    def validate(self) -> None:
        super().validate()
        self._uuid("report_id")
        self._choice("outcome", REPORT_OUTCOMES)
        self._text("reason")

    def execute(self, uow: UnitOfWork) -> dict[str, Any]:
        post = self.post(uow)
        post.resolve_report(self.report_id, self.outcome, self.reason, self.actor, uow.now)
        return {"post_id": str(post.id), "report_id": str(self.report_id)}


@dataclass(frozen=True, kw_only=True)
class RemovePost(_PostCommand):
    """Records that a post was removed, citing at least one rule of the ruleset and a
    reason. A provider removes its own posts, a regulator (or the system) any. Serves Art. 5
    (handling illegal information) and Art. 8 (content prohibited by law)."""

    rule_ids: tuple[str, ...]
    reason: str

    def validate(self) -> None:
        super().validate()
        self._texts("rule_ids")
        self._text("reason")

    def execute(self, uow: UnitOfWork) -> dict[str, Any]:
        post = self.post(uow)
        post.remove(_known_rules(uow, self.rule_ids), self.reason, self.actor, uow.now)
        return {"post_id": str(post.id)}


# ----- webhook endpoints --------------------------------------------------------------


def _event_types(value: Any) -> tuple[str, ...]:
    if value is None or value == ():
        return webhooks.SANCTION_TYPES
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise errors.InvalidArgument("event_types must be a list of event types")
    unknown = sorted(set(value) - set(EVENT_TYPES))
    if unknown:
        raise errors.InvalidArgument(f"unknown event types {unknown[:10]}", unknown=unknown[:10])
    return tuple(dict.fromkeys(value))


def _new_key(uow: UnitOfWork, endpoint_id: UUID) -> tuple[UUID, str]:
    """A new signing key for the endpoint, into the key table: its id and public key."""
    key_id, material = uuid4(), webhooks.KeyMaterial.generate()
    uow.add_webhook_key(endpoint_id, key_id, material.to_bytes())
    return key_id, material.public_key


@dataclass(frozen=True, kw_only=True)
class RegisterWebhookEndpoint(Command):
    """Registers an HTTPS endpoint to which the ledger pushes the provider's events as signed
    webhooks (Standard Webhooks: `v1` HMAC and `v1a` Ed25519), in order per account, retried
    until acknowledged. The event types default to the sanction events. The URL must resolve
    to public addresses only. The secret is shown once, in this answer; it never enters an
    event. A provider registers its own endpoints, a regulator (or the system) any provider's."""

    provider_id: UUID
    url: str
    event_types: tuple[str, ...] = ()
    description: str | None = None
    roles = frozenset({P, R, S})

    def validate(self) -> None:
        self._uuid("provider_id")
        webhooks.parse_url(self.url)
        self._set("event_types", _event_types(self.event_types))
        self._text("description", optional=True)

    def execute(self, uow: UnitOfWork) -> dict[str, Any]:
        provider = uow.provider(self.provider_id)
        require_own(self.actor, provider.id)
        webhooks.check_url(self.url)
        endpoint_id = ids.child_id(provider.id, "webhook", self.actor.id, self.idempotency_key)
        key_id, public_key = _new_key(uow, endpoint_id)
        provider.register_webhook(
            endpoint_id,
            self.url,
            list(self.event_types),
            self.description or "",
            key_id,
            public_key,
            self.actor,
            uow.now,
        )
        return {
            "provider_id": str(provider.id),
            "endpoint_id": str(endpoint_id),
            "key_id": str(key_id),
            "public_key": public_key,
        }


@dataclass(frozen=True, kw_only=True)
class _EndpointCommand(Command):
    provider_id: UUID
    endpoint_id: UUID
    roles = frozenset({P, R, S})

    def validate(self) -> None:
        self._uuid("provider_id")
        self._uuid("endpoint_id")

    def provider(self, uow: UnitOfWork) -> tuple[Provider, dict[str, Any]]:
        provider = uow.provider(self.provider_id)
        require_own(self.actor, provider.id)
        return provider, provider.endpoint(self.endpoint_id)

    def done(self) -> dict[str, Any]:
        return {"provider_id": str(self.provider_id), "endpoint_id": str(self.endpoint_id)}


@dataclass(frozen=True, kw_only=True)
class UpdateWebhookEndpoint(_EndpointCommand):
    """Changes an endpoint's URL, event types or description (what is left out stays). A
    provider updates its own endpoints, a regulator (or the system) any provider's."""

    url: str | None = None
    event_types: tuple[str, ...] | None = None
    description: str | None = None

    def validate(self) -> None:
        super().validate()
        if self.url is not None:
            webhooks.parse_url(self.url)
        if self.event_types is not None:
            self._set("event_types", _event_types(self.event_types))
        self._text("description", optional=True)

    def execute(self, uow: UnitOfWork) -> dict[str, Any]:
        provider, endpoint = self.provider(uow)
        if self.url is not None:
            webhooks.check_url(self.url)
        provider.update_webhook(
            self.endpoint_id,
            self.url or endpoint["url"],
            list(self.event_types or endpoint["event_types"]),
            endpoint["description"] if self.description is None else self.description,
            self.actor,
            uow.now,
        )
        return self.done()


@dataclass(frozen=True, kw_only=True)
class PauseWebhookEndpoint(_EndpointCommand):
    """Pauses deliveries to an endpoint, with the reason; its pending events wait, none is
    skipped. A provider pauses its own endpoints, a regulator any; the system pauses one on a
    410 answer or after it failed for longer than the failure window."""

    reason: str

    def validate(self) -> None:
        super().validate()
        self._text("reason")

    def execute(self, uow: UnitOfWork) -> dict[str, Any]:
        provider, endpoint = self.provider(uow)
        if endpoint["status"] != "active":
            raise errors.WebhookEndpointState("the endpoint is already paused")
        provider.pause_webhook(self.endpoint_id, self.reason, self.actor, uow.now)
        return self.done()


@dataclass(frozen=True, kw_only=True)
class ResumeWebhookEndpoint(_EndpointCommand):
    """Resumes a paused endpoint: every pending event is delivered, in order per account. A
    provider resumes its own endpoints, a regulator (or the system) any provider's."""

    def execute(self, uow: UnitOfWork) -> dict[str, Any]:
        provider, endpoint = self.provider(uow)
        if endpoint["status"] != "paused":
            raise errors.WebhookEndpointState("the endpoint is not paused")
        provider.resume_webhook(self.endpoint_id, self.actor, uow.now)
        return self.done()


@dataclass(frozen=True, kw_only=True)
class DeleteWebhookEndpoint(_EndpointCommand):
    """Deletes an endpoint, with the reason: nothing more is sent to it, and its signing keys
    are destroyed. A provider deletes its own endpoints, a regulator (or the system) any."""

    reason: str

    def validate(self) -> None:
        super().validate()
        self._text("reason")

    def execute(self, uow: UnitOfWork) -> dict[str, Any]:
        provider, _ = self.provider(uow)
        provider.delete_webhook(self.endpoint_id, self.reason, self.actor, uow.now)
        uow.shred_webhook_keys(self.endpoint_id)
        return self.done()


@dataclass(frozen=True, kw_only=True)
class RotateWebhookSecret(_EndpointCommand):
    """Gives an endpoint a new secret and key pair, shown once in this answer. The previous
    ones stay valid for the grace period (default 24 hours, at most 7 days), each delivery
    carrying both signatures. A provider rotates its own, a regulator (or the system) any."""

    grace_seconds: int | None = None

    def validate(self) -> None:
        super().validate()
        grace = self.grace_seconds
        if grace is not None and (
            not isinstance(grace, int) or isinstance(grace, bool) or not 0 <= grace <= 7 * 86400
        ):
            raise errors.InvalidArgument("grace_seconds must be from 0 to 604800")

    def execute(self, uow: UnitOfWork) -> dict[str, Any]:
        provider, _ = self.provider(uow)
        grace = webhooks.ROTATION_GRACE
        if self.grace_seconds is not None:
            grace = timedelta(seconds=self.grace_seconds)
        until = uow.now + grace
        uow.retire_webhook_keys(self.endpoint_id, until)
        key_id, public_key = _new_key(uow, self.endpoint_id)
        provider.rotate_webhook_secret(
            self.endpoint_id, key_id, public_key, until, self.actor, uow.now
        )
        return {**self.done(), "key_id": str(key_id), "public_key": public_key}


@dataclass(frozen=True, kw_only=True)
class ReplayWebhookEndpoint(_EndpointCommand):
    """Re-sends an endpoint's deliveries from a log position or from a moment on, each with
    its original `webhook-id`, in order per account. A provider replays its own endpoints, a
    regulator (or the system) any provider's."""

    from_position: int | None = None
    from_time: datetime | None = None

    def validate(self) -> None:
        super().validate()
        if (self.from_position is None) == (self.from_time is None):
            raise errors.InvalidArgument("give exactly one of from_position and from_time")
        if self.from_position is not None:
            self._count("from_position")
        if isinstance(self.from_time, str):
            try:
                self._set("from_time", datetime.fromisoformat(self.from_time))
            except ValueError:
                raise errors.InvalidArgument("from_time must be an ISO 8601 time") from None
        if self.from_time is not None and (
            not isinstance(self.from_time, datetime) or self.from_time.tzinfo is None
        ):
            raise errors.InvalidArgument("from_time must be a time with a time zone")

    def execute(self, uow: UnitOfWork) -> dict[str, Any]:
        provider, _ = self.provider(uow)
        provider.request_webhook_replay(
            self.endpoint_id, self.from_position, self.from_time, self.actor, uow.now
        )
        return self.done()


WEBHOOK_COMMANDS: tuple[type[Command], ...] = (
    RegisterWebhookEndpoint,
    UpdateWebhookEndpoint,
    PauseWebhookEndpoint,
    ResumeWebhookEndpoint,
    DeleteWebhookEndpoint,
    RotateWebhookSecret,
    ReplayWebhookEndpoint,
)

ALL_COMMANDS: tuple[type[Command], ...] = (
    RegisterProvider,
    RecordQualification,
    RegisterAccount,
    VerifyIdentity,
    EraseIdentity,
    SignAgreement,
    ReviewAccount,
    FileAccount,
    GrantNewsPermission,
    RevokeNewsPermission,
    MarkAccount,
    UnmarkAccount,
    PublishPost,
    RecordReach,
    ReportPost,
    ResolveReport,
    RemovePost,
    ImposeSanction,
    LiftSanction,
    AppealSanction,
    DecideAppeal,
    *WEBHOOK_COMMANDS,
)
