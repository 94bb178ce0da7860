"""The MCP pool and the runner against real MCP servers, through the app in-process (a real
`stepline serve` where its own process is what is tested: signals, and the command line).

The servers are `tests/servers/toolbox.py` (built with the SDK) over streamable HTTP, legacy SSE and
stdio, plus the bundled demo server; each case asserts what a user sees: the failed step's message.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import PROJECT_ROOT, StepServer, free_port, wait_until
from inprocess import InProcessApp, in_process
from mcp_process import SERVERS, HttpMcpServer
from runs import get_run, run_to_end, start_run, wait_finished
from sse import read_events

from web.schema_checks import literal_input_errors

TOKEN = "s3cret-token"


def write_config(path: Path, servers: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"mcpServers": servers}, indent=2), encoding="utf-8")
    return path


def write_scenario(folder: Path, scenario_id: str, *steps: dict[str, Any], **extra: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    scenario = {"schema_version": "1", "scenario_id": scenario_id, "name": scenario_id, "steps": list(steps), **extra}
    (folder / f"{scenario_id}.json").write_text(json.dumps(scenario, indent=2), encoding="utf-8")


def step(name: str, tool: str, server: str | None = None, **inputs: Any) -> dict[str, Any]:
    return {"name": name, "tool": tool, **({"server": server} if server else {}), "input": inputs}


DEMO_STDIO = {
    "command": sys.executable,
    "args": ["-m", "web.demo"],
    "cwd": str(PROJECT_ROOT),
    "env": {"STEPLINE_DEMO_DELAY": "0"},
}


# --- One Stepline with four servers: HTTP (with a ${VAR} header), legacy SSE, stdio, and one down ---


@pytest.fixture(scope="module")
def toolboxes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, HttpMcpServer]]:
    logs = tmp_path_factory.mktemp("toolbox")
    boxes = {
        "tb": HttpMcpServer("toolbox.py", "streamable-http", logs),
        "legacy": HttpMcpServer("toolbox.py", "sse", logs),
    }
    for box in boxes.values():
        box.start()
    yield boxes
    for box in boxes.values():
        box.kill()


@pytest.fixture(scope="module")
def stepline(tmp_path_factory: pytest.TempPathFactory, toolboxes: dict[str, HttpMcpServer]) -> Iterator[InProcessApp]:
    home = tmp_path_factory.mktemp("mcp")
    config = write_config(
        home / "mcp.json",
        {
            "tb": {"type": "http", "url": toolboxes["tb"].url, "headers": {"Authorization": "Bearer ${TB_TOKEN}"}},
            "legacy": {"type": "sse", "url": toolboxes["legacy"].url},
            "demo": DEMO_STDIO,
            # Nothing listens there: a server that is down.
            "gone": {"type": "http", "url": f"http://127.0.0.1:{free_port()}/mcp"},
        },
    )
    folder = home / "scenarios"
    write_scenario(folder, "demo_only", step("lookup", "lookup_outlet", domain="daily.example.com"))
    write_scenario(folder, "needs_gone", step("first", "echo", "tb", text="hi"), step("second", "echo", "gone"))
    write_scenario(folder, "tool_error", step("fail", "fail", "tb", message="no widgets today"))
    write_scenario(folder, "times_out", step("nap", "slow", "tb", seconds=5), step("after", "echo", "tb"))
    write_scenario(folder, "broken_structure", step("broken", "broken_structure", "tb"))
    write_scenario(folder, "bad_arguments", step("echo", "echo", "tb", items="not a list"))
    write_scenario(folder, "unknown_tool", step("nope", "no_such_tool", "tb"))
    write_scenario(folder, "unknown_tool_anywhere", step("nope", "no_such_tool"))
    write_scenario(folder, "unknown_server", step("nope", "echo", "nowhere"))
    write_scenario(folder, "ambiguous", step("echo", "echo", text="which one?"))
    write_scenario(
        folder,
        "required_missing",
        step("first", "echo", "tb", items=["only one"]),
        {
            **step("second", "echo", "tb", text={"from": "steps.first.output.items.3"}),
            "required_input_fields": ["text"],
        },
    )
    write_scenario(
        folder,
        "outputs",
        step("both", "both", "tb"),
        step("json", "json_text", "tb"),
        step("plain", "plain_text", "tb"),
        step(
            "echo",
            "echo",
            "legacy",
            text={"from": "steps.json.output.words.1"},
            items=["literal"],
            missing={"from": "steps.both.output.nothing"},
        ),
    )
    write_scenario(folder, "progress", step("count", "progress", "tb", steps=3))
    write_scenario(folder, "auth", step("auth", "authorization", "tb"))
    write_scenario(
        folder,
        "chained",
        step("first", "echo", "tb", text={"from": "input.text"}),
        step("second", "echo", "legacy", text={"from": "steps.first.output.text"}, items=["x"]),
        step("third", "lookup_outlet", domain="signal.example"),
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TB_TOKEN", TOKEN)  # expanded into the header when the config is read
        with in_process(home, mcp_config=config, scenarios=folder, call_timeout=1, connect_timeout=3) as app:
            app.wait_ready()
            yield app


@dataclass(frozen=True)
class Failure:
    scenario_id: str
    step: str
    says: list[str]


FAILURES = {
    "server down": Failure("needs_gone", "second", ["MCP server 'gone'", "unavailable"]),
    "tool returns isError": Failure("tool_error", "fail", ["no widgets today"]),
    # The wording is the MCP error handling's; what a user must learn is which call, where, and the limit.
    "call times out": Failure("times_out", "nap", ["'slow' on MCP server 'tb'", " 1s"]),
    "structured content breaks the output schema": Failure(
        "broken_structure", "broken", ["broken_structure", "Invalid structured content", "'many'"]
    ),
    "arguments break the tool's schema": Failure("bad_arguments", "echo", ["items", "not a list"]),
    "unknown tool": Failure("unknown_tool", "nope", ["unknown tool 'no_such_tool' on MCP server 'tb'"]),
    "unknown tool while a server is down": Failure("unknown_tool_anywhere", "nope", ["no_such_tool", "'gone'"]),
    "unknown server": Failure("unknown_server", "nope", ["unknown MCP server 'nowhere'"]),
    "ambiguous tool": Failure("ambiguous", "echo", ["'echo'", "'tb'", "'legacy'", "set the step's 'server'"]),
    "required input found nothing": Failure(
        "required_missing", "second", ["required input 'text'", "'steps.first.output.items.3'"]
    ),
}


@pytest.mark.parametrize("case", FAILURES.values(), ids=FAILURES.keys())
def test_a_failing_step_says_why(stepline: InProcessApp, case: Failure) -> None:
    run = run_to_end(stepline.client, case.scenario_id)

    assert run["status"] == "failed"
    statuses = [s["status"] for s in run["steps"]]
    at = statuses.index("failed")
    failed = run["steps"][at]
    assert (failed["node_id"], failed["status"]) == (case.step, "failed")
    # The steps before it succeeded; those after it never ran, and say so.
    assert set(statuses[:at]) <= {"success"} and set(statuses[at + 1 :]) <= {"skipped"}
    assert all(s["message"] == f"Not run: step '{case.step}' failed" for s in run["steps"][at + 1 :])
    for fragment in case.says:
        assert fragment in failed["message"], failed["message"]
    assert "Failed validating" not in failed["message"]  # a schema error is named, not dumped
    assert run["message"] == f"Step '{case.step}' failed: {failed['message']}"


def test_a_down_server_degrades_only_what_needs_it(stepline: InProcessApp) -> None:
    health = stepline.get("/healthz").json()
    assert health["status"] == "degraded"
    assert {name: s["state"] for name, s in health["servers"].items()} == {
        "tb": "ready",
        "legacy": "ready",
        "demo": "ready",
        "gone": "down",
    }
    assert health["servers"]["gone"]["error"]

    # A step whose tool only a running server offers needs no `server` and runs.
    assert run_to_end(stepline.client, "demo_only")["status"] == "success"
    assert run_to_end(stepline.client, "chained", {"text": "relay"})["status"] == "success"
    tools = stepline.get("/api/tools")
    # The tools of the servers that answer are listed; the header names the one that does not.
    assert tools.status_code == 200
    assert tools.headers["stepline-servers-down"] == "gone"
    assert {tool["server"] for tool in tools.json()} == {"tb", "legacy", "demo"}


def test_outputs_prefer_structured_content_then_json_text_then_text(stepline: InProcessApp) -> None:
    run_id = start_run(stepline.client, "outputs")["run_id"]
    run = wait_finished(stepline.client, run_id)

    assert run["status"] == "success", run
    outputs = {s["node_id"]: s["output"] for s in run["steps"]}
    assert outputs["both"] == {"count": 3}
    assert outputs["json"] == {"answer": 42, "words": ["a", "b"]}
    assert outputs["plain"] == "not JSON at all"
    # A path that finds nothing leaves its field out.
    echo = next(s for s in run["steps"] if s["node_id"] == "echo")
    assert echo["input"] == {"text": "b", "items": ["literal"]}
    assert outputs["echo"] == {"text": "b", "items": ["literal"]}
    # The raw MCP content is kept beside the output.
    finished = {e["step_name"]: e for e in read_events(stepline.client, run_id) if e["type"] == "step_finished"}
    assert finished["both"]["content"] == [{"type": "text", "text": "three things"}]


def test_input_flows_through_chained_steps_across_transports(stepline: InProcessApp) -> None:
    run = run_to_end(stepline.client, "chained", {"text": "relay"})

    assert run["status"] == "success"
    outputs = [s["output"] for s in run["steps"]]
    assert outputs[0] == {"text": "relay", "items": []}
    assert outputs[1] == {"text": "relay", "items": ["x"]}
    assert outputs[2]["domain"] == "signal.example"


def test_progress_notifications_become_step_progress_events(stepline: InProcessApp) -> None:
    run_id = start_run(stepline.client, "progress")["run_id"]
    events = read_events(stepline.client, run_id)

    progress = [
        (e["step_name"], e["index"], e["progress"], e["total"], e["message"])
        for e in events
        if e["type"] == "step_progress"
    ]
    assert progress == [("count", 0, n, 3, f"step {n} of 3") for n in (1, 2, 3)]
    types = [e["type"] for e in events]
    assert types.index("step_started") < types.index("step_progress")
    assert max(i for i, t in enumerate(types) if t == "step_progress") < types.index("step_finished")


def test_header_variables_are_expanded_from_the_environment(stepline: InProcessApp) -> None:
    run = run_to_end(stepline.client, "auth")

    assert run["status"] == "success"
    assert run["steps"][0]["output"] == f"Bearer {TOKEN}"


def test_concurrent_runs_share_the_sessions(stepline: InProcessApp) -> None:
    run_ids = [start_run(stepline.client, "chained", {"text": f"run {n}"})["run_id"] for n in range(12)]

    runs = [wait_finished(stepline.client, run_id) for run_id in run_ids]

    assert [r["status"] for r in runs] == ["success"] * 12
    assert [r["steps"][1]["output"]["text"] for r in runs] == [f"run {n}" for n in range(12)]


# --- A server killed mid-call, then restarted ----------------------------------------------------


def test_a_server_killed_mid_call_fails_the_step_then_comes_back(tmp_path: Path, make_app: Any) -> None:
    box = HttpMcpServer("toolbox.py", "streamable-http", tmp_path).start()
    try:
        config = write_config(tmp_path / "mcp.json", {"fragile": {"url": box.url}})
        folder = tmp_path / "scenarios"
        write_scenario(folder, "nap", step("nap", "slow", seconds=30))
        write_scenario(folder, "echo", step("echo", "echo", text="back again"))
        # No heartbeat within the test: what notices the failures must be the calls themselves.
        app: InProcessApp = make_app(mcp_config=config, scenarios=folder, heartbeat=600)
        run_id = start_run(app.client, "nap")["run_id"]

        def inside_the_call() -> bool:  # the tool has reported progress: it is now inside its call
            steps = get_run(app.client, run_id)["steps"]
            return bool(steps) and steps[0]["progress"] is not None

        wait_until(inside_the_call, 15, "the slow tool to report progress")
        box.kill()

        run = wait_finished(app.client, run_id)

        assert run["status"] == "failed"
        assert "MCP server 'fragile'" in run["steps"][0]["message"], run
        box.start()  # the same port
        again = run_to_end(app.client, "echo")
        assert again["status"] == "success", again
        assert again["steps"][0]["output"] == {"text": "back again", "items": []}
        assert app.get("/healthz").json()["servers"]["fragile"]["state"] == "ready"

        # Restarted while idle (a deploy): it forgot our session, and the next run must not notice.
        box.kill()
        box.start()
        assert run_to_end(app.client, "echo")["status"] == "success"
    finally:
        box.kill()


def test_a_stdio_server_that_died_while_idle_is_restarted_for_the_next_run(make_app: Any) -> None:
    before = child_pids(os.getpid())
    app: InProcessApp = make_app(heartbeat=600)
    app.wait_ready()
    (demo_pid,) = child_pids(os.getpid()) - before  # the app's demo server, a child of this process
    assert run_to_end(app.client, "outlet_profile_v1", {"domain": "daily.example.com"})["status"] == "success"

    os.kill(demo_pid, signal.SIGKILL)
    # With no heartbeat, only the end of its pipe tells the app: it starts another in its place.
    wait_until(lambda: len(child_pids(os.getpid()) - before - {demo_pid}) == 1, 10, "a new demo server")
    run = run_to_end(app.client, "outlet_profile_v1", {"domain": "daily.example.com"})

    assert run["status"] == "success", run
    assert demo_pid not in child_pids(os.getpid())


@pytest.fixture
def black_hole() -> Iterator[str]:
    """An MCP url whose server accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"


