"""`stepline mcp`: the SDK's own client starting the real command over stdio, in this process (the app's
lifespan without a listener, the history in the data directory) and as a bridge to a real `stepline serve`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from conftest import PROJECT_ROOT, StepServer, wait_until
from mcp.client import Client
from mcp.client.context import ClientRequestContext
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError
from test_tokens import create_token, token_cli

pytestmark = pytest.mark.anyio

CHECK = "story_origin_check_v2"  # declares an output; input {"url": ...}
ARTICLE = "https://signal.example/culture/lighthouse-library-explainer"
APPROVAL = "outlet_brief_approval_v2"  # waits for a person's approval before its last step
SHIPPED = {path.stem: json.loads(path.read_text()) for path in (PROJECT_ROOT / "scenarios").glob("*.json")}
MODES = ["legacy", "2026-07-28"]  # the initialize handshake, and the per-request envelope


def stepline_mcp(*args: str, env: dict[str, str] | None = None) -> StdioServerParameters:
    """`python -m web mcp ARGS`, as an MCP client's `mcpServers` entry would start it."""
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "web", "mcp", *args],
        cwd=PROJECT_ROOT,
        env={"STEPLINE_DEMO_DELAY": "0", "STEPLINE_DATA_DIR": os.environ["STEPLINE_DATA_DIR"], **(env or {})},
    )


@contextlib.asynccontextmanager
async def connected(params: StdioServerParameters, stderr: Path, **options: Any) -> AsyncIterator[Client]:
    with stderr.open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog), read_timeout_seconds=60, **options) as client:
            yield client


