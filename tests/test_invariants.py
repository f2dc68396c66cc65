"""Every invariant: the refused command, its error code, and that nothing was written."""

from __future__ import annotations

from collections.abc import Callable
from uuid import uuid4

import pytest

from ledger import Actor, Ledger, LedgerError, Role
from ledger import commands as c
from tests.world import REGULATOR, World, sha

AUDITOR = Actor("auditor", Role.AUDITOR)


def publish(w: World, account, category="other", origin="original", source=None, ops=None):  # type: ignore[no-untyped-def]
    return c.PublishPost(
        actor=ops or w.ops,
        idempotency_key="refused",
        account_id=account,
        ref="new",
        origin=origin,
        category=category,
        content_sha256=sha("x"),
        source_post_id=source,
    )


def cmd(cls: type[c.Command], actor: Actor, **args):  # type: ignore[no-untyped-def]
    return cls(actor=actor, idempotency_key="refused", **args)


def closed_account(w: World):  # type: ignore[no-untyped-def]
    account = w.account()
    w.sanction(account, "closed")
    return account


def appealed(w: World):  # type: ignore[no-untyped-def]
    account = w.account()
    sanction = w.sanction(account, "warning")
    w.run(c.AppealSanction, account_id=account, sanction_id=sanction, grounds="unfair")
    return account, sanction


