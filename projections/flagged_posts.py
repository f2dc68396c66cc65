"""flagged_posts: posts whose reach crossed a threshold, and whether they were removed."""

from __future__ import annotations

from collections.abc import Iterable

from ledger.log import LoggedEvent
from ledger.ruleset import Ruleset
from projections.base import Projection, Statement

DDL = (
    """CREATE TABLE IF NOT EXISTS flagged_posts (
        post_id uuid NOT NULL,
        metric text NOT NULL,
        threshold bigint NOT NULL,
        value bigint NOT NULL,
        account_id uuid NOT NULL,
        provider_id uuid NOT NULL,
        crossed_at timestamptz NOT NULL,
        removed_at timestamptz,
        position bigint NOT NULL,
        PRIMARY KEY (post_id, metric, threshold))""",
    "CREATE INDEX IF NOT EXISTS flagged_posts_position ON flagged_posts (position)",
    "CREATE INDEX IF NOT EXISTS flagged_posts_provider ON flagged_posts (provider_id, position)",
    "CREATE INDEX IF NOT EXISTS flagged_posts_account ON flagged_posts (account_id, position)",
    "CREATE INDEX IF NOT EXISTS flagged_posts_crossed_at ON flagged_posts (crossed_at)",
    "CREATE INDEX IF NOT EXISTS flagged_posts_provider_metric ON flagged_posts"
    " (provider_id, metric, position)",
    "CREATE INDEX IF NOT EXISTS flagged_posts_removed ON flagged_posts (position)"
    " WHERE removed_at IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS flagged_posts_provider_removed ON flagged_posts"
    " (provider_id, position) WHERE removed_at IS NOT NULL",
)


def crossed(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    p = e.payload
    yield (
        "INSERT INTO flagged_posts (post_id, metric, threshold, value, account_id, provider_id,"
        " crossed_at, position)"
        " SELECT post_id, %s, %s, %s, account_id, provider_id, %s, %s"
        " FROM posts WHERE post_id = %s",
        (p["metric"], p["threshold"], p["value"], e.timestamp, e.position, e.originator_id),
    )


def removed(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    yield (
        "UPDATE flagged_posts SET removed_at = %s WHERE post_id = %s",
        (e.timestamp, e.originator_id),
    )


FLAGGED_POSTS = Projection(
    name="flagged_posts",
    version=1,
    tables=("flagged_posts",),
    ddl=DDL,
    depends_on=("posts",),
    handlers={"Post.ThresholdCrossed": crossed, "Post.Removed": removed},
)
