"""A scenario called as an MCP tool and cancelled, or abandoned, by its caller: what becomes of the run.

A real `stepline serve` with the tests' workflow server (tests/servers/workflow.py), whose `sleep` notes the
calls its client cancelled; the SDK's client calls over streamable HTTP with an API token ("agent").
Cancelling the call cancels the run, recorded as cancelled by the caller, and the inner tool call with it:
on protocol 2025 the client sends `notifications/cancelled`, on 2026-07-28 it closes the call's response.
A caller that goes away without a word: on 2026-07-28 its call's response closes, which cancels the run;
on 2025 the run goes on (the session outlives a dropped stream), unless the session itself ends.
"""

from __future__ import annotations

import getpass
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from conftest import PROJECT_ROOT, StepServer
from mcp import Client
from mcp_callers import MODES, Slow, connected, in_flight, serve_home, stepline_mcp, text_of, the_run
from mcp_process import workflow_home
from runs import get_run, run_to_end, wait_finished
from test_tokens import create_token

pytestmark = pytest.mark.anyio

AGENT = {"name": "agent", "source": "token"}
CALL_SECONDS = 30
# Long enough that a run is cancelled, not finished, when a test cancels its call.
NAP_SECONDS = 60
# How long a client may go on showing a question after its call has ended, before the test calls it forgotten.
WITHDRAWN_SECONDS = 5


def v2(scenario_id: str, *steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"schema_version": "2", "scenario_id": scenario_id, "name": scenario_id, "steps": list(steps), **extra}


SCENARIOS = [
    v2(
        "nap",
        {
            "name": "nap",
            "tool": "sleep",
            "input": {"seconds": "{{ input.seconds }}", "label": "nap", "group": "{{ run.id }}"},
        },
        input_schema={"type": "object", "properties": {"seconds": {"type": "number", "default": NAP_SECONDS}}},
    ),
    v2(
        "cancelled_calls",
        {"name": "look", "tool": "cancellations", "input": {"group": "{{ input.run_id }}"}},
        input_schema={"type": "object", "required": ["run_id"], "properties": {"run_id": {"type": "string"}}},
        output={"calls": "{{ steps.look.output.cancelled }}"},
    ),
    v2(
        "print_run",
        {"name": "approve", "type": "approval", "message": "Print the run?"},
    ),
]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    home = tmp_path_factory.mktemp("mcp-cancel")
    folder, config = workflow_home(home, SCENARIOS)
    return folder, config, home / "data"


@pytest.fixture(scope="module")
def token(home: tuple[Path, Path, Path]) -> str:
    return create_token(home[2], "agent", "operator")


@pytest.fixture(scope="module")
def server(home: tuple[Path, Path, Path], token: str) -> Iterator[StepServer]:
    started = serve_home(home)
    yield started
    started.stop()


def cancelled_calls(server: StepServer, run_id: str) -> list[str]:
    """The tools of `run_id`'s calls that the workflow server saw cancelled by Stepline."""
    run = run_to_end(server.url, "cancelled_calls", {"run_id": run_id})
    assert run["status"] == "success", run["message"]
    return [call["tool"] for call in run["output"]["calls"]]


@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
async def test_cancelling_the_call_cancels_its_run_and_the_tool_call(server: StepServer, token: str, mode: str) -> None:
    started = anyio.Event()

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        if message == "step 1/1 nap: started":
            started.set()

    async with connected(server, token, mode) as client:
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: client.call_tool("nap", {}, progress_callback=progress))
            with anyio.fail_after(CALL_SECONDS):
                await started.wait()
            run_id = the_run(server, "nap", "running")
            group.cancel_scope.cancel()
        # Still connected: the call's cancellation did it, not the session's end.
        run = await anyio.to_thread.run_sync(wait_finished, server.url, run_id)

    assert run["status"] == "cancelled"
    assert run["cancelled_by"] == AGENT
    assert run["started_by"]["client"] == "test-agent 1.0"
    assert [step["status"] for step in run["steps"]] == ["cancelled"]
    assert cancelled_calls(server, run_id) == ["sleep"]


async def cancel_while_asked(server: StepServer, token: str) -> tuple[dict[str, Any], bool]:
    """Call on protocol 2025 and cancel the call while the client is asked: (the run's snapshot once it has
    ended, whether the client's question was withdrawn while it was still connected)."""
    slow = Slow()
    async with connected(server, token, "legacy", **slow.callbacks()) as client:
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: client.call_tool("print_run", {}))
            with anyio.fail_after(CALL_SECONDS):
                await slow.shown.wait()
            run_id = the_run(server, "print_run", "waiting")
            group.cancel_scope.cancel()
        run = await anyio.to_thread.run_sync(wait_finished, server.url, run_id)
        with anyio.move_on_after(WITHDRAWN_SECONDS):
            await slow.withdrawn.wait()
        return run, slow.withdrawn.is_set()


async def test_cancelling_a_2025_call_while_the_client_is_asked_cancels_the_run(server: StepServer, token: str) -> None:
    run, _ = await cancel_while_asked(server, token)

    assert run["status"] == "cancelled"
    assert run["cancelled_by"] == AGENT


async def test_cancelling_a_2025_call_while_the_client_is_asked_withdraws_the_question(
    server: StepServer, token: str
) -> None:
    _, withdrawn = await cancel_while_asked(server, token)

    assert withdrawn


