"""Each scenario checked against the live MCP tools, before any run: the problems its runs would meet.

For each step: its tool exists, on one server only, and needs no client feature Stepline lacks (MCP
tasks); every argument its input schema requires is given; a literal argument fits its schema, and
text can only go where text is accepted; an argument the schema does not declare is an error when the
schema allows no others, else a warning. A run input that a run may leave out (not required, no
default) bound to an argument the tool requires is a warning.

Every read of `input.X` (in `from` paths and expressions, the run's `output` included) must be declared
in `input_schema` when it declares fields or allows none; every read of `steps.X.output.f` is looked up
in the output schema of X's tool, when it has one: an error when that schema allows no other field,
else a warning.

The same checks serve `stepline validate`, `GET /api/scenarios/{id}/checks` and the scenario page.
They wait for no server longer than its first connection attempt: a step whose server is down is a
warning saying it was not checked.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Literal

from mcp_types import Tool
from pydantic import BaseModel, ConfigDict, Field

from web.expressions import (
    LiteralNode,
    Node,
    ObjectNode,
    ReadPath,
    Segment,
    TextNode,
    bound_path,
    read_paths,
    render_path,
)
from web.mcp_pool import McpPool
from web.plan import PlannedStep
from web.scenarios import Catalog, Problem, Scenario
from web.schema_checks import argument_schema, declared_types, literal_input_errors, undeclared

Severity = Literal["error", "warning"]
# Names listed after a problem when no close match is found; past this many the list hides the message.
MAX_NAMES_LISTED = 12
# What Stepline's MCP client cannot do for a tool, by the value of the tool's `execution.taskSupport`.
UNSUPPORTED_TASK_SUPPORT = "required"


@dataclass(frozen=True)
class Check:
    """One problem of a scenario file: `message` names where it is (`steps.0 (outlet).input.domain: …`)."""

    file: str
    message: str
    severity: Severity = "error"
    scenario_id: str | None = None
    step: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


# Where a loading problem says it is: `steps.2 (right).needs.1: …` or `output.summary: …`.
_STEP_LOCATION = re.compile(r"steps\.\d+ \((?P<step>[^)]*)\)(?:\.(?P<field>[^:\s]+))?: ")
_SCENARIO_LOCATION = re.compile(r"(?P<field>(?:output|input_schema|defaults)(?:\.[^:\s]+)?): ")


def problem_check(problem: Problem) -> Check:
    """A problem found loading a file, as a Check with the step and field it names."""
    step = field = None
    if match := _STEP_LOCATION.match(problem.message):
        step, field = match["step"], match["field"]
    elif match := _SCENARIO_LOCATION.match(problem.message):
        field = match["field"]
    return Check(problem.file, problem.message, step=step, field=field)


# --- What the servers offer -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveTools:
    """Each server's tools as last listed; `down`: the servers that could not say, and why."""

    offered: dict[str, dict[str, Tool]]
    down: dict[str, str]


async def live_tools(pool: McpPool) -> LiveTools:
    await pool.settle()
    offered: dict[str, dict[str, Tool]] = {}
    down: dict[str, str] = {}
    for name, server in pool.servers.items():
        if server.tools or server.state == "ready":
            offered[name] = {tool.name: tool for tool in server.tools}
        else:
            down[name] = server.error or "it has not answered yet"
    return LiveTools(offered, down)


def server_checks(tools: LiveTools) -> dict[str, Check]:
    """A check for each server that could not be reached, by its name."""
    return {
        name: Check(f"mcpServers.{name}", f"server unreachable, its tools not checked: {why}")
        for name, why in tools.down.items()
    }


# --- Checking -------------------------------------------------------------------------------------------


async def scenario_checks(scenario: Scenario, pool: McpPool) -> list[Check]:
    return check_scenario(scenario, await live_tools(pool))


def check_scenario(scenario: Scenario, tools: LiveTools) -> list[Check]:
    return _Checker(scenario, tools).run()


