"""`ledger relay`: the log into a real nats-server's JetStream, exactly once, in order,
one subject per provider, aggregate and event type; read back with nats-py."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest
from nats.js.api import StreamConfig

from api.relay.body import SELECTION
from api.relay.relay import Relay
from ledger import Database, Ledger
from ledger import commands as c
from projections.runner import Projector
from projections.sealer import Sealer
from tests.api_server import ApiServer, free_port
from tests.cold import ColdProcess
from tests.nats_server import NatsServer
from tests.relay_helpers import (
    STREAM,
    assert_stream_equals_log,
    env,
    ledger_process,
    read_stream,
    wait_for_stream,
)
from tests.test_subscription_fanout import LARGE, hostile_sanction
from tests.world import REGULATOR, World


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer(tmp_path / "nats") as server:
        yield server


def relay_once(ledger: Ledger, database: Database, url: str) -> None:
    """Relay in this process until the stream holds the whole log."""

    async def run() -> None:
        relay = Relay(ledger, database, url, STREAM)
        await relay.open()
        try:
            while await relay.step():
                pass
        finally:
            await relay.close()

    asyncio.run(run())


def test_events_reach_their_subjects_with_their_headers(
    ledger: Ledger, database: Database, projector: Projector, schema: str,
    nats_server: NatsServer,
) -> None:  # fmt: skip
    world = World(ledger)
    account = world.account()
    world.sanction(account, "warning")
    projector.catch_up()
    sealer = Sealer(ledger, database, schema)
    sealer.setup()
    sealer.sign_now()
    sealer.close()
    world.sanction(account, "warning")
    projector.catch_up()
    relay_once(ledger, database, nats_server.url)
    log = list(ledger.read_log())
    stored = read_stream(nats_server.url)
    assert [int(s.headers["Ledger-Position"]) for s in stored] == [e.position for e in log]
    by_type = {s.headers["Ledger-Type"]: s for s in stored}
    assert by_type["Provider.Registered"].subject == "ledger.acme.Provider.Registered" or any(
        s.subject == "ledger.rival.Provider.Registered" for s in stored
    )
    assert by_type["Account.SanctionImposed"].subject == "ledger.acme.Account.SanctionImposed"
    for s, e in zip(stored, log, strict=True):
        assert s.headers["Nats-Msg-Id"] == str(e.position)
        assert s.headers["Ledger-Originator-Id"] == str(e.originator_id)
        assert s.headers["Ledger-Originator-Version"] == str(e.originator_version)
        shown = json.loads(s.data)
        assert (shown["position"], shown["type"]) == (str(e.position), e.type) or (
            shown["position"], shown["type"]) == (e.position, e.type)  # fmt: skip
    sealed = [s for s in stored if "Ledger-Sealed-Tree-Size" in s.headers]
    assert sealed and len(sealed) < len(stored)  # the last sanction came after the head


def test_a_checkpoint_lost_past_the_duplicate_window_yields_no_duplicate(
    ledger: Ledger, database: Database, projector: Projector, reader: object,
    nats_server: NatsServer,
) -> None:  # fmt: skip
    """The stream's messages were acknowledged but the checkpoint went back (a database
    restored from a backup, a commit lost): once the server's duplicate window has passed,
    only the reconciliation with the stream's last message keeps out duplicates."""
    asyncio.run(create_stream(nats_server.url, duplicate_window=0.5))
    world = World(ledger)
    for _ in range(3):
        world.sanction(world.account(), "warning")
    projector.catch_up()
    relay_once(ledger, database, nats_server.url)
    before = read_stream(nats_server.url)
    with database.connect(projector.schema, autocommit=True) as conn:
        conn.execute("UPDATE relay_positions SET position = 0, sequence = 0")
    time.sleep(1.0)  # past the window: the server would store a re-publish
    world.sanction(world.account(), "warning")
    projector.catch_up()
    relay_once(ledger, database, nats_server.url)
    assert_stream_equals_log(nats_server.url, ledger)
    assert len(read_stream(nats_server.url)) > len(before)
    with database.connect(projector.schema, autocommit=True) as conn:
        row = conn.execute("SELECT reconciled, duplicates FROM relay_positions").fetchone()
    assert row == (len(before), 0)


async def create_stream(url: str, duplicate_window: float) -> None:
    nc = await nats.connect(url)
    await nc.jetstream().add_stream(
        StreamConfig(name=STREAM, subjects=["ledger.>"], duplicate_window=duplicate_window)
    )
    await nc.close()


def test_hostile_events_are_relayed_byte_for_byte_as_the_api_serves_them(
    server: ApiServer, ledger: Ledger, database: Database, schema: str, data_dir: Path,
    nats_server: NatsServer,
) -> None:  # fmt: skip
    world = World(ledger)
    account = world.account()
    after = ledger.head()
    for text in ("nul \x00 here", "marker-surrogate", "marker-large"):
        hostile_sanction(world, account, text)
    with database.connect(schema, autocommit=True) as conn:
        for marker, text in (("marker-surrogate", "lone \\ud800 surrogate"),
                             ("marker-large", LARGE)):  # fmt: skip
            conn.execute(
                "UPDATE ledger_events SET state = convert_to(replace(convert_from(state,"
                " 'UTF8'), %s, %s), 'UTF8')",
                (marker, text),
            )
    world.sanction(account, "warning")  # after them: the relay goes on
    logs = data_dir / "relay.log"
    relay = ledger_process(env(database, schema, data_dir, nats_server.url), "relay", log=logs)
    try:
        wait_for_stream(nats_server.url, len(list(ledger.read_log())))
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.wait(30)
    stored = {int(s.headers["Ledger-Position"]): s for s in read_stream(nats_server.url)}
    frames = asyncio.run(sse_events(server, after, 4))
    assert len(frames) == 4
    for frame in frames:
        position = json.loads(frame)["data"]["events"]["position"]
        body = stored[int(position)].data
        assert frame.encode() == b'{"data":{"events":' + body + b"}}"
        assert "Ledger-Payload-Omitted" not in stored[int(position)].headers
    bodies = b"".join(stored[int(json.loads(f)["data"]["events"]["position"])].data for f in frames)
    for escaped in (b"\\u0000", b"\\ud800", LARGE.encode()):
        assert escaped in bodies
    assert "Traceback" not in logs.read_text()


