"""The read side: init, project, rebuild, status."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time

import psycopg

from api.cli.common import (
    Parser,
    Subparsers,
    end_progress,
    open_database_and_ledger,
    progress_bar,
    schema_of,
)
from api.cli.errors import CliError
from ledger import Database

log = logging.getLogger("ledger")


def register(sub: Subparsers[Parser]) -> None:
    init = sub.add_parser("init", help="create every table (safe to run again)")
    init.set_defaults(run=cmd_init)

    project = sub.add_parser("project", help="keep every projection live until stopped")
    project.add_argument(
        "--only",
        choices=("projector", "sealer", "witnesses"),
        help="run one follower (ledger serve runs each as a child process); default: the"
        " projector and the sealer (witnesses: send checkpoints to LEDGER_WITNESSES)",
    )
    project.set_defaults(run=cmd_project)

    rebuild = sub.add_parser("rebuild", help="rebuild projections from position zero")
    rebuild.add_argument("names", nargs="*", metavar="NAME", help="projections (default: all)")
    rebuild.add_argument(
        "--verify", action="store_true", help="rebuild into a scratch schema and compare"
    )
    rebuild.set_defaults(run=cmd_rebuild)

    status = sub.add_parser("status", help="each projection's position and lag")
    status.set_defaults(run=cmd_status)


def cmd_init(args: argparse.Namespace) -> int:
    """Create every table the ledger needs (event store, read side, Merkle tree, API
    tokens); safe to run again, and at once from several processes."""
    from api.auth import create_schema
    from projections.runner import Projector
    from projections.sealer import Sealer

    with open_database_and_ledger() as (database, ledger):
        for follower in (Projector(ledger, database), Sealer(ledger, database)):
            follower.setup()
            follower.close()
        with database.connect() as conn:
            create_schema(conn, schema_of(ledger))
            conn.commit()
        print(f"ready: schema {schema_of(ledger)}, log head {ledger.head()}")
    return 0


def cmd_project(args: argparse.Namespace) -> int:
    from projections.runner import Projector, run_until_stopped
    from projections.sealer import Sealer

    logging.getLogger("ledger").setLevel(logging.INFO)
    stop = threading.Event()

    def stop_on_signal(signum: int, frame: object) -> None:
        log.info("projector: %s received; stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, stop_on_signal)
    signal.signal(signal.SIGINT, stop_on_signal)
    with open_database_and_ledger() as (database, ledger):
        if args.only == "sealer":
            Sealer(ledger, database).follow(stop)
        elif args.only == "witnesses":
            follow_witnesses(database, schema_of(ledger), stop)
        elif args.only == "projector":
            run_until_stopped(Projector(ledger, database), stop)
        else:
            sealer = threading.Thread(target=Sealer(ledger, database).follow, args=(stop,))
            sealer.start()
            run_until_stopped(Projector(ledger, database), stop)
            sealer.join()
    log.info("%s: stopped", args.only or "projector")
    return 0


def follow_witnesses(database: Database, schema: str, stop: threading.Event) -> None:
    from projections.witnessing import Witnessing

    witnessing = Witnessing(database, schema)
    if not witnessing.endpoints:
        raise CliError("LEDGER_WITNESSES: no witness configured", 2)
    witnessing.follow(stop)


def cmd_rebuild(args: argparse.Namespace) -> int:
    from projections.rebuild import rebuild, verify
    from projections.registry import resolve

    chosen = resolve(args.names)
    with open_database_and_ledger() as (database, ledger):

        def progress(position: int, head: int) -> None:
            progress_bar(position, head, "events")

        started = time.monotonic()
        if args.verify:
            differences = verify(ledger, database, chosen, progress=progress)
            end_progress()
            for d in differences:
                print(f"{d.table}: {d.count} rows differ")
                for row in d.only_live:
                    print(f"  only live:    {row}")
                for row in d.only_rebuilt:
                    print(f"  only rebuilt: {row}")
            names = ", ".join(p.name for p in chosen)
            if differences:
                print(f"verify: {names}: the live tables differ from a fresh rebuild")
                return 1
            print(f"verify: {names}: identical to a fresh rebuild")
            return 0
        events = rebuild(ledger, database, chosen, progress=progress)
        elapsed = time.monotonic() - started
        end_progress()
        print(
            f"rebuilt {', '.join(p.name for p in chosen)}: {events} events in {elapsed:.1f} s"
            f" ({events / max(elapsed, 1e-9):.0f} events/s)"
        )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from api.relay.checkpoint import status as relay_status
    from projections.positions import status

    with open_database_and_ledger() as (database, ledger), database.connect() as conn:
        try:
            rows = status(conn, schema_of(ledger), ledger.store.events_table)
        except psycopg.errors.UndefinedTable:
            raise CliError("no projections yet: run `ledger project` or `ledger rebuild`") from None
        conn.rollback()
        relays = relay_status(conn, schema_of(ledger), ledger.store.events_table)
        head = ledger.head()
        print(f"log head: {head}")
        print(
            f"  {'projection':<16} {'position':>10} {'lag events':>11} {'lag s':>9} {'failed':>7}"
        )
        for r in rows:
            print(
                f"  {r.name:<16} {r.position:>10} {r.lag_events:>11} {r.lag_seconds:>9.1f}"
                f" {r.failures:>7}"
            )
        for relay in relays:
            print(
                f"  {'relay ' + relay.stream:<16} {relay.position:>10} {relay.lag_events:>11}"
                f" {'':>9} {'':>7}  ({relay.publishes} published, {relay.duplicates}"
                f" duplicates dropped, stream {relay.stream_bytes} bytes)"
            )
    unhealthy = [r.name for r in rows if not r.healthy]
    if unhealthy:
        print(
            f"not healthy: {', '.join(unhealthy)} skipped events they could not apply"
            " (see the table projection_failures; fix, then `ledger rebuild`)",
            file=sys.stderr,
        )
        return 1
    return 0