@dataclass(frozen=True)
class CatalogChecks:
    servers: dict[str, Check]  # by server name
    files: dict[str, list[Check]]  # every file of the folder, by name; a clean one has none


async def catalog_checks(catalog: Catalog, pool: McpPool) -> CatalogChecks:
    """The problems of every file: those found loading it, then those against the live tools."""
    tools = await live_tools(pool)
    files: dict[str, list[Check]] = {}
    for problem in catalog.problems:
        files.setdefault(problem.file, []).append(problem_check(problem))
    for scenario in catalog.scenarios.values():
        files.setdefault(f"{scenario.scenario_id}.json", []).extend(check_scenario(scenario, tools))
    return CatalogChecks(server_checks(tools), dict(sorted(files.items())))


class _Checker:
    def __init__(self, scenario: Scenario, tools: LiveTools) -> None:
        self.scenario = scenario
        self.tools = tools
        self.found: list[Check] = []
        self.step_tools: dict[str, Tool] = {}

    def run(self) -> list[Check]:
        plan = self.scenario.plan
        for step in plan.steps:
            tool = self._locate(step)
            if tool is not None:
                self.step_tools[step.name] = tool
        for step in plan.steps:
            self._step(step)
        if plan.output is not None:
            parts = plan.output.items.items() if isinstance(plan.output, ObjectNode) else [("", plan.output)]
            for key, node in parts:
                self._reads(None, f"output.{key}" if key else "output", node)
        # Each step's problems together, in step order (its tool was looked up in a first pass); the run's last.
        last = len(plan.steps)
        ordered = sorted(self.found, key=lambda check: plan.step(check.step).index if check.step else last)
        return list(dict.fromkeys(ordered))

    def _add(self, step: PlannedStep | None, field: str | None, text: str, severity: Severity = "error") -> None:
        where = ".".join(part for part in (step.label if step else None, field) if part)
        self.found.append(
            Check(
                f"{self.scenario.scenario_id}.json",
                f"{where}: {text}",
                severity,
                self.scenario.scenario_id,
                step.name if step else None,
                field,
            )
        )

    # --- the step's tool ---------------------------------------------------------------------------

    def _locate(self, step: PlannedStep) -> Tool | None:
        """The step's tool, as web.mcp_pool finds it, judged from the lists known now (no waiting)."""
        if step.tool is None:  # an approval calls nothing
            return None
        offered, down = self.tools.offered, self.tools.down
        configured = [*offered, *down]
        if step.server is not None and step.server not in configured:
            hint = _hint(step.server, configured, "configured")
            self._add(step, "server", f"unknown MCP server '{step.server}'{hint}")
            return None
        candidates = [step.server] if step.server else configured
        matches = [offered[name][step.tool] for name in candidates if step.tool in offered.get(name, {})]
        owners = [name for name in candidates if step.tool in offered.get(name, {})]
        if len(matches) == 1:
            return matches[0]
        if matches:
            names = ", ".join(f"'{name}'" for name in owners)
            text = f"tool '{step.tool}' is offered by several servers ({names}); set the step's 'server'"
            self._add(step, "tool", text)
            return None
        unavailable = [name for name in candidates if name in down]
        if unavailable:
            why = "; ".join(f"MCP server '{name}' is unavailable: {down[name]}" for name in unavailable)
            self._add(step, "tool", f"not checked against tool '{step.tool}': {why}", "warning")
            return None
        where = f"MCP server '{step.server}'" if step.server else "any configured MCP server"
        known = sorted({tool for name in candidates for tool in offered[name]})
        self._add(step, "tool", f"unknown tool '{step.tool}' on {where}{_hint(step.tool, known, 'tools')}")
        return None

    def _step(self, step: PlannedStep) -> None:
        tool = self.step_tools.get(step.name)
        arguments = step.input.items
        if tool is not None:
            if tool.execution is not None and tool.execution.task_support == UNSUPPORTED_TASK_SUPPORT:
                self._add(
                    step,
                    "tool",
                    f"tool '{tool.name}' needs MCP tasks (its execution.taskSupport is \"required\"), which "
                    "Stepline's MCP client does not support: every call would fail",
                )
            for key in _required(tool.input_schema):
                if key not in arguments:
                    self._add(step, "input", f"the tool requires '{key}', which is not given")
        for key, node in arguments.items():
            if tool is not None:
                self._argument(step, tool, key, node)
            self._reads(step, f"input.{key}", node)
        for field, node in (("when", step.when), ("for_each", step.for_each), ("message", step.message)):
            if node is not None:
                self._reads(step, field, node)

    def _argument(self, step: PlannedStep, tool: Tool, key: str, node: Node) -> None:
        schema, field = tool.input_schema, f"input.{key}"
        if argument_schema(schema, key) is None:
            found = undeclared(schema, [key])
            if found is not None:
                hint = _hint(key, found.declared, "arguments")
                if found.forbidden:
                    self._add(step, field, f"the tool has no argument '{key}'{hint}")
                else:
                    text = f"the tool does not declare an argument '{key}'{hint}; it may ignore it or refuse it"
                    self._add(step, field, text, "warning")
            return
        if isinstance(node, LiteralNode):
            for _, message in literal_input_errors(schema, {key: node.value}):
                self._add(step, field, message)
        elif isinstance(node, TextNode):
            types = declared_types(schema, key)
            if types is not None and "string" not in types:
                wanted = " or ".join(types)
                text = f"'{node.describe()}' is text (text around {{{{ }}}} always is), but the tool wants {wanted}"
                self._add(step, field, text)
        if key in _required(schema):
            self._optional_input(step, key, node)

    def _optional_input(self, step: PlannedStep, key: str, node: Node) -> None:
        """A required argument bound to a run input that a run may leave out: its runs may fail."""
        bound = bound_path(node)
        if bound is None or bound[0] != "input" or not bound[1]:
            return
        name = bound[1][0][1]
        schema = self.scenario.input_schema
        properties = schema.get("properties")
        declared = properties.get(name) if isinstance(properties, dict) else None
        if not isinstance(declared, dict) or name in _required(schema) or "default" in declared:
            return  # an undeclared input is reported as such; a required or defaulted one is always there
        self._add(
            step,
            f"input.{key}",
            f"bound to input.{name}, which a run may leave out (input_schema neither requires it nor gives it "
            f"a default), but the tool requires '{key}'",
            "warning",
        )

    # --- what the step reads -----------------------------------------------------------------------

    def _reads(self, step: PlannedStep | None, field: str, node: Node) -> None:
        for root, keys in read_paths(node):
            if root == "input":
                self._input_read(step, field, keys)
            elif root == "steps":
                self._output_read(step, field, keys)

    def _input_read(self, step: PlannedStep | None, field: str, keys: tuple[Segment, ...]) -> None:
        found = undeclared(self.scenario.input_schema, [key for _, key in keys])
        if found is None:
            return
        shown = render_path("input", keys[: found.position + 1])
        hint = _path_hint(("input", keys), found.position, found.declared, "it declares")
        self._add(step, field, f"{shown} is not declared in input_schema{hint}")

    def _output_read(self, step: PlannedStep | None, field: str, keys: tuple[Segment, ...]) -> None:
        if len(keys) < 3 or keys[1][1] not in ("output", "structured"):
            return
        source = str(keys[0][1])
        tool = self.step_tools.get(source)
        if tool is None or not isinstance(tool.output_schema, dict):
            return
        start = 2
        if self.scenario.plan.step(source).for_each is not None:
            # Its output is the list of its items' outputs: an index first, then an item's fields.
            if keys[1][1] != "output" or not _is_index(keys[2][1]):
                return
            start = 3
        found = undeclared(tool.output_schema, [key for _, key in keys[start:]])
        if found is None:
            return
        at = start + found.position
        shown = render_path("steps", keys[: at + 1])
        hint = _path_hint(("steps", keys), at, found.declared, "it declares")
        name = keys[at][1]
        if found.forbidden:
            self._add(step, field, f"{shown}: the output schema of tool '{tool.name}' has no field '{name}'{hint}")
        else:
            text = f"{shown}: the output schema of tool '{tool.name}' does not declare '{name}'{hint}"
            self._add(step, field, text, "warning")


