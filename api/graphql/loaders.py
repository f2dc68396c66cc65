"""DataLoaders: nested fields (a sanction's account, a post's account, an account's
posts' ...) load in one query per request and kind, not one per parent."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any
from uuid import UUID

from strawberry.dataloader import DataLoader

from api.graphql.context import Context, visible_provider
from api.graphql.reads import rows

Load = Callable[[Sequence[UUID]], Coroutine[Any, Any, list[dict[str, Any] | None]]]


def _by_id(context: Context, select: str, key: str) -> Load:
    async def load(ids: Sequence[UUID]) -> list[dict[str, Any] | None]:
        params: dict[str, Any] = {"ids": list(ids), "now": context.state.ledger.clock()}
        mine = visible_provider(context.who())
        confine = ""
        if mine is not None:
            confine, params["mine"] = " AND provider_id = %(mine)s", mine
        found = await rows(context.state, f"{select} WHERE {key} = ANY(%(ids)s){confine}", params)
        by_id = {r[key]: r for r in found}
        return [by_id.get(i) for i in ids]

    return load


def account_loader(context: Context) -> DataLoader[UUID, dict[str, Any] | None]:
    from api.graphql.queries import ACCOUNT_SELECT

    return context.loader("accounts", _by_id(context, ACCOUNT_SELECT, "account_id"))


def post_loader(context: Context) -> DataLoader[UUID, dict[str, Any] | None]:
    return context.loader("posts", _by_id(context, "SELECT * FROM posts", "post_id"))
