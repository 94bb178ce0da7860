"""One long-lived, supervised MCP session per configured server, shared by concurrent calls.

An MCP session must be entered and exited in one task (anyio cancel scopes), so each server has a
supervisor task that opens the session, keeps it, notices when it breaks, reconnects and closes it.
Any task may send calls through the open session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, INVALID_REQUEST, REQUEST_TIMEOUT, CallToolResult, Tool

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


def innermost(exc: BaseException) -> BaseException:
    """The first leaf of nested ExceptionGroups (transports raise them from their task groups)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def describe(exc: BaseException) -> str:
    """The innermost useful message of an exception, on one line (a step message is one line)."""
    exc = innermost(exc)
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
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
        # Set once the first connection attempt has ended, either way.
        self.first_attempt_done = asyncio.Event()

    def _set_state(self, state: str, error: str | None = None) -> None:
        self.state, self.error = state, error
        if state != "connecting":
            self.first_attempt_done.set()
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def supervise(self) -> None:
        delay = BACKOFF_FIRST
        reported: str | None = None
        while True:
            self._set_state("connecting", self.error)
            try:
                # One event per connection, so a late signal from an old session cannot break a new one.
                self._broken = broken = asyncio.Event()
                async with self._open(broken) as session:
                    # Bound only the handshake: the transport's own scopes must nest inside ours.
                    with anyio.fail_after(self.connect_timeout):
                        await session.initialize()
                        self.tools = (await session.list_tools()).tools
                    self._session = session
                    self._set_state("ready")
                    reported = None
                    log.info("MCP server '%s' ready with %d tools", self.name, len(self.tools))
                    delay = BACKOFF_FIRST
                    try:
                        self._set_state("down", await self._watch(session, broken))
                    finally:
                        self._session = None
            except Exception as exc:  # a transport may fail in any way; the supervisor must live on
                # Our handshake deadline arrives as a bare TimeoutError, often inside the transport's group.
                inner = innermost(exc)
                if isinstance(inner, TimeoutError) and not str(inner):
                    self._set_state("down", f"no answer within {self.connect_timeout:g}s")
                else:
                    self._set_state("down", describe(exc))
            if self.error != reported:  # a server that stays down is reported once, not every retry
                log.warning("MCP server '%s' is down: %s", self.name, self.error)
                reported = self.error
            with anyio.move_on_after(delay):
                await self._retry_now.wait()
            self._retry_now.clear()
            delay = min(delay * 2, BACKOFF_MAX)

    @contextlib.asynccontextmanager
    async def _open(self, broken: asyncio.Event) -> AsyncIterator[ClientSession]:
        async with (
            self._transport() as (read, write),
            ClientSession(_EndSignal(read, broken.set), write) as session,
        ):
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

    async def _watch(self, session: ClientSession, broken: asyncio.Event) -> str:
        """Return why the session broke: it closed (a call or the transport saw it), or a ping failed."""
        while True:
            with anyio.move_on_after(self.heartbeat):
                await broken.wait()
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
            while self._session is None or self.state != "ready" or self._broken.is_set():
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

    def _invalidate(self, session: ClientSession) -> None:
        """Stop handing out `session` and have the supervisor replace it."""
        if self._session is session:
            self._session = None
            self._broken.set()

    async def call_tool(
        self, tool: str, arguments: dict[str, Any], *, timeout: float, on_progress: ProgressCallback | None
    ) -> CallToolResult:
        session = await self.session()
        try:
            try:
                return await session.call_tool(
                    tool, arguments, read_timeout_seconds=timeout, progress_callback=on_progress
                )
            except MCPError as exc:
                if not _session_unknown(exc):
                    raise
                # The server restarted and forgot our session: it refused the call without running it,
                # so one retry on a new session is safe.
                self._invalidate(session)
                session = await self.session()
                return await session.call_tool(
                    tool, arguments, read_timeout_seconds=timeout, progress_callback=on_progress
                )
        except MCPError as exc:
            if exc.error.code == CONNECTION_CLOSED:
                self._invalidate(session)
                raise ServerUnavailable(f"MCP server '{self.name}' closed the connection during the call") from None
            if exc.error.code == REQUEST_TIMEOUT:
                raise CallTimeout(f"'{tool}' on MCP server '{self.name}' timed out after {timeout:g}s") from None
            raise ToolCallError(f"MCP server '{self.name}' answered with an error: {exc.error.message}") from None


def _session_unknown(exc: MCPError) -> bool:
    # How the SDK reports streamable HTTP's 404 for a session id the server does not know.
    return exc.error.code == INVALID_REQUEST and exc.error.message in {"Session not found", "Session terminated"}


class _EndSignal:
    """A transport's read stream that calls `on_end` the moment it ends: the server has gone away.

    Without it a server that dies while idle (a stdio process that crashed) is noticed only by the
    next heartbeat or by the next call, which would fail although a fresh session could serve it.
    """

    def __init__(self, stream: Any, on_end: Callable[[], None]) -> None:
        self._stream = stream
        self._on_end = on_end

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    async def __aenter__(self) -> _EndSignal:
        await self._stream.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        return await self._stream.__aexit__(*exc_info)

    def __aiter__(self) -> _EndSignal:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self._stream.__anext__()
        except (StopAsyncIteration, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_end()
            raise

    async def receive(self) -> Any:
        try:
            return await self._stream.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_end()
            raise


def _tool_infos(servers: Iterable[McpServer]) -> list[ToolInfo]:
    return [
        ToolInfo(s.name, t.name, t.description or "", t.input_schema, t.output_schema)
        for s in servers
        for t in s.tools
    ]


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