def _required(schema: dict[str, Any]) -> list[str]:
    required = schema.get("required")
    return [key for key in required if isinstance(key, str)] if isinstance(required, list) else []


def _is_index(key: str | int) -> bool:
    return isinstance(key, int) or key.lstrip("-").isdigit()


def _hint(name: str, choices: Any, what: str) -> str:
    """` (did you mean 'x'?)`, else the names there are (when few enough to read)."""
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=1)
    if close:
        return f" (did you mean '{close[0]}'?)"
    if not choices:
        return f" ({what}: none)"
    return f" ({what}: {', '.join(choices)})" if len(choices) <= MAX_NAMES_LISTED else ""


def _path_hint(read: ReadPath, at: int, declared: tuple[str, ...], what: str) -> str:
    """The read with its unknown key replaced by the closest declared one, else the keys declared there."""
    root, keys = read
    close = difflib.get_close_matches(str(keys[at][1]), declared, n=1)
    if close:
        return f" (did you mean '{render_path(root, (*keys[:at], (True, close[0])))}'?)"
    return _hint(str(keys[at][1]), declared, what)


# --- Reports: the JSON of `stepline validate --json` and of GET /api/scenarios/{id}/checks ---------------


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


MISSING_ARGUMENT = {
    "severity": "error",
    "step": "weather",
    "field": "input",
    "message": "steps.0 (weather).input: the tool requires 'location', which is not given",
}
UNDECLARED_OUTPUT = {
    "severity": "warning",
    "step": "brief",
    "field": "input.title",
    "message": "steps.1 (brief).input.title: steps.outlet.output.nmae: the output schema of tool 'lookup_outlet' "
    "does not declare 'nmae' (did you mean 'steps.outlet.output.name'?)",
}


