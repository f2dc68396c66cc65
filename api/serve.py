"""`ledger serve`: uvicorn running the app, with the projector beside it."""

from __future__ import annotations

import atexit
import logging
import threading

import uvicorn
from starlette.applications import Starlette

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


def serve(host: str, port: int, workers: int, with_projector: bool) -> None:
    database = Database().start()
    ledger = Ledger.open(database)
    stop = start_projector(database, ledger) if with_projector else None
    try:
        if workers > 1:
            uvicorn.run(
                "api.serve:app_from_environment",
                factory=True,
                host=host,
                port=port,
                workers=workers,
                log_level="info",
            )
        else:
            uvicorn.run(create_app(database, ledger), host=host, port=port, log_level="info")
    finally:
        if stop is not None:
            stop.set()
        ledger.close()
        database.stop()
