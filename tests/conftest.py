"""Fixtures: a real PostgreSQL for the whole session (LEDGER_DATABASE_URL when set, else
an embedded server of the tests' own), and a fresh schema for every test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import DictRow, dict_row

from ledger import Actor, Database, Ledger, Role
from ledger.vault import Vault
from projections.runner import Projector
from tests.cold import ColdProcess
from tests.webhook_receiver import Receiver, Workers, worker_env

# Clients that never send connection_init are closed after this long.
os.environ.setdefault("LEDGER_WS_INIT_TIMEOUT", "2")

TEST_KEY = b"0123456789abcdef0123456789abcdef"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@pytest.fixture(scope="session")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """Each pytest-xdist worker has a server of its own: an embedded one, or a database of
    its own on LEDGER_DATABASE_URL's server, so that one worker's terminated backends,
    restarts and scratch schemas never meet another's."""
    url = os.environ.get("LEDGER_DATABASE_URL")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if url and worker:
        url = worker_database(url, worker)
        os.environ["LEDGER_DATABASE_URL"] = url  # for what the tests start with os.environ
    directory = None if url else tmp_path_factory.mktemp("pg")
    # Fails loudly, never skips, when no server can be had.
    with Database(url, directory) as db:
        yield db
    if url and worker:
        drop_database(url)


def worker_database(url: str, worker: str) -> str:
    """A new, empty database named after the worker, on the server of `url`."""
    parts = urlsplit(url)
    name = f"{parts.path.lstrip('/') or 'postgres'}_{worker}"
    drop_database(parts._replace(path=f"/{name}").geturl())
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return parts._replace(path=f"/{name}").geturl()


def drop_database(url: str) -> None:
    parts = urlsplit(url)
    with psycopg.connect(parts._replace(path="/postgres").geturl(), autocommit=True) as conn:
        name = sql.Identifier(parts.path.lstrip("/"))
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))


@pytest.fixture
def schema(database: Database) -> Iterator[str]:
    name = "t_" + uuid.uuid4().hex[:12]
    database.create_schema(name)
    yield name
    database.drop_schema(name)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def vault() -> Vault:
    return Vault(TEST_KEY)


@pytest.fixture
def make_ledger(database: Database, schema: str, vault: Vault, clock: Clock) -> Iterator:
    """Build ledgers on the test's schema; each is a separate application instance."""
    made: list[Ledger] = []

    def make(**kwargs: object) -> Ledger:
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("vault", vault)
        ledger = Ledger(database.eventsourcing_env(schema), **kwargs)  # type: ignore[arg-type]
        made.append(ledger)
        return ledger

    yield make
    for ledger in made:
        ledger.close()


@pytest.fixture
def ledger(make_ledger) -> Ledger:  # type: ignore[no-untyped-def]
    return make_ledger()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LEDGER_DATA_DIR", str(tmp_path))
    return tmp_path


REGULATOR = Actor("inspector", Role.REGULATOR)
AUDITOR = Actor("auditor", Role.AUDITOR)


@pytest.fixture
def projector(ledger: Ledger, database: Database, schema: str) -> Iterator[Projector]:
    """A projector keeping the read tables in the test's schema (call `catch_up()`)."""
    p = Projector(ledger, database, schema)
    p.setup()
    yield p
    p.close()


@pytest.fixture
def reader(database: Database, schema: str) -> Iterator[psycopg.Connection[DictRow]]:
    """An autocommit connection to the test's schema, rows as dicts."""
    with database.connect(schema, autocommit=True, row_factory=dict_row) as conn:
        yield conn


pytest_plugins = ["tests.api_server"]


@pytest.fixture
def cold(database: Database, schema: str, tmp_path: Path) -> ColdProcess:
    """Run code in a new process on the test's schema (see tests/cold.py)."""
    return ColdProcess(database, schema, TEST_KEY, tmp_path / "cold")


@pytest.fixture
def workers(cold: ColdProcess) -> Iterator[Workers]:
    """The projector in a process of its own, as `ledger serve` runs it, for webhook tests
    that start `ledger deliver` beside it (tests.webhook_receiver); stopped afterwards."""
    w = Workers(worker_env(cold.env))
    w.start("projector")
    yield w
    w.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on a loopback port (tests.webhook_receiver), closed afterwards."""
    r = Receiver()
    yield r
    r.close()
