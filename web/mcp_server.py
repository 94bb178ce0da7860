"""One configured MCP server: its long-lived, supervised session, shared by concurrent calls.

An MCP session must be entered and exited in one task (anyio cancel scopes), so each server has a
supervisor task that opens the session, keeps it, notices when it breaks, reconnects and closes it.
Any task may send calls through the open session.

What went wrong decides what happens to the session:

- The server answered a call with a JSON-RPC error (whatever its code): that call fails with the
  server's message and code, and the session is kept for every other call.
- The transport ended (a stdio server exited, an HTTP server went away): the calls in flight fail
  and the supervisor reconnects.
- The server stopped answering (alive, but nothing comes back): a call fails when its own timeout
  ends, and the heartbeat marks the server "not responding" without failing calls in flight.
- A streamable HTTP server no longer knows the session (it restarted): a call it refused is sent again,
  once, on a new session, and a refused heartbeat ping replaces the session before a call needs it. Any
  other HTTP refusal fails the call with the server's status and words (web/mcp_http.py).

A session opens at the newest protocol the server speaks (`server/discover`, else the `initialize`
handshake; a server's `"protocol": "legacy"` skips the probe). It declares elicitation (form and URL),
sampling and roots. A server may ask for them in the middle of a call (protocol 2025): roots are answered
from the configured folders; elicitation and sampling go to a person through the asker of the call they
belong to, and the call's own deadline stops while the person is asked (web/client_requests.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client._probe import negotiate_auto
from mcp.client.session import IncomingMessage
from mcp.client.sse import sse_client
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CONNECTION_CLOSED,
    URL_ELICITATION_REQUIRED,
    CallToolResult,
    ElicitationRequiredErrorData,
    ElicitRequestURLParams,
    InputRequiredResult,
    InputResponses,
    RootsListChangedNotification,
    Tool,
    ToolListChangedNotification,
)
from pydantic import ValidationError

from web.client_requests import Asker, ServerRequests, limitation
from web.mcp_config import HttpServer, ServerConfig, StdioServer
from web.mcp_http import HttpRefusals, refusal_of, streamable_http

log = logging.getLogger(__name__)

ProgressCallback = Callable[[float, float | None, str | None], Awaitable[None]]

# Reconnect quickly after a blip, without hammering a server that stays down.
BACKOFF_FIRST, BACKOFF_MAX = 0.25, 5.0
# Heartbeats of silence (nothing received, a ping unanswered) after which a server is not responding.
SILENT_HEARTBEATS = 3
# How often a heartbeat looks at the server, to tell its silence from our own loop being too busy to hear it.
LOOKS_PER_HEARTBEAT = 4
# Why a connection is replaced when the server refuses the session it knew (it restarted).
SESSION_FORGOTTEN = "the server no longer knows the session"


class ToolCallError(Exception):
    """A call that could not produce a tool result; the message is for the user."""


class ServerUnavailable(ToolCallError):
    pass


class CallTimeout(ToolCallError):
    pass


class WaitExpired(ToolCallError):
    """Nobody answered a request of the call in time: asking again would be in vain."""


class PersonDeclined(ToolCallError):
    """A person declined what the call needed: another attempt would ask them again, in vain."""


class UrlElicitationRequired(ToolCallError):
    """The server refused the call until a person visits its pages (error -32042, protocol 2025)."""

    def __init__(self, message: str, elicitations: list[ElicitRequestURLParams]) -> None:
        super().__init__(message)
        self.elicitations = elicitations


def innermost(exc: BaseException) -> BaseException:
    """The first leaf of nested ExceptionGroups (transports raise them from their task groups)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def describe(exc: BaseException) -> str:
    """The innermost useful message of an exception, on one line (a step message is one line)."""
    exc = innermost(exc)
    lines = str(exc).strip().splitlines()
    if not lines:  # e.g. an HTTP read that broke off: its type is all there is to say
        return type(exc).__name__
    return lines[0] if isinstance(exc, MCPError | OSError) else f"{type(exc).__name__}: {lines[0]}"


