"""Mutations: one per write-side command, generated from the command dataclasses, and
`submitBatch`. Each takes an `idempotencyKey` and returns a union of `CommandSuccess` and
typed errors carrying the domain error's code and message."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from datetime import datetime
from typing import Annotated, Any, Union
from uuid import UUID

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from api.graphql.context import Context
from api.graphql.scalars import Position
from ledger import Ledger, errors
from ledger import commands as c
from ledger.actors import Role
from ledger.webhooks import KeyMaterial

Ctx = Info[Context, None]


@strawberry.interface
class MutationError:
    code: str
    message: str
    details: JSON | None = None
    batch_index: int | None = None


@strawberry.type(description="The arguments are malformed or name unknown rules or options.")
class InvalidInput(MutationError):
    pass


@strawberry.type(description="What the command acts on does not exist or is not yours.")
class NotFound(MutationError):
    pass


@strawberry.type(description="Your role may not issue this command.")
class NotPermitted(MutationError):
    pass


@strawberry.type(description="The ledger's rules refuse the command in the current state.")
class RuleViolation(MutationError):
    pass


@strawberry.type(description="Lost a race too often, reused an idempotency key, or a duplicate.")
class Conflict(MutationError):
    pass


@strawberry.type(description="The store could not be reached; retry with the same key.")
class Unavailable(MutationError):
    pass


@strawberry.type(description="The command was recorded (or had been, under this key).")
class CommandSuccess:
    command: str
    position: Position | None  # type: ignore[valid-type]
    replayed: bool
    provider_id: strawberry.ID | None = None
    account_id: strawberry.ID | None = None
    post_id: strawberry.ID | None = None
    sanction_id: strawberry.ID | None = None
    report_id: strawberry.ID | None = None
    expires_at: datetime | None = None
    endpoint_id: strawberry.ID | None = strawberry.field(
        default=None, description="The webhook endpoint registered or acted on."
    )
    public_key: str | None = strawberry.field(
        default=None, description="The endpoint's Ed25519 public key (`whpk_…`, scheme v1a)."
    )
    secret: str | None = strawberry.field(
        default=None,
        description="The endpoint's new `whsec_` secret (scheme v1): shown only in the answer"
        " to its registration or rotation (and to a retry of it under the same key).",
    )
    result: JSON


@strawberry.type(description="Every command of the batch was recorded, in one transaction.")
class BatchSuccess:
    results: list[CommandSuccess]


ERRORS = (InvalidInput, NotFound, NotPermitted, RuleViolation, Conflict, Unavailable)
_INVALID = {
    "INVALID_ARGUMENT", "UNKNOWN_RULE", "NO_RULE_CITED", "UNKNOWN_SANCTION_LEVEL",
    "WEBHOOK_URL_REFUSED", "DURATION_NOT_ALLOWED", "UNKNOWN_AGREEMENT", "BASELINES_INCOMPLETE",
    "ENTRY_TOO_LARGE",
}  # fmt: skip
_CONFLICT = {"CONFLICT", "IDEMPOTENCY_KEY_REUSED", "ALREADY_EXISTS"}


def error_payload(e: errors.LedgerError, principal_role: Role) -> MutationError:
    code, message, details = e.code, e.message, e.details
    if code == "NOT_YOUR_ACCOUNT" and principal_role is Role.PROVIDER:
        # Another provider's data is invisible: the same answer as for a missing one.
        code, message, details = _as_missing(e.details)
    if code in _INVALID:
        kind: type[MutationError] = InvalidInput
    elif code.endswith("_NOT_FOUND"):
        kind = NotFound
    elif code in ("ROLE_NOT_PERMITTED", "RATE_LIMITED"):
        kind = NotPermitted
    elif code in _CONFLICT:
        kind = Conflict
    elif code == "STORAGE_UNAVAILABLE":
        kind = Unavailable
    else:
        kind = RuleViolation
    return kind(code=code, message=message, details=details or None, batch_index=e.batch_index)


def _as_missing(details: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    for key, code, message in (
        ("post_id", "POST_NOT_FOUND", "no such post"),
        ("account_id", "ACCOUNT_NOT_FOUND", "no such account"),
        ("provider_id", "PROVIDER_NOT_FOUND", "no such provider"),
    ):
        if key in details:
            return code, message, {key: details[key]}
    return "ACCOUNT_NOT_FOUND", "no such account", {}


def success(result: Any) -> CommandSuccess:
    value = result.value

    def ident(name: str) -> strawberry.ID | None:
        return strawberry.ID(value[name]) if value.get(name) else None

    expires = value.get("expires_at")
    return CommandSuccess(
        command=result.command,
        position=result.position,
        replayed=result.replayed,
        provider_id=ident("provider_id"),
        account_id=ident("account_id"),
        post_id=ident("post_id"),
        sanction_id=ident("sanction_id"),
        report_id=ident("report_id"),
        expires_at=datetime.fromisoformat(expires) if expires else None,
        endpoint_id=ident("endpoint_id"),
        public_key=value.get("public_key"),
        result=value,
    )


def with_secret(answer: CommandSuccess, result: Any, ledger: Ledger) -> CommandSuccess:
    """Registration and rotation answer with the new secret, read back from the key table
    (the idempotency record keeps only the key's id)."""
    key_id, endpoint_id = result.value.get("key_id"), result.value.get("endpoint_id")
    if key_id is None or endpoint_id is None:
        return answer
    for found, raw in ledger.webhook_secrets(UUID(endpoint_id)):
        if str(found) == key_id:
            answer.secret = KeyMaterial.from_bytes(raw).secret
    return answer


# ----- inputs generated from the commands ---------------------------------------------


def _graphql_type(hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return _graphql_type(inner) | None
    if origin is tuple:
        return list[_graphql_type(typing.get_args(hint)[0])]
    return strawberry.ID if hint is UUID else hint


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _input_type(command: type[c.Command]) -> type:
    hints = typing.get_type_hints(command)
    fields = []
    for f in dataclasses.fields(command):
        if f.name in ("actor", "idempotency_key"):
            continue
        kind = _graphql_type(hints[f.name])
        optional = f.default is not dataclasses.MISSING
        if optional and typing.get_origin(kind) is not types.UnionType:
            kind = kind | None
        fields.append((f.name, kind, dataclasses.field(default=None) if optional else None))
    spec = [(n, k) if d is None else (n, k, d) for n, k, d in fields]
    cls = dataclasses.make_dataclass(f"{command.__name__}Input", spec)
    return strawberry.input(cls, description=(command.__doc__ or "").strip() or None)


INPUTS: dict[type[c.Command], type] = {cmd: _input_type(cmd) for cmd in c.ALL_COMMANDS}


def build_command(command: type[c.Command], data: Any, key: str, context: Context) -> c.Command:
    args = {k: v for k, v in dataclasses.asdict(data).items() if v is not None}
    return command(actor=context.who().actor, idempotency_key=key, **args)


def result_union(name: str, *members: type) -> Any:
    return Annotated[Union[members], strawberry.union(name)]  # noqa: UP007


def _mutation(command: type[c.Command]) -> Any:
    input_type = INPUTS[command]
    result_type = result_union(f"{command.__name__}Result", CommandSuccess, *ERRORS)

    async def resolve(info: Ctx, input: Any, idempotency_key: str) -> Any:
        context = info.context
        try:
            cmd = build_command(command, input, idempotency_key, context)
            result = await context.state.blocking(context.state.ledger.execute, cmd)
            if "key_id" not in result.value:
                return success(result)
            ledger = context.state.ledger
            return await context.state.blocking(with_secret, success(result), result, ledger)
        except errors.LedgerError as e:
            return error_payload(e, context.who().role)

    resolve.__annotations__ = {
        "info": Ctx,
        "input": input_type,
        "idempotency_key": str,
        "return": result_type,
    }
    return strawberry.mutation(
        resolver=resolve, description=(command.__doc__ or "").strip() or None
    )


def _batch_input() -> type:
    spec: list[tuple[str, Any, Any]] = [
        (_snake(cmd.__name__), INPUTS[cmd] | None, dataclasses.field(default=None))
        for cmd in c.ALL_COMMANDS
    ]
    cls = dataclasses.make_dataclass("BatchCommand", [("idempotency_key", str), *spec])
    return strawberry.input(cls, description="One command of a batch: set exactly one field.")


BatchCommand = _batch_input()
BatchResult = result_union("BatchResult", BatchSuccess, *ERRORS)
MAX_BATCH = 500


async def submit_batch(info: Ctx, commands: list[BatchCommand]) -> BatchResult:  # type: ignore[valid-type]
    context = info.context
    try:
        if not 1 <= len(commands) <= MAX_BATCH:
            raise errors.InvalidArgument(f"a batch holds 1 to {MAX_BATCH} commands")
        built = []
        for index, item in enumerate(commands):
            chosen = [
                (cmd, getattr(item, _snake(cmd.__name__)))
                for cmd in c.ALL_COMMANDS
                if getattr(item, _snake(cmd.__name__)) is not None
            ]
            if len(chosen) != 1:
                e = errors.InvalidArgument("each batch entry sets exactly one command")
                e.batch_index = index
                raise e
            ((cmd, data),) = chosen
            try:
                built.append(build_command(cmd, data, item.idempotency_key, context))
            except errors.LedgerError as e:
                e.batch_index = index
                raise
        results = await context.state.blocking(context.state.ledger.submit, built)
        answers = [
            await context.state.blocking(with_secret, success(r), r, context.state.ledger)
            if "key_id" in r.value
            else success(r)
            for r in results
        ]
    except errors.LedgerError as e:
        return error_payload(e, context.who().role)
    return BatchSuccess(results=answers)


def mutation_type() -> type:
    fields: dict[str, Any] = {_snake(cmd.__name__): _mutation(cmd) for cmd in c.ALL_COMMANDS}
    fields["submit_batch"] = strawberry.mutation(
        resolver=submit_batch, description="Apply a list of commands: all of them or none."
    )
    return strawberry.type(type("Mutation", (), fields))


Mutation = mutation_type()
