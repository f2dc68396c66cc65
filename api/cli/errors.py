"""How the `ledger` command line refuses: one line that names the culprit (the option, the
file or the environment variable), never a traceback.

`CliError` is a refusal already worded for the terminal. `check_environment` refuses bad
configuration before a command runs. `describe` words any other exception in one line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ledger.database import DatabaseError, data_dir, one_line
from ledger.errors import LedgerError
from ledger.ruleset import RulesetError
from ledger.tlog.witness_client import parse_witnesses
from ledger.vault import KEY_FILE, Vault

USAGE = 2  # the exit status of a bad argument or setting; 1 is a failure while running


class CliError(Exception):
    """A refusal worded for the terminal, with the exit status to leave with."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# Refused rather than quoted: a schema name goes into SQL, type names and log lines.
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _integer(low: int) -> Callable[[str], bool]:
    return lambda text: text.strip().isdecimal() and int(text) >= low


def _positive_number(text: str) -> bool:
    try:
        return float(text) > 0
    except ValueError:
        return False


def _seconds_from_zero(text: str) -> bool:
    try:
        return 0 <= float(text) < float("inf")
    except ValueError:
        return False


def _thresholds(text: str) -> bool:
    parts = text.split(",")
    return len(parts) == 3 and all(_integer(1)(part) for part in parts)


# Numeric settings, read with int() or float() where they are used.
NUMBERS: dict[str, tuple[Callable[[str], bool], str]] = {
    "LEDGER_POOL_SIZE": (_integer(1), "a positive whole number"),
    "LEDGER_PROJECTION_PAGE": (_integer(1), "a positive whole number"),
    "LEDGER_SUBSCRIBER_BUFFER": (_integer(1), "a positive whole number"),
    "LEDGER_READY_MAX_LAG": (_integer(0), "a whole number from 0"),
    "LEDGER_WS_INIT_TIMEOUT": (_positive_number, "a positive number of seconds"),
    "LEDGER_OVERLOAD_WAIT": (_seconds_from_zero, "a number of seconds from 0"),
    "LEDGER_OVERLOAD_QUEUE": (_integer(0), "a whole number from 0"),
    "LEDGER_GC_THRESHOLDS": (_thresholds, "three positive whole numbers, as 700,10,10"),
    "LEDGER_WITNESS_TIMEOUT": (_positive_number, "a positive number of seconds"),
}


def check_environment() -> None:
    """Refuse a bad `LEDGER_*` setting, naming it, before anything reads it."""
    schema = os.environ.get("LEDGER_SCHEMA")
    if schema and (not SCHEMA_NAME.fullmatch(schema) or schema.startswith("pg_")):
        raise CliError(
            f"LEDGER_SCHEMA={schema!r}: a schema name is up to 63 of a-z, 0-9 and _,"
            " not starting with a digit or pg_",
            USAGE,
        )
    for name, (valid, what) in NUMBERS.items():
        value = os.environ.get(name)
        if value is not None and not valid(value):
            raise CliError(f"{name}={value!r}: expected {what}", USAGE)
    witnesses = os.environ.get("LEDGER_WITNESSES")
    if witnesses:
        try:
            parse_witnesses(witnesses)
        except ValueError as e:
            raise CliError(f"LEDGER_WITNESSES: {e}", USAGE) from None
    directory = data_dir()
    existing = next(p for p in (directory, *directory.parents) if p.exists())
    if not existing.is_dir():
        what = "" if existing == directory else f"{existing} is "
        raise CliError(f"LEDGER_DATA_DIR={directory}: {what}not a directory", USAGE)


def open_vault() -> Vault:
    """The identity vault, its key from `LEDGER_CIPHER_KEY` or the data dir's key file."""
    try:
        return Vault.from_environment(data_dir())
    except ValueError:
        if os.environ.get("LEDGER_CIPHER_KEY"):
            raise CliError("LEDGER_CIPHER_KEY: expected the base64 of 32 bytes", USAGE) from None
        path = data_dir() / KEY_FILE
        raise CliError(f"{path}: not a cipher key (the base64 of 32 bytes)") from None


def describe(exc: Exception) -> tuple[str, int]:
    """One line for the terminal, and the exit status."""
    if isinstance(exc, CliError):
        return _flat(exc.message), exc.status
    if isinstance(exc, LedgerError):
        about = f": {exc.details['id']}" if "id" in exc.details else ""
        return _flat(f"{exc.code}: {exc.message}{about}"), 1
    if isinstance(exc, DatabaseError):
        return _database(exc), 1
    if isinstance(exc, psycopg.Error):
        return f"database error: {one_line(exc)}", 1
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return _flat(f"{where}{exc.strerror or exc}"), 1
    if isinstance(exc, ValueError | RulesetError):
        return _flat(str(exc)), 1
    return _flat(f"unexpected {type(exc).__name__}: {exc}"), 1


def _database(exc: DatabaseError) -> str:
    cause = exc.__context__
    url = os.environ.get("LEDGER_DATABASE_URL")
    if not url:  # the embedded server, in the data dir
        return _flat(f"{exc} (LEDGER_DATA_DIR={data_dir()})")
    if not isinstance(cause, psycopg.Error):
        return _flat(str(exc))
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return f"LEDGER_DATABASE_URL: not a valid URL: {_reason(cause)}"
    where = f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}"
    return f"cannot reach the database at {where} (LEDGER_DATABASE_URL): {_reason(cause)}"


def _reason(exc: psycopg.Error) -> str:
    """`connection to server at "h", port 1 failed: Connection refused` -> `connection refused`."""
    text = one_line(exc).rsplit("failed: ", 1)[-1].removeprefix("FATAL:").strip()
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def _flat(text: str) -> str:
    return " ".join(text.split()) or "failed"
