"""The scenario format (schema_version "1"): pydantic models, input bindings, and folder loading.

A broken file never takes the catalog down: it is left out and reported with its file and reason.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from web.json_limits import DEFAULT_MAX_DEPTH, JsonProblem, check, where

log = logging.getLogger(__name__)

SCENARIO_ID_PATTERN = r"^[A-Za-z0-9_.-]+$"
# Step names appear inside dotted paths, so they may not contain dots.
STEP_NAME_PATTERN = r"^[A-Za-z0-9_-]+$"
# A scenario is written by people; deeper than run input may be is a mistake, not a workflow.
SCENARIO_MAX_DEPTH = DEFAULT_MAX_DEPTH


@dataclass(frozen=True)
class FromPath:
    """A step input taken from the run input or an earlier step's output."""

    path: str

    @property
    def segments(self) -> list[str]:
        return self.path.split(".")


@dataclass(frozen=True)
class LiteralValue:
    value: Any


Binding = FromPath | LiteralValue


def parse_binding(raw: Any) -> Binding:
    """`{"from": path}` and `{"value": x}` are the two special forms; anything else is literal."""
    if isinstance(raw, dict) and len(raw) == 1:
        if "from" in raw and isinstance(raw["from"], str):
            return FromPath(raw["from"])
        if "value" in raw:
            return LiteralValue(raw["value"])
    return LiteralValue(raw)


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=STEP_NAME_PATTERN, description="Unique within the scenario.")
    type: Literal["tool"] = "tool"
    tool: str = Field(min_length=1)
    server: str | None = Field(None, description="Needed only when the tool name is ambiguous.")
    description: str = ""
    input: dict[str, Any] = Field(default_factory=dict)
    required_input_fields: list[str] = Field(default_factory=list)

    @property
    def bindings(self) -> dict[str, Binding]:
        return {key: parse_binding(raw) for key, raw in self.input.items()}

    @model_validator(mode="after")
    def _required_fields_are_inputs(self) -> Step:
        unknown = [f for f in self.required_input_fields if f not in self.input]
        if unknown:
            raise ValueError(f"required_input_fields {unknown} are not keys of input")
        return self


class Scenario(BaseModel):
    model_config = ConfigDict(extra="allow")

    schema_version: Literal["1"]
    scenario_id: str = Field(pattern=SCENARIO_ID_PATTERN)
    name: str = Field(min_length=1)
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    steps: list[Step] = Field(min_length=1)

    @field_validator("input_schema")
    @classmethod
    def _input_schema_is_json_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        # A run's input is always a JSON object, so any other type could never be run.
        if schema.get("type", "object") != "object":
            raise ValueError(f"must describe an object (\"type\": \"object\"), not {schema['type']!r}")
        return schema

    @model_validator(mode="after")
    def _steps_are_wired(self) -> Scenario:
        seen: list[str] = []
        for index, step in enumerate(self.steps):
            if step.name in seen:
                raise ValueError(f"steps.{index}: duplicate step name '{step.name}'")
            for key, binding in step.bindings.items():
                if isinstance(binding, FromPath):
                    problem = _path_problem(binding, seen, step.name)
                    if problem:
                        raise ValueError(f"steps.{index}.input.{key}: {problem}")
            seen.append(step.name)
        return self

    def input_errors(self, run_input: Any) -> list[dict[str, Any]]:
        """The run input's problems against input_schema, as 422 `{loc, msg, type}` entries."""
        validator = jsonschema.validators.validator_for(self.input_schema)(self.input_schema)
        errors = sorted(validator.iter_errors(run_input), key=lambda e: [str(p) for p in e.absolute_path])
        return [
            {
                "loc": ["body", "input", *_field_path(error)],
                "msg": error.message,
                "type": f"jsonschema.{error.validator}",
            }
            for error in errors
        ]

    @property
    def examples(self) -> list[Any]:
        return list(self.input_schema.get("examples", []))


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


def _path_problem(binding: FromPath, earlier_steps: list[str], step_name: str) -> str | None:
    segments = binding.segments
    if any(segment == "" for segment in segments):
        return f"path '{binding.path}' has an empty segment"
    if segments[0] == "input":
        return None
    if segments[0] != "steps":
        return f"path '{binding.path}' must start with 'input.' or 'steps.'"
    if len(segments) < 3 or segments[2] != "output":
        return f"path '{binding.path}' must read 'steps.<step name>.output…'"
    target = segments[1]
    if target == step_name:
        return f"path '{binding.path}' refers to the step itself"
    if target not in earlier_steps:
        return f"path '{binding.path}' refers to '{target}', which is not an earlier step"
    return None


MISSING = object()


def resolve_path(path: FromPath, context: dict[str, Any]) -> Any:
    """Follow a dotted path through dicts and lists; MISSING when it finds nothing."""
    current: Any = context
    for segment in path.segments:
        if isinstance(current, dict) and segment in current:
            current = current[segment]
        elif isinstance(current, list) and segment.isdigit() and int(segment) < len(current):
            current = current[int(segment)]
        else:
            return MISSING
    return current


@dataclass(frozen=True)
class Problem:
    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


@dataclass
class Catalog:
    """The valid scenarios of a folder (in id order), with the raw JSON each was loaded from."""

    folder: Path
    scenarios: dict[str, Scenario] = field(default_factory=dict)
    raw: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def get(self, scenario_id: str) -> Scenario | None:
        # A dict lookup, never a path join: an id cannot reach outside the folder.
        return self.scenarios.get(scenario_id)


def load_catalog(folder: Path) -> Catalog:
    catalog = Catalog(folder=folder)
    if not folder.is_dir():
        catalog.problems.append(Problem(str(folder), "scenario folder does not exist"))
        return catalog
    for path in sorted(folder.glob("*.json")):
        try:
            raw, scenario = load_scenario_file(path)
        except ScenarioFileError as exc:
            catalog.problems.append(Problem(path.name, str(exc)))
            log.warning("Scenario left out: %s: %s", path.name, exc)
            continue
        catalog.scenarios[scenario.scenario_id] = scenario
        catalog.raw[scenario.scenario_id] = raw
    return catalog


class ScenarioFileError(Exception):
    pass


def load_scenario_file(path: Path) -> tuple[dict[str, Any], Scenario]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioFileError(f"cannot read: {exc}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScenarioFileError(f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise ScenarioFileError(f"nested deeper than {SCENARIO_MAX_DEPTH} levels") from None
    try:
        # Its literals become tool arguments and events: the same strict JSON as any other input.
        check(raw, max_depth=SCENARIO_MAX_DEPTH)
    except JsonProblem as problem:
        # Where a value is wrong helps; the hundred keys above one nested too deep do not.
        at = "" if problem.kind == "json_too_deep" else f"{where(problem.loc)}: "
        raise ScenarioFileError(f"{at}{problem.message}") from None
    if not isinstance(raw, dict):
        raise ScenarioFileError("must be a JSON object")
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioFileError(format_validation_error(exc)) from None
    if scenario.scenario_id != path.stem:
        raise ScenarioFileError(f"scenario_id '{scenario.scenario_id}' must equal the file name '{path.stem}'")
    return raw, scenario


def format_validation_error(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        loc = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {message}" if loc else message)
    return "; ".join(parts)
