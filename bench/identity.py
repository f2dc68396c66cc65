"""What a key per person costs: sealing and opening an identity, a disclosure, and
`ledger demo`, beside baselines measured in the same run.

- seal + open: the envelope (a fresh data key, the identity under it, the key under the
  KEK) against the former single-key seal (the identity under the KEK);
- `ledger demo --accounts N` with this tree against the commit before per-person keys
  (checked out in a temporary worktree), alternating, on fresh schemas;
- disclosures per second through `Ledger.execute`.

    python -m bench.identity [--accounts 300] [--rounds 3] [--baseline <commit>]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from uuid import UUID

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench.common import fixed_key, log, server_name
from ledger import Database, Ledger
from ledger import commands as c
from ledger.vault import Vault
from tests.world import REGULATOR, World

ROOT = Path(__file__).resolve().parent.parent
BEFORE = "8c98840"  # the last commit with one key for the whole ledger


def crypto(n: int, rounds: int) -> dict[str, float]:
    """Median microseconds per identity: seal then open."""
    kek = fixed_key("bench-identity")
    vault, single = Vault(kek), AESGCM(kek)
    people = [(UUID(int=i + 1), {"name": f"Person {i}", "id_number": f"{i:018d}"})
              for i in range(n)]  # fmt: skip

    def envelope() -> None:
        for account, identity in people:
            sealed, key = vault.seal(account, identity)
            vault.open(account, sealed, key)

    def one_key() -> None:  # the former scheme: AES-GCM under the one key, bound to the account
        for account, identity in people:
            nonce = secrets.token_bytes(12)
            body = single.encrypt(nonce, json.dumps(identity, sort_keys=True).encode(),
                                  account.bytes)  # fmt: skip
            json.loads(single.decrypt(nonce, body, account.bytes))

    timings: dict[str, list[float]] = {"envelope": [], "one key": []}
    for _ in range(rounds):
        for name, run in (("envelope", envelope), ("one key", one_key)):
            started = time.perf_counter()
            run()
            timings[name].append((time.perf_counter() - started) / n * 1e6)
    return {name: statistics.median(t) for name, t in timings.items()}


def demo_seconds(tree: Path, db: Database, accounts: int) -> float:
    schema = f"bench_id_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "LEDGER_DATABASE_URL": db.conninfo, "LEDGER_SCHEMA": schema,
           "LEDGER_CIPHER_KEY": base64.b64encode(fixed_key("bench-identity")).decode(),
           "PYTHONPATH": str(tree)}  # fmt: skip
    with tempfile.TemporaryDirectory() as data:
        env["LEDGER_DATA_DIR"] = data
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "api.cli", "demo", "--accounts", str(accounts)],
                       cwd=tree, env=env, check=True, capture_output=True)  # fmt: skip
        elapsed = time.perf_counter() - started
    db.drop_schema(schema)
    return elapsed


def disclosures_per_second(db: Database, n: int) -> float:
    schema = f"bench_id_{uuid.uuid4().hex[:8]}"
    db.create_schema(schema)
    ledger = Ledger(db.eventsourcing_env(schema), vault=Vault(fixed_key("bench-identity")))
    world = World(ledger)
    accounts = [world.account() for _ in range(n)]
    started = time.perf_counter()
    for i, account in enumerate(accounts):
        ledger.execute(c.DiscloseIdentity(actor=REGULATOR, idempotency_key=f"d{i}",
                                          account_id=account, basis="bench",
                                          case_reference="B-1"))  # fmt: skip
    elapsed = time.perf_counter() - started
    ledger.close()
    db.drop_schema(schema)
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", default=BEFORE)
    args = parser.parse_args()

    us = crypto(2000, 5)
    ratio = us["envelope"] / us["one key"]
    print(f"seal + open, median µs per identity: envelope {us['envelope']:.1f},"
          f" one key (baseline) {us['one key']:.1f}, ratio {ratio:.2f}x")  # fmt: skip

    with Database() as db, tempfile.TemporaryDirectory() as worktree:
        log(f"database: {server_name(db)}; baseline {args.baseline} in {worktree}")
        subprocess.run(["git", "worktree", "add", "--detach", worktree, args.baseline],
                       cwd=ROOT, check=True, capture_output=True)  # fmt: skip
        try:
            times: dict[str, list[float]] = {"per-person keys": [], "one key (baseline)": []}
            for n in range(args.rounds):
                for name, tree in (("per-person keys", ROOT),
                                   ("one key (baseline)", Path(worktree))):  # fmt: skip
                    times[name].append(demo_seconds(tree, db, args.accounts))
                    log(f"round {n + 1}: {name}: {times[name][-1]:.2f} s")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", worktree], cwd=ROOT,
                           capture_output=True)  # fmt: skip
        after, before = (statistics.median(t) for t in times.values())
        print(f"ledger demo --accounts {args.accounts}, median of {args.rounds}:"
              f" per-person keys {after:.2f} s, one key (baseline) {before:.2f} s,"
              f" ratio {after / before:.3f}x ({(after / before - 1) * 100:+.1f}%)")  # fmt: skip
        print(f"disclosures through Ledger.execute: {disclosures_per_second(db, 200):.0f}/s")


if __name__ == "__main__":
    main()
