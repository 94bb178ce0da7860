"""What a JSON Schema says before anything runs: whether a literal fits an argument, whether a field is declared.

Used on tools' input and output schemas and on scenarios' `input_schema`. Only local `$ref`s are followed;
where a schema cannot be judged (combinators, remote refs, no properties declared) nothing is claimed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema
import referencing.exceptions

# `$ref`s followed in a row at most: a schema that refers to itself in a loop is not walked forever.
MAX_REF_HOPS = 32
# Keywords that can add or constrain fields in ways a plain lookup of `properties` cannot judge.
COMBINATORS = ("allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas", "unevaluatedProperties")


def literal_input_errors(schema: dict[str, Any], literals: dict[str, Any]) -> list[tuple[str, str]]:
    """Each literal argument against its own schema in the tool's input schema: (argument, message).

    Values from paths and expressions are only known at run time; an argument the schema does not
    describe is judged by its name elsewhere.
    """
    errors = []
    for key, value in literals.items():
        described = argument_schema(schema, key)
        if described is None:
            continue
        # Evolved from the whole schema, so a $ref resolves against it ($defs or draft-07 definitions).
        root = jsonschema.validators.validator_for(schema)(schema)
        try:
            errors.extend((key, error.message) for error in root.evolve(schema=described).iter_errors(value))
        except referencing.exceptions.Unresolvable as exc:  # the tool's own schema is broken
            errors.append((key, f"cannot be checked: the tool's input schema has a broken $ref ({exc})"))
    return errors


def argument_schema(schema: dict[str, Any], key: str) -> Any:
    """The schema an object schema gives its field `key` (unresolved), or None when it describes none."""
    properties = schema.get("properties")
    if isinstance(properties, dict) and key in properties:
        return properties[key]
    for pattern, described in _patterns(schema):
        if re.search(pattern, key):
            return described
    extra = schema.get("additionalProperties")
    return extra if isinstance(extra, dict) else None


def declared_types(schema: dict[str, Any], key: str) -> list[str] | None:
    """The JSON types the field `key` may have, when its schema says so plainly (`"type"`), else None."""
    described = resolve(argument_schema(schema, key), schema)
    if not isinstance(described, dict) or any(word in described for word in COMBINATORS):
        return None
    types = described.get("type")
    if isinstance(types, str):
        return [types]
    return list(types) if isinstance(types, list) and all(isinstance(t, str) for t in types) else None


@dataclass(frozen=True)
class Undeclared:
    """A path's first key that its schema does not declare."""

    position: int  # index of that key among the path's keys
    declared: tuple[str, ...]  # the fields declared where it was looked for
    forbidden: bool  # additionalProperties is false there: no other field can exist


def undeclared(schema: Any, keys: Sequence[str | int]) -> Undeclared | None:
    """Follow `keys` (names into objects, indexes into arrays) through `schema`; the first key it does
    not declare, or None when every key is declared or the schema cannot tell."""
    root = schema
    current = schema
    for position, key in enumerate(keys):
        current = resolve(current, root)
        if not isinstance(current, dict):
            return None
        if _is_array(current) and (isinstance(key, int) or key.lstrip("-").isdigit()):
            items = current.get("items")
            if not isinstance(items, dict):
                return None
            current = items
            continue
        if isinstance(key, int) or _is_array(current):
            return None
        described = argument_schema(current, key)
        if described is not None:
            current = described
            continue
        if any(word in current for word in COMBINATORS):
            return None
        properties = current.get("properties")
        forbidden = current.get("additionalProperties") is False
        if not isinstance(properties, dict) and not forbidden:
            return None  # nothing declared here: any field may be
        return Undeclared(position, tuple(properties or ()), forbidden)
    return None


def resolve(schema: Any, root: Any) -> Any:
    """`schema` with its local `$ref`s followed (`#/$defs/A`); None when a ref leads nowhere or away."""
    for _ in range(MAX_REF_HOPS):
        if not isinstance(schema, dict) or not isinstance(schema.get("$ref"), str):
            return schema
        reference = schema["$ref"]
        if not reference.startswith("#"):
            return None
        schema = root
        for part in filter(None, reference[1:].split("/")):
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(schema, dict) and part in schema:
                schema = schema[part]
            elif isinstance(schema, list) and part.isdigit() and int(part) < len(schema):
                schema = schema[int(part)]
            else:
                return None
    return None


def _is_array(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    if isinstance(kind, list):
        return "array" in kind and "object" not in kind
    return kind == "array" or (kind is None and "items" in schema)


def _patterns(schema: dict[str, Any]) -> list[tuple[str, Any]]:
    patterns = schema.get("patternProperties")
    if not isinstance(patterns, dict):
        return []
    found = []
    for pattern, described in patterns.items():
        try:
            re.compile(pattern)
        except re.error:  # a schema's regex Python cannot read: it is not ours to judge
            continue
        found.append((pattern, described))
    return found
