"""A client of Stepline's JSON API for `stepline run`: start a run, follow its events, cancel it.

It speaks HTTP to a running Stepline (`remote`), or to the app in this process (`in_process`): the
real app, its lifespan run here, reached through an ASGI transport that hands on each chunk of a
response as the app sends it (httpx's own ASGITransport waits for the whole body, so an event
stream would arrive only once its run had ended). One code path for both.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from starlette.types import ASGIApp, Message

from web.settings import Settings

# Keep-alive comments come every `sse_ping` seconds (15 by default): a stream silent for much longer
# than that has been lost without a word, and is opened again.
STREAM_READ_TIMEOUT_SECONDS = 60.0
REQUEST_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 10.0
# A lost event stream is opened again, waiting longer each time, until it has failed this long.
RECONNECT_FIRST_DELAY_SECONDS = 0.5
RECONNECT_MAX_DELAY_SECONDS = 5.0
RECONNECT_GIVE_UP_SECONDS = 120.0
# A response whose reader has left is given this long to notice (http.disconnect) and end by itself.
DISCONNECT_GRACE_SECONDS = 5.0
# The in-process app is reached by no network: any name would do, this one its host check accepts.
IN_PROCESS_URL = "http://127.0.0.1"
# An answer that is not Stepline's JSON is quoted this far, to say what did answer.
QUOTED_CHARS = 200


class ApiError(Exception):
    """The server answered with an error status, or not with JSON: `detail` is its JSON detail, or its text."""

    def __init__(self, status: int, detail: Any, what: str) -> None:
        super().__init__(f"{what}: {status} {detail if isinstance(detail, str) else json.dumps(detail)}")
        self.status = status
        self.detail = detail
        self.what = what


class Unreachable(Exception):
    """No answer at all from the server (it is down, or the URL is wrong)."""


class RunLost(Exception):
    """The run's event stream could not be followed to its end."""


class RunClient:
    """The JSON API calls a command-line run makes, over `http` (whose base URL is the server's)."""

    def __init__(self, http: httpx.AsyncClient, *, on_reconnect: Callable[[str], None] | None = None) -> None:
        self.http = http
        self.on_reconnect = on_reconnect or (lambda reason: None)

    @property
    def base_url(self) -> str:
        return str(self.http.base_url).rstrip("/")

    async def _request(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self.http.request(method, path.lstrip("/"), **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(f"cannot reach Stepline at {self.base_url}: {_reason(exc)}") from None
        if response.status_code >= 400:
            raise ApiError(response.status_code, _detail(response), what)
        return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        what = f"{method} {path}"
        response = await self._request(method, path, what, **kwargs)
        try:
            return response.json()
        except ValueError:  # not a Stepline at that address, or not its API
            raise ApiError(response.status_code, f"not JSON: {_detail(response)}", what) from None

    async def start(self, scenario_id: str, run_input: dict[str, Any]) -> dict[str, Any]:
        """POST /api/runs: the accepted run (its `run_id`), or ApiError (404 unknown scenario, 422 bad input)."""
        return await self._json("POST", "/api/runs", json={"scenario_id": scenario_id, "input": run_input})

    async def scenario_ids(self) -> list[str]:
        summaries = await self._json("GET", "/api/scenarios")
        return [str(summary["id"]) for summary in summaries if isinstance(summary, dict) and "id" in summary]

    async def snapshot(self, run_id: str) -> dict[str, Any]:
        return await self._json("GET", f"/api/runs/{run_id}")

    async def cancel(self, run_id: str) -> None:
        """Ask for the run to be cancelled; one that has already ended (409) is left as it ended."""
        try:
            await self._request("POST", f"/api/runs/{run_id}/cancel", f"POST /api/runs/{run_id}/cancel")
        except ApiError as exc:
            if exc.status != 409:
                raise

    async def events(self, run_id: str) -> AsyncIterator[dict[str, Any]]:
        """Every event of the run, in order, up to `run_finished`.

        A stream that drops is opened again with `Last-Event-ID`, so nothing is lost or repeated;
        RunLost once it has failed for RECONNECT_GIVE_UP_SECONDS, or the server no longer knows the run.
        """
        path = f"api/runs/{run_id}/events"
        last_seq = 0
        failing_since: float | None = None
        delay = RECONNECT_FIRST_DELAY_SECONDS
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_seq:
                headers["Last-Event-ID"] = str(last_seq)
            try:
                async with self.http.stream("GET", path, headers=headers, timeout=_stream_timeout()) as response:
                    if 400 <= response.status_code < 500:  # the run is not there (404), or never will be
                        await response.aread()
                        raise RunLost(f"GET /{path}: {response.status_code} {_detail(response)}")
                    if response.status_code != 200:  # 503 (too many streams) and the like: try again
                        await response.aread()
                        reason = f"{response.status_code} {_detail(response)}"
                    else:
                        async for event in sse_events(response.aiter_lines()):
                            # Events coming again: a drop after this one gets the whole time to recover.
                            failing_since, delay = None, RECONNECT_FIRST_DELAY_SECONDS
                            last_seq = event.get("seq", last_seq)
                            yield event
                            if event.get("type") == "run_finished":
                                return
                        reason = "the server closed the event stream before the run ended"
            except httpx.TransportError as exc:
                reason = _reason(exc)
            now = time.monotonic()
            if failing_since is None:
                failing_since = now
            elif now - failing_since > RECONNECT_GIVE_UP_SECONDS:
                raise RunLost(f"lost the run's event stream for {RECONNECT_GIVE_UP_SECONDS:g} s: {reason}")
            self.on_reconnect(reason)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_DELAY_SECONDS)


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """The JSON `data` of each Server-Sent Event; comments (keep-alives) and other fields are passed over."""
    data: list[str] = []
    async for line in lines:
        if line == "":
            if data:
                text = "\n".join(data)
                try:
                    yield json.loads(text)
                except ValueError:
                    raise RunLost(f"the event stream sent an event that is not JSON: {text[:QUOTED_CHARS]}") from None
            data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


def _stream_timeout() -> httpx.Timeout:
    return httpx.Timeout(REQUEST_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS, read=STREAM_READ_TIMEOUT_SECONDS)


def _detail(response: httpx.Response) -> Any:
    try:
        return response.json()["detail"]
    except (ValueError, KeyError, TypeError):
        text = response.text.strip()
        return text[:QUOTED_CHARS] + ("…" if len(text) > QUOTED_CHARS else "") if text else response.reason_phrase


def _reason(exc: httpx.TransportError) -> str:
    return str(exc) or type(exc).__name__


@contextlib.asynccontextmanager
async def remote(url: str, **client_options: Any) -> AsyncIterator[RunClient]:
    """A client of the Stepline at `url` (a path prefix, as a reverse proxy serves it, is kept)."""
    timeout = httpx.Timeout(REQUEST_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS)
    async with httpx.AsyncClient(base_url=url.rstrip("/") + "/", timeout=timeout) as http:
        yield RunClient(http, **client_options)


@contextlib.asynccontextmanager
async def in_process(settings: Settings, **client_options: Any) -> AsyncIterator[RunClient]:
    """A client of the app built from `settings`, run in this process: its lifespan (MCP servers,
    history) starts here and ends when the block does."""
    from web.app import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app) as state:
        state = dict(state or {})
        # As `serve` does before it takes requests; and the servers' start-up banners, written to their
        # stderr (ours), then come before the progress display instead of through it.
        await state["pool"].settle()
        transport = StreamingASGITransport(app, state)
        try:
            async with httpx.AsyncClient(transport=transport, base_url=IN_PROCESS_URL + "/") as http:
                yield RunClient(http, **client_options)
        finally:
            # What a server does on shutdown: streams are told to stop before the lifespan ends.
            app.state.stop_runs()
            await transport.aclose()


