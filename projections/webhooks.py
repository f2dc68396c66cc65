"""Webhook delivery state: what the delivery worker (`ledger deliver`) keeps in PostgreSQL.

- `webhook_endpoints`: each endpoint as its Provider.Webhook* events left it (followed from
  the log, exactly once: `webhook_positions` moves in the same transaction), with
  `enqueued`, the log position up to which its events were put in the outbox, and
  `failing_since`, the first failure since its last success.
- `webhook_deliveries`: the outbox, one row per (endpoint, event), with the event's
  originator (the account an order is kept for), its sequence number among that
  originator's deliveries to the endpoint, its `webhook-id`, and, until it is
  acknowledged, when to try next. Acknowledged rows stay (a replay re-sends them with
  their ids and numbers, and bumps `generation`, so that an answer to an attempt made
  before the replay does not count for it); pending rows are never dropped.
- `webhook_attempts`: every attempt (status or error class, latency, key ids), dropped
  after the retention window.
- `webhook_owners`: which provider owns each account and post, from the events that
  created them, so the worker needs no read model to know whose an event is.
- `webhook_counts`: deliveries by outcome and their summed latency, for /metrics.

The pending work is read through a partial index over unacknowledged rows only, so its
cost follows the backlog, not the history (`bench.webhooks` shows the plan).
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence

DDL = """
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    endpoint_id uuid PRIMARY KEY,
    provider_id uuid NOT NULL,
    url text NOT NULL,
    event_types text[] NOT NULL,
    status text NOT NULL,
    paused_reason text,
    enqueued bigint NOT NULL,
    failing_since timestamptz,
    changed_position bigint NOT NULL);
CREATE TABLE IF NOT EXISTS webhook_positions (
    name text PRIMARY KEY,
    position bigint NOT NULL);
INSERT INTO webhook_positions VALUES ('control', 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    endpoint_id uuid NOT NULL,
    position bigint NOT NULL,
    originator_id uuid NOT NULL,
    sequence bigint NOT NULL,
    msg_id text NOT NULL,
    attempts int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    acked_at timestamptz,
    generation int NOT NULL DEFAULT 0,
    PRIMARY KEY (endpoint_id, position));
CREATE INDEX IF NOT EXISTS webhook_deliveries_by_originator
    ON webhook_deliveries (endpoint_id, originator_id, position);
CREATE INDEX IF NOT EXISTS webhook_deliveries_pending
    ON webhook_deliveries (endpoint_id, originator_id, position) INCLUDE (next_attempt_at)
    WHERE acked_at IS NULL;
CREATE TABLE IF NOT EXISTS webhook_attempts (
    id bigserial PRIMARY KEY,
    endpoint_id uuid NOT NULL,
    position bigint NOT NULL,
    msg_id text NOT NULL,
    attempt int NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    status int,
    error text,
    latency_ms real NOT NULL,
    key_ids text[] NOT NULL);
CREATE INDEX IF NOT EXISTS webhook_attempts_by_endpoint ON webhook_attempts (endpoint_id, id);
CREATE INDEX IF NOT EXISTS webhook_attempts_at ON webhook_attempts (at);
CREATE TABLE IF NOT EXISTS webhook_owners (
    originator_id uuid PRIMARY KEY,
    provider_id uuid NOT NULL);
CREATE TABLE IF NOT EXISTS webhook_counts (
    outcome text PRIMARY KEY,
    n bigint NOT NULL,
    latency_seconds double precision NOT NULL);
"""

# Deliveries whose turn it is: the oldest pending delivery of each originator (an
# originator's next waits for the previous acknowledgement), of the endpoints given.
PENDING_HEADS = """
SELECT DISTINCT ON (endpoint_id, originator_id)
    endpoint_id, originator_id, position, next_attempt_at <= now() AS due,
    extract(epoch FROM next_attempt_at - now()) AS wait
