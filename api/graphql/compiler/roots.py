"""The root fields the compiler covers: for each, its input (the WHERE the resolver
would build, checked the same way) and its SQL (a subquery giving the field's JSON)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from api.auth import Principal
from api.graphql import queries as q
from api.graphql.compiler.objects import Builder, build, json_list
from api.graphql.compiler.plan import Selection
from api.graphql.compiler.sql import Unsupported, cursor, json_object
from api.graphql.reads import Where, page_bounds, parse_id
from api.graphql.selects import ACCOUNT_SELECT, POST_SELECT
from projections import providers as figures


@dataclass(frozen=True)
class Input:
    """What one root field reads: its WHERE clauses (they shape the text) and its
    parameters (values only)."""

    clauses: tuple[str, ...]
    params: dict[str, Any]


Inputs = Callable[[Principal, dict[str, Any], datetime], Input]
Sql = Callable[[Builder, Selection, tuple[str, ...]], str]


@dataclass(frozen=True)
class Root:
    inputs: Inputs
    sql: Sql
    page_kind: str | None = None  # a connection: the kind of its cursors


def _where(where: Where) -> Input:
    return Input(tuple(where.clauses), where.params)


_SNAKE = re.compile(r"(?<!^)(?=[A-Z])")


def _filter(cls: type, value: dict[str, Any] | None) -> Any:
    """A filter input as the resolver receives it (graphql-core gives a dict)."""
    if value is None:
        return None
    return cls(**{_SNAKE.sub("_", k).lower(): v for k, v in value.items()})


# ----- inputs ----------------------------------------------------------------------------


def _one(make: Callable[[Where, str], Where]) -> Inputs:
    def inputs(principal: Principal, args: dict[str, Any], now: datetime) -> Input:
        return _where(q.confine(principal, make(Where(), args["id"])))

    return inputs


def _page(kind: str, where: Callable[[Principal, dict[str, Any]], Where]) -> Inputs:
    def inputs(principal: Principal, args: dict[str, Any], now: datetime) -> Input:
        found = where(principal, args)
        size, after = page_bounds(kind, args.get("first"), args.get("after"))
        found.add("position > %(after)s", after=after)
        return Input(tuple(found.clauses), {**found.params, "size": size, "limit": size + 1})

    return inputs


def _accounts(principal: Principal, args: dict[str, Any]) -> Where:
    f = _filter(q.AccountFilter, args.get("filter"))
    return q.accounts_where(q.confine(principal, Where()), f)


def _sanctions(principal: Principal, args: dict[str, Any]) -> Where:
    f = _filter(q.SanctionFilter, args.get("filter"))
    return q.sanctions_where(q.confine(principal, Where()), f)


def _flagged(principal: Principal, args: dict[str, Any]) -> Where:
    f = _filter(q.FlaggedPostFilter, args.get("filter"))
    return q.flagged_where(q.confine(principal, Where()), f)


def _history(principal: Principal, args: dict[str, Any]) -> Where:
    where = q.history_where(Where(), args["accountId"], args.get("since"), args.get("until"))
    return q.confine(principal, where)


def _provider(principal: Principal, args: dict[str, Any], now: datetime) -> Input:
    ids = q.provider_ids_for(principal, parse_id(args["id"]))
    return Input((), figures.figures_params(now, ids))


def _providers(principal: Principal, args: dict[str, Any], now: datetime) -> Input:
    return Input((), figures.figures_params(now, q.providers_for(principal)))


def _status(principal: Principal, args: dict[str, Any], now: datetime) -> Input:
    return Input((), {"wall": datetime.now(UTC)})


# ----- SQL -------------------------------------------------------------------------------


def _row(select: str, type_name: str) -> Sql:
    def sql(b: Builder, s: Selection, clauses: tuple[str, ...]) -> str:
        t = b.alias()
        where = " AND ".join(clauses) or "true"
        return f"(SELECT {build(b, type_name, s.children, t)} FROM ({select} WHERE {where}) {t})"

    return sql


def _connection(select: str, kind: str, node: str) -> Sql:
    """A page ordered by position: `size` rows, one more to learn whether there is a
    next page (keyset_page's query, as a subquery)."""

    def sql(b: Builder, s: Selection, clauses: tuple[str, ...]) -> str:
        t = b.alias()
        where = " AND ".join(clauses) or "true"
        page = (
            f"(SELECT *, row_number() OVER (ORDER BY position) AS _n FROM ({select}"
            f" WHERE {where} ORDER BY position LIMIT %(limit)s) _p) {t}"
        )
        pairs = [(c.key, _connection_field(b, c, t, kind, node)) for c in s.children]
        # HAVING makes it one aggregate row, also when no field aggregates (__typename)
        return f"(SELECT {json_object(pairs)} FROM {page} HAVING true)"

    return sql


def _connection_field(b: Builder, s: Selection, t: str, kind: str, node: str) -> str:
    shown = f"{t}._n <= %(size)s"
    if s.name == "__typename":
        return f"'{node}Connection'"
    if s.name == "edges":
        pairs = []
        for e in s.children:
            if e.name == "cursor":
                pairs.append((e.key, cursor(kind, f"{t}.position")))
            elif e.name == "node":
                pairs.append((e.key, build(b, node, e.children, t)))
            else:
                pairs.append((e.key, f"'{node}Edge'"))
        edge = json_object(pairs)
        return f"coalesce(json_agg({edge} ORDER BY {t}.position) FILTER (WHERE {shown}), '[]')"
    if s.name == "pageInfo":
        pairs = []
        for p in s.children:
            if p.name == "hasNextPage":
                pairs.append((p.key, "(count(*) > %(size)s)"))
            elif p.name == "endCursor":
                last = f"max({t}.position) FILTER (WHERE {shown})"
                pairs.append((p.key, cursor(kind, last)))
            else:
                pairs.append((p.key, "'PageInfo'"))
        return json_object(pairs)
    raise Unsupported(f"connection field {s.name}")


def _figures(single: bool) -> Sql:
    """Providers with their figures: projections.providers.FIGURES_SQL as a subquery,
    so however the figures are computed, this reads the same."""

    def sql(b: Builder, s: Selection, clauses: tuple[str, ...]) -> str:
        t = b.alias()
        rows = f"({figures.FIGURES_SQL}) {t}"
        if single:
            return f"(SELECT {build(b, 'Provider', s.children, t)} FROM {rows})"
        return json_list(b, s, rows, f"{t}.code", t)

    return sql


def _ledger_status(b: Builder, s: Selection, clauses: tuple[str, ...]) -> str:
    if not b.events_table:
        raise Unsupported("ledgerStatus without the events table")
    t = b.alias()
    head = f"(SELECT coalesce(max(notification_id), 0) AS head FROM {b.events_table}) {t}"
    return f"(SELECT {build(b, 'LedgerStatus', s.children, t)} FROM {head})"


ROOTS: dict[str, Root] = {
    "account": Root(_one(q.account_where), _row(ACCOUNT_SELECT, "Account")),
    "post": Root(_one(q.post_where), _row(POST_SELECT, "Post")),
    "accounts": Root(
        _page("account", _accounts), _connection(ACCOUNT_SELECT, "account", "Account"), "account"
    ),
    "sanctions": Root(
        _page("sanction", _sanctions),
        _connection("SELECT * FROM sanctions", "sanction", "Sanction"),
        "sanction",
    ),
    "history": Root(
        _page("history", _history),
        _connection("SELECT * FROM history", "history", "HistoryEntry"),
        "history",
    ),
    "flaggedPosts": Root(
        _page("flagged", _flagged),
        _connection("SELECT * FROM flagged_posts", "flagged", "FlaggedPost"),
        "flagged",
    ),
    "provider": Root(_provider, _figures(single=True)),
    "providers": Root(_providers, _figures(single=False)),
    "ledgerStatus": Root(_status, _ledger_status),
}
