"""Tamper evidence over GraphQL (auditors and regulators): signed tree heads and proofs,
each with everything needed to check it offline (`ledger verify-proof` or proofcheck.py)."""

from __future__ import annotations

import base64
from typing import Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from api.graphql.context import Context
from api.graphql.errors import ApiError, bad_input
from api.graphql.scalars import Position
from api.state import ApiState
from projections import integrity, tlog

Ctx = Info[Context, None]


@strawberry.type
class TreeHead:
    tree_size: Position  # type: ignore[valid-type]
    root_hash: str
    timestamp: str
    signature: str
    public_key: str

    @classmethod
    def of(cls, head: dict[str, Any], public_key: str) -> TreeHead:
        return cls(
            tree_size=head["tree_size"],
            root_hash=head["root_hash"],
            timestamp=head["timestamp"],
            signature=head["signature"],
            public_key=public_key,
        )


@strawberry.type
class InclusionProof:
    position: Position  # type: ignore[valid-type]
    index: int
    leaf_hash: str
    tree_size: Position  # type: ignore[valid-type]
    proof: list[str]
    head: TreeHead
    document: JSON = strawberry.field(description="The proof as `ledger verify-proof` reads it.")
    leaf_data: str | None = strawberry.field(
        default=None,
        description="The event's leaf data as stored now, base64 (hash it with 0x00 in front"
        " and compare with `leafHash`); null when the event carries a sealed identity.",
    )
    stored_leaf_hash: str | None = strawberry.field(
        default=None,
        description="The leaf hash of the event as stored now, hex (null: no event stored at"
        " the position); differs from `leafHash` when the stored event was altered.",
    )


@strawberry.type
class ConsistencyProof:
    old_head: TreeHead
    new_head: TreeHead
    proof: list[str]
    document: JSON = strawberry.field(description="The proof as `ledger verify-proof` reads it.")


@strawberry.type
class TlogProof:
    text: str = strawberry.field(
        description="A c2sp.org/tlog-proof@v1 text: the event's entry in the `extra` line, its"
        " leaf index, its inclusion proof, then the checkpoint with every cosignature held."
    )


def _auditor(info: Ctx) -> ApiState:
    if not info.context.who().sees_everything:
        raise ApiError("FORBIDDEN", "tree heads and proofs are for auditors and regulators")
    return info.context.state


def _read(state: ApiState, fn: Any, *args: Any) -> Any:
    with state.database.connect(state.schema, autocommit=True) as conn:
        try:
            return fn(conn, *args)
        except integrity.ProofError as e:
            raise ApiError("NOT_FOUND", str(e)) from None
        except ValueError as e:
            raise bad_input(str(e)) from None


@strawberry.type
class IntegrityQuery:
    @strawberry.field(description="The latest signed tree head, or the one of a given size.")
    async def tree_head(
        self,
        info: Ctx,
        size: Position | None = None,  # type: ignore[valid-type]
    ) -> TreeHead | None:
        state = _auditor(info)
        head = await state.blocking(_read, state, integrity.head, size)
        return TreeHead.of(head, state.public_key) if head else None

    @strawberry.field(description="Proof that the event at a position is in a signed tree.")
    async def inclusion_proof(
        self,
        info: Ctx,
        position: Position,  # type: ignore[valid-type]
        tree_size: Position | None = None,  # type: ignore[valid-type]
    ) -> InclusionProof:
        state = _auditor(info)
        p = await state.blocking(_read, state, integrity.inclusion_proof, position, tree_size)
        events = state.ledger.store.events_table
        stored = await state.blocking(_read, state, integrity.stored_leaf, events, position)
        data = stored and stored["leaf_data"]
        return InclusionProof(
            leaf_data=base64.b64encode(data).decode() if data else None,
            stored_leaf_hash=stored and stored["leaf_hash"],
            position=p["position"],
            index=p["index"],
            leaf_hash=p["leaf_hash"],
            tree_size=p["tree_size"],
            proof=p["proof"],
            head=TreeHead.of(p["head"], state.public_key),
            document=p,
        )

    @strawberry.field(description="Proof that one signed tree is a prefix of another.")
    async def consistency_proof(
        self,
        info: Ctx,
        from_size: Position,  # type: ignore[valid-type]
        to_size: Position,  # type: ignore[valid-type]
    ) -> ConsistencyProof:
        state = _auditor(info)
        p = await state.blocking(_read, state, integrity.consistency_proof, from_size, to_size)
        return ConsistencyProof(
            old_head=TreeHead.of(p["old_head"], state.public_key),
            new_head=TreeHead.of(p["new_head"], state.public_key),
            proof=p["proof"],
            document=p,
        )

    @strawberry.field(
        description="The proof that the event at a position is in the latest checkpoint (or"
        " the one of `treeSize`), in the c2sp.org/tlog-proof@v1 text form."
    )
    async def tlog_proof(
        self,
        info: Ctx,
        position: Position,  # type: ignore[valid-type]
        tree_size: Position | None = None,  # type: ignore[valid-type]
    ) -> TlogProof:
        state = _auditor(info)
        events = state.ledger.store.events_table
        text: str = await state.blocking(_read, state, tlog.tlog_proof, events, position, tree_size)
        return TlogProof(text=text)