def texts(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


def links(result: types.CallToolResult) -> dict[str, str]:
    return {str(block.uri): block.mime_type or "" for block in result.content if isinstance(block, types.ResourceLink)}


def run_id_of(result: types.CallToolResult) -> str:
    [uri] = [uri for uri in links(result) if uri.startswith("stepline://runs/")]
    return uri.removeprefix("stepline://runs/")


@pytest.mark.parametrize("mode", MODES)
async def test_in_process_serves_the_scenarios_and_records_the_runs(
    tmp_path: Path, make_server: Callable[..., StepServer], mode: str
) -> None:
    data_dir = tmp_path / "data"
    params = stepline_mcp("--data-dir", str(data_dir), "--public-url", "https://portal.example/stepline")
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    async with connected(params, tmp_path / "stderr.log", mode=mode) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert set(tools) == set(SHIPPED)
        for scenario_id, scenario in SHIPPED.items():
            assert tools[scenario_id].input_schema == scenario["input_schema"]
        assert tools[CHECK].output_schema is not None

        result = await client.call_tool(CHECK, {"url": ARTICLE}, progress_callback=on_progress)
        assert not result.is_error, texts(result)
        assert result.structured_content is not None
        assert result.structured_content["title"] and result.structured_content["first_report"].startswith("https://")
        run_id = run_id_of(result)
        assert links(result) == {
            f"https://portal.example/stepline/runs/{run_id}": "text/html",
            f"https://portal.example/stepline/api/runs/{run_id}": "application/json",
            f"stepline://runs/{run_id}": "application/json",
        }
        assert progress and progress[-1][0] == progress[-1][1]  # every step ended
        assert any(message and message.startswith("step 1/") for _, _, message in progress)

        refused = await client.call_tool(CHECK, {"url": 42})
        assert refused.is_error and "url" in texts(refused)
        with pytest.raises(MCPError) as unknown:
            await client.call_tool("no_such_scenario", {})
        assert unknown.value.code == types.INVALID_PARAMS and "no_such_scenario" in str(unknown.value)

    # The client closed stdin: the command ended and freed the data directory, whose history has the run.
    server = make_server("--data-dir", str(data_dir))
    run = httpx.get(f"{server.url}/api/runs/{run_id}", timeout=10).json()
    assert run["status"] == "success" and run["scenario_id"] == CHECK
    assert run["output"] == result.structured_content
    assert run["started_by"]["source"] == "local" and run["started_by"]["client"].startswith("mcp ")


def test_stdout_carries_nothing_but_json_rpc_and_stdin_closing_ends_it(tmp_path: Path) -> None:
    messages = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "1"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": CHECK, "arguments": {"url": ARTICLE}}},
    ]
    stderr = tmp_path / "stderr.log"
    with (
        stderr.open("w") as errlog,
        subprocess.Popen(
            [sys.executable, "-m", "web", "mcp", "--data-dir", str(tmp_path / "data")],
            cwd=PROJECT_ROOT,
            env={**os.environ, "STEPLINE_DEMO_DELAY": "0"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errlog,
            text=True,
        ) as process,
    ):
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write("".join(json.dumps(message) + "\n" for message in messages))
            process.stdin.flush()
            lines: list[str] = []
            while not any(json.loads(line).get("id") == 2 for line in lines):
                line = process.stdout.readline()
                assert line, stderr.read_text()
                lines.append(line)
            process.stdin.close()
            lines += process.stdout.readlines()
            assert process.wait(30) == 0, stderr.read_text()
        finally:
            if process.poll() is None:
                process.kill()
    answers = [json.loads(line) for line in lines]  # each line on stdout is one JSON-RPC message
    assert all(answer["jsonrpc"] == "2.0" for answer in answers)
    [call] = [answer for answer in answers if answer.get("id") == 2]
    assert call["result"]["structuredContent"]["title"]


def test_a_data_directory_in_use_is_refused_naming_the_way_out(
    tmp_path: Path, make_server: Callable[..., StepServer]
) -> None:
    data_dir = tmp_path / "data"
    make_server("--data-dir", str(data_dir))
    done = subprocess.run(
        [sys.executable, "-m", "web", "mcp", "--data-dir", str(data_dir)],
        cwd=PROJECT_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert "in use by another Stepline process" in done.stderr and "stepline mcp --server URL" in done.stderr


# The bridge to a running Stepline


@pytest.fixture
def guarded_server(tmp_path: Path, make_server: Callable[..., StepServer]) -> tuple[StepServer, Path]:
    """A server that refuses requests naming nobody, so the bridge's token is what lets it in."""
    data_dir = tmp_path / "served"
    create_token(data_dir, "admin-ci", "admin", "--expires", "never")
    server = make_server("--host", "0.0.0.0", "--allowed-hosts", "127.0.0.1", "--data-dir", str(data_dir))
    return server, data_dir


def api(server: StepServer, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=10)


@pytest.mark.parametrize("mode", MODES)
async def test_the_bridge_relays_calls_progress_and_questions(
    tmp_path: Path, guarded_server: tuple[StepServer, Path], mode: str
) -> None:
    server, data_dir = guarded_server
    token = create_token(data_dir, "desk-agent", "operator")
    params = stepline_mcp("--server", server.url, "--token-env", "DESK_TOKEN", env={"DESK_TOKEN": token})
    progress: list[str | None] = []
    asked: list[str] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(message)

    async def elicit(context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"headline": "Daily, in brief"})

    async with connected(params, tmp_path / "stderr.log", mode=mode, elicitation_callback=elicit) as client:
        assert {tool.name for tool in (await client.list_tools()).tools} == set(SHIPPED)
        result = await client.call_tool(CHECK, {"url": ARTICLE}, progress_callback=on_progress)
        assert not result.is_error, texts(result)
        run_id = run_id_of(result)
        assert f"{server.url}/runs/{run_id}" in links(result)  # Stepline's own address, as the bridge reached it
        assert any(message and message.startswith("step 1/") for message in progress)

        approved = await client.call_tool(APPROVAL, {"domain": "daily.example.com"})
        assert not approved.is_error, texts(approved)
        assert asked and asked[0].startswith("Write a brief on ")
        assert approved.structured_content is not None

        refused = await client.call_tool(CHECK, {})
        assert refused.is_error and "url" in texts(refused)

    with api(server, token) as stepline:
        run = stepline.get(f"/api/runs/{run_id}").json()
    assert run["status"] == "success"
    assert run["started_by"]["name"] == "desk-agent" and run["started_by"]["source"] == "token"


@pytest.mark.parametrize("mode", MODES)
async def test_a_call_cancelled_through_the_bridge_cancels_its_run(
    tmp_path: Path, guarded_server: tuple[StepServer, Path], mode: str
) -> None:
    server, data_dir = guarded_server
    token = create_token(data_dir, "desk-agent", "operator")
    params = stepline_mcp("--server", server.url, env={"STEPLINE_TOKEN": token})

    def waiting_runs() -> list[dict[str, Any]]:
        with api(server, token) as stepline:
            return stepline.get("/api/runs", params={"scenario_id": APPROVAL, "status": "waiting"}).json()["runs"]

    # A client that cannot answer: the approval waits in the pages, and the call with it, until cancelled.
    async with connected(params, tmp_path / "stderr.log", mode=mode) as client:
        async with anyio.create_task_group() as calls:

            async def call() -> None:
                await client.call_tool(APPROVAL, {"domain": "daily.example.com"})

            calls.start_soon(call)
            await anyio.to_thread.run_sync(lambda: wait_until(waiting_runs, 30, "the run to wait for approval"))
            [waiting] = waiting_runs()
            calls.cancel_scope.cancel()

    def cancelled() -> bool:
        with api(server, token) as stepline:
            return stepline.get(f"/api/runs/{waiting['run_id']}").json()["status"] == "cancelled"

    wait_until(cancelled, 30, "the run to be cancelled")


def bridge(server_url: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "web", "mcp", "--server", server_url, *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_bridge_refused_or_unreachable_exits_1_saying_why(guarded_server: tuple[StepServer, Path]) -> None:
    server, _ = guarded_server

    wrong = bridge(server.url, env={"STEPLINE_TOKEN": "stl_" + "x" * 43})
    assert wrong.returncode == 1 and wrong.stdout == ""
    assert wrong.stderr.startswith(f"stepline mcp: Stepline at {server.url}/mcp refused the token: Invalid token")
    assert "Traceback" not in wrong.stderr

    nobody = bridge(server.url, env={"STEPLINE_TOKEN": ""})
    assert nobody.returncode == 1 and "asks for an API token" in nobody.stderr and "STEPLINE_TOKEN" in nobody.stderr

    unset = bridge(server.url, "--token-env", "NO_SUCH_TOKEN_VARIABLE")
    assert unset.returncode == 1 and "NO_SUCH_TOKEN_VARIABLE: that environment variable is not set" in unset.stderr

    server.stop()
    gone = bridge(server.url, env={"STEPLINE_TOKEN": "stl_" + "x" * 43})
    assert gone.returncode == 1 and gone.stderr.startswith(f"stepline mcp: cannot reach Stepline at {server.url}/mcp")
    assert "Traceback" not in gone.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--server", "127.0.0.1:8000"], "give Stepline's address as a URL"),
        (["--server", "http://127.0.0.1:8000", "--data-dir", "x"], "--data-dir: only for scenarios served in this"),
        (["--token-env", "T"], "--token-env: only with --server"),
    ],
)
def test_bad_options_exit_2_naming_them(args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "web", "mcp", *args],
        cwd=PROJECT_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and message in done.stderr, done.stderr


