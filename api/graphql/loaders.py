"""DataLoaders: nested fields (a sanction's account, a post's account, an account's
posts' ...) load in one query per request and kind, not one per parent.

Each context (api.graphql.context, one per request) holds its own `Loaders`; the
types' resolvers reach them there and do not import this module."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any
from uuid import UUID

from strawberry.dataloader import DataLoader

from api.auth import Principal
from api.graphql.reads import rows, visible_provider
from api.graphql.selects import ACCOUNT_SELECT, POST_SELECT
from api.state import ApiState

Load = Callable[[Sequence[UUID]], Coroutine[Any, Any, list[dict[str, Any] | None]]]
Row = dict[str, Any] | None


class Loaders:
    """One request's DataLoaders, by kind: each maps an id to its row, or None when
    there is none the principal (asked for when a batch loads) may see."""

    def __init__(self, state: ApiState, who: Callable[[], Principal]) -> None:
        self.accounts: DataLoader[UUID, Row] = DataLoader(
            load_fn=_by_id(state, who, ACCOUNT_SELECT, "account_id")
        )
        self.posts: DataLoader[UUID, Row] = DataLoader(
            load_fn=_by_id(state, who, POST_SELECT, "post_id")
        )


def _by_id(state: ApiState, who: Callable[[], Principal], select: str, key: str) -> Load:
    async def load(ids: Sequence[UUID]) -> list[dict[str, Any] | None]:
        params: dict[str, Any] = {"ids": list(ids), "now": state.ledger.clock()}
        mine = visible_provider(who())
        confine = ""
        if mine is not None:
            confine, params["mine"] = " AND provider_id = %(mine)s", mine
        found = await rows(state, f"{select} WHERE {key} = ANY(%(ids)s){confine}", params)
        by_id = {r[key]: r for r in found}
        return [by_id.get(i) for i in ids]

    return load
