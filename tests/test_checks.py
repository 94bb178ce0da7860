"""A scenario checked against the live tools, as `GET /api/scenarios/{id}/checks` and the scenario page show it.

Real servers: the tests' workflow server, the npm reference server (an output schema that allows no other
field, a tool that requires MCP tasks), a server whose schemas allow no undeclared field (tests/servers/strict.py)
and one that never starts.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import jsonschema
import pytest
from inprocess import InProcessApp, in_process
from mcp_process import SERVERS, workflow_home
from reference_server import reference_server


def scenario(scenario_id: str, *steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"schema_version": "2", "scenario_id": scenario_id, "name": scenario_id, "steps": list(steps), **extra}


INPUTS = {
    "type": "object",
    "required": ["city"],
    "properties": {"city": {"type": "string"}, "zone": {"type": "string"}, "note": {"type": "string", "default": "-"}},
}

SCENARIOS = [
    scenario(
        "clean",
        {"name": "shout", "tool": "upper", "input": {"text": "{{ input.city }}"}},
        {"name": "weather", "tool": "forecast", "input": {"city": "{{ steps.shout.output.text }}", "units": "metric"}},
        {"name": "noted", "tool": "echo", "server": "workflow", "input": {"value": "{{ input.note }}"}},
        # Reads through filters and methods are judged only as far as they are plain reads.
        {
            "name": "rounded",
            "tool": "echo",
            "server": "workflow",
            "input": {"value": "{{ steps.weather.output.high | round }}", "note": "{{ input.get('zone', 'UTC') }}"},
        },
        input_schema=INPUTS,
        output={"high": "{{ steps.weather.output.high }}"},
    ),
    scenario("missing_argument", {"name": "shout", "tool": "upper", "input": {}}),
    scenario(
        "argument_names",
        {"name": "say", "tool": "echo", "server": "reference", "input": {"mesage": "hi"}},
        {"name": "weather", "tool": "forecast", "input": {"city": "Oslo", "unit": "metric"}},
    ),
    scenario(
        "literals",
        {"name": "weather", "tool": "forecast", "input": {"city": "Oslo", "units": "kelvin"}},
        {"name": "nap", "tool": "sleep", "input": {"seconds": "{{ input.city }} s"}},
        input_schema=INPUTS,
    ),
    scenario(
        "inputs",
        {"name": "shout", "tool": "upper", "input": {"text": "{{ input.zonee }}"}},
        {"name": "maybe", "tool": "upper", "input": {"text": {"from": "input.zone"}}},
        {"name": "defaulted", "tool": "upper", "input": {"text": "{{ input.note }}"}, "when": "{{ input.cty }}"},
        input_schema=INPUTS,
    ),
    scenario(
        "outputs",
        {"name": "weather", "tool": "get-structured-content", "input": {"location": "Chicago"}},
        {"name": "cities", "tool": "forecast", "for_each": "{{ ['Oslo', 'Rome'] }}", "input": {"city": "{{ item }}"}},
        {"name": "failing", "tool": "fail", "on_error": "continue", "input": {}},
        {
            "name": "report",
            "tool": "echo",
            "server": "workflow",
            "input": {"value": "{{ steps.weather.output.temp }}", "note": "{{ steps.failing.output.reslt }}"},
        },
        output={"first": "{{ steps.cities.output[0].hihg }}", "all": "{{ steps.cities.output | length }}"},
    ),
    scenario("tasks", {"name": "research", "tool": "simulate-research-query", "input": {"topic": "tides"}}),
    scenario(
        "lookups",
        {"name": "typo", "tool": "uper", "server": "workflow", "input": {}},
        {"name": "elsewhere", "tool": "upper", "server": "wrokflow", "input": {"text": "x"}},
        {"name": "twice", "tool": "echo", "input": {}},
        {"name": "hostile", "tool": "<script>alert(1)</script>", "server": "workflow", "input": {}},
    ),
    scenario("down", {"name": "far", "tool": "anything", "server": "broken", "input": {}}),
]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessApp]:
    home = tmp_path_factory.mktemp("checks")
    folder, config = workflow_home(home, SCENARIOS)
    servers = json.loads(config.read_text(encoding="utf-8"))["mcpServers"]
    servers["reference"] = reference_server()
    servers["strict"] = {"command": sys.executable, "args": [str(SERVERS / "strict.py")]}
    servers["broken"] = {"command": sys.executable, "args": ["-c", "raise SystemExit('no config, giving up')"]}
    config.write_text(json.dumps({"mcpServers": servers}), encoding="utf-8")
    with in_process(home, mcp_config=config, scenarios=folder) as started:
        started.wait_ready()
        yield started


def checks(app: InProcessApp, scenario_id: str) -> dict[str, Any]:
    response = app.get(f"/api/scenarios/{scenario_id}/checks")
    assert response.status_code == 200, response.text
    return response.json()


def problems(app: InProcessApp, scenario_id: str) -> list[tuple[str, str]]:
    return [(problem["severity"], problem["message"]) for problem in checks(app, scenario_id)["problems"]]


def test_a_scenario_that_fits_its_tools_has_no_problems(app: InProcessApp) -> None:
    assert checks(app, "clean") == {
        "file": "clean.json",
        "scenario_id": "clean",
        "valid": True,
        "errors": 0,
        "warnings": 0,
        "problems": [],
    }


def test_a_required_argument_not_given_is_an_error_naming_step_and_field(app: InProcessApp) -> None:
    assert checks(app, "missing_argument") == {
        "file": "missing_argument.json",
        "scenario_id": "missing_argument",
        "valid": False,
        "errors": 1,
        "warnings": 0,
        "problems": [
            {
                "severity": "error",
                "step": "shout",
                "field": "input",
                "message": "steps.0 (shout).input: the tool requires 'text', which is not given",
            }
        ],
    }


def test_an_undeclared_argument_is_an_error_only_where_the_schema_allows_no_other(app: InProcessApp) -> None:
    report = checks(app, "argument_names")

    assert [(p["severity"], p["step"], p["field"], p["message"]) for p in report["problems"]] == [
        ("error", "say", "input", "steps.0 (say).input: the tool requires 'message', which is not given"),
        (
            "warning",
            "say",
            "input.mesage",
            "steps.0 (say).input.mesage: the tool does not declare an argument 'mesage' (did you mean 'message'?); "
            "it may ignore it or refuse it",
        ),
        (
            "error",
            "weather",
            "input.unit",
            "steps.1 (weather).input.unit: the tool has no argument 'unit' (did you mean 'units'?)",
        ),
    ]
    assert (report["valid"], report["errors"], report["warnings"]) == (False, 2, 1)


def test_literals_are_checked_against_the_argument_schema_and_text_against_its_type(app: InProcessApp) -> None:
    assert problems(app, "literals") == [
        ("error", "steps.0 (weather).input.units: 'kelvin' is not one of ['metric', 'imperial']"),
        (
            "error",
            "steps.1 (nap).input.seconds: '{{ input.city }} s' is text (text around {{ }} always is), "
            "but the tool wants number",
        ),
    ]


def test_reads_of_the_run_input_are_checked_against_input_schema(app: InProcessApp) -> None:
    assert problems(app, "inputs") == [
        (
            "error",
            "steps.0 (shout).input.text: input.zonee is not declared in input_schema (did you mean 'input.zone'?)",
        ),
        (
            "warning",
            "steps.1 (maybe).input.text: bound to input.zone, which a run may leave out (input_schema neither "
            "requires it nor gives it a default), but the tool requires 'text'",
        ),
        ("error", "steps.2 (defaulted).when: input.cty is not declared in input_schema (did you mean 'input.city'?)"),
    ]


def test_reads_of_outputs_are_checked_against_the_tools_output_schema(app: InProcessApp) -> None:
    assert problems(app, "outputs") == [
        (
            "error",
            "steps.3 (report).input.value: steps.weather.output.temp: the output schema of tool "
            "'get-structured-content' has no field 'temp' (it declares: temperature, conditions, humidity)",
        ),
        (
            "warning",
            "steps.3 (report).input.note: steps.failing.output.reslt: the output schema of tool 'fail' does not "
            "declare 'reslt' (did you mean 'steps.failing.output.result'?)",
        ),
        (
            "error",
            "output.first: steps.cities.output[0].hihg: the output schema of tool 'forecast' has no field 'hihg' "
            "(did you mean 'steps.cities.output[0].high'?)",
        ),
    ]


def test_a_tool_that_requires_mcp_tasks_is_named_as_needing_them(app: InProcessApp) -> None:
    assert problems(app, "tasks") == [
        (
            "error",
            "steps.0 (research).tool: tool 'simulate-research-query' needs MCP tasks (its execution.taskSupport is "
            '"required"), which Stepline\'s MCP client does not support: every call would fail',
        )
    ]


def test_unknown_and_ambiguous_tools_and_servers(app: InProcessApp) -> None:
    assert problems(app, "lookups") == [
        ("error", "steps.0 (typo).tool: unknown tool 'uper' on MCP server 'workflow' (did you mean 'upper'?)"),
        ("error", "steps.1 (elsewhere).server: unknown MCP server 'wrokflow' (did you mean 'workflow'?)"),
        (
            "error",
            "steps.2 (twice).tool: tool 'echo' is offered by several servers ('workflow', 'reference'); "
            "set the step's 'server'",
        ),
        ("error", "steps.3 (hostile).tool: unknown tool '<script>alert(1)</script>' on MCP server 'workflow'"),
    ]


def test_a_step_whose_server_is_down_is_said_to_be_unchecked(app: InProcessApp) -> None:
    [(severity, message)] = problems(app, "down")

    assert severity == "warning"
    assert message.startswith(
        "steps.0 (far).tool: not checked against tool 'anything': MCP server 'broken' is unavailable: "
    )
    assert checks(app, "down")["valid"] is True


def test_an_unknown_scenario_is_404_naming_it(app: InProcessApp) -> None:
    response = app.get("/api/scenarios/no_such/checks")

    assert response.status_code == 404
    assert response.json() == {"detail": "Unknown scenario_id: no_such"}


def test_the_route_is_documented_and_its_answers_fit_the_schema(app: InProcessApp) -> None:
    document = app.get("/openapi.json").json()
    operation = document["paths"]["/api/scenarios/{scenario_id}/checks"]["get"]
    assert set(operation["responses"]) == {"200", "401", "403", "404"}
    schema = {"$ref": "#/components/schemas/ScenarioChecks", "components": document["components"]}
    validator = jsonschema.Draft202012Validator(schema)

    for example in (operation["responses"]["200"]["content"]["application/json"]["example"], checks(app, "outputs")):
        validator.validate(example)


class _Text(HTMLParser):
    """The text of the checks section, as a reader sees it."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.depth or ("id", "checks") in attrs:
            self.depth += 1

    def handle_endtag(self, tag: str) -> None:
        self.depth = max(self.depth - 1, 0)

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.parts.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.parts).split())


def checks_text(app: InProcessApp, scenario_id: str) -> str:
    response = app.get(f"/scenarios/{scenario_id}")
    assert response.status_code == 200
    parser = _Text()
    parser.feed(response.text)
    return parser.text


def test_the_scenario_page_counts_and_lists_the_problems(app: InProcessApp) -> None:
    text = checks_text(app, "argument_names")

    assert text.startswith("3 problems found against the live tools (2 errors, 1 warning). Error: ")
    assert "Error: steps.0 (say).input: the tool requires 'message', which is not given" in text
    assert "Warning: steps.0 (say).input.mesage: the tool does not declare an argument 'mesage'" in text
    assert checks_text(app, "clean") == "No problems found against the live tools."


def test_the_scenario_page_shows_a_hostile_tool_name_as_text(app: InProcessApp) -> None:
    page = app.get("/scenarios/lookups").text

    assert "unknown tool &#39;&lt;script&gt;alert(1)&lt;/script&gt;&#39;" in page
    assert "<script>alert(1)</script>" not in page
    assert "unknown tool '<script>alert(1)</script>' on MCP server 'workflow'" in checks_text(app, "lookups")
