"""The scenario format: pydantic models of versions "1" and "2", and folder loading.

A version 1 file is a chain (each step runs after the one before, strings are literal); version 2 is
a workflow (expressions, a dependency graph, conditions, for_each, retries, timeouts). Both are read
through `Scenario`, whose `plan` (web.plan) is the compiled graph the runner follows.

A broken file never takes the catalog down: it is left out (or, when it loaded before, serves its
last good version) and every problem it has is reported, each with its file, step and field.
"""

from __future__ import annotations

import errno
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from web.json_limits import DEFAULT_MAX_DEPTH, JsonProblem, check, where
from web.object_schemas import misfits, object_schema_problem
from web.plan import Plan, PlanProblems, build_plan, step_label

log = logging.getLogger(__name__)

SCENARIO_ID_PATTERN = r"^[A-Za-z0-9_.-]+$"
# Step names appear inside dotted paths, so they may not contain dots.
STEP_NAME_PATTERN = r"^[A-Za-z0-9_-]+$"
# Version 2 reads steps.<name> in Jinja expressions, where a '-' would subtract.
V2_STEP_NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*"
# More concurrent calls of one step than this is a mistake, not a plan.
MAX_PARALLEL_LIMIT = 64
# A scenario is written by people; deeper than run input may be is a mistake, not a workflow.
SCENARIO_MAX_DEPTH = DEFAULT_MAX_DEPTH


class Step(BaseModel):
    """The fields every step has, in both versions."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=STEP_NAME_PATTERN, description="Unique within the scenario.")
    type: Literal["tool"] = "tool"
    tool: str = Field(min_length=1)
    server: str | None = Field(None, description="Needed only when the tool name is ambiguous.")
    description: str = ""
    input: dict[str, Any] = Field(default_factory=dict)
    required_input_fields: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _required_fields_are_inputs(self) -> Step:
        unknown = [f for f in self.required_input_fields if f not in self.input]
        if unknown:
            raise ValueError(f"required_input_fields {unknown} are not keys of input")
        return self


class StepV1(Step):
    """A step of a chain: it runs after the step before it, its strings are literal."""


class RetrySettings(BaseModel):
    """A retry policy as written: only the fields given, so defaults and a step's own merge field by field."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(1, ge=1, le=10)
    backoff_seconds: float = Field(1.0, ge=0)
    backoff_multiplier: float = Field(2.0, ge=1)
    max_backoff_seconds: float = Field(60.0, ge=0)


class StepSettings(BaseModel):
    """What `defaults` sets for every step and a step may set for itself; None: not set here."""

    model_config = ConfigDict(extra="forbid")

    max_parallel: int | None = Field(None, ge=1, le=MAX_PARALLEL_LIMIT)
    on_error: Literal["fail", "continue"] | None = None
    retry: RetrySettings | None = None
    timeout_seconds: float | None = Field(None, gt=0)
    idle_timeout_seconds: float | None = Field(None, gt=0)
    # None: the server's wait timeout (STEPLINE_WAIT_TIMEOUT, a day).
    wait_timeout_seconds: float | None = Field(None, gt=0)
    # What a step in flight when its process died does at the restart: run again (auto), wait for a person's
    # Resume (ask), or fail the run (never). None: auto when its tool is annotated idempotent or read-only.
    resume: Literal["auto", "ask", "never"] | None = None


