"""`ledger serve` as an operator runs it: the API processes only serve, and the projector
and the sealer run as child processes that are restarted when they die and never outlive
the server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.rows import DictRow

from ledger import Ledger
from tests.api_server import free_port
from tests.cold import ColdProcess
from tests.world import World

FOLLOWERS = ("projector", "sealer")
LEDGER = [sys.executable, "-m", "api.cli"]


def children(pid: int) -> dict[int, str]:
    """The command lines of a process's children."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found[int(entry.name)] = cmdline
    return found


def followers(pid: int) -> dict[str, int]:
    """Which child runs which follower."""
    return {
        name: child
        for child, cmdline in children(pid).items()
        for name in FOLLOWERS
        if f"project --only {name}" in cmdline
    }


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(check: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def projected(url: str, ledger: Ledger) -> bool:
    """Every follower, the sealer's tree included, has reached the log's head."""
    report = httpx.get(url.replace("/graphql", "/readyz"), timeout=5).json()
    lags = report.get("lag", {})
    return report.get("head") == ledger.head() and "merkle" in lags and not any(lags.values())


def test_followers_are_children_restarted_when_killed(
    cold: ColdProcess, ledger: Ledger
) -> None:
    world = World(ledger)
    with cold.serve(free_port(), "--workers", "2") as url:
        assert cold.served is not None
        server = cold.served.pid
        first = followers(server)
        assert set(first) == set(FOLLOWERS), children(server)
        for name in FOLLOWERS:
            os.kill(first[name], signal.SIGKILL)
        wait_until(lambda: set(followers(server)) == set(FOLLOWERS)
                   and not set(followers(server).values()) & set(first.values()),
                   "the killed followers were not restarted")  # fmt: skip
        world.sanction(world.account(), "warning")
        wait_until(lambda: projected(url, ledger), "a write after the restart was not projected")
        # The API processes (uvicorn's workers) hold no follower of their own.
        api = api_processes(server)
        assert len(api) == 2, children(server)
        for pid in api:
            assert followers(pid) == {} and children(pid) == {}
        last = followers(server)
    # SIGTERM (by cold.serve) stopped the server cleanly: no follower outlives it.
    assert not any(alive(pid) for pid in last.values())


def test_no_follower_outlives_a_killed_server(cold: ColdProcess) -> None:
    process = subprocess.Popen(
        [*LEDGER, "serve", "--port", str(free_port()), "--workers", "1"],
        env=cold.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(lambda: set(followers(process.pid)) == set(FOLLOWERS), "no followers started")
        started = followers(process.pid)
    finally:
        process.kill()
        process.wait()
    wait_until(lambda: not any(alive(pid) for pid in started.values()),
               "a follower outlived its killed server", timeout=10)  # fmt: skip


@pytest.mark.parametrize("only", ["projector", "sealer"])
def test_project_only_runs_one_follower(
    cold: ColdProcess, reader: psycopg.Connection[DictRow], only: str
) -> None:
    """What the server's children run: `ledger project --only NAME`, stopped by SIGTERM."""
    process = subprocess.Popen(
        [*LEDGER, "project", "--only", only], env=cold.env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    listening = (
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'ledger-projector-listen'"
    )
    wait_until(lambda: reader.execute(listening).fetchone()["n"] == 1,  # type: ignore[index]
               f"{only} did not start following", timeout=60)  # fmt: skip
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert f"{only}: stopped" in err, err


def test_no_api_process_outlives_a_killed_server(cold: ColdProcess) -> None:
    """uvicorn's workers too: one left behind would hold the port a restart needs."""
    port = free_port()
    process = subprocess.Popen([*LEDGER, "serve", "--port", str(port), "--workers", "2"],
                               env=cold.env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_until(lambda: len(api_processes(process.pid)) == 2, "no API processes started")
        started = api_processes(process.pid)
    finally:
        process.kill()
        process.wait()
    wait_until(lambda: not any(alive(pid) for pid in started),
               "an API process outlived its killed server", timeout=10)  # fmt: skip
    with cold.serve(port) as url:  # the port is free again
        assert httpx.get(url.replace("/graphql", "/healthz"), timeout=5).status_code == 200


def api_processes(server: int) -> list[int]:
    return [pid for pid, cmdline in children(server).items() if "spawn_main" in cmdline]


def test_the_embedded_database_stops_with_a_server_of_several_workers(tmp_path: Path) -> None:
    """Only `ledger serve` itself holds the embedded server: its workers and followers
    reach it as an external one, so it stops when the server does."""
    env = {k: v for k, v in os.environ.items() if k not in ("LEDGER_DATABASE_URL", "LEDGER_SCHEMA")}
    env["LEDGER_DATA_DIR"] = str(tmp_path)
    port = free_port()
    process = subprocess.Popen([*LEDGER, "serve", "--port", str(port), "--workers", "2"],
                               env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_until(lambda: healthy(port) and len(api_processes(process.pid)) == 2,
                   "ledger serve did not start", timeout=90)  # fmt: skip
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    postmaster = tmp_path / "pgdata" / "postmaster.pid"
    wait_until(lambda: not postmaster.exists(), "the embedded PostgreSQL outlived the server")


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
