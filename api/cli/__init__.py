"""The `ledger` command line (`ledger = "api.cli:main"`).

Each group of commands is a module that adds its own subparsers with `register(sub)`,
so a new command touches one of them:

- data: demo, events, account, summary, import
- read_models: init, project, rebuild, status
- serve: serve
- relay: relay (JetStream), relay creds
- tokens: token
- keys: keys
- integrity: seal, verify, verify-proof
- tlog: export, audit
- schema: schema
- witness: witness (a witness anyone runs; no database)
- webhooks: deliver, webhooks
- statements: statements-of-reasons

common holds what they share (the parser, opening the ledger, the progress bar,
argument types); errors, how a refusal is worded.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from api import logs
from api.cli import (
    data,
    integrity,
    keys,
    read_models,
    relay,
    schema,
    serve,
    statements,
    tlog,
    tokens,
    webhooks,
    witness,
)
from api.cli.common import Parser, fail
from api.cli.errors import check_environment, describe

GROUPS = (
    data, read_models, serve, relay, tokens, keys, integrity, tlog, schema, witness, webhooks,
    statements,
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="ledger", description="The compliance ledger.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; any failure leaves one line on stderr (and a traceback only with
    LEDGER_DEBUG=1). Exit status: 2 a bad argument or setting, 1 a failure."""
    args = build_parser().parse_args(argv)
    logs.configure(args.verbose)  # text, or JSON lines with LEDGER_LOG_FORMAT=json
    try:
        if not getattr(args, "offline", False):
            check_environment()
        code: int = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:
        # The reader went away (`ledger events | head`): leave quietly, as the Python
        # docs recommend, so the flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a process killed by SIGPIPE
    except KeyboardInterrupt:
        fail("interrupted")
        return 130
    except Exception as e:
        if os.environ.get("LEDGER_DEBUG") == "1":
            traceback.print_exc()
        message, status = describe(e)
        fail(message)
        return status
