"""`stepline validate` run as a user runs it: every problem of every file on its own line (`file: problem`,
`file: warning: problem`), the counts on stderr, `--json` for CI, and the exit status.

The servers are real: the bundled demo server, the tests' workflow server, the npm reference server and
a server whose schemas allow no undeclared field (tests/servers/strict.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import PROJECT_ROOT
from mcp_process import SERVERS, workflow_home
from reference_server import reference_server

STRICT = SERVERS / "strict.py"

GOOD = {
    "schema_version": "2",
    "scenario_id": "good",
    "name": "Good",
    "input_schema": {"type": "object", "required": ["domain"], "properties": {"domain": {"type": "string"}}},
    "defaults": {"retry": {"max_attempts": 2}},
    "steps": [
        {"name": "outlet", "tool": "lookup_outlet", "input": {"domain": "{{ input.domain }}"}},
        {"name": "articles", "tool": "list_outlet_articles", "input": {"domain": "{{ steps.outlet.output.domain }}"}},
        {"name": "sources", "tool": "search_news_sources", "for_each": "{{ steps.articles.output.articles[:3] }}",
         "input": {"url": "{{ item.url }}"}},
        {"name": "stats", "tool": "outlet_stats", "on_error": "continue",
         "input": {"articles": "{{ steps.articles.output.articles }}", "outlet": "{{ steps.outlet.output.name }}"}},
    ],
    "output": {"summary": "{{ steps.stats.output.summary }}", "searched": "{{ steps.sources.output | length }}"},
}

THREE_PROBLEMS = {
    "schema_version": "2",
    "scenario_id": "broken",
    "name": "Broken",
    "steps": [
        {"name": "outlet", "tool": "lookup_outlet", "input": {"domain": "{{ input.domain }"}},
        {"name": "left", "tool": "outlet_stats", "input": {"outlet": "{{ steps.right.output.name }}"}},
        {"name": "right", "tool": "lookup_outlet", "needs": ["left", "stast"], "input": {"domain": "x.example"}},
    ],
}


def validate(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "web", "validate", "--scenarios", str(folder), *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "STEPLINE_DEMO_DELAY": "0"},
    )


def write(folder: Path, scenario: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{scenario['scenario_id']}.json").write_text(json.dumps(scenario, indent=2), encoding="utf-8")


def test_every_problem_of_a_file_is_a_line_and_only_clean_files_count_as_valid(tmp_path: Path) -> None:
    write(tmp_path, GOOD)
    write(tmp_path, THREE_PROBLEMS)

    result = validate(tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "broken.json: steps.0 (outlet).input.domain: template syntax error at line 1, column 17: unexpected '}'",
        "broken.json: steps.2 (right).needs.1: unknown step 'stast' (steps: outlet, left, right)",
        "broken.json: cycle between steps: left → right → left",
    ]
    assert "1 valid scenario(s), 3 problem(s), 0 warning(s) in 2 file(s)" in result.stderr


def test_a_good_version_2_file_passes(tmp_path: Path) -> None:
    write(tmp_path, GOOD)

    result = validate(tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == ["1 valid scenario(s), 0 problem(s), 0 warning(s) in 1 file(s)"]


def test_the_tools_of_version_2_steps_are_checked_against_the_servers(tmp_path: Path) -> None:
    """The file loads, but its calls cannot work: it is not counted as valid."""
    steps = [
        {"name": "outlet", "tool": "lookup_outlet", "input": {"domaine": "{{ input.domain }}"}},
        {"name": "pick", "tool": "find_earliest_source",
         "input": {"sources": "{{ steps.outlet.output }}", "limit": "1"}},
        {"name": "gone", "tool": "no_such_tool", "input": {}},
        {"name": "fine", "tool": "fetch_article", "input": {"url": "https://{{ input.domain }}/"}},
    ]
    write(tmp_path, {"schema_version": "2", "scenario_id": "calls", "name": "Calls", "steps": steps})

    result = validate(tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "calls.json: steps.0 (outlet).input: the tool requires 'domain', which is not given",
        "calls.json: warning: steps.0 (outlet).input.domaine: the tool does not declare an argument 'domaine' "
        "(did you mean 'domain'?); it may ignore it or refuse it",
        "calls.json: steps.1 (pick).input.limit: '1' is not of type 'integer'",
        "calls.json: steps.2 (gone).tool: unknown tool 'no_such_tool' on any configured MCP server (tools: "
        "check_archive, fetch_article, find_earliest_source, list_outlet_articles, lookup_outlet, outlet_stats, "
        "search_news_sources, trace_citation_chain, write_brief)",
    ]
    assert "0 valid scenario(s), 3 problem(s), 1 warning(s) in 1 file(s)" in result.stderr


# --- Against live servers: the workflow server, the npm reference server and a strict one ----------------

CITY_INPUT = {
    "type": "object",
    "required": ["city"],
    "properties": {"city": {"type": "string"}, "zone": {"type": "string"}},
}


def v2(scenario_id: str, *steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"schema_version": "2", "scenario_id": scenario_id, "name": scenario_id, "steps": list(steps), **extra}


LIVE = [
    v2(
        "good",
        {"name": "shout", "tool": "upper", "input": {"text": "{{ input.city }}"}},
        {"name": "weather", "tool": "forecast", "input": {"city": "{{ steps.shout.output.text }}"}},
        input_schema=CITY_INPUT,
        output={"high": "{{ steps.weather.output.high }}"},
    ),
    v2(
        "warned",
        {"name": "shout", "tool": "upper", "input": {"text": "{{ input.zone }}"}},
        {"name": "note", "tool": "echo", "server": "workflow", "input": {"value": 1, "notee": "x"}},
        input_schema=CITY_INPUT,
    ),
    v2(
        "wrong",
        {"name": "weather", "tool": "forecast", "input": {"unit": "metric"}},
        {"name": "zone", "tool": "upper", "input": {"text": "{{ input.zonee }}"}},
        {"name": "research", "tool": "simulate-research-query", "input": {"topic": "tides"}},
        {"name": "sky", "tool": "get-structured-content", "input": {"location": "Chicago"}},
        {"name": "say", "tool": "echo", "server": "reference", "input": {"message": "{{ steps.sky.output.temp }}"}},
        input_schema=CITY_INPUT,
    ),
]

LIVE_LINES = [
    "broken.json: invalid JSON at line 1, column 24: Expecting property name enclosed in double quotes",
    "warned.json: warning: steps.0 (shout).input.text: bound to input.zone, which a run may leave out (input_schema "
    "neither requires it nor gives it a default), but the tool requires 'text'",
    "warned.json: warning: steps.1 (note).input.notee: the tool does not declare an argument 'notee' "
    "(did you mean 'note'?); it may ignore it or refuse it",
    "wrong.json: steps.0 (weather).input: the tool requires 'city', which is not given",
    "wrong.json: steps.0 (weather).input.unit: the tool has no argument 'unit' (did you mean 'units'?)",
    "wrong.json: steps.1 (zone).input.text: input.zonee is not declared in input_schema (did you mean 'input.zone'?)",
    "wrong.json: steps.2 (research).tool: tool 'simulate-research-query' needs MCP tasks (its execution.taskSupport "
    "is \"required\"), which Stepline's MCP client does not support: every call would fail",
    "wrong.json: steps.4 (say).input.message: steps.sky.output.temp: the output schema of tool "
    "'get-structured-content' has no field 'temp' (it declares: temperature, conditions, humidity)",
]
LIVE_SUMMARY = "2 valid scenario(s), 6 problem(s), 2 warning(s) in 4 file(s)"


def live_home(home: Path, scenarios: list[dict[str, Any]], **more_servers: dict[str, Any]) -> tuple[Path, Path]:
    folder, config = workflow_home(home, scenarios)
    servers = json.loads(config.read_text(encoding="utf-8"))["mcpServers"]
    servers |= {"reference": reference_server(), "strict": {"command": sys.executable, "args": [str(STRICT)]}}
    config.write_text(json.dumps({"mcpServers": servers | more_servers}), encoding="utf-8")
    return folder, config


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder, config = live_home(tmp_path_factory.mktemp("live"), LIVE)
    (folder / "broken.json").write_text('{"schema_version": "2",}', encoding="utf-8")
    return folder, config


def test_every_problem_of_every_file_is_a_line_warnings_marked_and_counted(live: tuple[Path, Path]) -> None:
    folder, config = live

    result = validate(folder, "--mcp-config", str(config))

    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines() == LIVE_LINES
    # The servers' own stderr (the reference server's start-up banner among it) is kept out of the report.
    assert result.stderr.splitlines() == [LIVE_SUMMARY]


def test_json_prints_one_document_for_ci(live: tuple[Path, Path]) -> None:
    folder, config = live

    result = validate(folder, "--mcp-config", str(config), "--json")

    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["valid"] is False
    assert report["counts"] == {"files": 4, "valid": 2, "invalid": 2, "errors": 6, "warnings": 2}
    assert report["servers"] == []
    files = {entry["file"]: entry for entry in report["files"]}
    assert list(files) == ["broken.json", "good.json", "warned.json", "wrong.json"]
    assert files["good.json"] == {
        "file": "good.json", "scenario_id": "good", "valid": True, "errors": 0, "warnings": 0, "problems": [],
    }
    assert files["broken.json"]["scenario_id"] is None
    assert (files["warned.json"]["valid"], files["warned.json"]["warnings"]) == (True, 2)
    assert [(p["severity"], p["step"], p["field"]) for p in files["wrong.json"]["problems"]] == [
        ("error", "weather", "input"),
        ("error", "weather", "input.unit"),
        ("error", "zone", "input.text"),
        ("error", "research", "tool"),
        ("error", "say", "input.message"),
    ]
    printed = [f"{name}: {'warning: ' * (p['severity'] == 'warning')}{p['message']}"
               for name, entry in files.items() for p in entry["problems"]]
    assert printed == LIVE_LINES
    assert result.stderr.splitlines() == [LIVE_SUMMARY]


def test_warnings_alone_do_not_fail(tmp_path: Path) -> None:
    folder, config = workflow_home(tmp_path, [LIVE[1]])

    result = validate(folder, "--mcp-config", str(config))

    assert result.returncode == 0, result.stdout + result.stderr
    assert [line.split(": ")[1] for line in result.stdout.splitlines()] == ["warning", "warning"]
    assert result.stderr.splitlines() == ["1 valid scenario(s), 0 problem(s), 2 warning(s) in 1 file(s)"]


def test_a_server_that_fails_is_an_error_and_only_then_is_its_stderr_shown_prefixed(tmp_path: Path) -> None:
    crash = "import sys; print('booting', file=sys.stderr); raise SystemExit('no config, giving up')"
    shout = {"name": "shout", "tool": "upper", "input": {"text": "{{ input.city }}"}}
    solo = v2("solo", shout, input_schema=CITY_INPUT)
    folder, config = workflow_home(tmp_path, [solo])
    servers = json.loads(config.read_text(encoding="utf-8"))["mcpServers"]
    servers["broken"] = {"command": sys.executable, "args": ["-c", crash]}
    config.write_text(json.dumps({"mcpServers": servers}), encoding="utf-8")

    result = validate(folder, "--mcp-config", str(config))

    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "mcpServers.broken: server unreachable, its tools not checked: Connection closed"
    ]
    told = result.stderr.splitlines()
    assert "1 valid scenario(s), 1 problem(s), 0 warning(s) in 1 file(s)" in told
    assert "MCP server(s) 'broken' could not be reached; what the servers wrote to stderr:" in told
    assert {"mcp stderr | booting", "mcp stderr | no config, giving up"} <= set(told)
    assert not [line for line in told if "giving up" in line and not line.startswith("mcp stderr | ")]
