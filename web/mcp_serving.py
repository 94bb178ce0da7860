"""The scenarios as MCP tools: the SDK's low-level server, its handlers, and the calls in flight.

One `ScenarioServer` per app serves every MCP client: over streamable HTTP at `/mcp` (web.mcp_endpoint)
and over stdio (`stepline mcp`). Tools are the scenarios the caller may run, listed afresh on each
tools/list; clients on an open session are told `notifications/tools/list_changed` when the scenario folder
changes. A call is a run (web.mcp_calls follows it); runs are resources at `stepline://runs/{run_id}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import anyio
import mcp_types as types
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from sse_starlette.sse import AppStatus
from starlette.requests import Request

from web import json_limits, runs
from web.access import Identity, may_run
from web.mcp_calls import BadRequestState, Caller, CallFollower, read_call_state, stopped_result
from web.mcp_pool import McpPool
from web.run_resources import read_run, resource_templates, run_resources
from web.runs import RunService
from web.scenario_tools import RunLinks, input_error_result, tool_name_problem, tool_of
from web.store import StoreError

log = logging.getLogger(__name__)

INSTRUCTIONS = (
    "Each tool runs one Stepline scenario: a tested multi-step workflow of MCP tool calls. A call is a run, "
    "recorded and watched live in Stepline's pages; its result links to them. Runs are readable as "
    "stepline://runs/{run_id}."
)
# How long a cancelled call waits for the questions it put to the caller to be withdrawn.
WITHDRAW_WAIT_SECONDS = 3.0
# How often a call in flight looks whether the server has begun to stop.
SHUTDOWN_POLL_SECONDS = 0.2


def _version() -> str:
    try:
        return version("stepline")
    except PackageNotFoundError:
        return "0"


class ToolListServer(Server[Any]):
    """The SDK's low-level server, saying at the 2025 handshake what it does: it tells open sessions when the
    tool list changes (the SDK's default says it does not, and a client may then ignore the notification)."""

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        told = notification_options or NotificationOptions(tools_changed=True)
        return super().create_initialization_options(told, experimental_capabilities, extensions)


def tool_error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=message)], is_error=True)


