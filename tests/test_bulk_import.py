"""`ledger import --bulk` against the command path: the same file, with retries, reused
keys, unknown ids, wrong roles, hostile strings and malformed lines mixed in, imported both
ways into two fresh schemas, must give the same report (every refused line with the same
code) and the same log; and `--bulk` from the command line stops or skips as the command
path does."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError

from ledger import Database, Ledger, bulk_import
from ledger import commands as c
from ledger.demo import Demo
from ledger.importer import Report, run_import, to_line
from ledger.ruleset import load_ruleset
from ledger.vault import Vault
from tests.test_import import ledger_cli, provider_line, write_lines
from tests.world import REGULATOR, World

NOW = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)  # one moment for both: expiries agree
HOSTILE = ["nul\x00here", "lone \ud800 surrogate", "x" * 1_000_000, str(uuid.uuid4())]


def mixed_lines() -> list[str]:
    """The demo's commands, and after some of them a bad or repeated line."""
    commands = [cmd for batch in Demo(load_ruleset(), 12).batches() for cmd in batch]
    out: list[str] = []
    for i, cmd in enumerate(commands):
        line = to_line(cmd)
        out.append(line)
        d = json.loads(line)
        if i % 7 == 3:
            out.append(line)  # a retry: replays
        if i % 11 == 5 and (text := _text_arg(d)):
            out.append(_with(d, **{text: d["args"][text] + "!"}))  # key reused, other args
        if i % 13 == 6 and "account_id" in d["args"]:
            out.append(_with(d, key=f"u{i}", account_id=str(uuid.uuid4())))  # no such account
        if i % 17 == 8:
            out.append(_with(d, key=f"r{i}", actor={**d["actor"], "role": "auditor"}))
        if i % 19 == 9 and (text := _text_arg(d)):
            hostile = HOSTILE[(i // 19) % len(HOSTILE)]
            out.append(_with(d, key=f"h{i}", **{text: hostile}))
        if i % 23 == 10:
            out.append('{"command": "PublishPost", "args": ')  # malformed
    # Refused after it changed something: a verification seals a new key, then finds the
    # account closed. Nothing of it may stay (the key neither).
    verify = next(cmd for cmd in commands if isinstance(cmd, c.VerifyIdentity))
    close = c.ImposeSanction(actor=REGULATOR, idempotency_key="close", account_id=verify.account_id,
                             level="closed", rule_ids=("art.9",), reason="r")  # fmt: skip
    out += [to_line(close), to_line(replace(verify, idempotency_key="again"))]
    return out


def _text_arg(d: dict[str, Any]) -> str | None:
    return next(
        (k for k, v in d["args"].items() if isinstance(v, str) and not k.endswith("id")), None
    )


def _with(d: dict[str, Any], key: str | None = None, actor: Any = None, **args: Any) -> str:
    changed = {"idempotency_key": key or d["idempotency_key"], "actor": actor or d["actor"]}
    return json.dumps({**d, **changed, "args": {**d["args"], **args}})


@pytest.fixture
def two(database: Database, vault: Vault) -> Iterator[tuple[Ledger, Ledger]]:
    schemas = [f"b_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    ledgers = []
    for s in schemas:
        database.create_schema(s)
        ledgers.append(Ledger(database.eventsourcing_env(s), vault=vault, clock=lambda: NOW))
    try:
        yield ledgers[0], ledgers[1]
    finally:
        for ledger, s in zip(ledgers, schemas, strict=True):
            ledger.close()
            database.drop_schema(s)


def logged(ledger: Ledger) -> list[tuple[Any, ...]]:
    """The log, each event's state without what differs by construction: the sealed
    identity (a fresh data key and nonce each time)."""
    out = []
    for e in ledger.read_log():
        payload = {k: v for k, v in e.payload.items() if k != "identity"}
        out.append((e.position, e.type, e.originator_id, e.originator_version, repr(payload)))
    return out


def problems(report: Report) -> list[tuple[int, str]]:
    """By line: a malformed line is reported as the batch holding it is read, so the order
    follows the batch size."""
    return sorted((p.line, p.code) for p in report.problems)


@pytest.mark.parametrize("skip", [True, False], ids=["skip", "stop"])
def test_bulk_and_the_command_path_agree_line_for_line(
    two: tuple[Ledger, Ledger], skip: bool
) -> None:
    lines = mixed_lines()
    plain, bulk = two
    by_command = run_import(plain, lines, batch=40, skip=skip)
    in_bulk = run_import(bulk, lines, batch=150, skip=skip, bulk=True)
    assert problems(in_bulk) == problems(by_command)
    assert (in_bulk.recorded, in_bulk.replayed, in_bulk.status) == (
        by_command.recorded,
        by_command.replayed,
        by_command.status,
    )
    assert logged(bulk) == logged(plain)
    assert bulk.store.keys_by_kek() == plain.store.keys_by_kek()
    if skip:  # the file meets every kind of refusal
        codes = {code for _, code in problems(by_command)}
        assert {"IDEMPOTENCY_KEY_REUSED", "ACCOUNT_NOT_FOUND", "MALFORMED"} <= codes, codes
        assert problems(by_command)[-1][0] == len(lines)  # the verification of a closed one
        assert by_command.replayed > 0 and by_command.recorded > 100
    else:  # stopped at the first refused line (malformed ones already read are named too)
        assert by_command.problems and by_command.recorded < 100

    # Run again: every line replays (or is refused again), nothing is written.
    head = bulk.head()
    again = run_import(bulk, lines, batch=150, skip=skip, bulk=True)
    assert bulk.head() == head
    assert again.recorded == 0 and problems(again) == problems(by_command)


def test_a_cold_ledger_reads_what_bulk_wrote(two: tuple[Ledger, Ledger], database: Database,
                                            vault: Vault) -> None:  # fmt: skip
    """Another process's view: a fresh ledger loads every aggregate the bulk path wrote,
    as the writer holds it in memory."""
    _, bulk = two
    run_import(bulk, mixed_lines(), batch=150, skip=True, bulk=True)
    cold = Ledger(database.eventsourcing_env(bulk.store.datastore.schema), vault=vault)
    try:
        ids = {e.originator_id for e in bulk.read_log()}
        for aggregate_id in ids:
            assert cold.repository.get(aggregate_id) == bulk.repository.get(aggregate_id)
    finally:
        cold.close()


@pytest.mark.parametrize("bulk", [[], ["--bulk"]], ids=["command path", "bulk"])
def test_the_command_line_stops_or_skips_in_bulk_too(
    database: Database, schema: str, tmp_path: Path, make_ledger, bulk: list[str]  # type: ignore[no-untyped-def]
) -> None:  # fmt: skip
    lines = [provider_line("a", "a"), provider_line("b", "a"), provider_line("c", "c")]
    path = write_lines(tmp_path / "dup.jsonl", lines)  # line 2 registers code "a" again
    stopped = ledger_cli(database, schema, tmp_path, "import", str(path), *bulk)
    err = stopped.stderr.read()  # type: ignore[union-attr]
    assert stopped.returncode == 1 and "dup.jsonl:2: ALREADY_EXISTS" in err, err
    skipped = ledger_cli(database, schema, tmp_path, "import", str(path), "--on-error", "skip",
                         *bulk)  # fmt: skip
    out = skipped.stdout.read()  # type: ignore[union-attr]
    assert skipped.returncode == 1 and "recorded 1, already recorded 1" in out, out
    ledger: Ledger = make_ledger()
    assert [e.type for e in ledger.read_log()] == ["Provider.Registered"] * 2


def test_the_version_check_holds_for_copy(make_ledger) -> None:  # type: ignore[no-untyped-def]
    """A batch validated before another writer (another process) changed what it read is
    not written: the COPY fails on the events' key, nothing of it stays, and a fresh
    validation records it after the other writer's event."""
    ledger, other = make_ledger(), make_ledger()
    world = World(ledger)
    post = world.post(world.account("raced"))

    def reach(key: str, views: int) -> c.Command:
        return c.RecordReach(actor=world.ops, idempotency_key=key, post_id=post, views=views,
                             reposts=0)  # fmt: skip

    validated = bulk_import.validate(ledger, [reach("mine", 10)])
    other.execute(reach("theirs", 20))
    head = ledger.head()
    with pytest.raises(IntegrityError):  # the event store's, as the command path's
        bulk_import.write(ledger, validated)
    assert ledger.head() == head
    assert ledger.store.prior_outcomes([(world.ops.id, "mine")]) == {}
    report = run_import(ledger, [to_line(reach("mine", 30))], bulk=True)
    assert report.recorded == 1 and not report.problems
    assert [e.payload["views"] for e in ledger.read_log(types=["Post.ReachRecorded"])] == [20, 30]
