"""What the commands share: the parser that refuses in one line, opening the ledger,
the progress bar, and the argument types more than one group uses."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn
from uuid import UUID

from tqdm import tqdm

from api.cli.errors import USAGE, open_vault
from ledger import Database, Ledger


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # "argument --port: expected ..." -> "--port: expected ..."
        fail(message.removeprefix("argument "))
        raise SystemExit(USAGE)


# What a group's `register` adds its commands to.
Subparsers = argparse._SubParsersAction

_bar: Any = None  # the progress bar on stderr, if one is drawn


def fail(message: str) -> None:
    """The one line on stderr a failure leaves."""
    end_progress()
    print(f"ledger: {message}", file=sys.stderr)


@contextmanager
def open_database_and_ledger(**kwargs: Any) -> Iterator[tuple[Database, Ledger]]:
    vault = open_vault()
    with Database() as database:
        ledger = Ledger.open(database, vault=vault, **kwargs)
        try:
            yield database, ledger
        finally:
            ledger.close()


@contextmanager
def open_ledger(**kwargs: Any) -> Iterator[Ledger]:
    with open_database_and_ledger(**kwargs) as (_, ledger):
        yield ledger


def schema_of(ledger: Ledger) -> str:
    """The database schema the ledger's tables are in."""
    return ledger.store.datastore.schema or "public"


def progress_bar(done: int, total: int, what: str) -> None:
    """Draw progress with rate and ETA on a terminal (tqdm); nothing when stderr is a
    file or a pipe, where frames would fill a log."""
    global _bar
    if _bar is None:
        _bar = tqdm(total=total or None, unit=f" {what}", file=sys.stderr, disable=None,
                    dynamic_ncols=True, leave=True)  # fmt: skip
    if total and _bar.total != total:
        _bar.total = total
    _bar.update(done - _bar.n)


def end_progress() -> None:
    global _bar
    if _bar is not None:
        _bar.close()
        _bar = None


def _number(check: Callable[[int], bool], what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = -1
        if not check(value):
            raise argparse.ArgumentTypeError(f"expected {what}, not {text!r}")
        return value

    return parse


positive = _number(lambda n: n > 0, "a positive whole number")
non_negative = _number(lambda n: n >= 0, "a whole number from 0")
port_number = _number(lambda n: 0 < n < 65536, "a port from 1 to 65535")


def uuid_value(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a UUID") from None
