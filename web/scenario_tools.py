"""Scenarios as MCP tools, and a finished run as the tool's result: pure functions to the SDK's types.

A scenario's tool takes its `input_schema` as `inputSchema`; one that declares an `output` also has an
`outputSchema`, and its result's `structuredContent` is the run's output. That content is always an object,
as MCP wants: an output written as an object is given as it is, any other output as `{"output": value}`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import mcp_types as types

from web.events import RunStatus, StepStatus
from web.expressions import ListNode, LiteralNode, Node, ObjectNode, TextNode
from web.json_limits import MESSAGE_MAX_CHARS, safe_text
from web.mcp_pool import ToolInfo
from web.registry import RunRecord
from web.run_resources import RUN_URI_TEMPLATE
from web.scenarios import Scenario

# MCP's rule for tool names (SEP-986). Scenario ids use the same characters, but have no length limit.
TOOL_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,128}$"
# How much of the output the text summary shows: enough to read, small enough for an agent's context.
SUMMARY_OUTPUT_CHARS = 2000
# The key a non-object output is given under in structuredContent.
WRAPPED_OUTPUT_KEY = "output"
# What the runner puts in place of an output larger than STEPLINE_MAX_OUTPUT_BYTES (web.json_limits.bounded).
TRUNCATED_OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The output was too large to keep: its size and its JSON's first bytes",
    "required": ["truncated", "bytes", "preview"],
    "properties": {"truncated": {"const": True}, "bytes": {"type": "integer"}, "preview": {"type": "string"}},
}


def tool_name_problem(name: str) -> str | None:
    """Why `name` (a scenario_id) cannot be an MCP tool's name; None when it can."""
    if re.fullmatch(TOOL_NAME_PATTERN, name):
        return None
    if len(name) > 128:
        return f"'{name[:40]}…' is longer than the 128 characters an MCP tool name may have"
    return f"'{name}' is not an MCP tool name: only letters, digits, '_', '-' and '.' are allowed"


def tool_of(scenario: Scenario, tools: Sequence[ToolInfo]) -> types.Tool:
    """The scenario as an MCP tool; `tools`: the tools the MCP servers offer now, for the annotations."""
    input_schema = (
        scenario.input_schema if "type" in scenario.input_schema else {"type": "object", **scenario.input_schema}
    )
    return types.Tool(
        name=scenario.scenario_id,
        title=scenario.name,
        description=tool_description(scenario),
        input_schema=input_schema,
        output_schema=output_schema_of(scenario),
        annotations=annotations_of(scenario, tools),
    )


def tool_description(scenario: Scenario) -> str:
    """The scenario's description, then its steps in one line."""
    steps = []
    for step in scenario.plan.steps:
        if step.is_approval:
            steps.append(f"{step.name} (a person approves)")
            continue
        what = "" if step.tool == step.name else str(step.tool)
        if step.for_each is not None:
            what = f"{what}, for each item" if what else "for each item"
        steps.append(f"{step.name} ({what})" if what else step.name)
    line = f"Steps: {', '.join(steps)}."
    return f"{scenario.description.strip()}\n\n{line}" if scenario.description.strip() else line


# --- annotations ------------------------------------------------------------------------------------------


def annotations_of(scenario: Scenario, tools: Sequence[ToolInfo]) -> types.ToolAnnotations | None:
    """What the steps' tools say of themselves, said of the scenario; a hint no step lets us know is left out.

    Read-only when every tool step's tool is and no person is asked to approve; destructive when any is;
    idempotent when every one is (a read-only tool is); open-world when any is.
    """
    called = [step for step in scenario.plan.steps if not step.is_approval]
    approval = len(called) < len(scenario.plan.steps)
    hints = [_hints(_tool_of_step(step.tool or "", step.server, tools)) for step in called]
    read_only = _all(hint["readOnlyHint"] for hint in hints)
    if read_only and approval:
        read_only = None
    annotations = types.ToolAnnotations(
        read_only_hint=read_only,
        destructive_hint=_any(hint["destructiveHint"] for hint in hints),
        idempotent_hint=_all(hint["idempotentHint"] for hint in hints),
        open_world_hint=_any(hint["openWorldHint"] for hint in hints),
    )
    return annotations if annotations.model_dump(exclude_none=True) else None


def _tool_of_step(tool: str, server: str | None, tools: Sequence[ToolInfo]) -> ToolInfo | None:
    """The tool a step calls: by server and name when it names its server, else the only one of that name."""
    matches = [info for info in tools if info.name == tool and (server is None or info.server == server)]
    return matches[0] if len(matches) == 1 else None


def _hints(tool: ToolInfo | None) -> dict[str, bool | None]:
    """A tool's hints, each None when it does not say (or the tool is unknown)."""
    said = (tool.annotations if tool is not None else None) or {}
    hints = {key: said.get(key) for key in ("readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint")}
    hints = {key: value if isinstance(value, bool) else None for key, value in hints.items()}
    if hints["readOnlyHint"]:
        # A tool that changes nothing destroys nothing, and calling it again changes nothing more.
        hints["destructiveHint"], hints["idempotentHint"] = False, True
    return hints


