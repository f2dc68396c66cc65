"""The ledger at national scale: query latency, rebuild, sealing, verification, proofs and
storage at growing sizes (issue 15).

Data sets. A seed is the demo (`ledger demo`, `--seed-accounts`, 2,000 accounts: about
70,000 events) loaded once through `Ledger.submit` into `bench_scale_seed_<n>` and kept.
A data set of N accounts is the seed's log copied N / seed times into `bench_scale_<N>`
with COPY: every id but the providers' made new for each copy (uuid5 of the copy and the
old id, in every form the JSON holds it), handles suffixed, copies interleaved event by
event so the log stays in time order. The aggregates' own rules made the seed, so each
copy is a history the ledger could have recorded (its idempotency rows and snapshots are
not copied: nothing here reads them).

For each size, in order:

- rebuild: `projections.rebuild.rebuild` of every projection from zero (`ledger rebuild`);
- seal: `Sealer.catch_up` of the whole log into the Merkle tables, then one signed head;
- verify: `verify_log` of every event against its leaf and the head (`ledger verify`);
- storage: bytes per event of every table and index of the schema (`pg_relation_size`);
- queries: `ledger serve --no-projector` with the response cache off
  (LEDGER_RESPONSE_CACHE=0) and a regulator token; every query root field with realistic
  filters and pages (the ids drawn from the data set), `--calls` calls each, one at a
  time over one kept-alive HTTP connection, after a tenth as many warm-up calls; p50 and
  p99 in ms. Every answer is checked for errors.

`--quick`: sizes 2,000 and 20,000 (a few minutes). `--sizes 20000,200000,1000000` for the
full run (1M accounts is about 35M events and 60 GB: mind the disk). `--keep` keeps the
data sets (the seed is always kept).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import random
import re
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from api.auth import create_token
from bench.api import VAULT_KEY, start_ledger
from bench.common import load_demo, log, quantile, server_name, server_version
from ledger import Database, Ledger
from ledger.signing import Signer
from ledger.vault import Vault
from projections.integrity import all_heads, stored_events, stored_leaves, verify_log
from projections.rebuild import rebuild
from projections.registry import resolve
from projections.sealer import Sealer

SEED = 2015
NAMESPACE = uuid.UUID("6f1c9d2e-2a51-4c55-9a7e-3c1b2d4e5f60")
_HEX = re.compile(rb"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])")
_CANONICAL = re.compile(
    rb"(?<![0-9a-f-])[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)
_HANDLE = re.compile(rb'"handle":"([^"]*)"')


# ----- the data sets -----------------------------------------------------------------------


@dataclass
class Copier:
    """A seed event's state and originator as in copy `k`."""

    keep: set[str]  # hex of the ids every copy shares (the providers')
    cache: dict[tuple[int, str], str] = field(default_factory=dict)

    def hex_of(self, k: int, old: str) -> str:
        if k == 0 or old in self.keep:
            return old
        found = self.cache.get((k, old))
        if found is None:
            found = uuid.uuid5(NAMESPACE, f"{k}:{old}").hex
            self.cache[(k, old)] = found
        return found

    def state(self, k: int, state: bytes) -> bytes:
        if k == 0:
            return state
        state = _HEX.sub(lambda m: self.hex_of(k, m.group().decode()).encode(), state)
        state = _CANONICAL.sub(
            lambda m: str(uuid.UUID(self.hex_of(k, m.group().decode().replace("-", "")))).encode(),
            state,
        )
        return _HANDLE.sub(lambda m: b'"handle":"' + m.group(1) + b"-%d" % k + b'"', state)

    def originator(self, k: int, originator: uuid.UUID) -> uuid.UUID:
        return uuid.UUID(self.hex_of(k, originator.hex))


def seed_events(db: Database, seed_schema: str) -> list[tuple[Any, ...]]:
    with db.connect(seed_schema) as conn:
        return conn.execute(
            "SELECT originator_id, originator_version, topic, state FROM ledger_events"
            " ORDER BY notification_id"
        ).fetchall()


def provider_hexes(rows: list[tuple[Any, ...]]) -> set[str]:
    return {r[0].hex for r in rows if str(r[2]).startswith("Provider.")}