class _Connection:
    """One open session, and what its transport and its traffic say about the server."""

    session: ClientSession

    def __init__(self, requests: ServerRequests) -> None:
        # Set once the transport has ended, or once we close it: calls in flight then fail.
        self.closed = asyncio.Event()
        self.reason = ""
        # Messages received from the server: each one, whatever it is, proves the server alive.
        self.received = 0
        self.calls = 0
        # What the server sent that could not be read (a reply the SDK could not parse is dropped,
        # and its call waits for its timeout): how many, and the last one's description.
        self.unreadable = 0
        self.last_unreadable = ""
        # Requests a streamable HTTP server refused with an HTTP error status, told in its own words.
        self.refusals = HttpRefusals()
        # Set once the server no longer knows the session: no call is sent on it any more.
        self.forgotten = False
        # What the server asks its client, answered for the calls in flight.
        self.requests = requests
        # Set when the server says its tool list changed: the supervisor reads it again.
        self.tools_changed = asyncio.Event()

    @property
    def usable(self) -> bool:
        return not self.forgotten and not self.closed.is_set()

    def close(self, reason: str = "the connection closed") -> None:
        if not self.closed.is_set():
            self.reason = reason
            self.closed.set()

    def forget(self, grace: float) -> None:
        """The server no longer knows the session: close it once the calls still on it have their answers.

        Each of those calls is refused in turn and tried again on the new session; closing at once would
        fail them as lost instead. `grace` bounds the wait for calls that never answer.
        """
        self.forgotten = True
        if self.calls == 0:
            self.close(SESSION_FORGOTTEN)
        else:
            asyncio.get_running_loop().call_later(grace, self.close, SESSION_FORGOTTEN)