class ScenarioServer:
    """The catalog's scenarios served as MCP tools, each call a run of `service`.

    `local`: the identity of a stdio client (the account that started `stepline mcp`); HTTP callers are
    who web.mcp_endpoint found them to be. `links`: where runs are seen, when no request says (stdio).
    `on_shutdown`: called once when the HTTP server begins to stop, so runs followed by calls end
    (or are left waiting) and those calls answer, instead of holding the shutdown up.
    """

    def __init__(
        self,
        service: RunService,
        pool: McpPool,
        *,
        max_calls: int,
        max_json_depth: int,
        links: RunLinks | None = None,
        local: Identity | None = None,
        on_shutdown: Callable[[], object] = lambda: None,
    ) -> None:
        self.service = service
        self.pool = pool
        self.max_calls = max_calls
        self.max_json_depth = max_json_depth
        self.links = links
        self.local = local
        self.on_shutdown = on_shutdown
        self.server: Server[Any] = ToolListServer(
            "stepline",
            version=_version(),
            title="Stepline",
            instructions=INSTRUCTIONS,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_list_resources=self._list_resources,
            on_list_resource_templates=self._list_resource_templates,
            on_read_resource=self._read_resource,
        )
        self.in_flight = 0
        # Connections with a channel of their own (protocol 2025 sessions, stdio), told when the tools change.
        self._connections: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._stopping = asyncio.Event()
        self._shutdown_watch: asyncio.Task[None] | None = None
        # Runs whose call was cancelled, being cancelled in turn (held so the tasks are not collected).
        self._cancelling: set[asyncio.Task[Any]] = set()

    async def serve_stdio(self) -> None:
        """Serve one client over this process's stdin and stdout until stdin closes."""
        async with stdio_server() as (read_stream, write_stream):
            await self.server.run(read_stream, write_stream, self.server.create_initialization_options())

    def stop(self) -> None:
        """The app is stopping: calls in flight answer now, and leave their runs to end as runs do at shutdown."""
        self._stopping.set()

    async def tools_changed(self) -> None:
        """Tell every client on an open session that the tool list changed (the scenario folder did)."""
        for connection in list(self._connections):
            if connection.has_standalone_channel:
                with contextlib.suppress(Exception):  # a client gone meanwhile
                    await connection.send_tool_list_changed()

    # Handlers

    async def _list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        self._remember(ctx)
        identity = self._identity(ctx)
        known = self.pool.known_tools()
        scenarios = [s for s in self.service.scenarios(identity) if identity is None or may_run(identity, s)]
        tools = []
        for scenario in scenarios:
            problem = tool_name_problem(scenario.scenario_id)
            if problem is not None:
                log.warning("Scenario %.40s… is not offered as an MCP tool: %s", scenario.scenario_id, problem)
                continue
            tools.append(tool_of(scenario, known))
        return types.ListToolsResult(tools=tools)

    async def _call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        self._remember(ctx)
        caller = self._caller(ctx)
        scenario_id = params.name
        try:
            self.service.scenario(scenario_id, caller.identity)
            self.service.require_may_run(caller.identity, scenario_id, "run")
        except (runs.UnknownScenario, runs.RunForbidden):
            # What a caller may not run is not listed, and answered as if it did not exist: going on with a
            # call (request_state) included.
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {scenario_id}") from None
        if params.request_state is not None:
            return await self._go_on(ctx, params, caller)
        arguments = params.arguments or {}
        try:
            json_limits.check(arguments, max_depth=self.max_json_depth)
        except json_limits.JsonProblem as problem:
            where = json_limits.where(["arguments", *problem.loc])
            return tool_error(f"Run not started: the arguments are refused at {where}: {problem.message}")
        if self.in_flight >= self.max_calls:
            return tool_error(
                f"Run not started: Stepline is busy with {self.in_flight} calls in flight, the most it takes "
                "(max_mcp_calls); try again shortly."
            )
        async with self._counted():
            try:
                record = await self.service.start(scenario_id, arguments, by=caller.identity, client=caller.client)
            except runs.InputInvalid as exc:
                return input_error_result(exc.errors)
            except (StoreError, runs.HistoryFailing) as exc:
                return tool_error(f"Run not started: the run history cannot be written ({exc}); try again shortly.")
            return await self._follow(CallFollower(self.service, record, ctx, caller))

    async def _go_on(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams, caller: Caller
    ) -> types.CallToolResult | types.InputRequiredResult:
        """A call sent again with answers (protocol 2026-07-28): they go to the run, which is followed on."""
        try:
            run_id, after = read_call_state(params.request_state or "")
            record = await self.service.run(run_id, caller.identity)
        except (BadRequestState, runs.UnknownRun) as exc:
            raise MCPError(types.INVALID_PARAMS, str(exc)) from None
        if record.state.scenario_id != params.name:
            raise MCPError(types.INVALID_PARAMS, f"request_state is for a run of {record.state.scenario_id}")
        async with self._counted():
            follower = CallFollower(self.service, record, ctx, caller)
            await follower.answer(dict(params.input_responses or {}))
            return await self._follow(follower, after)

    async def _follow(self, follower: CallFollower, after: int = 0) -> types.CallToolResult | types.InputRequiredResult:
        """The run's result; the run cancelled if the call is (unless the server is stopping)."""
        self._watch_shutdown()
        following = asyncio.ensure_future(follower.follow(after))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({following, stopping}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            following.cancel()
            if not self._stopping.is_set() and not follower.record.is_finished:
                self._cancel_run(follower)
            # The questions put to the caller are withdrawn on the call's own stream, before it closes; the SDK's
            # cancel scope would cancel this wait at once unless shielded.
            with anyio.CancelScope(shield=True):
                await asyncio.wait({following}, timeout=WITHDRAW_WAIT_SECONDS)
            raise
        finally:
            stopping.cancel()
        if following.done():
            return following.result()
        following.cancel()
        return stopped_result(follower.record)

    def _cancel_run(self, follower: CallFollower) -> None:
        identity = follower.caller.identity
        task = asyncio.create_task(self.service.cancel(follower.record.run_id, by=identity))
        self._cancelling.add(task)
        task.add_done_callback(self._cancelled)

    def _cancelled(self, task: asyncio.Task[Any]) -> None:
        self._cancelling.discard(task)
        if not task.cancelled() and task.exception() is not None:
            if not isinstance(task.exception(), runs.RunAlreadyFinished):
                log.warning("A run whose MCP call was cancelled could not be cancelled: %s", task.exception())

    async def _list_resources(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=await run_resources(self.service, self._identity(ctx)))

    async def _list_resource_templates(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=resource_templates())

    async def _read_resource(
        self, ctx: ServerRequestContext[Any, Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        return await read_run(self.service, self._identity(ctx), str(params.uri))

    # Who is calling

    def _identity(self, ctx: ServerRequestContext[Any, Any]) -> Identity | None:
        request = ctx.request
        if isinstance(request, Request):
            return request.scope.get("state", {}).get("identity")
        return self.local

    def _caller(self, ctx: ServerRequestContext[Any, Any]) -> Caller:
        params = ctx.session.client_params
        info = params.client_info if params is not None else None
        client = " ".join(filter(None, (info.name, info.version))) if info is not None else None
        return Caller(
            identity=self._identity(ctx),
            client=json_limits.safe_text(client, 200) if client else None,
            capabilities=ctx.session.client_capabilities,
            links=self._links(ctx),
        )

    def _links(self, ctx: ServerRequestContext[Any, Any]) -> RunLinks | None:
        if self.links is not None:
            return self.links
        request = ctx.request
        if isinstance(request, Request):
            return RunLinks(str(request.base_url).rstrip("/"))
        return None

    def _remember(self, ctx: ServerRequestContext[Any, Any]) -> None:
        # The SDK keeps a connection per client; its session object for this request holds it.
        connection = getattr(ctx.session, "_connection", None)
        if isinstance(connection, Connection):
            self._connections.add(connection)

    # Calls in flight

    @contextlib.asynccontextmanager
    async def _counted(self) -> AsyncIterator[None]:
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    def _watch_shutdown(self) -> None:
        """Look, while calls are in flight, for the HTTP server beginning to stop (uvicorn says so to
        sse-starlette's AppStatus), and then end the runs they follow."""
        if self._shutdown_watch is None or self._shutdown_watch.done():
            self._shutdown_watch = asyncio.create_task(self._watch(), name="MCP calls' shutdown watch")

    async def _watch(self) -> None:
        while self.in_flight and not self._stopping.is_set():
            if AppStatus.should_exit:
                self.on_shutdown()
                # Runs that can end do so now; the calls of those left waiting answer at once.
                await asyncio.sleep(SHUTDOWN_POLL_SECONDS)
                self.stop()
                return
            await asyncio.sleep(SHUTDOWN_POLL_SECONDS)
