"""Recorded disclosure of real identities: `discloseIdentity` (regulators only) and
`identityDisclosures` (regulators and auditors).

A disclosure is first recorded as an `Account.IdentityDisclosed` event, in the
transaction that holds the person's data key; only then is the identity returned. Each
regulator token may disclose at most `LEDGER_DISCLOSURE_LIMIT` identities per
`LEDGER_DISCLOSURE_WINDOW` seconds (default 20 per hour); past it the request is refused
with `RATE_LIMITED`, logged and counted.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta
from typing import Any

import strawberry
from strawberry.types import Info

from api.graphql.context import Context
from api.graphql.errors import ApiError
from api.graphql.mutations import ERRORS, build_command, error_payload, result_union
from api.graphql.reads import Where, keyset_page, parse_id
from api.graphql.scalars import Position
from api.graphql.types import Connection
from ledger import commands as c
from ledger import errors
from ledger.actors import Role

log = logging.getLogger("ledger.api.disclosures")
Ctx = Info[Context, None]


@strawberry.input(description="Why a competent authority needs to know who holds an account.")
class DiscloseIdentityInput:
    account_id: strawberry.ID
    basis: str = strawberry.field(description="The legal basis, e.g. the provision applied.")
    case_reference: str


@strawberry.type(description="The identity, disclosed and recorded at `position`.")
class DisclosedIdentity:
    account_id: strawberry.ID
    position: Position | None  # type: ignore[valid-type]
    real_name: str
    id_number: str


@strawberry.type
class Disclosure:
    position: Position  # type: ignore[valid-type]
    account_id: strawberry.ID
    provider_id: strawberry.ID
    at: datetime
    actor_id: str
    actor_role: str
    basis: str
    case_reference: str

    @classmethod
    def of(cls, r: dict[str, Any]) -> Disclosure:
        return cls(
            position=r["position"],
            account_id=strawberry.ID(str(r["account_id"])),
            provider_id=strawberry.ID(str(r["provider_id"])),
            at=r["at"],
            actor_id=r["actor_id"],
            actor_role=r["actor_role"],
            basis=r["basis"],
            case_reference=r["case_reference"],
        )


DiscloseResult = result_union("DiscloseIdentityResult", DisclosedIdentity, *ERRORS)


class RateLimit:
    """Disclosures per regulator token in a sliding window, counted from the recorded
    disclosures (so every process of the API shares the count)."""

    def __init__(self) -> None:
        self.limit = int(os.environ.get("LEDGER_DISCLOSURE_LIMIT", "20"))
        self.window = timedelta(seconds=float(os.environ.get("LEDGER_DISCLOSURE_WINDOW", "3600")))
        self.refused = 0

    async def check(self, context: Context, actor_id: str) -> None:
        since = context.state.ledger.clock() - self.window
        (row,) = await context.state.fetch(  # the primary: a standby's count may lag
            "SELECT count(*) AS n FROM disclosures WHERE actor_id = %s AND at > %s",
            (actor_id, since),
            primary=True,
        )
        if row["n"] >= self.limit:
            self.refused += 1
            log.warning("disclosure refused: %s is past its limit of %d", actor_id, self.limit)
            raise errors.RateLimited(
                f"at most {self.limit} disclosures per {self.window.total_seconds():g} s"
                " for this token; try later",
                limit=self.limit,
            )


def _limit(context: Context) -> RateLimit:
    limit: RateLimit = context.state.extras.setdefault("disclosure_limit", RateLimit())
    return limit


@strawberry.type
class DisclosureMutation:
    @strawberry.mutation(
        description="Disclose an account's real identity (regulators only), recording who,"
        " when, on what basis and for which case before it is returned."
    )
    async def disclose_identity(
        self, info: Ctx, input: DiscloseIdentityInput, idempotency_key: str
    ) -> DiscloseResult:  # type: ignore[valid-type]
        context = info.context
        principal = context.who()
        try:
            command = build_command(c.DiscloseIdentity, input, idempotency_key, context)
            command.authorize()
            await _limit(context).check(context, principal.actor.id)
            result = await context.state.blocking(context.state.ledger.execute, command)
        except errors.LedgerError as e:
            return error_payload(e, principal.role)
        identity = result.identity or {}
        return DisclosedIdentity(
            account_id=input.account_id,
            position=result.position,
            real_name=identity["name"],
            id_number=identity["id_number"],
        )


@strawberry.type
class DisclosureQuery:
    @strawberry.field(
        description="Recorded disclosures of real identities (regulators and auditors)."
    )
    async def identity_disclosures(
        self,
        info: Ctx,
        account_id: strawberry.ID | None = None,
        provider_id: strawberry.ID | None = None,
        since: datetime | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[Disclosure]:
        if info.context.who().role is Role.PROVIDER:
            raise ApiError("FORBIDDEN", "disclosures are listed for regulators and auditors")
        where = Where()
        if account_id is not None:
            where.add("account_id = %(account)s", account=parse_id(account_id, "accountId"))
        if provider_id is not None:
            where.add("provider_id = %(provider)s", provider=parse_id(provider_id, "providerId"))
        where.when(since, "at >= %(since)s", "since")
        return await keyset_page(
            info.context.state,
            kind="disclosure",
            select="SELECT * FROM disclosures",
            where=where,
            first=first,
            after=after,
            make=Disclosure.of,
        )
