"""What each step of a scenario would receive, worked out without calling any tool.

A preview evaluates the plan's conditions, for_each lists and arguments as a run would, from a run input
and, optionally, the outputs an earlier run recorded: those stand in for the tools' answers. A step whose
expressions read a step with no output to take says which and why, and is not evaluated further; errors
(an expression that fails, a required argument left undefined) are the step's, never the preview's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from web.approval import approval_message
from web.events import StepStatus
from web.expressions import OMIT, EvaluationError, Node
from web.mcp_pool import ToolInfo
from web.plan import Plan, PlannedStep
from web.run_state import RunState, StepState
from web.scenarios import Scenario
from web.step_inputs import StepInputError, for_each_items, missing_required, required_arguments

# What `run.id` reads in a preview: no run exists, and a real id would point at another run.
PREVIEW_RUN_ID = "preview"
NO_OUTPUT_YET = "which has no output yet"
# Items of a for_each shown, with their arguments, unless the caller asks for another number.
DEFAULT_ITEMS_SHOWN = 20


class PreviewStatus(StrEnum):
    READY = "ready"  # the tool would be called with these arguments (once per item for a for_each)
    SKIPPED = "skipped"  # the condition is false
    WAITING = "waiting"  # it reads a step that has no output to take
    ERROR = "error"  # it would fail before its call


class RunOfAnotherScenario(Exception):
    """Outputs were asked from a run of another scenario: its steps are not this scenario's."""

    def __init__(self, run_id: str, run_scenario_id: str, scenario_id: str) -> None:
        super().__init__(
            f"Run {run_id} is a run of scenario '{run_scenario_id}', not of '{scenario_id}': "
            "take outputs from a run of the scenario previewed"
        )


@dataclass
class ItemPreview:
    """One item of a for_each: the arguments its call would get."""

    item_index: int
    input: dict[str, Any] | None
    omitted: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class StepPreview:
    index: int
    name: str
    tool: str | None  # None: an approval, which calls nothing
    server: str | None
    status: PreviewStatus = PreviewStatus.READY
    message: str = ""
    when_expression: str | None = None
    when: Any = None  # the condition's value, once evaluated
    for_each_expression: str | None = None
    for_each: list[Any] | None = None  # the first items, once evaluated
    item_count: int | None = None
    input: dict[str, Any] | None = None  # the arguments, when the step is not a for_each
    omitted: list[str] = field(default_factory=list)  # arguments left out: their expression is undefined
    unresolved: list[str] = field(default_factory=list)  # arguments that read a step with no output
    items: list[ItemPreview] | None = None  # the first items' arguments
    needs: list[str] = field(default_factory=list)  # steps read that have no output to take
    error: str | None = None

    @property
    def items_hidden(self) -> int:
        return (self.item_count or 0) - len(self.items or ())


@dataclass
class Preview:
    scenario_id: str
    input: dict[str, Any]
    outputs_from_run: str | None
    steps: list[StepPreview]


def recorded_results(state: RunState) -> dict[str, dict[str, Any]]:
    """Each step of a run that has ended, as its expressions read it: output, status, text and content.

    A run does not record `structured` apart from the output, so it is left undefined rather than guessed.
    """
    return {name: _result(step) for name, step in state.steps.items() if step.finished_at is not None}


def _result(step: StepState) -> dict[str, Any]:
    # A content too large to keep is recorded as a marker, not a list: it has no blocks to read.
    content = step.content if isinstance(step.content, list) else None
    texts = [
        block["text"]
        for block in content or ()
        if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str)
    ]
    return {
        "output": step.output if step.status == StepStatus.SUCCESS else None,
        "status": step.status,
        "text": "\n".join(texts) if texts else None,
        "content": content,
    }


def preview_scenario(
    scenario: Scenario,
    run_input: dict[str, Any],
    source: RunState | None = None,
    *,
    tools: Sequence[ToolInfo] = (),
    max_items: int = DEFAULT_ITEMS_SHOWN,
    max_for_each_items: int,
) -> Preview:
    """Every step of `scenario` previewed with `run_input` (already checked) and the outputs `source` recorded.

    `tools` are the tools known now (no server is asked): the required arguments of a step's tool are
    checked when its tool is among them.
    """
    previewer = _Previewer(scenario.plan, run_input, source, tools, max_items, max_for_each_items)
    return Preview(
        scenario.scenario_id,
        run_input,
        source.run_id if source is not None else None,
        previewer.steps(),
    )