async def sse_events(server: ApiServer, after: int, count: int) -> list[str]:
    """The `data` of the first `count` events of an `events` subscription over SSE."""
    query = f"subscription($after: Position) {{ events(after: $after) {{ {SELECTION} }} }}"
    token = server.token("regulator")
    found: list[str] = []
    async with httpx.AsyncClient(timeout=30) as client:
        request = client.build_request(
            "POST", server.url, json={"query": query, "variables": {"after": str(after)}},
            headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
        )  # fmt: skip
        response = await client.send(request, stream=True)
        buffered = b""
        async for chunk in response.aiter_raw():
            buffered += chunk
            *events, buffered = buffered.split(b"\n\n")
            for event in events:
                for line in event.decode().split("\n"):
                    if line.startswith("data: "):
                        found.append(line[len("data: ") :])
            if len(found) >= count:
                break
        await response.aclose()
    return found[:count]


def test_serve_runs_the_relay_and_status_and_metrics_show_it(
    cold: ColdProcess, ledger: Ledger, nats_server: NatsServer
) -> None:
    world = World(ledger)
    world.sanction(world.account(), "warning")
    cold.env["LEDGER_NATS_URL"] = nats_server.url
    with cold.serve(free_port(), "--relay") as url:
        count = len(list(ledger.read_log()))
        wait_for_stream(nats_server.url, count)
        head = ledger.head()
        deadline = time.monotonic() + 10
        while f'ledger_relay_position{{stream="LEDGER"}} {head}.0' not in (
            text := httpx.get(url.replace("/graphql", "/metrics")).text
        ):
            assert time.monotonic() < deadline, text[-3000:]
            time.sleep(0.2)
        assert 'ledger_relay_lag_events{stream="LEDGER"} 0.0' in text
        assert f'ledger_relay_publishes{{stream="LEDGER"}} {count}.0' in text
        status = cold.cli("status")
    assert "relay LEDGER" in status.stdout and f"{count} published" in status.stdout, status
    assert_stream_equals_log(nats_server.url, ledger)


def test_an_event_larger_than_the_server_takes_goes_without_its_payload(
    ledger: Ledger, database: Database, projector: Projector, schema: str, tmp_path: Path
) -> None:
    world = World(ledger)
    account = world.account()
    hostile_sanction(world, account, "marker-large")
    with database.connect(schema, autocommit=True) as conn:
        conn.execute(
            "UPDATE ledger_events SET state = convert_to(replace(convert_from(state,"
            " 'UTF8'), 'marker-large', %s), 'UTF8')",
            (LARGE,),
        )
    world.sanction(account, "warning")
    projector.catch_up()
    with NatsServer(tmp_path / "small", max_payload="900KB") as small:
        relay_once(ledger, database, small.url)
        stored = assert_stream_equals_log(small.url, ledger)
    large = [s for s in stored if "Ledger-Payload-Omitted" in s.headers]
    assert len(large) == 1 and int(large[0].headers["Ledger-Payload-Omitted"]) > len(LARGE)
    shown = json.loads(large[0].data)
    assert shown["payload"] is None and shown["type"] == "Account.SanctionImposed"
    assert json.loads(stored[-1].data)["payload"]["reason"] == "breach"


def test_provider_codes_become_single_subject_tokens(
    ledger: Ledger, database: Database, projector: Projector, nats_server: NatsServer
) -> None:
    world = World(ledger)
    codes = {
        "tencent.qq": "tencent%2Eqq",
        "微信": "%E5%BE%AE%E4%BF%A1",
        "_under": "%5Funder",
        "a b*>": "a%20b%2A%3E",
        "%": "%25",
    }
    for code in codes:
        world.run(c.RegisterProvider, REGULATOR, code=code, name=code, licence_ref="L")
    projector.catch_up()
    relay_once(ledger, database, nats_server.url)
    subjects = {json.loads(s.data)["payload"].get("code"): s.subject
                for s in read_stream(nats_server.url)}  # fmt: skip
    for code, token in codes.items():
        assert subjects[code] == f"ledger.{token}.Provider.Registered"
        assert len(subjects[code].split(".")) == 4


def test_nothing_imports_nats_py_unless_a_relay_runs() -> None:
    code = (
        "import sys, api.app, api.cli, api.metrics, api.serve, api.supervisor\n"
        "from api.cli import build_parser\n"
        "build_parser().parse_args(['relay', 'creds', '--provider', 'x'])\n"
        "assert 'nats' not in sys.modules, sorted(m for m in sys.modules if 'nats' in m)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).parent.parent)  # fmt: skip
    assert done.returncode == 0, done.stderr
