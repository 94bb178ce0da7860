"""The API as a caller meets it with real servers: input_schema defaults applied as the form applies them,
`/api/tools` while some servers are down, and a streamable-HTTP server that restarted and forgot our session.

The servers are real: the tests' workflow server over stdio, an SDK server behind a gate that refuses
requests as restarted servers and gateways do (tests/servers/gatekeeper.py), the SDK server
tests/servers/faults.py and the npm reference server, both over streamable HTTP, killed and started again.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import DEMO_TOOLS, PROJECT_ROOT, free_port, wait_until
from inprocess import InProcessApp, in_process
from mcp_process import STARTUP_SECONDS, HttpMcpServer, workflow_home
from reference_server import REFERENCE_SERVER
from runs import get_run, run_to_end, wait_finished
from ui_support import form_token

from web.forms import MAX_DEPTH, with_defaults
from web.mcp_http import MAX_ERROR_TEXT

# --- input_schema defaults ------------------------------------------------------------------------

ZONES = {
    "schema_version": "2",
    "scenario_id": "zones",
    "name": "Zones",
    "input_schema": {
        "type": "object",
        "required": ["city", "limits"],
        "properties": {
            "city": {"type": "string"},
            "zone": {"type": "string", "default": "Asia/Tokyo"},
            "options": {
                "type": "object",
                "properties": {"units": {"type": "string", "default": "metric"}, "days": {"type": "integer"}},
            },
            "limits": {"type": "object", "required": ["max"], "properties": {"max": {"type": "integer", "default": 5}}},
            "stops": {"type": "array", "items": {"$ref": "#/$defs/stop"}},
        },
        "$defs": {
            "stop": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "minutes": {"type": "integer", "default": 10}},
            }
        },
    },
    "steps": [{"name": "clock", "tool": "echo", "input": {"value": "{{ input.zone }}", "note": "{{ input }}"}}],
}
# What a run of `zones` gets from {"city": "Kyoto"}: the defaults, the nested ones too.
KYOTO = {"city": "Kyoto", "zone": "Asia/Tokyo", "options": {"units": "metric"}, "limits": {"max": 5}}


@pytest.fixture(scope="module")
def zones_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessApp]:
    home = tmp_path_factory.mktemp("zones")
    folder, config = workflow_home(home, [ZONES])
    with in_process(home, mcp_config=config, scenarios=folder) as app:
        yield app


def test_a_property_left_out_reaches_the_tool_as_its_default(zones_app: InProcessApp) -> None:
    response = zones_app.post("/api/runs", json={"scenario_id": "zones", "input": {"city": "Kyoto"}})

    assert response.status_code == 202, response.text
    assert response.json()["input"] == KYOTO
    run = wait_finished(zones_app.client, response.json()["run_id"])
    assert run["status"] == "success", run
    assert run["input"] == KYOTO
    # What the tool received: the default zone, and the whole completed input.
    assert run["steps"][0]["output"] == {"value": "Asia/Tokyo", "note": KYOTO}


def test_values_given_win_and_nested_objects_and_list_items_are_completed(zones_app: InProcessApp) -> None:
    given = {
        "city": "Oslo",
        "zone": "Europe/Oslo",
        "options": {"days": 3},
        "limits": {"max": 2},
        "stops": [{"name": "museum"}, {"name": "harbour", "minutes": 45}],
    }

    run = run_to_end(zones_app.client, "zones", given)

    assert run["input"] == {
        "city": "Oslo",
        "zone": "Europe/Oslo",
        "options": {"days": 3, "units": "metric"},
        "limits": {"max": 2},
        "stops": [{"name": "museum", "minutes": 10}, {"name": "harbour", "minutes": 45}],
    }
    assert run["steps"][0]["output"]["value"] == "Europe/Oslo"


def test_a_default_does_not_hide_a_wrong_or_missing_value(zones_app: InProcessApp) -> None:
    response = zones_app.post(
        "/api/runs", json={"scenario_id": "zones", "input": {"zone": 9, "limits": {"max": "many"}}}
    )

    assert response.status_code == 422
    assert sorted(tuple(error["loc"]) for error in response.json()["detail"]) == [
        ("body", "input", "city"),  # required, and without a default
        ("body", "input", "limits", "max"),
        ("body", "input", "zone"),
    ]


def test_a_rerun_completes_a_recorded_input_with_the_defaults(zones_app: InProcessApp) -> None:
    # A run recorded before its input was completed (history from an earlier version): its rerun gets
    # the defaults, as a new run would.
    scenario = zones_app.state["catalog"].get("zones")
    record = zones_app.call(zones_app.state["runner"].launch(scenario, {"city": "Kyoto"}))
    assert wait_finished(zones_app.client, record.run_id)["input"] == {"city": "Kyoto"}

    response = zones_app.post(f"/api/runs/{record.run_id}/rerun")

    assert response.status_code == 202, response.text
    assert response.json()["input"] == KYOTO
    assert wait_finished(zones_app.client, response.json()["run_id"])["steps"][0]["output"]["value"] == "Asia/Tokyo"


def test_a_form_field_emptied_gets_its_default_as_the_api_does(zones_app: InProcessApp) -> None:
    page = zones_app.get("/scenarios/zones")
    assert 'value="Asia/Tokyo"' in page.text  # the form shows the default
    emptied = {"in.zone": "", "in.options.units": "", "in.limits.max": ""}

    response = zones_app.post(
        "/scenarios/zones",
        data={"_csrf": form_token(page.text), "in.city": "Kyoto", **emptied},
        headers={"Sec-Fetch-Site": "same-origin"},
    )

    assert response.status_code == 303, response.text
    run_id = response.headers["location"].rsplit("/", 1)[-1]
    assert get_run(zones_app.client, run_id)["input"] == KYOTO


def test_defaults_of_a_recursive_schema_end_and_leave_the_input_as_it_was() -> None:
    schema = {
        "$ref": "#/$defs/node",
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"label": {"type": "string", "default": "leaf"}, "child": {"$ref": "#/$defs/node"}},
            }
        },
    }
    given: dict[str, Any] = {"child": {"label": "inner"}}

    completed = with_defaults(schema, given)

    assert given == {"child": {"label": "inner"}}
    assert completed["label"] == "leaf" and completed["child"]["label"] == "inner"
    depth, node = 0, completed
    while "child" in node:
        depth, node = depth + 1, node["child"]
    assert depth <= MAX_DEPTH + 1


# --- GET /api/tools while some servers are down ---------------------------------------------------

DEMO_STDIO = {
    "command": sys.executable,
    "args": ["-m", "web.demo"],
    "cwd": str(PROJECT_ROOT),
    "env": {"STEPLINE_DEMO_DELAY": "0"},
}


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/mcp"  # nothing listens there


def app_with(make_app: Any, tmp_path: Path, servers: dict[str, Any], **settings: Any) -> InProcessApp:
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": servers}), encoding="utf-8")
    app: InProcessApp = make_app(mcp_config=config, connect_timeout=10, **settings)
    app.wait_ready()
    return app


def test_tools_lists_the_servers_that_answer_and_names_those_down(make_app: Any, tmp_path: Path) -> None:
    app = app_with(make_app, tmp_path, {"demo": DEMO_STDIO, "remote eu": {"url": dead_url()}})

    response = app.get("/api/tools")

    assert response.status_code == 200
    assert {tool["name"] for tool in response.json()} == DEMO_TOOLS
    assert {tool["server"] for tool in response.json()} == {"demo"}
    assert response.headers["stepline-servers-down"] == "remote%20eu"
    page = app.get("/tools").text
    assert re.search(r"1 of 2 MCP servers cannot be reached:\s*<a href=\"#server-2\">remote eu</a>", page), page


def test_tools_of_a_server_that_went_down_are_not_listed(make_app: Any, tmp_path: Path) -> None:
    faults = HttpMcpServer("faults.py", "streamable-http", tmp_path).start()
    try:
        # A short heartbeat: the ping after the server died is what finds it gone.
        app = app_with(make_app, tmp_path, {"demo": DEMO_STDIO, "faults": {"url": faults.url}}, heartbeat=0.5)
        assert "whoami" in {tool["name"] for tool in app.get("/api/tools").json()}

        faults.kill()
        wait_until(lambda: app.get("/healthz").json()["servers"]["faults"]["state"] == "down", 15, "faults down")
        response = app.get("/api/tools")
    finally:
        faults.kill()

    assert response.status_code == 200
    assert {tool["name"] for tool in response.json()} == DEMO_TOOLS  # not the tools it had before
    assert response.headers["stepline-servers-down"] == "faults"


def test_tools_is_502_only_when_no_server_answers_naming_each_reason(make_app: Any, tmp_path: Path) -> None:
    app = app_with(make_app, tmp_path, {"east": {"url": dead_url()}, "west": {"url": dead_url()}})

    response = app.get("/api/tools")

    assert response.status_code == 502
    east, west = response.json()["detail"].split("; ")
    assert re.fullmatch(r"MCP server 'east' is unavailable: .*[Cc]onnect.*", east), east
    assert re.fullmatch(r"MCP server 'west' is unavailable: .*[Cc]onnect.*", west), west
    assert "No MCP server can be reached" in app.get("/tools").text


def test_tools_names_no_server_down_when_all_answer(demo_app: InProcessApp) -> None:
    demo_app.wait_ready()
    response = demo_app.get("/api/tools")

    assert response.status_code == 200
    assert "stepline-servers-down" not in response.headers
    assert "cannot be reached" not in demo_app.get("/tools").text


def test_openapi_documents_the_header_naming_servers_down(demo_app: InProcessApp) -> None:
    responses = demo_app.get("/openapi.json").json()["paths"]["/api/tools"]["get"]["responses"]

    assert "Stepline-Servers-Down" in responses["200"]["headers"]
    assert set(responses) == {"200", "401", "403", "502"}


# --- A streamable-HTTP server that forgot our session ---------------------------------------------


class ReferenceOverHttp(HttpMcpServer):
    """The npm reference server over streamable HTTP (it answers an unknown session with 400)."""

    def __init__(self, log_dir: Path) -> None:
        super().__init__("reference", "streamable-http", log_dir)

    def start(self) -> ReferenceOverHttp:
        with (self.log_dir / f"reference-{self.port}.log").open("ab") as log:
            self.process = subprocess.Popen(
                ["node", str(REFERENCE_SERVER), "streamableHttp"],
                env={**os.environ, "PORT": str(self.port)},
                stdout=log,
                stderr=log,
            )
        wait_until(self._listening, STARTUP_SECONDS, f"the reference server on port {self.port}")
        return self


@pytest.fixture
def http_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HttpMcpServer]:
    server = ReferenceOverHttp(tmp_path) if request.param == "reference" else HttpMcpServer(
        f"{request.param}.py", "streamable-http", tmp_path
    )
    yield server.start()
    server.kill()


def remote_app(
    make_app: Any, tmp_path: Path, url: str, *scenarios: dict[str, Any], heartbeat: float = 600
) -> InProcessApp:
    folder = tmp_path / "scenarios"
    folder.mkdir()
    for scenario in scenarios:
        (folder / f"{scenario['scenario_id']}.json").write_text(json.dumps(scenario), encoding="utf-8")
    config = tmp_path / "mcp.json"
    # Sessions, and servers forgetting them, belong to the 2025 protocol: the gate refuses them as deployments do.
    remote = {"url": url, "protocol": "legacy"}
    config.write_text(json.dumps({"mcpServers": {"remote": remote}}), encoding="utf-8")
    # No heartbeat within the test unless asked: what meets the forgotten session must be the call itself.
    app: InProcessApp = make_app(mcp_config=config, scenarios=folder, heartbeat=heartbeat, connect_timeout=5)
    app.wait_ready()
    return app


def v2(scenario_id: str, *steps: dict[str, Any]) -> dict[str, Any]:
    return {"schema_version": "2", "scenario_id": scenario_id, "name": scenario_id, "steps": list(steps)}


def step(name: str, tool: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "tool": tool, "input": {}, **fields}


# The tool each server is asked, and what its answer says.
ASK = {
    "reference": (step("ask", "echo", input={"message": "{{ run.id }}"}), lambda run: f"Echo: {run['run_id']}"),
    "faults": (step("ask", "whoami"), lambda run: None),
}


@pytest.mark.parametrize("http_server", ["reference", "faults"], indirect=True)
def test_a_server_restarted_between_runs_is_given_a_new_session(
    http_server: HttpMcpServer, make_app: Any, tmp_path: Path
) -> None:
    ask, says = ASK[Path(http_server.script).stem]
    app = remote_app(make_app, tmp_path, http_server.url, v2("ask", ask))
    before = run_to_end(app.client, "ask")
    assert before["status"] == "success", before

    http_server.kill()
    http_server.start()  # the same port; it knows no session
    after = run_to_end(app.client, "ask")

    assert after["status"] == "success", after
    [asked] = after["steps"]
    if says(after) is not None:
        assert asked["output"] == says(after)
    else:
        assert asked["output"]["pid"] != before["steps"][0]["output"]["pid"]
    assert app.get("/healthz").json()["servers"]["remote"]["state"] == "ready"


@pytest.fixture
def gatekeeper(tmp_path: Path) -> Iterator[HttpMcpServer]:
    server = HttpMcpServer("gatekeeper.py", "streamable-http", tmp_path).start()
    yield server
    server.kill()


def gate_stats(server: HttpMcpServer) -> dict[str, Any]:
    return httpx.get(f"http://127.0.0.1:{server.port}/stats", timeout=5).json()


@pytest.mark.parametrize("spec", [False, True], ids=["400 as the reference server answers", "404 as the spec says"])
def test_a_session_forgotten_between_two_steps_is_replaced_and_the_run_goes_on(
    gatekeeper: HttpMcpServer, make_app: Any, tmp_path: Path, spec: bool
) -> None:
    scenario = v2(
        "restart", step("forget", "forget_sessions", input={"spec": spec}), step("who", "whoami", needs=["forget"])
    )
    app = remote_app(make_app, tmp_path, gatekeeper.url, scenario)

    run = run_to_end(app.client, "restart")

    assert run["status"] == "success", run
    assert run["steps"][1]["output"]["handshakes"] == 2  # a fresh session, made for the call
    # The call was refused once, on the forgotten session, and not called twice.
    assert gate_stats(gatekeeper)["refused"].get("tools/call") == 1


def test_a_server_that_keeps_refusing_the_session_fails_the_step_in_its_own_words(
    gatekeeper: HttpMcpServer, make_app: Any, tmp_path: Path
) -> None:
    scenario = v2("amnesia", step("forget", "forget_at_once"), step("who", "whoami", needs=["forget"]))
    app = remote_app(make_app, tmp_path, gatekeeper.url, scenario)

    run = run_to_end(app.client, "amnesia")

    assert run["status"] == "failed"
    assert run["steps"][1]["message"] == (
        "MCP server 'remote' is unavailable: HTTP 400: Bad Request: No valid session ID provided"
    )


GATEWAY_REFUSALS = {
    "plain text": (
        {"status": 403, "text": "Forbidden:\n  tool calls are paused\n"},
        "MCP server 'remote' answered HTTP 403: Forbidden: tool calls are paused",
    ),
    # -32000 is also the code the SDK gives a lost connection: an HTTP answer is not taken for one.
    "JSON-RPC without an id": (
        {"status": 429, "text": "Too many calls, slow down", "json_rpc": True},
        "MCP server 'remote' answered HTTP 429: Too many calls, slow down (code -32000)",
    ),
    # A step's message is one bounded line, whatever the server sends.
    "a long page": (
        {"status": 503, "text": "busy " * 2000},
        "MCP server 'remote' answered HTTP 503: " + ("busy " * 60)[:MAX_ERROR_TEXT - 1] + "…",
    ),
}


@pytest.mark.parametrize("block, message", GATEWAY_REFUSALS.values(), ids=GATEWAY_REFUSALS.keys())
def test_a_gateway_refusing_calls_is_the_steps_message_and_the_session_is_kept(
    gatekeeper: HttpMcpServer, make_app: Any, tmp_path: Path, block: dict[str, Any], message: str
) -> None:
    scenario = v2("blocked", step("block", "block_calls", input=block), step("who", "whoami", needs=["block"]))
    app = remote_app(make_app, tmp_path, gatekeeper.url, scenario)

    run = run_to_end(app.client, "blocked")

    assert run["status"] == "failed"
    assert run["steps"][1]["message"] == message
    assert app.get("/healthz").json()["servers"]["remote"]["state"] == "ready"
    assert gate_stats(gatekeeper)["handshakes"] == 1


def test_the_heartbeat_replaces_a_forgotten_session_before_a_call_needs_it(
    gatekeeper: HttpMcpServer, make_app: Any, tmp_path: Path
) -> None:
    forget, who = v2("forget", step("forget", "forget_sessions")), v2("who", step("who", "whoami"))
    app = remote_app(make_app, tmp_path, gatekeeper.url, forget, who, heartbeat=0.2)
    assert run_to_end(app.client, "forget")["status"] == "success"

    wait_until(lambda: gate_stats(gatekeeper)["handshakes"] == 2, 15, "a new session after a refused ping")

    run = run_to_end(app.client, "who")
    assert run["status"] == "success", run
    assert run["steps"][0]["output"]["handshakes"] == 2
    refused = gate_stats(gatekeeper)["refused"]
    assert refused.get("ping", 0) >= 1 and "tools/call" not in refused


def test_calls_meeting_the_forgotten_session_together_are_each_tried_again_on_one_new_session(
    gatekeeper: HttpMcpServer, make_app: Any, tmp_path: Path
) -> None:
    # The first refusal must not fail the others as lost: each has its own refusal, then its retry.
    scenario = v2(
        "crowd",
        step("forget", "forget_sessions"),
        *(step(f"who{n}", "whoami", needs=["forget"]) for n in range(4)),
    )
    app = remote_app(make_app, tmp_path, gatekeeper.url, scenario)

    run = run_to_end(app.client, "crowd")

    assert run["status"] == "success", run
    assert {s["output"]["handshakes"] for s in run["steps"][1:]} == {2}
    assert gate_stats(gatekeeper)["refused"].get("tools/call") == 4
