"""The `ledger` command line."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn
from uuid import UUID

import psycopg

from api.auth import create_token, revoke_token
from ledger import Database, Ledger, LedgerError
from ledger.database import DatabaseError, data_dir, one_line
from ledger.ruleset import RulesetError
from ledger.views import account_view

log = logging.getLogger("ledger")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"ledger: {message}", file=sys.stderr)
        raise SystemExit(2)


@contextmanager
def open_database_and_ledger(**kwargs: Any) -> Iterator[tuple[Database, Ledger]]:
    with Database() as database:
        ledger = Ledger.open(database, **kwargs)
        try:
            yield database, ledger
        finally:
            ledger.close()


@contextmanager
def open_ledger(**kwargs: Any) -> Iterator[Ledger]:
    with open_database_and_ledger(**kwargs) as (_, ledger):
        yield ledger


def progress_bar(done: int, total: int, what: str) -> None:
    width = 40
    filled = width * done // max(total, 1)
    print(
        f"\r  [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {what}",
        end="",
        file=sys.stderr,
        flush=True,
    )


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
        print(file=sys.stderr)
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


def _as_of(text: str) -> int | datetime:
    if text.isdigit():
        return int(text)
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--as-of takes a log position or an ISO timestamp, not {text!r}"
        ) from None
    if at.tzinfo is None:
        raise argparse.ArgumentTypeError("--as-of timestamp needs a time zone, e.g. +00:00")
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
        sealer = threading.Thread(target=Sealer(ledger, database).follow, args=(stop,))
        sealer.start()
        run_until_stopped(Projector(ledger, database), stop)
        sealer.join()
    log.info("projector: stopped")
    return 0


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
            print(file=sys.stderr)
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
        print(file=sys.stderr)
        print(
            f"rebuilt {', '.join(p.name for p in chosen)}: {events} events in {elapsed:.1f} s"
            f" ({events / max(elapsed, 1e-9):.0f} events/s)"
        )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from projections.positions import status

    with open_database_and_ledger() as (database, ledger), database.connect() as conn:
        schema = ledger.store.datastore.schema or "public"
        try:
            rows = status(conn, schema, ledger.store.events_table)
        except psycopg.errors.UndefinedTable:
            print("no projections yet: run `ledger project` or `ledger rebuild`")
            return 1
        head = ledger.head()
        print(f"log head: {head}")
        print(f"  {'projection':<16} {'position':>10} {'lag events':>11} {'lag s':>9}")
        for r in rows:
            print(f"  {r.name:<16} {r.position:>10} {r.lag_events:>11} {r.lag_seconds:>9.1f}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from api.serve import serve

    if args.demo_token:
        with open_database_and_ledger() as (database, ledger), database.connect() as conn:
            _, token = create_token(conn, _schema(ledger), "regulator", None, "make-run")
        url = f"http://{args.host}:{args.port}/graphql"
        print(f"""
The ledger's GraphQL API: {url}  (GraphiQL in a browser when LEDGER_GRAPHIQL=1)
A regulator token (shown once):  {token}
Try:
  curl -s {url} -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\
    -d '{{"query": "{{ providers {{ code accounts shareVerified openReports }} }}"}}'
