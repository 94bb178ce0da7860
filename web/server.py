"""How `stepline serve` runs uvicorn: bounded connections, timed-out request heads, and a process that
degrades instead of spinning when it runs out of file descriptors.

uvicorn bounds a connection only between requests (`timeout_keep_alive`, and any byte cancels that
timer): a client that never finishes a request head holds its socket for ever. Its `limit_concurrency`
answers 503 per request, while idle sockets go on holding descriptors. So the h11 protocol here closes
a connection whose request head has not arrived within `header_timeout` of the server starting to wait
for it (bytes trickling in do not extend that), and refuses connections past `max_connections` at once.

When descriptors run out all the same, asyncio's accept loop logs a traceback for every failed
`accept()` (up to the listen backlog per second); here that becomes one warning now and then.

SIGHUP reads the scenario folder and the mcpServers config again, without a restart.

A server reachable from other machines starts only with a way to know who calls it (the portal's proxy
header, API tokens, or anonymous requests explicitly allowed): never as an open door, never as a locked one.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import resource
import signal
import sqlite3
import time
from typing import Any

import h11
import psycopg
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from web.auth import parse_role_map
from web.database import Database, Location
from web.hosts import TrustedProxies, is_loopback
from web.settings import Settings
from web.tokens import TokenAdmin, now_utc

log = logging.getLogger(__name__)

# Descriptors kept for all but client connections: the history database, MCP servers' pipes and
# sockets, logs, the listening socket, the event loop's own.
RESERVED_DESCRIPTORS = 100
# A recurring problem is said at most this often, with how many times it happened meanwhile.
WARNING_INTERVAL_SECONDS = 10
# Slots free up continuously as idle connections time out, so a client may try again soon.
RETRY_AFTER_SECONDS = 1
# After a 408 the client may still be sending its head: read (and drop) it this long, so its next
# byte does not meet a closed socket, whose reset would discard the 408 before the client reads it.
LINGER_SECONDS = 2.0
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# Anonymous requests allowed beyond the loopback: whoever can reach the address has that role.
ANONYMOUS_EXPOSED_WARNING = (
    "Listening on %s, which is reachable from other machines: requests that name nobody are served with "
    "the %s role (--allow-anonymous), so anyone who can reach this address has it."
)
NO_IDENTITY_SOURCE = (
    "not starting: {host} is reachable from other machines, and no one could be identified there. Configure "
    "one of: --auth-header X-Forwarded-User --trusted-proxies ADDRESS (the portal's proxy names the user), "
    "an API token (stepline token create NAME --role ROLE {history}), "
    "or --allow-anonymous ROLE (anyone who can reach the address gets ROLE). Or bind to 127.0.0.1."
)


class ServeRefused(Exception):
    """Why `stepline serve` will not start, saying what to configure."""


def check_access(settings: Settings) -> None:
    """Refuse an identity configuration that cannot work, or a server others can reach but nobody could use."""
    try:
        parse_role_map(settings.role_map)
    except ValueError as exc:
        raise ServeRefused(f"--role-map (STEPLINE_ROLE_MAP): {exc}") from None
    try:
        proxies = TrustedProxies(settings.trusted_proxies)
    except ValueError as exc:
        raise ServeRefused(f"--trusted-proxies (STEPLINE_TRUSTED_PROXIES): {str(exc).partition(': ')[2]}") from None
    if settings.auth_header and not (proxies.anyone or proxies.networks):
        raise ServeRefused(
            f"--auth-header {settings.auth_header} needs --trusted-proxies: the addresses of the proxies that set "
            "it (e.g. 127.0.0.1 or 10.0.0.0/8). From anywhere else the header is refused, so nobody would be "
            "identified by it."
        )
    if settings.auth_header and not settings.role_map:
        raise ServeRefused(
            f"--auth-header {settings.auth_header} needs --role-map: the role of each group, e.g. "
            "readers=viewer,ops=operator,admins=admin (*=viewer for any user the proxy names). Without it every "
            "user the proxy names would be refused."
        )
    if is_loopback(settings.host) or settings.auth_header or settings.allow_anonymous is not None:
        return
    if not active_tokens(settings):
        history = f"--database {Location.of(settings.data_dir, settings.database_url).shown}" if settings.database_url \
            else f"--data-dir {settings.data_dir}"
        raise ServeRefused(NO_IDENTITY_SOURCE.format(host=settings.host or "every address", history=history))


def active_tokens(settings: Settings) -> int:
    """API tokens neither revoked nor expired in the history database; none when history is off, the file does
    not exist yet or the database cannot be reached (starting then fails, saying why)."""
    if not settings.history:
        return 0
    location = Location.of(settings.data_dir, settings.database_url)
    if location.dialect == "sqlite" and not location.path.is_file():
        return 0
    try:
        database = Database.connect(location)
    except (sqlite3.Error, psycopg.Error):
        return 0
    try:
        now = now_utc()
        return sum(1 for token in TokenAdmin(database).tokens() if token.state(now) == "active")
    except (sqlite3.Error, psycopg.Error):  # no tokens table yet (a database from before tokens): none
        return 0
    finally:
        database.close()


def _plain_response(status: str, text: str, *extra_headers: str) -> bytes:
    body = text.encode()
    head = [
        f"HTTP/1.1 {status}",
        "content-type: text/plain; charset=utf-8",
        f"content-length: {len(body)}",
        "connection: close",
        *extra_headers,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


BUSY_RESPONSE = _plain_response(
    "503 Service Unavailable",
    "Too many open connections. Try again in a moment.\n",
    f"retry-after: {RETRY_AFTER_SECONDS}",
)
HEAD_TIMEOUT_RESPONSE = _plain_response("408 Request Timeout", "The request headers took too long to arrive.\n")


class OccasionalWarning:
    """Logs a recurring warning at most once per interval, counting the times in between."""

    def __init__(self, message: str, interval: float = WARNING_INTERVAL_SECONDS) -> None:
        self.message = message
        self.interval = interval
        self.count = 0
        self.last_logged = -math.inf

    def __call__(self, *args: object) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.last_logged >= self.interval:
            log.warning(self.message + " (%d time(s) since the last such warning)", *args, self.count)
            self.count = 0
            self.last_logged = now


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a cap on open connections and a deadline for each request head.

    `guarded_protocol` makes a subclass with the limits set.
    """

    max_connections = 4000
    header_timeout = 10.0
    refused_warning = OccasionalWarning("Refused a connection: %d are open, the most allowed (max_connections)")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None
        self._refused = False
        self._lingering = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections:
            # Refused before it costs anything but the moment its descriptor is open.
            self._refused = True
            self.refused_warning(len(self.connections))
            transport.write(BUSY_RESPONSE)
            transport.close()
            return
        super().connection_made(transport)
        self._await_request_head()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._lingering:  # what a timed-out client still sends is dropped unread
            super().data_received(data)

    def eof_received(self) -> None:
        if self._lingering:
            self.transport.close()
            return
        super().eof_received()

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:
            self._cancel_head_deadline()  # the head arrived (or the connection is over)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Waiting for the next request: idle or not, its head has the same time to arrive.
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._await_request_head()

    def _await_request_head(self) -> None:
        self._cancel_head_deadline()
        self._head_deadline = self.loop.call_later(self.header_timeout, self._head_overdue)

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_overdue(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing():
            return
        received, _ = self.conn.trailing_data
        if not received:  # an idle keep-alive connection is just closed
            self.transport.close()
            return
        # Part of a head: say why, then stop sending and let the client finish before closing.
        self._lingering = True
        self.transport.write(HEAD_TIMEOUT_RESPONSE)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)