class McpServer:
    """A configured server, its supervisor task and its current session."""

    def __init__(
        self,
        name: str,
        config: ServerConfig,
        *,
        connect_timeout: float,
        heartbeat: float,
        errlog: TextIO | None = None,
        roots: Callable[[], list[Path]] = list,
    ) -> None:
        # Where a stdio server's stderr goes: ours, unless the caller keeps it out of its own output.
        self.errlog = errlog
        # The folders offered to the server when it asks for roots (as configured now).
        self.roots = roots
        self.name = name
        self.config = config
        self.connect_timeout = connect_timeout
        self.heartbeat = heartbeat
        self.state = "connecting"
        self.error: str | None = None
        self.tools: list[Tool] = []
        self._connection: _Connection | None = None
        self._retry_now = asyncio.Event()
        self._changed = asyncio.Event()
        # Set once the first connection attempt has ended, either way.
        self.first_attempt_done = asyncio.Event()

    @property
    def forget_grace(self) -> float:
        """How long a forgotten session waits for the calls still on it: the calls tried again must be
        able to connect within their own connect timeout after it."""
        return self.connect_timeout / 2

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
            # One connection object per attempt, so a late signal from an old session cannot touch a new one.
            connection = _Connection(ServerRequests(self.name, self.roots))
            try:
                async with self._open(connection) as session:
                    # Bound only the handshake: the transport's own scopes must nest inside ours.
                    with anyio.fail_after(self.connect_timeout):
                        if self.config.protocol == "legacy":
                            await session.initialize()
                        else:
                            await negotiate_auto(session)
                        self.tools = (await session.list_tools()).tools
                    self._connection = connection
                    self._set_state("ready")
                    reported = None
                    log.info(
                        "MCP server '%s' ready with %d tools (protocol %s)",
                        self.name,
                        len(self.tools),
                        session.protocol_version,
                    )
                    delay = BACKOFF_FIRST
                    try:
                        self._set_state("down", await self._watch(connection))
                    finally:
                        # Before the session closes: a call it fails must read that as the connection lost.
                        self._connection = None
                        connection.close("the connection was closed")
            except Exception as exc:  # a transport may fail in any way; the supervisor must live on
                # Our handshake deadline arrives as a bare TimeoutError, often inside the transport's group.
                inner = innermost(exc)
                if isinstance(inner, TimeoutError) and not str(inner):
                    self._set_state(
                        "down", f"not responding (no answer to the handshake within {self.connect_timeout:g}s)"
                    )
                else:
                    self._set_state("down", describe(exc))
            if self.error != reported:  # a server that stays down is reported once, not every retry
                log.warning("MCP server '%s' is down: %s", self.name, self.error)
                reported = self.error
            # asyncio's own timeout: it never absorbs the cancellation that stops the pool.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._retry_now.wait()
            self._retry_now.clear()
            delay = min(delay * 2, BACKOFF_MAX)

    @contextlib.asynccontextmanager
    async def _open(self, connection: _Connection) -> AsyncIterator[ClientSession]:
        async with self._transport(connection) as (read, write):
            watched = _WatchedStream(
                read, on_message=lambda item: self._heard(connection, item), on_end=connection.close
            )
            async with ClientSession(
                watched,
                write,
                elicitation_callback=connection.requests.elicit,
                sampling_callback=connection.requests.sample,
                list_roots_callback=connection.requests.list_roots,
                message_handler=lambda message: self._notified(connection, message),
            ) as session:
                connection.session = session
                yield session

    async def _notified(self, connection: _Connection, message: IncomingMessage) -> None:
        if isinstance(message, ToolListChangedNotification):
            connection.tools_changed.set()

    async def roots_changed(self) -> None:
        """Tell the server its roots changed (it lists them again when it needs them)."""
        connection = self._connection
        if connection is None or not connection.usable:
            return
        try:
            await connection.session.send_notification(RootsListChangedNotification())
        except Exception as exc:  # a session closing meanwhile: its successor lists the roots afresh
            log.info("MCP server '%s' was not told its roots changed: %s", self.name, describe(exc))

    async def _follow_tool_changes(self, connection: _Connection) -> None:
        """Read the tool list again each time the server says it changed (tools offered only to a client
        that declares a capability may be registered after the handshake)."""
        while True:
            await connection.tools_changed.wait()
            connection.tools_changed.clear()
            try:
                with anyio.fail_after(self.connect_timeout):
                    self.tools = (await connection.session.list_tools()).tools
            except Exception as exc:  # the watch sees a connection that broke; a slow list is tried next time
                log.warning("MCP server '%s' changed its tools, not listed: %s", self.name, describe(exc))
            else:
                log.info("MCP server '%s' now offers %d tools", self.name, len(self.tools))

    def _heard(self, connection: _Connection, item: Any) -> None:
        connection.received += 1
        connection.refusals.explain(item)
        if isinstance(item, Exception):
            connection.unreadable += 1
            connection.last_unreadable = _unreadable(item)
        # A server that was not responding and speaks again is ready at once, for calls waiting on it.
        if connection is self._connection and self.state != "ready":
            log.info("MCP server '%s' is answering again", self.name)
            self._set_state("ready")

    def _transport(self, connection: _Connection) -> contextlib.AbstractAsyncContextManager[Any]:
        config = self.config
        if isinstance(config, StdioServer):
            params = StdioServerParameters(command=config.command, args=config.args, env=config.env, cwd=config.cwd)
            return stdio_client(params, errlog=self.errlog or sys.stderr)
        assert isinstance(config, HttpServer)
        if config.transport == "sse":
            return sse_client(config.url, headers=config.headers)
        return streamable_http(config, connection.refusals)

    async def _watch(self, connection: _Connection) -> str:
        """Watch an open connection until it must be replaced; return why.

        It must be replaced when its transport ends, or when the server has been silent for
        SILENT_HEARTBEATS heartbeats with no call waiting on it. Any message from the server ends
        its silence, so a server whose calls report progress is never pinged; a ping goes out after
        each heartbeat of silence, one at a time. Silence is counted in the time our own event loop
        was free to hear the server: the watcher looks LOOKS_PER_HEARTBEAT times a heartbeat, and a
        look that comes late (the loop was busy, and would be as slow to read an answer) counts in
        proportion, half for one twice as late. A server that is not responding keeps its session
        while calls wait on it: they end by their own timeout, or by its answer, which makes it
        ready again.
        """
        look = self.heartbeat / LOOKS_PER_HEARTBEAT
        received, silence, next_ping = connection.received, 0.0, self.heartbeat
        pinging = False

        async def ping() -> None:
            nonlocal pinging
            pinging = True
            try:
                # Any answer, an error too, is a message and proves the server alive; a closed
                # connection is seen by the watch itself.
                await connection.session.send_ping()
            except MCPError as exc:
                # A server that restarted is given a new session before a call needs it.
                if _session_unknown(exc):
                    connection.forget(self.forget_grace)
            except Exception:
                pass
            finally:
                pinging = False

        async with anyio.create_task_group() as pings:
            pings.start_soon(self._follow_tool_changes, connection)
            try:
                while True:
                    started = anyio.current_time()
                    with anyio.move_on_after(look):
                        await connection.closed.wait()
                    if connection.closed.is_set():
                        return connection.reason
                    if connection.received != received:
                        received, silence, next_ping = connection.received, 0.0, self.heartbeat
                        continue
                    silence += look * min(1.0, look / max(anyio.current_time() - started, look))
                    if silence >= next_ping and not pinging:
                        next_ping = silence + self.heartbeat
                        pings.start_soon(ping)
                    if silence >= self.heartbeat * SILENT_HEARTBEATS:
                        if self.state == "ready":
                            heard_nothing = self.heartbeat * SILENT_HEARTBEATS
                            self._set_state("down", f"not responding (no answer for {heard_nothing:g}s)")
                            log.warning("MCP server '%s' is %s", self.name, self.error)
                        if connection.calls == 0:  # nothing is lost by starting afresh
                            connection.close(self.error or "not responding")
                            return connection.reason
            finally:
                pings.cancel_scope.cancel()

    async def connection(self) -> _Connection:
        """The open connection, waiting a bounded time for a (re)connection or for the server to answer again."""
        connection = self._connection
        if connection is not None and self.state == "ready" and connection.usable:
            return connection  # the usual case, without the cost of a cancel scope
        asked_retry = False
        with anyio.move_on_after(self.connect_timeout):
            while True:
                connection = self._connection
                if connection is not None and self.state == "ready" and connection.usable:
                    return connection
                if self.state == "down" and connection is None:
                    if asked_retry:
                        break
                    self._retry_now.set()
                    asked_retry = True
                await self._changed.wait()
        if self.state == "connecting":
            raise ServerUnavailable(f"MCP server '{self.name}' did not connect within {self.connect_timeout:g}s")
        raise ServerUnavailable(f"MCP server '{self.name}' is unavailable: {self.error}")

    async def call_tool(
        self,
        tool: str,
        arguments: dict[str, Any],
        *,
        timeout: float,
        on_progress: ProgressCallback | None,
        asker: Asker | None = None,
        input_responses: InputResponses | None = None,
        request_state: str | None = None,
    ) -> CallToolResult | InputRequiredResult:
        """Call `tool`; a server on protocol 2026-07-28 may answer InputRequiredResult (web/input_rounds.py)."""
        self._check_supported(tool)
        connection = await self.connection()
        call = {
            "timeout": timeout,
            "on_progress": on_progress,
            "asker": asker,
            "input_responses": input_responses,
            "request_state": request_state,
        }
        try:
            return await self._call(connection, tool, arguments, **call)
        except MCPError as exc:
            if not _session_unknown(exc):
                raise await self._failure(connection, tool, exc) from None
            # The server restarted and forgot our session: it refused the call without running it,
            # so one retry on a new session is safe.
            connection.forget(self.forget_grace)
        connection = await self.connection()
        try:
            return await self._call(connection, tool, arguments, **call)
        except MCPError as exc:
            raise await self._failure(connection, tool, exc) from None

    def _check_supported(self, tool: str) -> None:
        listed = next((known for known in self.tools if known.name == tool), None)
        execution = listed.execution if listed is not None else None
        if execution is not None and execution.task_support == "required":
            raise ToolCallError(
                f"'{tool}' on MCP server '{self.name}' can only run as an MCP task (execution.taskSupport "
                f'"required"): {limitation("MCP tasks")}'
            )

    async def _call(
        self,
        connection: _Connection,
        tool: str,
        arguments: dict[str, Any],
        *,
        timeout: float,
        on_progress: ProgressCallback | None,
        asker: Asker | None,
        input_responses: InputResponses | None,
        request_state: str | None,
    ) -> CallToolResult | InputRequiredResult:
        connection.calls += 1
        unreadable_before = connection.unreadable
        flight = connection.requests.take_off(asker)
        try:
            # Our own deadline, not the SDK's read timeout: the SDK reports that with -32001, a code a
            # server may answer with too. Cancelled this way, the SDK still tells the server
            # (notifications/cancelled), so the tool stops. It stops while a person is asked.
            with anyio.move_on_after(timeout) as flight.deadline:
                return await connection.session.call_tool(
                    tool,
                    arguments,
                    progress_callback=on_progress,
                    input_responses=input_responses,
                    request_state=request_state,
                    allow_input_required=True,
                )
        finally:
            connection.requests.land(flight)
            connection.calls -= 1
            if connection.forgotten and connection.calls == 0:
                connection.close(SESSION_FORGOTTEN)
        if flight.failure is not None:
            raise flight.failure
        message = f"'{tool}' on MCP server '{self.name}' did not answer within {timeout:g}s"
        if connection.unreadable > unreadable_before:
            message += f"; meanwhile it sent a message that could not be read ({connection.last_unreadable})"
        raise CallTimeout(message)

    async def _failure(self, connection: _Connection, tool: str, exc: MCPError) -> ToolCallError:
        """What a call that ended in a JSON-RPC error tells the user: the server's answer, or a lost connection."""
        if exc.error.code == URL_ELICITATION_REQUIRED:
            try:
                elicitations = ElicitationRequiredErrorData.model_validate(exc.error.data).elicitations
            except ValidationError:
                elicitations = []
            if elicitations:
                return UrlElicitationRequired(
                    f"'{tool}' on MCP server '{self.name}' needs a person to visit a page first: "
                    + " ".join(exc.error.message.split()),
                    elicitations,
                )
        refusal = refusal_of(exc.error)
        if refusal is not None:  # the HTTP server answered, so nothing was lost; its own words say why
            code = f" (code {refusal.code})" if refusal.code is not None else ""
            return ToolCallError(f"MCP server '{self.name}' answered {refusal}{code}")
        if exc.error.code == CONNECTION_CLOSED and await self._lost(connection):
            return ServerUnavailable(f"MCP server '{self.name}' closed the connection during the call")
        message = " ".join(exc.error.message.split())
        return ToolCallError(f"MCP server '{self.name}' answered with an error: {message} (code {exc.error.code})")

    async def _lost(self, connection: _Connection) -> bool:
        """Whether a "connection closed" error (-32000) came from our side rather than from the server.

        The SDK reports a transport that ended, and an HTTP response stream that broke off during the
        call, with the code a server may answer with itself. The transport decides: it has ended, or
        the server does not answer a ping (an HTTP server that went away fails the ping, which ends
        the transport and has the supervisor reconnect).
        """
        if connection.closed.is_set():
            return True
        with anyio.move_on_after(self.connect_timeout):
            try:
                await connection.session.send_ping()
            except MCPError as exc:
                answered = refusal_of(exc.error) is not None
                return connection.closed.is_set() or (exc.error.code == CONNECTION_CLOSED and not answered)
            except Exception:
                return True
            return False
        return True


