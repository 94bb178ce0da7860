"""Server-Sent Event streams of a run: views of its one event list, resumable by seq.

`curl -N http://127.0.0.1:8000/api/runs/<run_id>/events` shows the frames; add
`-H 'Last-Event-ID: 3'` (or `?last_event_id=3`) to resume after event 3.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request

from web.registry import RunRecord

# Long enough for every live run to record its cancellation when the server stops.
SHUTDOWN_GRACE_SECONDS = 3.0
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

FrameRenderer = Callable[[dict[str, Any]], ServerSentEvent]


class BadLastEventId(ValueError):
    pass


def resume_point(request: Request) -> int:
    """The seq a reconnecting client has already seen: header first, then the query parameter."""
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id") or "0"
    try:
        seq = int(raw)
    except ValueError:
        raise BadLastEventId(f"Last-Event-ID must be an event's seq (a whole number), not {raw!r}") from None
    if seq < 0:
        raise BadLastEventId(f"Last-Event-ID must not be negative, got {seq}")
    return seq


def json_frame(event: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(
        data=json.dumps(event, ensure_ascii=False, separators=(",", ":")), event=event["type"], id=str(event["seq"])
    )


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
) -> AsyncIterator[ServerSentEvent]:
    # When the server stops, live runs are cancelled so this stream can tell its reader how the
    # run ended (run_finished) and close, instead of being cut off mid-run.
    watcher = asyncio.create_task(_stop_runs_on(shutdown, stop_runs))
    try:
        async for event in record.follow(after):
            yield render(event)
    finally:
        watcher.cancel()


async def _stop_runs_on(shutdown: anyio.Event, stop_runs: Callable[[], None]) -> None:
    await shutdown.wait()
    stop_runs()
