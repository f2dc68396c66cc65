"""accounts: one row per account with its current state, and per provider the figures
the regulator reads (accounts by kind and status, verified, reviewed and filed).

Status depends on time (a suspension lapses at its expiry with no event), so the row
keeps, per status-changing level, the latest expiry of the sanctions in force
(`infinity` when indefinite) and `status_sql` turns them into a status at read time.

The figures by status count each account under its *eventual* status (the one it keeps
once every finite expiry has passed), and `account_lapses` holds each moment at which
an account's status will change without an event (from, to); `account_lapse_days`
sums those changes per provider and UTC day. The status counts at a moment are the
eventual counts with the changes still to come undone: the day sums of the days after
the moment's day, and the lapses of the rest of its day (an index range scan). So a
read costs the days ahead that hold a lapse (at most the longest sanction) and the
lapses left today, never the ledger, and nothing has to run when a moment passes.
`by_status_sql` is that read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from ledger.log import LoggedEvent
from ledger.ruleset import Ruleset
from projections.base import Projection, Statement, figures_table

DDL = (
    """CREATE TABLE IF NOT EXISTS accounts (
        account_id uuid PRIMARY KEY,
        provider_id uuid NOT NULL,
        handle text NOT NULL,
        kind text NOT NULL,
        category text,
        legacy boolean NOT NULL,
        registered_at timestamptz NOT NULL,
        verified boolean NOT NULL DEFAULT false,
        verified_at timestamptz,
        verification_method text,
        identity_erased_at timestamptz,
        agreement_id text,
        agreement_version text,
        agreement_signed_at timestamptz,
        review_outcome text,
        reviewed_at timestamptz,
        filing_reference text,
        filing_authority text,
        filed_at timestamptz,
        default_scopes text[] NOT NULL,
        news_grants text[] NOT NULL DEFAULT '{}',
        news_scopes text[] NOT NULL,
        marked boolean NOT NULL DEFAULT false,
        active_sanctions jsonb NOT NULL DEFAULT '[]',
        closed_until timestamptz,
        suspended_until timestamptz,
        restricted_until timestamptz,
        sanctions_by_level jsonb NOT NULL DEFAULT '{}',
        post_count int NOT NULL DEFAULT 0,
        position bigint NOT NULL,
        last_position bigint NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS accounts_provider ON accounts (provider_id, position)",
    "CREATE INDEX IF NOT EXISTS accounts_position ON accounts (position)",
    # Each filter alone (regulators), and with the provider (a provider's own view).
    "CREATE INDEX IF NOT EXISTS accounts_category ON accounts (category, position)",
    "CREATE INDEX IF NOT EXISTS accounts_provider_category ON accounts"
    " (provider_id, category, position)",
    "CREATE INDEX IF NOT EXISTS accounts_kind ON accounts (kind, position)",
    "CREATE INDEX IF NOT EXISTS accounts_provider_kind ON accounts (provider_id, kind, position)",
    "CREATE INDEX IF NOT EXISTS accounts_marked ON accounts (position) WHERE marked",
    "CREATE INDEX IF NOT EXISTS accounts_provider_marked ON accounts (provider_id, position)"
    " WHERE marked",
    # One index for the unverified: a global one (position) would be walked for a
    # provider's unverified too, through every other provider's.
    "DROP INDEX IF EXISTS accounts_unverified",
    "CREATE INDEX IF NOT EXISTS accounts_provider_unverified ON accounts"
    " (provider_id, position) WHERE NOT verified",
    # Status filters (status_filter_sql). A closure rarely lapses, so the closed are
    # read in page order; suspensions and restrictions lapse, so those in force now
    # are a range of their expiry, read whole and sorted (the accounts in that status
    # now, never the ones whose sanction has lapsed).
    "CREATE INDEX IF NOT EXISTS accounts_closed ON accounts (position)"
    " WHERE closed_until IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS accounts_provider_closed ON accounts (provider_id, position)"
    " WHERE closed_until IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS accounts_suspended ON accounts (suspended_until)"
    " WHERE suspended_until IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS accounts_provider_suspended ON accounts"
    " (provider_id, suspended_until) WHERE suspended_until IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS accounts_restricted ON accounts (restricted_until)"
    " WHERE restricted_until IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS accounts_provider_restricted ON accounts"
    " (provider_id, restricted_until) WHERE restricted_until IS NOT NULL",
    # figure: kind (value: the kind), status (value: the eventual status), verified,
    # public_reviewed, public_filed (value: ''). A figure is split over SHARDS rows by
    # account (sum them): a page of events then updates each row a few times, where
    # one row updated thousands of times in a transaction grows a version chain that
    # every update walks.
    figures_table("account_figures"),
    """CREATE TABLE IF NOT EXISTS account_lapses (
        account_id uuid NOT NULL,
        at timestamptz NOT NULL,
        provider_id uuid NOT NULL,
        status_before text NOT NULL,
        status_after text NOT NULL,
        PRIMARY KEY (account_id, at))""",
    "CREATE INDEX IF NOT EXISTS account_lapses_due ON account_lapses (provider_id, at)"
    " INCLUDE (status_before, status_after)",
    # n: the accounts to count under `status` before that day's lapses (+1 before, -1 after).
    """CREATE TABLE IF NOT EXISTS account_lapse_days (
        provider_id uuid NOT NULL,
        day int NOT NULL,
        status text NOT NULL,
        n bigint NOT NULL,
        PRIMARY KEY (provider_id, day, status))""",
)

