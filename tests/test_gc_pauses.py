"""The garbage collector in a running server: every pause counted at /metrics, start-up's
objects frozen out of full collections, and the thresholds taken from the environment."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.app import create_app
from ledger import Database, Ledger
from tests.api_server import ApiServer, running_api
from tests.test_metrics import scrape, value

PAUSES = "ledger_gc_pause_seconds"


def test_full_collections_are_counted_and_timed(server: ApiServer) -> None:
    """The server runs in this process (tests/api_server.py): a collection here is one
    of the server's."""
    before = scrape(server.url)
    for _ in range(3):
        gc.collect()
    after = scrape(server.url)
    counted = value(after, f"{PAUSES}_count", generation="2")
    assert counted - value(before, f"{PAUSES}_count", generation="2") >= 3
    assert value(after, f"{PAUSES}_sum", generation="2") > value(
        before, f"{PAUSES}_sum", generation="2"
    )
    assert value(after, f"{PAUSES}_bucket", generation="2", le="+Inf") == counted
    longest = value(after, "ledger_gc_pause_longest_seconds", generation="2")
    assert 0 < longest < 10
    # Young collections come by themselves, with every allocation the scrapes made.
    assert value(after, f"{PAUSES}_count", generation="0") > 0


@pytest.fixture
def thresholds() -> Iterator[None]:
    kept = gc.get_threshold()
    yield
    gc.set_threshold(*kept)


def test_start_up_is_frozen_and_thresholds_come_from_the_environment(
    ledger: Ledger,
    database: Database,
    schema: str,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    thresholds: None,
) -> None:
    monkeypatch.setenv("LEDGER_GC_THRESHOLDS", "5000,20,30")
    with running_api(ledger, database, schema):
        assert gc.get_threshold() == (5000, 20, 30)
        assert gc.get_freeze_count() > 10_000
    assert gc.get_freeze_count() == 0  # released when the app stops
    monkeypatch.setenv("LEDGER_GC_FREEZE", "0")
    with running_api(ledger, database, schema):
        assert gc.get_freeze_count() == 0


def test_bad_thresholds_stop_the_start_with_a_clear_error(
    ledger: Ledger,
    database: Database,
    schema: str,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LEDGER_GC_THRESHOLDS", "700,ten")
    with pytest.raises(ValueError, match="three positive integers, not '700,ten'"):
        create_app(database, ledger, schema)
