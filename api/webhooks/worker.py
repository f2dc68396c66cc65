"""The delivery worker (`ledger deliver`; `ledger serve` runs one as a child process).

Each step:
1. claims the endpoints no other worker holds (a session advisory lock per endpoint,
   released by PostgreSQL when a worker's connection ends, so a killed worker's endpoints
   pass to another at once);
2. follows the log (one worker at a time): the endpoints' own events into
   `webhook_endpoints` and who owns each account and post into `webhook_owners`, then the
   events the endpoints want into the outbox (no read model is waited for);
3. records the outcomes of finished attempts, in one transaction;
4. sends the deliveries whose turn it is: the oldest pending one of each originator, so an
   account's next event waits for the previous acknowledgement while other accounts go on.

Delivery state is only in PostgreSQL: a worker that dies loses what it had in flight, and
the next one sends it again under the same `webhook-id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

import aiohttp
import psycopg
from eventsourcing.persistence import Notification
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from api.webhooks import payload, signing
from ledger import errors
from ledger.actors import SYSTEM
from ledger.application import Ledger
from ledger.commands import PauseWebhookEndpoint
from ledger.database import Database
from ledger.log import LoggedEvent
from ledger.webhooks import KeyMaterial, Target, check_url
from projections import webhooks as state

log = logging.getLogger("ledger.deliver")

CONTROL_TYPES = (
    "Provider.WebhookRegistered",
    "Provider.WebhookUpdated",
    "Provider.WebhookPaused",
    "Provider.WebhookResumed",
    "Provider.WebhookDeleted",
    "Provider.WebhookReplayRequested",
    "Provider.WebhookSecretRotated",
)
# The events that say which provider owns an account or a post (a provider owns itself).
OWNER_TYPES = ["Account.Registered", "Post.Published"]
ENQUEUE_SPAN = 5000  # log positions per enqueue step
CONTROL_SPAN = 20000  # log positions scanned for the endpoints' own events per step
CACHE_SECONDS = 1.0
RETENTION_EVERY_S = 60.0
CLAIM_EVERY_S = 1.0
# After the first attempt of a round finishes, a moment for others to finish too: each
# round costs a few statements, whatever it carries.
GATHER_S = 0.01
FAULTS = (psycopg.OperationalError, psycopg.InterfaceError)


@dataclass(frozen=True)
class Settings:
    schedule: list[float]
    window: float
    timeout: float
    retry_after_cap: float
    retention: float
    concurrency: int
    poll: float = 0.05

    @classmethod
    def from_environment(cls) -> Settings:
        concurrency = os.environ.get("LEDGER_WEBHOOK_CONCURRENCY", "256")
        if not concurrency.isdigit() or int(concurrency) < 1:
            raise ValueError("LEDGER_WEBHOOK_CONCURRENCY must be a positive whole number")
        return cls(
            schedule=state.retry_schedule(),
            window=state.failure_window(),
            timeout=state.seconds_setting("LEDGER_WEBHOOK_TIMEOUT", 15),
            retry_after_cap=state.seconds_setting("LEDGER_WEBHOOK_RETRY_AFTER_MAX", 3600),
            retention=state.seconds_setting("LEDGER_WEBHOOK_ATTEMPT_RETENTION", 30 * 86400),
            concurrency=int(concurrency),
        )


@dataclass
class Job:
    endpoint_id: UUID
    position: int
    originator_id: UUID
    sequence: int
    msg_id: str
    attempts: int
    generation: int
    url: str
    body: bytes


@dataclass
class Outcome:
    job: Job
    status: int | None = None
    error: str | None = None
    latency: float = 0.0
    key_ids: list[str] = field(default_factory=list)
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def label(self) -> str:
        if self.ok:
            return "acknowledged"
        if self.status is not None:
            return f"http_{self.status // 100}xx"
        return self.error or "error"


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (seconds or an HTTP date); None when absent."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def connect_url(target: Target) -> tuple[str, dict[str, str], str | None]:
    """The URL with the checked address in place of the name (so the connection goes where
    the check said), the Host header, and the TLS name to verify the certificate against."""
    parts = urlsplit(target.url)
    address = str(target.address)
    host = f"[{address}]" if ":" in address else address
    netloc = f"{host}:{parts.port}" if parts.port else host
    url = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    header_host = parts.netloc.rsplit("@", 1)[-1]
    return url, {"host": header_host}, target.host if target.scheme == "https" else None


class Deliverer:
    def __init__(
        self, ledger: Ledger, database: Database, settings: Settings | None = None
    ) -> None:
        self.ledger = ledger
        self.database = database
        self.settings = settings or Settings.from_environment()
        self.schema = ledger.store.datastore.schema or "public"
        self.events_table = ledger.store.events_table
        self.conn: AsyncConnection[Any] | None = None
        self.locks: AsyncConnection[Any] | None = None
        self.held: set[UUID] = set()
        self.busy: dict[tuple[UUID, UUID], asyncio.Task[Outcome]] = {}
        self.done: list[Outcome] = []
        self.wake = asyncio.Event()
        # Lookups shared by concurrent sends, kept a second: URL checks and signing keys.
        self._targets: dict[str, tuple[float, asyncio.Future[Any]]] = {}
        self._keys: dict[UUID, tuple[float, asyncio.Future[Any]]] = {}
        self._pruned = 0.0
        self._claimed = 0.0
        self._followed = 0.0
        self.client: aiohttp.ClientSession | None = None

    # ----- connections and tables ------------------------------------------------------

    @property
    def _lock_name(self) -> str:
        # Each worker's lock connection: counted to share the endpoints out.
        return f"ledger-deliver-locks:{self.schema}"[:63]

    async def _connect(self, name: str = "ledger-deliver") -> AsyncConnection[Any]:
        conn = await AsyncConnection.connect(
            self.database.conninfo,
            autocommit=True,
            connect_timeout=5,
            application_name=name,
            row_factory=dict_row,
        )
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        await conn.execute("SET lock_timeout = '5s'")
        return conn

    async def setup(self) -> None:
        self.conn = await self._connect()
        self.locks = await self._connect(self._lock_name)
        async with self.conn.transaction():
            await self.conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.webhooks'))"
            )
            await self.conn.execute(state.DDL)

    async def close(self) -> None:
        for task in self.busy.values():
            task.cancel()
        self.busy.clear()
        self.done.clear()
        self.held.clear()
        for conn in (self.conn, self.locks):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        self.conn = self.locks = None

    # ----- the loop -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.1
        # No proxies from the environment (trust_env), no cookies kept between receivers;
        # the addresses are resolved and checked here, not by the connector.
        connector = aiohttp.TCPConnector(limit=self.settings.concurrency, use_dns_cache=False)
        async with aiohttp.ClientSession(
            connector=connector,
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
            skip_auto_headers=["User-Agent"],
            headers={"user-agent": "compliance-ledger-webhooks/1"},
        ) as self.client:
            while not stop.is_set():
                try:
                    await self.setup()
                    backoff = 0.1
                    while not stop.is_set():
                        wait = await self.step()
                        await self._pause(stop, wait)
                except FAULTS as e:
                    log.warning("deliver: database unavailable (%s); reconnecting",
                                type(e).__name__)  # fmt: skip
                    await self.close()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
            await self.close()

    async def _pause(self, stop: asyncio.Event, seconds: float) -> None:
        self.wake.clear()
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.wake.wait())]
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()
        if self.wake.is_set() and not stop.is_set():
            await asyncio.sleep(GATHER_S)

    async def step(self) -> float:
        """One round; the seconds until the next is due (at most the poll interval). Each
        round records what finished and sends what is due; claiming runs every second,
        following the log every poll interval."""
        now = time.monotonic()
        if now - self._claimed >= CLAIM_EVERY_S or not self.held:
            await self._claim()
            self._claimed = now
        if now - self._followed >= self.settings.poll:
            await self._follow()
            self._followed = now
        await self._record()
        wait = await self._dispatch()
        await self._prune()
        return min(wait, self.settings.poll)

    # ----- 1. claiming endpoints ------------------------------------------------------

    async def _claim(self) -> None:
        """Hold a fair share of the live endpoints: as many as the live endpoints divided
        by the workers on this schema (the sessions of their lock connections), rounded
        up; an idle one beyond the share is let go for another worker to take."""
        assert self.conn is not None and self.locks is not None
        rows = await (
            await self.conn.execute(
                "SELECT endpoint_id FROM webhook_endpoints WHERE status <> 'deleted'"
            )
        ).fetchall()
        live = {r["endpoint_id"] for r in rows}
        counted = await (
            await self.locks.execute(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = %s",
                [self._lock_name],
            )
        ).fetchone()
        workers = max(1, int(counted["n"]) if counted else 1)
        share = -(-len(live) // workers)
        idle = [e for e in sorted(self.held - live) + sorted(self.held) if self._idle(e)]
        extra = list(dict.fromkeys(idle))[: max(0, len(self.held) - share)]
        if extra:
            await self.locks.execute(
                "SELECT pg_advisory_unlock(hashtextextended(current_schema() || ':webhook:'"
                " || id::text, 0)) FROM unnest(%s::uuid[]) AS id",
                [extra],
            )
            self.held -= set(extra)
        wanted = sorted(live - self.held)[: max(0, share - len(self.held))]
        if wanted:
            found = await (
                await self.locks.execute(
                    "SELECT id FROM unnest(%s::uuid[]) AS id WHERE pg_try_advisory_lock("
                    "hashtextextended(current_schema() || ':webhook:' || id::text, 0))",
                    [wanted],
                )
            ).fetchall()
            self.held |= {r["id"] for r in found}
        # A lost lock connection fails the next statement, which ends every send.
        await self.locks.execute("SELECT 1")

    def _idle(self, endpoint_id: UUID) -> bool:
        return not any(e == endpoint_id for e, _ in self.busy) and not any(
            o.job.endpoint_id == endpoint_id for o in self.done
        )

    # ----- 2. following the log --------------------------------------------------------

    async def _follow(self) -> None:
        assert self.conn is not None
        async with self.conn.transaction():
            got = await (
                await self.conn.execute(
                    "SELECT pg_try_advisory_xact_lock(hashtext(current_schema()"
                    " || '.webhook-follow')) AS ok"
                )
            ).fetchone()
            if not got or not got["ok"]:
                return
            await self._apply_control()
            await self._enqueue()

    async def _events(self, query: sql.Composable, params: Sequence[Any]) -> list[LoggedEvent]:
        assert self.conn is not None
        rows = await (await self.conn.execute(query, params)).fetchall()
        out = []
        for r in rows:
            n = Notification(
                id=r["notification_id"],
                originator_id=r["originator_id"],
                originator_version=r["originator_version"],
                topic=r["topic"],
                state=bytes(r["state"]),
            )
            out.append(LoggedEvent.from_notification(n, self.ledger.mapper.to_domain_event(n)))
        return out

    async def _apply_control(self) -> None:
        """The endpoints' own events, read a bounded span of the log at a time: the cursor
        moves over the span read even when it held none."""
        assert self.conn is not None
        row = await (
            await self.conn.execute(
                sql.SQL(
                    "SELECT position, (SELECT coalesce(max(notification_id), 0) FROM {e}) AS head"
                    " FROM webhook_positions WHERE name = 'control' FOR UPDATE"
                ).format(e=self.events_table)
            )
        ).fetchone()
        if row is None or row["position"] >= row["head"]:
            return
        after, upto = row["position"], min(row["head"], row["position"] + CONTROL_SPAN)
        query = sql.SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state FROM {e}"
            " WHERE notification_id > %s AND notification_id <= %s AND topic = ANY(%s)"
            " ORDER BY notification_id"
        ).format(e=self.events_table)
        for e in await self._events(query, [after, upto, list(CONTROL_TYPES)]):
            await self._apply(e)
        await self.conn.execute(
            sql.SQL(state.OWNERS).format(events=self.events_table),
            {"lo": after, "hi": upto, "types": OWNER_TYPES},
        )
        await self.conn.execute(
            "UPDATE webhook_positions SET position = %s WHERE name = 'control'", [upto]
        )

    async def _apply(self, e: LoggedEvent) -> None:
        assert self.conn is not None
        p, kind = e.payload, e.type.removeprefix("Provider.Webhook")
        endpoint, at = p["endpoint_id"], e.position
        if kind == "Registered":
            await self.conn.execute(
                "INSERT INTO webhook_endpoints (endpoint_id, provider_id, url, event_types,"
                " status, enqueued, changed_position) VALUES (%s, %s, %s, %s, 'active', %s, %s)"
                " ON CONFLICT DO NOTHING",
                [endpoint, e.originator_id, p["url"], p["event_types"], at, at],
            )
            return
        changes = {
            "Updated": ("url = %s, event_types = %s", [p.get("url"), p.get("event_types")]),
            "Paused": ("status = 'paused', paused_reason = %s", [p.get("reason")]),
            "Resumed": ("status = 'active', paused_reason = NULL, failing_since = NULL", []),
            "Deleted": ("status = 'deleted'", []),
            "ReplayRequested": ("status = status", []),
            "SecretRotated": ("status = status", []),
        }[kind]
        if kind == "SecretRotated":  # sign with the new key from now on (other workers:
            self._keys.pop(UUID(endpoint), None)  # within a second, as their cache ages)
        await self.conn.execute(
            f"UPDATE webhook_endpoints SET {changes[0]}, changed_position = %s"  # type: ignore[arg-type]
            " WHERE endpoint_id = %s",
            [*changes[1], at, endpoint],
        )
        if kind == "Resumed":
            await self.conn.execute(
                "UPDATE webhook_deliveries SET next_attempt_at = now()"
                " WHERE endpoint_id = %s AND acked_at IS NULL",
                [endpoint],
            )
        elif kind == "ReplayRequested":
            await self._replay(endpoint, p.get("from_position"), p.get("from_time"))

    async def _replay(self, endpoint: str, position: int | None, since: str | None) -> None:
        assert self.conn is not None
        if position is not None:
            await self.conn.execute(
                "UPDATE webhook_deliveries SET acked_at = NULL, next_attempt_at = now(),"
                " generation = generation + 1 WHERE endpoint_id = %s AND position >= %s",
                [endpoint, position],
            )
            return
        await self.conn.execute(
            sql.SQL(
                "UPDATE webhook_deliveries d SET acked_at = NULL, next_attempt_at = now(),"
                " generation = d.generation + 1 FROM {e} e WHERE d.endpoint_id = %s"
                " AND e.notification_id = d.position"
                " AND (convert_from(e.state, 'UTF8')::json #>> '{{timestamp,_data_}}')"
                "::timestamptz >= %s"
            ).format(e=self.events_table),
            [endpoint, since],
        )

    async def _enqueue(self) -> None:
        assert self.conn is not None
        row = await (
            await self.conn.execute(
                "SELECT (SELECT position FROM webhook_positions WHERE name = 'control')"
                " AS projected,"
                " (SELECT min(enqueued) FROM webhook_endpoints WHERE status <> 'deleted') AS lo"
            )
        ).fetchone()
        if not row or row["projected"] is None or row["lo"] is None:
            return
        lo, projected = row["lo"], row["projected"]
        if projected <= lo:
            return
        hi = min(projected, lo + ENQUEUE_SPAN)
        enqueue = sql.SQL(state.ENQUEUE).format(events=self.events_table)
        cur = await self.conn.execute(enqueue, {"lo": lo, "hi": hi})
        await self.conn.execute(
            "UPDATE webhook_endpoints SET enqueued = %s WHERE status <> 'deleted'"
            " AND enqueued < %s",
            [hi, hi],
        )
        if cur.rowcount:
            self.wake.set()

    # ----- 3. recording outcomes ------------------------------------------------------

    def _collect(self) -> list[Outcome]:
        finished = [(k, t) for k, t in self.busy.items() if t.done()]
        outcomes = []
        for key, task in finished:
            del self.busy[key]
            if not task.cancelled():
                outcomes.append(task.result())
        return outcomes

    async def _record(self) -> None:
        assert self.conn is not None
        outcomes = self.done + self._collect()
        self.done = outcomes  # kept until recorded: a failed flush tries again
        if not outcomes:
            return
        s = self.settings
        acked = [o for o in outcomes if o.ok]
        failed = [o for o in outcomes if not o.ok]
        async with self.conn.transaction(), self.conn.cursor() as cur:
            if acked:
                await cur.executemany(
                    "UPDATE webhook_deliveries SET acked_at = now(), attempts = attempts + 1"
                    " WHERE endpoint_id = %s AND position = %s AND generation = %s",
                    [(o.job.endpoint_id, o.job.position, o.job.generation) for o in acked],
                )
                await cur.execute(
                    "UPDATE webhook_endpoints SET failing_since = NULL"
                    " WHERE endpoint_id = ANY(%s) AND failing_since IS NOT NULL",
                    [list({o.job.endpoint_id for o in acked})],
                )
            if failed:
                await cur.executemany(
                    "UPDATE webhook_deliveries SET attempts = attempts + 1,"
                    " next_attempt_at = now() + make_interval(secs => %s)"
                    " WHERE endpoint_id = %s AND position = %s AND generation = %s",
                    [
                        (
                            state.next_delay(
                                o.job.attempts + 1, s.schedule, o.retry_after, s.retry_after_cap
                            ),
                            o.job.endpoint_id,
                            o.job.position,
                            o.job.generation,
                        )
                        for o in failed
                    ],
                )
            await cur.executemany(
                "INSERT INTO webhook_attempts (endpoint_id, position, msg_id, attempt, status,"
                " error, latency_ms, key_ids) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        o.job.endpoint_id,
                        o.job.position,
                        o.job.msg_id,
                        o.job.attempts + 1,
                        o.status,
                        o.error,
                        o.latency * 1000,
                        o.key_ids,
                    )
                    for o in outcomes
                ],
            )
            await cur.executemany(
                "INSERT INTO webhook_counts VALUES (%s, 1, %s) ON CONFLICT (outcome) DO UPDATE"
                " SET n = webhook_counts.n + 1,"
                " latency_seconds = webhook_counts.latency_seconds + excluded.latency_seconds",
                [(o.label, o.latency) for o in outcomes],
            )
            expired: list[UUID] = []
            if failed:
                await cur.execute(
                    "UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, now())"
                    " WHERE endpoint_id = ANY(%s) RETURNING endpoint_id,"
                    " extract(epoch FROM now() - failing_since) AS failing",
                    [list({o.job.endpoint_id for o in failed})],
                )
                expired = [r["endpoint_id"] for r in await cur.fetchall()
                           if float(r["failing"]) > s.window]  # fmt: skip
        self.done = []
        gone = {o.job.endpoint_id for o in failed if o.status == 410}
        for endpoint_id in gone:
            await self._pause_endpoint(endpoint_id, "the receiver answered 410 Gone")
        for endpoint_id in set(expired) - gone:
            await self._pause_endpoint(
                endpoint_id,
                f"deliveries failed for longer than the failure window ({s.window:g} s)",
            )

    async def _pause_endpoint(self, endpoint_id: UUID, reason: str) -> None:
        """Pause as the system, recorded as an event with its reason; never skip."""
        assert self.conn is not None
        row = await (
            await self.conn.execute(
                "SELECT provider_id, changed_position, status FROM webhook_endpoints"
                " WHERE endpoint_id = %s",
                [endpoint_id],
            )
        ).fetchone()
        if row is None or row["status"] != "active":
            return
        command = PauseWebhookEndpoint(
            actor=SYSTEM,
            idempotency_key=f"webhook-pause:{endpoint_id}:{row['changed_position']}",
            provider_id=row["provider_id"],
            endpoint_id=endpoint_id,
            reason=reason,
        )
        with contextlib.suppress(errors.WebhookEndpointState, errors.WebhookEndpointNotFound):
            await asyncio.to_thread(self.ledger.execute, command)
        log.warning("deliver: endpoint %s paused: %s", endpoint_id, reason)
        # At once here; the event, applied in its turn, says the same.
        await self.conn.execute(
            "UPDATE webhook_endpoints SET status = 'paused', paused_reason = %s"
            " WHERE endpoint_id = %s AND status = 'active'",
            [reason, endpoint_id],
        )

    # ----- 4. sending ------------------------------------------------------------------

    async def _dispatch(self) -> float:
        assert self.conn is not None
        active = await (
            await self.conn.execute(
                "SELECT endpoint_id, url FROM webhook_endpoints"
                " WHERE status = 'active' AND endpoint_id = ANY(%s)",
                [list(self.held)],
            )
        ).fetchall()
        urls = {r["endpoint_id"]: r["url"] for r in active}
        if not urls:
            return self.settings.poll
        heads = await (
            await self.conn.execute(state.PENDING_HEADS, {"endpoints": list(urls)})
        ).fetchall()
        room = self.settings.concurrency - len(self.busy)
        due = [h for h in heads if h["due"] and (h["endpoint_id"], h["originator_id"])
               not in self.busy][: max(room, 0)]  # fmt: skip
        waits = [float(h["wait"]) for h in heads if not h["due"]]
        if due:
            for job in await self._jobs(due, urls):
                key = (job.endpoint_id, job.originator_id)
                task = asyncio.create_task(self._send(job))
                task.add_done_callback(lambda _: self.wake.set())
                self.busy[key] = task
        return max(0.0, min(waits, default=self.settings.poll))

    async def _jobs(self, heads: list[dict[str, Any]], urls: dict[UUID, str]) -> list[Job]:
        assert self.conn is not None
        rows = await (
            await self.conn.execute(
                "SELECT d.endpoint_id, d.position, d.originator_id, d.sequence, d.msg_id,"
                " d.attempts, d.generation FROM webhook_deliveries d"
                " JOIN unnest(%s::uuid[], %s::bigint[]) AS h(endpoint_id, position)"
                " USING (endpoint_id, position)",
                [[h["endpoint_id"] for h in heads], [h["position"] for h in heads]],
            )
        ).fetchall()
        query = sql.SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state FROM {e}"
            " WHERE notification_id = ANY(%s)"
        ).format(e=self.events_table)
        events = {
            e.position: e for e in await self._events(query, [list({r["position"] for r in rows})])
        }
        return [
            Job(
                endpoint_id=r["endpoint_id"],
                position=r["position"],
                originator_id=r["originator_id"],
                sequence=r["sequence"],
                msg_id=r["msg_id"],
                attempts=r["attempts"],
                generation=r["generation"],
                url=urls[r["endpoint_id"]],
                body=payload.body(events[r["position"]], r["sequence"]),
            )
            for r in rows
        ]

    async def _target(self, url: str) -> Target:
        """The URL checked (DNS and the address rules) at most once a second: concurrent
        sends to one URL share one lookup."""
        found = await self._cached(self._targets, url, lambda: asyncio.to_thread(check_url, url))
        return cast(Target, found)

    async def _signing_keys(self, endpoint_id: UUID) -> list[signing.SigningKey]:
        async def read() -> list[signing.SigningKey]:
            found = await asyncio.to_thread(
                self.ledger.webhook_secrets, endpoint_id, datetime.now(UTC)
            )
            return [signing.SigningKey(k, KeyMaterial.from_bytes(raw)) for k, raw in found]

        keys = await self._cached(self._keys, endpoint_id, read)
        return cast(list[signing.SigningKey], keys)

    @staticmethod
    async def _cached(
        cache: dict[Any, tuple[float, asyncio.Future[Any]]],
        key: Any,
        make: Callable[[], Awaitable[Any]],
    ) -> Any:
        now = time.monotonic()
        held = cache.get(key)
        if held is None or now - held[0] > CACHE_SECONDS:
            held = cache[key] = (now, asyncio.ensure_future(make()))
        return await asyncio.shield(held[1])

    async def _send(self, job: Job) -> Outcome:
        started = time.monotonic()
        outcome = Outcome(job)
        try:
            target = await self._target(job.url)
            keys = await self._signing_keys(job.endpoint_id)
        except errors.WebhookUrlRefused:
            outcome.error = "url_refused"
            return outcome
        except errors.LedgerError:
            outcome.error = "no_key"
            return outcome
        if not keys:
            outcome.error = "no_key"
            return outcome
        outcome.key_ids = [str(k.key_id) for k in keys]
        url, host, server_hostname = connect_url(target)
        headers = {**signing.headers(job.msg_id, int(time.time()), job.body, keys), **host}
        assert self.client is not None
        try:
            async with (
                asyncio.timeout(self.settings.timeout),
                self.client.post(
                    url,
                    data=job.body,
                    headers=headers,
                    allow_redirects=False,
                    server_hostname=server_hostname,
                ) as response,
            ):
                outcome.status = response.status
                outcome.retry_after = retry_after(response.headers.get("retry-after"))
        except TimeoutError:
            outcome.error = "timeout"
        except aiohttp.ClientConnectionError as e:
            refused = isinstance(e, aiohttp.ClientConnectorError)
            outcome.error = "connect_error" if refused else type(e).__name__
        except aiohttp.ClientError as e:
            outcome.error = type(e).__name__
        outcome.latency = time.monotonic() - started
        return outcome

    # ----- retention -------------------------------------------------------------------

    async def _prune(self) -> None:
        now = time.monotonic()
        if now - self._pruned < RETENTION_EVERY_S:
            return
        self._pruned = now
        assert self.conn is not None
        for _ in range(100):  # a batch per statement, so no transaction grows long
            cur = await self.conn.execute(
                "DELETE FROM webhook_attempts WHERE id IN (SELECT id FROM webhook_attempts"
                " WHERE at < now() - make_interval(secs => %s) LIMIT 10000)",
                [self.settings.retention],
            )
            if cur.rowcount < 10000:
                return


def deliver_until_stopped(ledger: Ledger, database: Database, stop: asyncio.Event) -> None:
    """Run the worker until `stop` is set (from a signal handler on the same loop)."""
    asyncio.run(Deliverer(ledger, database).run(stop))
