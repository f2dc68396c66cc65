"""The JetStream relay: relay, relay --rebuild, relay --check, relay creds."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from api.cli.common import Parser, Subparsers, end_progress, open_database_and_ledger, progress_bar
from api.cli.errors import CliError

if TYPE_CHECKING:  # nats-py is imported only when a relay runs
    from api.relay.relay import Relay

log = logging.getLogger("ledger")


def register(sub: Subparsers[Parser]) -> None:
    relay = sub.add_parser(
        "relay", help="publish the log to NATS JetStream (LEDGER_NATS_URL, LEDGER_NATS_STREAM)"
    )
    relay.add_argument(
        "--rebuild", action="store_true",
        help="delete the stream, relay the log into it anew from position 0, then check it",
    )  # fmt: skip
    relay.add_argument(
        "--check", action="store_true", help="compare the stream with the log, then exit"
    )
    relay.set_defaults(run=cmd_relay)
    actions = relay.add_subparsers(dest="action", parser_class=Parser)
    creds = actions.add_parser(
        "creds", help="a NATS user allowed to read one provider's subjects only"
    )
    creds.add_argument("--provider", required=True, metavar="CODE", help="the provider's code")
    creds.add_argument(
        "--consumer", action="append", metavar="NAME",
        help="a durable consumer it may create and use (repeat; default: main)",
    )  # fmt: skip
    creds.add_argument(
        "--out", type=Path, metavar="DIR",
        help="write DIR/<user>.conf (for the server) and DIR/<user>.env (for the provider)"
        " instead of printing both",
    )  # fmt: skip
    creds.set_defaults(run=cmd_creds, offline=True)


def cmd_relay(args: argparse.Namespace) -> int:
    from api.relay.relay import Relay

    logging.getLogger("ledger").setLevel(logging.INFO)
    with open_database_and_ledger() as (database, ledger):
        if args.rebuild:  # bulk: larger pages and window
            return asyncio.run(_rebuild(Relay(ledger, database, page_size=20_000, window=8_000)))
        if args.check:
            return asyncio.run(_check(Relay(ledger, database)))
        asyncio.run(_follow(Relay(ledger, database)))
    return 0


async def _follow(relay: Relay) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("relay: the log into stream %s at %s", relay.stream, relay.url)
    await relay.follow(stop, lambda: log.info("relay: caught up; following the log"))
    log.info("relay: stopped")


async def _rebuild(relay: Relay) -> int:
    try:
        events = await relay.rebuild(lambda at, head: progress_bar(at, head, "events"))
        end_progress()
        print(f"rebuilt stream {relay.stream}: {events} events")
        return await _check(relay)
    finally:
        await relay.close()


async def _check(relay: Relay) -> int:
    from nats.errors import Error as NatsError

    from api.relay.check import compare

    try:
        found = await compare(relay)
    except (NatsError, OSError) as e:
        raise CliError(f"cannot read stream {relay.stream} at {relay.url}: {e}") from None
    finally:
        await relay.close()
    if found.equal:
        print(f"check: stream {relay.stream} equals the log ({found.matched} events)")
        return 0
    print(
        f"check: stream {relay.stream} differs from the log: {found.matched} messages match,"
        f" the stream holds {found.stream_messages}, the log {found.log_events}"
        + (f"; {found.first_difference}" if found.first_difference else "")
    )
    return 1


def cmd_creds(args: argparse.Namespace) -> int:
    from api.relay.creds import client_settings, credentials
    from api.relay.relay import nats_url, stream_name

    try:
        creds = credentials(args.provider, stream_name(), tuple(args.consumer or ("main",)))
    except ValueError as e:
        raise CliError(str(e), 2) from None
    env = client_settings(creds, nats_url(), stream_name())
    if args.out is None:
        print("# for the server: an entry of authorization { users = [ ... ] }")
        print(creds.server_entry)
        print("# for the provider's system (keep secret)")
        print(env, end="")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".conf", creds.server_entry + "\n"), (".env", env)):
        path = args.out / f"{creds.user}{suffix}"
        path.write_text(text)
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
        print(f"wrote {path}")
    return 0
