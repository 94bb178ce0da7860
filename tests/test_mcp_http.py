"""The scenarios as MCP tools at `/mcp`, as the SDK's own client sees them over streamable HTTP: tools listed
(and the list following the scenario folder), calls that are runs, progress, bad input, the limits, resources.

One real `stepline serve` for the module, under a root path, with the bundled demo server (the shipped
scenarios) and the tests' workflow server (scenarios written here: an output, a failing step, a slow step).
Where the protocol eras differ, each test runs in both: the 2025 initialize handshake (`legacy`) and the
2026-07-28 per-request envelope the client negotiates by default (`auto`).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from conftest import PROJECT_ROOT, StepServer, start_server
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp_process import workflow_home

pytestmark = pytest.mark.anyio

PREFIX = "/portal/stepline"
CLIENT = types.Implementation(name="stepline-tests", version="3.1")
ERAS = {"legacy": "2025-11-25", "auto": "2026-07-28"}
SHIPPED = {path.stem: json.loads(path.read_text()) for path in (PROJECT_ROOT / "scenarios").glob("*.json")}
PROFILE = "outlet_profile_v1"  # three demo steps, each reporting progress; input {"domain": ...}
PROFILE_STEPS = ["lookup_outlet", "list_articles", "coverage_stats"]
APPROVAL = "outlet_brief_approval_v2"  # a person approves before its last step
# Small limits, so that a test reaches each with little.
MAX_CALLS = 2
MAX_DEPTH = 8
MAX_BODY = 64 * 1024
NAP_SECONDS = 1.5


def v2(scenario_id: str, *steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    name = scenario_id.replace("_", " ").capitalize()
    return {"schema_version": "2", "scenario_id": scenario_id, "name": name, "steps": list(steps), **extra}


SCENARIOS = [
    v2(
        "greet",
        {"name": "shout", "tool": "upper", "input": {"text": "hello {{ input.name }}"}},
        description="Greet someone loudly.",
        input_schema={
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "times": {"type": "integer", "minimum": 1}},
        },
        output={"greeting": "{{ steps.shout.output.text }}", "name": "{{ input.name }}"},
    ),
    v2(
        "echo_whole",
        {"name": "echoed", "tool": "echo", "input": {"value": "{{ input.value }}"}},
        input_schema={"type": "object", "properties": {"value": {}}},
        output="{{ steps.echoed.output }}",
    ),
    v2(
        "breaks",
        {"name": "prepare", "tool": "echo", "input": {"value": 1}},
        {"name": "fetch", "tool": "fail", "input": {"message": "the archive is closed"}, "needs": ["prepare"]},
    ),
    v2(
        "nap",
        {"name": "nap", "tool": "sleep", "input": {"seconds": "{{ input.seconds }}", "label": "rested"}},
        input_schema={"type": "object", "required": ["seconds"], "properties": {"seconds": {"type": "number"}}},
    ),
]
WRITTEN = {scenario["scenario_id"]: scenario for scenario in SCENARIOS}


@dataclass
class Served:
    server: StepServer
    folder: Path

    @property
    def mcp(self) -> str:
        return f"{self.server.url}/mcp"

    def api(self, path: str) -> Any:
        response = httpx.get(f"{self.server.url}/api{path}", timeout=10)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("mcp-http")
    folder, config = workflow_home(home, SCENARIOS)
    for path in (PROJECT_ROOT / "scenarios").glob("*.json"):
        shutil.copy(path, folder / path.name)
    servers = json.loads(config.read_text())
    servers["mcpServers"]["demo"] = {
        "command": sys.executable, "args": ["-m", "web.demo"], "cwd": str(PROJECT_ROOT),
        "env": {"STEPLINE_DEMO_DELAY": "0"},
    }  # fmt: skip
    config.write_text(json.dumps(servers))
    limits = {
        "STEPLINE_MAX_MCP_CALLS": str(MAX_CALLS),
        "STEPLINE_MAX_JSON_DEPTH": str(MAX_DEPTH),
        "STEPLINE_MAX_BODY_BYTES": str(MAX_BODY),
    }
    server = start_server(
        home, "--scenarios", str(folder), "--mcp-config", str(config), "--root-path", PREFIX, env=limits
    )
    yield Served(server, folder)
    server.stop()


@contextlib.asynccontextmanager
async def connected(
    url: str, mode: str, headers: dict[str, str] | None = None, **options: Any
) -> AsyncIterator[Client]:
    async with create_mcp_http_client(headers=headers) as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, mode=mode, client_info=CLIENT, read_timeout_seconds=60, **options) as client:
            assert client.protocol_version == ERAS[mode]
            yield client


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


def links_of(result: types.CallToolResult) -> dict[str, str]:
    return {str(block.uri): block.mime_type or "" for block in result.content if isinstance(block, types.ResourceLink)}


def run_id_of(result: types.CallToolResult) -> str:
    [uri] = [uri for uri in links_of(result) if uri.startswith("stepline://runs/")]
    return uri.removeprefix("stepline://runs/")


# tools/list


@pytest.mark.parametrize("mode", ERAS)
async def test_every_scenario_is_a_tool_with_its_schemas_and_hints(served: Served, mode: str) -> None:
    async with connected(served.mcp, mode) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}

    scenarios = {**SHIPPED, **WRITTEN}
    assert set(tools) == set(scenarios)
    for scenario_id, scenario in scenarios.items():
        tool = tools[scenario_id]
        assert tool.title == scenario["name"]
        # A scenario that declares no input takes an empty object.
        assert tool.input_schema == scenario.get("input_schema", {"type": "object"}), scenario_id
        assert (tool.output_schema is not None) == ("output" in scenario), scenario_id
        assert "Steps: " in (tool.description or "")
    assert tools["greet"].description == "Greet someone loudly.\n\nSteps: shout (upper)."
    assert tools["greet"].output_schema == {
        "type": "object",
        "properties": {
            "greeting": {"description": "{{ steps.shout.output.text }}"},
            "name": {"description": "{{ input.name }}"},
        },
    }
    # The demo's tools say they are read-only; a person approving a step makes a scenario more than a read.
    profile = tools[PROFILE].annotations
    assert profile is not None
    assert (profile.read_only_hint, profile.destructive_hint, profile.idempotent_hint) == (True, False, True)
    approval = tools[APPROVAL].annotations
    assert approval is not None and approval.read_only_hint is None
    # The workflow server's tools say nothing of themselves: nothing is claimed.
    assert tools["greet"].annotations is None


async def test_a_scenario_added_or_removed_is_told_to_an_open_session(served: Served) -> None:
    changes: list[Any] = []
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        nonlocal changed
        if isinstance(message, types.ToolListChangedNotification):
            changes.append(message)
            changed.set()

    added = served.folder / "late_greet.json"
    async with connected(served.mcp, "legacy", message_handler=on_message) as client:
        # Said at the handshake, so that a client listens for it.
        assert client.server_capabilities.tools is not None and client.server_capabilities.tools.list_changed
        assert "late_greet" not in {tool.name for tool in (await client.list_tools()).tools}

        added.write_text(json.dumps({**WRITTEN["greet"], "scenario_id": "late_greet", "name": "Late greet"}))
        with anyio.fail_after(15):
            await changed.wait()
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert listed["late_greet"].title == "Late greet"

        changed = anyio.Event()
        added.unlink()
        with anyio.fail_after(15):
            await changed.wait()
        assert "late_greet" not in {tool.name for tool in (await client.list_tools()).tools}
    assert len(changes) == 2


def test_the_protected_resource_metadata_names_mcp_under_the_root_path(served: Served) -> None:
    document = httpx.get(f"{served.server.url}/.well-known/oauth-protected-resource/mcp", timeout=10)
    assert document.status_code == 200
    assert document.json()["resource"] == f"{served.server.url}{PREFIX}/mcp"


# tools/call


@pytest.mark.parametrize("mode", ERAS)
async def test_a_call_is_a_run_whose_output_and_links_the_client_gets(served: Served, mode: str) -> None:
    async with connected(served.mcp, mode) as client:
        result = await client.call_tool("greet", {"name": "ada"})

    assert not result.is_error, text_of(result)
    run_id = run_id_of(result)
    snapshot = served.api(f"/runs/{run_id}")
    assert snapshot["status"] == "success"
    assert result.structured_content == snapshot["output"] == {"greeting": "HELLO ADA", "name": "ada"}
    summary = text_of(result)
    assert summary.startswith(f"Run {run_id} of Greet (greet) succeeded in ")
    assert "Steps: 1 (1 success)." in summary
    assert 'Output: {"greeting":"HELLO ADA","name":"ada"}' in summary
    # Absolute links under the root path the server is reached at.
    page = f"{served.server.url}{PREFIX}/runs/{run_id}"
    api = f"{served.server.url}{PREFIX}/api/runs/{run_id}"
    resource = f"stepline://runs/{run_id}"
    assert links_of(result) == {page: "text/html", api: "application/json", resource: "application/json"}
    # What the proxy in front makes of the snapshot's link.
    assert httpx.get(api.replace(PREFIX, ""), timeout=10).json() == snapshot
    # Recorded as every run is, the client named.
    listed = {run["run_id"]: run for run in served.api("/runs")["runs"]}
    assert listed[run_id]["scenario_id"] == "greet"
    assert snapshot["started_by"] == {"name": "anonymous", "source": "anonymous", "client": "stepline-tests 3.1"}


@pytest.mark.parametrize("mode", ERAS)
async def test_an_output_of_one_expression_is_wrapped_as_the_output_schema_says(served: Served, mode: str) -> None:
    async with connected(served.mcp, mode) as client:
        tool = {tool.name: tool for tool in (await client.list_tools()).tools}["echo_whole"]
        # The client checks structuredContent against the outputSchema: a mismatch is an exception here.
        as_object = await client.call_tool("echo_whole", {"value": {"a": 1}})
        as_number = await client.call_tool("echo_whole", {"value": 3})

    assert tool.output_schema is not None and tool.output_schema["required"] == ["output"]
    assert as_object.structured_content == {"output": {"value": {"a": 1}, "note": "(not given)"}}
    assert as_number.structured_content == {"output": {"value": 3, "note": "(not given)"}}
    assert served.api(f"/runs/{run_id_of(as_object)}")["output"] == {"value": {"a": 1}, "note": "(not given)"}


@pytest.mark.parametrize("mode", ERAS)
async def test_a_failed_run_is_an_error_naming_the_step_and_its_message(served: Served, mode: str) -> None:
    async with connected(served.mcp, mode) as client:
        result = await client.call_tool("breaks", {})

    assert result.is_error and result.structured_content is None
    run_id = run_id_of(result)
    assert text_of(result).startswith(f"Run {run_id} of Breaks (breaks) failed at step 'fetch' in ")
    assert "the archive is closed" in text_of(result)
    assert "Steps: 2 (1 success, 1 failed)." in text_of(result)
    assert served.api(f"/runs/{run_id}")["status"] == "failed"


@pytest.mark.parametrize("mode", ERAS)
async def test_progress_tells_each_step_and_what_its_tool_reports(served: Served, mode: str) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with connected(served.mcp, mode) as client:
        result = await client.call_tool(PROFILE, {"domain": "daily.example.com"}, progress_callback=on_progress)

    assert not result.is_error, text_of(result)
    # Progress counts the steps ended (MCP wants it to grow with every notification: within a step it creeps
    # toward the next whole number), out of the steps planned.
    assert {total for _, total, _ in seen} == {3}
    values = [progress for progress, _, _ in seen]
    assert all(later > earlier for earlier, later in zip(values, values[1:], strict=False)), values
    told = {message: progress for progress, _, message in seen}
    for done, name in enumerate(PROFILE_STEPS):
        where = f"step {done + 1}/3 {name}"
        assert int(told[f"{where}: started"]) == done
        assert told[f"{where}: success"] == done + 1
    steps = [message for message in told if message and message.endswith((": started", ": success"))]
    said = ("started", "success")
    assert steps == [f"step {n}/3 {name}: {word}" for n, name in enumerate(PROFILE_STEPS, 1) for word in said]
    # The demo tools' own progress messages, relayed under their step.
    assert int(told["step 1/3 lookup_outlet: Found Harbor Daily"]) == 0
    assert int(told["step 2/3 list_articles: Scanning 17 articles…"]) == 1


# Bad input and limits


@pytest.mark.parametrize("mode", ERAS)
async def test_arguments_breaking_the_schema_are_an_error_naming_each_field(served: Served, mode: str) -> None:
    before = len(served.api("/runs")["runs"])
    async with connected(served.mcp, mode) as client:
        missing = await client.call_tool("greet", {"times": 0})
        wrong = await client.call_tool("greet", {"name": 1})

    assert missing.is_error and wrong.is_error
    assert text_of(missing) == (
        "The arguments do not fit the tool's inputSchema:\n"
        "- name: 'name' is a required property\n"
        "- times: 0 is less than the minimum of 1"
    )
    assert text_of(wrong) == "The arguments do not fit the tool's inputSchema:\n- name: 1 is not of type 'string'"
    assert len(served.api("/runs")["runs"]) == before, "no run is started"


@pytest.mark.parametrize("mode", ERAS)
async def test_an_unknown_tool_is_a_protocol_error_naming_it(served: Served, mode: str) -> None:
    async with connected(served.mcp, mode) as client:
        with pytest.raises(MCPError) as refused:
            await client.call_tool("no_such_scenario", {})
    assert refused.value.error.code == types.INVALID_PARAMS
    assert refused.value.error.message == "Unknown tool: no_such_scenario"


@pytest.mark.parametrize("mode", ERAS)
async def test_arguments_nested_too_deep_are_refused_saying_where(served: Served, mode: str) -> None:
    deep: Any = 1
    for _ in range(MAX_DEPTH + 2):
        deep = [deep]
    async with connected(served.mcp, mode) as client:
        result = await client.call_tool("echo_whole", {"value": deep})

    assert result.is_error
    assert text_of(result) == (
        "Run not started: the arguments are refused at arguments.value.0.0.0.0.0.0.0: "
        f"nested deeper than {MAX_DEPTH} levels"
    )


async def test_a_body_over_the_limit_is_413(served: Served) -> None:
    call = {
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "echo_whole", "arguments": {"value": "x" * MAX_BODY}},
    }  # fmt: skip
    headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2026-07-28"}
    response = httpx.post(served.mcp, json=call, headers=headers, timeout=10)
    assert response.status_code == 413, response.text

    async with connected(served.mcp, "legacy") as client:
        with pytest.raises(MCPError):
            await client.call_tool("echo_whole", {"value": "x" * MAX_BODY})
        # The session is not spoiled by it.
        assert not (await client.call_tool("echo_whole", {"value": "small"})).is_error


async def test_calls_past_max_mcp_calls_are_told_stepline_is_busy(served: Served) -> None:
    results: dict[str, types.CallToolResult] = {}

    async def running_naps(api: httpx.AsyncClient) -> int:
        runs = (await api.get("/api/runs", params={"scenario_id": "nap"})).json()["runs"]
        return sum(run["status"] in ("queued", "running") for run in runs)

    async with connected(served.mcp, "legacy") as client, httpx.AsyncClient(base_url=served.server.url) as api:
        async with anyio.create_task_group() as group:

            async def nap(key: str) -> None:
                results[key] = await client.call_tool("nap", {"seconds": NAP_SECONDS})

            for key in ("first", "second"):
                group.start_soon(nap, key)
            with anyio.fail_after(10):
                while await running_naps(api) < MAX_CALLS:
                    await anyio.sleep(0.05)
            results["third"] = await client.call_tool("nap", {"seconds": NAP_SECONDS})
        # Once they have answered, there is room again.
        results["later"] = await client.call_tool("nap", {"seconds": 0})

    assert results["third"].is_error
    assert text_of(results["third"]) == (
        f"Run not started: Stepline is busy with {MAX_CALLS} calls in flight, the most it takes (max_mcp_calls); "
        "try again shortly."
    )
    for key in ("first", "second", "later"):
        assert not results[key].is_error, text_of(results[key])


@pytest.mark.parametrize(
    ("state", "says"),
    [
        ("not json", "request_state is not one this server gave: not JSON"),
        ('{"token": 1}', "request_state is not one this server gave: it names no run"),
        ('{"run_id": "feedbeef", "after": 0}', "Unknown run_id: feedbeef"),
    ],
    ids=["not json", "names no run", "unknown run"],
)
async def test_a_request_state_the_server_did_not_give_is_refused(served: Served, state: str, says: str) -> None:
    async with connected(served.mcp, "auto") as client:
        with pytest.raises(MCPError) as refused:
            await client.session.call_tool("greet", {"name": "ada"}, request_state=state, input_responses={})
    assert refused.value.error.code == types.INVALID_PARAMS
    assert refused.value.error.message == says


# Resources


@pytest.mark.parametrize("mode", ERAS)
async def test_runs_are_listed_and_read_as_resources(served: Served, mode: str) -> None:
    async with connected(served.mcp, mode) as client:
        run_id = run_id_of(await client.call_tool("greet", {"name": "grace"}))
        listed = {str(resource.uri): resource for resource in (await client.list_resources()).resources}
        read = await client.read_resource(f"stepline://runs/{run_id}")
        templates = (await client.list_resource_templates()).resource_templates

    resource = listed[f"stepline://runs/{run_id}"]
    assert resource.name == f"run {run_id[:8]} of greet"
    assert resource.mime_type == "application/json"
    assert resource.description is not None and resource.description.startswith("success, started ")
    newest = next(iter(listed))
    assert newest == f"stepline://runs/{run_id}", "newest first"
    [contents] = read.contents
    assert isinstance(contents, types.TextResourceContents) and contents.mime_type == "application/json"
    assert json.loads(contents.text) == served.api(f"/runs/{run_id}")
    assert [template.uri_template for template in templates] == ["stepline://runs/{run_id}"]


@pytest.mark.parametrize("uri", ["stepline://runs/feedbeef", "stepline://elsewhere/1"])
async def test_a_resource_that_is_no_run_is_an_error_naming_it(served: Served, uri: str) -> None:
    async with connected(served.mcp, "legacy") as client:
        with pytest.raises(MCPError) as refused:
            await client.read_resource(uri)
    assert refused.value.error.message.startswith(f"Unknown resource: {uri}")