class CheckItem(BaseModel):
    model_config = _examples(MISSING_ARGUMENT, UNDECLARED_OUTPUT)

    severity: Severity = Field(description="An error fails runs (or every run); a warning may.")
    step: str | None = Field(description="The step's name, when the problem is a step's.")
    field: str | None = Field(description="Where in the step (or the scenario): `input.url`, `when`, `output.summary`…")
    message: str = Field(description="The problem, naming where it is.")

    @classmethod
    def of(cls, check: Check) -> CheckItem:
        return cls(severity=check.severity, step=check.step, field=check.field, message=check.message)


class ScenarioChecks(BaseModel):
    model_config = _examples(
        {
            "file": "outlet_brief.json",
            "scenario_id": "outlet_brief",
            "valid": False,
            "errors": 1,
            "warnings": 1,
            "problems": [MISSING_ARGUMENT, UNDECLARED_OUTPUT],
        }
    )

    file: str
    scenario_id: str | None = Field(description="Null for a file that could not be read as a scenario.")
    valid: bool = Field(description="No errors: warnings do not make a scenario invalid.")
    errors: int
    warnings: int
    problems: list[CheckItem]

    @classmethod
    def of(cls, file: str, checks: list[Check], scenario_id: str | None = None) -> ScenarioChecks:
        errors = sum(check.severity == "error" for check in checks)
        return cls(
            file=file,
            scenario_id=scenario_id or next((check.scenario_id for check in checks if check.scenario_id), None),
            valid=errors == 0,
            errors=errors,
            warnings=len(checks) - errors,
            problems=[CheckItem.of(check) for check in checks],
        )