CASES: dict[str, tuple[Callable[[World], c.Command], str]] = {
    # Publishing conditions.
    "unverified may not publish": (
        lambda w: publish(w, w.account(verified=False, approved=False)),
        "ACCOUNT_NOT_VERIFIED",
    ),
    "unsigned may not publish": (
        lambda w: publish(w, w.account(signed=False)),
        "AGREEMENT_NOT_SIGNED",
    ),
    "public unreviewed may not publish": (
        lambda w: publish(w, w.account(approved=False)),
        "ACCOUNT_NOT_APPROVED",
    ),
    "public rejected may not publish": (
        lambda w: (
            a := w.account(approved=False),
            w.run(c.ReviewAccount, account_id=a, outcome="rejected", reason="no licence"),
            publish(w, a),
        )[-1],
        "ACCOUNT_NOT_APPROVED",
    ),
    "legacy unverified may not publish": (
        lambda w: publish(w, w.account(kind="personal", legacy=True, verified=False)),
        "LEGACY_ACCESS_LIMITED",
    ),
    "legacy unsigned may not publish": (
        lambda w: publish(w, w.account(kind="personal", legacy=True, signed=False)),
        "LEGACY_ACCESS_LIMITED",
    ),
    "restricted may not publish": (
        lambda w: (a := w.account(), w.sanction(a, "publishing_restricted", 7), publish(w, a))[-1],
        "PUBLISHING_RESTRICTED",
    ),
    "suspended may not publish": (
        lambda w: (a := w.account(), w.sanction(a, "updates_suspended", 30), publish(w, a))[-1],
        "ACCOUNT_SUSPENDED",
    ),
    "closed may not publish": (lambda w: publish(w, closed_account(w)), "ACCOUNT_CLOSED"),
    # Political news.
    "enterprise may not publish political news": (
        lambda w: publish(w, w.account(category="enterprise"), "political_news"),
        "POLITICAL_NEWS_NOT_PERMITTED",
    ),
    "personal may not publish political news": (
        lambda w: publish(w, w.account(kind="personal"), "political_news"),
        "POLITICAL_NEWS_NOT_PERMITTED",
    ),
    "licensed news service may not publish an original": (
        lambda w: publish(w, w.account(category="licensed_news_service"), "political_news"),
        "POLITICAL_NEWS_NOT_PERMITTED",
    ),
    "enterprise may not reprint political news": (
        lambda w: publish(
            w,
            w.account(category="enterprise"),
            "political_news",
            "reprint",
            w.post(w.account(category="news_agency"), category="political_news"),
        ),
        "POLITICAL_NEWS_NOT_PERMITTED",
    ),
    "revoked grant no longer permits": (
        lambda w: (
            a := w.account(category="government"),
            w.run(
                c.GrantNewsPermission,
                REGULATOR,
                account_id=a,
                scope="publish",
                basis="state council",
            ),
            w.run(c.RevokeNewsPermission, REGULATOR, account_id=a, scope="publish", reason="ended"),
            publish(w, a, "political_news"),
        )[-1],
        "POLITICAL_NEWS_NOT_PERMITTED",
    ),
    "only an allowed account is marked": (
        lambda w: cmd(c.MarkAccount, w.ops, account_id=w.account(category="enterprise")),
        "POLITICAL_NEWS_NOT_PERMITTED",
    ),
    "reprint source must exist": (
        lambda w: publish(
            w, w.account(category="news_agency"), "political_news", "reprint", uuid4()
        ),
        "POST_NOT_FOUND",
    ),
    # Closed accounts are terminal.
    "closed refuses identity": (
        lambda w: cmd(
            c.VerifyIdentity,
            w.ops,
            account_id=closed_account(w),
            real_name="A",
            id_number="1",
            method="id_card",
        ),
        "ACCOUNT_CLOSED",
    ),
    "closed refuses a new sanction": (
        lambda w: cmd(
            c.ImposeSanction,
            REGULATOR,
            account_id=closed_account(w),
            level="warning",
            rule_ids=["art.9"],
            reason="again",
        ),
        "ACCOUNT_CLOSED",
    ),
    "closure is not lifted, only overturned": (
        lambda w: (
            a := w.account(),
            s := w.sanction(a, "closed"),
            cmd(c.LiftSanction, REGULATOR, account_id=a, sanction_id=s, reason="mercy"),
        )[-1],
        "ACCOUNT_CLOSED",
    ),
    # Sanctions.
    "sanction cites a rule": (
        lambda w: cmd(
            c.ImposeSanction,
            REGULATOR,
            account_id=w.account(),
            level="warning",
            rule_ids=[],
            reason="none",
        ),
        "NO_RULE_CITED",
    ),
    "sanction cites known rules": (
        lambda w: cmd(
            c.ImposeSanction,
            REGULATOR,
            account_id=w.account(),
            level="warning",
            rule_ids=["art.99"],
            reason="x",
        ),
        "UNKNOWN_RULE",
    ),
    "sanction level is on the ladder": (
        lambda w: cmd(
            c.ImposeSanction,
            REGULATOR,
            account_id=w.account(),
            level="fine",
            rule_ids=["art.9"],
            reason="x",
        ),
        "UNKNOWN_SANCTION_LEVEL",
    ),
    "suspension duration is allowed": (
        lambda w: cmd(
            c.ImposeSanction,
            REGULATOR,
            account_id=w.account(),
            level="updates_suspended",
            rule_ids=["art.9"],
            reason="x",
            duration_days=8,
        ),
        "DURATION_NOT_ALLOWED",
    ),
    "a warning takes no duration": (
        lambda w: cmd(
            c.ImposeSanction,
            REGULATOR,
            account_id=w.account(),
            level="warning",
            rule_ids=["art.9"],
            reason="x",
            duration_days=7,
        ),
        "DURATION_NOT_ALLOWED",
    ),
    "evidence is the account's own": (
        lambda w: cmd(
            c.ImposeSanction,
            REGULATOR,
            account_id=w.account(),
            level="warning",
            rule_ids=["art.9"],
            reason="x",
            evidence_post_ids=[w.post(w.account())],
        ),
        "EVIDENCE_NOT_OF_ACCOUNT",
    ),
    "appeal once": (
        lambda w: (
            pair := appealed(w),
            cmd(c.AppealSanction, w.ops, account_id=pair[0], sanction_id=pair[1], grounds="again"),
        )[-1],
        "APPEAL_ALREADY_FILED",
    ),
    "decide only a pending appeal": (
        lambda w: (
            a := w.account(),
            s := w.sanction(a, "warning"),
            cmd(
                c.DecideAppeal, REGULATOR, account_id=a, sanction_id=s, outcome="upheld", reason="x"
            ),
        )[-1],
        "NO_PENDING_APPEAL",
    ),
    "lift an unknown sanction": (
        lambda w: cmd(
            c.LiftSanction, REGULATOR, account_id=w.account(), sanction_id=uuid4(), reason="x"
        ),
        "SANCTION_NOT_FOUND",
    ),
    "a provider lifts only provider sanctions": (
        lambda w: (
            a := w.account(),
            s := w.sanction(a, "warning"),
            cmd(c.LiftSanction, w.ops, account_id=a, sanction_id=s, reason="x"),
        )[-1],
        "ROLE_NOT_PERMITTED",
    ),
    # Actors.
    "provider acts only on its own accounts": (
        lambda w: publish(w, w.account(), ops=w.rival_ops),
        "NOT_YOUR_ACCOUNT",
    ),
    "provider registers only its own accounts": (
        lambda w: cmd(
            c.RegisterAccount, w.rival_ops, provider_id=w.provider, handle="x", kind="personal"
        ),
        "NOT_YOUR_ACCOUNT",
    ),
    "provider sanctions only its own accounts": (
        lambda w: cmd(
            c.ImposeSanction,
            w.rival_ops,
            account_id=w.account(),
            level="warning",
            rule_ids=["art.9"],
            reason="x",
        ),
        "NOT_YOUR_ACCOUNT",
    ),
    "auditor writes nothing": (
        lambda w: cmd(c.ReportPost, AUDITOR, post_id=w.post(w.account()), reporter="a", reason="b"),
        "ROLE_NOT_PERMITTED",
    ),
    "provider does not grant news permissions": (
        lambda w: cmd(
            c.GrantNewsPermission, w.ops, account_id=w.account(), scope="publish", basis="self"
        ),
        "ROLE_NOT_PERMITTED",
    ),
    "provider does not decide appeals": (
        lambda w: (
            pair := appealed(w),
            cmd(
                c.DecideAppeal,
                w.ops,
                account_id=pair[0],
                sanction_id=pair[1],
                outcome="overturned",
                reason="x",
            ),
        )[-1],
        "ROLE_NOT_PERMITTED",
    ),
    # Accounts.
    "handles are unique per provider": (
        lambda w: (
            w.account("dup"),
            cmd(c.RegisterAccount, w.ops, provider_id=w.provider, handle="DUP", kind="personal"),
        )[-1],
        "ALREADY_EXISTS",
    ),
    "unknown provider": (
        lambda w: cmd(
            c.RegisterAccount,
            REGULATOR.__class__("sys", Role.SYSTEM),
            provider_id=uuid4(),
            handle="x",
            kind="personal",
        ),
        "PROVIDER_NOT_FOUND",
    ),
    "review is for public accounts": (
        lambda w: cmd(
            c.ReviewAccount,
            w.ops,
            account_id=w.account(kind="personal"),
            outcome="approved",
            reason="x",
        ),
        "NOT_PUBLIC_ACCOUNT",
    ),
    "filing needs approval": (
        lambda w: cmd(
            c.FileAccount,
            w.ops,
            account_id=w.account(approved=False),
            authority="cac",
            reference="f1",
            category="enterprise",
        ),
        "ACCOUNT_NOT_APPROVED",
    ),
    "filing category matches": (
        lambda w: cmd(
            c.FileAccount,
            w.ops,
            account_id=w.account(),
            authority="cac",
            reference="f1",
            category="government",
        ),
        "CATEGORY_MISMATCH",
    ),
    "agreement must be the current one": (
        lambda w: cmd(
            c.SignAgreement,
            w.ops,
            account_id=w.account(signed=False),
            agreement_id="im-service-agreement",
            version="2013.9",
            text_sha256=sha("old"),
            baselines=["baseline.laws"],
        ),
        "UNKNOWN_AGREEMENT",
    ),
    "agreement accepts every bottom line": (
        lambda w: (
            a := w.ledger.ruleset.agreement,
            cmd(
                c.SignAgreement,
                w.ops,
                account_id=w.account(signed=False),
                agreement_id=a.id,
                version=a.version,
                text_sha256=a.sha256,
                baselines=list(a.baselines[:-1]),
            ),
        )[-1],
        "BASELINES_INCOMPLETE",
    ),
    "grant is not repeated": (
        lambda w: cmd(
            c.GrantNewsPermission,
            REGULATOR,
            account_id=w.account(category="news_agency"),
            scope="publish",
            basis="x",
        ),
        "NEWS_PERMISSION_ALREADY_HELD",
    ),
    "revoke only a grant": (
        lambda w: cmd(
            c.RevokeNewsPermission, REGULATOR, account_id=w.account(), scope="reprint", reason="x"
        ),
        "NEWS_PERMISSION_NOT_HELD",
    ),
    "unmark only a marked account": (
        lambda w: cmd(c.UnmarkAccount, w.ops, account_id=w.account(), reason="x"),
        "NOT_MARKED",
    ),
    "mark once": (
        lambda w: (
            a := w.account(category="news_website"),
            w.run(c.MarkAccount, account_id=a),
            cmd(c.MarkAccount, w.ops, account_id=a),
        )[-1],
        "ALREADY_MARKED",
    ),
    # Posts.
    "reach never goes down": (
        lambda w: (
            p := w.post(w.account()),
            w.run(c.RecordReach, post_id=p, views=100, reposts=5),
            cmd(c.RecordReach, w.ops, post_id=p, views=99, reposts=5),
        )[-1],
        "REACH_DECREASED",
    ),
    "removed post takes no reach": (
        lambda w: (
            p := w.post(w.account()),
            w.run(c.RemovePost, post_id=p, rule_ids=["art.8"], reason="x"),
            cmd(c.RecordReach, w.ops, post_id=p, views=1, reposts=0),
        )[-1],
        "POST_REMOVED",
    ),
    "resolve a known report": (
        lambda w: cmd(
            c.ResolveReport,
            w.ops,
            post_id=w.post(w.account()),
            report_id=uuid4(),
            outcome="upheld",
            reason="x",
        ),
        "REPORT_NOT_FOUND",
    ),
    "resolve once": (
        lambda w: (
            p := w.post(w.account()),
            r := w.run(c.ReportPost, post_id=p, reporter="u1", reason="rumour")["report_id"],
            w.run(c.ResolveReport, post_id=p, report_id=r, outcome="dismissed", reason="ok"),
            cmd(c.ResolveReport, w.ops, post_id=p, report_id=r, outcome="upheld", reason="x"),
        )[-1],
        "REPORT_ALREADY_RESOLVED",
    ),
    "removal cites a rule": (
        lambda w: cmd(
            c.RemovePost, w.ops, post_id=w.post(w.account()), rule_ids=["nope"], reason="x"
        ),
        "UNKNOWN_RULE",
    ),
    "unknown account": (
        lambda w: cmd(c.MarkAccount, w.ops, account_id=uuid4()),
        "ACCOUNT_NOT_FOUND",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_refused_command_writes_nothing(ledger: Ledger, case: str) -> None:
    build, code = CASES[case]
    world = World(ledger)
    command = build(world)
    head = ledger.head()
    with pytest.raises(LedgerError) as refused:
        ledger.execute(command)
    assert refused.value.code == code, refused.value.message
    assert ledger.head() == head
    # The key was not consumed: nothing under it was stored.
    assert ledger.store.prior_outcomes([(command.actor.id, command.idempotency_key)]) == {}


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({"kind": "corporate"}, "kind"),
        ({"handle": ""}, "handle"),
        ({"handle": "x" * 201}, "handle"),
        ({"provider_id": "not-a-uuid"}, "provider_id"),
        ({"kind": "public", "category": None}, "category"),
        ({"kind": "personal", "category": "enterprise"}, "category"),
        ({"legacy": "yes"}, "legacy"),
    ],
)
def test_bad_arguments_are_typed_errors(args: dict[str, object], fragment: str) -> None:
    base: dict[str, object] = {"provider_id": uuid4(), "handle": "h", "kind": "personal"}
    ops = Actor("ops", Role.PROVIDER, uuid4())
    with pytest.raises(LedgerError) as refused:
        c.RegisterAccount(actor=ops, idempotency_key="k", **{**base, **args})  # type: ignore[arg-type]
    assert refused.value.code == "INVALID_ARGUMENT"
    assert fragment in refused.value.message