def test_a_hanging_server_does_not_hold_up_steps_others_serve(
    tmp_path: Path, black_hole: str, make_app: Any
) -> None:
    # `black_hole` comes before `make_app`: the hanging server outlives the app, and only hangs.
    config = write_config(tmp_path / "mcp.json", {"demo": DEMO_STDIO, "hanging": {"url": black_hole}})
    folder = tmp_path / "scenarios"
    steps = [step(f"lookup_{n}", "lookup_outlet", domain="daily.example.com") for n in range(3)]
    write_scenario(folder, "demo_only", *steps)
    write_scenario(folder, "needs_hanging", step("echo", "echo", "hanging"))
    # Were each step to wait for the hanging server's handshake, each run would take 3 x 4 s.
    app: InProcessApp = make_app(mcp_config=config, scenarios=folder, connect_timeout=4)
    wait_until(lambda: app.get("/healthz").json()["servers"]["demo"]["state"] == "ready", 15, "the demo server")

    run_ids = [start_run(app.client, "demo_only")["run_id"] for _ in range(2)]
    runs = [wait_finished(app.client, run_id, timeout=3) for run_id in run_ids]

    assert [r["status"] for r in runs] == ["success", "success"]
    assert app.get("/healthz").json()["servers"]["hanging"]["state"] != "ready"
    failed = run_to_end(app.client, "needs_hanging")
    assert failed["status"] == "failed"
    assert "MCP server 'hanging'" in failed["steps"][0]["message"]
    assert "4s" in failed["steps"][0]["message"]
    # Listing the tools says at once which server cannot be reached, without another 4 s handshake.
    asked = time.monotonic()
    tools = app.get("/api/tools")
    assert time.monotonic() - asked < 3
    assert tools.status_code == 200
    assert tools.headers["stepline-servers-down"] == "hanging"


