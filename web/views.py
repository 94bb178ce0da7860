"""What the run and scenario pages show, built from a run's folded state and its scenario.

The run page, the HTML stream's fragments and any later view all read these, so a fragment sent
live and the same fragment in a freshly loaded page are drawn from identical data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from web.run_state import RunState, StepState
from web.scenarios import FromPath, Scenario, Step
from web.store import RunRow
from web.templating import seconds_between


@dataclass(frozen=True)
class InputSource:
    """Where one tool argument comes from: `input.url`, `steps.x.output.y`, or a literal."""

    key: str
    kind: str  # "input" | "step" | "literal"
    text: str
    step: str | None = None  # for "step": the step it reads from, to link to


@dataclass
class StepView:
    index: int
    name: str
    tool: str
    server: str | None
    sources: list[InputSource]
    status: str  # pending | running | success | failed | cancelled | skipped
    state: StepState | None = None

    @property
    def seconds(self) -> float | None:
        return seconds_between(self.state.started_at, self.state.finished_at) if self.state else None

    @property
    def percent(self) -> int | None:
        state = self.state
        if state is None or state.progress is None or not state.total:
            return None
        return max(0, min(100, round(100 * state.progress / state.total)))


@dataclass
class RunView:
    state: RunState
    scenario: Scenario | None
    steps: list[StepView] = field(default_factory=list)
    seq: int = 0  # the last event this view includes; a live page resumes its stream after it

    @property
    def title(self) -> str:
        return self.scenario.name if self.scenario else self.state.scenario_id

    @property
    def seconds(self) -> float | None:
        return seconds_between(self.state.started_at, self.state.finished_at)

    def step(self, index: int) -> StepView:
        return next(step for step in self.steps if step.index == index)


@dataclass(frozen=True)
class RunListItem:
    """One row of the run list, read from the history."""

    row: RunRow
    title: str
    seconds: float | None


def run_list_item(row: RunRow, scenario: Scenario | None) -> RunListItem:
    title = scenario.name if scenario else row.scenario_id
    return RunListItem(row, title, seconds_between(row.started_at, row.finished_at))


def input_sources(step: Step) -> list[InputSource]:
    sources = []
    for key, binding in step.bindings.items():
        if isinstance(binding, FromPath):
            segments = binding.segments
            kind = "input" if segments[0] == "input" else "step"
            sources.append(InputSource(key, kind, binding.path, segments[1] if kind == "step" else None))
        else:
            sources.append(InputSource(key, "literal", json.dumps(binding.value, ensure_ascii=False)))
    return sources


def run_view(state: RunState, scenario: Scenario | None, seq: int) -> RunView:
    """Every step of the scenario, started or not; steps the run recorded but the scenario no
    longer has (it was edited since) are kept, so the page always tells what happened."""
    recorded = {step.index: step for step in state.steps.values()}
    views: list[StepView] = []
    planned = scenario.steps if scenario else []
    for index, step in enumerate(planned):
        views.append(
            StepView(index, step.name, step.tool, step.server, input_sources(step),
                     _status(recorded.get(index), state), recorded.get(index))
        )
    for index in sorted(set(recorded) - set(range(len(planned)))):
        done = recorded[index]
        views.append(StepView(index, done.node_id, done.node_id, None, [], done.status, done))
    return RunView(state, scenario, views, seq)


def plan(scenario: Scenario) -> list[StepView]:
    """The scenario's steps as a run that has not started would show them."""
    return [
        StepView(index, step.name, step.tool, step.server, input_sources(step), "pending")
        for index, step in enumerate(scenario.steps)
    ]


def _status(step: StepState | None, run: RunState) -> str:
    if step is not None:
        return step.status
    return "skipped" if run.is_finished else "pending"



@dataclass(frozen=True)
class Parameter:
    """One property of a tool's input schema, as a row people can read."""

    name: str
    type: str
    required: bool
    description: str
    default: str | None


def parameters(schema: dict[str, Any]) -> list[Parameter]:
    required = set(schema.get("required", []))
    rows = []
    for name, prop in (schema.get("properties") or {}).items():
        prop = prop if isinstance(prop, dict) else {}
        default = json.dumps(prop["default"], ensure_ascii=False) if "default" in prop else None
        rows.append(Parameter(name, type_text(prop), name in required, prop.get("description", ""), default))
    return rows


def type_text(schema: dict[str, Any]) -> str:
    """A JSON Schema type in a few words: `string (uri)`, `list of integer`, `one of "a", "b"`."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(v, ensure_ascii=False) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"], ensure_ascii=False)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " or ".join(type_text(alt) for alt in schema[key] if isinstance(alt, dict))
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind == "array":
        items = schema.get("items")
        return f"list of {type_text(items)}" if isinstance(items, dict) else "list"
    return f"{kind} ({schema['format']})" if "format" in schema else str(kind)