class _Previewer:
    def __init__(
        self,
        plan: Plan,
        run_input: dict[str, Any],
        source: RunState | None,
        tools: Sequence[ToolInfo],
        max_items: int,
        max_for_each_items: int,
    ) -> None:
        self.plan = plan
        self.source = source
        self.recorded = recorded_results(source) if source is not None else {}
        self.tools = tools
        self.max_items = max_items
        self.max_for_each_items = max_for_each_items
        # `steps` in expressions: the steps whose outcome the preview can take, as a run would read them.
        self.known: dict[str, dict[str, Any]] = {}
        # Why each other step has no output to take.
        self.missing: dict[str, str] = {}
        self.scope: dict[str, Any] = {"input": run_input, "steps": self.known, "run": {"id": PREVIEW_RUN_ID}}

    def steps(self) -> list[StepPreview]:
        done: dict[str, StepPreview] = {}
        # Dependencies first: a step's dependencies may come later in the file.
        for stage in self.plan.stages():
            for name in stage:
                step = self.plan.step(name)
                done[name] = preview = self._step(step)
                self._take_outcome(step, preview)
        return sorted(done.values(), key=lambda preview: preview.index)

    # --- what later steps read of this one ------------------------------------------------------------

    def _take_outcome(self, step: PlannedStep, preview: StepPreview) -> None:
        if preview.status == PreviewStatus.SKIPPED:
            # What a run gives the steps after a skipped one.
            self.known[step.name] = {
                "output": None,
                "status": "skipped",
                "text": None,
                "content": None,
                "structured": None,
            }
            return
        if preview.status == PreviewStatus.WAITING:
            self.missing[step.name] = NO_OUTPUT_YET
            return
        if preview.status == PreviewStatus.ERROR:
            self.missing[step.name] = "which would fail"
            return
        recorded = self.recorded.get(step.name)
        if self.source is None:
            self.missing[step.name] = NO_OUTPUT_YET
        elif recorded is None:
            run = f"run {self.source.run_id}"
            ran = step.name in self.source.steps
            self.missing[step.name] = f"which has not ended in {run}" if ran else f"which did not run in {run}"
        elif recorded["status"] == StepStatus.SUCCESS:
            self.known[step.name] = recorded
        elif recorded["status"] == StepStatus.FAILED and step.on_error == "continue":
            self.known[step.name] = recorded  # tolerated: the steps after it read a null output
        else:
            self.missing[step.name] = f"which has no output: it was {recorded['status']} in run {self.source.run_id}"

    # --- one step -----------------------------------------------------------------------------------

    def _step(self, step: PlannedStep) -> StepPreview:
        preview = StepPreview(
            index=step.index,
            name=step.name,
            tool=step.tool,
            server=step.server,
            when_expression=step.when.describe() if step.when is not None else None,
            for_each_expression=step.for_each.describe() if step.for_each is not None else None,
        )
        if step.when is not None:
            if self._waits(preview, step.when, "to decide its condition"):
                return preview
            try:
                preview.when = value = step.when.evaluate(self.scope)
            except EvaluationError as exc:
                return _failed(preview, str(exc))
            if value is OMIT:
                preview.when = None
            if value is OMIT or not value:
                preview.status = PreviewStatus.SKIPPED
                preview.message = f"Condition is false: {step.when.describe()}"
                return preview
        if step.for_each is not None:
            return self._for_each(step, step.for_each, preview)
        if step.message is not None:
            return self._approval(step, step.message, preview)
        if not self._arguments_wait(step, preview):
            arguments, omitted, errors = self._evaluate(step, self.scope)
            preview.input, preview.omitted = arguments, list(omitted)
            if errors:
                return _failed(preview, "; ".join(errors))
        if preview.needs:
            return preview
        preview.message = f"would call {step.tool}"
        return preview

    def _for_each(self, step: PlannedStep, for_each: Node, preview: StepPreview) -> StepPreview:
        if self._waits(preview, for_each, "to know its items"):
            return preview
        try:
            items = for_each_items(step, for_each, self.scope, self.max_for_each_items)
        except StepInputError as exc:
            return _failed(preview, str(exc))
        preview.item_count = len(items)
        preview.for_each = items[: self.max_items]
        if self._arguments_wait(step, preview):
            return preview
        failures: list[tuple[int, str]] = []
        preview.items = []
        # Every item is evaluated, so that the failures are counted; the first ones are shown.
        for index, item in enumerate(items):
            arguments, omitted, errors = self._evaluate(step, {**self.scope, "item": item, "item_index": index})
            error = "; ".join(errors) or None
            if error is not None:
                failures.append((index, error))
            if index < self.max_items:
                preview.items.append(ItemPreview(index, arguments, list(omitted), error))
        if failures:
            first, message = failures[0]
            return _failed(preview, f"{len(failures)} of {len(items)} items would fail; item {first}: {message}")
        action = "would ask a person to approve" if step.is_approval else f"would call {step.tool}"
        preview.message = f"{action} for each of {len(items):,} items"
        return preview

    def _approval(self, step: PlannedStep, message: Node, preview: StepPreview) -> StepPreview:
        """An approval: the message a person would be shown, once the steps it reads have outputs."""
        if self._waits(preview, message, "to write its message"):
            return preview
        try:
            text = approval_message(step, self.scope)
        except StepInputError as exc:
            return _failed(preview, str(exc))
        preview.message = f"would ask a person to approve: {text}"
        return preview

    def _waits(self, preview: StepPreview, node: Node, purpose: str) -> bool:
        """Whether `node` reads steps with no output to take: if so the step waits, saying for what."""
        needs = self._needs(node)
        if not needs:
            return False
        preview.needs = needs
        preview.status = PreviewStatus.WAITING
        preview.message = f"{self._needs_text(needs)}, {purpose}"
        return True

    def _arguments_wait(self, step: PlannedStep, preview: StepPreview) -> bool:
        """Whether some arguments read steps with no output to take: those are named, the step waits for them."""
        needs: set[str] = set()
        for key, node in step.input.items.items():
            read = self._needs(node)
            if read:
                preview.unresolved.append(key)
                needs.update(read)
        if not needs:
            return False
        preview.needs = sorted(needs, key=lambda name: self.plan.step(name).index)
        preview.status = PreviewStatus.WAITING
        preview.message = self._needs_text(preview.needs)
        # The other arguments are still worth seeing (never per item: those wait too).
        if step.for_each is None:
            resolved = {key: node for key, node in step.input.items.items() if key not in preview.unresolved}
            arguments, omitted, errors = self._evaluate(step, self.scope, resolved)
            preview.input, preview.omitted = arguments, list(omitted)
            if errors:
                _failed(preview, "; ".join(errors))
        return True

    def _needs(self, node: Node) -> list[str]:
        return sorted((name for name in node.references() if name not in self.known), key=self._index)

    def _index(self, name: str) -> int:
        return self.plan.step(name).index

    def _needs_text(self, needs: list[str]) -> str:
        """`needs steps.a and steps.b, which have no output yet; steps.c, which would fail`."""
        by_reason: dict[str, list[str]] = {}
        for name in needs:
            by_reason.setdefault(self.missing.get(name, NO_OUTPUT_YET), []).append(f"steps.{name}")
        parts = []
        for reason, names in by_reason.items():
            if len(names) > 1:
                reason = reason.replace("which has ", "which have ", 1)
            parts.append(
                f"{', '.join(names[:-1])} and {names[-1]}, {reason}" if len(names) > 1 else f"{names[0]}, {reason}"
            )
        return "needs " + "; ".join(parts)

    def _evaluate(
        self, step: PlannedStep, scope: Mapping[str, Any], nodes: Mapping[str, Node] | None = None
    ) -> tuple[dict[str, Any], dict[str, Node], list[str]]:
        """(arguments, the node of each left out as undefined, errors): every argument tried, as a run would."""
        arguments: dict[str, Any] = {}
        omitted: dict[str, Node] = {}
        errors: list[str] = []
        for key, node in (step.input.items if nodes is None else nodes).items():
            try:
                value = node.evaluate(scope)
            except EvaluationError as exc:
                errors.append(str(exc))
                continue
            if value is OMIT:
                omitted[key] = node
            else:
                arguments[key] = value
        missing = missing_required(self._required(step), omitted)
        if missing:
            errors.append(missing)
        return arguments, omitted, errors

    def _required(self, step: PlannedStep) -> set[str]:
        """The step's required arguments: its tool's, when the tool is known, and its required_input_fields."""
        matches = [t for t in self.tools if t.name == step.tool and (step.server is None or t.server == step.server)]
        # Unknown, or ambiguous: a run would fail on that, and the checks say so.
        return required_arguments(step, matches[0].input_schema if len(matches) == 1 else None)


def _failed(preview: StepPreview, message: str) -> StepPreview:
    preview.status = PreviewStatus.ERROR
    preview.error = preview.message = message
    return preview
