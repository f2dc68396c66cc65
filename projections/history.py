"""history: the compliance history, one row per event on an account or on its posts,
in log order, with a short human summary, the actor and the rule ids cited."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ledger.log import LoggedEvent
from ledger.ruleset import Ruleset
from projections.base import Handler, Projection, Statement, actor_id, actor_role

DDL = (
    """CREATE TABLE IF NOT EXISTS history (
        position bigint PRIMARY KEY,
        account_id uuid NOT NULL,
        provider_id uuid NOT NULL,
        post_id uuid,
        type text NOT NULL,
        at timestamptz NOT NULL,
        actor_id text,
        actor_role text,
        rule_ids text[] NOT NULL,
        summary text NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS history_account ON history (account_id, position)",
    "CREATE INDEX IF NOT EXISTS history_account_at ON history (account_id, at)",
    # Read by nothing: history is always read by account.
    "DROP INDEX IF EXISTS history_provider",
    "DROP INDEX IF EXISTS history_at",
)


def _sanction(p: dict[str, Any]) -> str:
    until = f" until {p['expires_at'][:10]}" if p["expires_at"] else ""
    return f"sanction imposed: {p['level']}{until} ({', '.join(p['rule_ids'])}): {p['reason']}"


SUMMARIES: dict[str, Callable[[dict[str, Any]], str]] = {
    "Account.Registered": lambda p: (
        f"registered {p['kind']} account @{p['handle']}"
        + (f" ({p['category']})" if p["category"] else "")
        + (" as legacy" if p["legacy"] else "")
    ),
    "Account.IdentityVerified": lambda p: f"real identity verified by {p['method']}",
    "Account.IdentityErased": lambda p: f"real identity erased: {p['reason']}",
    "Account.IdentityDisclosed": lambda p: (
        f"real identity disclosed: {p['basis']} (case {p['case_reference']})"
    ),
    "Account.AgreementSigned": lambda p: f"signed agreement {p['agreement_id']} {p['version']}",
    "Account.Reviewed": lambda p: f"reviewed: {p['outcome']}: {p['reason']}",
    "Account.Filed": lambda p: f"filed with {p['authority']} as {p['reference']}",
    "Account.NewsPermissionGranted": lambda p: f"news permission granted: {p['scope']}",
    "Account.NewsPermissionRevoked": lambda p: f"news permission revoked: {p['scope']}",
    "Account.Marked": lambda p: "marked as a public-information account",
    "Account.Unmarked": lambda p: f"unmarked: {p['reason']}",
    "Account.SanctionImposed": _sanction,
    "Account.SanctionLifted": lambda p: f"sanction lifted: {p['reason']}",
    "Account.SanctionAppealed": lambda p: f"sanction appealed: {p['grounds']}",
    "Account.AppealDecided": lambda p: f"appeal decided: {p['outcome']}: {p['reason']}",
    "Post.Published": lambda p: f"post {p['ref']} published ({p['origin']}, {p['category']})",
    "Post.ReachRecorded": lambda p: f"reach: {p['views']} views, {p['reposts']} reposts",
    "Post.ThresholdCrossed": lambda p: f"post crossed {p['threshold']} {p['metric']}",
    "Post.Reported": lambda p: f"post reported: {p['reason']}",
    "Post.ReportResolved": lambda p: f"report resolved: {p['outcome']}: {p['reason']}",
    "Post.Removed": lambda p: f"post removed: {p['reason']}",
}

_COLUMNS = (
    "position, account_id, provider_id, post_id, type, at, actor_id, actor_role, rule_ids, summary"
)


def _values(e: LoggedEvent) -> tuple[Any, ...]:
    summary = SUMMARIES[e.type](e.payload)
    rules = e.payload.get("rule_ids") or []
    return e.position, e.type, e.timestamp, actor_id(e), actor_role(e), rules, summary


def _copied_from(table: str, key: str, post_id: str) -> Handler:
    """A handler inserting the event's row with its account and provider read from
    `table` (a read model this one depends on, applied first)."""

    def handle(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
        position, type_, at, who, role, rules, summary = _values(e)
        yield (
            f"INSERT INTO history ({_COLUMNS})"
            f" SELECT %s, account_id, provider_id, {post_id}, %s, %s, %s, %s, %s, %s"
            f" FROM {table} WHERE {key} = %s",
            (position, type_, at, who, role, rules, summary, e.originator_id),
        )

    return handle


account_event = _copied_from("accounts", "account_id", "NULL")
post_event = _copied_from("posts", "post_id", "post_id")


HISTORY = Projection(
    name="history",
    version=1,
    tables=("history",),
    ddl=DDL,
    depends_on=("posts", "accounts"),
    handlers={
        topic: account_event if topic.startswith("Account.") else post_event for topic in SUMMARIES
    },
)