STATUSES = ("active", "publishing_restricted", "updates_suspended", "closed")


def status_sql(now_param: str = "%(now)s") -> str:
    """SQL for an account row's status at the moment bound to `now_param`."""
    return (
        f"CASE WHEN closed_until > {now_param} THEN 'closed'"
        f" WHEN suspended_until > {now_param} THEN 'updates_suspended'"
        f" WHEN restricted_until > {now_param} THEN 'publishing_restricted'"
        " ELSE 'active' END"
    )


def status_filter_sql(status: str, now_param: str = "%(now)s") -> str:
    """A WHERE clause for one status that the partial indexes serve. "Not in force" is
    spelt `until IS NULL OR until <= now`, which the planner can estimate."""

    def lapsed(column: str) -> str:
        return f"({column} IS NULL OR {column} <= {now_param})"

    not_closed = lapsed("closed_until")
    return {
        "closed": f"closed_until > {now_param}",
        "updates_suspended": f"suspended_until > {now_param} AND {not_closed}",
        "publishing_restricted": f"restricted_until > {now_param} AND {not_closed}"
        f" AND {lapsed('suspended_until')}",
        "active": f"{not_closed} AND {lapsed('suspended_until')} AND {lapsed('restricted_until')}",
    }[status]


# The status an account keeps once every finite expiry has passed.
EVENTUAL_STATUS = (
    "CASE WHEN closed_until = 'infinity' THEN 'closed'"
    " WHEN suspended_until = 'infinity' THEN 'updates_suspended'"
    " WHEN restricted_until = 'infinity' THEN 'publishing_restricted'"
    " ELSE 'active' END"
)


def shard(uuid_column: str) -> str:
    """SQL for the shard of a figure's row: 16 of them, by the last byte of an id."""
    return f"(get_byte(uuid_send({uuid_column}), 15) & 15)::smallint"


def _count(figure: str, value: str, when: str = "true", n: int = 1) -> str:
    """Add `n` to a figure of the provider of the account `%s`, if `when` holds for it."""
    return (
        "INSERT INTO account_figures AS f (provider_id, figure, value, shard, n)"
        f" SELECT provider_id, '{figure}', {value}, {shard('account_id')}, {n} FROM accounts"
        f" WHERE account_id = %s AND {when}"
        " ON CONFLICT (provider_id, figure, value, shard) DO UPDATE SET n = f.n + EXCLUDED.n"
    )


def _lapses(where: str) -> str:
    """Insert the moments at which the status of the accounts `where` selects changes
    with no event: each finite expiry at which the status just before differs from
    the status from then on (timestamps are whole microseconds)."""
    before = status_sql("b.at - interval '1 microsecond'")
    return (
        "INSERT INTO account_lapses (account_id, at, provider_id, status_before, status_after)"
        " SELECT * FROM (SELECT account_id, b.at, provider_id,"
        f" {before} AS status_before, {status_sql('b.at')} AS status_after"
        " FROM accounts CROSS JOIN LATERAL (SELECT DISTINCT x AS at FROM"
        " unnest(ARRAY[closed_until, suspended_until, restricted_until]) x"
        f" WHERE isfinite(x)) b WHERE {where}) l WHERE status_before <> status_after"
    )


def _day(moment: str) -> str:
    """SQL for the UTC day number of a timestamptz (whatever the session's time zone)."""
    return f"floor(extract(epoch FROM {moment}) / 86400)::int"


_UNDO = "CROSS JOIN LATERAL (VALUES (status_before, 1), (status_after, -1)) u(status, n)"


