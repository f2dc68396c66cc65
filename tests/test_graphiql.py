"""GraphiQL offline (issue 14): the page and every asset it loads come from the API
server itself, and a real headless Chromium that cannot resolve any host but 127.0.0.1
loads it, runs a query and a subscription with the header editor's token, and shows the
results. The screenshot lands in tests/graphiql/last.png (ignored by git).

Chromium is required: without it these tests fail, they do not skip
(`apt-get install -y chromium`; .ci/run installs it)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx
import pytest

from api.http import GRAPHIQL_DIR
from ledger import Database, Ledger
from tests.api_server import ApiServer, running_api
from tests.graphiql.browser import Browser, chromium_path
from tests.world import World

SCREENSHOT = Path(__file__).parent / "graphiql" / "last.png"
RESPONSE = """(() => {
  const cm = document.querySelector('.graphiql-response .CodeMirror');
  return cm && cm.CodeMirror ? cm.CodeMirror.getValue() : '';
})()"""
RUN = "document.querySelector('.graphiql-execute-button').click(), true"


@pytest.fixture
def graphiql_server(
    ledger: Ledger, database: Database, schema: str, data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[ApiServer]:  # fmt: skip
    monkeypatch.setenv("LEDGER_GRAPHIQL", "1")
    with running_api(ledger, database, schema) as api:
        yield api


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    if executable is None:
        pytest.fail(
            "chromium is not installed: the GraphiQL tests need a real browser"
            " (apt-get install -y chromium)",
            pytrace=False,
        )
    with Browser(executable) as b:
        yield b


def page_url(api: ApiServer, query: str, token: str) -> str:
    headers = json.dumps({"Authorization": f"Bearer {token}"})
    return f"{api.url}?{urlencode({'q': query, 'headers': headers})}"


def run_in_graphiql(browser: Browser, url: str, expect: str) -> str:
    browser.requests.clear()
    browser.failed.clear()
    browser.navigate(url)
    browser.wait_for("!!document.querySelector('.graphiql-execute-button')")
    # The schema arrives by introspection before the editor runs anything.
    browser.wait_for("!!document.querySelector('.graphiql-doc-explorer-search, "
                     ".graphiql-sidebar button')")  # fmt: skip
    browser.evaluate(RUN)
    found = f"(() => {{ const t = {RESPONSE}; return t.includes({json.dumps(expect)}) && t; }})()"
    text: str = browser.wait_for(found)
    return text


def assert_same_origin(browser: Browser, api: ApiServer) -> None:
    origin = urlsplit(api.url).netloc
    outside = [u for u in browser.requests
               if not u.startswith("data:") and urlsplit(u).netloc != origin]  # fmt: skip
    assert not outside, f"GraphiQL asked for something from elsewhere: {outside}"


def test_the_page_and_its_assets_are_served_from_the_package(graphiql_server: ApiServer) -> None:
    page = httpx.get(graphiql_server.url, headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "unpkg" not in page.text and "https://" not in page.text
    versions = json.loads((GRAPHIQL_DIR / "versions.json").read_text())
    base = graphiql_server.url.rsplit("/", 1)[0] + "/graphiql/"
    for name in [*versions["files"], "graphiql-app.js", "page.css", "THIRD_PARTY_LICENSES.txt"]:
        asset = httpx.get(base + name)
        assert asset.status_code == 200, name
        assert asset.content == (GRAPHIQL_DIR / name).read_bytes(), name
    assert versions["packages"]["graphiql"] in page.text or "graphiql.min.js" in page.text


def test_graphiql_runs_a_query_and_a_subscription_offline(
    graphiql_server: ApiServer, browser: Browser, ledger: Ledger
) -> None:
    started = time.monotonic()
    api = graphiql_server
    World(ledger).account(handle="offline")
    api.settle()
    token = api.token("regulator")
    query = "{ providers { code accounts } }"
    assert api.gql(query, None)["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"

    # The browser cannot reach any host but 127.0.0.1: the CDN would fail to load.
    assert browser.evaluate(
        "fetch('https://unpkg.com/react@18.3.1/umd/react.production.min.js')"
        ".then(() => 'loaded', e => 'failed: ' + e)"
    ).startswith("failed")
    browser.errors.clear()

    # A query over HTTP: the token goes in the Authorization header.
    text = run_in_graphiql(browser, page_url(api, query, token), '"acme"')
    assert json.loads(text)["data"]["providers"][0] == {"code": "acme", "accounts": 1}
    png = browser.screenshot(SCREENSHOT)
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    assert_same_origin(browser, api)
    assert not browser.errors, browser.errors

    # A subscription over the WebSocket: the token reaches connection_init.
    subscription = 'subscription { events(after: "0") { type cursor } }'
    text = run_in_graphiql(browser, page_url(api, subscription, token), '"cursor"')
    assert json.loads(text)["data"]["events"]["type"]
    assert any(u.startswith("ws://") for u in browser.requests), browser.requests
    init = next(m for m in map(json.loads, browser.ws_sent) if m["type"] == "connection_init")
    bearer = f"Bearer {token}"
    assert init["payload"] == {"Authorization": bearer, "headers": {"Authorization": bearer}}
    assert_same_origin(browser, api)
    assert not browser.errors, browser.errors
    assert time.monotonic() - started < 60
