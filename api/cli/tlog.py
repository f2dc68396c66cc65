"""The log in the C2SP formats, for auditors: export, audit."""

from __future__ import annotations

import argparse
import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from api.cli.common import (
    Parser,
    Subparsers,
    end_progress,
    non_negative,
    open_database_and_ledger,
    progress_bar,
    uuid_value,
)
from api.cli.errors import SCHEMA_NAME, USAGE, CliError
from ledger.database import data_dir


def register(sub: Subparsers[Parser]) -> None:
    export = sub.add_parser(
        "export", help="write the log's /log/ tree (checkpoints, tiles, entries, keys) into DIR"
    )
    export.add_argument("directory", metavar="DIR")
    export.set_defaults(run=cmd_export)

    audit = sub.add_parser(
        "audit",
        help="check a /log/ tree (URL or export folder) and replay it into a database of your own",
    )
    audit.add_argument("source", metavar="SOURCE", help="an export folder, or a /log/ URL")
    audit.add_argument(
        "--key", action="append", help="the log's verifier key (default: SOURCE/keys)"
    )
    audit.add_argument(
        "--checkpoint",
        action="append",
        type=_checkpoint_file,
        default=[],
        metavar="FILE",
        help="a checkpoint kept apart (a witness's, say)",
    )
    audit.add_argument(
        "--witness",
        action="append",
        default=[],
        metavar="VKEY=URL",
        help="a witness to ask what it cosigned (its verifier key and URL)",
    )
    audit.add_argument("--token", help="an auditor's token, to read entries over HTTP")
    audit.add_argument("--database", help="postgresql:// URL (default: an embedded server)")
    audit.add_argument("--schema", type=_schema, default="ledger_audit")
    audit.add_argument("--no-replay", action="store_true", help="check the hashes only")
    audit.add_argument("--account", type=uuid_value, help="print this account's state")
    audit.add_argument("--at", type=non_negative, help="as of this log position")
    audit.set_defaults(run=cmd_audit, offline=True)


def cmd_export(args: argparse.Namespace) -> int:
    from ledger.signing import Signer
    from projections.sealer import Sealer
    from projections.tlog_export import MissingEvents, NothingSigned, export

    keys = [Signer.from_environment(data_dir()).checkpoint_signer().vkey]
    started = time.monotonic()
    with open_database_and_ledger() as (database, ledger):
        Sealer(ledger, database).setup()  # the tables, if nothing was sealed yet
        with database.connect(ledger.store.datastore.schema) as conn:
            try:
                done = export(
                    conn,
                    ledger.store.events_table,
                    Path(args.directory),
                    keys,
                    progress=lambda n, total: progress_bar(n, total, "events"),
                )
            except (NothingSigned, MissingEvents) as e:
                raise CliError(str(e)) from None
            except OSError as e:
                raise CliError(f"{args.directory}: {e.strerror or e}") from None
    end_progress()
    for path in done.too_large:
        print(
            f"not written: {path} holds an event of more than 65,535 bytes (older than the"
            " limit); an audit reports it missing"
        )
    print(
        f"export: size {done.size}, {done.checkpoints} checkpoints, {done.written} files"
        f" written, {done.kept} full tiles kept, in {time.monotonic() - started:.1f} s"
    )
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from ledger.tlog.audit import audit
    from ledger.tlog.note import NoteError, verifier_from_key

    fetch = _fetcher(args.source, args.token)
    keys = args.key or _keys_of_source(fetch)
    try:
        verifiers = [verifier_from_key(k) for k in keys]
    except NoteError as e:
        raise CliError(f"--key: {e}", USAGE) from None
    if args.at is not None and args.account is None:
        raise CliError("--at needs --account", USAGE)
    kept = [*args.checkpoint, *_witnessed(args.witness, verifiers)]
    started = time.monotonic()
    with _replay(args) as replay:
        report = audit(
            fetch,
            verifiers,
            kept,
            on_entries=replay,
            progress=lambda n, total: progress_bar(n, total, "entries"),
        )
        end_progress()
        seconds = time.monotonic() - started
        rate = report.entries / max(seconds, 1e-9)
        print(
            f"audit: size {report.size}, {report.checkpoints} checkpoints, {report.tiles}"
            f" tiles, {report.entries} entries checked in {seconds:.1f} s ({rate:.0f}/s)"
        )
        for finding in report.findings:
            print(f"FAILED {finding}")
        if not report.ok:
            return 1
        print(
            "OK: every entry, tile and checkpoint agrees; every checkpoint is consistent"
            " with every one before it"
        )
        if replay is not None:
            _rebuild_and_show(replay, args)
    return 0


