"""Each GraphQL object type of the read models as SQL over a row: a JSON object of the
fields selected, in the order selected. Nested rows (a sanction's account, a flagged
post's post) are subqueries confined like the roots."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count

from api.graphql.compiler.plan import Selection
from api.graphql.compiler.sql import Unsupported, iso, json_object, share
from api.graphql.selects import ACCOUNT_SELECT, POST_SELECT


@dataclass
class Builder:
    """What one statement's text is built with: fresh table aliases, and whether every
    table reference is confined to the principal's provider."""

    confined: bool
    events_table: str = ""
    _aliases: count[int] = field(default_factory=count)

    def alias(self) -> str:
        return f"t{next(self._aliases)}"

    def confine(self, column: str = "provider_id") -> str:
        return f" AND {column} = %(mine)s" if self.confined else ""


Nested = Callable[[Builder, Selection, str], str]


@dataclass(frozen=True)
class ObjectType:
    name: str
    columns: dict[str, str]  # field -> SQL over the row `{t}`
    nested: dict[str, Nested] = field(default_factory=dict)


def build(b: Builder, type_name: str, selections: tuple[Selection, ...], t: str) -> str:
    """The JSON object of `selections` over the row aliased `t`."""
    spec = TYPES.get(type_name)
    if spec is None:
        raise Unsupported(f"type {type_name}")
    pairs = []
    for s in selections:
        if s.name == "__typename":
            pairs.append((s.key, f"'{spec.name}'"))
        elif s.name in spec.columns:
            pairs.append((s.key, spec.columns[s.name].replace("{t}", t)))
        elif s.name in spec.nested:
            pairs.append((s.key, spec.nested[s.name](b, s, t)))
        else:
            raise Unsupported(f"field {type_name}.{s.name}")
    return json_object(pairs)


def json_list(b: Builder, s: Selection, rows: str, order: str, alias: str) -> str:
    """A JSON list of the objects `s` selects over `rows` (FROM ... aliased `alias`)."""
    item = build(b, s.type_name, s.children, alias)
    return f"(SELECT coalesce(json_agg({item} ORDER BY {order}), '[]') FROM {rows})"


# ----- nested rows ---------------------------------------------------------------------


def account_of(b: Builder, s: Selection, t: str) -> str:
    """The account of the row `t` (null when not visible)."""
    a = b.alias()
    where = f"account_id = {t}.account_id{b.confine()}"
    rows = f"({ACCOUNT_SELECT} WHERE {where}) {a}"
    return f"(SELECT {build(b, 'Account', s.children, a)} FROM {rows})"


def post_of(b: Builder, s: Selection, t: str) -> str:
    p = b.alias()
    where = f"post_id = {t}.post_id{b.confine()}"
    rows = f"({POST_SELECT} WHERE {where}) {p}"
    return f"(SELECT {build(b, 'Post', s.children, p)} FROM {rows})"


def active_sanctions(b: Builder, s: Selection, t: str) -> str:
    """Sanctions in force at `now` (Account.of drops those expired), in their order."""
    x = b.alias()
    expires = f"{x}.v->>'expires_at'"
    in_force = (
        f"CASE WHEN coalesce({expires}, '') = '' THEN true"
        f" ELSE ({expires})::timestamptz > %(now)s END"
    )
    rows = f"jsonb_array_elements({t}.active_sanctions) WITH ORDINALITY {x}(v, n) WHERE {in_force}"
    return json_list(b, s, rows, f"{x}.n", x)


def counts_of(column: str) -> Nested:
    """A jsonb object of counts as a list sorted by key (types.counts, LevelCount)."""

    def nested(b: Builder, s: Selection, t: str) -> str:
        e = b.alias()
        rows = f"jsonb_each({column.replace('{t}', t)}) {e}"
        return json_list(b, s, rows, f'{e}.key COLLATE "C"', e)

    return nested


def projections(b: Builder, s: Selection, t: str) -> str:
    p = b.alias()
    oldest = (
        "(SELECT greatest(0, extract(epoch FROM %(wall)s - (convert_from(e.state, 'UTF8')::json"
        " #>> '{timestamp,_data_}')::timestamptz))::float8"
        f" FROM {b.events_table} e WHERE e.notification_id > pp.position"
        " ORDER BY e.notification_id LIMIT 1)"
    )
    rows = (
        "(SELECT pp.name, pp.position, (SELECT count(*) FROM projection_failures f"
        " WHERE f.projection = pp.name) AS failures, CASE WHEN pp.position < "
        f"{t}.head THEN coalesce({oldest}, 0) ELSE 0 END AS lag_seconds,"
        f" {t}.head - pp.position AS lag_events FROM projection_positions pp) {p}"
    )
    return json_list(b, s, rows, f"{p}.name", p)


# ----- the types -------------------------------------------------------------------------