async def test_a_run_cancelled_in_the_page_while_the_client_is_asked_withdraws_the_question(
    server: StepServer, token: str
) -> None:
    slow = Slow()
    async with connected(server, token, "legacy", **slow.callbacks()) as client:
        async with in_flight(client, "print_run") as results:
            await slow.shown.wait()
            run_id = the_run(server, "print_run", "waiting")
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as web:
                cancelled = await web.post(f"/api/runs/{run_id}/cancel")
            assert cancelled.status_code in (200, 202), cancelled.text
        # Still connected: the question was withdrawn as the call answered, not as the session closed.
        with anyio.fail_after(WITHDRAWN_SECONDS):
            await slow.withdrawn.wait()

    [result] = results
    assert result.is_error
    assert "was cancelled (by anonymous)" in text_of(result)


async def test_a_2026_call_given_up_while_the_client_is_asked_leaves_the_run_waiting(
    server: StepServer, token: str
) -> None:
    """Between the legs of a 2026-07-28 call no request is open: nothing tells Stepline the caller gave up."""
    slow = Slow()
    async with connected(server, token, "auto", **slow.callbacks()) as client:
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: client.call_tool("print_run", {}))
            with anyio.fail_after(CALL_SECONDS):
                await slow.shown.wait()
            run_id = the_run(server, "print_run", "waiting")
            group.cancel_scope.cancel()

    # The question waits for a person in the page or the API, as any; the run can be cancelled there.
    run = get_run(server.url, run_id)
    assert run["status"] == "waiting"
    assert len(run["pending_requests"]) == 1
    response = httpx.post(f"{server.url}/api/runs/{run_id}/cancel")
    assert response.status_code in (200, 202), response.text
    assert wait_finished(server.url, run_id)["status"] == "cancelled"


CALLER = """
import sys, anyio, mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

async def main(url, token, mode, seconds):
    async def progress(done, total, message):
        print(message, flush=True)
    async with create_mcp_http_client(headers={"Authorization": "Bearer " + token}) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            await client.call_tool("nap", {"seconds": float(seconds)}, progress_callback=progress)

anyio.run(main, *sys.argv[1:])
"""


@pytest.mark.parametrize(
    ("mode", "seconds", "ends"),
    [("legacy", 2, "success"), ("auto", NAP_SECONDS, "cancelled")],
    ids=["2025: the run goes on", "2026-07-28: the run is cancelled"],
)
def test_a_caller_killed_mid_call(server: StepServer, token: str, mode: str, seconds: float, ends: str) -> None:
    caller = subprocess.Popen(
        [sys.executable, "-c", CALLER, f"{server.url}/mcp", token, mode, str(seconds)],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert caller.stdout is not None
    with caller.stdout:
        try:
            assert caller.stdout.readline().strip() == "step 1/1 nap: started"
            run_id = the_run(server, "nap", "running")
        finally:
            caller.send_signal(signal.SIGKILL)  # no notifications/cancelled, no session DELETE: gone
            caller.wait()

    run = wait_finished(server.url, run_id, timeout=CALL_SECONDS)
    assert run["status"] == ends, run["message"]
    if ends == "cancelled":
        assert run["cancelled_by"] == AGENT
        assert cancelled_calls(server, run_id) == ["sleep"]
    else:
        assert run["cancelled_by"] is None
        assert run["steps"][0]["output"] == "nap"


HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def test_a_2025_session_ended_mid_call_cancels_the_run(server: StepServer, token: str) -> None:
    """A client that ends its session (DELETE /mcp) with a call in flight, having sent no cancellation."""
    url = f"{server.url}/mcp"
    with httpx.Client(timeout=10, headers={"Authorization": f"Bearer {token}"}) as http:
        hello = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}
        initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello}
        opened = http.post(url, headers=HEADERS, json=initialize)
        assert opened.status_code == 200, opened.text
        session = {**HEADERS, "Mcp-Session-Id": opened.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
        http.post(url, headers=session, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        call = {"name": "nap", "arguments": {}, "_meta": {"progressToken": "nap"}}
        request = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call}
        with http.stream("POST", url, headers=session, json=request) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:") and json.loads(line[5:])["params"]["message"] == "step 1/1 nap: started":
                    break
            run_id = the_run(server, "nap", "running")
            ended = http.delete(url, headers=session)
            assert ended.status_code == 200, ended.text

    run = wait_finished(server.url, run_id, timeout=CALL_SECONDS)
    assert run["status"] == "cancelled"
    assert run["cancelled_by"] == AGENT
    assert cancelled_calls(server, run_id) == ["sleep"]


@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
async def test_over_stdio_cancelling_the_call_cancels_its_run(
    home: tuple[Path, Path, Path], tmp_path: Path, mode: str
) -> None:
    folder, config, _ = home
    command = stepline_mcp(folder, config, tmp_path / "data")
    started = anyio.Event()

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        if message == "step 1/1 nap: started":
            started.set()

    async with Client(command, mode=mode) as client:
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: client.call_tool("nap", {}, progress_callback=progress))
            with anyio.fail_after(CALL_SECONDS):
                await started.wait()
            group.cancel_scope.cancel()
        [listed, *_] = (await client.list_resources()).resources
        deadline = time.monotonic() + CALL_SECONDS
        while True:
            [contents] = (await client.read_resource(str(listed.uri))).contents
            assert isinstance(contents, types.TextResourceContents)
            run = json.loads(contents.text)
            if run["status"] != "running" or time.monotonic() > deadline:
                break
            await anyio.sleep(0.05)

    assert run["scenario_id"] == "nap"
    assert run["status"] == "cancelled"
    assert run["cancelled_by"] == {"name": getpass.getuser(), "source": "local"}
