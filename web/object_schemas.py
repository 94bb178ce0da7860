"""JSON Schemas of objects people fill in — a run's input, a server's form, an approval's form: whether a
schema can describe one, and what a value does not fit, as FastAPI words it (422 `{loc, msg, type}`)."""

from __future__ import annotations

import re
from typing import Any

import jsonschema


def object_schema_problem(schema: dict[str, Any]) -> str | None:
    """Why `schema` cannot describe an object's fields; None when it can."""
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        return f"not a valid JSON Schema: {exc.message}"
    if schema.get("type", "object") != "object":
        return f'must describe an object ("type": "object"), not {schema["type"]!r}'
    return None


def misfits(schema: dict[str, Any], value: Any, where: list[str]) -> list[dict[str, Any]]:
    """What in `value` does not fit `schema`, each located under `where` (e.g. ["body", "input"])."""
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path])
    return [
        {"loc": [*where, *_field_path(error)], "msg": error.message, "type": f"jsonschema.{error.validator}"}
        for error in errors
    ]


def _field_path(error: jsonschema.ValidationError) -> list[str | int]:
    """Where the error is; a missing property is located at the property itself, as FastAPI does."""
    path: list[str | int] = list(error.absolute_path)
    if error.validator == "required":
        # jsonschema reports each missing property as its own error, naming it in the message.
        missing = [name for name in error.validator_value if repr(name) in error.message]
        path.extend(missing[:1])
    elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
        # One error names every unexpected property; locate it at the first, as FastAPI's extra="forbid" does.
        schema = error.schema if isinstance(error.schema, dict) else {}
        declared, patterns = schema.get("properties", {}), schema.get("patternProperties", {})
        unexpected = [
            name for name in error.instance if name not in declared and not any(re.search(p, name) for p in patterns)
        ]
        path.extend(unexpected[:1])
    return path
