"""The real app in this process: its lifespan, MCP servers and history, reached over httpx.ASGITransport.

`InProcessApp` runs the app on an event loop in a background thread, so tests stay plain functions:
`app.client` is a synchronous httpx client whose requests are served by httpx.ASGITransport on that
loop. No socket and no subprocess for Stepline itself (its MCP servers still run as real processes).

ASGITransport hands back a response once the app has finished it, so a stream is read whole when
its run ends: enough for the event list it carries. A test that must read a stream while it is
still open uses a real `stepline serve` (conftest.start_server).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from web.app import create_app
from web.settings import Settings

T = TypeVar("T")
BASE_URL = "http://127.0.0.1:8000"
# Long enough for any request of the suite (a stream lasts as long as its run).
REQUEST_TIMEOUT_SECONDS = 60


class _WithLifespanState:
    """What a server does after the lifespan: every request's scope gets a copy of the lifespan's state."""

    def __init__(self, app: ASGIApp, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app({**scope, "state": dict(self.state)}, receive, send)


class _SyncTransport(httpx.BaseTransport):
    """A synchronous transport that hands each request to an async one running on another loop."""

    def __init__(self, transport: httpx.AsyncBaseTransport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def send() -> tuple[int, httpx.Headers, bytes]:
            body = request.read()
            forwarded = httpx.Request(request.method, request.url, headers=request.headers, content=body)
            response = await self._transport.handle_async_request(forwarded)
            return response.status_code, response.headers, await response.aread()

        future = asyncio.run_coroutine_threadsafe(send(), self._loop)
        status, headers, content = future.result(REQUEST_TIMEOUT_SECONDS)
        # The body is whole already; drop the framing headers that described its transfer.
        headers = httpx.Headers([(k, v) for k, v in headers.multi_items() if k.lower() != "transfer-encoding"])
        return httpx.Response(status, headers=headers, content=content, request=request)


class InProcessApp:
    """The app built by `create_app(settings)`, started, and a client for it. Use with `with`."""

    def __init__(self, settings: Settings, *, client_address: tuple[str, int] = ("127.0.0.1", 50000)) -> None:
        self.settings = settings
        self.client_address = client_address
        self.app = create_app(settings)
        self.state: dict[str, Any] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="in-process app", daemon=True)
        self._stop: asyncio.Event | None = None
        self._lifespan: asyncio.Future[None] | None = None
        self.client: httpx.Client
        self._asgi_transport: httpx.ASGITransport

    def __enter__(self) -> InProcessApp:
        self._thread.start()
        started: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._lifespan = asyncio.run_coroutine_threadsafe(self._run_lifespan(started), self._loop)  # type: ignore[assignment]
        self.state = self.call(_wait(started))
        transport = httpx.ASGITransport(app=_WithLifespanState(self.app, self.state), client=self.client_address)
        self._asgi_transport = transport
        self.client = httpx.Client(transport=_SyncTransport(transport, self._loop), base_url=BASE_URL)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.client.close()
        assert self._stop is not None and self._lifespan is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        try:
            self._lifespan.result(30)  # type: ignore[union-attr]
        finally:
            # Whatever the app left running (sse-starlette's shutdown watcher) ends with the loop.
            self.call(_cancel_remaining(), timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    async def _run_lifespan(self, started: asyncio.Future[dict[str, Any]]) -> None:
        # Entered and left in one task, as a server does: the lifespan's cancel scopes require it.
        self._stop = asyncio.Event()
        try:
            async with self.app.router.lifespan_context(self.app) as state:
                started.set_result(dict(state or {}))
                await self._stop.wait()
                # What a server does on shutdown before the lifespan ends: streams are told to stop runs.
                self.app.state.stop_runs()
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            raise

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = REQUEST_TIMEOUT_SECONDS) -> T:
        """Run `coroutine` on the app's loop (to reach its registry, pool or store) and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start `coroutine` on the app's loop without waiting: e.g. a stream read while the test goes on."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def async_client(self) -> httpx.AsyncClient:
        """A client for coroutines run on the app's loop (`call`, `submit`): concurrent requests in one test."""
        return httpx.AsyncClient(transport=self._asgi_transport, base_url=BASE_URL)

    def wait_ready(self, timeout: float = 20) -> None:
        """Return once no MCP server is still connecting, as `stepline serve`'s start-up check does."""
        deadline = time.monotonic() + timeout
        while any(server["state"] == "connecting" for server in self.get("/healthz").json()["servers"].values()):
            if time.monotonic() > deadline:
                raise AssertionError(f"MCP servers still connecting after {timeout}s")
            time.sleep(0.02)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.post(path, **kwargs)


async def _cancel_remaining() -> None:
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _wait(future: asyncio.Future[T]) -> T:
    return await future


@contextmanager
def in_process(tmp_path: Path, *, demo_delay: float = 0, **settings: Any) -> Iterator[InProcessApp]:
    """The app with `settings` (its own data directory in `tmp_path` unless given).

    The bundled demo server's tools take `demo_delay` seconds (instant by default).
    """
    settings.setdefault("data_dir", tmp_path / f"stepline-data-{id(settings):x}")
    previous = os.environ.get("STEPLINE_DEMO_DELAY")
    # Read once, when the app builds its MCP server config.
    os.environ["STEPLINE_DEMO_DELAY"] = str(demo_delay)
    try:
        app = InProcessApp(Settings(**settings))
    finally:
        if previous is None:
            os.environ.pop("STEPLINE_DEMO_DELAY", None)
        else:
            os.environ["STEPLINE_DEMO_DELAY"] = previous
    with app:
        yield app
