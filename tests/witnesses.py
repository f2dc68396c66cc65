"""Witnesses for tests: `ledger witness serve` as a real process on a free port, and a
small transparency log written from the specifications (a Merkle tree in memory and an
Ed25519 checkpoint key) to feed them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.merkle import DictNodeStore, MerkleTree, leaf_hash
from ledger.tlog.checkpoint import Checkpoint
from ledger.tlog.note import Ed25519Signer, sign_note
from tests.api_server import free_port


@dataclass
class WitnessProcess:
    name: str
    directory: Path
    logs: Sequence[str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    vkey: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config(self) -> Path:
        return self.directory / "witness.toml"

    def prepare(self) -> WitnessProcess:
        self.directory.mkdir(parents=True, exist_ok=True)
        key = self.directory / "witness.key"
        if not key.exists():
            self.vkey = ledger("witness", "keygen", self.name, "--key-file", str(key)).strip()
        logs = "".join(f'[[log]]\nkey = "{vkey}"\n' for vkey in self.logs)
        self.config.write_text(
            'key_file = "witness.key"\ndatabase = "state.sqlite3"\n'
            f'listen = "127.0.0.1:{self.port}"\n{logs}'
        )
        return self

    def start(self) -> WitnessProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "witness", "serve", "--config", str(self.config)],
            stderr=open(self.directory / "stderr.log", "ab"),  # noqa: SIM115
            env=env_without_ledger(),  # no database, no data dir: a witness needs neither
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"witness exited: {self.stderr()}")
            try:
                if httpx.get(self.url + "/", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError(f"witness did not start: {self.stderr()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(30)
        self.process = None

    def stderr(self) -> str:
        path = self.directory / "stderr.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def add_checkpoint(
        self, old: int, proof: Sequence[bytes], note: str, client: httpx.Client | None = None
    ) -> httpx.Response:
        body = request_body(old, proof, note)
        post = client.post if client else httpx.post
        return post(self.url + "/add-checkpoint", content=body, timeout=30)


def request_body(old: int, proof: Sequence[bytes], note: str) -> bytes:
    import base64

    lines = [f"old {old}"] + [base64.b64encode(h).decode() for h in proof]
    return ("\n".join(lines) + "\n\n" + note).encode()


def ledger(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@contextmanager
def witnesses(
    directory: Path, logs: Sequence[str], count: int = 1
) -> Iterator[list[WitnessProcess]]:
    started = [
        WitnessProcess(f"witness.test/w{i}", directory / f"w{i}", logs).prepare()
        for i in range(count)
    ]
    try:
        for w in started:
            w.start()
        yield started
    finally:
        for w in started:
            w.stop()


class SpecLog:
    """A log written from RFC 9162 and c2sp.org/tlog-checkpoint: leaves in memory."""

    def __init__(self, origin: str, key: Ed25519PrivateKey | None = None) -> None:
        self.signer = Ed25519Signer(origin, key or Ed25519PrivateKey.generate())
        self.tree = MerkleTree(DictNodeStore())
        self.size = 0

    @property
    def vkey(self) -> str:
        return self.signer.vkey

    def append(self, *entries: bytes) -> None:
        self.size = self.tree.extend([leaf_hash(e) for e in entries], self.size)

    def checkpoint(self, size: int | None = None) -> str:
        size = self.size if size is None else size
        return sign_note(
            Checkpoint(self.signer.name, size, self.tree.root(size)).text, [self.signer]
        )

    def proof(self, old: int, new: int | None = None) -> list[bytes]:
        new = self.size if new is None else new
        return [] if old in (0, new) else self.tree.consistency_proof(old, new)


def env_without_ledger() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env["LEDGER_DATABASE_URL"] = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"
    return env
