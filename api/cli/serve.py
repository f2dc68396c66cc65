"""Serving the API: serve."""

from __future__ import annotations

import argparse
import errno
import os
import socket

from api.auth import create_token
from api.cli.common import (
    Parser,
    Subparsers,
    open_database_and_ledger,
    port_number,
    positive,
    schema_of,
)
from api.cli.errors import USAGE, CliError, open_vault
from ledger.database import data_dir


def register(sub: Subparsers[Parser]) -> None:
    serve = sub.add_parser("serve", help="serve the GraphQL API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=port_number, default=8000)
    serve.add_argument(
        "--workers", type=positive, default=None, help="API processes (default: one per core)"
    )
    serve.add_argument(
        "--no-projector",
        action="store_true",
        help="start no projector and sealer child processes (run `ledger project` apart)",
    )
    serve.add_argument(
        "--relay",
        action="store_true",
        help="also run `ledger relay` (NATS JetStream, LEDGER_NATS_URL) as a child process",
    )
    serve.add_argument("--demo-token", action="store_true", help="print a new regulator token")
    serve.set_defaults(run=cmd_serve)


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
    from api.supervisor import default_workers
    from ledger.signing import Signer

    check_listen(args.host, args.port)
    # Refuse bad keys here, before uvicorn and its workers read them.
    open_vault()
    Signer.from_environment(data_dir())

    if args.demo_token:
        with open_database_and_ledger() as (database, ledger), database.connect() as conn:
            _, token = create_token(conn, schema_of(ledger), "regulator", None, "make-run")
        url = f"http://{args.host}:{args.port}/graphql"
        print(f"""
The ledger's GraphQL API: {url}  (GraphiQL in a browser when LEDGER_GRAPHIQL=1)
The regulator's console:  http://{args.host}:{args.port}/console/  (sign in with the token)
A regulator token (shown once):  {token}
Try:
  curl -s {url} -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\
    -d '{{"query": "{{ providers {{ code accounts shareVerified openReports }} }}"}}'
""")
    workers = args.workers or default_workers()
    serve(args.host, args.port, workers, not args.no_projector, metrics_parent=metrics_parent,
          with_relay=args.relay)  # fmt: skip
    return 0
