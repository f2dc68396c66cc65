"""The `ledger` command line."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn
from uuid import UUID

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from tqdm import tqdm

from api import logs
from api.auth import create_token, revoke_token
from api.cli_errors import USAGE, CliError, check_environment, describe, open_vault
from ledger import Database, Ledger
from ledger.database import data_dir
from ledger.domain import EVENT_TYPES
from ledger.errors import ProviderNotFound
from ledger.proofcheck import head_message
from ledger.views import account_view

log = logging.getLogger("ledger")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # "argument --port: expected ..." -> "--port: expected ..."
        fail(message.removeprefix("argument "))
        raise SystemExit(USAGE)


_bar: Any = None  # the progress bar on stderr, if one is drawn


def fail(message: str) -> None:
    """The one line on stderr a failure leaves."""
    end_progress()
    print(f"ledger: {message}", file=sys.stderr)


@contextmanager
def open_database_and_ledger(**kwargs: Any) -> Iterator[tuple[Database, Ledger]]:
    vault = open_vault()
    with Database() as database:
        ledger = Ledger.open(database, vault=vault, **kwargs)
        try:
            yield database, ledger
        finally:
            ledger.close()


@contextmanager
def open_ledger(**kwargs: Any) -> Iterator[Ledger]:
    with open_database_and_ledger(**kwargs) as (_, ledger):
        yield ledger


def progress_bar(done: int, total: int, what: str) -> None:
    """Draw progress with rate and ETA on a terminal (tqdm); nothing when stderr is a
    file or a pipe, where frames would fill a log."""
    global _bar
    if _bar is None:
        _bar = tqdm(total=total or None, unit=f" {what}", file=sys.stderr, disable=None,
                    dynamic_ncols=True, leave=True)  # fmt: skip
    if total and _bar.total != total:
        _bar.total = total
    _bar.update(done - _bar.n)


def end_progress() -> None:
    global _bar
    if _bar is not None:
        _bar.close()
        _bar = None


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
            create_schema(conn, _schema(ledger))
            conn.commit()
        print(f"ready: schema {_schema(ledger)}, log head {ledger.head()}")
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
    from projections.positions import status

    with open_database_and_ledger() as (database, ledger), database.connect() as conn:
        schema = ledger.store.datastore.schema or "public"
        try:
            rows = status(conn, schema, ledger.store.events_table)
        except psycopg.errors.UndefinedTable:
            raise CliError("no projections yet: run `ledger project` or `ledger rebuild`") from None
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
    unhealthy = [r.name for r in rows if not r.healthy]
    if unhealthy:
        print(
            f"not healthy: {', '.join(unhealthy)} skipped events they could not apply"
            " (see the table projection_failures; fix, then `ledger rebuild`)",
            file=sys.stderr,
        )
        return 1
    return 0


def check_listen(host: str, port: int) -> None:
    """Refuse a host or port uvicorn could not listen on, before anything starts.

    uvicorn binds the same way (SO_REUSEADDR) and would log several lines instead."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError):
        raise CliError(f"--host {host}: cannot listen there (no such address)", USAGE) from None
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise CliError(f"--port {port} on {host} is in use") from None
            if e.errno == errno.EACCES:
                raise CliError(f"--port {port} on {host}: permission denied") from None
            raise CliError(f"--host {host}: cannot listen there ({e.strerror})") from None


def cmd_serve(args: argparse.Namespace) -> int:
    # prometheus_client reads this when first imported: this process keeps its figures in
    # memory; with several workers, they share a fresh folder inside it (api.metrics).
    metrics_parent = os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    from api.serve import serve
    from ledger.signing import Signer

    check_listen(args.host, args.port)
    # Refuse bad keys here, before uvicorn and its workers read them.
    open_vault()
    Signer.from_environment(data_dir())

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
    serve(
        args.host, args.port, args.workers, not args.no_projector, metrics_parent=metrics_parent
    )
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    with open_database_and_ledger() as (database, ledger), database.connect() as conn:
        if args.action == "create":
            if args.provider and args.role == "provider":
                try:
                    ledger.get_provider(args.provider)
                except ProviderNotFound:
                    raise CliError(f"--provider {args.provider}: no such provider") from None
            token_id, token = create_token(
                conn, _schema(ledger), args.role, args.provider, args.name
            )
            print(f"token {token_id} ({args.role}): {token}")
            print("it is shown once; only its hash is kept", file=sys.stderr)
            return 0
        if revoke_token(conn, _schema(ledger), args.token):
            print("revoked")
            return 0
        raise CliError("no such live token")


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

        report = run_import(ledger, f, batch=args.batch, skip=args.on_error == "skip",
                            progress=progress)  # fmt: skip
        end_progress()
    for p in report.problems:
        print(f"{args.file}:{p.line}: {p.code}: {p.message}", file=sys.stderr)
    print(f"recorded {report.recorded}, already recorded {report.replayed},"
          f" refused or malformed {len(report.problems)}")  # fmt: skip
    return int(report.status)


