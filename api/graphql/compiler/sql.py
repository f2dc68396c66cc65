"""SQL text pieces that make PostgreSQL write JSON values exactly as strawberry
serialises them: DateTime as Python's isoformat, cursors as `encode_cursor`, shares
rounded as Python's round(). Only names and constants from our own code are put into
the text; every value is a parameter."""

from __future__ import annotations

import re

NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]*\Z")
PARAM = re.compile(r"%\((\w+)\)s")
# Parameters every part of a statement shares: the clock (bound once) and the provider
# the principal is confined to.
SHARED = frozenset({"now", "mine"})


class Unsupported(Exception):
    """The operation has a shape the compiler does not cover: strawberry answers it."""


def key(name: str) -> str:
    """A response key (a GraphQL name or alias, checked) as an SQL literal."""
    if not NAME.match(name):
        raise Unsupported(f"not a GraphQL name: {name[:40]!r}")
    return f"'{name}'"


def json_object(pairs: list[tuple[str, str]]) -> str:
    """json_build_object of (key, SQL expression) pairs, in that order (none: every
    field was skipped by @skip or @include, and the object is empty)."""
    if len(pairs) > 50:  # a function takes at most 100 arguments
        raise Unsupported("an object of more than 50 fields")
    return "json_build_object(" + ", ".join(f"{key(k)}, {v}" for k, v in pairs) + ")"


def iso(expr: str) -> str:
    """A timestamptz as Python's isoformat() of the datetime psycopg reads (in the
    session's time zone): microseconds only when not zero, offset as +HH:MM. One
    to_char; only the fraction can be `.000000` (the offset holds no dot)."""
    return f"replace(to_char({expr}, 'YYYY-MM-DD\"T\"HH24:MI:SS.USTZH:TZM'), '.000000', '')"


def cursor(kind: str, position: str) -> str:
    """encode_cursor(kind, position): URL-safe base64 of `kind:position`, unpadded."""
    if not NAME.match(kind):
        raise ValueError(kind)
    return (
        f"rtrim(translate(encode(convert_to('{kind}:' || {position}, 'UTF8'), 'base64'),"
        " '+/', '-_'), '=')"
    )


def share(part: str, whole: str) -> str:
    """Python's round((part or 0) / whole, 4) (None when whole is 0) as float8.

    Python rounds the double nearest part/whole, half to even. Away from a tie at the
    fourth decimal the exact quotient rounds the same; at a tie (part/whole = t/20000,
    t odd) the result follows the double: up when the binary rounding went up, half to
    even when the double is exact (a dyadic quotient), down otherwise."""
    p, q = f"coalesce({part}, 0)::numeric", f"({whole})::numeric"
    n = f"(20000 * {p})"
    t = f"div({n}, {q})"
    tie = f"(mod({n}, {q}) = 0 AND mod({t}, 2) = 1)"
    shift = f"(52 - floor(log(2, {p} / {q})))"  # scales the quotient into [2^52, 2^53)
    rest = f"mod({p} * power(2::numeric, {shift}), {q})"
    up = f"(CASE WHEN {rest} = 0 THEN mod(({t} + 1) / 2, 2) = 0 ELSE 2 * {rest} > {q} END)"
    return (
        f"(CASE WHEN coalesce({whole}, 0) = 0 THEN NULL"
        f" WHEN NOT {tie} THEN round({p} / {q}, 4)::float8"
        f" ELSE ((CASE WHEN {up} THEN ({t} + 1) / 2 ELSE ({t} - 1) / 2 END) / 10000)::float8 END)"
    )


def prefixed(text: str, prefix: str) -> str:
    """Rename a part's parameters apart from the other parts' (the shared ones stay)."""
    return PARAM.sub(lambda m: m[0] if m[1] in SHARED else f"%({prefix}{m[1]})s", text)


def prefixed_params(params: dict[str, object], prefix: str) -> dict[str, object]:
    return {k if k in SHARED else prefix + k: v for k, v in params.items()}
