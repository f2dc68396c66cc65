"""A witness anyone can run (c2sp.org/tlog-witness): witness [keygen | vkey | serve |
evidence]. It needs no ledger database: its state is a SQLite file of its own.

A config file (TOML) gives what the options give; an option wins over the file::

    key_file = "witness.key"          # from `ledger witness keygen`; relative to this file
    database = "witness.sqlite3"      # the witness's own state
    listen = "127.0.0.1:7380"

    [[log]]                           # one table per log followed
    key = "ledger.example.org/cac-2014+1a2b3c4d+AU..."   # the log's verifier key
    # origin = "..."                  # default: the key's name
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from api.cli.common import Parser, Subparsers
from api.cli.errors import USAGE, CliError
from ledger.tlog.note import (
    ALG_COSIGNATURE_V1,
    CosignatureSigner,
    NoteError,
    generate_signer_key,
    signer_from_key,
    verifier_from_key,
)
from ledger.tlog.witness import LogKeys, Witness

log = logging.getLogger("ledger.witness")

DEFAULT_LISTEN = "127.0.0.1:7380"


def register(sub: Subparsers[Parser]) -> None:
    witness = sub.add_parser(
        "witness", help="run a witness that cosigns consistent checkpoints (no database)"
    )
    actions = witness.add_subparsers(dest="action", required=True, parser_class=Parser)

    keygen = actions.add_parser("keygen", help="write a new witness key; print its vkey")
    keygen.add_argument("name", help="the witness's name, e.g. witness.example.org/w1")
    keygen.add_argument("--key-file", required=True, type=Path, help="where to write it")

    vkey = actions.add_parser("vkey", help="print the verifier key of a witness key")
    _common(vkey)

    serve = actions.add_parser("serve", help="serve add-checkpoint until stopped")
    _common(serve)
    serve.add_argument("--database", type=Path, help="the SQLite state file")
    serve.add_argument("--listen", help=f"host:port (default {DEFAULT_LISTEN})")
    serve.add_argument(
        "--log",
        action="append",
        default=[],
        metavar="VKEY",
        help="a log's verifier key to follow (repeatable; origin = the key's name)",
    )

    evidence = actions.add_parser(
        "evidence", help="print the checkpoints refused as inconsistent (JSON lines)"
    )
    _common(evidence)
    evidence.add_argument("--database", type=Path, help="the SQLite state file")
    witness.set_defaults(run=cmd_witness, offline=True)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="a TOML config file")
    parser.add_argument("--key-file", type=Path, help="the witness key (from keygen)")


@dataclass
class Settings:
    key_file: Path | None = None
    database: Path | None = None
    listen: str = DEFAULT_LISTEN
    logs: list[LogKeys] = field(default_factory=list)


def cmd_witness(args: argparse.Namespace) -> int:
    if args.action == "keygen":
        return keygen(args.name, args.key_file)
    settings = settings_from(args)
    cosigner = load_key(settings.key_file)
    if args.action == "vkey":
        print(cosigner.vkey)
        return 0
    if settings.database is None:
        raise CliError("witness: no state file: give --database or database in --config", USAGE)
    if args.action == "evidence":
        witness = Witness(cosigner, settings.logs, settings.database)
        for item in witness.evidence():
            print(json.dumps(item.as_dict()))
        witness.close()
        return 0
    return serve(cosigner, settings)


def keygen(name: str, key_file: Path) -> int:
    try:
        signer = generate_signer_key(name, ALG_COSIGNATURE_V1)
    except NoteError as e:
        raise CliError(f"witness keygen: {e}", USAGE) from None
    key_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(signer.skey + "\n")
    print(signer.vkey)
    return 0


def load_key(path: Path | None) -> CosignatureSigner:
    if path is None:
        raise CliError("witness: no key: give --key-file or key_file in --config", USAGE)
    try:
        signer = signer_from_key(path.read_text().strip())
    except NoteError as e:
        raise CliError(f"{path}: not a witness key ({e})", USAGE) from None
    if not isinstance(signer, CosignatureSigner):
        raise CliError(f"{path}: a witness key is of type cosignature/v1 (0x04)", USAGE)
    return signer


def settings_from(args: argparse.Namespace) -> Settings:
    settings = Settings()
    if args.config is not None:
        _read_config(args.config, settings)
    if args.key_file is not None:
        settings.key_file = args.key_file
    if getattr(args, "database", None) is not None:
        settings.database = args.database
    if getattr(args, "listen", None):
        settings.listen = args.listen
    for vkey in getattr(args, "log", []):
        settings.logs.append(_log_keys(vkey, None, "--log"))
    origins = [entry.origin for entry in settings.logs]
    if len(set(origins)) != len(origins):
        raise CliError("witness: a log origin is configured twice", USAGE)
    return settings


def _read_config(path: Path, settings: Settings) -> None:
    try:
        config = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise CliError(f"{path}: not TOML: {e}", USAGE) from None
    known = {"key_file", "database", "listen", "log"}
    if unknown := sorted(set(config) - known):
        raise CliError(f"{path}: unknown setting {unknown[0]!r}", USAGE)
    here = path.parent
    if "key_file" in config:
        settings.key_file = here / str(config["key_file"])
    if "database" in config:
        settings.database = here / str(config["database"])
    if "listen" in config:
        settings.listen = str(config["listen"])
    entries: Any = config.get("log", [])
    if not isinstance(entries, list):
        raise CliError(f"{path}: log must be a list of tables ([[log]])", USAGE)
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise CliError(f'{path}: each [[log]] needs key = "<verifier key>"', USAGE)
        origin = entry.get("origin")
        settings.logs.append(_log_keys(entry["key"], origin, str(path)))


def _log_keys(vkey: str, origin: object, where: str) -> LogKeys:
    try:
        verifier = verifier_from_key(vkey)
    except NoteError as e:
        raise CliError(f"{where}: {vkey!r} is not a verifier key ({e})", USAGE) from None
    if origin is not None and not _one_line(origin):
        raise CliError(f"{where}: origin must be one line of text, without control characters",
                       USAGE)  # fmt: skip
    return LogKeys(origin or verifier.name, (verifier,))


def _one_line(text: object) -> bool:
    if not isinstance(text, str) or not text or any(c < " " or c == "\x7f" for c in text):
        return False
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def serve(cosigner: CosignatureSigner, settings: Settings) -> int:
    import uvicorn

    from api.witness import witness_app

    if not settings.logs:
        raise CliError("witness: no log to follow: give --log or [[log]] in --config", USAGE)
    host, _, port = settings.listen.rpartition(":")
    if not host or not port.isdigit():
        raise CliError(f"--listen {settings.listen!r}: expected host:port", USAGE)
    assert settings.database is not None
    witness = Witness(cosigner, settings.logs, settings.database)
    logging.getLogger("ledger").setLevel(logging.INFO)
    log.info("witness %s (%s) following %s on %s", cosigner.name, cosigner.vkey,
             ", ".join(entry.origin for entry in settings.logs), settings.listen)  # fmt: skip
    try:
        uvicorn.run(witness_app(witness), host=host, port=int(port), log_level="warning")
    finally:
        witness.close()
    return 0
