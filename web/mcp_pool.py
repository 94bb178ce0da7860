"""All configured MCP servers, and which of them runs a tool (see web/mcp_server.py for one server)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import anyio
from mcp.client.stdio import PROCESS_TERMINATION_TIMEOUT
from mcp_types import CallToolResult, InputRequiredResult, InputResponses, Tool

from web.client_requests import Asker
from web.mcp_config import McpConfigError, ServerConfig, load_config_roots, load_mcp_config
from web.mcp_server import McpServer, ProgressCallback, ServerUnavailable, ToolCallError

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
    # The tool's annotations as the server sent them (camelCase keys: readOnlyHint, …); None when it sent none.
    annotations: dict[str, Any] | None = None


def _tool_infos(servers: Iterable[McpServer]) -> list[ToolInfo]:
    return [
        ToolInfo(s.name, t.name, t.description or "", t.input_schema, t.output_schema, _annotations(t))
        for s in servers
        for t in s.tools
    ]


def _annotations(tool: Tool) -> dict[str, Any] | None:
    if tool.annotations is None:
        return None
    return tool.annotations.model_dump(mode="json", by_alias=True, exclude_none=True)


class ToolLookupError(Exception):
    pass


@dataclass(frozen=True)
class ServerChanges:
    """The servers a new config touched, by name."""

    added: list[str]
    changed: list[str]
    removed: list[str]


class McpPool:
    """All configured servers; start with `async with`, which also stops every session.

    `reconfigure` swaps in a new config while the pool runs: only the servers whose entry changed,
    was added or was removed are touched; the others keep their sessions.

    `roots`: the folders offered to servers that ask for roots (`--root`), with `config_roots`, those the
    config file lists (read again with it).
    """

    def __init__(
        self,
        configs: dict[str, ServerConfig],
        *,
        connect_timeout: float,
        heartbeat: float,
        errlog: TextIO | None = None,
        roots: Sequence[Path] = (),
        config_roots: Sequence[Path] = (),
    ) -> None:
        self.connect_timeout = connect_timeout
        self.heartbeat = heartbeat
        self.errlog = errlog
        self.fixed_roots = [Path(root).resolve() for root in roots]
        self.config_roots = list(config_roots)
        self.servers = {name: self._server(name, config) for name, config in configs.items()}
        self._supervisors: dict[str, asyncio.Task[None]] = {}
        # Supervisors of servers replaced or removed, still stopping: closing the pool waits for them too.
        self._retiring: set[asyncio.Task[None]] = set()
        self._open = False

    def _server(self, name: str, config: ServerConfig) -> McpServer:
        return McpServer(
            name,
            config,
            connect_timeout=self.connect_timeout,
            heartbeat=self.heartbeat,
            errlog=self.errlog,
            roots=lambda: self.roots,
        )

    @property
    def roots(self) -> list[Path]:
        """The folders offered to servers now, each once."""
        return list(dict.fromkeys([*self.fixed_roots, *self.config_roots]))

    async def set_config_roots(self, roots: Sequence[Path]) -> bool:
        """Serve the config file's roots; when that changes what servers are offered, tell each open session."""
        before = self.roots
        self.config_roots = list(roots)
        if self.roots == before:
            return False
        await asyncio.gather(*(server.roots_changed() for server in self.servers.values()))
        return True

    def _supervise(self, server: McpServer) -> None:
        self._supervisors[server.name] = asyncio.create_task(server.supervise(), name=f"mcp {server.name}")

    async def __aenter__(self) -> McpPool:
        self._open = True
        for server in self.servers.values():
            self._supervise(server)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._open = False
        tasks = {*self._supervisors.values(), *self._retiring}
        self._supervisors.clear()
        await _stop(tasks)

    async def reconfigure(self, configs: dict[str, ServerConfig]) -> ServerChanges:
        """Serve `configs`: start the servers added, restart those whose entry changed, stop those removed.

        Calls in flight on a server restarted or removed fail as they would if it had gone away
        (a step with a retry policy tries again, on the new session).
        """
        changes = ServerChanges(
            added=[name for name in configs if name not in self.servers],
            changed=[name for name, s in self.servers.items() if name in configs and configs[name] != s.config],
            removed=[name for name in self.servers if name not in configs],
        )
        replaced = [*changes.changed, *changes.removed]
        retiring = {self._supervisors.pop(name) for name in replaced if name in self._supervisors}
        for name in changes.removed:
            del self.servers[name]
        for name in changes.changed + changes.added:
            self.servers[name] = self._server(name, configs[name])
            if self._open:
                self._supervise(self.servers[name])
        # The pool is whole again before the first await: no call meets it half changed.
        self._retiring |= retiring
        try:
            await _stop(retiring)
        finally:
            self._retiring -= retiring
        return changes

    async def reload_config(self, path: Path | None) -> ServerChanges | None:
        """Read the mcpServers file again and serve it; a broken file changes nothing (None, and the log says why)."""
        try:
            configs = load_mcp_config(path)
            roots = load_config_roots(path)
        except McpConfigError as exc:
            log.error("MCP config not reloaded, the servers keep the one they had: %s", exc)
            return None
        changes = await self.reconfigure(configs)
        touched = (("started", changes.added), ("reconnected", changes.changed), ("stopped", changes.removed))
        said = [f"{verb} {', '.join(names)}" for verb, names in touched if names]
        if await self.set_config_roots(roots):
            said.append(f"roots now {', '.join(str(root) for root in self.roots) or 'none'}")
        log.info("MCP config reloaded: %s", "; ".join(said) if said else "no server's entry changed")
        return changes

    def health(self) -> dict[str, dict[str, Any]]:
        return {
            name: {
                "state": server.state,
                "transport": server.config.transport,
                # Fresh, never remembered: a server that is not ready offers no tools now.
                "tools": len(server.tools) if server.state == "ready" else 0,
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
        asker: Asker | None = None,
        input_responses: InputResponses | None = None,
        request_state: str | None = None,
        allow_input_required: bool = False,
    ) -> CallToolResult | InputRequiredResult:
        """Call `tool` on `server`. `asker`: who a person's request during the call goes to (none: the server
        is told nobody can answer). An InputRequiredResult is returned only with `allow_input_required`."""
        found = self.servers.get(server)
        if found is None:  # removed from the config since the step found its tool there
            raise ServerUnavailable(f"MCP server '{server}' is no longer configured")
        result = await found.call_tool(
            tool,
            arguments,
            timeout=timeout,
            on_progress=on_progress,
            asker=asker,
            input_responses=input_responses,
            request_state=request_state,
        )
        if isinstance(result, InputRequiredResult) and not allow_input_required:
            raise ToolCallError(f"'{tool}' on MCP server '{server}' asked for input, which nobody can give here")
        return result


async def _stop(supervisors: set[asyncio.Task[None]]) -> None:
    """Stop supervisors, asking again while one absorbs the cancellation, so stopping never hangs.

    A supervisor inside a transport's cancel scope can absorb one cancellation as the scope closes.
    """
    pending = set(supervisors)
    for round_number in range(STOP_ROUNDS):
        if not pending:
            return
        for task in pending:
            task.cancel()
        wait = FIRST_STOP_SECONDS if round_number == 0 else STOP_ROUND_SECONDS
        _, pending = await asyncio.wait(pending, timeout=wait)
    if pending:
        log.error("MCP supervisor(s) did not stop: %s", ", ".join(task.get_name() for task in pending))
