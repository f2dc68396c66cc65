"""The schema with its protections, built once at import.

Validation rules are made once and added with AddValidationRules, so the validation
cache can hit (rules built per request defeat it). Extensions that keep per-request
state are passed as classes, so each request gets its own instance.
"""

from __future__ import annotations

import os
from typing import Any

import strawberry
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaxTokensLimiter,
    ParserCache,
    ValidationCache,
)
from strawberry.extensions.max_aliases import create_validator as aliases_rule
from strawberry.extensions.query_depth_limiter import create_validator as depth_rule
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types

from api.graphql.errors import ErrorPolicy
from api.graphql.integrity import IntegrityQuery
from api.graphql.mutations import Mutation
from api.graphql.queries import Query
from api.graphql.scalars import POSITION_SCALAR, Position
from api.graphql.subscriptions import Subscription

MAX_DEPTH = 10
MAX_ALIASES = 20
MAX_TOKENS = 2000

RULES = [depth_rule(MAX_DEPTH, None, None), aliases_rule(MAX_ALIASES)]


def build_schema(introspection: bool | None = None) -> strawberry.Schema:
    if introspection is None:
        introspection = os.environ.get("LEDGER_INTROSPECTION", "1") == "1"
    extensions: list[Any] = [
        ErrorPolicy,
        lambda: ParserCache(maxsize=1000),
        lambda: ValidationCache(maxsize=1000),
        lambda: AddValidationRules(RULES),
        lambda: MaxTokensLimiter(MAX_TOKENS),
    ]
    if not introspection:
        extensions.append(DisableIntrospection)
    return strawberry.Schema(
        query=merge_types("Query", (Query, IntegrityQuery)),
        mutation=Mutation,
        subscription=Subscription,
        extensions=extensions,
        config=StrawberryConfig(scalar_map={Position: POSITION_SCALAR}),
    )


schema = build_schema(introspection=True)