def guarded_protocol(max_connections: int, header_timeout: float) -> type[GuardedH11Protocol]:
    attributes = {"max_connections": max_connections, "header_timeout": header_timeout}
    return type("GuardedH11Protocol", (GuardedH11Protocol,), attributes)


class AcceptFailureLog:
    """The event loop's exception handler: a failed `accept()` for want of descriptors is said now and then."""

    def __init__(self) -> None:
        self.warn = OccasionalWarning(
            "Cannot accept connections: %s. They wait in the listen queue until descriptors are free"
        )

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        # asyncio stops accepting for a second after each such failure, so nothing spins meanwhile.
        if isinstance(exc, OSError) and exc.errno in OUT_OF_RESOURCES and "accept" in context.get("message", ""):
            self.warn(exc.strerror)
            return
        loop.default_exception_handler(context)


class GuardedServer(uvicorn.Server):
    """uvicorn's server, quiet when descriptors run out, and reading its scenarios and MCP config again on SIGHUP."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._reloads: set[asyncio.Task[None]] = set()

    async def startup(self, sockets: Any = None) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(AcceptFailureLog())
        # Before the app starts: SIGHUP's default action would end the process, history and all.
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        await super().startup(sockets=sockets)

    def reload(self) -> None:
        # The lifespan hands its reload over in its state, once the app has started.
        reload = getattr(self.lifespan, "state", {}).get("reload")
        if reload is None or self.should_exit:
            log.warning("SIGHUP ignored: the app is %s", "stopping" if self.should_exit else "still starting")
            return
        log.info("SIGHUP: reading the scenario folder and the MCP config again")
        task = asyncio.get_running_loop().create_task(reload(), name="reload on SIGHUP")
        self._reloads.add(task)  # a task nobody holds may be collected before it ends
        task.add_done_callback(self._reloaded)

    def _reloaded(self, task: asyncio.Task[None]) -> None:
        self._reloads.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("Reload on SIGHUP failed", exc_info=task.exception())


def raise_descriptor_limit() -> int:
    """Raise the soft limit on open files to the hard one; return the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return soft  # no ceiling to raise it to safely: some systems refuse RLIM_INFINITY for files
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("Could not raise the open-files limit from %d to %d: %s", soft, hard, exc)
            return soft
        return hard
    return soft


