"""The API's schema: schema (needs no database)."""

from __future__ import annotations

import argparse

from api.cli.common import Parser, Subparsers


def register(sub: Subparsers[Parser]) -> None:
    sdl = sub.add_parser("schema", help="print the GraphQL schema (SDL)")
    sdl.set_defaults(run=cmd_schema, offline=True)


def cmd_schema(args: argparse.Namespace) -> int:
    from api.graphql.schema import schema

    print(schema.as_str())
    return 0
