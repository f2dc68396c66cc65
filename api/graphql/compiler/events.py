"""A subscription's selection of LogEvent compiled to a renderer: a function from a
logged event to the `{"data": {...}}` graphql-core would have produced for it (the same
resolved values, the schema's own scalar serialisers, the selection's key order), with
no executor per event. Renderers of the same normalised selection are equal, whatever
the document's text, fragments or variables that led to it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    GraphQLLeafType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    get_named_type,
    is_leaf_type,
)

from api.graphql.compiler.cache import Lru, configured_size
from api.graphql.compiler.plan import Selection
from api.graphql.compiler.sql import Unsupported


@dataclass(frozen=True)
class Leaf:
    key: str
    attr: str
    serialize: Callable[[Any], Any] = field(compare=False)


@dataclass(frozen=True)
class TypeName:
    key: str
    name: str


@dataclass(frozen=True)
class Branch:
    key: str
    attr: str
    children: tuple[Leaf | TypeName | Branch, ...]


Node = Leaf | TypeName | Branch


def _value(node: Node, parent: object) -> Any:
    if isinstance(node, TypeName):
        return node.name
    found = getattr(parent, node.attr)
    if found is None:
        return None
    if isinstance(node, Leaf):
        return node.serialize(found)
    return {child.key: _value(child, found) for child in node.children}


@dataclass(frozen=True, eq=False)
class Renderer:
    """What a subscription selects of each event. Compared by identity (a quick key per
    event): `renderer` hands out one instance per normalised selection."""

    root: Branch

    def data(self, item: object) -> dict[str, Any]:
        """`{"data": {<root key>: {...}}}` for one event as the subscription's resolver
        yields it (a LogEvent: the root field's value is the event itself)."""
        fields = {child.key: _value(child, item) for child in self.root.children}
        return {"data": {self.root.key: fields}}


_renderers: Lru[Renderer] = Lru(configured_size())


def renderer(selection: Selection, parent: GraphQLObjectType) -> Renderer:
    """The renderer of a root subscription field (the same one for an equal selection),
    or Unsupported."""
    node = _node(selection, parent)
    assert isinstance(node, Branch)
    return _renderers.get(node) or _renderers.put(node, Renderer(node))


def _node(selection: Selection, parent: GraphQLObjectType) -> Node:
    if selection.name == "__typename":
        return TypeName(selection.key, parent.name)
    definition = selection.definition
    if definition is None:
        raise Unsupported(f"{selection.name} on {parent.name}")
    strawberry_field = (definition.extensions or {}).get("strawberry-definition")
    if strawberry_field is None or (
        parent.name != "Subscription" and strawberry_field.base_resolver is not None
    ):
        raise Unsupported(f"{parent.name}.{selection.name} has a resolver")
    named = get_named_type(definition.type)
    attr = strawberry_field.python_name
    if is_leaf_type(named):
        assert isinstance(named, GraphQLLeafType)
        if _is_list(definition.type):
            raise Unsupported(f"{parent.name}.{selection.name} is a list")
        return Leaf(selection.key, attr, named.serialize)
    if not isinstance(named, GraphQLObjectType) or _is_list(definition.type):
        raise Unsupported(f"{parent.name}.{selection.name} is {named}")
    children = tuple(_node(child, named) for child in selection.children)
    return Branch(selection.key, attr, children)


def _is_list(kind: Any) -> bool:
    while isinstance(kind, GraphQLNonNull):
        kind = kind.of_type
    return isinstance(kind, GraphQLList)