FROM webhook_deliveries
WHERE acked_at IS NULL AND endpoint_id = ANY(%(endpoints)s)
ORDER BY endpoint_id, originator_id, position
"""

# Who owns each account and post, from the events that created them (followed with the
# endpoints' own events): the worker needs no read model to know whose an event is.
OWNERS = """
INSERT INTO webhook_owners (originator_id, provider_id)
SELECT originator_id, (convert_from(state, 'UTF8')::json #>> '{{provider_id,_data_}}')::uuid
FROM {events}
WHERE notification_id > %(lo)s AND notification_id <= %(hi)s AND topic = ANY(%(types)s)
ON CONFLICT DO NOTHING
"""

# The outbox rows for the events in (lo, hi] that an endpoint wants: those of what its
# provider owns (an account, a post, itself), of the types it chose.
ENQUEUE = """
WITH ev AS (
    SELECT e.notification_id AS position, e.originator_id, e.originator_version, e.topic,
           coalesce(o.provider_id, CASE WHEN e.topic LIKE 'Provider.%%'
                                        THEN e.originator_id END) AS provider_id
    FROM {events} e
    LEFT JOIN webhook_owners o ON o.originator_id = e.originator_id
    WHERE e.notification_id > %(lo)s AND e.notification_id <= %(hi)s
), todo AS (
    SELECT w.endpoint_id, ev.position, ev.originator_id, ev.originator_version
    FROM ev JOIN webhook_endpoints w
      ON w.provider_id = ev.provider_id AND ev.topic = ANY(w.event_types)
     AND ev.position > w.enqueued AND w.status <> 'deleted'
)
INSERT INTO webhook_deliveries (endpoint_id, position, originator_id, sequence, msg_id)
SELECT t.endpoint_id, t.position, t.originator_id,
    coalesce((SELECT d.sequence FROM webhook_deliveries d
              WHERE d.endpoint_id = t.endpoint_id AND d.originator_id = t.originator_id
              ORDER BY d.position DESC LIMIT 1), 0)
    + row_number() OVER (PARTITION BY t.endpoint_id, t.originator_id ORDER BY t.position),
    'msg_' || replace(t.originator_id::text, '-', '') || '_' || t.originator_version
FROM todo t
ON CONFLICT DO NOTHING
"""

# An endpoint's state for the API and the command line.
STATE = """
SELECT w.endpoint_id, w.provider_id, w.status, w.paused_reason, w.failing_since, w.enqueued,
    (SELECT max(d.position) FROM webhook_deliveries d
      WHERE d.endpoint_id = w.endpoint_id AND d.acked_at IS NOT NULL) AS acknowledged,
    (SELECT count(*) FROM webhook_deliveries d
      WHERE d.endpoint_id = w.endpoint_id AND d.acked_at IS NULL) AS pending,
    (SELECT min(d.position) FROM webhook_deliveries d
      WHERE d.endpoint_id = w.endpoint_id AND d.acked_at IS NULL) AS oldest_pending,
    (SELECT extract(epoch FROM now() - min(a.at)) FROM webhook_attempts a
      WHERE a.endpoint_id = w.endpoint_id AND a.position = (SELECT min(d.position)
      FROM webhook_deliveries d WHERE d.endpoint_id = w.endpoint_id AND d.acked_at IS NULL))
      AS oldest_pending_seconds
FROM webhook_endpoints w WHERE w.endpoint_id = ANY(%(endpoints)s)
"""

DEFAULT_SCHEDULE = (0.0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
JITTER = 0.1


def _floats(name: str, default: str) -> list[float]:
    text = os.environ.get(name, default)
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 0:
        raise ValueError(f"{name} must be non-negative seconds, comma-separated, not {text!r}")
    return values


def retry_schedule() -> list[float]:
    """LEDGER_WEBHOOK_RETRY_SCHEDULE: seconds before each attempt, the first being the
    first attempt's; the last step repeats until the failure window ends."""
    return _floats("LEDGER_WEBHOOK_RETRY_SCHEDULE", ",".join(str(s) for s in DEFAULT_SCHEDULE))


def seconds_setting(name: str, default: float) -> float:
    (value,) = _floats(name, str(default))[:1]
    return value


def failure_window() -> float:
    """LEDGER_WEBHOOK_FAILURE_WINDOW: seconds an endpoint may fail before it is paused."""
    return seconds_setting("LEDGER_WEBHOOK_FAILURE_WINDOW", 5 * 86400)


def next_delay(
    attempts: int, schedule: Sequence[float], retry_after: float | None, cap: float
) -> float:
    """Seconds until the next attempt, after `attempts` failed ones: the schedule's step
    with jitter, or the receiver's Retry-After (up to `cap`) when it gave one."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), cap)
    step = schedule[min(attempts, len(schedule) - 1)]
    return step * random.uniform(1 - JITTER, 1 + JITTER)
