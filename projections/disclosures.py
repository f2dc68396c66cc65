"""disclosures: one row per recorded disclosure of a real identity (who, when, on what
legal basis, for which case; never the identity), for auditors and for the rate limit."""

from __future__ import annotations

from collections.abc import Iterable

from ledger.log import LoggedEvent
from ledger.ruleset import Ruleset
from projections.base import Projection, Statement, actor_id, actor_role

DDL = (
    """CREATE TABLE IF NOT EXISTS disclosures (
        position bigint PRIMARY KEY,
        account_id uuid NOT NULL,
        provider_id uuid NOT NULL,
        at timestamptz NOT NULL,
        actor_id text NOT NULL,
        actor_role text NOT NULL,
        basis text NOT NULL,
        case_reference text NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS disclosures_account ON disclosures (account_id, position)",
    "CREATE INDEX IF NOT EXISTS disclosures_provider ON disclosures (provider_id, position)",
    "CREATE INDEX IF NOT EXISTS disclosures_actor_at ON disclosures (actor_id, at)",
)


def disclosed(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    p = e.payload
    yield (
        "INSERT INTO disclosures (position, account_id, provider_id, at, actor_id, actor_role,"
        " basis, case_reference)"
        " SELECT %s, account_id, provider_id, %s, %s, %s, %s, %s FROM accounts"
        " WHERE account_id = %s",
        (e.position, e.timestamp, actor_id(e), actor_role(e), p["basis"], p["case_reference"],
         e.originator_id),
    )  # fmt: skip


DISCLOSURES = Projection(
    name="disclosures",
    version=1,
    tables=("disclosures",),
    ddl=DDL,
    depends_on=("accounts",),
    handlers={"Account.IdentityDisclosed": disclosed},
)
