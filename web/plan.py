"""A scenario compiled into a dependency graph: what each step waits for, and its settings merged.

Version 1 is a chain: each step depends on the one before. Version 2 is a graph: a step depends on
every step its expressions (`input`, `when`, `for_each`) read, plus those in `needs`. Compiling
collects every problem of a file (template syntax, unknown or later steps, a step reading itself,
`item` outside `for_each`, cycles) and raises them together, each naming the step and the field.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from web.expressions import Node, ObjectNode, TemplateSyntaxProblem, compile_expression, compile_value

# How many items of a for_each step are called at once, unless it says.
DEFAULT_MAX_PARALLEL = 4
# An unknown step's problem lists the steps there are, up to this many: past it the list hides the message.
MAX_NAMES_LISTED = 12


def step_label(index: int, name: str) -> str:
    """How problems and pages name a step: its place in the file and its name."""
    return f"steps.{index} ({name})"


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 1  # 1: no retry
    backoff_seconds: float = 1.0
    backoff_multiplier: float = 2.0
    max_backoff_seconds: float = 60.0

    def delay(self, failed_attempt: int) -> float:
        """Seconds to wait after attempt `failed_attempt` (1, 2, …) failed."""
        return min(self.max_backoff_seconds, self.backoff_seconds * self.backoff_multiplier ** (failed_attempt - 1))


# What a step does: call a tool, or ask a person to approve.
TOOL = "tool"
APPROVAL = "approval"


@dataclass(frozen=True)
class PlannedStep:
    index: int
    name: str
    tool: str | None  # None for an approval
    server: str | None
    description: str
    input: ObjectNode
    required: tuple[str, ...]
    depends_on: tuple[str, ...]  # in index order
    when: Node | None
    for_each: Node | None
    max_parallel: int
    on_error: str  # "fail" | "continue"
    retry: RetryPolicy
    timeout_seconds: float | None  # None: the server-wide call timeout
    idle_timeout_seconds: float | None
    wait_timeout_seconds: float | None = None  # None: the server-wide wait timeout
    resume: str | None = None  # "auto" | "ask" | "never"; None: as the tool's annotations say (web.resume)
    kind: str = TOOL
    # An approval's text (a template) and form (a JSON Schema; None: a comment).
    message: Node | None = None
    approval_schema: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        return step_label(self.index, self.name)

    @property
    def is_approval(self) -> bool:
        return self.kind == APPROVAL

    def summary(self) -> dict[str, Any]:
        """What a run records of this step when it starts (JSON), so its page shows the plan it ran."""
        summary = {
            "name": self.name,
            "tool": self.tool,
            "server": self.server,
            "depends_on": list(self.depends_on),
            "for_each": self.for_each is not None,
            "when": self.when.describe() if self.when is not None else None,
            "on_error": self.on_error,
            "max_attempts": self.retry.max_attempts,
            "description": self.description,
        }
        if self.kind != TOOL:  # a tool step's plan reads as it did before there were other types
            summary["type"] = self.kind
        if self.resume is not None:  # likewise, a plan without resume policies reads as before
            summary["resume"] = self.resume
        return summary


@dataclass(frozen=True)
class Plan:
    schema_version: str
    steps: tuple[PlannedStep, ...]
    output: Node | None
    _by_name: dict[str, PlannedStep] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {step.name: step for step in self.steps})

    def step(self, name: str) -> PlannedStep:
        return self._by_name[name]

    def stages(self) -> list[list[str]]:
        """Steps grouped by depth in the graph: a group's steps can run at once, after the groups before."""
        depth: dict[str, int] = {}
        for step in self.steps:  # a step's dependencies may come later in the file
            _depth(step.name, self._by_name, depth)
        groups: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for step in self.steps:
            groups[depth[step.name]].append(step.name)
        return groups


def _depth(name: str, steps: dict[str, PlannedStep], depth: dict[str, int]) -> int:
    # Iterative: a long chain must not reach the recursion limit.
    stack = [name]
    while stack:
        current = stack[-1]
        waiting = [dep for dep in steps[current].depends_on if dep not in depth]
        if waiting:
            stack.extend(waiting)
            continue
        stack.pop()
        depth[current] = 1 + max((depth[dep] for dep in steps[current].depends_on), default=-1)
    return depth[name]


class StepSource(Protocol):
    """What compiling reads of a step as written (web.scenarios' models). A version 2 step also has
    `needs`, `when`, `for_each` and the settings of `defaults`; they are read only from version 2 files."""

    name: str
    tool: str | None
    server: str | None
    description: str
    input: dict[str, Any]
    required_input_fields: list[str]