def cmd_keys(args: argparse.Namespace) -> int:
    from ledger.signing import Signer

    if args.action is None:
        print(Signer.from_environment(data_dir()).public_key_hex)
        return 0
    if args.action == "new-kek":
        return new_kek()
    with open_ledger() as ledger:
        if args.action == "shred-erased":
            print(f"deleted {ledger.shred_erased()} data keys of erased identities")
        if args.action == "rotate-kek":
            done = ledger.rotate_kek(args.batch, progress=lambda n: progress_bar(n, 0, "keys"))
            end_progress()
            print(f"rewrapped {done} data keys under key-encryption key {ledger.vault.kek_id}")
        counts = ledger.store.keys_by_kek()
        print(f"current key-encryption key: {ledger.vault.kek_id}")
        for kek_id, n in counts.items():
            retired = "" if kek_id == ledger.vault.kek_id else " (retired)"
            print(f"  {kek_id}: {n} data keys{retired}")
    return 0


def new_kek() -> int:
    """Retire cipher.key into retired-keys/ and write a new one (file configuration)."""
    import base64
    import secrets

    from ledger.vault import KEY_FILE, RETIRED_DIR, kek_id_of

    if os.environ.get("LEDGER_CIPHER_KEY"):
        raise CliError(
            "LEDGER_CIPHER_KEY is set: put the new key there and the old one in"
            " LEDGER_CIPHER_KEYS_RETIRED, restart, then run `ledger keys rotate-kek`"
        )
    current = data_dir() / KEY_FILE
    if not current.exists():
        raise CliError(f"{current}: no key-encryption key to retire")
    old = base64.b64decode(current.read_text().strip())
    retired = data_dir() / RETIRED_DIR
    retired.mkdir(mode=0o700, exist_ok=True)
    kept = retired / f"{kek_id_of(old)}.key"
    kept.write_text(current.read_text())
    kept.chmod(0o600)
    fresh = current.with_suffix(".new")
    fresh.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
    fresh.chmod(0o600)
    fresh.replace(current)  # atomic: a crash leaves the old key or the new one
    print(f"retired {kek_id_of(old)} into {kept}; restart the ledger's processes, then run"
          " `ledger keys rotate-kek`, then delete the retired key")
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
    started = time.monotonic()
    with (
        open_database_and_ledger() as (database, ledger),
        database.connect(_schema(ledger)) as conn,
    ):
        head = ledger.head()
        try:
            heads = all_heads(conn)
        except psycopg.errors.UndefinedTable:
            raise CliError("nothing is sealed yet: run `ledger seal` or `ledger project`") from None
        report = verify_log(
            stored_events(conn, ledger.store.events_table),
            stored_leaves(conn),
            heads + (args.from_head or []),
            key,
            progress=lambda n: progress_bar(n, head, "events"),
        )
    elapsed = time.monotonic() - started
    end_progress()
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

    try:
        read_json(args.file)
    except ValueError as e:
        raise CliError(str(e), USAGE) from None
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
    events.add_argument(
        "--type", action="append", type=_event_type, help="e.g. Account.SanctionImposed"
    )
    events.add_argument("--originator", type=_uuid, help="only events of this aggregate id")
    events.set_defaults(run=cmd_events)

    account = sub.add_parser("account", help="print an account's state as JSON")
    account.add_argument("id", type=_uuid, metavar="ACCOUNT_ID")
    account.add_argument("--as-of", type=_as_of, help="a log position or an ISO timestamp")
    account.set_defaults(run=cmd_account)

    summary = sub.add_parser("summary", help="count the log's events by type")
    summary.set_defaults(run=cmd_summary)

    init = sub.add_parser("init", help="create every table (safe to run again)")
    init.set_defaults(run=cmd_init)

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
    serve.add_argument("--port", type=_port, default=8000)
    serve.add_argument("--workers", type=_positive, default=1)
    serve.add_argument("--no-projector", action="store_true", help="run `ledger project` apart")
    serve.add_argument("--demo-token", action="store_true", help="print a new regulator token")
    serve.set_defaults(run=cmd_serve)

    token = sub.add_parser("token", help="create or revoke API tokens")
    actions = token.add_subparsers(dest="action", required=True, parser_class=_Parser)
    create = actions.add_parser("create", help="print a new token (once)")
    create.add_argument("--role", required=True, choices=["regulator", "auditor", "provider"])
    create.add_argument("--provider", type=_uuid, help="the provider id, for role provider")
    create.add_argument("--name", default="unnamed")
    revoke = actions.add_parser("revoke", help="revoke a token (the token or its id)")
    revoke.add_argument("token")
    token.set_defaults(run=cmd_token)

    imp = sub.add_parser(
        "import",
        help="record commands from a file of JSON lines (exit 0 all recorded, 1 refused,"
        " 2 malformed, 3 database unavailable)",
    )
    imp.add_argument("file")
    imp.add_argument("--batch", type=_positive, default=500, help="commands per transaction")
    imp.add_argument("--on-error", choices=["stop", "skip"], default="stop")
    imp.set_defaults(run=cmd_import)

    keys = sub.add_parser(
        "keys", help="print the tree-head signing public key (hex), or manage the KEK"
    )
    kek = keys.add_subparsers(dest="action", parser_class=_Parser)
    kek.add_parser("status", help="data keys by key-encryption key")
    rotate = kek.add_parser("rotate-kek", help="rewrap every data key under the current KEK")
    rotate.add_argument("--batch", type=_positive, default=500)
    kek.add_parser("new-kek", help="retire cipher.key and write a new one")
    kek.add_parser(
        "shred-erased", help="delete the keys of erased identities (after restoring keys)"
    )
    keys.set_defaults(run=cmd_keys)

    seal = sub.add_parser("seal", help="seal the log up to its head and print the signed head")
    seal.set_defaults(run=cmd_seal)

    verify = sub.add_parser("verify", help="check every event against the signed tree heads")
    verify.add_argument(
        "--from-head", action="append", type=_signed_head, metavar="FILE", help="a signed head"
    )
    verify.add_argument(
        "--public-key", type=_public_key, help="hex; default: this ledger's signing key"
    )
    verify.set_defaults(run=cmd_verify)

    proof = sub.add_parser("verify-proof", help="check a proof (JSON) offline, no database")
    proof.add_argument("file")
    proof.add_argument("--public-key", type=_public_key, required=True)
    proof.set_defaults(run=cmd_verify_proof, offline=True)

    sdl = sub.add_parser("schema", help="print the GraphQL schema (SDL)")
    sdl.set_defaults(run=cmd_schema, offline=True)
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
_port = _number(lambda n: 0 < n < 65536, "a port from 1 to 65535")