# --- Stdio servers never outlive Stepline ----------------------------------------------------------


def child_pids(pid: int) -> set[int]:
    """The live (not zombie) children of `pid`, read from /proc: no `ps`, which would be a child itself."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, parent = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(parent) == pid and state != "Z":
            children.add(int(stat.parent.name))
    return children


def running(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_stdio_servers_exit_with_stepline(tmp_path: Path, make_server: Any, sig: signal.Signals) -> None:
    config = write_config(
        tmp_path / "mcp.json",
        {"demo": DEMO_STDIO, "toolbox": {"command": sys.executable, "args": [str(SERVERS / "toolbox.py"), "stdio"]}},
    )
    server: StepServer = make_server("--mcp-config", str(config))
    children = child_pids(server.process.pid)
    assert len(children) == 2

    server.process.send_signal(sig)
    server.process.wait(timeout=10)

    wait_until(lambda: not any(running(pid) for pid in children), 5, f"stdio servers to exit after {sig.name}")


# --- stepline validate --------------------------------------------------------------------------------


def stepline_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "web", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "STEPLINE_DEMO_DELAY": "0", **(env or {})},
    )


def test_validate_passes_the_shipped_scenarios() -> None:
    result = stepline_cli("validate")

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""
    shipped = len(list((PROJECT_ROOT / "scenarios").glob("*.json")))
    assert f"{shipped} valid scenario(s), 0 problem(s)" in result.stderr


def test_validate_reports_every_problem_as_file_and_reason(tmp_path: Path) -> None:
    folder = tmp_path / "scenarios"
    write_scenario(folder, "good", step("lookup", "lookup_outlet", domain="daily.example.com"))
    (folder / "broken.json").write_text('{"schema_version": "1",', encoding="utf-8")
    write_scenario(folder, "unknown_tool", step("nope", "no_such_tool"))
    write_scenario(
        folder,
        "bad_literal",
        step("pick", "find_earliest_source", sources={"from": "input.sources"}, limit="lots"),
        step("list", "list_outlet_articles", domain="daily.example.com", newest_first={"value": "yes"}),
    )
    write_scenario(folder, "ambiguous", step("echo", "echo", text="which one?"))
    toolbox = {"command": sys.executable, "args": [str(SERVERS / "toolbox.py"), "stdio"]}
    config = write_config(tmp_path / "mcp.json", {"demo": DEMO_STDIO, "a": toolbox, "b": toolbox})

    result = stepline_cli("validate", "--scenarios", str(folder), "--mcp-config", str(config))

    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 5, result.stdout
    expected = {
        "broken.json": ["invalid JSON at line 1"],
        "unknown_tool.json": ["steps.0 (nope)", "unknown tool 'no_such_tool'"],
        "bad_literal.json": ["steps.0 (pick).input.limit", "'lots' is not of type 'integer'"],
        "ambiguous.json": ["steps.0 (echo)", "'a'", "'b'"],
    }
    for file, fragments in expected.items():
        matching = [line for line in lines if line.startswith(f"{file}: ")]
        assert matching, (file, result.stdout)
        assert all(fragment in " ".join(matching) for fragment in fragments), (file, matching)
    assert any(line.startswith("bad_literal.json: steps.1 (list).input.newest_first: 'yes'") for line in lines)
    assert not any(line.startswith("good.json") for line in lines)


def test_validate_reports_a_server_it_cannot_reach(tmp_path: Path) -> None:
    folder = tmp_path / "scenarios"
    write_scenario(folder, "remote", step("echo", "echo", text="hi"))
    config = write_config(tmp_path / "mcp.json", {"remote": {"url": f"http://127.0.0.1:{free_port()}/mcp"}})

    result = stepline_cli("validate", "--scenarios", str(folder), "--mcp-config", str(config))

    assert result.returncode == 1
    assert result.stdout.startswith("mcpServers.remote: server unreachable"), result.stdout


INTEGER_A = {"type": "integer"}
LITERAL_CHECKS: dict[str, tuple[dict[str, Any], dict[str, Any], list[tuple[str, str]]]] = {
    "fits": ({"properties": {"a": INTEGER_A}}, {"a": 3}, []),
    "wrong type": ({"properties": {"a": INTEGER_A}}, {"a": "x"}, [("a", "'x' is not of type 'integer'")]),
    "$ref to $defs": (
        {"properties": {"a": {"$ref": "#/$defs/A"}}, "$defs": {"A": INTEGER_A}},
        {"a": "x"},
        [("a", "'x' is not of type 'integer'")],
    ),
    "$ref to draft-07 definitions": (
        {"properties": {"a": {"$ref": "#/definitions/A"}}, "definitions": {"A": INTEGER_A}},
        {"a": "x"},
        [("a", "'x' is not of type 'integer'")],
    ),
    # An argument the schema does not describe is judged by its name, in web.checks.
    "undescribed input": ({"properties": {"a": INTEGER_A}, "additionalProperties": False}, {"b": "x"}, []),
    "extras described by additionalProperties": (
        {"properties": {"a": INTEGER_A}, "additionalProperties": INTEGER_A},
        {"b": "x"},
        [("b", "'x' is not of type 'integer'")],
    ),
    "extras described by patternProperties": (
        {"patternProperties": {"^n_": INTEGER_A}},
        {"n_1": "x"},
        [("n_1", "'x' is not of type 'integer'")],
    ),
}


@pytest.mark.parametrize("schema, literals, expected", LITERAL_CHECKS.values(), ids=LITERAL_CHECKS.keys())
def test_literal_inputs_are_checked_against_the_tools_schema(
    schema: dict[str, Any], literals: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    assert literal_input_errors({"type": "object", **schema}, literals) == expected


def test_a_tool_schema_with_a_broken_ref_is_reported_not_a_crash() -> None:
    schema = {"type": "object", "properties": {"a": {"$ref": "#/definitions/Missing"}}}

    [(key, message)] = literal_input_errors(schema, {"a": 1})

    assert key == "a"
    assert "cannot be checked" in message and "/definitions/Missing" in message


BROKEN_CONFIGS: dict[str, tuple[str, list[str]]] = {
    "invalid JSON": ('{"mcpServers": {"a": {"command": "x",}}}', ["mcp.json", "invalid JSON at line 1, column 38"]),
    "no mcpServers": ('{"servers": {}}', ["mcp.json", "mcpServers"]),
    "neither command nor url": ('{"mcpServers": {"a": {"args": []}}}', ["mcp.json", "mcpServers.a", "'command'"]),
    "unset variable": (
        '{"mcpServers": {"a": {"url": "http://h/mcp", "headers": {"X-Key": "${STEPLINE_TEST_UNSET}"}}}}',
        ["mcp.json", "mcpServers.a.headers.X-Key", "STEPLINE_TEST_UNSET is not set"],
    ),
    "url that is not http": ('{"mcpServers": {"a": {"url": "ftp://h/mcp"}}}', ["mcp.json", "mcpServers.a", "url"]),
    "every server disabled": (
        '{"mcpServers": {"a": {"command": "x", "disabled": true}}}',
        ["mcp.json", "every server in mcpServers is disabled"],
    ),
}


@pytest.mark.parametrize("content, says", BROKEN_CONFIGS.values(), ids=BROKEN_CONFIGS.keys())
def test_a_broken_mcp_config_exits_2_naming_file_and_key(tmp_path: Path, content: str, says: list[str]) -> None:
    config = tmp_path / "mcp.json"
    config.write_text(content, encoding="utf-8")

    result = stepline_cli("validate", "--mcp-config", str(config))

    assert result.returncode == 2, result.stdout + result.stderr
    message = result.stderr.strip().splitlines()[-1]
    for fragment in says:
        assert fragment in message, message


def test_a_config_copied_from_another_mcp_client_works(tmp_path: Path) -> None:
    """Other clients' keys are ignored (and named in the log); a disabled server is left alone."""
    config = tmp_path / "mcp.json"
    demo = {"command": sys.executable, "args": ["-m", "web.demo"], "cwd": str(PROJECT_ROOT)}
    config.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "demo": {**demo, "autoApprove": ["fetch_article"], "timeout": 60},
                    "off": {"command": "/no/such/server", "disabled": True, "env": {"K": "${STEPLINE_TEST_UNSET}"}},
                }
            }
        ),
        encoding="utf-8",
    )

    result = stepline_cli("validate", "--mcp-config", str(config))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "mcpServers.demo: ignoring autoApprove, timeout, which Stepline does not use" in result.stderr
    assert "off" not in result.stdout


def test_serve_refuses_a_broken_mcp_config(tmp_path: Path) -> None:
    config = tmp_path / "mcp.json"
    config.write_text('{"mcpServers": {"a": {}}}', encoding="utf-8")

    result = stepline_cli("serve", "--port", str(free_port()), "--mcp-config", str(config),
                          "--data-dir", str(tmp_path / "data"))

    assert result.returncode == 2
    assert "mcpServers.a" in result.stderr


def test_a_missing_mcp_config_file_exits_2(tmp_path: Path) -> None:
    result = stepline_cli("validate", "--mcp-config", str(tmp_path / "nope.json"))

    assert result.returncode == 2
    assert "nope.json" in result.stderr and "cannot read" in result.stderr