""")
    serve(args.host, args.port, args.workers, with_projector=not args.no_projector)
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    with open_database_and_ledger() as (database, ledger), database.connect() as conn:
        if args.action == "create":
            provider = UUID(args.provider) if args.provider else None
            token_id, token = create_token(conn, _schema(ledger), args.role, provider, args.name)
            print(f"token {token_id} ({args.role}): {token}")
            print("it is shown once; only its hash is kept", file=sys.stderr)
            return 0
        if revoke_token(conn, _schema(ledger), args.token):
            print("revoked")
            return 0
        print("ledger: no such live token", file=sys.stderr)
        return 1


def cmd_keys(args: argparse.Namespace) -> int:
    from ledger.signing import Signer

    print(Signer.from_environment(data_dir()).public_key_hex)
    return 0


def cmd_seal(args: argparse.Namespace) -> int:
    from projections.integrity import head
    from projections.sealer import Sealer

    with open_database_and_ledger() as (database, ledger):
        sealer = Sealer(ledger, database)
        try:
            sealer.setup()
            sealer.sign_now()
            print(json.dumps(head(sealer.conn)))
        finally:
            sealer.close()
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from ledger.signing import Signer
    from projections.integrity import all_heads, stored_events, stored_leaves, verify_log

    key = args.public_key or Signer.from_environment(data_dir()).public_key_hex
    extra = [json.loads(Path(f).read_text()) for f in args.from_head or ()]
    started = time.monotonic()
    with (
        open_database_and_ledger() as (database, ledger),
        database.connect(_schema(ledger)) as conn,
    ):
        head = ledger.head()
        report = verify_log(
            stored_events(conn, ledger.store.events_table),
            stored_leaves(conn),
            all_heads(conn) + extra,
            key,
            progress=lambda n: progress_bar(n, head, "events"),
        )
    elapsed = time.monotonic() - started
    print(file=sys.stderr)
    rate = report.events / max(elapsed, 1e-9)
    print(
        f"verify: {report.events} events, {report.heads_checked} signed heads checked,"
        f" {report.unsealed} not yet sealed, in {elapsed:.1f} s ({rate:.0f} events/s)"
    )
    for finding in report.findings:
        print(f"FAILED at {finding}")
    if report.ok:
        print("OK: every sealed event matches every signed head")
    return 0 if report.ok else 1


def cmd_verify_proof(args: argparse.Namespace) -> int:
    from ledger import proofcheck

    return proofcheck.main([args.file, "--public-key", args.public_key])


def cmd_schema(args: argparse.Namespace) -> int:
    from api.graphql.schema import schema

    print(schema.as_str())
    return 0


def _schema(ledger: Ledger) -> str:
    return ledger.store.datastore.schema or "public"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ledger", description="The compliance ledger.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = sub.add_parser("demo", help="load a deterministic demo data set")
    demo.add_argument("--accounts", type=_positive, default=2000)
    demo.add_argument("--force", action="store_true", help="run even if the log has events")
    demo.set_defaults(run=cmd_demo)

    events = sub.add_parser("events", help="print the log as JSON lines")
    events.add_argument("--after", type=_non_negative, default=0, help="log position")
    events.add_argument("--limit", type=_non_negative, default=None)
    events.add_argument("--type", action="append", help="event type, e.g. Account.SanctionImposed")
    events.add_argument("--originator", help="only events of this aggregate id")
    events.set_defaults(run=cmd_events)

    account = sub.add_parser("account", help="print an account's state as JSON")
    account.add_argument("id")
    account.add_argument("--as-of", type=_as_of, help="a log position or an ISO timestamp")
    account.set_defaults(run=cmd_account)

    summary = sub.add_parser("summary", help="count the log's events by type")
    summary.set_defaults(run=cmd_summary)

    project = sub.add_parser("project", help="keep every projection live until stopped")
    project.set_defaults(run=cmd_project)

    rebuild = sub.add_parser("rebuild", help="rebuild projections from position zero")
    rebuild.add_argument("names", nargs="*", metavar="NAME", help="projections (default: all)")
    rebuild.add_argument(
        "--verify", action="store_true", help="rebuild into a scratch schema and compare"
    )
    rebuild.set_defaults(run=cmd_rebuild)

    status = sub.add_parser("status", help="each projection's position and lag")
    status.set_defaults(run=cmd_status)

    serve = sub.add_parser("serve", help="serve the GraphQL API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_positive, default=8000)
    serve.add_argument("--workers", type=_positive, default=1)
    serve.add_argument("--no-projector", action="store_true", help="run `ledger project` apart")
    serve.add_argument("--demo-token", action="store_true", help="print a new regulator token")
    serve.set_defaults(run=cmd_serve)

    token = sub.add_parser("token", help="create or revoke API tokens")
    actions = token.add_subparsers(dest="action", required=True, parser_class=_Parser)
    create = actions.add_parser("create", help="print a new token (once)")
    create.add_argument("--role", required=True, choices=["regulator", "auditor", "provider"])
    create.add_argument("--provider", help="the provider id, for role provider")
    create.add_argument("--name", default="unnamed")
    revoke = actions.add_parser("revoke", help="revoke a token (the token or its id)")
    revoke.add_argument("token")
    token.set_defaults(run=cmd_token)

    keys = sub.add_parser("keys", help="print the tree-head signing public key (hex)")
    keys.set_defaults(run=cmd_keys)

    seal = sub.add_parser("seal", help="seal the log up to its head and print the signed head")
    seal.set_defaults(run=cmd_seal)

    verify = sub.add_parser("verify", help="check every event against the signed tree heads")
    verify.add_argument("--from-head", action="append", metavar="FILE", help="a signed head")
    verify.add_argument("--public-key", help="hex; default: this ledger's signing key")
    verify.set_defaults(run=cmd_verify)

    proof = sub.add_parser("verify-proof", help="check a proof (JSON) offline, no database")
    proof.add_argument("file")
    proof.add_argument("--public-key", required=True)
    proof.set_defaults(run=cmd_verify_proof)

    sdl = sub.add_parser("schema", help="print the GraphQL schema (SDL)")
    sdl.set_defaults(run=cmd_schema)
    return parser


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


_positive = _number(lambda n: n > 0, "a positive whole number")
_non_negative = _number(lambda n: n >= 0, "a whole number from 0")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.run(args)
        return code
    except LedgerError as e:
        print(f"ledger: {e.code}: {e.message}", file=sys.stderr)
    except (DatabaseError, RulesetError, ValueError) as e:
        print(f"ledger: {e}", file=sys.stderr)
    except psycopg.Error as e:
        print(f"ledger: database error: {one_line(e)}", file=sys.stderr)
    except OSError as e:
        print(f"ledger: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        print("ledger: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
