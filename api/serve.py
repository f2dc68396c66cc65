"""`ledger serve`: uvicorn running the app, its background workers in child processes."""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import shutil
from typing import Any

import uvicorn

from api import logs, metrics
from api.app import create_app
from api.front import Front
from api.supervisor import RELAY, Supervisor, configured_workers, die_with_parent
from ledger.application import Ledger
from ledger.database import Database

log = logging.getLogger("ledger.api")


def app_from_environment() -> Front:
    """The app for one worker process, configured from the environment."""
    # A killed `ledger serve` leaves no API process behind, holding its port.
    parent = multiprocessing.parent_process()
    die_with_parent(parent.pid if parent else None)
    database = Database().start()
    atexit.register(database.stop)
    ledger = Ledger.open(database)
    return create_app(database, ledger)


def serve(
    host: str,
    port: int,
    workers: int,
    with_projector: bool,
    metrics_parent: str | None = None,
    with_relay: bool = False,
) -> None:
    # Several workers share their figures through files: set up before any starts.
    metrics_dir = metrics.multiprocess_dir(workers, metrics_parent)
    database = Database().start()
    if database.embedded:
        # Every process this one starts reaches the embedded server as an external one, so
        # only this process holds it, and stops it when it ends (a worker that exits
        # without its atexit hooks would otherwise keep it running after the server).
        os.environ["LEDGER_DATABASE_URL"] = database.conninfo
    ledger = Ledger.open(database)
    # The projector, the sealer, the deliverer (the witnessing worker, the relay) run as child
    # processes: the API processes only serve.
    workers_run = configured_workers() if with_projector else ()
    children = [*workers_run, *((RELAY,) if with_relay else ())]
    supervisor = Supervisor.for_workers(children).start() if children else None
    # Every worker logs as this process does (LEDGER_LOG_FORMAT, the level set), and
    # writes its own access lines instead of uvicorn's, which would show query strings.
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "info",
        "log_config": logs.log_config(logging.getLogger().level),
        "access_log": False,
        # A subscriber's compression context is its own: compressing each event for each
        # subscriber would price fan-out per subscriber again (LEDGER_WS_DEFLATE=1: on).
        "ws_per_message_deflate": os.environ.get("LEDGER_WS_DEFLATE", "0") == "1",
    }
    try:
        if workers > 1:
            uvicorn.run("api.serve:app_from_environment", factory=True, workers=workers, **options)
        else:
            uvicorn.run(create_app(database, ledger), **options)
    finally:
        if supervisor is not None:
            supervisor.stop()
        ledger.close()
        database.stop()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