def _all(values: Any) -> bool | None:
    """True when every one is True, False when one is False, else unknown."""
    values = list(values)
    if False in values:
        return False
    return True if all(value is True for value in values) else None


def _any(values: Any) -> bool | None:
    """True when one is True, False when every one is False, else unknown."""
    values = list(values)
    if True in values:
        return True
    return False if all(value is False for value in values) else None


# --- output -----------------------------------------------------------------------------------------------


def output_schema_of(scenario: Scenario) -> dict[str, Any] | None:
    """The JSON Schema of the tool's structuredContent; None unless the scenario declares an `output`.

    Each field's expression is its description; its type is given only where the template makes it certain.
    """
    output = scenario.plan.output
    if output is None:
        return None
    if isinstance(output, ObjectNode):
        return {"type": "object", "properties": {key: _schema(node) for key, node in output.items.items()}}
    value = _schema(output)
    return {
        "type": "object",
        "properties": {WRAPPED_OUTPUT_KEY: {"anyOf": [value, TRUNCATED_OUTPUT_SCHEMA]} if "type" in value else value},
        "required": [WRAPPED_OUTPUT_KEY],
    }


def _schema(node: Node) -> dict[str, Any]:
    if isinstance(node, ObjectNode):
        return {"type": "object", "properties": {key: _schema(item) for key, item in node.items.items()}}
    if isinstance(node, ListNode):
        return {"type": "array"}
    if isinstance(node, TextNode):
        return {"type": "string", "description": node.describe()}
    if isinstance(node, LiteralNode):
        return {"const": node.value}
    return {"description": node.describe()}  # a whole expression: any JSON value


def wraps_output(scenario: Scenario | None, output: Any) -> bool:
    """Whether structuredContent holds the output under WRAPPED_OUTPUT_KEY: the template decides when the
    scenario is known (so the content always fits its outputSchema), else the value."""
    if scenario is not None and scenario.plan.output is not None:
        return not isinstance(scenario.plan.output, ObjectNode)
    return not isinstance(output, dict)


def structured_output(record: RunRecord, scenario: Scenario | None = None) -> dict[str, Any] | None:
    """The run's output as structuredContent (an object); None when it has none.

    Pass the run's `scenario` when it is known: a scenario without an `output` then gives None even when
    the run's output is null, and one whose output is a single expression is always wrapped.
    """
    state = record.state
    if scenario is not None and scenario.plan.output is None:
        return None
    if scenario is None and state.output is None:
        return None
    return {WRAPPED_OUTPUT_KEY: state.output} if wraps_output(scenario, state.output) else state.output


# --- results ----------------------------------------------------------------------------------------------


def run_uri(run_id: str) -> str:
    return RUN_URI_TEMPLATE.format(run_id=run_id)


@dataclass(frozen=True)
class RunLinks:
    """Where people and programs reach a run over HTTP. `base`: the app's absolute root, root path included."""

    base: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "base", self.base.rstrip("/"))

    def page(self, run_id: str) -> str:
        return f"{self.base}/runs/{run_id}"

    def snapshot(self, run_id: str) -> str:
        return f"{self.base}/api/runs/{run_id}"


def call_result(record: RunRecord, links: RunLinks | None, scenario: Scenario | None = None) -> types.CallToolResult:
    """A finished run as the result of its tool call: a short summary, its output and links to the run.

    A failed or cancelled run is an error result naming why. `scenario`: the run's, when known (its name in
    the summary, and the shape of structuredContent: see `structured_output`).
    """
    state = record.state
    title = f"{scenario.name} ({state.scenario_id})" if scenario is not None else state.scenario_id
    head = f"Run {state.run_id} of {title}"
    took = _took(state.started_at, state.finished_at)
    if state.status == RunStatus.SUCCESS:
        lines = [f"{head} succeeded{took}.", _step_counts(record)]
        if state.message:
            lines.append(_cut(state.message, MESSAGE_MAX_CHARS))
        lines.extend(_output_lines(record, scenario))
        structured = structured_output(record, scenario)
        is_error = False
    else:
        lines = [_failure(record, head, took), _step_counts(record)]
        structured, is_error = None, True
    content: list[types.TextContent | types.ResourceLink] = [types.TextContent(text="\n".join(lines))]
    content.extend(run_links(state.run_id, links))
    return types.CallToolResult(content=content, structured_content=structured, is_error=is_error)


