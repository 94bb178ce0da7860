"""The pieces the OpenAPI document is written with: references to models, responses, parameters.

Each module that serves routes describes them with these (its `PATHS` and `MODELS`); web.openapi joins them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from web import schemas
from web.schemas import first_example


def ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def json_response(description: str, model: type[BaseModel], *, many: bool = False) -> dict[str, Any]:
    schema = {"type": "array", "items": ref(model)} if many else ref(model)
    example = [first_example(model)] if many else first_example(model)
    return {"description": description, "content": {"application/json": {"schema": schema, "example": example}}}


def error_response(description: str, example: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": ref(schemas.ErrorDetail), "example": {"detail": example}}},
    }


def path_param(name: str, description: str, example: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
        "example": example,
    }


def query_param(name: str, description: str, schema: dict[str, Any], example: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
        "example": example,
    }


def error_responses(description: str, **examples: str) -> dict[str, Any]:
    """One status code that several situations answer, each with its own example."""
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": ref(schemas.ErrorDetail),
                "examples": {
                    name: {"summary": name.replace("_", " "), "value": {"detail": detail}}
                    for name, detail in examples.items()
                },
            }
        },
    }
