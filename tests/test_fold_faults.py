"""A folded rebuild (projections.folds) across a database restart, on a cluster of the
test's own: the restart comes while both processes hold their connections, and the
rebuild still ends with the tables the event-by-event projector makes."""

from __future__ import annotations

import logging

import pytest

from ledger import Database, Ledger
from projections.rebuild import rebuild
from projections.registry import ALL
from tests.cluster import Cluster, own_cluster_fixtures
from tests.conftest import Clock
from tests.test_bulk_rebuild import varied_history
from tests.test_fold_rebuild import BEYOND, assert_same_tables, project_event_by_event

pytestmark = pytest.mark.timeout(240)

cluster, database = own_cluster_fixtures()


def test_a_restart_during_a_folded_rebuild_ends_in_the_same_tables(
    ledger: Ledger,
    database: Database,
    schema: str,
    cluster: Cluster,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    varied_history(ledger, clock, database, schema)
    project_event_by_event(ledger, database, schema)
    target = "t_fold_restart"
    restarted = []

    def restart_once(position: int, head: int) -> None:
        if not restarted:
            restarted.append(position)
            cluster.restart()  # the folds hold their rows; every connection is cut

    with caplog.at_level(logging.WARNING, logger="ledger.rebuild"):
        events = rebuild(ledger, database, ALL, target, progress=restart_once)
    assert restarted
    # The writes failed on the cut connection, so the rebuild replayed in bulk.
    assert [r for r in caplog.records if BEYOND in r.getMessage()]
    assert events == ledger.head()
    assert_same_tables(database, schema, target)
    database.drop_schema(target)
