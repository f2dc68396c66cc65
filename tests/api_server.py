"""A real API server on loopback for tests: uvicorn in a thread, the projector beside it,
and small HTTP and WebSocket clients."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
import uvicorn
from psycopg import sql

from api.app import create_app
from api.auth import create_token
from ledger import Database, Ledger
from projections.positions import wait_for
from projections.runner import Projector
from projections.sealer import Sealer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ApiServer:
    url: str
    ws_url: str
    database: Database
    ledger: Ledger
    schema: str
    state: Any

    def token(self, role: str, provider: UUID | None = None, name: str = "test") -> str:
        with self.database.connect() as conn:
            return create_token(conn, self.schema, role, provider, name)[1]

    def post(self, body: Any, token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers.update(kwargs.pop("headers", {}))
        if isinstance(body, (dict, list)):
            return httpx.post(self.url, json=body, headers=headers, timeout=30, **kwargs)
        return httpx.post(self.url, content=body, headers=headers, timeout=30, **kwargs)

    def gql(self, query: str, token: str | None, **variables: Any) -> dict[str, Any]:
        response = self.post({"query": query, "variables": variables}, token)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def data(self, query: str, token: str | None, **variables: Any) -> dict[str, Any]:
        result = self.gql(query, token, **variables)
        assert "errors" not in result, json.dumps(result["errors"], indent=1)
        data: dict[str, Any] = result["data"]
        return data

    def settle(self) -> None:
        """Wait until the read side has every event written so far."""
        with self.database.connect(autocommit=True) as conn:
            wait_for(conn, self.schema, self.ledger.head(), timeout=20)


def wake(database: Database, ledger: Ledger) -> None:
    """Wake the followers listening on the log's channel, so that a stopped one ends now
    rather than at the end of its poll (a second per server in the suite)."""
    with contextlib.suppress(psycopg.OperationalError), database.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("NOTIFY {}").format(sql.Identifier(ledger.store.channel_name)))


@contextmanager
def running_api(ledger: Ledger, database: Database, schema: str) -> Iterator[ApiServer]:
    """The API server on a free loopback port, with a projector and a sealer beside it."""
    stop = threading.Event()
    followers = [Projector(ledger, database, schema), Sealer(ledger, database, schema)]
    threads = []
    for follower in followers:
        follower.setup()
        threads.append(threading.Thread(target=follower.follow, args=(stop,), daemon=True))
        threads[-1].start()
    port = free_port()
    app = create_app(database, ledger, schema)
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", ws="websockets-sansio"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the API server did not start"
        time.sleep(0.02)
    try:
        yield ApiServer(
            f"http://127.0.0.1:{port}/graphql",
            f"ws://127.0.0.1:{port}/graphql",
            database,
            ledger,
            schema,
            app.state.ledger_state,
        )
    finally:
        server.should_exit = True
        thread.join(20)
        stop.set()
        wake(database, ledger)
        for t in threads:
            t.join(20)
    assert not thread.is_alive(), "the API server did not stop"
    assert not any(t.is_alive() for t in threads), "a follower did not stop"


@pytest.fixture
def server(ledger: Ledger, database: Database, schema: str, data_dir: Path) -> Iterator[ApiServer]:
    with running_api(ledger, database, schema) as api:
        yield api
