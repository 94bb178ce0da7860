"""The npm MCP Inspector in CLI mode (the version tests/inspector/package-lock.json pins) as the client of
Stepline's MCP server: over streamable HTTP at a real `stepline serve`'s /mcp, and over stdio, spawning
`stepline mcp` as an `mcpServers` entry would. What someone trying Stepline from the Inspector sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import PROJECT_ROOT, StepServer

INSPECTOR = Path(__file__).resolve().parent / "inspector/node_modules/.bin/mcp-inspector"
INSPECTOR_CLIENT = "inspector-cli 2.12.0"
# Node's start, the connection and a whole run of the demo scenario; generous for a loaded 2-core machine.
INSPECTOR_SECONDS = 60
STEPLINE = Path(sys.executable).with_name("stepline")
SHIPPED = {
    path.stem: json.loads(path.read_text(encoding="utf-8")) for path in (PROJECT_ROOT / "scenarios").glob("*.json")
}
OUTLET = "daily.example.com"

# The Inspector's exit codes this file expects (from its CLI's exit-code map).
EXIT_OK = 0
EXIT_AUTH_REQUIRED = 3
EXIT_TOOL_ERROR = 5


@dataclass
class Inspected:
    code: int
    result: dict[str, Any] | None  # the method's result, from stdout
    error: dict[str, Any] | None  # the Inspector's error envelope, from stderr
    stderr: str

    def ok(self) -> dict[str, Any]:
        assert self.code == EXIT_OK and self.result is not None, f"exit {self.code}:\n{self.stderr}"
        return self.result

    def text(self) -> str:
        assert self.result is not None, f"exit {self.code}:\n{self.stderr}"
        return "\n".join(block["text"] for block in self.result["content"] if block["type"] == "text")

    def links(self) -> dict[str, str]:
        """The result's resource links by what they point at: "page", "snapshot" (both over HTTP) and "run"
        (the `stepline://runs/…` resource)."""
        assert self.result is not None, f"exit {self.code}:\n{self.stderr}"
        links = {}
        for block in self.result["content"]:
            if block["type"] == "resource_link":
                uri = block["uri"]
                if uri.startswith("stepline:"):
                    kind = "run"
                elif block["mimeType"] == "text/html":
                    kind = "page"
                else:
                    kind = "snapshot"
                assert kind not in links, f"two {kind} links: {links[kind]}, {uri}"
                links[kind] = uri
        return links


def inspect(home: Path, *args: str) -> Inspected:
    """`mcp-inspector --cli ARGS --format json`, its own files (catalog, stored secrets) kept in `home`."""
    if not INSPECTOR.exists():
        raise RuntimeError(f"{INSPECTOR} is missing: `make test` installs it with npm")
    home.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "HOME": str(home),
        "MCP_CATALOG_PATH": str(home / "catalog.json"),
        "MCP_CLIENT_CONFIG_PATH": str(home / "client.json"),
    }
    done = subprocess.run(
        [str(INSPECTOR), "--cli", "--format", "json", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
        timeout=INSPECTOR_SECONDS,
    )
    result = json.loads(done.stdout)["result"] if done.stdout.strip() else None
    envelopes = [line for line in done.stderr.splitlines() if line.startswith('{"error"')]
    error = json.loads(envelopes[-1])["error"] if envelopes else None
    return Inspected(done.returncode, result, error, done.stderr)


def over_http(server: StepServer, home: Path, *args: str) -> Inspected:
    return inspect(home, f"{server.url}/mcp", *args)


def over_stdio(data_dir: Path, home: Path, *args: str, env: dict[str, str] | None = None) -> Inspected:
    """The Inspector starting `stepline mcp --data-dir DIR` itself, with the demo server's tools instant."""
    variables = [
        part
        for name, value in {"STEPLINE_DEMO_DELAY": "0", **(env or {})}.items()
        for part in ("-e", f"{name}={value}")
    ]
    return inspect(home, *variables, *args, "--", str(STEPLINE), "mcp", "--data-dir", str(data_dir))


