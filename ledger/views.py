"""Plain JSON-able views of aggregate state. Identities are never shown, only whether
one is held."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from ledger.domain import Account, Post, Provider
from ledger.domain.account import sanction_in_force
from ledger.log import to_json
from ledger.ruleset import Ruleset


def account_view(account: Account, ruleset: Ruleset, now: datetime) -> dict[str, Any]:
    return cast(
        dict[str, Any],
        to_json(
            {
                "id": account.id,
                "version": account.version,
                "provider_id": account.provider_id,
                "handle": account.handle,
                "kind": account.kind,
                "category": account.category,
                "legacy": account.legacy,
                "registered_at": account.registered_at,
                "status": account.status(now),
                "identity": "erased"
                if account.identity_erased
                else "sealed"
                if account.identity
                else None,
                "verified_at": account.verified_at,
                "verification_method": account.verification_method,
                "agreement": account.agreement,
                "agreement_current": account.agreement_current(ruleset),
                "review": account.review,
                "filing": account.filing,
                "news_scopes": sorted(account.news_scopes(ruleset)),
                "news_grants": account.news_grants,
                "marked": account.marked,
                "may_publish_limited_as_legacy": account.limited_as_legacy(ruleset),
                "sanctions": [
                    {**s, "in_force": sanction_in_force(s, now)} for s in account.sanctions.values()
                ],
                "as_of": now,
            }
        ),
    )


def post_view(post: Post) -> dict[str, Any]:
    return cast(
        dict[str, Any],
        to_json(
            {
                "id": post.id,
                "version": post.version,
                "account_id": post.account_id,
                "provider_id": post.provider_id,
                "ref": post.ref,
                "origin": post.origin,
                "category": post.category,
                "content_sha256": post.content_sha256,
                "source_post_id": post.source_post_id,
                "published_at": post.published_at,
                "views": post.views,
                "reposts": post.reposts,
                "thresholds_crossed": post.crossed,
                "reports": post.reports,
                "removed": post.removed,
            }
        ),
    )


def provider_view(provider: Provider) -> dict[str, Any]:
    return cast(
        dict[str, Any],
        to_json(
            {
                "id": provider.id,
                "version": provider.version,
                "code": provider.code,
                "name": provider.name,
                "licence_ref": provider.licence_ref,
                "registered_at": provider.registered_at,
                "qualifications": provider.qualifications,
            }
        ),
    )
