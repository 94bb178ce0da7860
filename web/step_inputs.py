"""What a step's expressions give, judged the same way by a run and by its preview: the for_each list,
and the required arguments an undefined value left out."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from web.expressions import OMIT, EvaluationError, Node, PathNode
from web.plan import PlannedStep

ENV_MAX_FOR_EACH_ITEMS = "STEPLINE_MAX_FOR_EACH_ITEMS"


class StepInputError(Exception):
    """Why a step (or item) cannot call its tool, in the words the run records."""


def for_each_items(step: PlannedStep, for_each: Node, scope: Mapping[str, Any], limit: int) -> list[Any]:
    """The items `for_each` gives; StepInputError if it fails, is undefined, is not a list or is longer than `limit`."""
    try:
        items = for_each.evaluate(scope)
    except EvaluationError as exc:
        raise StepInputError(str(exc)) from None
    where = f"{step.label}.for_each: {for_each.describe()}"
    if items is OMIT:
        raise StepInputError(f"{where} is undefined")
    if not isinstance(items, list):
        raise StepInputError(f"{where} gives {kind_of(items)}, not a list")
    if len(items) > limit:
        allowed = f"more than the {limit:,} allowed ({ENV_MAX_FOR_EACH_ITEMS})"
        raise StepInputError(f"{where} gives {len(items):,} items, {allowed}")
    return items


def required_arguments(step: PlannedStep, input_schema: Mapping[str, Any] | None) -> set[str]:
    """The arguments a call cannot go without: the tool's schema's `required`, and the step's required_input_fields."""
    required = set(step.required)
    schema_required = input_schema.get("required") if input_schema is not None else None
    if isinstance(schema_required, list):
        required.update(name for name in schema_required if isinstance(name, str))
    return required


def missing_required(required: Collection[str], omitted: Mapping[str, Node]) -> str | None:
    """Why the call cannot be made: a required argument was left out because its value was undefined."""
    for key, node in omitted.items():
        if key in required:
            if isinstance(node, PathNode):  # worded as version 1 always did
                return f"required input '{key}' is missing: '{node.path}' found nothing"
            return f"required argument '{key}' is missing: {node.describe()} is undefined"
    return None


def kind_of(value: Any) -> str:
    """A JSON value's kind, as a message names it: "a number", "text", "an object"…"""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"
