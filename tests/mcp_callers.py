"""The SDK's MCP client as the MCP tests drive it: connected to a Stepline with a token, calling in the
background, answering questions through callbacks."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
from conftest import PROJECT_ROOT, StepServer, start_server, wait_until
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

# The two protocol eras, as the SDK client is told to speak them.
MODES = {"2025": "legacy", "2026-07-28": "auto"}
# Long enough for any machine, short of hanging the suite.
CALL_SECONDS = 30


def serve_home(home: tuple[Path, Path, Path]) -> StepServer:
    """A `stepline serve` of (scenario folder, mcpServers file, data directory)."""
    folder, config, data = home
    return start_server(data.parent, "--scenarios", str(folder), "--mcp-config", str(config), "--data-dir", str(data))


@contextlib.asynccontextmanager
async def connected(server: StepServer, token: str, mode: str, **callbacks: Any) -> AsyncIterator[Client]:
    """The SDK's client on /mcp with the agent's token, speaking `mode`'s protocol era."""
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as http:
        transport = streamable_http_client(f"{server.url}/mcp", http_client=http)
        client_info = types.Implementation(name="test-agent", version="1.0")
        async with Client(transport, mode=mode, client_info=client_info, **callbacks) as client:
            yield client


def the_run(server: StepServer, scenario_id: str, status: str) -> str:
    """The id of the one run of `scenario_id` that is `status` (the module's tests run one at a time)."""
    found: list[str] = []

    def listed() -> bool:
        runs = httpx.get(f"{server.url}/api/runs", params={"scenario_id": scenario_id, "status": status}).json()
        found[:] = [run["run_id"] for run in runs["runs"]]
        return len(found) == 1

    wait_until(listed, CALL_SECONDS, f"one {status} run of {scenario_id}")
    return found[0]


def stepline_mcp(folder: Path, config: Path, data_dir: Path) -> StdioServerParameters:
    """`stepline mcp` over stdio, a Stepline of its own in the client's child process."""
    options = ["--data-dir", str(data_dir), "--scenarios", str(folder), "--mcp-config", str(config)]
    return StdioServerParameters(command=sys.executable, args=["-m", "web", "mcp", *options], cwd=PROJECT_ROOT)


def run_id_of(result: types.CallToolResult) -> str:
    """The run a call's result links to as `stepline://runs/{run_id}`."""
    links = [str(part.uri) for part in result.content if isinstance(part, types.ResourceLink)]
    [run_id] = [link.removeprefix("stepline://runs/") for link in links if link.startswith("stepline://runs/")]
    return run_id


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(part.text for part in result.content if isinstance(part, types.TextContent))


class Answering:
    """The client's callbacks: each records what it was asked and answers as told."""

    def __init__(self, elicit: types.ElicitResult | None = None, reply: str = "Ship small, ship often") -> None:
        self.elicit_answer = elicit or types.ElicitResult(action="accept", content={"copies": 3})
        self.reply = reply
        self.asked: list[Any] = []

    async def elicit(self, context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        self.asked.append(params)
        return self.elicit_answer

    async def sample(self, context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        self.asked.append(params)
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(text=self.reply), model="test-model", stop_reason="endTurn"
        )

    def callbacks(self) -> dict[str, Any]:
        return {"elicitation_callback": self.elicit, "sampling_callback": self.sample}


@contextlib.asynccontextmanager
async def in_flight(client: Client, tool: str, **options: Any) -> AsyncIterator[list[types.CallToolResult]]:
    """Call `tool` in the background; its result is in the list once the block has ended (awaiting the call)."""
    results: list[types.CallToolResult] = []

    async def calling() -> None:
        results.append(await client.call_tool(tool, {}, **options))

    with anyio.fail_after(CALL_SECONDS):
        async with anyio.create_task_group() as group:
            group.start_soon(calling)
            yield results


class Slow(Answering):
    """A client whose person takes their time: the form is shown until the test lets them answer."""

    def __init__(self) -> None:
        super().__init__(types.ElicitResult(action="accept", content={"copies": 9}))
        self.shown = anyio.Event()
        self.let_answer = anyio.Event()
        self.withdrawn = anyio.Event()

    async def elicit(self, context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        self.asked.append(params)
        self.shown.set()
        try:
            await self.let_answer.wait()
        except anyio.get_cancelled_exc_class():
            self.withdrawn.set()
            raise
        return self.elicit_answer
