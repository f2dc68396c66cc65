"""The schema with its protections, built once at import.

Validation rules are made once and added with AddValidationRules, so the validation
cache can hit (rules built per request defeat it). Extensions that keep per-request
state are passed as classes, so each request gets its own instance.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import strawberry
from graphql import GraphQLError, SelectionSetNode, ValidationContext, ValidationRule
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
from strawberry.types import ExecutionContext

from api.graphql.console import ConsoleQuery
from api.graphql.context import OperationContext
from api.graphql.disclosures import DisclosureMutation, DisclosureQuery
from api.graphql.errors import ErrorPolicy
from api.graphql.execution import LedgerExecutor
from api.graphql.integrity import IntegrityQuery
from api.graphql.mutations import Mutation
from api.graphql.queries import Query
from api.graphql.scalars import POSITION_SCALAR, Position
from api.graphql.subscriptions import Subscription
from api.graphql.webhooks import WebhookQuery

log = logging.getLogger("ledger.api")
MAX_DEPTH = 10
MAX_ALIASES = 20
MAX_TOKENS = 2000

class NoEmptySelections(ValidationRule):
    """`{}` parses (graphql-core 3.3) but selects nothing; refuse it as invalid."""

    def enter_selection_set(self, node: SelectionSetNode, *_: Any) -> None:
        if not node.selections:
            self.report_error(GraphQLError("a selection set must select a field", node))


class DepthLimit(depth_rule(MAX_DEPTH, None, None)):  # type: ignore[misc]
    """strawberry's depth limit, which fails with max() of nothing on an empty
    selection set; NoEmptySelections reports that one."""

    def __init__(self, context: ValidationContext) -> None:
        try:
            super().__init__(context)
        except ValueError:
            ValidationRule.__init__(self, context)


RULES = [NoEmptySelections, DepthLimit, aliases_rule(MAX_ALIASES)]


class SafeParserCache(ParserCache):
    """strawberry's parser cache lets a syntax error escape the operation (a WebSocket
    subscriber then got `complete` and no error); leave such a document to the parse
    that turns the error into the operation's own."""

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        with contextlib.suppress(GraphQLError):
            context.graphql_document = self.cached_parse_document(
                context.query, **context.parse_options
            )
        yield


class LedgerSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # strawberry logs every error at ERROR with its stack. A client's mistake is
        # INFO; a fault of ours is logged once, at ERROR, by ErrorPolicy.
        for error in errors:
            if error.original_error is None or isinstance(error.original_error, GraphQLError):
                log.info("client error: %s", error.message.splitlines()[0][:300])


def build_schema(introspection: bool | None = None) -> strawberry.Schema:
    if introspection is None:
        introspection = os.environ.get("LEDGER_INTROSPECTION", "1") == "1"
    extensions: list[Any] = [
        OperationContext,
        ErrorPolicy,
        lambda: SafeParserCache(maxsize=1000),
        lambda: ValidationCache(maxsize=1000),
        lambda: AddValidationRules(RULES),
        lambda: MaxTokensLimiter(MAX_TOKENS),
    ]
    if not introspection:
        extensions.append(DisableIntrospection)
    return LedgerSchema(
        query=merge_types(
            "Query", (Query, IntegrityQuery, DisclosureQuery, WebhookQuery, ConsoleQuery)
        ),
        mutation=merge_types("Mutation", (Mutation, DisclosureMutation)),
        subscription=Subscription,
        extensions=extensions,
        config=StrawberryConfig(scalar_map={Position: POSITION_SCALAR}),
        execution_context_class=LedgerExecutor,
    )


schema = build_schema(introspection=True)
