"""Statements of reasons in the schema of the EU DSA Transparency Database
(github.com/digital-services-act/transparency-database, resources/markdown/
api-documentation.md and app/Http/Requests/StatementStoreRequest.php), one per sanction.

The mapping:
- the ladder: warning and publishing_restricted are visibility decisions
  (`decision_visibility` DECISION_VISIBILITY_OTHER, with the level in words),
  updates_suspended is DECISION_ACCOUNT_SUSPENDED and closed DECISION_ACCOUNT_TERMINATED;
  an expiry becomes the matching end date;
- the rules: a cited article of the provisions makes it DECISION_GROUND_ILLEGAL_CONTENT,
  the provisions and articles its legal ground; only bottom lines of the service agreement
  make it DECISION_GROUND_INCOMPATIBLE_CONTENT, the agreement its contractual ground;
- `puid` is the sanction's id; the issuer's role gives `source_type` and
  `automated_decision`.

It holds no personal data: no handle, account id, actor id or free-text reason (a reason
may name someone); the facts are built from the level and the rules' own texts.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ledger.ruleset import Ruleset

VISIBILITY_TEXT = {
    "warning": "Warning to the account holder; no restriction",
    "publishing_restricted": "The account may not publish new information (restricted)",
}
ACCOUNT_DECISION = {
    "updates_suspended": "DECISION_ACCOUNT_SUSPENDED",
    "closed": "DECISION_ACCOUNT_TERMINATED",
}
# The seven bottom lines, by the DSA category nearest each.
CATEGORY = {
    "baseline.authenticity": "STATEMENT_CATEGORY_ILLEGAL_OR_HARMFUL_SPEECH",
    "baseline.social_morality": "STATEMENT_CATEGORY_ILLEGAL_OR_HARMFUL_SPEECH",
    "baseline.public_order": "STATEMENT_CATEGORY_RISK_FOR_PUBLIC_SECURITY",
    "baseline.national_interests": "STATEMENT_CATEGORY_RISK_FOR_PUBLIC_SECURITY",
    "baseline.socialist_system": (
        "STATEMENT_CATEGORY_NEGATIVE_EFFECTS_ON_CIVIC_DISCOURSE_OR_ELECTIONS"
    ),
    "baseline.citizens_rights": "STATEMENT_CATEGORY_DATA_PROTECTION_AND_PRIVACY_VIOLATIONS",
}
OTHER_CATEGORY = "STATEMENT_CATEGORY_OTHER_VIOLATION_TC"
SOURCE = {"regulator": "SOURCE_TYPE_OTHER_NOTIFICATION"}  # an authority's order


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _date(value: Any) -> str:
    return str(value.astimezone(UTC).date().isoformat())


def statement_of_reasons(sanction: dict[str, Any], ruleset: Ruleset) -> dict[str, Any]:
    """The statement for one `sanctions` row (its columns as the read table has them)."""
    level, rules = sanction["level"], list(sanction["rule_ids"])
    texts = "; ".join(f"{r}: {ruleset.rules.get(r, r)}" for r in rules)
    statement: dict[str, Any] = {}
    if level in ACCOUNT_DECISION:
        statement["decision_account"] = ACCOUNT_DECISION[level]
        if sanction.get("expires_at"):
            statement["end_date_account_restriction"] = _date(sanction["expires_at"])
    else:
        statement["decision_visibility"] = ["DECISION_VISIBILITY_OTHER"]
        statement["decision_visibility_other"] = VISIBILITY_TEXT.get(level, level)
        if sanction.get("expires_at"):
            statement["end_date_visibility_restriction"] = _date(sanction["expires_at"])
    if set(rules) <= set(ruleset.agreement.baselines):
        statement["decision_ground"] = "DECISION_GROUND_INCOMPATIBLE_CONTENT"
        statement["incompatible_content_ground"] = _cut(
            f"Service agreement ({ruleset.id}), bottom lines: {', '.join(rules)}", 500
        )
        statement["incompatible_content_explanation"] = _cut(texts, 2000)
        statement["incompatible_content_illegal"] = "No"
    else:
        statement["decision_ground"] = "DECISION_GROUND_ILLEGAL_CONTENT"
        statement["illegal_content_legal_ground"] = _cut(
            f"{ruleset.title} ({ruleset.id}): {', '.join(rules)}", 500
        )
        statement["illegal_content_explanation"] = _cut(texts, 2000)
    role = sanction["issuer_role"]
    imposed = _date(sanction["imposed_at"])
    statement.update(
        content_type=["CONTENT_TYPE_TEXT"],
        category=next((CATEGORY[r] for r in rules if r in CATEGORY), OTHER_CATEGORY),
        content_date=imposed,
        application_date=imposed,
        decision_facts=_cut(
            f"Sanction '{level}' imposed by a {role} under the ruleset {ruleset.id},"
            f" citing {texts}; {len(sanction['evidence_post_ids'])} evidence post(s).",
            5000,
        ),
        source_type=SOURCE.get(role, "SOURCE_VOLUNTARY"),
        automated_detection="No",
        automated_decision="AUTOMATED_DECISION_FULLY"
        if role == "system"
        else "AUTOMATED_DECISION_NOT_AUTOMATED",
        puid=str(sanction["sanction_id"]),
    )
    return statement


_PAGE_SQL = """SELECT s.* FROM sanctions s
    WHERE s.position > %(after)s
      AND (%(code)s::text IS NULL OR s.provider_id IN
           (SELECT provider_id FROM providers WHERE code = %(code)s::text))
      AND (%(since)s::timestamptz IS NULL OR s.imposed_at >= %(since)s::timestamptz)
    ORDER BY s.position LIMIT %(page)s"""


def statements(
    conn: psycopg.Connection[Any],
    ruleset: Ruleset,
    provider_code: str | None = None,
    since: datetime | None = None,
    page: int = 1000,
) -> Iterator[dict[str, Any]]:
    """Every sanction's statement, in the order imposed, keyset-paged on the log position."""
    after = 0
    while True:
        params = {"after": after, "code": provider_code, "since": since, "page": page}
        found = conn.cursor(row_factory=dict_row).execute(_PAGE_SQL, params).fetchall()
        yield from (statement_of_reasons(r, ruleset) for r in found)
        if len(found) < page:
            return
        after = found[-1]["position"]