def connection_cap(requested: int, descriptors: int) -> int:
    """`requested`, lowered (with a warning) to what `descriptors` allow beside the reserved ones."""
    if descriptors == resource.RLIM_INFINITY:
        return requested
    allowed = max(1, descriptors - RESERVED_DESCRIPTORS)
    if requested > allowed:
        log.warning(
            "max_connections lowered from %d to %d: this process may open only %d files (ulimit -n), "
            "%d of them kept for everything but client connections. Raise the limit to serve more.",
            requested,
            allowed,
            descriptors,
            RESERVED_DESCRIPTORS,
        )
        return allowed
    return requested


def serve(settings: Settings) -> bool:
    """Serve the app until a signal stops it; False when it could not start, ServeRefused when it should not."""
    from web.app import create_app

    check_access(settings)
    if not is_loopback(settings.host) and settings.allow_anonymous is not None:
        log.warning(ANONYMOUS_EXPOSED_WARNING, settings.host or "every address", settings.allow_anonymous.value)
    max_connections = connection_cap(settings.max_connections, raise_descriptor_limit())
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        root_path=settings.root_path,
        http=guarded_protocol(max_connections, settings.header_timeout),
        timeout_keep_alive=settings.header_timeout,  # type: ignore[arg-type]  # a float works as well
        # The app believes X-Forwarded-* itself, and only from forwarded_allow_ips (uvicorn trusts 127.0.0.1).
        proxy_headers=False,
        # Streams close themselves on shutdown; this bounds anything else that lingers.
        timeout_graceful_shutdown=5,
    )
    server = GuardedServer(config)
    server.run()
    return server.started
