"""The data the compiled-read tests run against: the demo data set beside a scripted
world of edge cases (lapsed and overlapping suspensions, a closed account and a
reopened one, an erased identity, a pending appeal, flagged, reported and removed
posts), served by a real API process with the response cache off, and what the
generated operations draw from: ids of every kind, cursors from earlier pages, times."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from api.graphql.scalars import encode_cursor
from ledger import Database, Ledger
from ledger import commands as c
from ledger.demo import run_demo
from ledger.domain import ids
from ledger.vault import Vault
from tests.api_server import ApiServer, running_api
from tests.conftest import TEST_KEY, Clock
from tests.world import REGULATOR, World


@dataclass
class Env:
    api: ApiServer
    tokens: dict[str, str]  # role name -> token
    providers: dict[str, UUID]  # role name -> the provider it is confined to
    account_ids: list[str]
    post_ids: list[str]
    provider_ids: list[str]
    cursors: dict[str, list[str]]  # kind -> cursors taken from earlier pages
    times: list[str]
    owned: dict[UUID, set[str]] = field(default_factory=dict)  # provider -> its row ids

    @property
    def compiler(self) -> Any:
        return self.api.state.extras["compiler"]


def scripted(world: World, clock: Clock) -> None:
    """Edge cases at two providers (acme and rival)."""
    w = world
    regulate = lambda command, account, **a: w.run(command, REGULATOR, account_id=account, **a)  # noqa: E731
    w.run(c.RecordQualification, provider_id=w.provider, qualification="icp", reference="I-1")
    plain = w.account("plain")
    posts = [w.post(plain) for _ in range(3)]
    w.run(c.RecordReach, post_id=posts[0], views=6000, reposts=600)
    w.run(c.RecordReach, post_id=posts[1], views=5200, reposts=10)
    report = UUID(
        w.run(c.ReportPost, post_id=posts[0], reporter="u1", reason="rumour")["report_id"]
    )
    w.run(c.ReportPost, post_id=posts[1], reporter="u2", reason="spam")
    clock.advance(hours=3)
    w.run(c.ResolveReport, REGULATOR, post_id=posts[0], report_id=report, outcome="upheld",
          reason="x")  # fmt: skip
    w.run(c.RemovePost, REGULATOR, post_id=posts[0], rule_ids=["art.8"], reason="rumour")
    lapsed = w.account("lapsed")
    w.sanction(lapsed, "updates_suspended", days=7)
    overlap = w.account("overlap")
    short = w.sanction(overlap, "updates_suspended", days=15)
    w.sanction(overlap, "updates_suspended", days=30)
    w.sanction(overlap, "publishing_restricted", days=90, actor=w.ops)
    regulate(c.LiftSanction, overlap, sanction_id=short, reason="corrected")
    reopened = w.account("reopened")
    closure = w.sanction(reopened, "closed")
    w.run(c.AppealSanction, account_id=reopened, sanction_id=closure, grounds="mistaken")
    regulate(c.DecideAppeal, reopened, sanction_id=closure, outcome="overturned", reason="r")
    closed = w.account("closed", kind="personal")
    upheld = w.sanction(closed, "closed")
    w.run(c.AppealSanction, account_id=closed, sanction_id=upheld, grounds="mistaken")
    regulate(c.DecideAppeal, closed, sanction_id=upheld, outcome="upheld", reason="no")
    erased = w.account("erased")
    regulate(c.EraseIdentity, erased, reason="holder's request")
    pending = w.account("pending", category="news_website")
    warning = w.sanction(pending, "warning", actor=w.ops)
    w.run(c.AppealSanction, account_id=pending, sanction_id=warning, grounds="unfair")
    regulate(c.GrantNewsPermission, plain, scope="reprint", basis="licence")
    w.run(c.MarkAccount, account_id=plain)
    w.account("legacy", kind="personal", legacy=True, verified=False, signed=False)
    rival = w.account("rival-1", ops=w.rival_ops)
    rival_post = w.post(rival, ops=w.rival_ops)
    w.run(c.RecordReach, w.rival_ops, post_id=rival_post, views=9000, reposts=900)
    w.sanction(rival, "publishing_restricted", days=15)
    w.account("rival-2", ops=w.rival_ops, kind="personal")
    clock.advance(days=10)  # the seven-day suspension lapses, the others hold


def pages(api: ApiServer, token: str, root: str, kind: str, args: str = "") -> list[str]:
    """Every end cursor, paging through a list three at a time."""
    query = (
        f"query($after: String) {{ {root}(first: 3, after: $after{args}) {{"
        " pageInfo { hasNextPage endCursor } } }"
    )
    found, after = [], None
    while True:
        page = api.data(query, token, after=after)[root]["pageInfo"]
        if page["endCursor"]:
            found.append(page["endCursor"])
        if not page["hasNextPage"]:
            return found
        after = page["endCursor"]


def _ids(api: ApiServer, table: str, column: str) -> dict[UUID, set[str]]:
    with api.database.connect(api.schema) as conn:
        found = conn.execute(f"SELECT provider_id, {column} FROM {table}").fetchall()
    owned: dict[UUID, set[str]] = {}
    for provider, row_id in found:
        owned.setdefault(provider, set()).add(str(row_id))
    return owned


@contextmanager
def compiled_env(database: Database, tmp: Path) -> Iterator[Env]:
    schema = "t_" + uuid.uuid4().hex[:12]
    database.create_schema(schema)
    clock = Clock()
    ledger = Ledger(database.eventsourcing_env(schema), clock=clock, vault=Vault(TEST_KEY))
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("LEDGER_DATA_DIR", str(tmp))
            mp.setenv("LEDGER_RESPONSE_CACHE", "0")  # each request reaches its path
            run_demo(ledger.submit, ledger.ruleset, 16)
            world = World(ledger)
            scripted(world, clock)
            with running_api(ledger, database, schema) as api:
                api.settle()
                now = clock.now
                ledger.clock = lambda: now  # both paths read at the same moment
                yield _env(api, world)
    finally:
        ledger.close()
        database.drop_schema(schema)


def _env(api: ApiServer, world: World) -> Env:
    wechat = ids.provider_id("wechat")
    providers = {"acme": world.provider, "wechat": wechat}
    tokens = {
        "regulator": api.token("regulator"),
        "auditor": api.token("auditor"),
        "acme": api.token("provider", world.provider),
        "wechat": api.token("provider", wechat),
    }
    regulator = tokens["regulator"]
    accounts = _ids(api, "accounts", "account_id")
    posts = _ids(api, "posts", "post_id")
    sanctions = _ids(api, "sanctions", "sanction_id")
    owned: dict[UUID, set[str]] = {}
    for table in (accounts, posts, sanctions):
        for provider, found in table.items():
            owned.setdefault(provider, {str(provider)}).update(found)
    some_account = sorted(accounts[world.provider])[0]
    cursors = {
        "account": pages(api, regulator, "accounts", "account"),
        "sanction": pages(api, regulator, "sanctions", "sanction"),
        "flagged": pages(api, regulator, "flaggedPosts", "flagged"),
        "history": pages(api, regulator, "history", "history", f', accountId: "{some_account}"'),
    }
    cursors["account"].append(encode_cursor("account", 2**62))  # past the end: an empty page
    with api.database.connect(api.schema) as conn:
        times = [
            r[0].isoformat()
            for r in conn.execute("SELECT at FROM history ORDER BY position").fetchall()[::25]
        ]
    return Env(
        api=api,
        tokens=tokens,
        providers=providers,
        account_ids=sorted(set().union(*accounts.values())),
        post_ids=sorted(set().union(*posts.values())),
        provider_ids=sorted(str(p) for p in owned),
        cursors=cursors,
        times=times,
        owned=owned,
    )
