"""accounts, folded: mirrors `projections.accounts`. Its figures, lapses and day sums
are recounted in SQL from the written rows (`accounts.RECOUNT`), and an account's news
scopes, once a grant or revocation changed them, by the handlers' own expression."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from ledger.log import LoggedEvent
from ledger.ruleset import Ruleset
from projections import accounts
from projections.folds.base import Fold, Row, insert, statements, with_jsonb
from projections.folds.posts import PostsFold

COLUMNS = (
    "account_id", "provider_id", "handle", "kind", "category", "legacy", "registered_at",
    "verified", "verified_at", "verification_method", "identity_erased_at", "agreement_id",
    "agreement_version", "agreement_signed_at", "review_outcome", "reviewed_at",
    "filing_reference", "filing_authority", "filed_at", "default_scopes", "news_grants",
    "news_scopes", "marked", "active_sanctions", "closed_until", "suspended_until",
    "restricted_until", "sanctions_by_level", "post_count", "position", "last_position",
)  # fmt: skip
_AT = {name: i for i, name in enumerate(COLUMNS)}
PROVIDER, GRANTS, SANCTIONS = _AT["provider_id"], _AT["news_grants"], _AT["active_sanctions"]
BY_LEVEL, POST_COUNT, LAST = _AT["sanctions_by_level"], _AT["post_count"], _AT["last_position"]
# The status-changing levels and the column holding the latest expiry of each.
_UNTIL = (
    ("closed", _AT["closed_until"]),
    ("updates_suspended", _AT["suspended_until"]),
    ("publishing_restricted", _AT["restricted_until"]),
)


def _latest(expiries: list[str | None]) -> datetime | str | None:
    """max(coalesce(expires_at::timestamptz, 'infinity')), NULL over no sanctions."""
    if not expiries:
        return None
    if None in expiries:
        return "infinity"
    return max(datetime.fromisoformat(x) for x in expiries if x is not None)


class AccountsFold(Fold):
    name = "accounts"
    columns = {"accounts": COLUMNS}

    def __init__(self, ruleset: Ruleset, folds: Mapping[str, Fold]) -> None:
        super().__init__(ruleset, folds)
        posts = folds["posts"]
        assert isinstance(posts, PostsFold)
        self.posts = posts
        self.accounts: dict[str, Row] = {}
        self.rescoped: set[str] = set()
        sets = self._sets
        self.handlers = {
            "Account.Registered": self.registered,
            "Account.IdentityVerified": lambda e, oid: sets(
                e, oid, verified=True, verified_at=e.timestamp,
                verification_method=e.payload["method"], identity_erased_at=None,
            ),
            "Account.IdentityErased": lambda e, oid: sets(
                e, oid, verified=False, identity_erased_at=e.timestamp
            ),
            "Account.AgreementSigned": lambda e, oid: sets(
                e, oid, agreement_id=e.payload["agreement_id"],
                agreement_version=e.payload["version"], agreement_signed_at=e.timestamp,
            ),
            "Account.Reviewed": lambda e, oid: sets(
                e, oid, review_outcome=e.payload["outcome"], reviewed_at=e.timestamp
            ),
            "Account.Filed": lambda e, oid: sets(
                e, oid, filing_reference=e.payload["reference"],
                filing_authority=e.payload["authority"], filed_at=e.timestamp,
            ),
            "Account.NewsPermissionGranted": self.granted,
            "Account.NewsPermissionRevoked": self.revoked,
            "Account.Marked": lambda e, oid: sets(e, oid, marked=True),
            "Account.Unmarked": lambda e, oid: sets(e, oid, marked=False),
            "Account.SanctionImposed": self.imposed,
            "Account.SanctionLifted": self.withdrawn,
            "Account.SanctionAppealed": lambda e, oid: sets(e, oid),
            "Account.AppealDecided": self.appeal_decided,
            "Post.Published": self.post_published,
            "Post.ReachRecorded": self.post_touched,
            "Post.ThresholdCrossed": self.post_touched,
            "Post.Reported": self.post_touched,
            "Post.ReportResolved": self.post_touched,
            "Post.Removed": self.post_touched,
        }  # fmt: skip

    def rows(self) -> Mapping[str, Iterable[Sequence[Any]]]:
        return {"accounts": with_jsonb(self.accounts.values(), (SANCTIONS, BY_LEVEL))}

    def statements_after(self) -> Sequence[tuple[str, tuple[Any, ...]]]:
        rescope = (
            f"UPDATE accounts SET {accounts._SCOPES} WHERE account_id = ANY(%s::uuid[])",
            (sorted(self.rescoped),),
        )
        return (rescope, *statements(accounts.RECOUNT))

    def provider(self, account_id: str) -> str | None:
        row = self.accounts.get(account_id)
        return None if row is None else row[PROVIDER]

    def registered(self, e: LoggedEvent, oid: str) -> None:
        p = e.payload
        public = p["kind"] == "public"
        scopes = sorted(self.ruleset.default_scopes(p["category"])) if public else []
        insert(self.accounts, oid, [
            oid, p["provider_id"], p["handle"], p["kind"], p["category"], p["legacy"],
            e.timestamp, False, None, None, None, None, None, None, None, None, None, None,
            None, scopes, [], scopes, False, [], None, None, None, {}, 0, e.position,
            e.position,
        ])  # fmt: skip

    def _sets(self, e: LoggedEvent, oid: str, **values: Any) -> Row | None:
        row = self.accounts.get(oid)
        if row is not None:
            for name, value in values.items():
                row[_AT[name]] = value
            row[LAST] = e.position
        return row

    def granted(self, e: LoggedEvent, oid: str) -> None:
        row = self._sets(e, oid)
        if row is not None:
            row[GRANTS] = [*row[GRANTS], e.payload["scope"]]
            self.rescoped.add(oid)

    def revoked(self, e: LoggedEvent, oid: str) -> None:
        row = self._sets(e, oid)
        if row is not None:
            row[GRANTS] = [s for s in row[GRANTS] if s != e.payload["scope"]]
            self.rescoped.add(oid)

    def imposed(self, e: LoggedEvent, oid: str) -> None:
        row = self._sets(e, oid)
        if row is None:
            return
        p = e.payload
        entry = {k: p[k] for k in ("sanction_id", "level", "expires_at")}
        row[SANCTIONS] = [*row[SANCTIONS], entry]
        row[BY_LEVEL] = {**row[BY_LEVEL], p["level"]: row[BY_LEVEL].get(p["level"], 0) + 1}
        self._refresh(row)

    def withdrawn(self, e: LoggedEvent, oid: str) -> None:
        row = self._sets(e, oid)
        if row is not None:
            gone = e.payload["sanction_id"]
            row[SANCTIONS] = [x for x in row[SANCTIONS] if x["sanction_id"] != gone]
            self._refresh(row)

    def appeal_decided(self, e: LoggedEvent, oid: str) -> None:
        if e.payload["outcome"] == "overturned":
            self.withdrawn(e, oid)
        else:
            self._sets(e, oid)

    @staticmethod
    def _refresh(row: Row) -> None:
        for level, column in _UNTIL:
            row[column] = _latest([x["expires_at"] for x in row[SANCTIONS] if x["level"] == level])

    def post_published(self, e: LoggedEvent, _: str) -> None:
        row = self.accounts.get(e.payload["account_id"])
        if row is not None:
            row[POST_COUNT] += 1
            row[LAST] = e.position

    def post_touched(self, e: LoggedEvent, oid: str) -> None:
        owner = self.posts.owner(oid)
        row = self.accounts.get(owner[0]) if owner else None
        if row is not None:
            row[LAST] = e.position