def _rebuild_and_show(replay: object, args: argparse.Namespace) -> None:
    from ledger.views import account_view
    from projections.replay import Replay

    assert isinstance(replay, Replay)
    events = replay.finish()
    print(
        f"replayed {replay.events} events into schema {args.schema}; read models rebuilt"
        f" from {events} events"
    )
    if args.account is not None:
        ledger = replay.ledger
        account = ledger.account_at(args.account, position=args.at)
        at = account.modified_on
        print(json.dumps(account_view(account, ledger.ruleset, at), indent=2, ensure_ascii=False))


class _replay:
    """The auditor's own database and ledger, or None with --no-replay."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.database: object = None
        self.ledger: object = None

    def __enter__(self) -> Callable[..., None] | None:
        from ledger import Database, Ledger
        from ledger.vault import Vault
        from projections.replay import Replay

        if self.args.no_replay:
            return None
        directory = data_dir() / "audit"
        database = (
            Database(self.args.database, directory) if self.args.database else _embedded(directory)
        )
        self.database = database.start()
        database.drop_schema(self.args.schema)
        database.create_schema(self.args.schema)
        # Identities stay sealed: the auditor holds none of the ledger's keys.
        ledger = Ledger.open(database, self.args.schema, vault=Vault(secrets.token_bytes(32)))
        self.ledger = ledger
        return Replay(ledger, database, self.args.schema)

    def __exit__(self, *exc: object) -> None:
        from ledger import Database, Ledger

        if isinstance(self.ledger, Ledger):
            self.ledger.close()
        if isinstance(self.database, Database):
            self.database.stop()


def _embedded(directory: Path) -> object:
    from ledger import Database

    database = Database(None, directory)
    database.url, database.embedded = None, True  # not LEDGER_DATABASE_URL: the auditor's own
    return database


def _fetcher(source: str, token: str | None) -> Callable[[str], bytes]:
    from ledger.tlog.audit import Missing

    if source.startswith(("http://", "https://")):
        base = source if source.endswith("/") else source + "/"
        headers = {"Authorization": f"Bearer {token}"} if token else {}

        def get(path: str) -> bytes:
            request = urllib.request.Request(base + path, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    body: bytes = response.read()
                    return body
            except urllib.error.HTTPError as e:
                if e.code == 404:
                    raise Missing(path) from None
                raise CliError(f"{base}{path}: HTTP {e.code} {e.reason}") from None
            except urllib.error.URLError as e:
                raise CliError(f"{base}{path}: {e.reason}") from None

        return get
    root = Path(source)
    if not (root / "checkpoint").is_file():
        raise CliError(f"{source}: no checkpoint there (an export folder, or a /log/ URL)", USAGE)

    def read(path: str) -> bytes:
        try:
            return (root / path).read_bytes()
        except FileNotFoundError:
            raise Missing(path) from None

    return read


def _keys_of_source(fetch: Callable[[str], bytes]) -> list[str]:
    from ledger.tlog.audit import Missing

    try:
        keys = fetch("keys").decode().split()
    except Missing:
        raise CliError("no --key given and the source publishes no keys", USAGE) from None
    print(
        "note: checking against the key the source publishes; pass --key with one you"
        " obtained elsewhere to rule out a log that signs its own forgery"
    )
    return keys


def _witnessed(witnesses: list[str], log_keys: list[Any]) -> list[tuple[str, str]]:
    """Each witness's last cosigned checkpoint of the log, its cosignature checked."""
    from ledger.tlog.checkpoint import CheckpointError, open_checkpoint
    from ledger.tlog.forks import fetch_witness_checkpoint
    from ledger.tlog.note import NoteError, verifier_from_key

    kept = []
    for item in witnesses:
        vkey, _, url = item.partition("=")
        try:
            witness = verifier_from_key(vkey)
        except NoteError as e:
            raise CliError(f"--witness {item}: {e}", USAGE) from None
        for log in log_keys:
            try:
                note = fetch_witness_checkpoint(url, log.name)
            except (OSError, ValueError) as e:
                raise CliError(f"--witness {item}: {e}") from None
            if note is None:
                print(f"note: witness {witness.name} has cosigned nothing of {log.name}")
                continue
            try:
                open_checkpoint(note, [witness])
            except (NoteError, CheckpointError) as e:
                raise CliError(
                    f"witness {witness.name}: its checkpoint does not verify: {e}"
                ) from None
            kept.append((f"the checkpoint witness {witness.name} cosigned", note))
    return kept


def _checkpoint_file(path: str) -> tuple[str, str]:
    try:
        return path, Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise argparse.ArgumentTypeError(f"{path}: {getattr(e, 'strerror', None) or e}") from None


def _schema(text: str) -> str:
    if not SCHEMA_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a schema name ([a-z_][a-z0-9_]*)")
    return text