class ScenarioSource(Protocol):
    """What compiling reads of a scenario as written; a version 2 one also has `defaults` and `output`."""

    schema_version: str
    steps: Sequence[StepSource]


class PlanProblems(Exception):
    """Every problem of a scenario's graph and expressions, each naming the step and the field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def build_plan(scenario: ScenarioSource) -> Plan:
    compiler = _Compiler(scenario)
    plan = compiler.compile()
    if compiler.problems:
        raise PlanProblems(compiler.problems)
    assert plan is not None
    return plan


class _Compiler:
    def __init__(self, scenario: ScenarioSource) -> None:
        self.scenario = scenario
        self.templates = scenario.schema_version != "1"
        self.index: dict[str, int] = {}
        self.problems: list[str] = []

    def compile(self) -> Plan | None:
        for index, step in enumerate(self.scenario.steps):
            if step.name in self.index:
                self.problems.append(f"{step_label(index, step.name)}: duplicate step name '{step.name}'")
            else:
                self.index[step.name] = index
        planned = [self._step(index, step) for index, step in enumerate(self.scenario.steps)]
        output = self._output()
        self._find_cycles([step for step in planned if step is not None])
        if self.problems:
            return None
        return Plan(self.scenario.schema_version, tuple(s for s in planned if s is not None), output)

    # --- one step ---------------------------------------------------------------------------------

    def _step(self, index: int, step: StepSource) -> PlannedStep | None:
        label = step_label(index, step.name)
        inputs = self._compile(lambda: compile_value(step.input, field=f"{label}.input", templates=self.templates))
        when = for_each = message = None
        needs: list[str] = []
        kind, approval_schema = TOOL, None
        if self.templates:
            workflow_step: Any = step
            needs = workflow_step.needs
            kind, approval_schema = workflow_step.type, workflow_step.approval_schema
            if workflow_step.when is not None:
                when = self._compile(lambda: compile_expression(workflow_step.when, field=f"{label}.when"))
            if workflow_step.for_each is not None:
                for_each = self._compile(lambda: compile_expression(workflow_step.for_each, field=f"{label}.for_each"))
            if workflow_step.message is not None:
                message = self._compile(
                    lambda: compile_value(workflow_step.message, field=f"{label}.message", templates=True)
                )
        read: set[str] = set()
        for where, node in self._fields(label, inputs, when, for_each, message):
            read |= self._references(index, where, node)
        read |= self._needs(index, label, needs)
        if not isinstance(inputs, ObjectNode):
            return None
        self._item_use(label, inputs, when, for_each, message)

        if self.templates:
            depends_on = sorted(read, key=self.index.__getitem__)
        else:
            depends_on = [self.scenario.steps[index - 1].name] if index else []
        settings = self._settings(step)
        return PlannedStep(
            index=index,
            name=step.name,
            tool=step.tool,
            server=step.server,
            description=step.description,
            input=inputs,
            required=tuple(step.required_input_fields),
            depends_on=tuple(depends_on),
            when=when,
            for_each=for_each,
            max_parallel=settings["max_parallel"],
            on_error=settings["on_error"],
            retry=settings["retry"],
            timeout_seconds=settings["timeout_seconds"],
            idle_timeout_seconds=settings["idle_timeout_seconds"],
            wait_timeout_seconds=settings["wait_timeout_seconds"],
            resume=settings["resume"],
            kind=kind,
            message=message,
            approval_schema=approval_schema,
        )

    def _compile(self, make: Callable[[], Node]) -> Any:
        try:
            return make()
        except TemplateSyntaxProblem as exc:
            self.problems.extend(exc.problems)
            return None

    @staticmethod
    def _fields(
        label: str, inputs: ObjectNode | None, when: Node | None, for_each: Node | None, message: Node | None
    ) -> Iterator[tuple[str, Node]]:
        """Each place a step reads others (that compiled), named for its problems."""
        for key, node in inputs.items.items() if inputs is not None else ():
            yield f"{label}.input.{key}", node
        if when is not None:
            yield f"{label}.when", when
        if for_each is not None:
            yield f"{label}.for_each", for_each
        if message is not None:
            yield f"{label}.message", message

    def _references(self, index: int, where: str, node: Node) -> set[str]:
        """The known steps `node` reads; a problem for each unknown, itself, or (version 1) a later one."""
        known = set()
        for ref in sorted(node.references()):
            if ref not in self.index:
                self.problems.append(f"{where}: {node.describe()} reads unknown step '{ref}'{self._hint(ref)}")
            elif self.index[ref] == index:  # a duplicate's name is the first step's, already reported
                self.problems.append(f"{where}: {node.describe()} reads the step itself")
            elif not self.templates and self.index[ref] > index:
                self.problems.append(f"{where}: {node.describe()} refers to '{ref}', which is not an earlier step")
            else:
                known.add(ref)
        return known

    def _needs(self, index: int, label: str, needs: list[str]) -> set[str]:
        known = set()
        for position, ref in enumerate(needs):
            where = f"{label}.needs.{position}"
            if ref not in self.index:
                self.problems.append(f"{where}: unknown step '{ref}'{self._hint(ref)}")
            elif self.index[ref] == index:
                self.problems.append(f"{where}: a step cannot need itself")
            else:
                known.add(ref)
        return known

    def _hint(self, unknown: str) -> str:
        """The name probably meant, else the names there are (when few enough to read)."""
        close = difflib.get_close_matches(unknown, self.index, n=1)
        if close:
            return f" (did you mean '{close[0]}'?)"
        return f" (steps: {', '.join(self.index)})" if len(self.index) <= MAX_NAMES_LISTED else ""

    def _item_use(
        self, label: str, inputs: ObjectNode, when: Node | None, for_each: Node | None, message: Node | None
    ) -> None:
        if for_each is None:
            for key, node in inputs.items.items():
                if node.uses_item():
                    self.problems.append(f"{label}.input.{key}: reads item, but the step has no for_each")
            if message is not None and message.uses_item():
                self.problems.append(f"{label}.message: reads item, but the step has no for_each")
        elif for_each.uses_item():
            self.problems.append(f"{label}.for_each: reads item, which is known only once for_each has given the list")
        if when is not None and when.uses_item():
            # The condition decides whether the step runs at all, before any item exists.
            self.problems.append(f"{label}.when: reads item, but the condition is evaluated once for the whole step")

    def _settings(self, step: StepSource) -> dict[str, Any]:
        """The step's own settings over the scenario's `defaults` over the built-in ones; retry field by field."""
        merged: dict[str, Any] = {
            "max_parallel": DEFAULT_MAX_PARALLEL,
            "on_error": "fail",
            "timeout_seconds": None,
            "idle_timeout_seconds": None,
            "wait_timeout_seconds": None,
            "resume": None,
        }
        retry: dict[str, Any] = {}
        layers: list[Any] = []
        if self.templates:  # a version 1 step has none of these settings
            workflow: Any = self.scenario
            layers = [workflow.defaults, step]
        for layer in layers:
            merged.update({key: getattr(layer, key) for key in merged if getattr(layer, key) is not None})
            if layer.retry is not None:
                retry.update(layer.retry.model_dump(include=layer.retry.model_fields_set))
        return {**merged, "retry": RetryPolicy(**retry)}

    # --- the scenario ------------------------------------------------------------------------------

    def _output(self) -> Node | None:
        workflow: Any = self.scenario  # only version 2 has an output
        raw = workflow.output if self.templates else None
        if raw is None:
            return None
        output = self._compile(lambda: compile_value(raw, field="output", templates=True))
        if output is None:
            return None
        parts = output.items.items() if isinstance(output, ObjectNode) else [(None, output)]
        for key, node in parts:
            where = "output" if key is None else f"output.{key}"
            for ref in sorted(node.references()):
                if ref not in self.index:
                    self.problems.append(f"{where}: {node.describe()} reads unknown step '{ref}'{self._hint(ref)}")
            if node.uses_item():
                self.problems.append(f"{where}: reads item, which is known only inside a for_each step")
        return output

    def _find_cycles(self, steps: list[PlannedStep]) -> None:
        """One problem per group of steps that wait for each other, naming them in the order they wait."""
        # Steps that did not compile are left out: cycles among the others are still worth naming.
        compiled = {step.name for step in steps}
        graph = {step.name: tuple(dep for dep in step.depends_on if dep in compiled) for step in steps}
        for component in _strongly_connected(graph):
            if len(component) > 1:
                start = min(component, key=self.index.__getitem__)
                path = _cycle_through(start, graph, set(component))
                self.problems.append(f"cycle between steps: {' → '.join(path)}")


def _strongly_connected(graph: dict[str, tuple[str, ...]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components in the order the graph's keys first reach them."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in graph:
        if root in order:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(graph[root]))]
        order[root] = low[root] = len(order)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            advanced = False
            for nxt in edges:
                if nxt not in order:
                    order[nxt] = low[nxt] = len(order)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph[nxt])))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], order[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == order[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    return components


def _cycle_through(start: str, graph: dict[str, tuple[str, ...]], members: set[str]) -> list[str]:
    """A shortest path start → … → start inside one strongly connected component (breadth first)."""
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in graph[node]:
                if nxt not in members:
                    continue
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if nxt not in came_from:
                    came_from[nxt] = node
                    following.append(nxt)
        frontier = following
    return [start, start]
