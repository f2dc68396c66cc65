import json
from ledger import Ledger
from ledger.application import Ledger as L
from tests.api_server import ApiServer
from tests.world import World
from tests.test_tlog_entries import posts, MUTATION


def test_measure(server: ApiServer, ledger: Ledger, monkeypatch) -> None:
    monkeypatch.setattr(L, "_check_entries", lambda self, events: None)  # as main is today
    world = World(ledger)
    account = world.account()
    evidence = posts(world, account, 26_800)
    token = server.token("regulator")
    reason = "\U0001f600" * 2000
    n = len(evidence)
    while True:
        payload = {"accountId": str(account), "level": "warning", "ruleIds": ["art.9"],
                   "reason": reason, "evidencePostIds": evidence[:n]}
        body = json.dumps({"query": MUTATION, "variables": {"input": payload, "key": f"k{n}"}})
        if len(body.encode()) <= (1 << 20) - 200:
            break
        n -= 50
    head = ledger.head()
    import httpx
    r = httpx.post(server.url, content=body, headers={"Authorization": f"Bearer {token}",
                   "Content-Type": "application/json"}, timeout=900).json()
    print("RESULT ids", n, "body", len(body), r["data"]["imposeSanction"]["__typename"])
    (stored,) = ledger.store.select_notifications(start=head + 1, limit=1)
    print("STATE BYTES", len(stored.state))
