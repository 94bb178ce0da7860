"""All configured MCP servers, and which of them runs a tool (see web/mcp_server.py for one server)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TextIO

import anyio
from mcp.client.stdio import PROCESS_TERMINATION_TIMEOUT
from mcp_types import CallToolResult

from web.mcp_config import ServerConfig
from web.mcp_server import McpServer, ProgressCallback, ServerUnavailable

log = logging.getLogger(__name__)

# Closing the pool asks each supervisor to stop this many times, this long apart, at the most.
STOP_ROUNDS, STOP_ROUND_SECONDS = 5, 1.0
# The first ask is given time for the SDK's bounded stdio shutdown (close stdin, wait for the process,
# kill it, wait again): a second cancel during it would abandon a server process still running.
FIRST_STOP_SECONDS = 2 * PROCESS_TERMINATION_TIMEOUT + 1.0


@dataclass(frozen=True)
class ToolInfo:
    server: str
    name: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None


def _tool_infos(servers: Iterable[McpServer]) -> list[ToolInfo]:
    return [
        ToolInfo(s.name, t.name, t.description or "", t.input_schema, t.output_schema)
        for s in servers
        for t in s.tools
    ]


class ToolLookupError(Exception):
    pass


class McpPool:
    """All configured servers; start with `async with`, which also stops every session."""

    def __init__(
        self,
        configs: dict[str, ServerConfig],
        *,
        connect_timeout: float,
        heartbeat: float,
        errlog: TextIO | None = None,
    ) -> None:
        self.servers = {
            name: McpServer(name, config, connect_timeout=connect_timeout, heartbeat=heartbeat, errlog=errlog)
            for name, config in configs.items()
        }
        self._supervisors: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> McpPool:
        self._supervisors = [
            asyncio.create_task(server.supervise(), name=f"mcp {name}") for name, server in self.servers.items()
        ]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # A supervisor inside a transport's cancel scope can absorb one cancellation as the scope
        # closes; ask again until each has stopped, so closing the pool never hangs.
        pending = set(self._supervisors)
        for round_number in range(STOP_ROUNDS):
            for task in pending:
                task.cancel()
            wait = FIRST_STOP_SECONDS if round_number == 0 else STOP_ROUND_SECONDS
            _, pending = await asyncio.wait(pending, timeout=wait)
            if not pending:
                return
        log.error("MCP supervisor(s) did not stop: %s", ", ".join(task.get_name() for task in pending))

    def health(self) -> dict[str, dict[str, Any]]:
        return {
            name: {
                "state": server.state,
                "transport": server.config.transport,
                "tools": len(server.tools),
                "error": server.error,
            }
            for name, server in self.servers.items()
        }

    async def settle(self) -> None:
        """Wait (bounded) until no server is still making its first connection.

        A server already found down is not retried here: its supervisor retries on its own, and a
        server that hangs must not hold up every listing of the tools.
        """
        await asyncio.gather(*(self._first_attempt(s) for s in self.servers.values()))

    @staticmethod
    async def _first_attempt(server: McpServer) -> None:
        with anyio.move_on_after(server.connect_timeout):
            await server.first_attempt_done.wait()

    @staticmethod
    async def _try_connect(server: McpServer) -> None:
        """Wait (bounded) for a session, asking a down server to retry now; its failure is the caller's to judge."""
        with contextlib.suppress(ServerUnavailable):
            await server.connection()

    async def tools(self) -> list[ToolInfo]:
        """Every server's tools; ServerUnavailable if any server cannot be reached."""
        await self.settle()
        down = [s for s in self.servers.values() if s.state != "ready"]
        if down:
            raise ServerUnavailable("; ".join(f"MCP server '{s.name}' is unavailable: {s.error}" for s in down))
        return self.known_tools()

    def known_tools(self) -> list[ToolInfo]:
        """The tools of the servers connected now (or at their last connection)."""
        return _tool_infos(self.servers.values())

    async def locate(self, tool: str, server: str | None = None) -> ToolInfo:
        """Which server runs `tool`: the one named, or the only one that has it.

        The tool lists already known answer first. Servers whose tools are not known yet are waited
        for only when no known list has the tool: a server that is down, or hangs, must not hold up
        every step that another server serves.
        """
        if server is not None and server not in self.servers:
            raise ToolLookupError(f"unknown MCP server '{server}' (configured: {', '.join(self.servers)})")
        candidates = [self.servers[server]] if server else list(self.servers.values())
        matches = [info for info in _tool_infos(candidates) if info.name == tool]
        if not matches:
            await asyncio.gather(*(self._try_connect(s) for s in candidates if not s.tools))
            matches = [info for info in _tool_infos(candidates) if info.name == tool]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            names = ", ".join(f"'{m.server}'" for m in matches)
            raise ToolLookupError(f"tool '{tool}' is offered by several servers ({names}); set the step's 'server'")
        down = [s for s in candidates if s.state != "ready" and not s.tools]
        if down:
            raise ServerUnavailable(
                "; ".join(f"MCP server '{s.name}' is unavailable: {s.error}" for s in down)
                + f" (needed to find tool '{tool}')"
            )
        where = f"MCP server '{server}'" if server else "any configured MCP server"
        raise ToolLookupError(f"unknown tool '{tool}' on {where}")

    async def call(
        self,
        server: str,
        tool: str,
        arguments: dict[str, Any],
        *,
        timeout: float,
        on_progress: ProgressCallback | None = None,
    ) -> CallToolResult:
        return await self.servers[server].call_tool(tool, arguments, timeout=timeout, on_progress=on_progress)
