"""The provider figures kept by the projections against the read-time computation they
replaced (REFERENCE_SQL, the FIGURES_SQL of before), over scripted histories that cross
expiries, at many moments, expiry instants included."""

from __future__ import annotations

import contextlib
import random
from datetime import UTC, datetime, time, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import DictRow

from ledger import Actor, Ledger, Role
from ledger import commands as c
from ledger.errors import LedgerError
from projections import accounts, providers, sanctions
from projections.accounts import STATUSES, status_filter_sql, status_sql
from projections.providers import FIGURES_SQL, figures_params, resolution_bucket
from projections.runner import Projector
from tests.conftest import Clock
from tests.world import REGULATOR, World

Reader = psycopg.Connection[DictRow]
MICRO = timedelta(microseconds=1)
SYSTEM = Actor("system", Role.SYSTEM)

# The figures as they were computed at read time, over every row of a provider.
REFERENCE_SQL = f"""
SELECT p.provider_id, p.code, p.name, p.licence_ref, p.registered_at, p.qualifications,
  a.accounts, a.by_kind, a.by_status, a.verified, a.public, a.public_reviewed, a.public_filed,
  s.by_level, s.by_issuer_role,
  r.open_reports, r.p50, r.p95
FROM providers p
CROSS JOIN LATERAL (
  SELECT coalesce(sum(n), 0)::bigint AS accounts,
    coalesce(jsonb_object_agg(kind, n) FILTER (WHERE kind IS NOT NULL), '{{}}') AS by_kind,
    (SELECT coalesce(jsonb_object_agg(status, n), '{{}}') FROM (
       SELECT {status_sql()} AS status, count(*) AS n FROM accounts
       WHERE provider_id = p.provider_id GROUP BY 1) st) AS by_status,
    sum(verified)::bigint AS verified, sum(public)::bigint AS public,
    sum(public_reviewed)::bigint AS public_reviewed, sum(public_filed)::bigint AS public_filed
  FROM (
    SELECT kind, count(*) AS n, count(*) FILTER (WHERE verified) AS verified,
      count(*) FILTER (WHERE kind = 'public') AS public,
      count(*) FILTER (WHERE kind = 'public' AND review_outcome IS NOT NULL) AS public_reviewed,
      count(*) FILTER (WHERE kind = 'public' AND filed_at IS NOT NULL) AS public_filed
    FROM accounts WHERE provider_id = p.provider_id GROUP BY kind) k
) a
CROSS JOIN LATERAL (
  SELECT
    (SELECT coalesce(jsonb_object_agg(level, n), '{{}}') FROM (SELECT level, count(*) AS n
       FROM sanctions WHERE provider_id = p.provider_id GROUP BY level) l) AS by_level,
    (SELECT coalesce(jsonb_object_agg(issuer_role, n), '{{}}') FROM (SELECT issuer_role,
       count(*) AS n FROM sanctions WHERE provider_id = p.provider_id GROUP BY issuer_role) i)
       AS by_issuer_role
) s
CROSS JOIN LATERAL (
  SELECT
    (SELECT count(*) FROM reports WHERE provider_id = p.provider_id AND resolved_at IS NULL)
      AS open_reports,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds_to_resolve) AS p50,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY seconds_to_resolve) AS p95
  FROM reports WHERE provider_id = p.provider_id AND resolved_at IS NOT NULL
) r
WHERE %(all)s OR p.provider_id = ANY(%(ids)s)
ORDER BY p.code
"""

FIGURE_TABLES = ("account_figures", "account_lapses", "account_lapse_days", "sanction_figures")
FIGURE_TABLES += ("report_figures", "resolution_buckets")


@pytest.fixture
def world(ledger: Ledger) -> World:
    return World(ledger)