def by_status_sql(provider: str, now_param: str = "%(now)s") -> str:
    """SQL for a jsonb of status -> accounts of `provider` (an SQL expression) at `now`."""
    today = _day(f"{now_param}::timestamptz")
    return (
        "(SELECT coalesce(jsonb_object_agg(status, n) FILTER (WHERE n > 0), '{}')"
        " FROM (SELECT status, sum(n)::bigint AS n FROM ("
        " SELECT value AS status, n FROM account_figures"
        f" WHERE provider_id = {provider} AND figure = 'status'"
        " UNION ALL SELECT status, n FROM account_lapse_days"
        f" WHERE provider_id = {provider} AND day > {today}"
        f" UNION ALL SELECT u.status, u.n FROM account_lapses {_UNDO}"
        f" WHERE provider_id = {provider} AND at > {now_param}"
        f" AND at < to_timestamp(({today} + 1) * 86400::bigint)"
        ") c GROUP BY status) s)"
    )


def _days(where: str, sign: int) -> str:
    """Add (1) or take out (-1) the lapses `where` selects from the day sums."""
    return (
        "INSERT INTO account_lapse_days AS d (provider_id, day, status, n)"
        f" SELECT provider_id, {_day('at')}, u.status, {sign} * sum(u.n)"
        f" FROM account_lapses {_UNDO} WHERE {where} GROUP BY 1, 2, 3"
        " ON CONFLICT (provider_id, day, status) DO UPDATE SET n = d.n + EXCLUDED.n"
    )


# Before a change to an account's sanctions in force: take its status out of the
# figures; after it, put it back in.
_STATUS_OUT = (
    _count("status", EVENTUAL_STATUS, n=-1),
    _days("account_id = %s", -1),
    "DELETE FROM account_lapses WHERE account_id = %s",
)
_STATUS_IN = (
    _count("status", EVENTUAL_STATUS),
    _lapses("account_id = %s"),
    _days("account_id = %s", 1),
)


def _by_account(e: LoggedEvent, queries: Iterable[str]) -> Iterable[Statement]:
    for query in queries:
        yield query, (e.originator_id,)


# Recount every figure from the accounts rows (bulk loads; tests check it against the
# figures kept event by event).
RECOUNT = (
    "DELETE FROM account_figures",
    "DELETE FROM account_lapses",
    "DELETE FROM account_lapse_days",
    "INSERT INTO account_figures (provider_id, figure, value, shard, n)"
    f" SELECT provider_id, figure, value, {shard('account_id')}, count(*)"
    " FROM accounts CROSS JOIN LATERAL (VALUES"
    " ('kind', kind, true), ('status', " + EVENTUAL_STATUS + ", true),"
    " ('verified', '', verified),"
    " ('public_reviewed', '', kind = 'public' AND review_outcome IS NOT NULL),"
    " ('public_filed', '', kind = 'public' AND filed_at IS NOT NULL)) f(figure, value, counts)"
    " WHERE counts GROUP BY 1, 2, 3, 4",
    _lapses("true"),
    _days("true", 1),
)


def _touch(e: LoggedEvent, sets: str = "", params: tuple[object, ...] = ()) -> Statement:
    prefix = f"{sets}, " if sets else ""
    return (
        f"UPDATE accounts SET {prefix}last_position = %s WHERE account_id = %s",
        (*params, e.position, e.originator_id),
    )


def registered(e: LoggedEvent, ruleset: Ruleset) -> Iterable[Statement]:
    p = e.payload
    scopes = sorted(ruleset.default_scopes(p["category"])) if p["kind"] == "public" else []
    yield (
        "INSERT INTO accounts (account_id, provider_id, handle, kind, category, legacy,"
        " registered_at, default_scopes, news_scopes, position, last_position)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            e.originator_id,
            p["provider_id"],
            p["handle"],
            p["kind"],
            p["category"],
            p["legacy"],
            e.timestamp,
            scopes,
            scopes,
            e.position,
            e.position,
        ),
    )
    yield _count("kind", "kind"), (e.originator_id,)
    yield _count("status", EVENTUAL_STATUS), (e.originator_id,)


