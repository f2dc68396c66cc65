"""Rebuilds by folding: each read model's rows kept in memory over one read of the whole
log, then written once with COPY (`projections.folds.run`). One module per read model,
each mirroring its projection's handlers; `projections.bulk` is the way for anything
the folds do not cover."""

from __future__ import annotations

from projections.folds.accounts import AccountsFold
from projections.folds.base import Fold
from projections.folds.history import DisclosuresFold, FlaggedPostsFold, HistoryFold
from projections.folds.posts import PostsFold
from projections.folds.providers import ProvidersFold
from projections.folds.sanctions import SanctionsFold

FOLDS: dict[str, type[Fold]] = {
    fold.name: fold
    for fold in (
        PostsFold, AccountsFold, SanctionsFold, HistoryFold, FlaggedPostsFold, ProvidersFold,
        DisclosuresFold,
    )
}  # fmt: skip
