"""`stepline mcp`: the scenarios as MCP tools over stdio, for clients that start their servers as commands.

In this process (the app as `serve` builds it, its lifespan run without any HTTP listener, the history in
the data directory) or, with `--server URL`, as a bridge to a running `stepline serve`: the messages of the
client on stdin/stdout are relayed unchanged to `URL/mcp` over streamable HTTP with the API token, so
progress, questions and cancellation pass through both ways.

Nothing but JSON-RPC goes to stdout: logging is on stderr, and while the session lasts the SDK's stdio
transport points file descriptor 1 at stderr, so stray output from anything else misses the wire too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx2
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from mcp.client.streamable_http import streamable_http_client
from mcp.server.stdio import stdio_server
from mcp.shared.inbound import (
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    MCP_PROTOCOL_VERSION_HEADER,
    NAME_BEARING_METHODS,
    encode_header_value,
    mcp_param_headers,
    x_mcp_header_map,
)
from mcp.shared.message import ClientMessageMetadata, SessionMessage
from mcp_types import PROTOCOL_VERSION_META_KEY, JSONRPCNotification, JSONRPCRequest, JSONRPCResponse, RequestId

from web.app import create_app
from web.mcp_serving import ScenarioServer
from web.settings import Settings
from web.store import StoreError

log = logging.getLogger(__name__)

EXIT_DONE = 0  # the client closed stdin
EXIT_FAILED = 1  # Stepline unreachable, or refusing the token
EXIT_BAD_USAGE = 2
DEFAULT_TOKEN_ENV = "STEPLINE_TOKEN"
DEFAULT_DATA_DIR = Settings.model_fields["data_dir"].default
# How long the bridge waits for Stepline to answer its first look at /mcp before calling it unreachable.
PROBE_TIMEOUT_SECONDS = 10.0
# No read timeout: a call's answer may wait a day for a person, and the client keeps its own time.
BRIDGE_TIMEOUT = httpx2.Timeout(30.0, read=None)
# Stopped by a signal: how long calls in flight have to answer, and their answers to reach stdout.
ANSWER_SECONDS = 5.0
WRITE_SECONDS = 0.5
# Options that configure a Stepline in this process; a bridged one has its own.
LOCAL_OPTIONS = ("scenarios", "mcp_config", "data_dir", "roots", "wait_timeout", "call_timeout", "public_url")


class BridgeFailed(Exception):
    """The bridge cannot reach Stepline, or Stepline refuses it; the message says which and what to do."""


def mcp_command(args: argparse.Namespace, settings: Settings) -> int:
    if args.server is None:
        if args.token_env is not None:
            return _usage("--token-env: only with --server, which sends the token")
        return _serve_here(settings)
    local = [f"--{name.replace('_', '-')}" for name in LOCAL_OPTIONS if getattr(args, name, None) is not None]
    if local:
        return _usage(f"{', '.join(local)}: only for scenarios served in this process; --server has its own")
    if not args.server.startswith(("http://", "https://")):
        return _usage(f"--server {args.server}: give Stepline's address as a URL, e.g. http://127.0.0.1:8000")
    try:
        token = _token(args.token_env)
        asyncio.run(bridge(args.server, token))
    except BridgeFailed as exc:
        print(f"stepline mcp: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        pass
    return EXIT_DONE


def _usage(message: str) -> int:
    print(f"stepline mcp: {message}", file=sys.stderr)
    return EXIT_BAD_USAGE


# In this process ---------------------------------------------------------------------------------------------


def _serve_here(settings: Settings) -> int:
    # Bound to no network: the host settings only matter to a listener, and there is none.
    settings = settings.model_copy(update={"host": "127.0.0.1", "allowed_hosts": None})
    try:
        asyncio.run(serve_here(settings))
    except StoreError as exc:
        hint = ""
        if "in use by another Stepline process" in str(exc):
            hint = (
                ". To call the scenarios of the Stepline using it, relay to it with `stepline mcp --server URL`; "
                "or give this one its own --data-dir"
            )
        elif settings.data_dir == DEFAULT_DATA_DIR:
            # MCP clients start their servers in a folder of their own choosing, often not a writable one.
            hint = ". Give a data directory with --data-dir (an absolute path: clients start servers anywhere)"
        print(f"stepline mcp: {exc}{hint}", file=sys.stderr)
        return EXIT_BAD_USAGE
    return EXIT_DONE


async def serve_here(settings: Settings) -> None:
    """The app's lifespan without a listener, its MCP server on stdio until the client closes stdin or a
    signal stops it; then the lifespan ends as at any shutdown (runs in flight end as they do then)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app) as state:
        server: ScenarioServer = state["mcp"]
        session = asyncio.ensure_future(server.serve_stdio())
        signalled = asyncio.Event()
        with _on_stop_signals(signalled.set):
            waiting = asyncio.ensure_future(signalled.wait())
            await asyncio.wait({session, waiting}, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
        if session.done():
            session.result()  # the client closed stdin (or the session failed, said by its traceback)
        else:
            await _end_session(server, session)
    if not session.done():
        # Its stdin reader is a thread blocked on a client that keeps stdin open, which nothing can interrupt.
        # The history is closed and everything recorded: end here rather than wait for the client's next line.
        sys.stderr.flush()
        os._exit(EXIT_DONE)


async def _end_session(server: ScenarioServer, session: asyncio.Future[None]) -> None:
    """Stopped by a signal with the client still connected: as when `serve` stops, calls in flight answer now
    and leave their runs to end as runs do at shutdown; then the session is closed."""
    server.stop()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(ANSWER_SECONDS):
            while server.in_flight:
                await asyncio.sleep(0.05)
    # The last answers leave the handlers before they are written to stdout: give them that moment.
    await asyncio.sleep(WRITE_SECONDS)
    session.cancel()
    await asyncio.wait({session}, timeout=WRITE_SECONDS)


@contextlib.contextmanager
def _on_stop_signals(stop: Callable[[], None]) -> Iterator[None]:
    """SIGTERM and SIGINT end the session, not the process at once: the lifespan still closes the history.
    A second signal, once the session is ending, stops the process as by default."""
    loop = asyncio.get_running_loop()
    stop_signals = (signal.SIGTERM, signal.SIGINT)
    for number in stop_signals:
        loop.add_signal_handler(number, stop)
    try:
        yield
    finally:
        for number in stop_signals:
            loop.remove_signal_handler(number)


# Bridged to a running Stepline -------------------------------------------------------------------------------


def _token(token_env: str | None) -> str | None:
    if token_env is None:
        return os.environ.get(DEFAULT_TOKEN_ENV) or None
    token = os.environ.get(token_env)
    if not token:
        raise BridgeFailed(f"--token-env {token_env}: that environment variable is not set")
    return token


async def bridge(url: str, token: str | None) -> None:
    """Relay the stdio client's messages to Stepline's /mcp and back until either side ends."""
    endpoint = f"{url.rstrip('/')}/mcp"
    headers = {"Authorization": f"Bearer {token}"} if token else None
    refusal = _Refusal(endpoint, has_token=token is not None)
    async with httpx2.AsyncClient(
        headers=headers, timeout=BRIDGE_TIMEOUT, event_hooks={"response": [refusal.check]}
    ) as http:
        await probe(http, endpoint)
        async with stdio_server() as (from_client, to_client):
            failure = await _relay_session(http, endpoint, refusal, from_client, to_client)
            if failure is not None:
                # The client is still connected, and stdin's reader is a thread blocked until it writes or
                # closes stdin, which nothing here can interrupt: say why and end now, so the client sees it.
                print(f"stepline mcp: {failure}", file=sys.stderr, flush=True)
                os._exit(EXIT_FAILED)


async def _relay_session(
    http: httpx2.AsyncClient,
    endpoint: str,
    refusal: _Refusal,
    from_client: ObjectReceiveStream[SessionMessage | Exception],
    to_client: ObjectSendStream[SessionMessage],
) -> BridgeFailed | None:
    """Relay until either side ends: None when the client closed stdin, else why Stepline's side ended."""
    client_closed = False
    try:
        async with (
            streamable_http_client(endpoint, http_client=http) as (from_stepline, to_stepline),
            anyio.create_task_group() as relays,
        ):
            stamps = HeaderStamps()

            async def client_to_stepline() -> None:
                nonlocal client_closed
                await _relay(from_client, to_stepline, stamps.outbound)
                client_closed = True
                relays.cancel_scope.cancel()

            async def stepline_to_client() -> None:
                await _relay(from_stepline, to_client, stamps.inbound)
                relays.cancel_scope.cancel()

            relays.start_soon(client_to_stepline)
            relays.start_soon(stepline_to_client)
    except BaseExceptionGroup as group:
        return _failure(group, endpoint)
    if refusal.reason is not None:  # refused on a message whose failure the transport only logs
        return BridgeFailed(refusal.reason)
    if not client_closed:
        return BridgeFailed(f"Stepline at {endpoint} ended the session")
    return None


def _failure(group: BaseExceptionGroup, endpoint: str) -> BridgeFailed:
    """What ended the relays, said plainly: Stepline refusing the token, or the connection to it lost."""
    refused, _ = group.split(BridgeFailed)
    if refused is not None:
        failure = _first(refused)
        assert isinstance(failure, BridgeFailed)
        return failure
    lost, _ = group.split(httpx2.TransportError)
    if lost is not None:
        return BridgeFailed(f"lost the connection to Stepline at {endpoint}: {_reason(_first(lost))}")
    log.error("The relay to %s failed", endpoint, exc_info=group)
    return BridgeFailed(f"the relay to {endpoint} failed: {_reason(_first(group))}")


def _first(group: BaseExceptionGroup) -> BaseException:
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


async def _relay(
    source: ObjectReceiveStream[SessionMessage | Exception],
    sink: ObjectSendStream[SessionMessage],
    adapt: Callable[[SessionMessage], SessionMessage],
) -> None:
    async with sink:
        async for message in source:
            if isinstance(message, Exception):
                # A line that is no JSON-RPC message: said here, as a server would log it; nothing to relay.
                log.warning("Dropped a message that could not be read: %s", message)
                continue
            await sink.send(adapt(message))


async def probe(http: httpx2.AsyncClient, endpoint: str) -> None:
    """Fail now, saying why, when Stepline cannot be reached or refuses the token: the client would only
    see its first request fail, with no reason it could show."""
    try:
        async with http.stream(
            "GET", endpoint, headers={"Accept": "text/event-stream"}, timeout=PROBE_TIMEOUT_SECONDS
        ) as response:
            status = response.status_code  # a refusal was raised by its hook already
    except httpx2.TransportError as exc:
        raise BridgeFailed(f"cannot reach Stepline at {endpoint}: {_reason(exc)}") from None
    if status == 404:
        raise BridgeFailed(f"{endpoint} answered 404: is {endpoint.removesuffix('/mcp')} the root of a Stepline?")
    if status >= 500:
        raise BridgeFailed(f"Stepline at {endpoint} answered {status}: it cannot serve MCP clients now")


class _Refusal:
    """Watches every response: a 401 or 403 means nothing more will work with this token, so the bridge ends."""

    def __init__(self, endpoint: str, *, has_token: bool) -> None:
        self.endpoint = endpoint
        self.has_token = has_token
        self.reason: str | None = None

    async def check(self, response: httpx2.Response) -> None:
        if response.status_code not in (401, 403):
            return
        await response.aread()
        detail = _detail(response)
        if response.status_code == 403:
            self.reason = f"Stepline at {self.endpoint} refused the token: {detail}"
        elif self.has_token:
            self.reason = f"Stepline at {self.endpoint} refused the token: {detail}"
        else:
            self.reason = (
                f"Stepline at {self.endpoint} asks for an API token ({detail}). Create one with "
                f"`stepline token create NAME --role operator --data-dir <the server's data dir>` and put it in "
                f"${DEFAULT_TOKEN_ENV} (or name another variable with --token-env)"
            )
        raise BridgeFailed(self.reason)


def _detail(response: httpx2.Response) -> str:
    try:
        body = response.json()
        detail = body.get("error_description") or body.get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail) if detail else f"HTTP {response.status_code}"


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class HeaderStamps:
    """The HTTP headers streamable HTTP asks of each message, which an SDK client session would have set.

    A handshake-era session sends the negotiated `MCP-Protocol-Version` with every message after
    `initialize`; a 2026 request carries its version in `params._meta`, mirrored in headers with its method,
    the name it concerns, and the tool arguments its input schema marks `x-mcp-header`.
    """

    def __init__(self) -> None:
        self.negotiated: str | None = None
        self.asked: dict[RequestId, str] = {}  # the requests whose answers teach something: id → method
        self.param_headers: dict[str, dict[tuple[str, ...], str]] = {}  # tool name → argument path → header

    def outbound(self, message: SessionMessage) -> SessionMessage:
        inner = message.message
        if not isinstance(inner, JSONRPCRequest | JSONRPCNotification):
            # Answers to Stepline's own requests: the transport adds the version it has seen.
            return message
        if isinstance(inner, JSONRPCRequest) and inner.method in ("initialize", "tools/list"):
            self.asked[inner.id] = inner.method
        params = inner.params or {}
        meta = params.get("_meta")
        version = meta.get(PROTOCOL_VERSION_META_KEY) if isinstance(meta, dict) else None
        headers: dict[str, str] = {}
        if isinstance(version, str):
            headers = {MCP_PROTOCOL_VERSION_HEADER: version, MCP_METHOD_HEADER: inner.method}
            name_key = NAME_BEARING_METHODS.get(inner.method)
            if name_key is not None and isinstance(name := params.get(name_key), str):
                headers[MCP_NAME_HEADER] = encode_header_value(name)
            if inner.method == "tools/call" and isinstance(name := params.get("name"), str):
                header_map = self.param_headers.get(name)
                arguments = params.get("arguments")
                if header_map and isinstance(arguments, dict):
                    headers.update(mcp_param_headers(header_map, arguments))
        elif self.negotiated is not None and inner.method != "initialize":
            headers = {MCP_PROTOCOL_VERSION_HEADER: self.negotiated}
        if not headers:
            return message
        return SessionMessage(inner, metadata=ClientMessageMetadata(headers=headers))

    def inbound(self, message: SessionMessage) -> SessionMessage:
        inner = message.message
        if isinstance(inner, JSONRPCResponse) and (method := self.asked.pop(inner.id, None)) is not None:
            self._learn(method, inner.result)
        return message

    def _learn(self, method: str, result: dict[str, Any]) -> None:
        if method == "initialize" and isinstance(version := result.get("protocolVersion"), str):
            self.negotiated = version
        elif method == "tools/list":
            for tool in result.get("tools") or []:
                if isinstance(tool, dict) and isinstance(name := tool.get("name"), str):
                    self.param_headers[name] = x_mcp_header_map(tool.get("inputSchema"))
