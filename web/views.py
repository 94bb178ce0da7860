"""What the run and scenario pages show, built from a run's folded state and its scenario.

The run page, the HTML stream's fragments and any later view all read these, so a fragment sent
live and the same fragment in a freshly loaded page are drawn from identical data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from operator import attrgetter
from typing import Any, ClassVar

from web.events import StepStatus
from web.expressions import LiteralNode
from web.plan import PlannedStep, RetryPolicy
from web.request_view import RequestView, step_requests
from web.run_state import ItemState, Retry, RunState, StepState
from web.scenarios import Scenario
from web.store import RunRow
from web.templating import seconds_between

# Items of a for_each step a page draws once the step has ended: the first ones, then failed ones
# past those; the rest are counted and left to the run's events.
ITEMS_SHOWN = 200
FAILED_ITEMS_SHOWN = 100
# While it runs, the step is drawn again as each item ends (a thousand times for a thousand items):
# then it shows its counts and its first failures only, so each drawing stays small.
FAILED_ITEMS_SHOWN_RUNNING = 10
# Characters of an item's input or output drawn: two hundred items stay a page, not megabytes.
ITEM_JSON_CHARS = 1000
OLD_RUN_SKIPPED = "Did not run: the run ended before this step."
ITEM_ORDER = attrgetter("item_index")


@dataclass(frozen=True)
class Dependency:
    """A step another waits for, and where it is on the page (None: not in this run's plan)."""

    name: str
    index: int | None


@dataclass
class StepView:
    index: int
    name: str
    tool: str | None  # None: an approval step, which calls nothing
    server: str | None
    status: str  # a StepStatus: pending until the step's first event
    state: StepState | None = None
    depends_on: list[Dependency] = field(default_factory=list)
    when: str | None = None  # the condition's source
    for_each: bool = False
    on_error: str = "fail"
    max_attempts: int = 1
    description: str = ""
    skipped_reason: str = ""  # for a step that never ran and has no event of its own (runs before plans)
    requests: list[RequestView] = field(default_factory=list)  # what it waits for people to answer
    item_json_chars: ClassVar[int] = ITEM_JSON_CHARS

    @property
    def seconds(self) -> float | None:
        return seconds_between(self.state.started_at, self.state.finished_at) if self.state else None

    @property
    def percent(self) -> int | None:
        state = self.state
        if state is None or state.progress is None or not state.total:
            return None
        return max(0, min(100, round(100 * state.progress / state.total)))

    @property
    def retry(self) -> Retry | None:
        return self.state.retry if self.state else None

    @property
    def item_retries(self) -> list[tuple[int, Retry]]:
        return sorted(self.state.item_retries.items()) if self.state else []

    @cached_property
    def items_shown(self) -> list[ItemState]:
        """The items drawn: while the step runs, its first failures; then the first ITEMS_SHOWN, and
        up to FAILED_ITEMS_SHOWN failed ones after those."""
        if self.state is None or not self.state.items:
            return []
        if self.status == StepStatus.RUNNING:
            failed = [item for item in self.state.items.values() if item.status == StepStatus.FAILED]
            return sorted(failed, key=ITEM_ORDER)[:FAILED_ITEMS_SHOWN_RUNNING]
        items = sorted(self.state.items.values(), key=ITEM_ORDER)
        first, rest = items[:ITEMS_SHOWN], items[ITEMS_SHOWN:]
        return first + [item for item in rest if item.status == StepStatus.FAILED][:FAILED_ITEMS_SHOWN]

    @property
    def items_hidden(self) -> int:
        return len(self.state.items) - len(self.items_shown) if self.state else 0


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

    @property
    def waiting_for(self) -> list[Waiting]:
        """The open requests, in the order asked, each with where its step is on the page."""
        places = {step.name: step.index for step in self.steps}
        return [
            Waiting(request, places.get(request.get("step_name", "")), RequestView.form_anchor(request["request_id"]))
            for request in self.state.pending.values()
        ]


@dataclass(frozen=True)
class Waiting:
    """One line of the page's "Waiting for input" panel: the request, and where its form is."""

    request: dict[str, Any]
    step_index: int | None
    anchor: str


@dataclass(frozen=True)
class RunListItem:
    """One row of the run list, read from the history."""

    row: RunRow
    title: str
    seconds: float | None


def run_list_item(row: RunRow, scenario: Scenario | None) -> RunListItem:
    title = scenario.name if scenario else row.scenario_id
    return RunListItem(row, title, seconds_between(row.started_at, row.finished_at))


def run_view(state: RunState, scenario: Scenario | None, seq: int) -> RunView:
    """Every step the run follows, started or not.

    The plan recorded when the run started says which steps those are, whatever its file says now.
    A run recorded before plans were shows the scenario's current steps, and keeps any step it
    recorded that the scenario no longer has, so the page always tells what happened.
    """
    planned = state.plan if state.plan is not None else _current_plan(scenario)
    positions = {summary["name"]: index for index, summary in enumerate(planned)}
    recorded = {step.index: step for step in state.steps.values()}
    views: list[StepView] = []
    for index, summary in enumerate(planned):
        step = recorded.get(index)
        views.append(
            StepView(
                index=index,
                name=summary["name"],
                tool=summary["tool"],
                server=summary.get("server"),
                status=_status(step, state),
                state=step,
                depends_on=[Dependency(name, positions.get(name)) for name in summary.get("depends_on", [])],
                when=summary.get("when"),
                for_each=bool(summary.get("for_each")),
                on_error=summary.get("on_error", "fail"),
                max_attempts=summary.get("max_attempts", 1),
                description=summary.get("description", ""),
                skipped_reason="" if step else OLD_RUN_SKIPPED,
                requests=step_requests(state.pending, summary["name"]) if step and step.waiting_on else [],
            )
        )
    for index in sorted(set(recorded) - set(range(len(planned)))):
        done = recorded[index]
        views.append(StepView(index, done.node_id, done.node_id, None, done.status, done))
    return RunView(state, scenario, views, seq)


def _current_plan(scenario: Scenario | None) -> list[dict[str, Any]]:
    return [step.summary() for step in scenario.plan.steps] if scenario else []


def _status(step: StepState | None, run: RunState) -> str:
    if step is not None:
        return step.status
    return StepStatus.SKIPPED if run.is_finished else StepStatus.PENDING


# --- The scenario page ---------------------------------------------------------------------------


@dataclass(frozen=True)
class InputSource:
    """Where one tool argument comes from, as `describe()` words it, and the steps it reads."""

    key: str
    text: str
    fixed: bool  # a literal: the same in every run
    steps: tuple[str, ...] = ()
    per_item: bool = False
    required: bool = False


@dataclass(frozen=True)
class FlowStep:
    """A step of a scenario as its page shows it: what it calls, waits for and how it runs."""

    index: int
    stage: int  # steps of one stage can run at once
    name: str
    tool: str | None  # None: an approval step, which calls nothing
    server: str | None
    description: str
    sources: list[InputSource]
    depends_on: tuple[str, ...]
    when: str | None
    for_each: str | None
    max_parallel: int
    on_error: str
    retry: RetryPolicy
    timeout_seconds: float | None
    idle_timeout_seconds: float | None


def plan(scenario: Scenario) -> list[FlowStep]:
    """The scenario's steps, in file order, each with the stage it can run in."""
    compiled = scenario.plan
    stage_of = {name: number for number, names in enumerate(compiled.stages(), start=1) for name in names}
    return [
        FlowStep(
            index=step.index,
            stage=stage_of.get(step.name, 0),
            name=step.name,
            tool=step.tool,
            server=step.server,
            description=step.description,
            sources=input_sources(step),
            depends_on=step.depends_on,
            when=step.when.describe() if step.when is not None else None,
            for_each=step.for_each.describe() if step.for_each is not None else None,
            max_parallel=step.max_parallel,
            on_error=step.on_error,
            retry=step.retry,
            timeout_seconds=step.timeout_seconds,
            idle_timeout_seconds=step.idle_timeout_seconds,
        )
        for step in compiled.steps
    ]


def input_sources(step: PlannedStep) -> list[InputSource]:
    return [
        InputSource(
            key,
            node.describe(),
            fixed=isinstance(node, LiteralNode),
            steps=tuple(sorted(node.references())),
            per_item=node.uses_item(),
            required=key in step.required,
        )
        for key, node in step.input.items.items()
    ]


# --- The tools page ----------------------------------------------------------------------------


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
