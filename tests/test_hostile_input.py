"""Text the database cannot store, or that makes no sense where it is sent, is refused
at the write side with INVALID_ARGUMENT and writes nothing: every string field of every
command, idempotency keys and actor ids included."""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any
from uuid import UUID

import pytest

from ledger import Actor, Ledger, Role, errors
from ledger import commands as c
from tests.api_server import ApiServer
from tests.world import REGULATOR, World

HOSTILE = {
    "nul": "bad\x00reason",
    "lone surrogate": "bad\ud800reason",
    "escape": "bad\x1b[31mreason",
    "bell": "\x07",
    "del": "bad\x7f",
    "c1": "bad\x85",
}


def string_fields() -> list[tuple[type[c.Command], str]]:
    out = []
    for command in (*c.ALL_COMMANDS, c.DiscloseIdentity):
        hints = typing.get_type_hints(command)
        for f in dataclasses.fields(command):
            if f.name != "actor" and "str" in str(hints[f.name]):
                out.append((command, f.name))
    return out


def arguments(command: type[c.Command], name: str, value: str) -> dict[str, Any]:
    """Plausible values for every required field, and `value` in field `name`."""
    hints = typing.get_type_hints(command)
    args: dict[str, Any] = {}
    for f in dataclasses.fields(command):
        if f.name == "actor" or (f.default is not dataclasses.MISSING and f.name != name):
            continue
        hint = str(hints[f.name])
        if "tuple" in hint:
            args[f.name] = [value] if f.name == name else ["x"]
        elif "str" in hint:
            args[f.name] = value if f.name == name else "x"
        elif "UUID" in hint:
            args[f.name] = UUID(int=1)
        else:
            args[f.name] = 1
    return args


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
@pytest.mark.parametrize(
    ("command", "name"), string_fields(), ids=[f"{c.__name__}.{n}" for c, n in string_fields()]
)
def test_every_string_field_refuses_what_cannot_be_stored(
    command: type[c.Command], name: str, text: str
) -> None:
    with pytest.raises(errors.InvalidArgument) as refused:
        command(actor=REGULATOR, **arguments(command, name, text))
    assert refused.value.details["field"] == name


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_actor_ids_refuse_control_characters_and_surrogates(text: str) -> None:
    with pytest.raises(errors.InvalidArgument):
        Actor(text, Role.REGULATOR)


def test_line_breaks_belong_in_free_text_only(ledger: Ledger) -> None:
    world = World(ledger)
    account = world.account()
    world.sanction(account, "warning")  # a plain reason
    reason = "first line\n\tsecond line\r\n"
    world.run(c.ImposeSanction, REGULATOR, account_id=account, level="warning",
              rule_ids=["art.9"], reason=reason)  # fmt: skip
    head = ledger.head()
    for field, value in (("handle", "two\nlines"), ("handle", "tab\there")):
        with pytest.raises(errors.InvalidArgument, match=field):
            world.run(c.RegisterAccount, provider_id=world.provider, kind="personal",
                      **{field: value})  # fmt: skip
    with pytest.raises(errors.InvalidArgument, match="idempotency_key"):
        ledger.execute(
            c.UnmarkAccount(actor=REGULATOR, idempotency_key="k\n", account_id=account, reason="r")
        )
    assert ledger.head() == head


def test_long_and_foreign_texts(ledger: Ledger) -> None:
    world = World(ledger)
    account = world.account()
    head = ledger.head()
    megabyte = "x" * 1_000_000
    for args in (
        {"reason": megabyte},
        {"reason": "r", "rule_ids": [megabyte]},
        {"reason": "r", "rule_ids": ["art.9"] * 101},
    ):
        with pytest.raises(errors.InvalidArgument):
            world.run(c.ImposeSanction, REGULATOR, account_id=account, level="warning",
                      **{"rule_ids": ["art.9"], **args})  # fmt: skip
    with pytest.raises(errors.InvalidArgument):
        ledger.execute(c.UnmarkAccount(actor=REGULATOR, idempotency_key=megabyte,
                                       account_id=account, reason="r"))  # fmt: skip
    assert ledger.head() == head
    # Any script, emoji and astral characters are text like any other.
    reason = "违规 🚫 \U0001d518 é"
    sanction = world.run(c.ImposeSanction, REGULATOR, account_id=account, level="warning",
                         rule_ids=["art.9"], reason=reason)["sanction_id"]  # fmt: skip
    assert ledger.get_account(account).sanctions[sanction]["reason"] == reason


# ----- through the API ---------------------------------------------------------------

OUT = "{ __typename ... on MutationError { code message details } }"
REPORT = f"""mutation($post: ID!, $reason: String!, $key: String!) {{ reportPost(input: {{
  postId: $post, reporter: "user", reason: $reason}}, idempotencyKey: $key) {OUT} }}"""


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_the_api_refuses_hostile_text_as_invalid_input(
    server: ApiServer, ledger: Ledger, text: str
) -> None:
    world = World(ledger)
    post = str(world.post(world.account()))
    token = server.token("provider", world.provider)
    head = ledger.head()
    for reason, key in ((text, "k1"), ("fine", "k" + text)):
        # As JSON escapes (\u0000, \ud800), which is how a client sends them.
        body = json.dumps({"query": REPORT, "variables": {"post": post, "reason": reason,
                                                          "key": key}})  # fmt: skip
        response = server.post(body, token, headers={"Content-Type": "application/json"})
        got = response.json()["data"]["reportPost"]
        assert got["__typename"] == "InvalidInput" and got["code"] == "INVALID_ARGUMENT", got
    assert ledger.head() == head
