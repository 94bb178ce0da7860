"""Server-Sent Event streams of a run: views of its one event list, resumable by seq.

`curl -N http://127.0.0.1:8000/api/runs/<run_id>/events` shows the frames; add
`-H 'Last-Event-ID: 3'` (or `?last_event_id=3`) to resume after event 3.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request

from web.registry import RunRecord
from web.scenarios import Scenario
from web.templating import templates
from web.views import run_view

# Long enough for every live run to record its cancellation when the server stops.
SHUTDOWN_GRACE_SECONDS = 3.0
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# A page whose stream drops comes back within a second instead of the browser's default three.
HTML_RECONNECT_MS = 1000

# Several events already recorded go out in one write, up to this many (a long replay is still chunked).
MAX_EVENTS_PER_WRITE = 64
# Every subscriber of a run is sent the same JSON frame for an event: encode each one once. Recent events
# only: subscribers of a live run all ask for the newest, and a replay's cost is its own.
ENCODED_FRAMES_KEPT = 1024

FrameRenderer = Callable[[dict[str, Any]], ServerSentEvent | bytes]
_encoded: OrderedDict[int, tuple[dict[str, Any], bytes]] = OrderedDict()


class BadLastEventId(ValueError):
    def __init__(self, message: str, loc: list[str]) -> None:
        super().__init__(message)
        self.loc = loc  # where the bad value came from, for a 422's `loc`


def resume_point(request: Request) -> int:
    """The seq a reconnecting client has already seen: header first, then the query parameter."""
    if header := request.headers.get("last-event-id"):
        raw, name, loc = header, "Last-Event-ID", ["header", "Last-Event-ID"]
    else:
        raw = request.query_params.get("last_event_id") or "0"
        name, loc = "last_event_id", ["query", "last_event_id"]
    try:
        seq = int(raw)
    except ValueError:
        raise BadLastEventId(f"{name} must be an event's seq (a whole number), not {raw!r}", loc) from None
    if seq < 0:
        raise BadLastEventId(f"{name} must not be negative, got {seq}", loc)
    return seq


def json_frame(event: dict[str, Any]) -> bytes:
    cached = _encoded.get(id(event))
    if cached is not None and cached[0] is event:  # holding the event keeps its id from being reused
        return cached[1]
    frame = ServerSentEvent(
        data=json.dumps(event, ensure_ascii=False, separators=(",", ":")), event=event["type"], id=str(event["seq"])
    ).encode()
    _encoded[id(event)] = (event, frame)
    if len(_encoded) > ENCODED_FRAMES_KEPT:
        _encoded.popitem(last=False)
    return frame


def html_frame(request: Request, record: RunRecord, scenario: Scenario | None) -> FrameRenderer:
    """Each event as the fragment it changes, for the run page's htmx SSE extension.

    Step events send that step's `_step.html` as event `step-<index>`; run_started sends
    `_run_status.html` as `run-status`; run_finished sends it as `run-finished` (the page closes
    its stream on that name) with the steps that never ran, swapped out of band. Fragments are
    drawn from the run's state now, not as of the event: a replayed event swaps in the same
    latest state again, so a resumed stream can neither repeat a step nor leave one behind.
    """

    def render(event: dict[str, Any]) -> ServerSentEvent:
        view = run_view(record.state, scenario, event["seq"])
        context = {"request": request, "run": view}
        if event["type"].startswith("step_"):
            name = f"step-{event['index']}"
            html = templates.get_template("_step.html").render({**context, "step": view.step(event["index"])})
        else:
            name = "run-finished" if event["type"] == "run_finished" else "run-status"
            html = templates.get_template("_run_status.html").render({**context, "stream": True})
            if name == "run-finished":
                step_template = templates.get_template("_step.html")
                html += "".join(
                    step_template.render({**context, "step": step, "oob": True})
                    for step in view.steps
                    if step.status == "skipped"
                )
        return ServerSentEvent(data=html, event=name, id=str(event["seq"]), retry=HTML_RECONNECT_MS)

    return render


def event_stream(
    request: Request, record: RunRecord, render: FrameRenderer, *, after: int
) -> EventSourceResponse:
    """Replay then tail `record` from `after`, each event rendered by `render`."""
    shutdown = anyio.Event()
    return EventSourceResponse(
        _frames(record, render, after, shutdown, request.app.state.stop_runs),
        headers=STREAM_HEADERS,
        ping=request.app.state.settings.sse_ping,
        shutdown_event=shutdown,
        shutdown_grace_period=SHUTDOWN_GRACE_SECONDS,
    )


async def _frames(
    record: RunRecord,
    render: FrameRenderer,
    after: int,
    shutdown: anyio.Event,
    stop_runs: Callable[[], None],
) -> AsyncIterator[bytes]:
    # When the server stops, live runs are cancelled so this stream can tell its reader how the
    # run ended (run_finished) and close, instead of being cut off mid-run.
    watcher = asyncio.create_task(_stop_runs_on(shutdown, stop_runs))
    try:
        async with contextlib.aclosing(record.follow(after)) as events:
            async for event in events:
                # Let the run go first: woken with every other subscriber by an event, this stream
                # waits its turn behind the run's own next step (its MCP request) instead of ahead of it.
                await asyncio.sleep(0)
                frames = [_encode(render(event))]
                # What is already recorded goes out in one write: a burst (a step's end and the next
                # one's start) or a subscriber that fell behind costs one send, not one per event.
                while (
                    event["type"] != "run_finished"
                    and event["seq"] < len(record.events)
                    and len(frames) < MAX_EVENTS_PER_WRITE
                ):
                    event = await anext(events)
                    frames.append(_encode(render(event)))
                yield b"".join(frames)
    finally:
        watcher.cancel()


def _encode(frame: ServerSentEvent | bytes) -> bytes:
    return frame if isinstance(frame, bytes) else frame.encode()


async def _stop_runs_on(shutdown: anyio.Event, stop_runs: Callable[[], None]) -> None:
    await shutdown.wait()
    stop_runs()
