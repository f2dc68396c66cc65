"""The keys: the tree-head signing key, the key-encryption key (KEK) and the data keys
it wraps: keys [status | rotate-kek | new-kek | shred-erased]."""

from __future__ import annotations

import argparse
import os

from api.cli.common import Parser, Subparsers, end_progress, open_ledger, positive, progress_bar
from api.cli.errors import CliError
from ledger.database import data_dir


def register(sub: Subparsers[Parser]) -> None:
    keys = sub.add_parser(
        "keys",
        help="print the tree-head signing public key (hex) and the checkpoints' verifier key"
        " (origin+hex8+base64), or manage the KEK",
    )
    kek = keys.add_subparsers(dest="action", parser_class=Parser)
    kek.add_parser("status", help="data keys by key-encryption key")
    rotate = kek.add_parser("rotate-kek", help="rewrap every data key under the current KEK")
    rotate.add_argument("--batch", type=positive, default=500)
    kek.add_parser("new-kek", help="retire cipher.key and write a new one")
    kek.add_parser(
        "shred-erased", help="delete the keys of erased identities (after restoring keys)"
    )
    keys.set_defaults(run=cmd_keys)


def cmd_keys(args: argparse.Namespace) -> int:
    from ledger.signing import Signer

    if args.action is None:
        signer = Signer.from_environment(data_dir())
        print(signer.public_key_hex)
        print(signer.checkpoint_signer().vkey)
        return 0
    if args.action == "new-kek":
        return new_kek()
    with open_ledger() as ledger:
        if args.action == "shred-erased":
            print(f"deleted {ledger.shred_erased()} data keys of erased identities")
        if args.action == "rotate-kek":
            done = ledger.rotate_kek(args.batch, progress=lambda n: progress_bar(n, 0, "keys"))
            end_progress()
            print(f"rewrapped {done} keys under key-encryption key {ledger.vault.kek_id}")
        print(f"current key-encryption key: {ledger.vault.kek_id}")
        for what, webhooks in (("data keys", False), ("webhook keys", True)):
            for kek_id, n in ledger.store.keys_by_kek(webhooks=webhooks).items():
                retired = "" if kek_id == ledger.vault.kek_id else " (retired)"
                print(f"  {kek_id}: {n} {what}{retired}")
    return 0


def new_kek() -> int:
    """Retire cipher.key into retired-keys/ and write a new one (file configuration)."""
    import base64
    import secrets

    from ledger.vault import KEY_FILE, RETIRED_DIR, kek_id_of

    if os.environ.get("LEDGER_CIPHER_KEY"):
        raise CliError(
            "LEDGER_CIPHER_KEY is set: put the new key there and the old one in"
            " LEDGER_CIPHER_KEYS_RETIRED, restart, then run `ledger keys rotate-kek`"
        )
    current = data_dir() / KEY_FILE
    if not current.exists():
        raise CliError(f"{current}: no key-encryption key to retire")
    old = base64.b64decode(current.read_text().strip())
    retired = data_dir() / RETIRED_DIR
    retired.mkdir(mode=0o700, exist_ok=True)
    kept = retired / f"{kek_id_of(old)}.key"
    kept.write_text(current.read_text())
    kept.chmod(0o600)
    fresh = current.with_suffix(".new")
    fresh.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
    fresh.chmod(0o600)
    fresh.replace(current)  # atomic: a crash leaves the old key or the new one
    print(f"retired {kek_id_of(old)} into {kept}; restart the ledger's processes, then run"
          " `ledger keys rotate-kek`, then delete the retired key")
    return 0
