"""posts: one row per post, with its account, reach, reports and removal.

Other read models find a post's account and provider here.
"""

from __future__ import annotations

from collections.abc import Iterable

from ledger.log import LoggedEvent
from ledger.ruleset import Ruleset
from projections.base import Projection, Statement

DDL = (
    """CREATE TABLE IF NOT EXISTS posts (
        post_id uuid PRIMARY KEY,
        account_id uuid NOT NULL,
        provider_id uuid NOT NULL,
        ref text NOT NULL,
        origin text NOT NULL,
        category text NOT NULL,
        content_sha256 text NOT NULL,
        source_post_id uuid,
        published_at timestamptz NOT NULL,
        views bigint NOT NULL DEFAULT 0,
        reposts bigint NOT NULL DEFAULT 0,
        reports_open int NOT NULL DEFAULT 0,
        reports_total int NOT NULL DEFAULT 0,
        removed_at timestamptz,
        removal_reason text,
        removal_rule_ids text[],
        position bigint NOT NULL,
        last_position bigint NOT NULL)""",
    # Read by nothing: posts are read by id.
    "DROP INDEX IF EXISTS posts_account",
    "DROP INDEX IF EXISTS posts_provider",
)


def published(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    p = e.payload
    yield (
        "INSERT INTO posts (post_id, account_id, provider_id, ref, origin, category,"
        " content_sha256, source_post_id, published_at, position, last_position)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            e.originator_id,
            p["account_id"],
            p["provider_id"],
            p["ref"],
            p["origin"],
            p["category"],
            p["content_sha256"],
            p["source_post_id"],
            e.timestamp,
            e.position,
            e.position,
        ),
    )


def reach(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    yield (
        "UPDATE posts SET views = %s, reposts = %s, last_position = %s WHERE post_id = %s",
        (e.payload["views"], e.payload["reposts"], e.position, e.originator_id),
    )


def touched(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    yield ("UPDATE posts SET last_position = %s WHERE post_id = %s", (e.position, e.originator_id))


def reported(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    yield (
        "UPDATE posts SET reports_open = reports_open + 1, reports_total = reports_total + 1,"
        " last_position = %s WHERE post_id = %s",
        (e.position, e.originator_id),
    )


def resolved(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    yield (
        "UPDATE posts SET reports_open = reports_open - 1, last_position = %s WHERE post_id = %s",
        (e.position, e.originator_id),
    )


def removed(e: LoggedEvent, _: Ruleset) -> Iterable[Statement]:
    yield (
        "UPDATE posts SET removed_at = %s, removal_reason = %s, removal_rule_ids = %s,"
        " last_position = %s WHERE post_id = %s",
        (e.timestamp, e.payload["reason"], e.payload["rule_ids"], e.position, e.originator_id),
    )


POSTS = Projection(
    name="posts",
    version=1,
    tables=("posts",),
    ddl=DDL,
    handlers={
        "Post.Published": published,
        "Post.ReachRecorded": reach,
        "Post.ThresholdCrossed": touched,
        "Post.Reported": reported,
        "Post.ReportResolved": resolved,
        "Post.Removed": removed,
    },
)