def verified(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    yield _count("verified", "''", "NOT verified"), (e.originator_id,)
    yield _touch(
        e,
        "verified = true, verified_at = %s, verification_method = %s, identity_erased_at = NULL",
        (e.timestamp, e.payload["method"]),
    )


def erased(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    yield _count("verified", "''", "verified", n=-1), (e.originator_id,)
    yield _touch(e, "verified = false, identity_erased_at = %s", (e.timestamp,))


def signed(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    p = e.payload
    yield _touch(
        e,
        "agreement_id = %s, agreement_version = %s, agreement_signed_at = %s",
        (p["agreement_id"], p["version"], e.timestamp),
    )


def reviewed(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    first = "kind = 'public' AND review_outcome IS NULL"
    yield _count("public_reviewed", "''", first), (e.originator_id,)
    yield _touch(e, "review_outcome = %s, reviewed_at = %s", (e.payload["outcome"], e.timestamp))


def filed(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    first = "kind = 'public' AND filed_at IS NULL"
    yield _count("public_filed", "''", first), (e.originator_id,)
    p = e.payload
    yield _touch(
        e,
        "filing_reference = %s, filing_authority = %s, filed_at = %s",
        (p["reference"], p["authority"], e.timestamp),
    )


_SCOPES = (
    "news_scopes = ARRAY(SELECT DISTINCT s FROM unnest(default_scopes || news_grants) s ORDER BY s)"
)


def granted(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    yield _touch(e, "news_grants = array_append(news_grants, %s)", (e.payload["scope"],))
    yield _touch(e, _SCOPES)


def revoked(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    yield _touch(e, "news_grants = array_remove(news_grants, %s)", (e.payload["scope"],))
    yield _touch(e, _SCOPES)


def marked(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    yield _touch(e, "marked = true")


def unmarked(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    yield _touch(e, "marked = false")


def _until(level: str) -> str:
    return (
        "(SELECT max(coalesce((x->>'expires_at')::timestamptz, 'infinity'))"
        f" FROM jsonb_array_elements(active_sanctions) x WHERE x->>'level' = '{level}')"
    )


_REFRESH_STATUS = (
    f"closed_until = {_until('closed')}, suspended_until = {_until('updates_suspended')},"
    f" restricted_until = {_until('publishing_restricted')}"
)


def imposed(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    p = e.payload
    entry = {"sanction_id": p["sanction_id"], "level": p["level"], "expires_at": p["expires_at"]}
    yield from _by_account(e, _STATUS_OUT)
    yield _touch(
        e,
        "active_sanctions = active_sanctions || jsonb_build_array(%s::jsonb),"
        " sanctions_by_level = sanctions_by_level"
        " || jsonb_build_object(%s::text, coalesce((sanctions_by_level->>%s)::int, 0) + 1)",
        (json.dumps(entry), p["level"], p["level"]),
    )
    yield _touch(e, _REFRESH_STATUS)
    yield from _by_account(e, _STATUS_IN)


def _withdraw(e: LoggedEvent) -> Iterable[Statement]:
    yield from _by_account(e, _STATUS_OUT)
    yield _touch(
        e,
        "active_sanctions = (SELECT coalesce(jsonb_agg(x ORDER BY n), '[]')"
        " FROM jsonb_array_elements(active_sanctions) WITH ORDINALITY AS t(x, n)"
        " WHERE x->>'sanction_id' <> %s)",
        (e.payload["sanction_id"],),
    )
    yield _touch(e, _REFRESH_STATUS)
    yield from _by_account(e, _STATUS_IN)


def lifted(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    yield from _withdraw(e)


def appeal_decided(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    if e.payload["outcome"] == "overturned":
        yield from _withdraw(e)
    else:
        yield _touch(e)


def touched(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    yield _touch(e)


def post_published(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    yield (
        "UPDATE accounts SET post_count = post_count + 1, last_position = %s WHERE account_id = %s",
        (e.position, e.payload["account_id"]),
    )


def post_touched(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    yield (
        "UPDATE accounts SET last_position = %s"
        " WHERE account_id = (SELECT account_id FROM posts WHERE post_id = %s)",
        (e.position, e.originator_id),
    )


ACCOUNTS = Projection(
    name="accounts",
    version=5,
    tables=("accounts", "account_figures", "account_lapses", "account_lapse_days"),
    ddl=DDL,
    depends_on=("posts",),
    handlers={
        "Account.Registered": registered,
        "Account.IdentityVerified": verified,
        "Account.IdentityErased": erased,
        "Account.AgreementSigned": signed,
        "Account.Reviewed": reviewed,
        "Account.Filed": filed,
        "Account.NewsPermissionGranted": granted,
        "Account.NewsPermissionRevoked": revoked,
        "Account.Marked": marked,
        "Account.Unmarked": unmarked,
        "Account.SanctionImposed": imposed,
        "Account.SanctionLifted": lifted,
        "Account.SanctionAppealed": touched,
        "Account.AppealDecided": appeal_decided,
        "Post.Published": post_published,
        "Post.ReachRecorded": post_touched,
        "Post.ThresholdCrossed": post_touched,
        "Post.Reported": post_touched,
        "Post.ReportResolved": post_touched,
        "Post.Removed": post_touched,
    },
)
