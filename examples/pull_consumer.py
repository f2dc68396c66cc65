"""A provider's system reading its events from the ledger's JetStream stream: a durable
pull consumer with explicit acks, resumable after any restart, needing no HTTPS endpoint
and no open socket between runs.

    pip install nats-py
    set -a; . ./ledger-<code>.env; set +a     # written by `ledger relay creds --out`
    python examples/pull_consumer.py           # one JSON line per event, acked after use

Strict order (the default): `max_ack_pending=1`, so the server hands out the next event
only once this one is acked; a crash before the ack redelivers the same event. With
`--work-queue`, several copies of this program share the consumer and up to 1,000 events
are in flight: throughput, no order between them (each event carries `position`, so a
receiver can still drop a stale one per account).

Settings (environment): NATS_URL, NATS_USER, NATS_PASSWORD, NATS_INBOX_PREFIX,
NATS_STREAM, NATS_FILTER (e.g. `ledger.acme.>`; narrow it, e.g.
`ledger.acme.Account.SanctionImposed`, within what the credentials allow), NATS_CONSUMERS
(the names the credentials allow, comma-separated; the first is used).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

import nats
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy


async def consume(limit: int | None, work_queue: bool) -> None:
    nc = await nats.connect(
        os.environ.get("NATS_URL", "nats://127.0.0.1:4222"),
        user=os.environ.get("NATS_USER"),
        password=os.environ.get("NATS_PASSWORD"),
        inbox_prefix=os.environ.get("NATS_INBOX_PREFIX", "_INBOX"),
    )
    js = nc.jetstream()
    stream = os.environ.get("NATS_STREAM", "LEDGER")
    name = os.environ["NATS_CONSUMERS"].split(",")[0]
    config = ConsumerConfig(
        name=name,
        durable_name=name,
        filter_subject=os.environ["NATS_FILTER"],
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        max_ack_pending=1000 if work_queue else 1,
        ack_wait=30,
    )
    # Creating it again with the same config is a no-op: the server keeps its place.
    await js.add_consumer(stream, config)
    sub = await js.pull_subscribe_bind(durable=name, stream=stream)
    seen = 0
    try:
        while limit is None or seen < limit:
            try:
                messages = await sub.fetch(batch=100 if work_queue else 1, timeout=5)
            except NatsTimeout:
                continue  # nothing new yet
            for m in messages:
                event = json.loads(m.data)
                print(json.dumps({"subject": m.subject, "position": event["position"],
                                  "type": event["type"]}), flush=True)  # fmt: skip
                await m.ack_sync()  # acknowledged by the server: it will not come again
                seen += 1
    finally:
        await nc.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", type=int, default=None, help="stop after this many events")
    parser.add_argument("--work-queue", action="store_true", help="throughput, no strict order")
    args = parser.parse_args()
    asyncio.run(consume(args.max, args.work_queue))
    return 0


if __name__ == "__main__":
    sys.exit(main())