def _text(*names: str) -> dict[str, str]:
    """Fields read as they are from the column of the same name in snake_case."""
    return {n: "{t}." + "".join(f"_{c.lower()}" if c.isupper() else c for c in n) for n in names}


def _times(*names: str) -> dict[str, str]:
    return {n: iso(_text(n)[n]) for n in names}


ACCOUNT = ObjectType(
    "Account",
    {
        "id": "{t}.account_id",
        **_text("providerId", "handle", "kind", "category", "legacy", "verified"),
        **_text("verificationMethod", "agreementVersion", "reviewOutcome", "filingReference"),
        **_text("newsScopes", "marked", "postCount"),
        **_times("registeredAt", "verifiedAt", "agreementSignedAt", "reviewedAt", "filedAt"),
        "status": "upper({t}.status)",
        "lastPosition": "{t}.last_position::text",
    },
    {
        "activeSanctions": active_sanctions,
        "sanctionsByLevel": counts_of("{t}.sanctions_by_level"),
    },
)
ACTIVE_SANCTION = ObjectType(
    "ActiveSanction",
    {
        "sanctionId": "{t}.v->>'sanction_id'",
        "level": "{t}.v->>'level'",
        "expiresAt": "nullif({t}.v->>'expires_at', '')",
    },
)
LEVEL_COUNT = ObjectType("LevelCount", {"level": "{t}.key", "count": "({t}.value)::int"})
COUNT = ObjectType("Count", {"key": "{t}.key", "count": "({t}.value)::int"})
SANCTION = ObjectType(
    "Sanction",
    {
        "id": "{t}.sanction_id",
        **_text("accountId", "providerId", "level", "ruleIds", "evidencePostIds", "reason"),
        **_text("issuerId", "issuerRole", "liftReason", "appealState", "appealGrounds"),
        **_text("appealReason"),
        **_times("imposedAt", "expiresAt", "liftedAt", "appealDecidedAt"),
        "position": "{t}.position::text",
    },
    {"account": account_of},
)
HISTORY_ENTRY = ObjectType(
    "HistoryEntry",
    {
        **_text("accountId", "postId", "type", "actorId", "actorRole", "ruleIds", "summary"),
        "at": iso("{t}.at"),
        "position": "{t}.position::text",
    },
)
POST = ObjectType(
    "Post",
    {
        "id": "{t}.post_id",
        **_text("accountId", "providerId", "ref", "origin", "category", "sourcePostId"),
        **_text("views", "reposts", "reportsOpen", "reportsTotal", "removalReason"),
        "contentSha256": "{t}.content_sha256",
        **_times("publishedAt", "removedAt"),
        "position": "{t}.position::text",
    },
    {"account": account_of},
)
FLAGGED_POST = ObjectType(
    "FlaggedPost",
    {
        **_text("postId", "accountId", "providerId", "metric", "threshold", "value"),
        **_times("crossedAt", "removedAt"),
        "removed": "({t}.removed_at IS NOT NULL)",
        "position": "{t}.position::text",
    },
    {"post": post_of, "account": account_of},
)
_ACCOUNTS = "coalesce({t}.accounts, 0)"
_PUBLIC = "coalesce({t}.public, 0)"
PROVIDER = ObjectType(
    "Provider",
    {
        "id": "{t}.provider_id",
        **_text("code", "name", "licenceRef", "qualifications", "openReports"),
        "registeredAt": iso("{t}.registered_at"),
        "accounts": _ACCOUNTS,
        "shareVerified": share("{t}.verified", _ACCOUNTS),
        "sharePublicReviewed": share("{t}.public_reviewed", _PUBLIC),
        "sharePublicFiled": share("{t}.public_filed", _PUBLIC),
        "resolutionSecondsP50": "{t}.p50",
        "resolutionSecondsP95": "{t}.p95",
    },
    {
        "accountsByKind": counts_of("{t}.by_kind"),
        "accountsByStatus": counts_of("{t}.by_status"),
        "sanctionsByLevel": counts_of("{t}.by_level"),
        "sanctionsByIssuerRole": counts_of("{t}.by_issuer_role"),
    },
)
LEDGER_STATUS = ObjectType("LedgerStatus", {"head": "{t}.head::text"}, {"projections": projections})
PROJECTION_LAG = ObjectType(
    "ProjectionLag",
    {
        "name": "{t}.name",
        "position": "{t}.position::text",
        "lagEvents": "{t}.lag_events",
        "lagSeconds": "{t}.lag_seconds",
        "failures": "{t}.failures",
    },
)
TYPES = {
    t.name: t
    for t in (
        ACCOUNT, ACTIVE_SANCTION, LEVEL_COUNT, COUNT, SANCTION, HISTORY_ENTRY, POST,
        FLAGGED_POST, PROVIDER, LEDGER_STATUS, PROJECTION_LAG,
    )
}  # fmt: skip
