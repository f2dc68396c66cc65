"""The log's data: demo, events, account, summary, import."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path

from api.cli.common import (
    Parser,
    Subparsers,
    end_progress,
    non_negative,
    open_ledger,
    positive,
    progress_bar,
    uuid_value,
)
from api.cli.errors import USAGE, CliError
from ledger.domain import EVENT_TYPES
from ledger.views import account_view


def register(sub: Subparsers[Parser]) -> None:
    demo = sub.add_parser("demo", help="load a deterministic demo data set")
    demo.add_argument("--accounts", type=positive, default=2000)
    demo.add_argument("--force", action="store_true", help="run even if the log has events")
    demo.set_defaults(run=cmd_demo)

    events = sub.add_parser("events", help="print the log as JSON lines")
    events.add_argument("--after", type=non_negative, default=0, help="log position")
    events.add_argument("--limit", type=non_negative, default=None)
    events.add_argument(
        "--type", action="append", type=_event_type, help="e.g. Account.SanctionImposed"
    )
    events.add_argument("--originator", type=uuid_value, help="only events of this aggregate id")
    events.set_defaults(run=cmd_events)

    account = sub.add_parser("account", help="print an account's state as JSON")
    account.add_argument("id", type=uuid_value, metavar="ACCOUNT_ID")
    account.add_argument("--as-of", type=_as_of, help="a log position or an ISO timestamp")
    account.set_defaults(run=cmd_account)

    summary = sub.add_parser("summary", help="count the log's events by type")
    summary.set_defaults(run=cmd_summary)

    imp = sub.add_parser(
        "import",
        help="record commands from a file of JSON lines (exit 0 all recorded, 1 refused,"
        " 2 malformed, 3 database unavailable)",
    )
    imp.add_argument("file")
    imp.add_argument(
        "--batch", type=positive, help="commands per transaction (default 500; --bulk 5000)"
    )
    imp.add_argument(
        "--bulk",
        action="store_true",
        help="a trusted file: validate each batch against state read once, write with COPY",
    )
    imp.add_argument("--on-error", choices=["stop", "skip"], default="stop")
    imp.set_defaults(run=cmd_import)


def cmd_demo(args: argparse.Namespace) -> int:
    from ledger.demo import DemoClock, run_demo

    with open_ledger(clock=DemoClock(args.accounts, seed=7)) as ledger:
        head = ledger.head()
        if head and not args.force:
            print(f"demo data already loaded ({head} events); --force runs it again")
            return 0
        started = time.monotonic()

        def progress(done: int, total: int) -> None:
            progress_bar(done, total, "accounts")

        commands = run_demo(ledger.submit, ledger.ruleset, args.accounts, progress)
        elapsed = time.monotonic() - started
        end_progress()
        events = ledger.head() - head
        print(
            f"demo: {commands} commands, {events} events in {elapsed:.1f} s "
            f"({commands / elapsed:.0f} commands/s)"
        )
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    with open_ledger() as ledger:
        for event in ledger.read_log(
            args.after, types=args.type or (), limit=args.limit, originator_id=args.originator
        ):
            print(json.dumps(event.as_dict(), ensure_ascii=False))
    return 0


def _event_type(text: str) -> str:
    if text not in EVENT_TYPES:
        raise argparse.ArgumentTypeError(f"no event type {text!r}; known: {', '.join(EVENT_TYPES)}")
    return text


def _as_of(text: str) -> int | datetime:
    if text.isdigit():
        return int(text)
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a log position or an ISO timestamp, not {text!r}"
        ) from None
    if at.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a time zone, e.g. +00:00")
    return at


def cmd_account(args: argparse.Namespace) -> int:
    with open_ledger() as ledger:
        as_of = args.as_of
        if as_of is None:
            account = ledger.get_account(args.id)
            now = ledger.clock()
        elif isinstance(as_of, int):
            account = ledger.account_at(args.id, position=as_of)
            now = account.modified_on
        else:
            account = ledger.account_at(args.id, at=as_of)
            now = as_of
        print(json.dumps(account_view(account, ledger.ruleset, now), indent=2, ensure_ascii=False))
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    with open_ledger() as ledger:
        counts = ledger.store.count_by_type()
        print(f"log head: position {ledger.head()}, {sum(counts.values())} events")
        for event_type, n in counts.items():
            print(f"  {event_type:<32} {n:>8}")
        if not counts:
            print("  (empty: run `ledger demo`)")
    return 0


BATCH, BULK_BATCH = 500, 5000


def cmd_import(args: argparse.Namespace) -> int:
    from ledger.importer import run_import

    path = Path(args.file)
    try:
        with path.open(encoding="utf-8", errors="surrogateescape") as f:
            total = sum(1 for line in f if line.strip())
    except OSError as e:
        raise CliError(f"{args.file}: {e.strerror}", USAGE) from None
    with open_ledger() as ledger, path.open(encoding="utf-8", errors="surrogateescape") as f:
        done = 0

        def progress(n: int) -> None:
            nonlocal done
            done += n
            progress_bar(done, total, "commands")

        batch = args.batch or (BULK_BATCH if args.bulk else BATCH)
        report = run_import(ledger, f, batch=batch, skip=args.on_error == "skip",
                            progress=progress, bulk=args.bulk)  # fmt: skip
        end_progress()
    for p in report.problems:
        print(f"{args.file}:{p.line}: {p.code}: {p.message}", file=sys.stderr)
    print(f"recorded {report.recorded}, already recorded {report.replayed},"
          f" refused or malformed {len(report.problems)}")  # fmt: skip
    return int(report.status)
