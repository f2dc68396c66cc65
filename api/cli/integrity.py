"""The log's integrity: seal, verify, verify-proof."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from api.cli.common import (
    Parser,
    Subparsers,
    end_progress,
    open_database_and_ledger,
    progress_bar,
    schema_of,
)
from api.cli.errors import USAGE, CliError
from ledger.database import data_dir
from ledger.proofcheck import head_message


def register(sub: Subparsers[Parser]) -> None:
    seal = sub.add_parser("seal", help="seal the log up to its head and print the signed head")
    seal.set_defaults(run=cmd_seal)

    verify = sub.add_parser("verify", help="check every event against the signed tree heads")
    verify.add_argument(
        "--from-head", action="append", type=_signed_head, metavar="FILE", help="a signed head"
    )
    verify.add_argument(
        "--public-key", type=_public_key, help="hex; default: this ledger's signing key"
    )
    verify.set_defaults(run=cmd_verify)

    proof = sub.add_parser("verify-proof", help="check a proof (JSON) offline, no database")
    proof.add_argument("file")
    proof.add_argument("--public-key", type=_public_key, required=True)
    proof.set_defaults(run=cmd_verify_proof, offline=True)


def cmd_seal(args: argparse.Namespace) -> int:
    from projections.integrity import head
    from projections.sealer import Sealer

    with open_database_and_ledger() as (database, ledger):
        sealer = Sealer(ledger, database)
        try:
            sealer.setup()
            sealer.sign_now()
            print(json.dumps(head(sealer.conn)))
        finally:
            sealer.close()
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from ledger.signing import Signer
    from projections.integrity import all_heads, stored_events, stored_leaves, verify_log

    key = args.public_key or Signer.from_environment(data_dir()).public_key_hex
    started = time.monotonic()
    with (
        open_database_and_ledger() as (database, ledger),
        database.connect(schema_of(ledger)) as conn,
    ):
        head = ledger.head()
        try:
            heads = all_heads(conn)
        except psycopg.errors.UndefinedTable:
            raise CliError("nothing is sealed yet: run `ledger seal` or `ledger project`") from None
        report = verify_log(
            stored_events(conn, ledger.store.events_table),
            stored_leaves(conn),
            heads + (args.from_head or []),
            key,
            progress=lambda n: progress_bar(n, head, "events"),
        )
    elapsed = time.monotonic() - started
    end_progress()
    rate = report.events / max(elapsed, 1e-9)
    print(
        f"verify: {report.events} events, {report.heads_checked} signed heads checked,"
        f" {report.unsealed} not yet sealed, in {elapsed:.1f} s ({rate:.0f} events/s)"
    )
    for finding in report.findings:
        print(f"FAILED at {finding}")
    if report.ok:
        print("OK: every sealed event matches every signed head")
    return 0 if report.ok else 1


def cmd_verify_proof(args: argparse.Namespace) -> int:
    from ledger import proofcheck

    try:
        read_json(args.file)
    except ValueError as e:
        raise CliError(str(e), USAGE) from None
    return proofcheck.main([args.file, "--public-key", args.public_key])


def _public_key(text: str) -> str:
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an Ed25519 public key (64 hex digits)"
        ) from None
    return text


def read_json(path: str) -> Any:
    """A JSON file's value; a `ValueError` naming the file when it cannot be had."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"{path}: {e.strerror or e}") from None
    except ValueError as e:  # not UTF-8, not JSON
        raise ValueError(f"{path}: not JSON ({e})") from None


HEAD_FIELDS = ("tree_size", "root_hash", "timestamp", "signature")


def _signed_head(path: str) -> dict[str, Any]:
    """A signed tree head from a file, as `ledger seal` prints it."""
    try:
        head = read_json(path)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    missing = [f for f in HEAD_FIELDS if not isinstance(head, dict) or f not in head]
    if missing:
        raise argparse.ArgumentTypeError(
            f"{path}: not a signed tree head: it lacks {', '.join(missing)}"
        )
    try:
        head_message(head["tree_size"], head["root_hash"], head["timestamp"])
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{path}: not a signed tree head: {e}") from None
    return {f: head[f] for f in HEAD_FIELDS}