def call_outlet(*args: str) -> tuple[str, ...]:
    return (*args, "--method", "tools/call", "--tool-name", "outlet_story_origins_v2", "--tool-arg", f"domain={OUTLET}")


def test_the_inspector_lists_each_shipped_scenario_as_a_tool_with_its_input_schema(
    demo_server: StepServer, tmp_path: Path
) -> None:
    tools = over_http(demo_server, tmp_path, "--method", "tools/list").ok()["tools"]

    assert {tool["name"] for tool in tools} == set(SHIPPED)
    for tool in tools:
        scenario = SHIPPED[tool["name"]]
        assert tool["title"] == scenario["name"]
        assert tool["inputSchema"] == scenario["input_schema"]
        assert ("outputSchema" in tool) == ("output" in scenario), tool["name"]
    profile = next(tool for tool in tools if tool["name"] == "outlet_profile_v1")
    assert profile["annotations"]["readOnlyHint"] is True


def test_the_inspectors_strict_schema_check_finds_no_error_in_the_tools(
    demo_server: StepServer, tmp_path: Path
) -> None:
    # Exit 6 and the problem on stderr when a tool's schema would break some client.
    listed = over_http(demo_server, tmp_path, "--method", "tools/list", "--strict")

    assert listed.code == EXIT_OK, listed.stderr


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_a_call_from_the_inspector_is_a_run_answered_with_its_output_and_links(
    demo_server: StepServer, tmp_path: Path, era: str
) -> None:
    called = over_http(demo_server, tmp_path, *call_outlet("--protocol-era", era))

    result = called.ok()
    assert result["isError"] is False
    assert result["structuredContent"]["outlet"] == "Harbor Daily"
    links = called.links()
    run_id = links["run"].removeprefix("stepline://runs/")
    summary = called.text()
    assert summary.startswith(f"Run {run_id} of ") and "succeeded" in summary and "Harbor Daily" in summary
    assert links["page"] == f"{demo_server.url}/runs/{run_id}"
    assert links["snapshot"] == f"{demo_server.url}/api/runs/{run_id}"
    snapshot = httpx.get(links["snapshot"], timeout=10).json()
    assert snapshot["status"] == "success"
    assert snapshot["output"] == result["structuredContent"]
    assert snapshot["started_by"] == {"name": "anonymous", "source": "anonymous", "client": INSPECTOR_CLIENT}
    page = httpx.get(links["page"], timeout=10)
    assert page.status_code == 200 and "Harbor Daily" in page.text


def test_the_inspector_reads_a_run_it_started_as_a_resource(demo_server: StepServer, tmp_path: Path) -> None:
    run_uri = over_http(demo_server, tmp_path, *call_outlet()).links()["run"]

    listed = over_http(demo_server, tmp_path, "--method", "resources/list").ok()["resources"]
    read = over_http(demo_server, tmp_path, "--method", "resources/read", "--uri", run_uri).ok()

    assert run_uri in {resource["uri"] for resource in listed}
    [contents] = read["contents"]
    assert contents["mimeType"] == "application/json"
    assert json.loads(contents["text"])["status"] == "success"


def test_arguments_that_break_the_input_schema_are_a_tool_error_naming_each_field(
    demo_server: StepServer, tmp_path: Path
) -> None:
    called = over_http(
        demo_server,
        tmp_path,
        "--method", "tools/call", "--tool-name", "outlet_profile_v1", "--tool-args-json", '{"domian": "x"}',
    )  # fmt: skip

    assert called.code == EXIT_TOOL_ERROR
    assert called.result is not None and called.result["isError"] is True
    assert "domain: 'domain' is a required property" in called.text()
    assert "domian: Additional properties are not allowed" in called.text()


def test_a_failing_run_is_a_tool_error_naming_its_step_and_message(demo_server: StepServer, tmp_path: Path) -> None:
    called = over_http(
        demo_server,
        tmp_path,
        "--method", "tools/call", "--tool-name", "outlet_profile_v1", "--tool-arg", "domain=nowhere.example.com",
    )  # fmt: skip

    assert called.code == EXIT_TOOL_ERROR
    assert "failed at step 'lookup_outlet'" in called.text()
    assert "Unknown outlet: nowhere.example.com" in called.text()
    run_id = called.links()["run"].removeprefix("stepline://runs/")
    assert httpx.get(f"{demo_server.url}/api/runs/{run_id}", timeout=10).json()["status"] == "failed"


