"""Webhook figures for /metrics, read from the delivery state at scrape time (several
`ledger deliver` workers may run, on several machines: the database holds the totals).

- `ledger_webhook_deliveries` (a summary by outcome: acknowledged, http_4xx, http_5xx,
  timeout, connect_error, url_refused, …): attempts and their summed seconds;
- `ledger_webhook_pending{endpoint}`: deliveries not yet acknowledged (the lag);
- `ledger_webhook_oldest_pending_seconds{endpoint}`: age of the oldest one's event;
- `ledger_webhook_endpoints_paused`: endpoints paused (by a 410, the failure window, or
  a person).

A receiver's outage shows here, never in /readyz: it is the operator's concern, not the
API's."""

from __future__ import annotations

import asyncio

import psycopg
from prometheus_client.core import GaugeMetricFamily, Metric, SummaryMetricFamily
from psycopg import sql

from api.state import DATABASE_FAULTS, ApiState, DatabaseUnavailable

SCRAPE_TIMEOUT_SECONDS = 2.0
FIGURES = """
SELECT 'count' AS kind, outcome AS label, n::float AS value, latency_seconds AS extra
  FROM webhook_counts
UNION ALL
SELECT 'pending', p.endpoint_id::text, p.n::float, extract(epoch FROM now() -
    (convert_from(e.state, 'UTF8')::json #>> '{{timestamp,_data_}}')::timestamptz)
  FROM (SELECT endpoint_id, count(*) AS n, min(position) AS oldest FROM webhook_deliveries
        WHERE acked_at IS NULL GROUP BY endpoint_id) p
  JOIN {e} e ON e.notification_id = p.oldest
UNION ALL
SELECT 'paused', NULL, count(*)::float, NULL FROM webhook_endpoints WHERE status = 'paused'
"""


async def figures(state: ApiState) -> list[Metric]:
    query = sql.SQL(FIGURES).format(e=state.ledger.store.events_table)
    try:
        rows = await asyncio.wait_for(state.health_fetch(query), SCRAPE_TIMEOUT_SECONDS)
    except psycopg.errors.UndefinedTable:  # no `ledger deliver` has made its tables yet
        return []
    except (TimeoutError, DatabaseUnavailable, *DATABASE_FAULTS):
        return []
    deliveries = SummaryMetricFamily(
        "ledger_webhook_deliveries",
        "Webhook attempts by outcome, and their seconds.",
        labels=["outcome"],
    )
    pending = GaugeMetricFamily(
        "ledger_webhook_pending", "Deliveries not yet acknowledged.", labels=["endpoint"]
    )
    oldest = GaugeMetricFamily(
        "ledger_webhook_oldest_pending_seconds",
        "Age of the oldest unacknowledged delivery's event.",
        labels=["endpoint"],
    )
    paused = GaugeMetricFamily("ledger_webhook_endpoints_paused", "Webhook endpoints paused.")
    for r in rows:
        if r["kind"] == "count":
            deliveries.add_metric([r["label"]], r["value"], r["extra"])
        elif r["kind"] == "pending":
            pending.add_metric([r["label"]], r["value"])
            oldest.add_metric([r["label"]], max(0.0, float(r["extra"] or 0)))
        else:
            paused.add_metric([], r["value"])
    return [deliveries, pending, oldest, paused]