class StreamingASGITransport(httpx.AsyncBaseTransport):
    """Requests served by an ASGI app in this event loop, each response body handed on as it is sent.

    `state` is the lifespan's state, given to every request as a server would.
    """

    def __init__(self, app: ASGIApp, state: dict[str, Any], client: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        self.app = app
        self.state = state
        self.client = client
        self._tasks: set[asyncio.Task[None]] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "headers": [(key.lower(), value) for key, value in request.headers.raw],
            "scheme": request.url.scheme,
            "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query,
            "server": (request.url.host, request.url.port or 80),
            "client": self.client,
            "root_path": "",
            "state": dict(self.state),
        }
        response = _AsgiResponse()

        async def receive() -> Message:
            if not response.body_read:
                response.body_read = True
                return {"type": "http.request", "body": body, "more_body": False}
            await response.closed.wait()
            return {"type": "http.disconnect"}

        task = asyncio.create_task(self._serve(scope, receive, response))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        response.task = task
        start = await response.started
        headers = [(bytes(key), bytes(value)) for key, value in start.get("headers", [])]
        return httpx.Response(start["status"], headers=headers, stream=response, request=request)

    async def _serve(self, scope: dict[str, Any], receive: Callable[[], Any], response: _AsgiResponse) -> None:
        try:
            await self.app(scope, receive, response.send)
        except Exception as exc:
            # After the response has started, the app has answered (a 500 page) and logged it itself.
            if not response.started.done():
                response.started.set_exception(exc)
        finally:
            if not response.started.done():
                response.started.set_exception(RuntimeError("the app sent no response"))
            response.chunks.put_nowait(None)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class _AsgiResponse(httpx.AsyncByteStream):
    """One response in flight: its start, its body chunks as they come, and whether the reader has left."""

    def __init__(self) -> None:
        self.started: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        # The reader is this process's own loop, which takes each chunk as soon as the app yields.
        self.chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.body_read = False
        self.task: asyncio.Task[None] | None = None

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started.set_result(message)
        elif message["type"] == "http.response.body":
            if chunk := message.get("body", b""):
                self.chunks.put_nowait(chunk)
            if not message.get("more_body", False):
                self.chunks.put_nowait(None)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (chunk := await self.chunks.get()) is not None:
            yield chunk

    async def aclose(self) -> None:
        # The app learns the client has gone (http.disconnect) and ends the response itself.
        self.closed.set()
        if self.task is not None and not self.task.done():
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.task), DISCONNECT_GRACE_SECONDS)
            self.task.cancel()
