"""`ledger serve`: uvicorn running the app, with the projector beside it."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import threading
from typing import Any

import uvicorn
from starlette.applications import Starlette

from api import logs, metrics
from api.app import create_app
from ledger.application import Ledger
from ledger.database import Database
from projections.runner import Projector
from projections.sealer import Sealer

log = logging.getLogger("ledger.api")


def app_from_environment() -> Starlette:
    """The app for one worker process, configured from the environment."""
    database = Database().start()
    atexit.register(database.stop)
    ledger = Ledger.open(database)
    return create_app(database, ledger)


def start_projector(database: Database, ledger: Ledger) -> threading.Event:
    stop = threading.Event()
    for name, follower in (
        ("projector", Projector(ledger, database)),
        ("sealer", Sealer(ledger, database)),
    ):
        threading.Thread(target=follower.follow, args=(stop,), name=name, daemon=True).start()
    return stop


def serve(
    host: str, port: int, workers: int, with_projector: bool, metrics_parent: str | None = None
) -> None:
    # Several workers share their figures through files: set up before any starts.
    metrics_dir = metrics.multiprocess_dir(workers, metrics_parent)
    database = Database().start()
    ledger = Ledger.open(database)
    stop = start_projector(database, ledger) if with_projector else None
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
        if stop is not None:
            stop.set()
        ledger.close()
        database.stop()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
