# ruff: noqa: E501  (JavaScript run in the page reads best on one line)
"""The regulator's console (issue 24), in a real headless Chromium that cannot resolve any
host but 127.0.0.1, driven as tests/test_graphiql.py drives GraphiQL: it signs in as a
regulator, an auditor and a provider, opens every page, compares what it shows with the
API's answers, decides appeals, exports CSV and statements of reasons, verifies an
account's events in the browser, sees a tampered event flagged, runs axe-core (npm) on
every page, and checks that a provider's console never holds another provider's data.
Screenshots at desktop and phone widths go to tests/console/screenshots (ignored by git).

Chromium and Node.js/npm are required: without them these tests fail, they do not skip."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import httpx
import psycopg
import pytest

from api.auth import create_token
from api.console import CONSOLE_DIR
from ledger import Database, Ledger
from ledger import commands as c
from tests.api_server import ApiServer, free_port, running_api
from tests.cold import ColdProcess
from tests.conftest import Clock
from tests.dsa_statements import problems
from tests.graphiql.browser import Browser, chromium_path
from tests.test_api_conformance import node_tools
from tests.world import REGULATOR, World

HERE = Path(__file__).parent / "console"
SCREENSHOTS = HERE / "screenshots"
PAGES = ("overview", "provider", "account", "sanctions", "queue", "disclosures", "integrity")
SECRET_REASON = "Zhang Wei of Room 301 spread it"  # personal data in a free-text reason
REAL_NAME = "Li Xiaoming-Disclosed"
SVG_NAMESPACE = "http://www.w3.org/2000/svg"  # a name, never fetched


@dataclass
class Scene:
    world: World
    acme_accounts: list[UUID]
    rival_account: UUID
    sanctions: dict[str, UUID]  # name -> sanction id
    rival_sanction: UUID


def build_scene(ledger: Ledger, clock: Clock) -> Scene:
    world = World(ledger)
    plain = world.account("acme-plain")
    appealed = world.account("acme-appealed")
    restricted = world.account("acme-restricted")
    world.account("acme-unverified", verified=False, signed=False, approved=False)
    rival_ops = world.rival_ops
    rival = world.account("rivalhandle-zq", ops=rival_ops)
    post = world.post(plain)
    report = world.run(c.ReportPost, post_id=post, reporter="a reader", reason="rumour")
    clock.advance(hours=5)
    world.run(c.ResolveReport, post_id=post, report_id=UUID(report["report_id"]),
              outcome="upheld", reason="checked")  # fmt: skip
    world.run(c.RecordReach, post_id=post, views=6000, reposts=10)
    world.run(c.RemovePost, REGULATOR, post_id=post, rule_ids=("baseline.authenticity",),
              reason="a rumour")  # fmt: skip
    sanctions: dict[str, UUID] = {}
    for name, account, level, days in (
        ("warning", appealed, "warning", None),
        ("restricted", restricted, "publishing_restricted", 30),
        ("closed", plain, "closed", None),
    ):
        clock.advance(days=9)
        sanctions[name] = UUID(world.run(
            c.ImposeSanction, REGULATOR, account_id=account, level=level,
            rule_ids=["art.9", "baseline.authenticity"] if name != "warning" else
            ["baseline.authenticity"], reason=SECRET_REASON, duration_days=days,
        )["sanction_id"])  # fmt: skip
    for name in ("warning", "restricted"):
        account = appealed if name == "warning" else restricted
        world.run(c.AppealSanction, account_id=account, sanction_id=sanctions[name],
                  grounds="it was satire")  # fmt: skip
    rival_sanction = world.sanction(rival, "warning")
    world.run(c.AppealSanction, rival_ops, account_id=rival, sanction_id=rival_sanction,
              grounds="rival grounds")  # fmt: skip
    world.run(c.VerifyIdentity, account_id=appealed, real_name=REAL_NAME,
              id_number="110105198001019993", method="id_card")  # fmt: skip
    world.run(c.DiscloseIdentity, REGULATOR, account_id=appealed, basis="Art. 9",
              case_reference="case-1")  # fmt: skip
    return Scene(world, [plain, appealed, restricted], rival, sanctions, rival_sanction)


@pytest.fixture
def console(
    ledger: Ledger, database: Database, schema: str, data_dir: Path, clock: Clock
) -> Iterator[tuple[ApiServer, Scene]]:
    scene = build_scene(ledger, clock)
    with running_api(ledger, database, schema) as api:
        api.settle()
        yield api, scene


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    if executable is None:
        pytest.fail("chromium is not installed: the console tests need a real browser"
                    " (apt-get install -y chromium)", pytrace=False)  # fmt: skip
    with Browser(executable) as b:
        yield b


@pytest.fixture(scope="module")
def axe_source() -> str:
    return (node_tools() / "node_modules" / "axe-core" / "axe.min.js").read_text()


def base_url(api: ApiServer) -> str:
    return api.url.removesuffix("/graphql") + "/console/"


def sign_in(browser: Browser, api: ApiServer, token: str) -> None:
    browser.navigate("about:blank")
    browser.navigate(base_url(api))
    browser.wait_for("!!document.querySelector('#token')")
    browser.evaluate("sessionStorage.clear(), true")
    browser.evaluate(
        f"document.querySelector('#token').value = {json.dumps(token)};"
        " document.querySelector('form.signin').requestSubmit(); true"
    )
    browser.wait_for("document.querySelector('main').dataset.page === 'overview'")


def open_page(browser: Browser, route: str, ready: str) -> None:
    browser.evaluate(f"""document.querySelector('main').dataset.page = '';
      if (location.hash === {json.dumps(route)}) window.dispatchEvent(new HashChangeEvent('hashchange'));
      else location.hash = {json.dumps(route)}; true""")
    page = route.split("/")[1]
    browser.wait_for(f"document.querySelector('main').dataset.page === {json.dumps(page)}"
                     f" && !!document.querySelector({json.dumps(ready)})")  # fmt: skip


def text(browser: Browser, selector: str) -> str:
    found: str = browser.evaluate(
        f"(document.querySelector({json.dumps(selector)}) || {{}}).innerText || ''"
    )
    return found


def click(browser: Browser, selector: str) -> None:
    browser.evaluate(f"document.querySelector({json.dumps(selector)}).click(), true")


def accessibility(browser: Browser, axe: str, page: str) -> None:
    if not browser.evaluate("typeof window.axe === 'object'"):
        browser.evaluate(axe + ";true")
    found = browser.evaluate(
        "axe.run(document, {resultTypes: ['violations']}).then(r => r.violations"
        ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
        ".map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.slice(0, 3)"
        ".map(n => n.target.join(' '))})))"
    )
    assert found == [], f"{page}: {json.dumps(found, indent=1)}"


def screenshots(browser: Browser, role: str, page: str) -> None:
    for name, (width, height, mobile) in {"desktop": (1400, 900, False),
                                          "phone": (390, 844, True)}.items():  # fmt: skip
        browser.viewport(width, height, mobile)
        browser.pump(0.2)
        png = browser.screenshot(SCREENSHOTS / f"{role}-{page}-{name}.png")
        assert png.startswith(b"\x89PNG") and len(png) > 5_000
    browser.viewport(1400, 900)


def wait_sealed(api: ApiServer, token: str) -> None:
    head = api.ledger.head()
    deadline = time.monotonic() + 30
    while True:
        found = api.data("{ treeHead { treeSize } }", token)["treeHead"]
        if found and int(found["treeSize"]) >= head:
            return
        assert time.monotonic() < deadline, "the sealer did not seal the head"
        time.sleep(0.2)


def downloaded(folder: Path, name: str) -> str:
    deadline = time.monotonic() + 20
    while not (folder / name).exists():
        assert time.monotonic() < deadline, f"no download {name}: {list(folder.iterdir())}"
        time.sleep(0.1)
    time.sleep(0.2)
    return (folder / name).read_text()


def assert_offline(browser: Browser, api: ApiServer) -> None:
    origin = urlsplit(api.url).netloc
    outside = [u for u in browser.requests if not u.startswith(("data:", "blob:", "about:"))
               and urlsplit(u).netloc != origin]  # fmt: skip
    assert not outside, outside
    assert not browser.errors, browser.errors


# ----- served as static files with a strict policy ----------------------------------------


def test_the_console_is_static_files_under_a_strict_policy(
    console: tuple[ApiServer, Scene],
) -> None:
    api, _ = console
    root = api.url.removesuffix("/graphql")
    moved = httpx.get(root + "/console", follow_redirects=False)
    assert moved.status_code == 308 and moved.headers["location"] == "/console/"
    page = httpx.get(root + "/console/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert not re.search(r"<script(?![^>]*\bsrc=)", page.text), "an inline script"
    assert not re.search(r"\sstyle=|<style", page.text), "an inline style"
    for path in sorted(CONSOLE_DIR.iterdir()):
        asset = httpx.get(f"{root}/console/{path.name}")
        assert asset.status_code == 200 and asset.content == path.read_bytes(), path.name
        assert asset.headers["content-security-policy"] == policy
        outside = set(re.findall(r"https?://[^\s\"'`)]+", asset.text)) - {SVG_NAMESPACE}
        assert not outside, (path.name, outside)  # no CDN, nothing from elsewhere
        assert "innerHTML" not in asset.text, path.name  # data goes in as text
    again = httpx.get(root + "/console/app.js", headers={"If-None-Match": asset.headers["etag"]})
    assert again.status_code in (200, 304)
    assert httpx.get(root + "/console/../api/app.py").status_code == 404


# ----- a regulator's morning --------------------------------------------------------------


def figures_shown(browser: Browser) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = browser.evaluate("""(() => {
      const heads = [...document.querySelectorAll('#figures thead th')].map(t => t.innerText.trim());
      return Object.fromEntries([...document.querySelectorAll('#figures tbody tr')].map(tr => {
        const cells = [...tr.children].map(td => td.innerText.trim());
        return [cells[0], Object.fromEntries(heads.map((h, i) => [h.replace(/ ?[↕▲▼]$/, ''), cells[i]]))];
      }));
    })()""")
    return found


def chart_total(browser: Browser, title: str) -> int:
    total: int = browser.evaluate(f"""[...document.querySelectorAll('table[data-chart={json.dumps(title)}] tbody td')]
      .reduce((n, td) => n + Number(td.textContent), 0)""")
    return total


def test_a_regulator_reads_decides_exports_and_verifies(
    console: tuple[ApiServer, Scene], browser: Browser, axe_source: str, tmp_path: Path,
    database: Database, schema: str,
) -> None:  # fmt: skip
    api, scene = console
    token = api.token("regulator", name="inspector-li")
    wait_sealed(api, token)
    downloads = tmp_path / "downloads"
    browser.downloads_to(downloads)
    browser.errors.clear()
    browser.requests.clear()
    sign_in(browser, api, token)

    # Overview: the figures equal the API's, and sort.
    browser.wait_for("!!document.querySelector('#figures tbody tr')")
    providers = api.data("{ providers { code accounts openReports accountsByStatus { key count } } }",
                         token)["providers"]  # fmt: skip
    shown = figures_shown(browser)
    assert set(shown) == {p["code"] for p in providers}
    for p in providers:
        row = shown[p["code"]]
        assert int(row["Accounts"]) == p["accounts"], row
        assert int(row["Open reports"]) == p["openReports"], row
        closed = next((x["count"] for x in p["accountsByStatus"] if x["key"] == "closed"), 0)
        assert int(row["Closed"]) == closed, row
    trends = api.data("{ trends(weeks: 12) { sanctionsByLevel { count } appeals { key count } } }",
                      token)["trends"]  # fmt: skip
    assert chart_total(browser, "Sanctions per week, by level") == sum(
        x["count"] for x in trends["sanctionsByLevel"]) == 4  # fmt: skip
    assert chart_total(browser, "Appeals per week, by outcome") == sum(
        x["count"] for x in trends["appeals"]) == 3  # fmt: skip
    browser.evaluate("[...document.querySelectorAll('#figures th button')]"
                     ".find(b => b.innerText.startsWith('Accounts')).click(), true")  # fmt: skip
    assert browser.evaluate("document.querySelector('#figures th[aria-sort=descending]')"
                            ".innerText").startswith("Accounts")  # fmt: skip
    assert next(iter(figures_shown(browser))) == "acme"  # acme has the most accounts
    click(browser, "main .toolbar button")
    exported = downloaded(downloads, "providers.csv")
    assert exported.splitlines()[0].startswith("Provider,Name,Accounts")
    assert {line.split(",")[0] for line in exported.splitlines()[1:]} == set(shown)
    accessibility(browser, axe_source, "overview")
    screenshots(browser, "regulator", "overview")

    # A provider's accounts, with the API's filters.
    acme = str(scene.world.provider)
    open_page(browser, f"#/provider/{acme}", "main table tbody tr")
    listed = api.data("query($f: AccountFilter) { accounts(filter: $f) { edges { node { handle } } } }",
                      token, f={"providerId": acme})["accounts"]["edges"]  # fmt: skip
    handles = browser.evaluate("[...document.querySelectorAll('main tbody tr')].map(r => r.children[0].innerText)")
    assert handles == [e["node"]["handle"] for e in listed]
    browser.evaluate("document.querySelector('#f-unverified').checked = true;"
                     " document.querySelector('form.filters').requestSubmit(); true")  # fmt: skip
    browser.wait_for("document.querySelectorAll('main tbody tr').length === 1")
    assert text(browser, "main tbody tr th") == "acme-unverified"
    accessibility(browser, axe_source, "provider")
    screenshots(browser, "regulator", "provider")

    # An account: now, history, time travel, sanctions with appeal state, flagged posts.
    plain = str(scene.acme_accounts[0])
    open_page(browser, f"#/account/{plain}", "#history li")
    history = api.data("query($id: ID!) { history(accountId: $id, first: 500) { edges { node { position } } } }",
                       token, id=plain)["history"]["edges"]  # fmt: skip
    assert browser.evaluate("document.querySelectorAll('#history li').length") == len(history)
    assert "Closed" in text(browser, "main")
    assert "overturned" not in text(browser, "main")
    assert "yes" in browser.evaluate("[...document.querySelectorAll('main table')].at(-1).innerText")
    browser.evaluate("const s = document.querySelector('#asof-slider'); s.value = 0;"
                     " s.dispatchEvent(new Event('change')); true")  # fmt: skip
    browser.wait_for("document.querySelector('main').innerText.includes('version 1')")
    assert "status Active" in text(browser, "main")
    browser.evaluate("[...document.querySelectorAll('main .toolbar button')].at(-1).click(), true")
    history_csv = downloaded(downloads, "history-acme-plain.csv").strip().splitlines()
    assert history_csv[0].startswith("position,type,at") and len(history_csv) == len(history) + 1
    accessibility(browser, axe_source, "account")
    screenshots(browser, "regulator", "account")

    # Verification in the browser: every event ticked.
    click(browser, "#verify")
    browser.wait_for("/verified/.test(document.querySelector('#verify-summary').innerText)")
    verdicts = browser.evaluate("Object.fromEntries([...document.querySelectorAll('#verify-results li')]"
                                ".map(li => [li.dataset.position, li.dataset.verdict]))")  # fmt: skip
    assert len(verdicts) == len(history) and set(verdicts.values()) == {"ok"}, verdicts

    # The work queue: decide an appeal, retry it, and see a refusal.
    open_page(browser, "#/queue", "form.decide")
    warning = str(scene.sanctions["warning"])
    form = f"form.decide[data-sanction='{warning}']"
    browser.evaluate(f"""(() => {{ const f = document.querySelector({json.dumps(form)});
      f.querySelector('select').value = 'overturned'; f.querySelector('input').value = 'satire, not a rumour';
      f.requestSubmit(); return true; }})()""")
    browser.wait_for(f"/Recorded at position/.test(document.querySelector({json.dumps(form + ' output')}).innerText)")
    decided = api.data("query($id: ID!) { sanctions(filter: {accountId: $id}) { edges { node { id appealState } } } }",
                       token, id=str(scene.acme_accounts[1]))["sanctions"]["edges"]  # fmt: skip
    assert [e["node"]["appealState"] for e in decided] == ["overturned"]
    browser.evaluate(f"document.querySelector({json.dumps(form)}).requestSubmit(), true")
    browser.wait_for(f"/already recorded/.test(document.querySelector({json.dumps(form + ' output')}).innerText)")
    browser.evaluate(f"""(() => {{ const f = document.querySelector({json.dumps(form)});
      f.querySelector('select').value = 'upheld'; f.requestSubmit(); return true; }})()""")
    browser.wait_for(f"/Refused: [A-Z_]+: /.test(document.querySelector({json.dumps(form + ' output')}).innerText)")
    accessibility(browser, axe_source, "queue")
    screenshots(browser, "regulator", "queue")

    # Sanctions: CSV and statements of reasons in the DSA database's schema.
    open_page(browser, "#/sanctions", "main tbody tr")
    click(browser, "#export-sor")
    lines = downloaded(downloads, "statements-of-reasons.jsonl").splitlines()
    ids = [e["node"]["id"] for e in api.data("{ sanctions(first: 500) { edges { node { id } } } }", token)["sanctions"]["edges"]]
    statements = [json.loads(line) for line in lines]
    assert [s["puid"] for s in statements] == ids
    for s in statements:
        assert problems(s) == [], s
    secrets = [SECRET_REASON, "acme-", str(scene.acme_accounts[0]), "inspector", "rivalhandle"]
    assert not any(x in "\n".join(lines) for x in secrets)
    browser.evaluate("[...document.querySelectorAll('main .toolbar button')].find(b => b.innerText === 'Export CSV').click(), true")
    sanctions_csv = downloaded(downloads, "sanctions.csv")
    assert len(sanctions_csv.strip().splitlines()) == len(ids) + 1
    accessibility(browser, axe_source, "sanctions")
    screenshots(browser, "regulator", "sanctions")

    # Disclosures: who, when, why; never the identity.
    open_page(browser, "#/disclosures", "main tbody tr")
    assert "case-1" in text(browser, "main tbody")
    assert REAL_NAME not in browser.evaluate("document.documentElement.outerHTML")
    accessibility(browser, axe_source, "disclosures")
    screenshots(browser, "regulator", "disclosures")

    # Integrity: the head, the signed head checked here, the projections.
    open_page(browser, "#/integrity", "#lag tbody tr")
    assert int(text(browser, "#log-head")) >= api.ledger.head() - 2
    assert text(browser, "#head-signature").startswith("valid")
    accessibility(browser, axe_source, "integrity")
    screenshots(browser, "regulator", "integrity")

    # Tamper with one stored event of the plain account: its verification flags it.
    wait_sealed(api, token)
    tampered = next(e["node"]["position"] for e in api.data(
        "query($id: ID!) { history(accountId: $id, first: 500) { edges { node { position type } } } }",
        token, id=plain)["history"]["edges"] if e["node"]["type"].endswith("SanctionImposed"))  # fmt: skip
    with psycopg.connect(database.conninfo, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        changed = conn.execute(
            "UPDATE ledger_events SET state = convert_to(replace(convert_from(state, 'UTF8'),"
            " %s, 'a lesser breach'), 'UTF8') WHERE notification_id = %s",
            (SECRET_REASON, int(tampered)),
        ).rowcount
    assert changed == 1
    open_page(browser, f"#/account/{plain}", "#history li")
    click(browser, "#verify")
    browser.wait_for("/flagged/.test(document.querySelector('#verify-summary').innerText)")
    verdicts = browser.evaluate("Object.fromEntries([...document.querySelectorAll('#verify-results li')]"
                                ".map(li => [li.dataset.position, li.dataset.verdict]))")  # fmt: skip
    assert verdicts.pop(str(tampered)) == "flagged"
    assert set(verdicts.values()) == {"ok"}
    assert "altered" in text(browser, f"#verify-results li[data-position='{tampered}']")
    assert_offline(browser, api)


# ----- an auditor is refused a decision, and sees why --------------------------------------


def test_an_auditor_sees_the_typed_refusal(
    console: tuple[ApiServer, Scene], browser: Browser
) -> None:
    api, scene = console
    token = api.token("auditor", name="auditor-wang")
    browser.errors.clear()
    sign_in(browser, api, token)
    assert browser.evaluate("!document.querySelector('#nav a[href=\"#/queue\"]').closest('li').hidden")
    open_page(browser, "#/queue", "form.decide")
    form = f"form.decide[data-sanction='{scene.rival_sanction}']"
    browser.evaluate(f"""(() => {{ const f = document.querySelector({json.dumps(form)});
      f.querySelector('input').value = 'no'; f.requestSubmit(); return true; }})()""")
    shown = browser.wait_for(f"(t => /Refused: /.test(t) && t)(document.querySelector({json.dumps(form + ' output')}).innerText)")
    answer = api.data(
        "mutation($i: DecideAppealInput!) { decideAppeal(input: $i, idempotencyKey: \"x\") {"
        " ... on MutationError { code } } }", token,
        i={"accountId": str(scene.rival_account), "sanctionId": str(scene.rival_sanction),
           "outcome": "upheld", "reason": "no"},
    )["decideAppeal"]  # fmt: skip
    assert shown.startswith(f"Refused: {answer['code']}: ")
    open_page(browser, "#/disclosures", "main tbody tr")
    screenshots(browser, "auditor", "queue")
    assert not browser.errors, browser.errors


# ----- a provider's console holds nothing of another provider --------------------------------


def test_a_providers_console_shows_only_its_own_provider(
    console: tuple[ApiServer, Scene], browser: Browser, axe_source: str
) -> None:
    api, scene = console
    world = scene.world
    token = api.token("provider", world.provider, name="acme-desk")
    regulator = api.token("regulator")
    rival_sanctions = api.data("query($p: ID) { sanctions(filter: {providerId: $p}) { edges { node { id } } } }",
                               regulator, p=str(world.rival))["sanctions"]["edges"]  # fmt: skip
    forbidden = [str(world.rival), str(scene.rival_account), "rivalhandle-zq", '"rival"',
                 ">rival<", "Rival", "rival grounds",
                 *(e["node"]["id"] for e in rival_sanctions)]  # fmt: skip
    browser.errors.clear()
    browser.requests.clear()
    browser.responses.clear()
    sign_in(browser, api, token)
    assert browser.evaluate("document.querySelector('#nav a[href=\"#/queue\"]').closest('li').hidden")
    pages = [
        ("#/overview", "#figures tbody tr"),
        (f"#/provider/{world.provider}", "main tbody tr"),
        (f"#/account/{scene.acme_accounts[1]}", "#history li"),
        ("#/sanctions", "main tbody tr"),
        ("#/integrity", "#lag tbody tr"),
    ]

    def traffic(routes: list[tuple[str, str]]) -> str:
        seen = []
        for route, ready in routes:
            open_page(browser, route, ready)
            browser.pump(0.3)
            seen.append(browser.evaluate("document.documentElement.outerHTML"))
            screenshots(browser, "provider", route.split("/")[1])
        bodies = [browser.response_body(rid) for rid, url in browser.responses if "/graphql" in url]
        assert bodies and any("acme" in b for b in bodies)
        return "\n".join([*seen, *bodies, *browser.requests])

    everything = traffic(pages)
    leaked = [x for x in forbidden if x in everything]
    assert not leaked, leaked

    # Asking for the rival's account or provider by id shows nothing of it.
    browser.requests.clear()
    browser.responses.clear()
    for route in (f"#/account/{scene.rival_account}", f"#/provider/{world.rival}"):
        open_page(browser, route, "main h1")
        assert "not found" in text(browser, "main h1").lower()
        asked = route.split("/")[-1]
        shown = browser.evaluate("document.documentElement.outerHTML")
        bodies = [browser.response_body(r) for r, url in browser.responses if "/graphql" in url]
        leaked = [x for x in forbidden if x in "\n".join([shown, *bodies]) and x != asked]
        assert not leaked, leaked
    open_page(browser, "#/overview", "#figures tbody tr")
    assert list(figures_shown(browser)) == ["acme"]
    assert "acme" in text(browser, "#figures")
    accessibility(browser, axe_source, "provider overview")
    assert_offline(browser, api)


# ----- the charts' numbers and the statements, through the API -------------------------------


def test_trends_agree_with_the_figures_and_are_confined(console: tuple[ApiServer, Scene]) -> None:
    api, scene = console
    regulator = api.token("regulator")
    query = """query($p: ID, $w: Int!) { trends(weeks: $w, providerId: $p) { since until
      sanctionsByLevel { week key count } reports { week opened resolved }
      appeals { week key count } accountsByStatus { week key count } } }"""
    everything = api.data(query, regulator, w=12)["trends"]
    assert sum(x["count"] for x in everything["sanctionsByLevel"]) == 4
    assert sum(x["opened"] for x in everything["reports"]) == 1
    assert sum(x["resolved"] for x in everything["reports"]) == 1
    outcomes: dict[str, int] = {}
    for x in everything["appeals"]:
        outcomes[x["key"]] = outcomes.get(x["key"], 0) + x["count"]
    assert outcomes == {"lodged": 3}
    last = max(x["week"] for x in everything["accountsByStatus"])
    now = {x["key"]: x["count"] for x in everything["accountsByStatus"] if x["week"] == last}
    figures: dict[str, int] = {}
    for p in api.data("{ providers { accountsByStatus { key count } } }", regulator)["providers"]:
        for x in p["accountsByStatus"]:
            figures[x["key"]] = figures.get(x["key"], 0) + x["count"]
    assert {k: v for k, v in now.items() if v} == figures
    weeks = {x["week"] for x in everything["accountsByStatus"]}
    assert len(weeks) == 12

    mine = api.token("provider", scene.world.provider)
    acme = str(scene.world.provider)
    own, asked = (api.data(query, t, w=12, p=p)["trends"] for t, p in ((mine, None), (regulator, acme)))
    assert own.pop("until") and asked.pop("until")  # the clock moved between the two
    assert own == asked and own["sanctionsByLevel"] != everything["sanctionsByLevel"]
    rival = api.data(query, mine, w=12, p=str(scene.world.rival))["trends"]
    assert rival["sanctionsByLevel"] == rival["appeals"] == rival["accountsByStatus"] == []
    for bad in ({"w": 0}, {"w": 105}, {"w": 4, "p": "x\x00y"}, {"w": 4, "p": "\ud800"},
                {"w": 4, "p": "x" * (1 << 20)}):  # fmt: skip
        body = json.dumps({"query": query, "variables": bad}).encode()  # \ud800 escaped
        errors = api.post(body, regulator, headers={"Content-Type": "application/json"}).json().get("errors")
        assert errors and errors[0]["extensions"]["code"] in ("BAD_USER_INPUT", "PAYLOAD_TOO_LARGE"), errors
    viewer = api.data("{ viewer { role providerId } }", mine)["viewer"]
    assert viewer == {"role": "provider", "providerId": acme}


def test_statements_of_reasons_from_the_api_meet_the_dsa_rules(
    console: tuple[ApiServer, Scene],
) -> None:
    api, scene = console
    found = api.data("{ sanctions(first: 500) { edges { node { id level expiresAt"
                     " statementOfReasons } } } }", api.token("auditor"))["sanctions"]["edges"]  # fmt: skip
    by_level: dict[str, dict[str, Any]] = {}
    for edge in found:
        s = edge["node"]["statementOfReasons"]
        assert problems(s) == [], s
        assert s["puid"] == edge["node"]["id"]
        by_level[edge["node"]["level"]] = s
    assert by_level["closed"]["decision_account"] == "DECISION_ACCOUNT_TERMINATED"
    assert by_level["closed"]["decision_ground"] == "DECISION_GROUND_ILLEGAL_CONTENT"
    assert by_level["warning"]["decision_visibility"] == ["DECISION_VISIBILITY_OTHER"]
    restricted = by_level["publishing_restricted"]
    assert restricted["end_date_visibility_restriction"] > restricted["application_date"]
    # Only bottom lines of the agreement: a breach of the terms, not of the law.
    warning = next(e["node"]["statementOfReasons"] for e in found
                   if e["node"]["id"] == str(scene.sanctions["warning"]))  # fmt: skip
    assert warning["decision_ground"] == "DECISION_GROUND_INCOMPATIBLE_CONTENT"
    assert SECRET_REASON not in json.dumps(found)
    # The checker is able to fail.
    assert problems({**warning, "puid": "a b"}) and problems({**warning, "category": "X"})
    assert problems({k: v for k, v in warning.items() if k != "decision_visibility"})


def test_the_command_line_prints_the_same_statements(
    console: tuple[ApiServer, Scene], database: Database, schema: str, tmp_path: Path
) -> None:
    from tests.test_cli import ledger_cli, refused

    api, scene = console
    env = {**os.environ, "LEDGER_DATABASE_URL": database.conninfo,
           "LEDGER_SCHEMA": schema, "LEDGER_DATA_DIR": str(tmp_path),
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}  # fmt: skip
    done = ledger_cli("statements-of-reasons", env=env)
    assert done.returncode == 0, done.stderr
    printed = [json.loads(line) for line in done.stdout.splitlines()]
    api_side = [e["node"]["statementOfReasons"] for e in api.data(
        "{ sanctions(first: 500) { edges { node { statementOfReasons } } } }",
        api.token("regulator"))["sanctions"]["edges"]]  # fmt: skip
    assert printed == api_side and len(printed) == 4
    acme = ledger_cli("statements-of-reasons", "--provider", "acme", env=env)
    assert [json.loads(x)["puid"] for x in acme.stdout.splitlines()] == [
        str(s) for s in scene.sanctions.values()]  # fmt: skip
    later = ledger_cli("statements-of-reasons", "--since", "2099-01-01", env=env)
    assert later.returncode == 0 and later.stdout == ""
    refused(ledger_cli("statements-of-reasons", "--provider", "nosuch", env=env), "nosuch")
    refused(ledger_cli("statements-of-reasons", "--since", "yesterday", env=env), "--since")
    refused(ledger_cli("statements-of-reasons", "--provider", "x" * 300, env=env), "--provider")
    undecodable = ledger_cli("statements-of-reasons", "--provider", "\udcff", env=env)
    refused(undecodable, "--provider")  # a byte that is not UTF-8: a lone surrogate



def test_ledger_serve_serves_the_console_from_a_new_process(
    ledger: Ledger, database: Database, schema: str, cold: ColdProcess, clock: Clock
) -> None:
    scene = build_scene(ledger, clock)
    with database.connect() as conn:
        token = create_token(conn, schema, "provider", scene.world.provider, "cold")[1]
    for _ in range(2):  # a first server, then a second after it stopped
        with cold.serve(free_port()) as url:
            root = url.removesuffix("/graphql")
            page = httpx.get(root + "/console/")
            assert page.status_code == 200 and "app.js" in page.text
            assert "script-src 'self'" in page.headers["content-security-policy"]
            assert httpx.get(root + "/console/verify.js").status_code == 200
            answer = httpx.post(url, json={"query": "{ viewer { role providerId }"
                                " trends(weeks: 1) { accountsByStatus { key count } } }"},
                                headers={"Authorization": f"Bearer {token}"}).json()  # fmt: skip
            assert answer["data"]["viewer"] == {"role": "provider",
                                                "providerId": str(scene.world.provider)}  # fmt: skip
            now = {x["key"]: x["count"] for x in answer["data"]["trends"]["accountsByStatus"]}
            assert now == {"active": 3, "closed": 1, "updates_suspended": 0,
                           "publishing_restricted": 0}  # the real clock: the restriction lapsed