def _uuid(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a UUID") from None


def _event_type(text: str) -> str:
    if text not in EVENT_TYPES:
        raise argparse.ArgumentTypeError(f"no event type {text!r}; known: {', '.join(EVENT_TYPES)}")
    return text


def _public_key(text: str) -> str:
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an Ed25519 public key (64 hex digits)"
        ) from None
    return text


def read_json(path: str) -> Any:
    """A JSON file's value; a `ValueError` naming the file when it cannot be had."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"{path}: {e.strerror or e}") from None
    except ValueError as e:  # not UTF-8, not JSON
        raise ValueError(f"{path}: not JSON ({e})") from None


HEAD_FIELDS = ("tree_size", "root_hash", "timestamp", "signature")


def _signed_head(path: str) -> dict[str, Any]:
    """A signed tree head from a file, as `ledger seal` prints it."""
    try:
        head = read_json(path)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    missing = [f for f in HEAD_FIELDS if not isinstance(head, dict) or f not in head]
    if missing:
        raise argparse.ArgumentTypeError(
            f"{path}: not a signed tree head: it lacks {', '.join(missing)}"
        )
    try:
        head_message(head["tree_size"], head["root_hash"], head["timestamp"])
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{path}: not a signed tree head: {e}") from None
    return {f: head[f] for f in HEAD_FIELDS}


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


if __name__ == "__main__":
    raise SystemExit(main())
