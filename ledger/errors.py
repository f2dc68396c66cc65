"""Typed errors of the write side.

Every refusal is a `LedgerError` with a stable machine-readable `code` and a human
`message`. Messages never contain personal data. A refused command writes nothing.
"""

from __future__ import annotations

from typing import Any, ClassVar


class LedgerError(Exception):
    """Base class: a command or request the ledger refuses."""

    code: ClassVar[str] = "LEDGER_ERROR"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        # Set when the error came from one command of a batch.
        self.batch_index: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            out["details"] = self.details
        if self.batch_index is not None:
            out["batch_index"] = self.batch_index
        return out


class InvalidArgument(LedgerError):
    code = "INVALID_ARGUMENT"


class RoleNotPermitted(LedgerError):
    code = "ROLE_NOT_PERMITTED"


class NotYourAccount(LedgerError):
    code = "NOT_YOUR_ACCOUNT"


class ProviderNotFound(LedgerError):
    code = "PROVIDER_NOT_FOUND"


class AccountNotFound(LedgerError):
    code = "ACCOUNT_NOT_FOUND"


class PostNotFound(LedgerError):
    code = "POST_NOT_FOUND"


class AlreadyExists(LedgerError):
    code = "ALREADY_EXISTS"


class NotPublicAccount(LedgerError):
    code = "NOT_PUBLIC_ACCOUNT"


class AccountNotVerified(LedgerError):
    code = "ACCOUNT_NOT_VERIFIED"


class AgreementNotSigned(LedgerError):
    code = "AGREEMENT_NOT_SIGNED"


class UnknownAgreement(LedgerError):
    code = "UNKNOWN_AGREEMENT"


class BaselinesIncomplete(LedgerError):
    code = "BASELINES_INCOMPLETE"


class AccountNotApproved(LedgerError):
    code = "ACCOUNT_NOT_APPROVED"


class CategoryMismatch(LedgerError):
    code = "CATEGORY_MISMATCH"


class LegacyAccessLimited(LedgerError):
    code = "LEGACY_ACCESS_LIMITED"


class AccountClosed(LedgerError):
    code = "ACCOUNT_CLOSED"


class AccountSuspended(LedgerError):
    code = "ACCOUNT_SUSPENDED"


class PublishingRestricted(LedgerError):
    code = "PUBLISHING_RESTRICTED"


class PoliticalNewsNotPermitted(LedgerError):
    code = "POLITICAL_NEWS_NOT_PERMITTED"


class NewsPermissionAlreadyHeld(LedgerError):
    code = "NEWS_PERMISSION_ALREADY_HELD"


class NewsPermissionNotHeld(LedgerError):
    code = "NEWS_PERMISSION_NOT_HELD"


class AlreadyMarked(LedgerError):
    code = "ALREADY_MARKED"


class NotMarked(LedgerError):
    code = "NOT_MARKED"


class UnknownRule(LedgerError):
    code = "UNKNOWN_RULE"


class NoRuleCited(LedgerError):
    code = "NO_RULE_CITED"


class UnknownSanctionLevel(LedgerError):
    code = "UNKNOWN_SANCTION_LEVEL"


class DurationNotAllowed(LedgerError):
    code = "DURATION_NOT_ALLOWED"


class EvidenceNotOfAccount(LedgerError):
    code = "EVIDENCE_NOT_OF_ACCOUNT"


class SanctionNotFound(LedgerError):
    code = "SANCTION_NOT_FOUND"


class SanctionNotActive(LedgerError):
    code = "SANCTION_NOT_ACTIVE"


class AppealAlreadyFiled(LedgerError):
    code = "APPEAL_ALREADY_FILED"


class NoPendingAppeal(LedgerError):
    code = "NO_PENDING_APPEAL"


class ReachDecreased(LedgerError):
    code = "REACH_DECREASED"


class PostRemoved(LedgerError):
    code = "POST_REMOVED"


class ReportNotFound(LedgerError):
    code = "REPORT_NOT_FOUND"


class ReportAlreadyResolved(LedgerError):
    code = "REPORT_ALREADY_RESOLVED"


class IdempotencyKeyReused(LedgerError):
    code = "IDEMPOTENCY_KEY_REUSED"


class Conflict(LedgerError):
    code = "CONFLICT"


class StorageUnavailable(LedgerError):
    code = "STORAGE_UNAVAILABLE"


class IdentityErased(LedgerError):
    code = "IDENTITY_ERASED"


class IdentityUnreadable(LedgerError):
    code = "IDENTITY_UNREADABLE"


class RateLimited(LedgerError):
    code = "RATE_LIMITED"


class NotFoundAtPosition(LedgerError):
    code = "NOT_FOUND_AT_POSITION"


class EntryTooLarge(LedgerError):
    """An event that would not fit a log entry (65,535 bytes, C2SP tlog-tiles)."""

    code = "ENTRY_TOO_LARGE"


class WebhookEndpointNotFound(LedgerError):
    code = "WEBHOOK_ENDPOINT_NOT_FOUND"


class WebhookEndpointState(LedgerError):
    """The endpoint is not in a state the command applies to (pausing a paused one,
    resuming an active one, anything on a deleted one)."""

    code = "WEBHOOK_ENDPOINT_STATE"


class WebhookUrlRefused(LedgerError):
    code = "WEBHOOK_URL_REFUSED"
