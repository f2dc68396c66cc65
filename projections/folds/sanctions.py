"""sanctions, folded: mirrors `projections.sanctions`; its figures are recounted in SQL
from the written rows (`sanctions.RECOUNT`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ledger.log import LoggedEvent
from ledger.ruleset import Ruleset
from projections import sanctions
from projections.base import actor_id, actor_role
from projections.folds.accounts import AccountsFold
from projections.folds.base import Fold, Row, insert, statements

COLUMNS = (
    "sanction_id", "account_id", "provider_id", "level", "rule_ids", "evidence_post_ids",
    "reason", "issuer_id", "issuer_role", "imposed_at", "expires_at", "lifted_at",
    "lift_reason", "lifted_by", "appeal_state", "appeal_grounds", "appealed_at",
    "appeal_decided_at", "appeal_decided_by", "appeal_reason", "position", "last_position",
)  # fmt: skip
_AT = {name: i for i, name in enumerate(COLUMNS)}
LAST = 21


class SanctionsFold(Fold):
    name = "sanctions"
    columns = {"sanctions": COLUMNS}
    after = statements(sanctions.RECOUNT)

    def __init__(self, ruleset: Ruleset, folds: Mapping[str, Fold]) -> None:
        super().__init__(ruleset, folds)
        accounts = folds["accounts"]
        assert isinstance(accounts, AccountsFold)
        self.accounts = accounts
        self.sanctions: dict[str, Row] = {}
        sets = self._sets
        self.handlers = {
            "Account.SanctionImposed": self.imposed,
            "Account.SanctionLifted": lambda e, _: sets(
                e, lifted_at=e.timestamp, lift_reason=e.payload["reason"], lifted_by=actor_id(e)
            ),
            "Account.SanctionAppealed": lambda e, _: sets(
                e, appeal_state="pending", appeal_grounds=e.payload["grounds"],
                appealed_at=e.timestamp,
            ),
            "Account.AppealDecided": lambda e, _: sets(
                e, appeal_state=e.payload["outcome"], appeal_reason=e.payload["reason"],
                appeal_decided_at=e.timestamp, appeal_decided_by=actor_id(e),
            ),
        }  # fmt: skip

    def rows(self) -> Mapping[str, Iterable[Sequence[Any]]]:
        return {"sanctions": self.sanctions.values()}

    def imposed(self, e: LoggedEvent, oid: str) -> None:
        provider = self.accounts.provider(oid)
        if provider is None:
            return
        p = e.payload
        insert(self.sanctions, p["sanction_id"], [
            p["sanction_id"], oid, provider, p["level"], p["rule_ids"], p["evidence_post_ids"],
            p["reason"], actor_id(e), actor_role(e), e.timestamp, p["expires_at"], None, None,
            None, "none", None, None, None, None, None, e.position, e.position,
        ])  # fmt: skip

    def _sets(self, e: LoggedEvent, **values: Any) -> None:
        row = self.sanctions.get(e.payload["sanction_id"])
        if row is not None:
            for name, value in values.items():
                row[_AT[name]] = value
            row[LAST] = e.position
