"""What GraphiQL and `schema.graphql` show a client: every description reads as prose.

A strawberry type made from a dataclass without a docstring takes the dataclass's
generated signature (`RegisterProvider(*, actor: 'Actor', ...)`) as its description;
that is what this guards against. Needs no database.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
)

from ledger import commands as c
from ledger.actors import Role
from ledger.ruleset import load_ruleset

# What a Python signature, type hint or repr leaves in a text, and prose does not.
PYTHONISH = re.compile(
    r"""
      \b[A-Z]\w*\(\*                    # a dataclass signature: Name(*, ...
    | \*,                               # keyword-only marker
    | :\ '                              # a string annotation: name: 'str'
    | ->                                # a return annotation
    | \b(?:Optional|Union|Annotated|Literal|ClassVar|Any)\[
    | \b(?:list|tuple|dict|set|frozenset|type)\[
    | \bNoneType\b | =\ None\b | \|\ None\b
    | <(?:class|function|module)\ '     # a repr
    | \bdef\ \w+\( | \bself\b | __\w+__
    | \bat\ 0x[0-9a-f]+
    """,
    re.VERBOSE,
)

# Input types of the query side (api/graphql/queries.py) that have no description yet.
# Only shrinks: the test fails once one of them gains a description, to take it off.
UNDESCRIBED_FILTERS: frozenset[str] = frozenset()


def _schema() -> GraphQLSchema:
    from api.graphql.schema import schema

    return schema._schema


def descriptions(schema: GraphQLSchema) -> Iterator[tuple[str, str | None]]:
    """(where, description) of every type, field, argument, input field, enum value
    and directive in the schema, introspection's own types left out."""
    for name, kind in schema.type_map.items():
        if name.startswith("__"):
            continue
        yield name, kind.description
        if isinstance(kind, (GraphQLObjectType, GraphQLInterfaceType)):
            for field_name, field in kind.fields.items():
                yield f"{name}.{field_name}", field.description
                for arg_name, arg in field.args.items():
                    yield f"{name}.{field_name}({arg_name})", arg.description
        elif isinstance(kind, GraphQLInputObjectType):
            for field_name, input_field in kind.fields.items():
                yield f"{name}.{field_name}", input_field.description
        elif isinstance(kind, GraphQLEnumType):
            for value_name, value in kind.values.items():
                yield f"{name}.{value_name}", value.description
    for directive in schema.directives:
        yield f"@{directive.name}", directive.description
        for arg_name, arg in directive.args.items():
            yield f"@{directive.name}({arg_name})", arg.description


def pythonish(schema: GraphQLSchema) -> list[str]:
    return [
        f"{where}: {text[:120]!r}"
        for where, text in descriptions(schema)
        if text and PYTHONISH.search(text)
    ]


def test_the_pattern_catches_what_a_dataclass_leaves() -> None:
    # The failure this file guards against, as it stood before the commands had docstrings.
    assert PYTHONISH.search(
        "RegisterProvider(*, actor: 'Actor', idempotency_key: 'str', code: 'str')"
    )
    for text in ("Optional[str]", "tuple[str, ...]", "x: 'UUID' = None", "f() -> int"):
        assert PYTHONISH.search(text), text
    for text in (
        "Records that a post was removed, citing at least one rule (Art. 5, Art. 8).",
        "A provider lifts only sanctions a provider imposed; regulators lift any.",
        "The `JSON` scalar type represents JSON values as specified by ECMA-404.",
    ):
        assert not PYTHONISH.search(text), text


def test_no_description_in_the_schema_looks_like_python() -> None:
    found = pythonish(_schema())
    assert not found, "descriptions that read as Python:\n" + "\n".join(found)


def test_every_mutation_and_input_is_described() -> None:
    schema = _schema()
    assert schema.mutation_type is not None
    missing = [
        f"mutation {name}"
        for name, field in schema.mutation_type.fields.items()
        if not (field.description or "").strip()
    ]
    missing += [
        f"input {name}"
        for name, kind in schema.type_map.items()
        if isinstance(kind, GraphQLInputObjectType)
        and name not in UNDESCRIBED_FILTERS
        and not (kind.description or "").strip()
    ]
    assert not missing, "undescribed: " + ", ".join(missing)
    # The allowance only shrinks: a filter that gained a description leaves the list.
    described = sorted(
        name for name in UNDESCRIBED_FILTERS if (schema.type_map[name].description or "").strip()
    )
    assert not described, f"now described, take off UNDESCRIBED_FILTERS: {described}"


def test_each_command_says_who_may_issue_it_and_cites_real_articles() -> None:
    ruleset = load_ruleset()
    for command in (*c.ALL_COMMANDS, c.DiscloseIdentity):
        doc = command.__dict__.get("__doc__") or ""
        name = command.__name__
        assert doc.strip() and not PYTHONISH.search(doc), f"{name}: no docstring of its own"
        assert doc.count(".") <= 8, f"{name}: keep it to one to three sentences"
        text = doc.lower()
        for role in command.roles:
            assert role.value in text, f"{name}: does not say that a {role.value} may issue it"
        for role in (Role.REGULATOR, Role.AUDITOR):
            if role not in command.roles:
                assert role.value not in text, f"{name}: names {role.value}, who may not issue it"
        for number in re.findall(r"\bArt\. (\d+)", doc):
            assert f"art.{number}" in ruleset.rules, f"{name}: Art. {number} is not a rule"
