"""statements-of-reasons: every sanction as a statement of reasons in the EU DSA
Transparency Database's schema, one JSON object a line (projections/statements.py)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, date, datetime

from api.cli.common import Parser, Subparsers, open_database_and_ledger, schema_of
from api.cli.errors import USAGE, CliError
from projections.statements import statements


def register(sub: Subparsers[Parser]) -> None:
    cmd = sub.add_parser(
        "statements-of-reasons",
        help="print each sanction as a DSA statement of reasons (JSON lines, no personal data)",
    )
    cmd.add_argument(
        "--provider", type=_code, metavar="CODE", help="only this provider's sanctions"
    )
    cmd.add_argument(
        "--since", type=_since, metavar="DATE", help="only sanctions imposed on or after (UTC)"
    )
    cmd.set_defaults(run=cmd_statements)


def _code(text: str) -> str:
    if any(ch == "\x00" or "\ud800" <= ch <= "\udfff" for ch in text) or len(text) > 200:
        raise argparse.ArgumentTypeError("not a provider code")
    return text


def _since(text: str) -> datetime:
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, not {text!r}") from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def cmd_statements(args: argparse.Namespace) -> int:
    with open_database_and_ledger() as (database, ledger):
        conn = database.connect(schema_of(ledger), autocommit=True)
        with conn:
            if args.provider is not None and not conn.execute(
                "SELECT 1 FROM providers WHERE code = %s", (args.provider,)
            ).fetchone():
                raise CliError(f"no provider with the code {args.provider!r}", USAGE)
            for statement in statements(conn, ledger.ruleset, args.provider, args.since):
                print(json.dumps(statement, ensure_ascii=False))
    return 0