class StepV2(StepSettings, Step):
    """A step of a workflow: it runs once what its expressions and `needs` mention has ended.

    A `tool` step calls a tool; an `approval` step calls nothing: it shows a person its `message` (a
    template) and a form from its `schema`, and waits for the answer.
    """

    name: str = Field(description="Unique within the scenario; expressions read it as steps.<name>.")
    type: Literal["tool", "approval"] = "tool"
    # Checked against `type` below, so that each is said where it is wrong (validate_default: also when missing).
    tool: str | None = Field(None, min_length=1, validate_default=True)
    message: str | None = Field(None, validate_default=True, description="An approval's text for the person.")
    approval_schema: dict[str, Any] | None = Field(
        None, alias="schema", description="An approval's form: a JSON Schema of an object (none: a comment)."
    )
    needs: list[str] = Field(default_factory=list, description="Steps to wait for besides those its expressions read.")
    # A string or a bool; anything else is named by the plan, once (a union would say it twice).
    when: Any = Field(None, description='A condition, "{{ expr }}" or a bool: false skips the step.')
    for_each: str | None = Field(None, description='"{{ expr }}" giving a list: the tool is called once per item.')

    @field_validator("name")
    @classmethod
    def _name_is_an_identifier(cls, name: str) -> str:
        if not re.fullmatch(V2_STEP_NAME_PATTERN, name):
            raise ValueError(
                f"'{name}' is not a name expressions can read as steps.{name}: "
                "use letters, digits and _, not starting with a digit"
            )
        return name

    @field_validator("tool")
    @classmethod
    def _tool_fits_the_type(cls, tool: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("type")
        if kind == "approval" and tool is not None:
            raise ValueError("an approval step calls no tool: remove 'tool', or make the step a tool step")
        if kind == "tool" and tool is None:
            raise ValueError("Field required")
        return tool

    @field_validator("message")
    @classmethod
    def _message_fits_the_type(cls, message: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("type")
        if kind == "approval" and not (message or "").strip():
            raise ValueError("an approval step needs a message: what the person is asked to approve")
        if kind == "tool" and message is not None:
            raise ValueError('only approval steps have a message (this step has "type": "tool")')
        return message

    @field_validator("approval_schema")
    @classmethod
    def _schema_is_a_form(cls, schema: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        if schema is None:
            return None
        if info.data.get("type") == "tool":
            raise ValueError('only approval steps have a schema (this step has "type": "tool")')
        # The answer is a form's values: an object.
        problem = object_schema_problem(schema)
        if problem is not None:
            raise ValueError(problem)
        return schema

    @model_validator(mode="after")
    def _approval_has_no_call(self) -> StepV2:
        if self.type == "tool":
            return self
        # What only a tool call has, said once each; the message names the field.
        call_only = {
            "server": self.server is not None,
            "input": bool(self.input),
            "required_input_fields": bool(self.required_input_fields),
            "retry": self.retry is not None,
            "timeout_seconds": self.timeout_seconds is not None,
            "idle_timeout_seconds": self.idle_timeout_seconds is not None,
        }
        found = [name for name, given in call_only.items() if given]
        if found:
            raise ValueError(
                f"an approval step calls no tool: remove {', '.join(found)} "
                "(wait_timeout_seconds bounds how long it waits for an answer)"
            )
        return self


class ScenarioAccess(BaseModel):
    """Who may see and who may run a scenario: group names (or user names), each list None for everyone
    whose role allows it. Whoever may run a scenario may see it; an admin may do both whatever the lists."""

    model_config = ConfigDict(extra="forbid")

    view: list[str] | None = None
    run: list[str] | None = None


class Scenario(BaseModel):
    """What the rest of the service reads of a scenario, whatever its version; `plan` is its compiled graph.

    Built with `parse_scenario`, which picks the version's model (ScenarioV1 or ScenarioV2).
    """

    schema_version: str
    scenario_id: str = Field(pattern=SCENARIO_ID_PATTERN)
    name: str = Field(min_length=1)
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    steps: Sequence[Step] = Field(min_length=1)
    access: ScenarioAccess | None = None
    _plan: Plan = PrivateAttr()

    @field_validator("input_schema")
    @classmethod
    def _input_schema_is_json_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        # A run's input is always a JSON object, so any other type could never be run.
        problem = object_schema_problem(schema)
        if problem is not None:
            raise ValueError(problem)
        return schema

    @model_validator(mode="after")
    def _compile_the_plan(self) -> Scenario:
        # PlanProblems is no ValueError: it leaves pydantic as it is, every problem in it.
        self._plan = build_plan(self)
        return self

    @property
    def plan(self) -> Plan:
        return self._plan

    def input_errors(self, run_input: Any) -> list[dict[str, Any]]:
        """The run input's problems against input_schema, as 422 `{loc, msg, type}` entries."""
        return misfits(self.input_schema, run_input, ["body", "input"])

    @property
    def examples(self) -> list[Any]:
        return list(self.input_schema.get("examples", []))


class ScenarioV1(Scenario):
    # Version 1 files always tolerated keys of their own beside the format's.
    model_config = ConfigDict(extra="allow")

    schema_version: Literal["1"]
    steps: list[StepV1] = Field(min_length=1)

    @model_validator(mode="after")
    def _no_version_2_fields(self) -> ScenarioV1:
        found = sorted(set(self.model_extra or {}) & {"defaults", "output"})
        if found:
            have = "this field" if len(found) == 1 else "these fields"
            raise ValueError(f'{", ".join(found)}: only schema_version "2" files have {have}; this file is version "1"')
        return self


class ScenarioV2(Scenario):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal["2"]
    steps: list[StepV2] = Field(min_length=1)
    defaults: StepSettings = Field(default_factory=StepSettings, description="What a step has unless it says.")
    output: Any = Field(None, description="The run's result, evaluated once the steps have ended.")


SCENARIO_MODELS: dict[str, type[Scenario]] = {"1": ScenarioV1, "2": ScenarioV2}
# Written in a version 1 file, these are a version 2 scenario not declared as one.
V2_ONLY_FIELDS = {
    field.alias or name for name, field in StepV2.model_fields.items() if name not in StepV1.model_fields
} | {"defaults", "output"}


@dataclass(frozen=True)
class Problem:
    file: str
    message: str
    # The file loaded before and broke since: its last good version is still served.
    kept: bool = False

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


# What tells one version of a file from the next without reading it: an editor that saves in place
# changes the modification time or the size, one that saves by renaming changes the inode.
Signature = tuple[int, int, int]


@dataclass(frozen=True)
class ScenarioFile:
    """One file of the folder as last read: its scenario (the last good one, when it broke since) and problems."""

    signature: Signature
    scenario: Scenario | None = None
    raw: dict[str, Any] | None = None
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class CatalogChanges:
    """What a rescan found, by file name."""

    added: list[str] = field(default_factory=list)
    reloaded: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


@dataclass
class Catalog:
    """The valid scenarios of a folder (in id order), with the raw JSON each was loaded from.

    `rescan` brings it up to date with the folder in place, so everything holding the catalog sees the
    change: a changed file is read again, a removed one leaves, and a file that breaks keeps serving
    its last good version while its problems are reported.
    """

    folder: Path
    scenarios: dict[str, Scenario] = field(default_factory=dict)
    raw: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    files: dict[str, ScenarioFile] = field(default_factory=dict, repr=False)

    def get(self, scenario_id: str) -> Scenario | None:
        # A dict lookup, never a path join: an id cannot reach outside the folder.
        return self.scenarios.get(scenario_id)

    def scan(self) -> dict[str, ScenarioFile] | None:
        """The folder's files now, reading only those whose signature changed; None when the folder is missing.

        Reads the disk but changes nothing, so it may run in a worker thread; `apply` then serves the result.
        """
        if not self.folder.is_dir():
            return None
        files: dict[str, ScenarioFile] = {}
        for path in sorted(self.folder.glob("*.json")):
            # Editors' lock and backup files are hidden ones (emacs writes `.#name.json`).
            if path.name.startswith("."):
                continue
            try:
                stat = path.stat()
            except OSError:
                continue  # removed since it was listed
            signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            before = self.files.get(path.name)
            if before is not None and before.signature == signature:
                files[path.name] = before
                continue
            try:
                raw, scenario = load_scenario_file(path)
            except ScenarioFileError as exc:
                # A file that served before goes on serving its last good version until it is fixed.
                good = before or ScenarioFile(signature)
                files[path.name] = ScenarioFile(signature, good.scenario, good.raw, tuple(exc.problems))
            else:
                files[path.name] = ScenarioFile(signature, scenario, raw)
        return files

    def apply(self, files: dict[str, ScenarioFile] | None) -> CatalogChanges:
        """Serve the files `scan` found, all at once (no await in between), and say what changed."""
        folder_missing, files = files is None, files or {}
        missing = Problem(str(self.folder), "scenario folder does not exist")
        if folder_missing and missing not in self.problems:  # said once, not at every look
            log.warning("Scenario problem: %s", missing)
        changes = CatalogChanges()
        for name, file in files.items():
            before = self.files.get(name)
            if before is not None and before.signature == file.signature:
                continue
            if file.problems:
                for problem in file.problems:
                    if file.scenario is None:
                        log.warning("Scenario left out: %s: %s", name, problem)
                    else:
                        log.warning("Scenario file broken, its last good version kept: %s: %s", name, problem)
            elif before is None or before.scenario is None:
                changes.added.append(name)
            else:
                changes.reloaded.append(name)
        changes.removed.extend(
            name for name, file in self.files.items() if name not in files and file.scenario is not None
        )
        self.files = files
        served = [(file.scenario, file.raw) for file in files.values() if file.scenario is not None]
        self.scenarios = {scenario.scenario_id: scenario for scenario, _ in served}
        self.raw = {scenario.scenario_id: raw for scenario, raw in served if raw is not None}
        self.problems = [
            Problem(name, problem, kept=file.scenario is not None)
            for name, file in files.items()
            for problem in file.problems
        ]
        if folder_missing:
            self.problems.append(missing)
        return changes

    def rescan(self) -> CatalogChanges:
        return self.apply(self.scan())


def load_catalog(folder: Path) -> Catalog:
    catalog = Catalog(folder=folder)
    catalog.rescan()
    return catalog


# A file that cannot be opened for these reasons is not broken: the process has no descriptor left.
OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE})


class ScenarioFileError(Exception):
    """Every problem of one file, each naming where it is (`steps.2 (chain).input.url: …`)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def load_scenario_file(path: Path) -> tuple[dict[str, Any], Scenario]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        if exc.errno in OUT_OF_DESCRIPTORS:  # the process's trouble, not the file's: try it again later
            raise
        raise ScenarioFileError([f"cannot read: {exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ScenarioFileError([f"cannot read: {exc}"]) from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScenarioFileError([f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"]) from None
    except RecursionError:
        raise ScenarioFileError([f"nested deeper than {SCENARIO_MAX_DEPTH} levels"]) from None
    try:
        # Its literals become tool arguments and events: the same strict JSON as any other input.
        check(raw, max_depth=SCENARIO_MAX_DEPTH)
    except JsonProblem as problem:
        # Where a value is wrong helps; the hundred keys above one nested too deep do not.
        place = _where(problem.loc, raw) if isinstance(raw, dict) else where(problem.loc)
        at = "" if problem.kind == "json_too_deep" else f"{place}: "
        raise ScenarioFileError([f"{at}{problem.message}"]) from None
    if not isinstance(raw, dict):
        raise ScenarioFileError(["must be a JSON object"])
    problems = []
    scenario_id = raw.get("scenario_id")
    # An id that breaks the pattern is reported by the model, once.
    if isinstance(scenario_id, str) and re.match(SCENARIO_ID_PATTERN, scenario_id) and scenario_id != path.stem:
        problems.append(f"scenario_id '{scenario_id}' must equal the file name '{path.stem}'")
    try:
        scenario = parse_scenario(raw)
    except ScenarioFileError as exc:
        raise ScenarioFileError(problems + exc.problems) from None
    if problems:
        raise ScenarioFileError(problems)
    return raw, scenario


def parse_scenario(raw: dict[str, Any]) -> Scenario:
    """The scenario of a JSON object, in its version's model; ScenarioFileError lists every problem."""
    version = raw.get("schema_version")
    model = SCENARIO_MODELS.get(version) if isinstance(version, str) else None
    if model is None:
        known = " or ".join(f'"{v}"' for v in SCENARIO_MODELS)
        found = "missing" if version is None else f"{json.dumps(version)} is not known"
        raise ScenarioFileError([f"schema_version: {found}; it must be {known}"])
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioFileError(validation_problems(exc, raw)) from None
    except PlanProblems as exc:
        raise ScenarioFileError(exc.problems) from None


def validation_problems(exc: ValidationError, raw: dict[str, Any]) -> list[str]:
    """One problem per pydantic error, a step named as `steps.2 (chain)` and a version 2 field in a
    version 1 file said to be one."""
    problems = []
    for error in exc.errors():
        loc = list(error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden" and raw.get("schema_version") == "1" and loc[-1] in V2_ONLY_FIELDS:
            message = 'only schema_version "2" files have this field; this file is version "1"'
        elif loc[-1:] == ["type"] and error["input"] == "approval" and raw.get("schema_version") == "1":
            message = 'only schema_version "2" files have approval steps; this file is version "1"'
        problems.append(f"{_where(loc, raw)}: {message}" if loc else message)
    return problems


def _where(loc: list[str | int], raw: dict[str, Any]) -> str:
    """`steps.2.input.url` as `steps.2 (chain).input.url`, when step 2 has a name."""
    text = ".".join(str(part) for part in loc)
    steps = raw.get("steps")
    if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int) and isinstance(steps, list):
        step = steps[loc[1]] if loc[1] < len(steps) else None
        name = step.get("name") if isinstance(step, dict) else None
        if isinstance(name, str):
            return ".".join([step_label(loc[1], name), *(str(part) for part in loc[2:])])
    return text


def format_validation_error(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        loc = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {message}" if loc else message)
    return "; ".join(parts)