class Check:
    """Catch up, then compare the kept figures with the reference at many moments."""

    def __init__(self, projector: Projector, reader: Reader, clock: Clock) -> None:
        self.projector, self.reader, self.clock = projector, reader, clock
        # Days are UTC days whatever the session's time zone.
        reader.execute("SET TimeZone = 'Asia/Shanghai'")
        self.moments_checked = 0

    def __call__(self) -> None:
        self.projector.catch_up()
        for now in self.moments():
            for ids in (None, self.provider_ids()[:1]):
                params = figures_params(now, ids)
                kept = self.reader.execute(FIGURES_SQL, params).fetchall()  # type: ignore[arg-type]
                reference = self.reader.execute(REFERENCE_SQL, params).fetchall()  # type: ignore[arg-type]
                assert kept == reference, f"at {now}"
            self.moments_checked += 1

    def filters(self) -> None:
        """status_filter_sql selects the accounts status_sql puts in that status."""
        self.projector.catch_up()
        for now in self.moments():
            status = {
                r["account_id"]: r["status"]
                for r in self.reader.execute(
                    f"SELECT account_id, {status_sql()} AS status FROM accounts", {"now": now}
                ).fetchall()
            }
            for s in STATUSES:
                query = f"SELECT account_id FROM accounts WHERE {status_filter_sql(s)}"
                found = self.reader.execute(query, {"now": now}).fetchall()  # type: ignore[arg-type]
                assert {r["account_id"] for r in found} == {
                    a for a, x in status.items() if x == s
                }, (s, now)

    def provider_ids(self) -> list[UUID]:
        found = self.reader.execute("SELECT provider_id FROM providers ORDER BY code")
        return [r["provider_id"] for r in found.fetchall()]

    def moments(self) -> list[datetime]:
        """Now, long before and after, and around every expiry and every event."""
        found = self.reader.execute(
            "SELECT expires_at AS t FROM sanctions WHERE expires_at IS NOT NULL"
            " UNION SELECT at FROM account_lapses UNION SELECT imposed_at FROM sanctions"
            " UNION SELECT lifted_at FROM sanctions WHERE lifted_at IS NOT NULL"
            " UNION SELECT appeal_decided_at FROM sanctions WHERE appeal_decided_at IS NOT NULL"
        ).fetchall()
        instants = {r["t"] for r in found}
        midnights = {
            datetime.combine(t.astimezone(UTC).date(), time(), UTC) + timedelta(days=d)
            for t in instants
            for d in (0, 1)
        }
        around = {t + d for t in instants | midnights for d in (-MICRO, timedelta(0), MICRO)}
        ends = {datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)}
        return sorted(around | ends | {self.clock.now})


@pytest.fixture
def check(projector: Projector, reader: Reader, clock: Clock) -> Check:
    return Check(projector, reader, clock)


def figure_tables(reader: Reader) -> dict[str, list[dict[str, Any]]]:
    def rows(table: str) -> list[dict[str, Any]]:
        found = reader.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))
        kept = [r for r in found.fetchall() if r.get("n", 1) != 0]
        return sorted(kept, key=lambda r: repr(list(r.values())))

    return {t: rows(t) for t in FIGURE_TABLES}


def assert_recount_agrees(reader: Reader) -> None:
    """The figures kept event by event equal a recount from the rows (zeros aside)."""
    kept = figure_tables(reader)
    with reader.transaction():
        for statement in accounts.RECOUNT + sanctions.RECOUNT + providers.RECOUNT:
            reader.execute(statement)  # type: ignore[arg-type]
    assert figure_tables(reader) == kept


def sanction(world: World, account: UUID, level: str, days: int | None = None) -> UUID:
    return world.sanction(account, level, days)


def lift(world: World, account: UUID, sanction_id: UUID) -> None:
    world.run(c.LiftSanction, REGULATOR, account_id=account, sanction_id=sanction_id, reason="ok")


def appeal(world: World, account: UUID, sanction_id: UUID, outcome: str) -> None:
    world.run(
        c.AppealSanction, SYSTEM, account_id=account, sanction_id=sanction_id, grounds="mistaken"
    )
    world.run(
        c.DecideAppeal,
        REGULATOR,
        account_id=account,
        sanction_id=sanction_id,
        outcome=outcome,
        reason="r",
    )


def report(world: World, post: UUID) -> UUID:
    value = world.run(c.ReportPost, SYSTEM, post_id=post, reporter="user-1", reason="rumour")
    return UUID(value["report_id"])


def resolve(world: World, post: UUID, report_id: UUID) -> None:
    world.run(
        c.ResolveReport, REGULATOR, post_id=post, report_id=report_id, outcome="upheld", reason="x"
    )


