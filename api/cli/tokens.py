"""API tokens: token create, token revoke."""

from __future__ import annotations

import argparse
import sys

from api.auth import create_token, revoke_token
from api.cli.common import Parser, Subparsers, open_database_and_ledger, schema_of, uuid_value
from api.cli.errors import CliError
from ledger.errors import ProviderNotFound


def register(sub: Subparsers[Parser]) -> None:
    token = sub.add_parser("token", help="create or revoke API tokens")
    actions = token.add_subparsers(dest="action", required=True, parser_class=Parser)
    create = actions.add_parser("create", help="print a new token (once)")
    create.add_argument("--role", required=True, choices=["regulator", "auditor", "provider"])
    create.add_argument("--provider", type=uuid_value, help="the provider id, for role provider")
    create.add_argument("--name", default="unnamed")
    revoke = actions.add_parser("revoke", help="revoke a token (the token or its id)")
    revoke.add_argument("token")
    token.set_defaults(run=cmd_token)


def cmd_token(args: argparse.Namespace) -> int:
    with open_database_and_ledger() as (database, ledger), database.connect() as conn:
        if args.action == "create":
            if args.provider and args.role == "provider":
                try:
                    ledger.get_provider(args.provider)
                except ProviderNotFound:
                    raise CliError(f"--provider {args.provider}: no such provider") from None
            token_id, token = create_token(
                conn, schema_of(ledger), args.role, args.provider, args.name
            )
            print(f"token {token_id} ({args.role}): {token}")
            print("it is shown once; only its hash is kept", file=sys.stderr)
            return 0
        if revoke_token(conn, schema_of(ledger), args.token):
            print("revoked")
            return 0
        raise CliError("no such live token")
