"""Every projection, in an order where each comes after those it depends on."""

from __future__ import annotations

from collections.abc import Iterable

from projections.accounts import ACCOUNTS
from projections.base import Projection
from projections.disclosures import DISCLOSURES
from projections.flagged_posts import FLAGGED_POSTS
from projections.history import HISTORY
from projections.posts import POSTS
from projections.providers import PROVIDERS
from projections.sanctions import SANCTIONS

ALL: tuple[Projection, ...] = (
    POSTS, ACCOUNTS, SANCTIONS, HISTORY, FLAGGED_POSTS, PROVIDERS, DISCLOSURES
)  # fmt: skip
BY_NAME = {p.name: p for p in ALL}


class UnknownProjection(ValueError):
    pass


def resolve(names: Iterable[str] = ()) -> tuple[Projection, ...]:
    """The named projections and everything they depend on, in dependency order."""
    wanted = set(names) or set(BY_NAME)
    unknown = sorted(wanted - set(BY_NAME))
    if unknown:
        raise UnknownProjection(f"unknown projections {unknown}; known: {list(BY_NAME)}")
    pending = list(wanted)
    while pending:
        for dependency in BY_NAME[pending.pop()].depends_on:
            if dependency not in wanted:
                wanted.add(dependency)
                pending.append(dependency)
    return tuple(p for p in ALL if p.name in wanted)