def test_overlapping_suspensions_and_lifts(world: World, clock: Clock, check: Check) -> None:
    a = world.account()
    b = world.account(kind="personal")
    world.account(verified=False, approved=False)
    check()
    week = sanction(world, a, "updates_suspended", 7)
    sanction(world, a, "publishing_restricted", 15)
    clock.advance(days=2)
    month = sanction(world, a, "updates_suspended", 30)
    sanction(world, b, "publishing_restricted", 7)
    check()
    lift(world, a, week)
    clock.advance(days=8)
    check()
    sanction(world, b, "publishing_restricted", 7)  # after the first one lapsed
    sanction(world, b, "updates_suspended", 7)  # ends with the restriction
    check()
    lift(world, a, month)
    clock.advance(days=40)
    check()
    check.filters()
    assert check.moments_checked > 40


def test_closed_and_reopened_accounts(
    world: World, clock: Clock, check: Check, reader: Reader
) -> None:
    a = world.account()
    b = world.account()
    c_ = world.account(ops=world.rival_ops)
    closing = sanction(world, a, "closed")
    suspension = sanction(world, b, "updates_suspended", 30)
    clock.advance(days=1)
    closing_b = sanction(world, b, "closed")
    check()
    appeal(world, a, closing, "overturned")  # reopened
    check()
    clock.advance(days=3)
    appeal(world, b, closing_b, "overturned")  # back to suspended until its expiry
    check()
    restriction = sanction(world, c_, "publishing_restricted", 7)
    clock.advance(days=10)
    appeal(world, c_, restriction, "upheld")
    appeal(world, b, suspension, "overturned")
    forever = sanction(world, a, "updates_suspended")
    sanction(world, a, "closed")
    check()
    appeal(world, a, forever, "overturned")
    check()
    check.filters()
    assert_recount_agrees(reader)


def test_reports_opened_and_resolved(
    world: World, clock: Clock, check: Check, reader: Reader
) -> None:
    post = world.post(world.account())
    rival_post = world.post(world.account(ops=world.rival_ops), ops=world.rival_ops)
    check()
    for n, seconds in enumerate((30, 10, 20, 10, 7200, 0.5, 86400 * 3, 45, 45, 46)):
        reported = report(world, post)
        if n % 3 == 0:
            report(world, post)
        clock.advance(seconds=seconds)
        resolve(world, post, reported)
        check()
    world.run(c.ReportPost, world.rival_ops, post_id=rival_post, reporter="u", reason="r")
    check()
    assert_recount_agrees(reader)


def test_resolution_buckets_keep_the_order_of_seconds() -> None:
    rng = random.Random(7)
    times = [10 ** rng.uniform(-2, 6) for _ in range(5000)]
    times += [0.0, 1.0, 2.0, 4.0, 2**31.5]
    times.sort()
    buckets = [resolution_bucket(t) for t in times]
    assert buckets == sorted(buckets)
    assert len(set(buckets)) > 200


ACTIONS = ("account", "verify", "erase", "review", "file", "lift", "post", "advance")
ACTIONS += ("sanction",) * 3 + ("appeal", "report", "resolve", "advance") * 2
LEVELS = {
    "warning": (None,),
    "publishing_restricted": (7, 15, None),
    "updates_suspended": (7, 15, 30, None),
    "closed": (None,),
}


