"""sanctions: one row per sanction, with its issuer, expiry, lifting and appeal; and per
provider the sanctions by level and by issuer role, counted as they are imposed."""

from __future__ import annotations

from collections.abc import Iterable

from ledger.log import LoggedEvent
from ledger.ruleset import Ruleset
from projections.accounts import shard
from projections.base import Projection, Statement, actor_id, actor_role, figures_table

DDL = (
    """CREATE TABLE IF NOT EXISTS sanctions (
        sanction_id uuid PRIMARY KEY,
        account_id uuid NOT NULL,
        provider_id uuid NOT NULL,
        level text NOT NULL,
        rule_ids text[] NOT NULL,
        evidence_post_ids uuid[] NOT NULL,
        reason text NOT NULL,
        issuer_id text NOT NULL,
        issuer_role text NOT NULL,
        imposed_at timestamptz NOT NULL,
        expires_at timestamptz,
        lifted_at timestamptz,
        lift_reason text,
        lifted_by text,
        appeal_state text NOT NULL DEFAULT 'none',
        appeal_grounds text,
        appealed_at timestamptz,
        appeal_decided_at timestamptz,
        appeal_decided_by text,
        appeal_reason text,
        position bigint NOT NULL,
        last_position bigint NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS sanctions_account ON sanctions (account_id, position)",
    "CREATE INDEX IF NOT EXISTS sanctions_provider ON sanctions (provider_id, position)",
    "CREATE INDEX IF NOT EXISTS sanctions_level ON sanctions (level, position)",
    "CREATE INDEX IF NOT EXISTS sanctions_provider_level ON sanctions"
    " (provider_id, level, position)",
    "CREATE INDEX IF NOT EXISTS sanctions_appeal ON sanctions (appeal_state, position)",
    "CREATE INDEX IF NOT EXISTS sanctions_provider_appeal ON sanctions"
    " (provider_id, appeal_state, position)",
    "CREATE INDEX IF NOT EXISTS sanctions_position ON sanctions (position)",
    "CREATE INDEX IF NOT EXISTS sanctions_imposed_at ON sanctions (imposed_at)",
    "DROP INDEX IF EXISTS sanctions_expiring",  # read by nothing
    # figure: level or issuer_role, value: the level or role.
    # Split over shards by sanction, as account_figures is.
    figures_table("sanction_figures"),
)

_FIGURES = (
    f"SELECT provider_id, f.figure, f.value, {shard('sanction_id')}, count(*)"
    " FROM sanctions CROSS JOIN LATERAL"
    " (VALUES ('level', level), ('issuer_role', issuer_role)) f(figure, value)"
)
_COLUMNS = "(provider_id, figure, value, shard, n)"
# Recount the figures from the sanctions rows (bulk loads; tests).
RECOUNT = (
    "DELETE FROM sanction_figures",
    f"INSERT INTO sanction_figures {_COLUMNS} {_FIGURES} GROUP BY 1, 2, 3, 4",
)
_COUNT = (
    f"INSERT INTO sanction_figures AS s {_COLUMNS} {_FIGURES}"
    " WHERE sanction_id = %s GROUP BY 1, 2, 3, 4"
    " ON CONFLICT (provider_id, figure, value, shard) DO UPDATE SET n = s.n + EXCLUDED.n"
)


def imposed(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    p = e.payload
    yield (
        "INSERT INTO sanctions (sanction_id, account_id, provider_id, level, rule_ids,"
        " evidence_post_ids, reason, issuer_id, issuer_role, imposed_at, expires_at,"
        " position, last_position)"
        " SELECT %s, account_id, provider_id, %s, %s, %s::uuid[], %s, %s, %s, %s, %s, %s, %s"
        " FROM accounts WHERE account_id = %s",
        (
            p["sanction_id"],
            p["level"],
            p["rule_ids"],
            p["evidence_post_ids"],
            p["reason"],
            actor_id(e),
            actor_role(e),
            e.timestamp,
            p["expires_at"],
            e.position,
            e.position,
            e.originator_id,
        ),
    )
    yield _COUNT, (p["sanction_id"],)


def _update(e: LoggedEvent, sets: str, params: tuple[object, ...]) -> Statement:
    return (
        f"UPDATE sanctions SET {sets}, last_position = %s WHERE sanction_id = %s",
        (*params, e.position, e.payload["sanction_id"]),
    )


def lifted(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    yield _update(
        e,
        "lifted_at = %s, lift_reason = %s, lifted_by = %s",
        (e.timestamp, e.payload["reason"], actor_id(e)),
    )


def appealed(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    yield _update(
        e,
        "appeal_state = 'pending', appeal_grounds = %s, appealed_at = %s",
        (e.payload["grounds"], e.timestamp),
    )


def decided(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    p = e.payload
    yield _update(
        e,
        "appeal_state = %s, appeal_reason = %s, appeal_decided_at = %s, appeal_decided_by = %s",
        (p["outcome"], p["reason"], e.timestamp, actor_id(e)),
    )


SANCTIONS = Projection(
    name="sanctions",
    version=3,
    tables=("sanctions", "sanction_figures"),
    ddl=DDL,
    depends_on=("accounts",),
    handlers={
        "Account.SanctionImposed": imposed,
        "Account.SanctionLifted": lifted,
        "Account.SanctionAppealed": appealed,
        "Account.AppealDecided": decided,
    },
)