def build(db: Database, schema: str, seed: list[tuple[Any, ...]], copies: int) -> int:
    """The seed's log `copies` times over in `schema`; returns the events written."""
    db.drop_schema(schema)
    Ledger.open(db, schema, vault=Vault(VAULT_KEY)).close()  # the event store's tables
    copier = Copier(provider_hexes(seed))
    position = 0
    with db.connect(schema) as conn, conn.cursor() as cur:
        query = (
            "COPY ledger_events (notification_id, originator_id, originator_version, topic,"
            " state) FROM STDIN (FORMAT BINARY)"
        )
        with cur.copy(query) as copy:
            copy.set_types(["int8", "uuid", "int8", "text", "bytea"])
            for originator, version, topic, state in seed:
                if str(topic).startswith("Provider."):
                    ks: range = range(1)
                else:
                    ks = range(copies)
                for k in ks:
                    position += 1
                    copy.write_row(
                        (position, copier.originator(k, originator), version, topic,
                         copier.state(k, bytes(state)))
                    )  # fmt: skip
        cur.execute(
            "SELECT setval(pg_get_serial_sequence('ledger_events', 'notification_id'), %s)",
            (position,),
        )
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE ledger_events")
    return position


# ----- the measurements --------------------------------------------------------------------


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    out = run()
    return time.perf_counter() - started, out


def storage(db: Database, schema: str) -> list[tuple[str, str, int]]:
    """(table, index or '', bytes) for every table and index in `schema`, largest first."""
    with db.connect() as conn:
        rows = conn.execute(
            "SELECT t.relname, '', pg_relation_size(t.oid) + coalesce(pg_relation_size("
            "t.reltoastrelid), 0) FROM pg_class t JOIN pg_namespace n ON n.oid = t.relnamespace"
            " WHERE n.nspname = %s AND t.relkind = 'r'"
            " UNION ALL SELECT t.relname, i.relname, pg_relation_size(i.oid) FROM pg_index x"
            " JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid"
            " JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = %s"
            " ORDER BY 1, 2",
            (schema, schema),
        ).fetchall()
    return [(str(a), str(b), int(c)) for a, b, c in rows]