class Script:
    """Random acts on a few accounts of two providers; refusals are part of the game."""

    def __init__(self, world: World, clock: Clock, seed: int) -> None:
        self.world, self.clock, self.rng = world, clock, random.Random(seed)
        self.accounts: list[UUID] = []
        self.sanctions: list[tuple[UUID, UUID]] = []
        self.posts: list[UUID] = []
        self.reports: list[tuple[UUID, UUID]] = []

    def step(self) -> None:
        action = self.rng.choice(ACTIONS) if self.accounts else "account"
        with contextlib.suppress(LedgerError):
            getattr(self, action)()

    def pick(self, items: list[Any]) -> Any:
        if not items:
            raise LedgerError("nothing to act on")
        return self.rng.choice(items)

    def account(self) -> None:
        ops = self.rng.choice((self.world.ops, self.world.rival_ops))
        kind = self.rng.choice(("public", "personal"))
        verified = self.rng.random() < 0.7
        self.accounts.append(
            self.world.account(kind=kind, verified=verified, approved=verified, ops=ops)
        )

    def _regulate(self, command: type[c.Command], **args: Any) -> None:
        self.world.run(command, SYSTEM, account_id=self.pick(self.accounts), **args)

    def verify(self) -> None:
        self._regulate(
            c.VerifyIdentity, real_name="Li Lei", id_number="110101199003070011", method="id_card"
        )

    def erase(self) -> None:
        self._regulate(c.EraseIdentity, reason="asked")

    def review(self) -> None:
        outcome = self.rng.choice(("approved", "rejected"))
        self._regulate(c.ReviewAccount, outcome=outcome, reason="r")

    def file(self) -> None:
        self._regulate(c.FileAccount, authority="cac", reference="F-1", category="enterprise")

    def sanction(self) -> None:
        account = self.pick(self.accounts)
        level = self.rng.choice(list(LEVELS))
        days = self.rng.choice(LEVELS[level])
        self.sanctions.append((account, self.world.sanction(account, level, days)))

    def lift(self) -> None:
        account, sanction_id = self.pick(self.sanctions)
        lift(self.world, account, sanction_id)

    def appeal(self) -> None:
        account, sanction_id = self.pick(self.sanctions)
        appeal(self.world, account, sanction_id, self.rng.choice(("upheld", "overturned")))

    def post(self) -> None:
        self.posts.append(self.world.post(self.pick(self.accounts), ops=SYSTEM))

    def report(self) -> None:
        post = self.pick(self.posts)
        value = self.world.run(c.ReportPost, SYSTEM, post_id=post, reporter="u", reason="r")
        self.reports.append((post, UUID(value["report_id"])))

    def resolve(self) -> None:
        post, report_id = self.pick(self.reports)
        resolve(self.world, post, report_id)

    def advance(self) -> None:
        self.clock.advance(seconds=self.rng.choice((1, 59, 3600, 86400, 86400 * 8, 86400 * 20)))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_histories(
    world: World, clock: Clock, check: Check, reader: Reader, seed: int
) -> None:
    script = Script(world, clock, seed)
    for n in range(200):
        script.step()
        if n % 20 == 19:
            check()
    check()
    check.filters()
    assert len(script.sanctions) > 5
    assert_recount_agrees(reader)


def test_a_wrong_count_is_caught(world: World, check: Check, reader: Reader) -> None:
    """The comparison can fail: a kept count nudged by one differs from the reference."""
    a = world.account()
    sanction(world, a, "updates_suspended", 7)
    check()
    reader.execute("UPDATE account_lapses SET at = at + interval '1 microsecond'")
    with pytest.raises(AssertionError):
        check()


def test_percentiles_equal_percentile_cont_at_every_count(
    projector: Projector, reader: Reader
) -> None:
    """Times to resolution written straight into the reports table, ties and bucket
    bounds included, compared after each one added: the rank and the next fall in
    one bucket or in two."""
    provider = UUID(int=1)
    reader.execute(
        "INSERT INTO providers (provider_id, code, name, licence_ref, registered_at, position,"
        " last_position) VALUES (%s, 'p', 'P', 'L', now(), 1, 1)",
        (provider,),
    )
    rng = random.Random(11)
    bounds = [0.0, 1.0, 2 ** (1 / 16), 2.0, 60.0, 61.0]
    for n in range(1, 301):
        seconds = rng.choice(bounds) if n % 4 == 0 else 10 ** rng.uniform(-1, 5)
        reader.execute(
            "INSERT INTO reports (report_id, post_id, account_id, provider_id, reason,"
            " reported_at, resolved_at, seconds_to_resolve, resolution_bucket, position)"
            " VALUES (%s, %s, %s, %s, 'r', now(), now(), %s, %s, %s)",
            (
                UUID(int=n),
                UUID(int=n),
                UUID(int=n),
                provider,
                seconds,
                resolution_bucket(seconds),
                n,
            ),
        )
        with reader.transaction():
            for statement in providers.RECOUNT:
                reader.execute(statement)  # type: ignore[arg-type]
        params = figures_params(datetime.now(UTC), [provider])
        kept = reader.execute(FIGURES_SQL, params).fetchone()  # type: ignore[arg-type]
        reference = reader.execute(REFERENCE_SQL, params).fetchone()  # type: ignore[arg-type]
        assert kept is not None and reference is not None
        assert (kept["p50"], kept["p95"]) == (reference["p50"], reference["p95"]), n
