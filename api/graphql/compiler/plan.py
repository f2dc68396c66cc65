"""From a validated operation to the tree of what it selects: fragments spread, inline
fragments and @include/@skip applied (graphql-core's own field collection), aliases as
response keys, fields of one key merged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLField,
    GraphQLObjectType,
    GraphQLSchema,
    OperationDefinitionNode,
    get_named_type,
)
from graphql.execution.collect_fields import (
    FieldDetails,
    FragmentDetails,
    collect_fields,
    collect_subfields,
)
from graphql.execution.values import VariableValues, get_argument_values


@dataclass(frozen=True)
class Selection:
    """One response key: the field it reads, the field's named type and what it selects."""

    key: str
    name: str
    type_name: str
    children: tuple[Selection, ...]
    node: FieldNode
    definition: GraphQLField | None  # None for __typename and introspection

    def arguments(self, variables: VariableValues) -> dict[str, Any]:
        if self.definition is None or not self.definition.args:
            return {}
        return get_argument_values(self.definition, self.node, variables)


def fragments(document: DocumentNode) -> dict[str, FragmentDetails]:
    return {
        d.name.value: FragmentDetails(d)
        for d in document.definitions
        if isinstance(d, FragmentDefinitionNode)
    }


def select(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: VariableValues,
    root: GraphQLObjectType | None = None,
) -> tuple[Selection, ...]:
    """The root selections of an operation on `root` (the query type unless given)."""
    root = root or schema.query_type
    assert root is not None
    found = _Collector(schema, fragments(document), variables, operation)
    grouped = collect_fields(schema, found.fragments, variables, root, operation)
    return found.selections(root, grouped.grouped_field_set)


@dataclass
class _Collector:
    schema: GraphQLSchema
    fragments: dict[str, FragmentDetails]
    variables: VariableValues
    operation: OperationDefinitionNode

    def selections(
        self, parent: GraphQLObjectType, grouped: dict[str, list[FieldDetails]]
    ) -> tuple[Selection, ...]:
        return tuple(self.selection(parent, key, details) for key, details in grouped.items())

    def selection(
        self, parent: GraphQLObjectType, key: str, details: list[FieldDetails]
    ) -> Selection:
        node = details[0].node
        name = node.name.value
        definition = parent.fields.get(name)
        if definition is None:  # __typename, __schema, __type
            return Selection(key, name, "", (), node, None)
        named = get_named_type(definition.type)
        children: tuple[Selection, ...] = ()
        if isinstance(named, GraphQLObjectType):
            sub = collect_subfields(
                self.schema, self.fragments, self.variables, self.operation, named, details
            )
            children = self.selections(named, sub.grouped_field_set)
        return Selection(key, name, named.name, children, node, definition)
