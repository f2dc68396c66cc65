"""A realistic, deterministic demo data set, written through the ledger's own commands.

Seeded randomness decides who does what; ids and idempotency keys derive from it, so a
second run replays instead of writing. A simulated clock spreads the history over the
last 180 days, in log order, ending about now: some suspensions have lapsed, some not.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

from ledger import commands as c
from ledger.actors import Actor, Role
from ledger.domain import ids
from ledger.ruleset import Ruleset

PROVIDERS = (("wechat", "WeChat (Tencent)"), ("weibo", "Weibo (Sina)"), ("momo", "Momo"))
REGULATOR = Actor("cac-inspector-7", Role.REGULATOR)
CATEGORIES = (
    "news_agency",
    "news_website",
    "licensed_news_service",
    "government",
    "organisation",
    "enterprise",
    "individual",
)
SPAN = timedelta(days=180)
COMMANDS_PER_ACCOUNT = 40  # a rough average, to pace the simulated clock


class DemoClock:
    """Simulated time: each reading moves forward by a small random step."""

    def __init__(self, accounts: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.now = datetime.now(UTC) - SPAN
        self.mean_step = SPAN.total_seconds() / max(1, accounts * COMMANDS_PER_ACCOUNT)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=self.rng.expovariate(1 / self.mean_step))
        return self.now


@dataclass
class _Account:
    id: UUID
    provider: int
    public: bool
    category: str | None
    posts: list[UUID] = field(default_factory=list)


class Demo:
    def __init__(self, ruleset: Ruleset, accounts: int = 2000, seed: int = 2014) -> None:
        self.rules = ruleset
        self.count = accounts
        self.rng = random.Random(seed)
        self.provider_ids = [ids.provider_id(code) for code, _ in PROVIDERS]
        self.ops = [
            Actor(f"{code}-compliance", Role.PROVIDER, pid)
            for (code, _), pid in zip(PROVIDERS, self.provider_ids, strict=True)
        ]
        self.accounts: list[_Account] = []
        # Political news to reprint, by provider: a provider cites only its own posts.
        self.news_posts: dict[UUID | None, list[UUID]] = {}
        self.sanctioned = 0

    def batches(self, accounts_per_batch: int = 10) -> Iterator[list[c.Command]]:
        """Command batches in time order: providers, then accounts in chunks. Sanctions
        follow a few chunks after their account's life, so they spread over the span."""
        yield list(self._providers())
        delayed: list[list[c.Command]] = []
        for start in range(0, self.count, accounts_per_batch):
            batch: list[c.Command] = []
            for n in range(start, min(self.count, start + accounts_per_batch)):
                batch.extend(self._account_life(n))
            delayed.append(list(self._sanctions(self.accounts[start:])))
            if len(delayed) > 5:
                batch.extend(delayed.pop(0))
            yield batch
        yield [cmd for later in delayed for cmd in later]

    def _providers(self) -> Iterator[c.Command]:
        for (code, name), pid, ops in zip(PROVIDERS, self.provider_ids, self.ops, strict=True):
            yield c.RegisterProvider(
                actor=REGULATOR,
                idempotency_key=f"demo:provider:{code}",
                code=code,
                name=name,
                licence_ref=f"ICP-{code.upper()}-2014",
            )
            yield c.RecordQualification(
                actor=ops,
                idempotency_key=f"demo:qual:{code}",
                provider_id=pid,
                qualification="internet news licence",
                reference=f"NEWS-{code.upper()}-001",
            )

    def _account_life(self, n: int) -> Iterator[c.Command]:
        rng, rules = self.rng, self.rules
        p = rng.randrange(len(PROVIDERS))
        ops = self.ops[p]
        public = rng.random() < 0.4
        category = rng.choice(CATEGORIES) if public else None
        legacy = rng.random() < 0.12
        handle = f"{'pub' if public else 'user'}{n:05d}"
        account = _Account(ids.account_id(self.provider_ids[p], handle), p, public, category)
        self.accounts.append(account)
        key = f"demo:{n}"
        aid = account.id
        yield c.RegisterAccount(
            actor=ops,
            idempotency_key=f"{key}:register",
            provider_id=self.provider_ids[p],
            handle=handle,
            kind="public" if public else "personal",
            category=category,
            legacy=legacy,
        )
        if rng.random() < (0.6 if legacy else 0.92):
            yield c.VerifyIdentity(
                actor=ops,
                idempotency_key=f"{key}:verify",
                account_id=aid,
                real_name=f"Demo Person {n}",
                id_number=f"1101{n:014d}",
                method=rng.choice(["id_card", "bank_card", "face_match"]),
            )
        else:
            return
        agreement = rules.agreement
        if rng.random() < 0.95:
            yield c.SignAgreement(
                actor=ops,
                idempotency_key=f"{key}:agree",
                account_id=aid,
                agreement_id=agreement.id,
                version=agreement.version,
                text_sha256=agreement.sha256,
                baselines=agreement.baselines,
            )
        else:
            return
        if public:
            approved = rng.random() < 0.88
            yield c.ReviewAccount(
                actor=ops,
                idempotency_key=f"{key}:review",
                account_id=aid,
                outcome="approved" if approved else "rejected",
                reason="documents in order" if approved else "licence missing",
            )
            if not approved:
                return
            if rng.random() < 0.85:
                yield c.FileAccount(
                    actor=ops,
                    idempotency_key=f"{key}:file",
                    account_id=aid,
                    authority="CAC provincial office",
                    reference=f"FILE-{n:05d}",
                    category=str(category),
                )
            scopes = set(rules.default_scopes(category))
            if category in ("government", "organisation") and rng.random() < 0.3:
                yield c.GrantNewsPermission(
                    actor=REGULATOR,
                    idempotency_key=f"{key}:grant",
                    account_id=aid,
                    scope="reprint",
                    basis="approved reprint of official releases",
                )
                scopes.add("reprint")
            if scopes and rng.random() < 0.8:
                yield c.MarkAccount(actor=ops, idempotency_key=f"{key}:mark", account_id=aid)
            yield from self._posts(account, key, ops, frozenset(scopes))
        else:
            yield from self._posts(account, key, ops, frozenset())

    def _posts(
        self, account: _Account, key: str, ops: Actor, scopes: frozenset[str]
    ) -> Iterator[c.Command]:
        rng = self.rng
        news = self.news_posts.setdefault(ops.provider_id, [])
        for i in range(rng.randint(5, 25)):
            reprint = bool(news) and (
                ("publish" not in scopes and bool(scopes)) or rng.random() < 0.05
            )
            allowed = bool(scopes) if reprint else "publish" in scopes
            political = allowed and rng.random() < 0.6
            source = rng.choice(news) if reprint else None
            ref = f"{i:03d}"
            post = ids.post_id(account.id, ref)
            yield c.PublishPost(
                actor=ops,
                idempotency_key=f"{key}:post:{ref}",
                account_id=account.id,
                ref=ref,
                origin="reprint" if reprint else "original",
                category="political_news" if political else "other",
                content_sha256=hashlib.sha256(f"{account.id}/{ref}".encode()).hexdigest(),
                source_post_id=source,
            )
            account.posts.append(post)
            if political and not reprint:
                news.append(post)
            yield from self._reach(post, f"{key}:post:{ref}", ops)

    def _reach(self, post: UUID, key: str, ops: Actor) -> Iterator[c.Command]:
        rng = self.rng
        viral = rng.random() < 0.04
        views = reposts = 0
        for r in range(rng.randint(1, 2)):
            views += int(rng.paretovariate(1.2) * (3000 if viral else 60))
            reposts += int(views * rng.uniform(0.01, 0.12 if viral else 0.05))
            yield c.RecordReach(
                actor=ops,
                idempotency_key=f"{key}:reach:{r}",
                post_id=post,
                views=views,
                reposts=reposts,
            )
        if rng.random() < (0.4 if viral else 0.02):
            report = ids.child_id(post, "report", ops.id, f"{key}:report")
            yield c.ReportPost(
                actor=ops,
                idempotency_key=f"{key}:report",
                post_id=post,
                reporter=f"user-{rng.randrange(10**6)}",
                reason=rng.choice(["rumour", "fraud", "harassment", "spam"]),
            )
            if rng.random() < 0.85:
                upheld = rng.random() < 0.5
                yield c.ResolveReport(
                    actor=ops,
                    idempotency_key=f"{key}:resolve",
                    post_id=post,
                    report_id=report,
                    outcome="upheld" if upheld else "dismissed",
                    reason="checked against the rules",
                )
                if upheld:
                    yield c.RemovePost(
                        actor=ops,
                        idempotency_key=f"{key}:remove",
                        post_id=post,
                        rule_ids=("baseline.authenticity",),
                        reason="rumour past the reach threshold",
                    )

    def _sanctions(self, accounts: list[_Account]) -> Iterator[c.Command]:
        rng, ladder = self.rng, self.rules.ladder
        for account in accounts:
            if not account.posts or rng.random() > 0.06:
                continue
            level = ladder[self.sanctioned % len(ladder)]
            self.sanctioned += 1
            actor = REGULATOR if rng.random() < 0.4 else self.ops[account.provider]
            durations = self.rules.durations.get(level, ())
            days = rng.choice(durations) if durations else None
            key = f"demo:sanction:{account.id}"
            sanction = ids.child_id(account.id, "sanction", actor.id, key)
            yield c.ImposeSanction(
                actor=actor,
                idempotency_key=key,
                account_id=account.id,
                level=level,
                rule_ids=(
                    "art.9",
                    *rng.sample(self.rules.agreement.baselines, k=rng.randint(1, 2)),
                ),
                evidence_post_ids=(rng.choice(account.posts),),
                reason="breach recorded by the compliance team",
                duration_days=days,
            )
            yield from self._appeal(account, sanction, key, level, actor)

    def _appeal(
        self, account: _Account, sanction: UUID, key: str, level: str, issuer: Actor
    ) -> Iterator[c.Command]:
        rng = self.rng
        ops = self.ops[account.provider]
        roll = rng.random()
        if roll < 0.35 or (level == "closed" and roll < 0.6):
            yield c.AppealSanction(
                actor=ops,
                idempotency_key=f"{key}:appeal",
                account_id=account.id,
                sanction_id=sanction,
                grounds="the post was satire",
            )
            outcome = "overturned" if rng.random() < 0.4 else "upheld"
            yield c.DecideAppeal(
                actor=REGULATOR,
                idempotency_key=f"{key}:decide",
                account_id=account.id,
                sanction_id=sanction,
                outcome=outcome,
                reason="reviewed on appeal",
            )
        elif level != "closed" and issuer.role is Role.PROVIDER and roll < 0.5:
            yield c.LiftSanction(
                actor=issuer,
                idempotency_key=f"{key}:lift",
                account_id=account.id,
                sanction_id=sanction,
                reason="corrected by the account holder",
            )


def run_demo(
    submit: Callable[[list[c.Command]], object],
    ruleset: Ruleset,
    accounts: int,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> int:
    """Submit the demo's batches; returns the number of commands."""
    demo = Demo(ruleset, accounts)
    total = 0
    for batch in demo.batches():
        submit(batch)
        total += len(batch)
        progress(len(demo.accounts), accounts)
    return total
