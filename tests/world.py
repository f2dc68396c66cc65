"""A small scripted world for tests: providers, their operators, accounts in chosen states."""

from __future__ import annotations

import hashlib
import itertools
from typing import Any
from uuid import UUID

from ledger import Actor, Ledger, Role
from ledger import commands as c

REGULATOR = Actor("inspector", Role.REGULATOR)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class World:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._keys = itertools.count()
        self.provider = self._provider("acme")
        self.ops = Actor("acme-ops", Role.PROVIDER, self.provider)
        self.rival = self._provider("rival")
        self.rival_ops = Actor("rival-ops", Role.PROVIDER, self.rival)

    def key(self) -> str:
        return f"k{next(self._keys)}"

    def run(
        self, command_class: type[c.Command], actor: Actor | None = None, **args: Any
    ) -> dict[str, Any]:
        command = command_class(actor=actor or self.ops, idempotency_key=self.key(), **args)
        return self.ledger.execute(command).value

    def _provider(self, code: str) -> UUID:
        value = self.run(
            c.RegisterProvider, REGULATOR, code=code, name=code.title(), licence_ref=f"L-{code}"
        )
        return UUID(value["provider_id"])

    def account(
        self,
        handle: str | None = None,
        *,
        kind: str = "public",
        category: str | None = "enterprise",
        legacy: bool = False,
        verified: bool = True,
        signed: bool = True,
        approved: bool = True,
        ops: Actor | None = None,
    ) -> UUID:
        ops = ops or self.ops
        category = category if kind == "public" else None
        value = self.run(
            c.RegisterAccount,
            ops,
            provider_id=ops.provider_id,
            handle=handle or f"h{next(self._keys)}",
            kind=kind,
            category=category,
            legacy=legacy,
        )
        account = UUID(value["account_id"])
        if verified:
            self.run(
                c.VerifyIdentity,
                ops,
                account_id=account,
                real_name="Li Lei",
                id_number="110101199003070011",
                method="id_card",
            )
        if signed:
            self.sign(account, ops)
        if approved and kind == "public":
            self.run(c.ReviewAccount, ops, account_id=account, outcome="approved", reason="ok")
        return account

    def sign(self, account: UUID, ops: Actor | None = None) -> None:
        agreement = self.ledger.ruleset.agreement
        self.run(
            c.SignAgreement,
            ops,
            account_id=account,
            agreement_id=agreement.id,
            version=agreement.version,
            text_sha256=agreement.sha256,
            baselines=agreement.baselines,
        )

    def post(
        self,
        account: UUID,
        *,
        category: str = "other",
        origin: str = "original",
        source: UUID | None = None,
        ops: Actor | None = None,
    ) -> UUID:
        ref = f"post{next(self._keys)}"
        value = self.run(
            c.PublishPost,
            ops,
            account_id=account,
            ref=ref,
            origin=origin,
            category=category,
            content_sha256=sha(ref),
            source_post_id=source,
        )
        return UUID(value["post_id"])

    def sanction(
        self, account: UUID, level: str, days: int | None = None, actor: Actor = REGULATOR
    ) -> UUID:
        value = self.run(
            c.ImposeSanction,
            actor,
            account_id=account,
            level=level,
            rule_ids=["art.9"],
            reason="breach",
            duration_days=days,
        )
        return UUID(value["sanction_id"])
