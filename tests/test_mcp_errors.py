"""What the MCP pool makes of a server's errors, silences and deaths, against a real server.

The server is `tests/servers/faults.py` (built with the SDK) over stdio and streamable HTTP, driven
through `McpPool` as the runner drives it. Its `whoami` tool tells the process and the number of
handshakes it has answered, so "the session was kept" is what the server saw: no new process, no new
handshake.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp_process import SERVERS, HttpMcpServer
from runs import run_to_end

from web.mcp_config import HttpServer, ServerConfig, StdioServer
from web.mcp_pool import McpPool
from web.mcp_server import CallTimeout, ServerUnavailable, ToolCallError

FAULTS = SERVERS / "faults.py"
TOKEN = "Bearer faults-token"
# Generous: these tests wait for states, never for a time to pass.
SETTLE_SECONDS = 15

pytestmark = pytest.mark.anyio


class FaultsOverHttp(HttpMcpServer):
    """`tests/servers/faults.py` over streamable HTTP, with the token it is sent."""

    def __init__(self, log_dir: Path) -> None:
        super().__init__("faults.py", "streamable-http", log_dir)

    @property
    def config(self) -> HttpServer:
        return HttpServer(url=self.url, headers={"Authorization": TOKEN})


@pytest.fixture
def http_faults(tmp_path: Path) -> Iterator[FaultsOverHttp]:
    server = FaultsOverHttp(tmp_path).start()
    yield server
    server.kill()


STDIO = StdioServer(command=sys.executable, args=[str(FAULTS), "stdio"])


@pytest.fixture(params=["stdio", "streamable-http"])
def faults(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerConfig]:
    """The faults server's config, once per transport."""
    if request.param == "stdio":
        yield STDIO
        return
    server = FaultsOverHttp(tmp_path).start()
    yield server.config
    server.kill()


@asynccontextmanager
async def pool_of(
    config: ServerConfig, *, heartbeat: float = 5.0, connect_timeout: float = 10.0
) -> AsyncIterator[McpPool]:
    async with McpPool({"faults": config}, connect_timeout=connect_timeout, heartbeat=heartbeat) as pool:
        await pool.settle()
        assert health(pool) == ("ready", None)
        yield pool


def health(pool: McpPool) -> tuple[str, str | None]:
    server = pool.health()["faults"]
    return server["state"], server["error"]


async def call(pool: McpPool, tool: str, timeout: float = 10, **arguments: Any) -> Any:
    result = await pool.call("faults", tool, arguments, timeout=timeout)
    assert not result.is_error, result
    return result.structured_content


async def failure(pool: McpPool, tool: str, timeout: float = 10, **arguments: Any) -> ToolCallError:
    with pytest.raises(ToolCallError) as caught:
        await pool.call("faults", tool, arguments, timeout=timeout)
    return caught.value


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = SETTLE_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.02)