def test_unknown_category_is_refused(ledger: Ledger) -> None:
    world = World(ledger)
    with pytest.raises(LedgerError) as refused:
        world.run(
            c.RegisterAccount,
            provider_id=world.provider,
            handle="x",
            kind="public",
            category="newspaper",
        )
    assert refused.value.code == "INVALID_ARGUMENT"


def test_news_scopes_by_category(ledger: Ledger) -> None:
    world = World(ledger)
    agency = world.account(category="news_agency")
    licensed = world.account(category="licensed_news_service")
    original = world.post(agency, category="political_news")
    world.post(licensed, category="political_news", origin="reprint", source=original)
    government = world.account(category="government")
    world.run(
        c.GrantNewsPermission,
        REGULATOR,
        account_id=government,
        scope="reprint",
        basis="official releases",
    )
    world.post(government, category="political_news", origin="reprint", source=original)
    world.run(c.MarkAccount, account_id=government)
    # Revoking the only scope takes the mark away in the same command.
    world.run(
        c.RevokeNewsPermission, REGULATOR, account_id=government, scope="reprint", reason="expired"
    )
    assert ledger.get_account(government).marked is False
    types = [e.type for e in ledger.read_log(originator_id=government)]
    assert types[-2:] == ["Account.NewsPermissionRevoked", "Account.Unmarked"]
