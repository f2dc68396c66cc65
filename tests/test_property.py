"""Property-based test: random command sequences through the real `Ledger` on PostgreSQL.

A hypothesis state machine issues commands of every kind — well-formed or not, by the
right actor or not — against a ledger on a fresh schema per example, and moves a hand
clock by days so that sanctions lapse. After every step it checks that:

1. the state rebuilt from stored events equals the state held in memory: the writing
   ledger keeps the aggregates its commands left in memory (eventsourcing's aggregate
   cache without fast-forward), a second ledger on the same schema loads them from the
   store (through snapshots, which the machine takes at random), and a plain replay of
   every stored event ignores snapshots; all three agree, `__dict__` for `__dict__`;
2. no invariant is ever broken: `LogChecker` reads the log from the start with a model
   of its own and checks every event against the rules of DESIGN.md section 2;
3. a refused command writes nothing: the log head is unchanged and its idempotency key
   unused; an accepted one writes, and its retry writes nothing and returns the same.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.application import project_aggregate
from eventsourcing.domain import Aggregate
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from ledger import SYSTEM, Actor, Database, Ledger, LedgerError, Role
from ledger import commands as c
from ledger.domain import ids
from ledger.log import LoggedEvent
from ledger.ruleset import Ruleset, load_ruleset
from ledger.vault import Vault
from tests.conftest import TEST_KEY, Clock
from tests.world import REGULATOR, World, sha

RULESET = load_ruleset()
AGREEMENT = RULESET.agreement
CATEGORIES = tuple(RULESET.categories)
NEWS_CATEGORIES = tuple(k for k, v in RULESET.categories.items() if v != "none")

SETTINGS = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
)

# ----- the independent checker ----------------------------------------------------------

APPEAL_EVENTS = frozenset({"Account.SanctionAppealed", "Account.AppealDecided"})
# Erasing a real identity stays possible on a closed account: it is the holder's right and
# changes nothing of the account's standing.
TOLERATED_ON_CLOSED = frozenset({"Account.IdentityErased"})
HALTING_LEVELS = frozenset({"closed", "updates_suspended", "publishing_restricted"})
OFFICIAL_ROLES = frozenset({Role.REGULATOR.value, Role.SYSTEM.value})


@dataclass
class _Sanction:
    level: str
    issuer_role: str
    expires_at: datetime | None
    lifted: bool = False
    appealed: bool = False
    outcome: str | None = None

    def in_force(self, at: datetime) -> bool:
        if self.lifted or self.outcome == "overturned":
            return False
        return self.expires_at is None or at < self.expires_at


@dataclass
class _Account:
    provider_id: str
    kind: str
    category: str | None
    verified: bool = False
    agreement: tuple[str, str] | None = None
    review: str | None = None
    grants: set[str] = field(default_factory=set)
    marked: bool = False
    sanctions: dict[str, _Sanction] = field(default_factory=dict)

    def levels(self, at: datetime) -> set[str]:
        return {s.level for s in self.sanctions.values() if s.in_force(at)}


@dataclass
class _Post:
    account_id: str
    provider_id: str
    reach: dict[str, int] = field(default_factory=lambda: {"views": 0, "reposts": 0})
    crossed: set[tuple[str, int]] = field(default_factory=set)
    reports: dict[str, bool] = field(default_factory=dict)  # report id -> resolved
    removed: bool = False


class LogChecker:
    """Reads the log from the start and keeps its own tiny model of accounts and posts.

    It knows the ruleset as data (rule ids, ladder, durations, thresholds, default
    scopes per category) and nothing of the domain code. `apply` checks each event
    against the state before it; `check_settled` checks what holds between commands.
    """

    def __init__(self, ruleset: Ruleset) -> None:
        self.ruleset = ruleset
        self.accounts: dict[str, _Account] = {}
        self.posts: dict[str, _Post] = {}

    def scopes(self, account: _Account) -> set[str]:
        if account.kind != "public":
            return set()
        default = self.ruleset.categories.get(account.category or "", "none")
        return ({default} - {"none"}) | account.grants

    def apply(self, e: LoggedEvent) -> None:
        assert e.actor is not None, f"{e.type} at {e.position} names no actor"
        aggregate, _, name = e.type.partition(".")
        if aggregate == "Account":
            self._account_event(e, name)
        elif aggregate == "Post":
            self._post_event(e, name)

    def _own(self, e: LoggedEvent, provider_id: str) -> None:
        assert e.actor is not None
        if e.actor["role"] == Role.PROVIDER.value:
            assert e.actor["provider_id"] == provider_id, (
                f"{e.type} at {e.position}: a provider acted on another provider's aggregate"
            )

    def _official(self, e: LoggedEvent) -> None:
        assert e.actor is not None
        assert e.actor["role"] in OFFICIAL_ROLES, f"{e.type} by {e.actor}"

    # ----- accounts ----------------------------------------------------------------------

    def _account_event(self, e: LoggedEvent, name: str) -> None:
        p, at, key = e.payload, e.timestamp, str(e.originator_id)
        if name == "Registered":
            assert key not in self.accounts
            assert p["kind"] in ("personal", "public")
            assert (p["category"] in self.ruleset.categories) == (p["kind"] == "public")
            self.accounts[key] = _Account(p["provider_id"], p["kind"], p["category"])
            self._own(e, p["provider_id"])
            return
        account = self.accounts[key]
        self._own(e, account.provider_id)
        if "closed" in account.levels(at):
            allowed = APPEAL_EVENTS | TOLERATED_ON_CLOSED
            assert e.type in allowed, f"{e.type} at {e.position} on a closed account"
        public = account.kind == "public"
        if name == "IdentityVerified":
            account.verified = True
        elif name == "IdentityErased":
            # No identity is held any more: the account is no longer verified.
            account.verified = False
        elif name == "AgreementSigned":
            assert (p["agreement_id"], p["version"], p["sha256"]) == (
                AGREEMENT.id,
                AGREEMENT.version,
                AGREEMENT.sha256,
            )
            assert set(AGREEMENT.baselines) <= set(p["baselines"])
            account.agreement = (p["agreement_id"], p["version"])
        elif name == "Reviewed":
            assert public, "only a public account is reviewed"
            account.review = p["outcome"]
        elif name == "Filed":
            assert public and account.review == "approved"
            assert p["category"] == account.category
        elif name == "NewsPermissionGranted":
            self._official(e)
            assert public, "only a public account holds news permissions"
            account.grants.add(p["scope"])
        elif name == "NewsPermissionRevoked":
            self._official(e)
            assert p["scope"] in account.grants
            account.grants.discard(p["scope"])
        elif name == "Marked":
            assert public and not account.marked and self.scopes(account)
            account.marked = True
        elif name == "Unmarked":
            assert account.marked
            account.marked = False
        elif name == "SanctionImposed":
            self._sanction_imposed(e, account)
        elif name == "SanctionLifted":
            sanction = account.sanctions[p["sanction_id"]]
            assert sanction.in_force(at) and sanction.level != "closed"
            if (e.actor or {})["role"] == Role.PROVIDER.value:
                assert sanction.issuer_role == Role.PROVIDER.value, "provider lifted another's"
            sanction.lifted = True
        elif name == "SanctionAppealed":
            sanction = account.sanctions[p["sanction_id"]]
            assert not sanction.appealed, "a sanction is appealed at most once"
            assert not sanction.lifted
            sanction.appealed = True
        elif name == "AppealDecided":
            self._official(e)
            sanction = account.sanctions[p["sanction_id"]]
            assert sanction.appealed and sanction.outcome is None
            sanction.outcome = p["outcome"]

    def _sanction_imposed(self, e: LoggedEvent, account: _Account) -> None:
        p = e.payload
        assert p["rule_ids"], "a sanction cites at least one rule"
        assert set(p["rule_ids"]) <= set(self.ruleset.rules), p["rule_ids"]
        assert p["level"] in self.ruleset.ladder, p["level"]
        assert p["sanction_id"] not in account.sanctions
        allowed = self.ruleset.durations.get(p["level"], ())
        expires = datetime.fromisoformat(p["expires_at"]) if p["expires_at"] else None
        if expires is None:
            assert not allowed or None in allowed, f"{p['level']} without an expiry"
        else:
            assert expires - e.timestamp in {timedelta(days=d) for d in allowed if d}
        for post_id in p["evidence_post_ids"]:
            assert self.posts[post_id].account_id == str(e.originator_id)
        assert e.actor is not None
        account.sanctions[p["sanction_id"]] = _Sanction(p["level"], e.actor["role"], expires)

    # ----- posts -------------------------------------------------------------------------

    def _post_event(self, e: LoggedEvent, name: str) -> None:
        p, key = e.payload, str(e.originator_id)
        if name == "Published":
            self._published(e)
            return
        post = self.posts[key]
        self._own(e, post.provider_id)
        if name == "ReachRecorded":
            assert not post.removed
            assert p["views"] >= post.reach["views"], "views went down"
            assert p["reposts"] >= post.reach["reposts"], "reposts went down"
            post.reach = {"views": p["views"], "reposts": p["reposts"]}
        elif name == "ThresholdCrossed":
            crossing = (p["metric"], p["threshold"])
            assert crossing not in post.crossed, f"{crossing} crossed twice"
            assert p["threshold"] in self.ruleset.thresholds[p["metric"]]
            assert post.reach[p["metric"]] >= p["threshold"]
            post.crossed.add(crossing)
        elif name == "Reported":
            assert not post.removed and p["report_id"] not in post.reports
            post.reports[p["report_id"]] = False
        elif name == "ReportResolved":
            assert post.reports[p["report_id"]] is False, "resolved twice"
            post.reports[p["report_id"]] = True
        elif name == "Removed":
            assert not post.removed
            assert p["rule_ids"] and set(p["rule_ids"]) <= set(self.ruleset.rules)
            post.removed = True

    def _published(self, e: LoggedEvent) -> None:
        p, at = e.payload, e.timestamp
        account = self.accounts[p["account_id"]]
        where = f"Published at {e.position}"
        assert str(e.originator_id) not in self.posts
        assert p["provider_id"] == account.provider_id
        self._own(e, account.provider_id)
        halted = account.levels(at) & HALTING_LEVELS
        assert not halted, f"{where}: the account was {sorted(halted)}"
        assert account.verified, f"{where}: identity not verified"
        assert account.agreement == (AGREEMENT.id, AGREEMENT.version), f"{where}: not signed"
        if account.kind == "public":
            assert account.review == "approved", f"{where}: public account not approved"
        if p["category"] == "political_news":
            needed = {"publish"} if p["origin"] == "original" else {"publish", "reprint"}
            assert self.scopes(account) & needed, f"{where}: no {needed} scope"
        if p["origin"] == "reprint":
            assert p["source_post_id"] in self.posts, f"{where}: unknown source"
        self.posts[str(e.originator_id)] = _Post(p["account_id"], p["provider_id"])

    # ----- between commands --------------------------------------------------------------

    def check_settled(self) -> None:
        for post_id, post in self.posts.items():
            for metric, thresholds in self.ruleset.thresholds.items():
                reached = {(metric, t) for t in thresholds if post.reach[metric] >= t}
                crossed = {x for x in post.crossed if x[0] == metric}
                assert crossed == reached, f"post {post_id}: crossed {crossed}, reached {reached}"
        for account_id, account in self.accounts.items():
            if account.marked:
                assert self.scopes(account), f"account {account_id} is marked without a scope"


# ----- the state machine -----------------------------------------------------------------


def _state(aggregate: Aggregate) -> dict[str, Any]:
    return {k: v for k, v in vars(aggregate).items() if k != "_pending_events"}


def _diff(expected: dict[str, Any], actual: dict[str, Any]) -> dict[str, Any]:
    keys = expected.keys() | actual.keys()
    return {k: (expected.get(k), actual.get(k)) for k in keys if expected.get(k) != actual.get(k)}


# Mostly well-formed commands by the right actor, with enough of the rest to be refused:
# "Alpha" collides with "alpha", "newspaper" is no category, "fine" is not on the ladder.
HANDLES = st.sampled_from(["alpha", "beta", "gamma", "delta", "Alpha"])
PROFILES = st.sampled_from(["personal", "personal", *CATEGORIES, "newspaper"])
ONBOARDING = st.sampled_from(["full", "full", "full", "signed", "verified", "none"])
# Who acts, relative to the provider owning the target.
ANYONE = st.sampled_from(["own", "own", "own", "own", "regulator", "rival"])
OFFICIAL = st.sampled_from(["regulator", "regulator", "regulator", "system", "own"])
ISSUER = st.sampled_from(["regulator", "regulator", "regulator", "own", "rival"])
LIFTER = st.sampled_from(["regulator", "regulator", "own"])
ACCOUNT_STEPS = st.sampled_from(
    [
        "verify",
        "erase identity",
        "sign",
        "sign",
        "sign an old version",
        "sign missing a baseline",
        "approve",
        "approve",
        "reject",
        "file",
        "file as another category",
        "grant publish",
        "grant reprint",
        "revoke publish",
        "revoke reprint",
        "mark",
        "unmark",
    ]
)
BROADCASTS = st.sampled_from(["verify", "sign", "mark"])
MODERATION = st.sampled_from(
    ["report", "report", "uphold", "dismiss", "remove", "remove citing nothing"]
)
POST_CATEGORIES = st.sampled_from(["other", "political_news"])
REFS = st.integers(0, 9).map(lambda n: f"r{n}")
RULE_IDS = st.sampled_from(
    [
        ["art.9"],
        ["art.8", "art.9"],
        ["baseline.authenticity"],
        ["art.7"],
        ["art.6"],
        ["art.5"],
        ["art.9"],
        [],
        ["art.9", "art.99"],
    ]
)
LEVELS = st.sampled_from([*RULESET.ladder, *RULESET.durations, "closed", "fine"])
# "fitting": `days` when the level takes a duration, else none; "8 days" fits no level.
TERMS = st.sampled_from(["fitting", "fitting", "fitting", "fitting", "indefinite", "8 days"])
DAYS = st.sampled_from([7, 15, 30, 90])
EVIDENCE = st.sampled_from(["none", "none", "its latest post", "the latest post"])


class LedgerMachine(RuleBasedStateMachine):
    accounts = Bundle("accounts")
    posts = Bundle("posts")
    sanctions = Bundle("sanctions")

    def __init__(self, database: Database) -> None:
        super().__init__()
        self.database = database
        self.schema = "p_" + uuid.uuid4().hex[:12]
        database.create_schema(self.schema)
        env = database.eventsourcing_env(self.schema)
        self.clock = Clock()
        vault = Vault(TEST_KEY)
        # The writer keeps in memory exactly what its commands left there.
        self.writer = Ledger(
            {**env, "AGGREGATE_CACHE_MAXSIZE": "10000", "AGGREGATE_CACHE_FASTFORWARD": "n"},
            vault=vault,
            clock=self.clock,
        )
        # The reader loads from the store every time (through snapshots when there are).
        self.reader = Ledger(env, vault=vault, clock=self.clock)
        self.keys = itertools.count()
        self.checker = LogChecker(self.writer.ruleset)
        self.checked = 0  # the log position the checker has read to
        self.provider_of: dict[UUID, UUID] = {}  # account or post -> provider
        self.account_ids: list[UUID] = []
        self.post_ids: list[UUID] = []
        self.posts_of: dict[UUID, list[UUID]] = {}  # account -> its posts
        self.reports: dict[UUID, list[UUID]] = {}  # post -> its reports, oldest first
        self.done: list[tuple[c.Command, dict[str, Any]]] = []  # accepted, for retries
        self.ops: dict[UUID, Actor] = {}
        for code in ("acme", "rival"):
            value = self._run(
                c.RegisterProvider, REGULATOR, code=code, name=code.title(), licence_ref=f"L-{code}"
            )
            assert value is not None
            provider = UUID(value["provider_id"])
            self.ops[provider] = Actor(f"{code}-ops", Role.PROVIDER, provider)
        self.providers = list(self.ops)

    def teardown(self) -> None:
        self.writer.close()
        self.reader.close()
        self.database.drop_schema(self.schema)

    # ----- running commands --------------------------------------------------------------

    def _key(self) -> str:
        return f"k{next(self.keys)}"

    def _actor(self, who: str, target: UUID) -> Actor:
        """The actor called `who` relative to the provider that owns `target`."""
        if who == "regulator":
            return REGULATOR
        if who == "system":
            return SYSTEM
        own = self.ops[self.provider_of.get(target, target)]
        if who == "own":
            return own
        return next(a for a in self.ops.values() if a is not own)

    def _submit(
        self, name: str, build: Callable[[], list[c.Command]]
    ) -> list[dict[str, Any]] | None:
        """Run commands as one submission; a refusal must leave no trace."""
        head = self.writer.head()
        commands: list[c.Command] = []
        try:
            commands = build()
            results = self.writer.submit(commands)
        except LedgerError:
            assert self.writer.head() == head, f"the refused {name} wrote events"
            keys = [(cmd.actor.id, cmd.idempotency_key) for cmd in commands]
            assert self.writer.store.prior_outcomes(keys) == {}, f"the refused {name} kept a key"
            return None
        assert not any(r.replayed for r in results)
        assert self.writer.head() > head, f"{name} was accepted but wrote nothing"
        values = [r.value for r in results]
        self.done.extend(zip(commands, values, strict=True))
        return values

    def _run(self, command: type[c.Command], actor: Actor, **args: Any) -> dict[str, Any] | None:
        values = self._submit(
            command.__name__, lambda: [command(actor=actor, idempotency_key=self._key(), **args)]
        )
        return None if values is None else values[0]

    def _register(
        self, handle: str, provider: UUID, profile: str, legacy: bool, onboarding: str, actor: Actor
    ) -> Iterable[UUID]:
        """Register an account and, in the same submission, take it part or all the way."""
        account = ids.account_id(provider, handle)
        kind = "personal" if profile == "personal" else "public"
        category = None if kind == "personal" else profile

        def build() -> list[c.Command]:
            key = self._key
            batch: list[c.Command] = [
                c.RegisterAccount(
                    actor=actor,
                    idempotency_key=key(),
                    provider_id=provider,
                    handle=handle,
                    kind=kind,
                    category=category,
                    legacy=legacy,
                )
            ]
            if onboarding != "none":
                batch.append(
                    c.VerifyIdentity(
                        actor=actor,
                        idempotency_key=key(),
                        account_id=account,
                        real_name="Li Lei",
                        id_number="110101199003070011",
                        method="id_card",
                    )
                )
            if onboarding in ("signed", "full"):
                batch.append(
                    c.SignAgreement(
                        actor=actor,
                        idempotency_key=key(),
                        account_id=account,
                        agreement_id=AGREEMENT.id,
                        version=AGREEMENT.version,
                        text_sha256=AGREEMENT.sha256,
                        baselines=AGREEMENT.baselines,
                    )
                )
            if onboarding == "full" and kind == "public":
                batch.append(
                    c.ReviewAccount(
                        actor=actor,
                        idempotency_key=key(),
                        account_id=account,
                        outcome="approved",
                        reason="ok",
                    )
                )
            return batch

        if self._submit(f"RegisterAccount+{onboarding}", build) is None:
            return multiple()
        self.provider_of[account] = provider
        self.account_ids.append(account)
        return multiple(account)

    def _publish(
        self, account: UUID, who: str, ref: str, origin: str, category: str, source: UUID | None
    ) -> Iterable[UUID]:
        value = self._run(
            c.PublishPost,
            self._actor(who, account),
            account_id=account,
            ref=ref,
            origin=origin,
            category=category,
            content_sha256=sha(ref),
            source_post_id=source,
        )
        if value is None:
            return multiple()
        post = UUID(value["post_id"])
        self.provider_of[post] = self.provider_of[account]
        self.post_ids.append(post)
        self.posts_of.setdefault(account, []).append(post)
        return multiple(post)

    # ----- the checks --------------------------------------------------------------------

    @invariant()
    def log_obeys_the_rules_and_rebuilds_agree(self) -> None:
        new = list(self.writer.read_log(after=self.checked))
        for logged in new:
            self.checker.apply(logged)
        self.checker.check_settled()
        if new:
            self.checked = new[-1].position
        for aggregate_id in dict.fromkeys(e.originator_id for e in new):
            self._compare(aggregate_id)

    def _compare(self, aggregate_id: UUID) -> None:
        held: Aggregate = self.writer.repository.get(aggregate_id)
        loaded: Aggregate = self.reader.repository.get(aggregate_id)
        replayed = project_aggregate(None, self.writer.events.get(aggregate_id))
        assert isinstance(replayed, Aggregate)
        expected = _state(replayed)
        for how, other in (("held in memory", held), ("loaded by a second ledger", loaded)):
            assert type(other) is type(replayed), how
            assert _state(other) == expected, (
                f"{type(replayed).__name__} {aggregate_id} {how} differs from a full replay: "
                f"{_diff(expected, _state(other))}"
            )

    # ----- rules: accounts ---------------------------------------------------------------

    @initialize(
        target=accounts,
        handle=HANDLES,
        legacy=st.booleans(),
        profile=st.sampled_from(["personal", *CATEGORIES]),
    )
    def seed_account(self, handle: str, profile: str, legacy: bool) -> Iterable[UUID]:
        provider = self.providers[0]
        return self._register(handle, provider, profile, legacy, "full", self.ops[provider])

    @initialize(target=accounts, category=st.sampled_from(NEWS_CATEGORIES))
    def seed_news_account(self, category: str) -> Iterable[UUID]:
        provider = self.providers[1]
        return self._register("newsroom", provider, category, False, "full", self.ops[provider])

    @rule(
        target=accounts,
        handle=HANDLES,
        provider=st.sampled_from([0, 1]),
        who=ANYONE,
        profile=PROFILES,
        legacy=st.booleans(),
        onboarding=ONBOARDING,
    )
    def register_account(
        self, handle: str, provider: int, who: str, profile: str, legacy: bool, onboarding: str
    ) -> Iterable[UUID]:
        provider_id = self.providers[provider]
        actor = self._actor(who, provider_id)
        return self._register(handle, provider_id, profile, legacy, onboarding, actor)

    @rule(account=accounts, who=ANYONE, step=ACCOUNT_STEPS)
    def account_step(self, account: UUID, who: str, step: str) -> None:
        """One account command; `who` acts, but grants and revocations are the regulator's."""
        actor, regulator = self._actor(who, account), self._actor("regulator", account)
        verb, _, rest = step.partition(" ")
        if step == "verify":
            self._run(
                c.VerifyIdentity,
                actor,
                account_id=account,
                real_name="Han Meimei",
                id_number="110101199003070022",
                method="bank_card",
            )
        elif step == "erase identity":
            self._run(c.EraseIdentity, actor, account_id=account, reason="the user asked")
        elif verb == "sign":
            self._run(
                c.SignAgreement,
                actor,
                account_id=account,
                agreement_id=AGREEMENT.id,
                version="2013.9" if rest == "an old version" else AGREEMENT.version,
                text_sha256=AGREEMENT.sha256,
                baselines=AGREEMENT.baselines[:-1] if rest else AGREEMENT.baselines,
            )
        elif step in ("approve", "reject"):
            self._run(
                c.ReviewAccount,
                actor,
                account_id=account,
                outcome="approved" if step == "approve" else "rejected",
                reason="reviewed",
            )
        elif verb == "file":
            category = self.writer.get_account(account).category or "none"
            self._run(
                c.FileAccount,
                actor,
                account_id=account,
                authority="cac",
                reference=f"F-{self._key()}",
                category="individual" if rest else category,
            )
        elif verb == "grant":
            self._run(
                c.GrantNewsPermission, regulator, account_id=account, scope=rest, basis="licence"
            )
        elif verb == "revoke":
            self._run(
                c.RevokeNewsPermission,
                regulator,
                account_id=account,
                scope=rest,
                reason="licence ended",
            )
        elif step == "mark":
            self._run(c.MarkAccount, actor, account_id=account)
        else:
            self._run(c.UnmarkAccount, actor, account_id=account, reason="no longer news")

    # ----- rules: posts ------------------------------------------------------------------

    @rule(target=posts, account=accounts, who=ANYONE, ref=REFS, category=POST_CATEGORIES)
    def publish_original(self, account: UUID, who: str, ref: str, category: str) -> Iterable[UUID]:
        return self._publish(account, who, ref, "original", category, None)

    @rule(
        target=posts, account=accounts, source=posts, who=ANYONE, ref=REFS, category=POST_CATEGORIES
    )
    def publish_reprint(
        self, account: UUID, source: UUID, who: str, ref: str, category: str
    ) -> Iterable[UUID]:
        return self._publish(account, who, ref, "reprint", category, source)

    @rule(target=posts, origin=st.sampled_from(["original", "reprint"]), category=POST_CATEGORIES)
    def every_account_publishes(self, origin: str, category: str) -> Iterable[UUID]:
        """Every account tries to publish, by its own provider (a reprint of the latest
        post): whatever state each account is in, the checker sees what was accepted."""
        if origin == "reprint" and not self.post_ids:
            return multiple()
        source = self.post_ids[-1] if origin == "reprint" else None
        made: list[UUID] = []
        for account in self.account_ids:
            made.extend(self._publish(account, "own", f"b{self._key()}", origin, category, source))
        return multiple(*made)

    @rule(action=BROADCASTS)
    def every_account_tries(self, action: str) -> None:
        """Every account tries the same account command, by its own provider."""
        for account in self.account_ids:
            ops = self._actor("own", account)
            if action == "verify":
                self._run(
                    c.VerifyIdentity,
                    ops,
                    account_id=account,
                    real_name="Li Lei",
                    id_number="110101199003070011",
                    method="id_card",
                )
            elif action == "sign":
                self._run(
                    c.SignAgreement,
                    ops,
                    account_id=account,
                    agreement_id=AGREEMENT.id,
                    version=AGREEMENT.version,
                    text_sha256=AGREEMENT.sha256,
                    baselines=AGREEMENT.baselines,
                )
            else:
                self._run(c.MarkAccount, ops, account_id=account)

    @rule(post=posts, who=ANYONE, views=st.integers(0, 9000), reposts=st.integers(0, 900))
    def record_reach(self, post: UUID, who: str, views: int, reposts: int) -> None:
        self._run(c.RecordReach, self._actor(who, post), post_id=post, views=views, reposts=reposts)

    @rule(post=posts, who=ANYONE, step=MODERATION)
    def moderate(self, post: UUID, who: str, step: str) -> None:
        """Report a post, resolve its oldest report (an unknown one if it has none), or
        remove it."""
        actor = self._actor(who, post)
        reports = self.reports.setdefault(post, [])
        if step == "report":
            value = self._run(c.ReportPost, actor, post_id=post, reporter="user-1", reason="rumour")
            if value is not None:
                reports.append(UUID(value["report_id"]))
        elif step in ("uphold", "dismiss"):
            self._run(
                c.ResolveReport,
                actor,
                post_id=post,
                report_id=reports[0] if reports else uuid.uuid4(),
                outcome="upheld" if step == "uphold" else "dismissed",
                reason="handled",
            )
        else:
            self._run(
                c.RemovePost,
                actor,
                post_id=post,
                rule_ids=["art.8"] if step == "remove" else [],
                reason="unlawful",
            )

    # ----- rules: sanctions --------------------------------------------------------------

    def _impose(
        self,
        account: UUID,
        actor: Actor,
        level: str,
        rule_ids: list[str],
        duration: int | None,
        evidence: list[UUID],
    ) -> Iterable[tuple[UUID, UUID]]:
        value = self._run(
            c.ImposeSanction,
            actor,
            account_id=account,
            level=level,
            rule_ids=rule_ids,
            reason="breach",
            evidence_post_ids=evidence,
            duration_days=duration,
        )
        return multiple() if value is None else multiple((account, UUID(value["sanction_id"])))

    @rule(
        target=sanctions,
        account=accounts,
        who=ISSUER,
        level=LEVELS,
        rule_ids=RULE_IDS,
        term=TERMS,
        days=DAYS,
        evidence=EVIDENCE,
    )
    def impose_sanction(
        self,
        account: UUID,
        who: str,
        level: str,
        rule_ids: list[str],
        term: str,
        days: int,
        evidence: str,
    ) -> Iterable[tuple[UUID, UUID]]:
        duration = {
            "fitting": days if level in RULESET.durations else None,
            "indefinite": None,
            "8 days": 8,
        }[term]
        posts = self.posts_of.get(account, []) if evidence == "its latest post" else self.post_ids
        cited = posts[-1:] if evidence != "none" else []
        return self._impose(account, self._actor(who, account), level, rule_ids, duration, cited)

    @rule(target=sanctions, account=accounts, level=st.sampled_from(RULESET.ladder), days=DAYS)
    def impose_sanction_by_the_book(
        self, account: UUID, level: str, days: int
    ) -> Iterable[tuple[UUID, UUID]]:
        """A regulator's sanction with a rule cited and a duration the level allows."""
        duration = days if level in RULESET.durations else None
        return self._impose(account, REGULATOR, level, ["art.9"], duration, [])

    @rule(sanction=sanctions, who=LIFTER)
    def lift_sanction(self, sanction: tuple[UUID, UUID], who: str) -> None:
        account, sanction_id = sanction
        self._run(
            c.LiftSanction,
            self._actor(who, account),
            account_id=account,
            sanction_id=sanction_id,
            reason="remedied",
        )

    @rule(sanction=sanctions, who=ANYONE)
    def appeal_sanction(self, sanction: tuple[UUID, UUID], who: str) -> None:
        account, sanction_id = sanction
        self._run(
            c.AppealSanction,
            self._actor(who, account),
            account_id=account,
            sanction_id=sanction_id,
            grounds="disproportionate",
        )

    @rule(sanction=sanctions, who=OFFICIAL, outcome=st.sampled_from(["upheld", "overturned"]))
    def decide_appeal(self, sanction: tuple[UUID, UUID], who: str, outcome: str) -> None:
        account, sanction_id = sanction
        self._run(
            c.DecideAppeal,
            self._actor(who, account),
            account_id=account,
            sanction_id=sanction_id,
            outcome=outcome,
            reason="decided",
        )

    # ----- rules: time, snapshots, retries -----------------------------------------------

    @rule(days=st.sampled_from([0, 1, 3, 8, 16, 31, 91]), hours=st.integers(0, 23))
    def advance_clock(self, days: int, hours: int) -> None:
        self.clock.advance(days=days, hours=hours)

    @rule(account=accounts, its_latest_post=st.booleans())
    def take_snapshot(self, account: UUID, its_latest_post: bool) -> None:
        """Snapshot the account (or its latest post): later loads start from there."""
        assert self.writer.snapshots is not None
        posts = self.posts_of.get(account, [])
        aggregate = posts[-1] if its_latest_post and posts else account
        current: Aggregate = self.writer.repository.get(aggregate)
        latest = list(self.writer.snapshots.get(aggregate, desc=True, limit=1))
        if latest and latest[0].originator_version == current.version:
            return  # the store keeps one snapshot per version
        self.writer.take_snapshot(aggregate)
        self._compare(aggregate)

    @rule(index=st.integers(0, 10**6), same_arguments=st.booleans())
    def retry(self, index: int, same_arguments: bool) -> None:
        """Send an accepted command again: the same replays its result and writes nothing;
        other arguments under the same key are refused."""
        command, value = self.done[index % len(self.done)]
        head = self.writer.head()
        if same_arguments:
            result = self.writer.execute(command)
            assert result.replayed and result.value == value, "a retry did not replay"
        else:
            other = c.UnmarkAccount(
                actor=command.actor,
                idempotency_key=command.idempotency_key,
                account_id=uuid.uuid4(),
                reason="reused key",
            )
            try:
                self.writer.execute(other)
            except LedgerError as refused:
                assert refused.code == "IDEMPOTENCY_KEY_REUSED", refused.code
            else:
                raise AssertionError("a reused idempotency key was accepted")
        assert self.writer.head() == head, "a retry wrote events"


