"""The SELECTs over the read tables that more than one reader shares: the resolvers
(api.graphql.queries), the DataLoaders (api.graphql.loaders) and the compiled path
(api.graphql.compiler). Each is completed with a WHERE by its reader."""

from __future__ import annotations

from projections.accounts import status_sql

ACCOUNT_COLUMNS = (
    "account_id, provider_id, handle, kind, category, legacy, registered_at, verified,"
    " verified_at, verification_method, agreement_version, agreement_signed_at,"
    " review_outcome, reviewed_at, filing_reference, filed_at, news_scopes, marked,"
    " active_sanctions, sanctions_by_level, post_count, position, last_position"
)
# An account row with its status at %(now)s (a lapsed suspension counting as lapsed).
ACCOUNT_SELECT = f"SELECT {ACCOUNT_COLUMNS}, {status_sql()} AS status, %(now)s AS now FROM accounts"
POST_SELECT = "SELECT * FROM posts"