def _unreadable(exc: Exception) -> str:
    """Why a message could not be read, in one line: pydantic's first complaint, not its headline."""
    if isinstance(exc, ValidationError) and exc.errors():
        return exc.errors()[0]["msg"]
    return describe(exc)


def _session_unknown(exc: MCPError) -> bool:
    refusal = refusal_of(exc.error)
    return refusal is not None and refusal.session_unknown


class _WatchedStream:
    """A transport's read stream that reports each message the server sends, and the stream's end.

    Each message proves the server alive, so the heartbeat need not ping a server that is talking.
    The end is known the moment it comes: a server that dies while idle (a stdio process that
    crashed) is replaced before the next call needs it, and a call failed because the stream ended
    is told apart from a server that answered with the same error code.
    """

    def __init__(self, stream: Any, *, on_message: Callable[[Any], None], on_end: Callable[[], None]) -> None:
        self._stream = stream
        self._on_message = on_message
        self._on_end = on_end

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    async def __aenter__(self) -> _WatchedStream:
        await self._stream.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        # The session stops reading here and only then fails the calls still waiting, which must
        # find the connection closed already.
        self._on_end()
        return await self._stream.__aexit__(*exc_info)

    def __aiter__(self) -> _WatchedStream:
        return self

    async def __anext__(self) -> Any:
        try:
            item = await self._stream.__anext__()
        except (StopAsyncIteration, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_end()
            raise
        self._on_message(item)
        return item

    async def receive(self) -> Any:
        try:
            item = await self._stream.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_end()
            raise
        self._on_message(item)
        return item