async def in_flight(pool: McpPool, tool: str, timeout: float = 30, **arguments: Any) -> asyncio.Task[Any]:
    """A call started in the background, returned once the server has begun it (its first progress)."""
    begun = asyncio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        begun.set()

    task = asyncio.create_task(pool.call("faults", tool, arguments, timeout=timeout, on_progress=on_progress))
    waiting = asyncio.create_task(begun.wait())
    await asyncio.wait([task, waiting], return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    assert begun.is_set(), f"'{tool}' ended before it began: {task.exception()!r}"
    return task


# --- Errors the server answers --------------------------------------------------------------------------

ANSWERS = {
    "-32001, the code of the SDK's own timeout": (-32001, "boom"),
    "-32000, the code of the SDK's closed connection": (-32000, "Connection closed"),
    "a code of the server's own": (4242, "no widgets today"),
}


async def test_closing_the_pool_waits_for_a_server_slow_to_exit() -> None:
    # A server that lingers after its client has gone (here 1.5 s) is still reaped: closing the pool
    # waits out the SDK's bounded shutdown (close stdin, a grace period, then kill) instead of
    # cutting it short, which would leave the process running.
    slow_exit = StdioServer(
        command=sys.executable, args=[str(FAULTS), "stdio"], env={**os.environ, "FAULTS_EXIT_DELAY": "1.5"}
    )
    async with pool_of(slow_exit) as pool:
        pid = (await call(pool, "whoami"))["pid"]
    assert not Path(f"/proc/{pid}").exists() or "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text()


@pytest.mark.parametrize("code, message", ANSWERS.values(), ids=ANSWERS.keys())
async def test_an_error_the_server_answers_is_its_message_and_code_and_keeps_the_session(
    faults: ServerConfig, code: int, message: str
) -> None:
    async with pool_of(faults) as pool:
        before = await call(pool, "whoami")

        error = await failure(pool, "answer_error", code=code, message=message)

        assert str(error) == f"MCP server 'faults' answered with an error: {message} (code {code})"
        assert not isinstance(error, ServerUnavailable | CallTimeout)
        assert health(pool) == ("ready", None)
        after = await call(pool, "whoami")
        assert (after["pid"], after["handshakes"]) == (before["pid"], before["handshakes"])


async def test_an_error_answer_does_not_fail_a_concurrent_call(faults: ServerConfig) -> None:
    async with pool_of(faults) as pool:
        nap = await in_flight(pool, "nap", seconds=0.5)

        error = await failure(pool, "answer_error", code=-32000, message="Connection closed")

        assert "answered with an error" in str(error)
        result = await nap
        assert not result.is_error, result
        assert health(pool) == ("ready", None)


async def test_an_error_message_on_several_lines_is_one_line() -> None:
    async with pool_of(STDIO) as pool:
        error = await failure(pool, "answer_error", code=7, message="first line\nsecond  line")

    assert str(error) == "MCP server 'faults' answered with an error: first line second line (code 7)"


# --- Silence: a tool that never answers, a server that answers nothing -------------------------------------


async def test_a_tool_that_never_answers_times_out_is_cancelled_and_keeps_the_session(faults: ServerConfig) -> None:
    async with pool_of(faults) as pool:
        before = await call(pool, "whoami")

        error = await failure(pool, "hang", timeout=0.5)

        assert isinstance(error, CallTimeout)
        assert str(error) == "'hang' on MCP server 'faults' did not answer within 0.5s"
        assert health(pool) == ("ready", None)
        # The server was told to stop (notifications/cancelled), on the same session.
        for _ in range(100):
            after = await call(pool, "whoami")
            if after["cancelled"] > before["cancelled"]:
                break
            await asyncio.sleep(0.05)
        assert after["cancelled"] == before["cancelled"] + 1
        assert (after["pid"], after["handshakes"]) == (before["pid"], before["handshakes"])


async def test_an_unreadable_reply_is_named_when_its_call_times_out() -> None:
    # The SDK drops a line it cannot parse, so the call can only time out; its message says why.
    nasty = StdioServer(command=sys.executable, args=[str(SERVERS / "nasty.py")])
    async with pool_of(nasty) as pool:
        error = await failure(pool, "garbled", timeout=0.5)

        assert isinstance(error, CallTimeout)
        message = str(error)
        assert message.startswith("'garbled' on MCP server 'faults' did not answer within 0.5s; meanwhile it sent ")
        assert "a message that could not be read (" in message and "Invalid JSON" in message, message
        # Nothing else was harmed: the same session answers the next call.
        assert (await pool.call("faults", "echo", {"value": 1}, timeout=5)).structured_content == {"value": 1}
        assert health(pool) == ("ready", None)


async def test_a_frozen_server_is_not_responding_and_comes_back_after_the_call(faults: ServerConfig) -> None:
    async with pool_of(faults, heartbeat=0.1) as pool:
        before = await call(pool, "whoami")
        frozen = asyncio.create_task(failure(pool, "freeze", timeout=1, seconds=2))

        await eventually(lambda: health(pool)[0] != "ready", "the heartbeat to notice the frozen server")

        assert health(pool) == ("down", "not responding (no answer for 0.3s)")
        error = await frozen
        assert isinstance(error, CallTimeout)
        assert str(error) == "'freeze' on MCP server 'faults' did not answer within 1s"
        # Nothing waits on it any more: a fresh session replaces the silent one.
        await eventually(lambda: health(pool)[0] == "ready", "a new session")
        after = await call(pool, "whoami")
        assert after["handshakes"] > before["handshakes"] or after["pid"] != before["pid"]


async def test_a_server_not_responding_refuses_new_calls_and_keeps_the_session_for_the_call_in_flight(
    http_faults: FaultsOverHttp,
) -> None:
    async with pool_of(http_faults.config, heartbeat=0.1, connect_timeout=0.5) as pool:
        before = await call(pool, "whoami")
        frozen = asyncio.create_task(pool.call("faults", "freeze", {"seconds": 2}, timeout=30))
        await eventually(lambda: health(pool)[0] != "ready", "the heartbeat to notice the frozen server")

        error = await failure(pool, "whoami")

        assert isinstance(error, ServerUnavailable)
        assert str(error) == "MCP server 'faults' is unavailable: not responding (no answer for 0.3s)"
        # The server answers again: the call waiting on it succeeds, on the same session.
        result = await frozen
        assert not result.is_error, result
        assert health(pool) == ("ready", None)
        after = await call(pool, "whoami")
        assert (after["pid"], after["handshakes"]) == (before["pid"], before["handshakes"])


# --- The transport ends -------------------------------------------------------------------------------


async def test_a_stdio_server_killed_mid_call_fails_the_call_and_is_started_again() -> None:
    async with pool_of(STDIO) as pool:
        before = await call(pool, "whoami")
        nap = await in_flight(pool, "nap", seconds=30)

        os.kill(before["pid"], signal.SIGKILL)

        with pytest.raises(ServerUnavailable) as caught:
            await nap
        assert str(caught.value) == "MCP server 'faults' closed the connection during the call"
        after = await call(pool, "whoami")
        assert after["pid"] != before["pid"]
        assert health(pool) == ("ready", None)


async def test_an_http_server_killed_mid_call_fails_the_call_and_is_reconnected(
    http_faults: FaultsOverHttp,
) -> None:
    async with pool_of(http_faults.config, connect_timeout=3) as pool:
        before = await call(pool, "whoami")
        nap = await in_flight(pool, "nap", seconds=30)

        http_faults.kill()

        with pytest.raises(ServerUnavailable) as caught:
            await nap
        assert str(caught.value) == "MCP server 'faults' closed the connection during the call"
        await eventually(lambda: health(pool)[0] == "down", "the lost server to be seen down")
        http_faults.start()  # the same port
        after = await call(pool, "whoami")
        assert after["pid"] != before["pid"]
        assert after["authorization"] == TOKEN


# --- Our own event loop is busy -------------------------------------------------------------------------


async def blocked(pool: McpPool, heartbeat: float, nap: asyncio.Task[Any]) -> set[str]:
    """The loop blocked for three heartbeats at a time, running between the blocks just long enough
    to send a ping, not to read its answer. Returns the server states seen meanwhile."""
    states = set()
    for _ in range(3):
        time.sleep(heartbeat * 3)
        states.add(health(pool)[0])
        await asyncio.sleep(0.01)
    return states


async def crowded(pool: McpPool, heartbeat: float, nap: asyncio.Task[Any]) -> set[str]:
    """The loop crowded, as by hundreds of streams rendering: every turn of it takes two heartbeats,
    so an answer that needs a few turns to be read comes many heartbeats after its question. It stays
    so a while after the call in flight has ended. Returns the server states seen meanwhile."""
    states = set()

    async def busy() -> None:
        turns_after_the_call = 10
        while turns_after_the_call:
            time.sleep(heartbeat / 10)
            states.add(health(pool)[0])
            await asyncio.sleep(0)
            turns_after_the_call -= nap.done()

    await asyncio.gather(*(busy() for _ in range(20)))
    return states


@pytest.mark.parametrize("load, heartbeat", [(blocked, 0.1), (crowded, 0.05)], ids=["blocked", "crowded"])
async def test_a_busy_event_loop_costs_neither_the_call_in_flight_nor_the_session(
    faults: ServerConfig,
    load: Callable[[McpPool, float, asyncio.Task[Any]], Awaitable[set[str]]],
    heartbeat: float,
) -> None:
    async with pool_of(faults, heartbeat=heartbeat) as pool:
        before = await call(pool, "whoami")
        nap = await in_flight(pool, "nap", seconds=0.5 if load is crowded else 1)

        states = await load(pool, heartbeat, nap)

        assert states == {"ready"}
        result = await nap
        assert not result.is_error, result
        assert health(pool) == ("ready", None)
        after = await call(pool, "whoami")
        assert (after["pid"], after["handshakes"]) == (before["pid"], before["handshakes"])


# --- End to end: what a run shows -----------------------------------------------------------------------


def test_a_run_shows_the_servers_error_and_the_server_stays_ready(tmp_path: Path, make_app: Any) -> None:
    config = tmp_path / "mcp.json"
    faults = {"command": sys.executable, "args": [str(FAULTS), "stdio"]}
    config.write_text(json.dumps({"mcpServers": {"faults": faults}}))
    folder = tmp_path / "scenarios"
    folder.mkdir()
    for scenario_id, steps in {
        "refused": [{"name": "ask", "tool": "answer_error", "input": {"code": -32001, "message": "boom"}}],
        "fine": [{"name": "who", "tool": "whoami", "input": {}}],
    }.items():
        scenario = {"schema_version": "1", "scenario_id": scenario_id, "name": scenario_id, "steps": steps}
        (folder / f"{scenario_id}.json").write_text(json.dumps(scenario))
    app = make_app(mcp_config=config, scenarios=folder)

    run = run_to_end(app.client, "refused")

    assert run["status"] == "failed"
    [step] = run["steps"]
    assert step["status"] == "failed"
    assert step["message"] == "MCP server 'faults' answered with an error: boom (code -32001)"
    assert run["message"] == f"Step 'ask' failed: {step['message']}"
    assert app.get("/healthz").json()["servers"]["faults"]["state"] == "ready"
    assert run_to_end(app.client, "fine")["steps"][0]["output"]["handshakes"] == 1