def test_an_unknown_tool_is_refused_by_name(demo_server: StepServer, tmp_path: Path) -> None:
    # The Inspector looks the name up in tools/list before it calls.
    called = over_http(demo_server, tmp_path, "--method", "tools/call", "--tool-name", "no_such_scenario")

    assert called.code == EXIT_TOOL_ERROR
    assert called.error == {"code": "tool_not_found", "message": "Tool 'no_such_scenario' not found on server."}


def token(data_dir: Path, name: str, role: str) -> str:
    command = [sys.executable, "-m", "web", "token", "create", name, "--role", role, "--data-dir", str(data_dir)]
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_server_that_refuses_anonymous_callers_serves_the_inspector_with_a_token(
    make_server: Callable[..., StepServer], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    operator = token(data_dir, "inspector", "operator")
    viewer = token(data_dir, "onlooker", "viewer")
    # Bound beyond the loopback, anonymous requests are refused (reached here over the loopback all the same).
    server = make_server("--host", "0.0.0.0", "--data-dir", str(data_dir))
    home = tmp_path / "inspector"

    nobody = over_http(server, home, "--stored-auth-only", "--method", "tools/list")
    wrong = over_http(server, home, "--stored-auth-only", "--header", "Authorization: Bearer stl_wrong", *call_outlet())
    onlooker = over_http(server, home, "--header", f"Authorization: Bearer {viewer}", "--method", "tools/list")
    onlooker_calls = over_http(server, home, "--header", f"Authorization: Bearer {viewer}", *call_outlet())
    called = over_http(server, home, "--header", f"Authorization: Bearer {operator}", *call_outlet())

    assert nobody.code == EXIT_AUTH_REQUIRED, nobody.stderr
    assert nobody.error is not None and "Sign-in required" in nobody.error["message"]
    assert wrong.code == EXIT_AUTH_REQUIRED, wrong.stderr
    # A viewer may look at runs, not start them: no scenario is offered to it as a tool.
    assert onlooker.ok()["tools"] == []
    assert onlooker_calls.code == EXIT_TOOL_ERROR
    assert onlooker_calls.error is not None and onlooker_calls.error["code"] == "tool_not_found"
    assert called.ok()["structuredContent"]["outlet"] == "Harbor Daily"
    snapshot = httpx.get(called.links()["snapshot"], headers={"Authorization": f"Bearer {operator}"}, timeout=10).json()
    assert snapshot["started_by"] == {"name": "inspector", "source": "token", "client": INSPECTOR_CLIENT}


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_the_inspector_runs_stepline_mcp_over_stdio_and_the_run_is_kept(tmp_path: Path, era: str) -> None:
    data_dir, home = tmp_path / "data", tmp_path / "inspector"
    public = {"STEPLINE_PUBLIC_URL": "https://portal.example.com/stepline"}

    tools = over_stdio(data_dir, home, "--protocol-era", era, "--method", "tools/list").ok()["tools"]
    called = over_stdio(data_dir, home, *call_outlet("--protocol-era", era), env=public)
    # Another `stepline mcp` on the same data directory: the run is in the history.
    run_uri = called.links()["run"]
    read = over_stdio(data_dir, home, "--protocol-era", era, "--method", "resources/read", "--uri", run_uri).ok()

    assert {tool["name"] for tool in tools} == set(SHIPPED)
    assert called.ok()["structuredContent"]["outlet"] == "Harbor Daily"
    run_id = run_uri.removeprefix("stepline://runs/")
    assert called.links()["page"] == f"https://portal.example.com/stepline/runs/{run_id}"
    snapshot = json.loads(read["contents"][0]["text"])
    assert snapshot["status"] == "success"
    assert snapshot["started_by"]["source"] == "local"
    assert snapshot["started_by"]["client"] == INSPECTOR_CLIENT
