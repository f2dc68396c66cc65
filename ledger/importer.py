"""Bulk import: commands as JSON lines, recorded in large transactions.

One command a line:

    {"command": "PublishPost", "idempotency_key": "p-1",
     "actor": {"id": "acme-ops", "role": "provider", "provider_id": "<uuid>"},
     "args": {"account_id": "<uuid>", "ref": "p-1", "origin": "original", ...}}

Lines go to the ledger `batch` at a time, each batch one transaction. A batch that the
ledger refuses is tried again line by line, so the refused line is named and the others
recorded. Every line carries its idempotency key, so running an import again after a
crash or Ctrl-C records nothing twice: what was recorded before replays.

With `bulk` (`ledger import --bulk`, for a file the operator trusts), a batch is validated
against state read once for the whole batch and written with COPY (`ledger.bulk_import`):
the same refusals, with the same codes, for the same lines. A batch that a concurrent
writer got in the way of is recorded the ordinary way instead.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import psycopg
from eventsourcing.persistence import IntegrityError, PersistenceError

from ledger import bulk_import, errors
from ledger import commands as c
from ledger.actors import Actor
from ledger.application import Ledger

COMMANDS: dict[str, type[c.Command]] = {cmd.__name__: cmd for cmd in c.ALL_COMMANDS}
Chunk = list[tuple[int, c.Command]]  # (line number, command)
Progress = Callable[[int], None]


class Status(IntEnum):
    """The exit status of `ledger import`."""

    RECORDED = 0  # every line is in the ledger, now or from an earlier run
    REFUSED = 1  # the ledger refused a line (its code and message are reported)
    MALFORMED = 2  # a line is not a command: bad JSON, an unknown command, a missing field
    UNAVAILABLE = 3  # the database went away; run the import again


@dataclass
class Problem:
    line: int
    code: str
    message: str


@dataclass
class Report:
    recorded: int = 0
    replayed: int = 0
    problems: list[Problem] = field(default_factory=list)
    status: Status = Status.RECORDED


class MalformedLine(Exception):
    pass


def to_line(command: c.Command) -> str:
    """The JSON line for a command (the inverse of `parse`)."""
    args = {
        f.name: _plain(getattr(command, f.name))
        for f in dataclasses.fields(command)
        if f.name not in ("actor", "idempotency_key")
    }
    return json.dumps({"command": command.type_name, "idempotency_key": command.idempotency_key,
                       "actor": command.actor.as_dict(), "args": args})  # fmt: skip


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def parse(text: str) -> c.Command:
    try:
        line = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise MalformedLine(f"not JSON ({e})") from None
    if not isinstance(line, dict):
        raise MalformedLine("a line is a JSON object with command, idempotency_key, actor, args")
    missing = [k for k in ("command", "idempotency_key", "actor", "args") if k not in line]
    if missing:
        raise MalformedLine(f"missing {', '.join(missing)}")
    command = COMMANDS.get(line["command"]) if isinstance(line["command"], str) else None
    if command is None:
        raise MalformedLine(f"unknown command {str(line['command'])[:60]!r}")
    if not isinstance(line["actor"], dict) or not isinstance(line["args"], dict):
        raise MalformedLine("actor and args are JSON objects")
    try:
        actor = Actor.from_dict(line["actor"])
        return command(actor=actor, idempotency_key=line["idempotency_key"], **line["args"])
    except TypeError as e:  # a missing or unknown argument
        raise MalformedLine(f"{line['command']}: {str(e).split(') ', 1)[-1]}") from None
    except (KeyError, ValueError) as e:
        raise MalformedLine(f"actor: {e}") from None
    except errors.LedgerError as e:
        raise MalformedLine(f"{line['command']}: {e.message}") from None


def run_import(
    ledger: Ledger,
    lines: Iterable[str],
    *,
    batch: int = 500,
    skip: bool = False,
    progress: Callable[[int], None] = lambda n: None,
    bulk: bool = False,
) -> Report:
    """Record every line; stop at the first problem unless `skip`."""
    report = Report()
    chunks = _chunks(_numbered(lines, report, skip), batch)
    if bulk:
        _run_bulk(ledger, chunks, report, skip, progress)
    else:
        _run(ledger, chunks, report, skip, progress)
    if report.problems and report.status is Status.RECORDED:
        report.status = Status.REFUSED
    return report


def _run(
    ledger: Ledger, chunks: Iterator[Chunk], report: Report, skip: bool, progress: Progress
) -> None:
    for chunk in chunks:
        try:
            _record(ledger, chunk, report, skip)
        except errors.StorageUnavailable as e:
            report.problems.append(Problem(chunk[0][0], e.code, e.message))
            report.status = Status.UNAVAILABLE
            return
        progress(len(chunk))
        if report.problems and not skip:
            break


def _run_bulk(
    ledger: Ledger, chunks: Iterator[Chunk], report: Report, skip: bool, progress: Progress
) -> None:
    """Validate a batch while the one before it is written (a thread: the server's COPY
    and this process's Python overlap); count a batch once its write is done."""
    session = bulk_import.Session(ledger)
    pending: tuple[Chunk, bulk_import.Validated, Future[None]] | None = None
    with ThreadPoolExecutor(1, thread_name_prefix="ledger-import-write") as writer:
        for chunk in chunks:
            commands = [cmd for _, cmd in chunk]
            try:
                validated = session.validate(commands, stop=not skip)
                if pending is not None:
                    if not _settle(ledger, *pending, report, skip, progress):
                        session.reset()  # the batch before was not written in bulk
                        if report.problems and not skip:
                            return
                        validated = session.validate(commands, stop=not skip)
                    pending = None
            except errors.StorageUnavailable as e:
                _unavailable(report, chunk, e)
                return
            except (psycopg.OperationalError, psycopg.InterfaceError, PersistenceError):
                _unavailable(report, chunk, _STORE_DOWN)
                return
            pending = (chunk, validated, writer.submit(bulk_import.write, ledger, validated))
            if not skip and any(isinstance(o, errors.LedgerError) for o in validated.outcomes):
                break
            if report.problems and not skip:  # a malformed line ended the chunks
                break
        if pending is not None:
            try:
                _settle(ledger, *pending, report, skip, progress)
            except errors.StorageUnavailable as e:
                _unavailable(report, pending[0], e)


_STORE_DOWN = errors.StorageUnavailable("the event store is unavailable; retry")


def _unavailable(report: Report, chunk: Chunk, e: errors.LedgerError) -> None:
    report.problems.append(Problem(chunk[0][0], e.code, e.message))
    report.status = Status.UNAVAILABLE


def _settle(
    ledger: Ledger,
    chunk: Chunk,
    validated: bulk_import.Validated,
    written: Future[None],
    report: Report,
    skip: bool,
    progress: Progress,
) -> bool:
    """Wait for a batch's write and count it; False when it was recorded the command
    path's way instead."""
    try:
        written.result()
    except (psycopg.IntegrityError, IntegrityError):
        # Another writer changed what the batch read (an aggregate's version, a key):
        # nothing was written; the command path records it against the state as it is.
        _record(ledger, chunk, report, skip)
        progress(len(chunk))
        return False
    except (psycopg.OperationalError, psycopg.InterfaceError, PersistenceError):
        raise _STORE_DOWN from None
    for (number, _), outcome in zip(chunk, validated.outcomes, strict=False):
        if isinstance(outcome, errors.LedgerError):
            report.problems.append(Problem(number, outcome.code, outcome.message))
        else:
            _count(report, [outcome])
    progress(len(chunk))
    return True


def _numbered(lines: Iterable[str], report: Report, skip: bool) -> Iterator[tuple[int, c.Command]]:
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            yield number, parse(text)
        except MalformedLine as e:
            report.problems.append(Problem(number, "MALFORMED", str(e)))
            report.status = Status.MALFORMED
            if not skip:
                return


def _chunks(
    lines: Iterator[tuple[int, c.Command]], size: int
) -> Iterator[list[tuple[int, c.Command]]]:
    chunk: list[tuple[int, c.Command]] = []
    for item in lines:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _record(ledger: Ledger, chunk: list[tuple[int, c.Command]], report: Report, skip: bool) -> None:
    try:
        results = ledger.submit([cmd for _, cmd in chunk])
    except errors.StorageUnavailable:
        raise
    except errors.LedgerError:
        results = None
    if results is not None:
        _count(report, results)
        return
    for number, cmd in chunk:  # one line at a time: name the refused one, keep the rest
        try:
            _count(report, [ledger.execute(cmd)])
        except errors.StorageUnavailable:
            raise
        except errors.LedgerError as e:
            report.problems.append(Problem(number, e.code, e.message))
            if not skip:
                return


def _count(report: Report, results: list[Any]) -> None:
    for r in results:
        if r.replayed:
            report.replayed += 1
        else:
            report.recorded += 1