def run_links(run_id: str, links: RunLinks | None) -> list[types.ResourceLink]:
    """Links to the run: its page and snapshot over HTTP (when the address is known), and its MCP resource."""
    short = run_id[:8]
    found = []
    if links is not None:
        found += [
            types.ResourceLink(
                name=f"run {short} page",
                title="The run's page",
                uri=links.page(run_id),
                mime_type="text/html",
                description="The run live in a browser: each step, its input, output and messages",
            ),
            types.ResourceLink(
                name=f"run {short} snapshot",
                title="The run's JSON snapshot",
                uri=links.snapshot(run_id),
                mime_type="application/json",
                description="GET it for the run's status, steps and output",
            ),
        ]
    found.append(
        types.ResourceLink(
            name=f"run {short}",
            title="The run as an MCP resource",
            uri=run_uri(run_id),
            mime_type="application/json",
            description="Read it (resources/read) for the run's JSON snapshot",
        )
    )
    return found


def _failure(record: RunRecord, head: str, took: str) -> str:
    state = record.state
    message = _cut(state.message, MESSAGE_MAX_CHARS)
    if state.status == RunStatus.CANCELLED:
        by = state.cancelled_by
        who = f" (by {by['name']})" if by and by.get("name") else ""
        return f"{head} was cancelled{who}{took}." + (f" {message}" if message and not who else "")
    if state.status != RunStatus.FAILED:
        return f"{head} has not finished: it is {state.status}."
    failing = _failing_step(record)
    if failing is None:
        return f"{head} failed{took}: {message or 'no reason was recorded'}"
    name, step_message = failing
    said = f"{head} failed at step '{name}'{took}: {_cut(step_message, MESSAGE_MAX_CHARS) or 'no reason given'}"
    if message and step_message not in message:
        said += f"\n{message}"
    return said


def _failing_step(record: RunRecord) -> tuple[str, str] | None:
    """The step that failed the run: the first to fail whose failure was not tolerated."""
    state = record.state
    tolerated = {step["name"] for step in state.plan or [] if step.get("on_error") == "continue"}
    failed = [
        step for step in state.steps.values() if step.status == StepStatus.FAILED and step.node_id not in tolerated
    ]
    if not failed:
        return None
    first = min(failed, key=lambda step: (step.finished_at or "", step.index))
    return first.node_id, first.message


def _step_counts(record: RunRecord) -> str:
    state = record.state
    planned = len(state.plan) if state.plan is not None else len(state.steps)
    counts: dict[str, int] = {}
    for step in state.steps.values():
        counts[step.status] = counts.get(step.status, 0) + 1
    not_run = planned - len(state.steps)
    if not_run > 0:
        counts["not run"] = not_run
    told = ", ".join(f"{number} {status}" for status, number in counts.items())
    return f"Steps: {planned} ({told})." if told else f"Steps: {planned}."


def _output_lines(record: RunRecord, scenario: Scenario | None) -> list[str]:
    """The output as compact JSON, cut; a scenario without an output shows its last steps' outputs instead."""
    state = record.state
    declared = scenario.plan.output is not None if scenario is not None else state.output is not None
    if declared:
        return [f"Output: {_cut(_compact(state.output), SUMMARY_OUTPUT_CHARS)}"]
    # A chain's answer is its last step's output: the steps nothing else waits for.
    plan = state.plan or []
    awaited = {name for step in plan for name in step.get("depends_on", [])}
    last = [step["name"] for step in plan if step["name"] not in awaited]
    lines = []
    budget = SUMMARY_OUTPUT_CHARS
    for name in last:
        step = state.steps.get(name)
        if step is None or step.status != StepStatus.SUCCESS or budget <= 0:
            continue
        text = _cut(_compact(step.output), budget)
        budget -= len(text)
        lines.append(f"Output of step '{name}': {text}")
    return lines


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return safe_text(text)
    return safe_text(text[:limit]) + f"… (cut: {len(text) - limit:,} more characters; the run's snapshot has it whole)"


def _took(started_at: str | None, finished_at: str | None) -> str:
    """ " in 1.8 s", or nothing when the run has no start or end."""
    if not started_at or not finished_at:
        return ""
    seconds = (datetime.fromisoformat(finished_at) - datetime.fromisoformat(started_at)).total_seconds()
    return f" in {seconds * 1000:.0f} ms" if seconds < 1 else f" in {seconds:.1f} s"


def input_error_result(errors: list[dict[str, Any]]) -> types.CallToolResult:
    """Arguments that do not fit the tool's inputSchema, as an error result naming each field.

    `errors`: `{loc, msg, type}` entries as the API's 422 has them, `loc` starting with "body", "input".
    """
    lines = ["The arguments do not fit the tool's inputSchema:"]
    for error in errors:
        loc = [str(part) for part in error.get("loc", [])]
        if loc[:2] == ["body", "input"]:
            loc = loc[2:]
        where = ".".join(loc) or "(the arguments)"
        lines.append(f"- {where}: {_cut(str(error.get('msg', '')), MESSAGE_MAX_CHARS)}")
    return types.CallToolResult(content=[types.TextContent(text="\n".join(lines))], is_error=True)