def test_random_command_sequences_keep_the_ledger_lawful(database: Database) -> None:
    class Machine(LedgerMachine):  # on the session's database; a schema per example
        def __init__(self) -> None:
            super().__init__(database)

    run_state_machine_as_test(Machine, settings=SETTINGS)


# ----- what the property test found once, pinned down ------------------------------------


def _closed_with_a_restriction(world: World) -> tuple[UUID, UUID]:
    account = world.account()
    restriction = world.sanction(account, "publishing_restricted", 7)
    world.sanction(account, "closed")
    return account, restriction


def test_a_closed_account_takes_no_lift_of_a_lesser_sanction(ledger: Ledger) -> None:
    world = World(ledger)
    account, restriction = _closed_with_a_restriction(world)
    head = ledger.head()
    with pytest.raises(LedgerError, match="closed"):
        world.run(
            c.LiftSanction,
            REGULATOR,
            account_id=account,
            sanction_id=restriction,
            reason="remedied",
        )
    assert ledger.head() == head


def test_a_closed_account_may_still_erase_its_identity(ledger: Ledger) -> None:
    world = World(ledger)
    account, _ = _closed_with_a_restriction(world)
    world.run(c.EraseIdentity, REGULATOR, account_id=account, reason="the user asked")
    assert ledger.get_account(account).identity is None
