"""Webhooks: deliver (the worker), and webhooks [list | show | replay | resume]."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from datetime import datetime
from typing import Any
from uuid import UUID

from api.cli.common import Parser, Subparsers, open_database_and_ledger
from api.cli.errors import USAGE, CliError
from ledger import commands as c
from ledger.actors import Actor, Role
from ledger.application import Ledger
from ledger.database import Database

log = logging.getLogger("ledger")
OPERATOR = Actor("ledger-cli", Role.SYSTEM)


def register(sub: Subparsers[Parser]) -> None:
    deliver = sub.add_parser(
        "deliver", help="send signed webhooks until stopped (ledger serve runs one)"
    )
    deliver.set_defaults(run=cmd_deliver)

    hooks = sub.add_parser("webhooks", help="webhook endpoints: list, show, replay, resume")
    action = hooks.add_subparsers(dest="action", required=True, parser_class=Parser)
    listing = action.add_parser("list", help="every endpoint with its state")
    listing.add_argument("--provider", help="only this provider's (its id)")
    show = action.add_parser("show", help="one endpoint: state and its last attempts")
    show.add_argument("endpoint")
    show.add_argument("--attempts", type=int, default=20, help="how many of the last attempts")
    replay = action.add_parser("replay", help="re-send from a log position or a moment on")
    replay.add_argument("endpoint")
    start = replay.add_mutually_exclusive_group(required=True)
    start.add_argument("--from-position", type=int)
    start.add_argument("--since", type=datetime.fromisoformat, help="ISO time with its zone")
    resume = action.add_parser("resume", help="resume a paused endpoint")
    resume.add_argument("endpoint")
    hooks.set_defaults(run=cmd_webhooks)


def cmd_deliver(args: argparse.Namespace) -> int:
    from api.webhooks.worker import Deliverer

    logging.getLogger("ledger").setLevel(logging.INFO)

    async def main(ledger: Ledger, database: Database) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await Deliverer(ledger, database).run(stop)

    with open_database_and_ledger() as (database, ledger):
        asyncio.run(main(ledger, database))
    log.info("deliver: stopped")
    return 0


STATE = """
SELECT w.endpoint_id, w.provider_id, w.url, w.status, w.paused_reason, w.failing_since,
    w.enqueued, count(d.position) FILTER (WHERE d.acked_at IS NULL) AS pending,
    max(d.position) FILTER (WHERE d.acked_at IS NOT NULL) AS acknowledged
FROM webhook_endpoints w LEFT JOIN webhook_deliveries d USING (endpoint_id)
WHERE (%(provider)s::uuid IS NULL OR w.provider_id = %(provider)s)
  AND (%(endpoint)s::uuid IS NULL OR w.endpoint_id = %(endpoint)s)
GROUP BY w.endpoint_id ORDER BY w.provider_id, w.endpoint_id
"""


def _uuid(text: str | None, what: str) -> UUID | None:
    if text is None:
        return None
    try:
        return UUID(text)
    except ValueError:
        raise CliError(f"{what}: not an id: {text[:80]!r}", USAGE) from None


def _rows(database: Database, schema: str, query: str, params: dict[str, Any]) -> list[Any]:
    import psycopg
    from psycopg.rows import dict_row

    with database.connect(schema, row_factory=dict_row) as conn:
        try:
            return conn.execute(query, params).fetchall()  # type: ignore[arg-type]
        except psycopg.errors.UndefinedTable:
            raise CliError("no webhook state yet: `ledger deliver` has not run") from None


def _print(row: dict[str, Any]) -> None:
    print(json.dumps(row, default=str, ensure_ascii=False))


def cmd_webhooks(args: argparse.Namespace) -> int:
    with open_database_and_ledger() as (database, ledger):
        schema = ledger.store.datastore.schema or "public"
        endpoint = _uuid(getattr(args, "endpoint", None), "endpoint")
        provider = _uuid(getattr(args, "provider", None), "--provider")
        found = _rows(database, schema, STATE, {"provider": provider, "endpoint": endpoint})
        if args.action == "list":
            for row in found:
                _print(row)
            return 0
        if not found:
            raise CliError(f"no such webhook endpoint: {endpoint}")
        row = found[0]
        if args.action == "show":
            _print(row)
            attempts = _rows(
                database, schema,
                "SELECT position, msg_id, attempt, at, status, error, latency_ms, key_ids"
                " FROM webhook_attempts WHERE endpoint_id = %(e)s ORDER BY id DESC LIMIT %(n)s",
                {"e": endpoint, "n": max(0, args.attempts)},
            )  # fmt: skip
            for attempt in attempts:
                _print(attempt)
            return 0
        ids = {"provider_id": row["provider_id"], "endpoint_id": endpoint}
        key = f"cli-{args.action}-{datetime.now().isoformat()}"
        if args.action == "resume":
            command: c.Command = c.ResumeWebhookEndpoint(actor=OPERATOR, idempotency_key=key, **ids)
        else:
            command = c.ReplayWebhookEndpoint(
                actor=OPERATOR, idempotency_key=key, from_position=args.from_position,
                from_time=args.since, **ids,
            )  # fmt: skip
        result = ledger.execute(command)
        print(f"{args.action}: recorded at position {result.position}")
    return 0