def process_serving(data_dir: Path) -> int:
    """The pid of the `stepline mcp` process using `data_dir` (the SDK's stdio client does not say it)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            words = cmdline.read_bytes().split(b"\0")
            if b"mcp" in words and str(data_dir).encode() in words:
                return int(cmdline.parent.name)
    raise AssertionError(f"no stepline mcp process on {data_dir}")


async def test_sigterm_answers_the_calls_and_leaves_a_waiting_run_waiting(
    tmp_path: Path, make_server: Callable[..., StepServer]
) -> None:
    data_dir = tmp_path / "data"
    params = stepline_mcp("--data-dir", str(data_dir))
    answers: list[types.CallToolResult] = []

    async with connected(params, tmp_path / "stderr.log") as client:

        async def waiting_run() -> str | None:
            for resource in (await client.list_resources()).resources:
                snapshot = await client.read_resource(str(resource.uri))
                [content] = snapshot.contents
                assert isinstance(content, types.TextResourceContents)
                if json.loads(content.text)["status"] == "waiting":
                    return str(resource.uri).removeprefix("stepline://runs/")
            return None

        async with anyio.create_task_group() as calls:

            async def call() -> None:
                answers.append(await client.call_tool(APPROVAL, {"domain": "daily.example.com"}))

            calls.start_soon(call)
            with anyio.fail_after(30):
                while (run_id := await waiting_run()) is None:
                    await anyio.sleep(0.1)
            os.kill(process_serving(data_dir), signal.SIGTERM)

    # The call was answered, the process ended with stdin still open, and the run waits on for its approval.
    [answer] = answers
    assert answer.is_error and f"Stepline stopped before run {run_id} ended" in texts(answer)
    server = make_server("--data-dir", str(data_dir))
    run = httpx.get(f"{server.url}/api/runs/{run_id}", timeout=10).json()
    assert run["status"] == "waiting" and run["pending_requests"][0]["kind"] == "approval"


async def test_a_token_revoked_mid_session_ends_the_bridge_saying_so(
    tmp_path: Path, guarded_server: tuple[StepServer, Path]
) -> None:
    server, data_dir = guarded_server
    token = create_token(data_dir, "desk-agent", "operator")
    params = stepline_mcp("--server", server.url, env={"STEPLINE_TOKEN": token})
    stderr = tmp_path / "stderr.log"

    async with connected(params, stderr, mode="legacy") as client:
        assert (await client.list_tools()).tools
        assert token_cli(data_dir, "revoke", "desk-agent").returncode == 0
        with pytest.raises(MCPError) as ended:
            await client.call_tool(CHECK, {"url": ARTICLE})
        # The bridge ended at once, with the client still connected, not when its call timed out.
        assert ended.value.code == types.CONNECTION_CLOSED

    said = stderr.read_text()
    assert f"stepline mcp: Stepline at {server.url}/mcp refused the token: Invalid token" in said
    assert "Traceback" not in said