class Client:
    """GraphQL over one kept-alive HTTP connection."""

    def __init__(self, url: str, token: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}

    def query(self, text: str, variables: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps({"query": text, "variables": variables})
        self.conn.request("POST", "/graphql", body, self.headers)
        response = self.conn.getresponse()
        answer: dict[str, Any] = json.loads(response.read())
        if response.status != 200 or answer.get("errors"):
            raise RuntimeError(f"{text[:60]}...: {response.status} {answer.get('errors')}")
        return answer["data"]  # type: ignore[no-any-return]


ACCOUNT = "id providerId handle kind category verified status newsScopes postCount lastPosition"
PAGE = "pageInfo { hasNextPage endCursor }"
FIGURES = (
    "id code name accounts accountsByKind { key count } accountsByStatus { key count }"
    " shareVerified sharePublicReviewed sharePublicFiled sanctionsByLevel { key count }"
    " sanctionsByIssuerRole { key count } openReports resolutionSecondsP50 resolutionSecondsP95"
)
QUERIES: dict[str, str] = {
    "account": "query($id: ID!) { account(id: $id) {"
    f" {ACCOUNT} activeSanctions {{ level }} }} }}",
    "accounts": f"query {{ accounts(first: 50) {{ edges {{ node {{ {ACCOUNT} }} }} {PAGE} }} }}",
    "accounts page 3": "query($after: String) { accounts(first: 50, after: $after)"
    f" {{ edges {{ node {{ {ACCOUNT} }} }} {PAGE} }} }}",
    "accounts provider+category+verified": "query($p: ID!) { accounts(first: 50, filter:"
    ' {providerId: $p, category: "news_agency", verified: true})'
    f" {{ edges {{ node {{ {ACCOUNT} }} }} {PAGE} }} }}",
    "accounts status SUSPENDED": "query { accounts(first: 50, filter: {status: UPDATES_SUSPENDED})"
    f" {{ edges {{ node {{ {ACCOUNT} }} }} {PAGE} }} }}",
    "accounts provider+status CLOSED": "query($p: ID!) { accounts(first: 50, filter:"
    f" {{providerId: $p, status: CLOSED}}) {{ edges {{ node {{ {ACCOUNT} }} }} {PAGE} }} }}",
    "accounts provider+status ACTIVE": "query($p: ID!) { accounts(first: 50, filter:"
    f" {{providerId: $p, status: ACTIVE}}) {{ edges {{ node {{ {ACCOUNT} }} }} {PAGE} }} }}",
    "accountAsOf": "query($id: ID!, $head: Position!) { accountAsOf(id: $id, position: $head)"
    " { id version status } }",
    "post": "query($id: ID!) { post(id: $id) { id accountId views reposts reportsOpen removedAt"
    " account { handle status } } }",
    "sanctions provider+level": "query($p: ID!) { sanctions(first: 50, filter: {providerId: $p,"
    ' level: "closed"}) { edges { node { id level imposedAt appealState } } ' + PAGE + " } }",
    "sanctions account": "query($a: ID!) { sanctions(filter: {accountId: $a}) { edges { node {"
    " id level imposedAt expiresAt liftedAt } } " + PAGE + " } }",
    "history": "query($a: ID!) { history(accountId: $a, first: 50) { edges { node { position"
    " type at summary } } " + PAGE + " } }",
    "flaggedPosts provider+metric": "query($p: ID!) { flaggedPosts(first: 50, filter:"
    ' {providerId: $p, metric: "views", removed: false}) { edges { node { postId value'
    " crossedAt } } " + PAGE + " } }",
    "provider (figures)": f"query($p: ID!) {{ provider(id: $p) {{ {FIGURES} }} }}",
    "providers (figures)": f"query {{ providers {{ {FIGURES} }} }}",
    "events": "query($after: Position) { events(after: $after, first: 50) { edges { node {"
    " position type at payload } } " + PAGE + " } }",
    "ledgerStatus": "query { ledgerStatus { head projections { name position lagEvents"
    " failures } } }",
    "treeHead": "query { treeHead { treeSize rootHash signature } }",
    "inclusionProof": "query($pos: Position!) { inclusionProof(position: $pos) { index proof } }",
    "consistencyProof": "query($a: Position!, $b: Position!) { consistencyProof(fromSize: $a,"
    " toSize: $b) { proof } }",
    "identityDisclosures": "query { identityDisclosures(first: 20) { edges { node { position"
    " basis } } " + PAGE + " } }",
}


@dataclass
class Picks:
    accounts: list[str]
    posts: list[str]
    providers: list[str]
    head: int
    sizes: list[int]  # signed tree sizes
    after: str  # the cursor of the third page of accounts


def picks(db: Database, schema: str, client: Client, rng: random.Random) -> Picks:
    with db.connect(schema) as conn:

        def ids(query: str) -> list[str]:
            return [str(r[0]) for r in conn.execute(query)]

        accounts = ids("SELECT account_id FROM accounts ORDER BY random() LIMIT 500")
        posts = ids("SELECT post_id FROM posts ORDER BY random() LIMIT 500")
        providers = ids("SELECT provider_id FROM providers")
        sizes = [int(s) for s in ids("SELECT tree_size FROM tree_heads ORDER BY 1")]
        head = int(ids("SELECT max(notification_id) FROM ledger_events")[0])
    after = None
    for _ in range(2):
        page = client.query(QUERIES["accounts page 3"], {"after": after})
        after = page["accounts"]["pageInfo"]["endCursor"]
    rng.shuffle(accounts)
    rng.shuffle(posts)
    return Picks(accounts, posts, providers, head, sizes, str(after))


def variables(name: str, p: Picks, rng: random.Random) -> dict[str, Any]:
    return {
        "id": rng.choice(p.posts) if name == "post" else rng.choice(p.accounts),
        "a": rng.choice(p.accounts),
        "p": rng.choice(p.providers),
        "after": p.after if name == "accounts page 3" else str(rng.randrange(1, p.head)),
        "pos": str(rng.randrange(1, p.sizes[-1] + 1)),
        "head": str(p.head),
    } | (
        {"a": str(min(s := rng.sample(p.sizes, 2))), "b": str(max(s))}
        if name == "consistencyProof"
        else {}
    )


def latencies(client: Client, p: Picks, calls: int, rng: random.Random) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for name, text in QUERIES.items():
        if name == "consistencyProof" and len(p.sizes) < 2:
            continue
        wanted = set(re.findall(r"\$(\w+)", text))
        for _ in range(max(3, calls // 10)):  # warm-up
            client.query(text, {k: v for k, v in variables(name, p, rng).items() if k in wanted})
        seconds = []
        for _ in range(calls):
            values = {k: v for k, v in variables(name, p, rng).items() if k in wanted}
            started = time.perf_counter()
            client.query(text, values)
            seconds.append(time.perf_counter() - started)
        out[name] = seconds
    return out


@dataclass
class Result:
    accounts: int
    events: int
    build: float
    rebuild: float
    seal: float
    verify: float
    storage: list[tuple[str, str, int]]
    queries: dict[str, list[float]]


def measure(
    args: argparse.Namespace, db: Database, seed: list[tuple[Any, ...]], seed_accounts: int, n: int
) -> Result:
    schema = f"bench_scale_{n}"
    copies = max(1, round(n / seed_accounts))
    log(f"size {n}: copying the seed {copies} times into {schema}")
    build_s, events = timed(lambda: build(db, schema, seed, copies))
    log(f"size {n}: {events} events in {build_s:.0f} s; rebuilding the projections")
    with contextlib.ExitStack() as stack:
        ledger = Ledger.open(db, schema, vault=Vault(VAULT_KEY))
        stack.callback(ledger.close)
        rebuild_s, _ = timed(lambda: rebuild(ledger, db, resolve(), schema=schema))
        log(f"size {n}: rebuilt in {rebuild_s:.0f} s ({events / rebuild_s:.0f} events/s); sealing")
        signer = Signer(Ed25519PrivateKey.generate())
        sealer = Sealer(ledger, db, schema, signer=signer)
        stack.callback(sealer.close)
        sealer.setup()
        seal_s, _ = timed(lambda: (sealer.catch_up(), sealer.sign_now()))
        with db.connect(schema) as conn:
            heads = all_heads(conn)
            verify_s, report = timed(
                lambda: verify_log(
                    stored_events(conn, ledger.store.events_table),
                    stored_leaves(conn),
                    heads,
                    signer.public_key_hex,
                )
            )
        assert not report.findings, report.findings[:3]
        log(f"size {n}: sealed in {seal_s:.0f} s, verified in {verify_s:.0f} s; queries")
        queries = query_latencies(args, db, schema)
    return Result(n, events, build_s, rebuild_s, seal_s, verify_s, storage(db, schema), queries)


def query_latencies(args: argparse.Namespace, db: Database, schema: str) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        server = start_ledger(db, schema, Path(tmp), projector=False, cache=False)
        try:
            with db.connect(schema) as conn:
                _, token = create_token(conn, schema, "regulator", None, "bench.scale")  # type: ignore[arg-type]
                conn.commit()
            client = Client(server.url, token)
            rng = random.Random(SEED)
            return latencies(client, picks(db, schema, client, rng), args.calls, rng)
        finally:
            server.stop()


# ----- the report --------------------------------------------------------------------------


def ms(values: list[float], q: int) -> str:
    return f"{quantile(values, q) * 1000:.1f}"


def report(db: Database, results: list[Result], args: argparse.Namespace) -> None:
    print(f"Scale benchmark - PostgreSQL {server_version(db)} {server_name(db)}")
    print(f"response cache off; {args.calls} calls a query, one at a time\n")
    sizes = "".join(f"{r.accounts:>20}" for r in results)
    print(f"{'accounts':<42}{sizes}")
    print(f"{'events':<42}" + "".join(f"{r.events:>20}" for r in results))
    for label, get in (
        ("copy in (events/s)", lambda r: r.events / r.build),
        ("rebuild, all projections (events/s)", lambda r: r.events / r.rebuild),
        ("seal (events/s)", lambda r: r.events / r.seal),
        ("verify (events/s)", lambda r: r.events / r.verify),
    ):
        print(f"{label:<42}" + "".join(f"{get(r):>20.0f}" for r in results))
    print(f"\n{'query: p50 / p99 ms':<42}{sizes}")
    for name in QUERIES:
        cells = "".join(
            f"{ms(r.queries[name], 50) + ' / ' + ms(r.queries[name], 99):>20}" for r in results
        )
        print(f"{name:<42}{cells}")
    last = results[-1]
    print(f"\nstorage at {last.accounts} accounts, bytes per event ({last.events} events)")
    total = 0
    for table, index, size in sorted(last.storage, key=lambda s: -s[2]):
        total += size
        if size >= 8192 * 4:
            print(f"  {table + (' / ' + index if index else ''):<58}{size / last.events:>10.1f}")
    print(f"  {'total':<58}{total / last.events:>10.1f}")
    if len(results) > 1:
        first = results[-2]
        print(f"\np99 growth {first.accounts} -> {last.accounts} accounts (goal: at most 1.5x)")
        for name in QUERIES.keys() & first.queries.keys() & last.queries.keys():
            a, b = quantile(first.queries[name], 99), quantile(last.queries[name], 99)
            print(f"  {name:<40}{b / a:>8.2f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sizes", default="20000,200000", help="accounts, comma-separated")
    parser.add_argument("--seed-accounts", type=int, default=2000, help="demo accounts copied")
    parser.add_argument("--calls", type=int, default=200, help="calls a query (default 200)")
    parser.add_argument("--keep", action="store_true", help="keep the data sets")
    parser.add_argument("--quick", action="store_true", help="sizes 2000,20000; 50 calls")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.calls = "2000,20000", 50
    sizes = sorted(int(s) for s in args.sizes.split(","))
    if min(sizes) < args.seed_accounts or args.calls < 2:
        parser.error("every size must be at least --seed-accounts; --calls at least 2")
    results = []
    with Database() as db:
        seed_schema = f"bench_scale_seed_{args.seed_accounts}"
        load_demo(db, seed_schema, args.seed_accounts, VAULT_KEY)
        seed = seed_events(db, seed_schema)
        for n in sizes:
            try:
                results.append(measure(args, db, seed, args.seed_accounts, n))
            finally:
                if not args.keep:
                    db.drop_schema(f"bench_scale_{n}")
        report(db, results, args)


if __name__ == "__main__":
    main()
