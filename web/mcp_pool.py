"""One long-lived, supervised MCP session per configured server, shared by concurrent calls.

An MCP session must be entered and exited in one task (anyio cancel scopes), so each server has a
supervisor task that opens the session, keeps it, notices when it breaks, reconnects and closes it.
Any task may send calls through the open session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT, CallToolResult, Tool

from web.mcp_config import HttpServer, ServerConfig, StdioServer

log = logging.getLogger(__name__)

ProgressCallback = Callable[[float, float | None, str | None], Awaitable[None]]

# Reconnect quickly after a blip, without hammering a server that stays down.
BACKOFF_FIRST, BACKOFF_MAX = 0.25, 5.0


class ToolCallError(Exception):
    """A call that could not produce a tool result; the message is for the user."""


class ServerUnavailable(ToolCallError):
    pass


class CallTimeout(ToolCallError):
    pass


@dataclass(frozen=True)
class ToolInfo:
    server: str
    name: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None


def describe(exc: BaseException) -> str:
    """The innermost useful message of an exception (transports raise ExceptionGroups)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, MCPError | OSError) else f"{type(exc).__name__}: {text}"


class McpServer:
    """A configured server, its supervisor task and its current session."""

    def __init__(self, name: str, config: ServerConfig, *, connect_timeout: float, heartbeat: float) -> None:
        self.name = name
        self.config = config
        self.connect_timeout = connect_timeout
        self.heartbeat = heartbeat
        self.state = "connecting"
        self.error: str | None = None
        self.tools: list[Tool] = []
        self._session: ClientSession | None = None
        self._broken = asyncio.Event()
        self._retry_now = asyncio.Event()
        self._changed = asyncio.Event()

    def _set_state(self, state: str, error: str | None = None) -> None:
        self.state, self.error = state, error
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def supervise(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            self._set_state("connecting", self.error)
            try:
                async with self._open() as session:
                    # Bound only the handshake: the transport's own scopes must nest inside ours.
                    with anyio.fail_after(self.connect_timeout):
                        await session.initialize()
                        self.tools = (await session.list_tools()).tools
                    self._session = session
                    self._broken.clear()
                    self._set_state("ready")
                    log.info("MCP server '%s' ready with %d tools", self.name, len(self.tools))
                    delay = BACKOFF_FIRST
                    try:
                        self._set_state("down", await self._watch(session))
                    finally:
                        self._session = None
            except TimeoutError:
                self._set_state("down", f"no answer within {self.connect_timeout:g}s")
            except Exception as exc:  # a transport may fail in any way; the supervisor must live on
                self._set_state("down", describe(exc))
            log.warning("MCP server '%s' is down: %s", self.name, self.error)
            with anyio.move_on_after(delay):
                await self._retry_now.wait()
            self._retry_now.clear()
            delay = min(delay * 2, BACKOFF_MAX)

    @contextlib.asynccontextmanager
    async def _open(self) -> AsyncIterator[ClientSession]:
        async with self._transport() as (read, write), ClientSession(read, write) as session:
            yield session

    def _transport(self) -> contextlib.AbstractAsyncContextManager[Any]:
        config = self.config
        if isinstance(config, StdioServer):
            params = StdioServerParameters(command=config.command, args=config.args, env=config.env, cwd=config.cwd)
            return stdio_client(params)
        assert isinstance(config, HttpServer)
        if config.transport == "sse":
            return sse_client(config.url, headers=config.headers)
        return _streamable_http(config)

    async def _watch(self, session: ClientSession) -> str:
        """Return why the session broke: a call saw it close, or a heartbeat ping failed."""
        while True:
            with anyio.move_on_after(self.heartbeat):
                await self._broken.wait()
                return "the connection closed"
            try:
                with anyio.fail_after(self.heartbeat):
                    await session.send_ping()
            except Exception as exc:
                return f"ping failed: {describe(exc)}"

    async def session(self) -> ClientSession:
        """The open session, waiting a bounded time for a (re)connection."""
        asked_retry = False
        with anyio.move_on_after(self.connect_timeout):
            while self._session is None or self.state != "ready":
                if self.state == "down":
                    if asked_retry:
                        break
                    self._retry_now.set()
                    asked_retry = True
                await self._changed.wait()
            else:
                return self._session
        if self.state == "connecting":
            raise ServerUnavailable(f"MCP server '{self.name}' did not connect within {self.connect_timeout:g}s")
        raise ServerUnavailable(f"MCP server '{self.name}' is unavailable: {self.error}")

    async def call_tool(
        self, tool: str, arguments: dict[str, Any], *, timeout: float, on_progress: ProgressCallback | None
    ) -> CallToolResult:
        session = await self.session()
        try:
            return await session.call_tool(
                tool, arguments, read_timeout_seconds=timeout, progress_callback=on_progress
            )
        except MCPError as exc:
            if exc.error.code == CONNECTION_CLOSED:
                self._broken.set()
                raise ServerUnavailable(f"MCP server '{self.name}' closed the connection during the call") from None
            if exc.error.code == REQUEST_TIMEOUT:
                raise CallTimeout(f"'{tool}' on MCP server '{self.name}' timed out after {timeout:g}s") from None
            raise ToolCallError(f"MCP server '{self.name}' answered with an error: {exc.error.message}") from None


@contextlib.asynccontextmanager
async def _streamable_http(config: HttpServer) -> AsyncIterator[Any]:
    async with (
        create_mcp_http_client(headers=config.headers or None) as http,
        streamable_http_client(config.url, http_client=http) as streams,
    ):
        yield streams


class ToolLookupError(Exception):
    pass


class McpPool:
    """All configured servers; start with `async with`, which also stops every session."""

    def __init__(self, configs: dict[str, ServerConfig], *, connect_timeout: float, heartbeat: float) -> None:
        self.servers = {
            name: McpServer(name, config, connect_timeout=connect_timeout, heartbeat=heartbeat)
            for name, config in configs.items()
        }
        self._supervisors: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> McpPool:
        self._supervisors = [
            asyncio.create_task(server.supervise(), name=f"mcp {name}") for name, server in self.servers.items()
        ]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for task in self._supervisors:
            task.cancel()
        await asyncio.gather(*self._supervisors, return_exceptions=True)

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
        """Wait (bounded) until no server is still making its first connection."""
        await asyncio.gather(*(self._settle(s) for s in self.servers.values()))

    @staticmethod
    async def _settle(server: McpServer) -> None:
        with contextlib.suppress(ServerUnavailable):
            await server.session()

    async def tools(self) -> list[ToolInfo]:
        """Every server's tools; ServerUnavailable if any server cannot be reached."""
        await self.settle()
        down = [s for s in self.servers.values() if s.state != "ready"]
        if down:
            raise ServerUnavailable("; ".join(f"MCP server '{s.name}' is unavailable: {s.error}" for s in down))
        return self.known_tools()

    def known_tools(self) -> list[ToolInfo]:
        """The tools of the servers connected now (or at their last connection)."""
        return [
            ToolInfo(name, tool.name, tool.description or "", tool.input_schema, tool.output_schema)
            for name, server in self.servers.items()
            for tool in server.tools
        ]

    async def locate(self, tool: str, server: str | None = None) -> ToolInfo:
        """Which server runs `tool`: the one named, or the only one that has it."""
        if server is not None and server not in self.servers:
            raise ToolLookupError(f"unknown MCP server '{server}' (configured: {', '.join(self.servers)})")
        candidates = [self.servers[server]] if server else list(self.servers.values())
        await asyncio.gather(*(self._settle(s) for s in candidates))
        matches = [
            ToolInfo(s.name, t.name, t.description or "", t.input_schema, t.output_schema)
            for s in candidates
            for t in s.tools
            if t.name == tool
        ]
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
