"""Server-Sent Event streams of a run: views of its one event list, resumable by seq.

`curl -N http://127.0.0.1:8000/api/runs/<run_id>/events` shows the frames; add
`-H 'Last-Event-ID: 3'` (or `?last_event_id=3`) to resume after event 3.

Every reader of a run is sent the same bytes for an event: each frame (JSON, or the HTML fragment
it changes) is made once and written to all. Streams are limited in number, and a reader that stops
taking frames is dropped (web.stream_budget, web.stream_response).
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from sse_starlette import ServerSentEvent
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from web.events import EventType, StepStatus
from web.graph import step_node
from web.registry import RunRecord
from web.run_state import INPUT_EVENTS
from web.scenarios import Scenario
from web.step_cards import answering
from web.store_rows import event_json
from web.stream_budget import StreamsFull
from web.stream_response import EventStream, FrameRenderer
from web.templating import is_embedded, templates
from web.views import run_view

# A page whose stream drops comes back within a second instead of the browser's default three.
HTML_RECONNECT_MS = 1000

# Frames of recent events, shared by every stream: the readers of a live run all ask for the newest,
# and a replay's cost is its own. Bounded in bytes too, since one event may carry a large output.
FRAMES_KEPT = 1024
FRAME_BYTES_KEPT = 64 * 1024 * 1024
# A fragment carries a form token (valid two days, tied to no viewer): draw it afresh now and then.
FRAME_MAX_AGE_SECONDS = 3600


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


class FrameCache:
    """Encoded frames by (event, variant), oldest dropped first past `max_frames` or `max_bytes`.

    Each entry holds its event, so the event's id cannot be reused while its frames are kept.
    """

    def __init__(self, max_frames: int, max_bytes: int, max_age: float) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.max_age = max_age
        self._frames: OrderedDict[tuple[int, Hashable], tuple[dict[str, Any], bytes, float]] = OrderedDict()
        self._bytes = 0

    def get(self, event: dict[str, Any], variant: Hashable) -> bytes | None:
        entry = self._frames.get((id(event), variant))
        if entry is None or time.monotonic() - entry[2] > self.max_age:
            return None
        return entry[1]

    def put(self, event: dict[str, Any], variant: Hashable, frame: bytes) -> None:
        key = (id(event), variant)
        if (old := self._frames.pop(key, None)) is not None:
            self._bytes -= len(old[1])
        self._frames[key] = (event, frame, time.monotonic())
        self._bytes += len(frame)
        while len(self._frames) > 1 and (len(self._frames) > self.max_frames or self._bytes > self.max_bytes):
            self._bytes -= len(self._frames.popitem(last=False)[1][1])


_frames = FrameCache(FRAMES_KEPT, FRAME_BYTES_KEPT, FRAME_MAX_AGE_SECONDS)


# Characters JSON keeps as they are that many line readers (Python's str.splitlines, httpx's iter_lines)
# take for line breaks, though SSE does not: escaped, they cannot cut an event's one `data:` line.
LINE_BREAKS_TO_ESCAPE = {"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def json_frame(event: dict[str, Any]) -> bytes:
    frame = _frames.get(event, "json")
    if frame is None:
        # The history's encoding of the event, made once for both; compact JSON holds no line break, so
        # it is one `data:` line, as ServerSentEvent would write it.
        data = event_json(event) or json.dumps(event, ensure_ascii=False, separators=(",", ":"))
        if not data.isascii():
            for char, escape in LINE_BREAKS_TO_ESCAPE.items():
                if char in data:
                    data = data.replace(char, escape)
        frame = f"id: {event['seq']}\r\nevent: {event['type']}\r\ndata: {data}\r\n\r\n".encode()
        _frames.put(event, "json", frame)
    return frame


def html_frame(
    request: Request, record: RunRecord, scenario: Scenario | None, *, can_answer: bool = False
) -> FrameRenderer:
    """Each event as the fragment it changes, for the run page's htmx SSE extension.

    Step events send that step's `_step.html` as event `step-<index>`, after its node of the graph
    (`_graph_node.html`) as event `node-<index>`; run_started sends `_run_status.html` as `run-status`;
    run_finished sends it as `run-finished` (the page closes its stream on that name), with, for runs
    recorded before skipped steps had events of their own, the cards and nodes of the steps that never
    ran, swapped out of band. A request to a person (input_requested, input_answered, input_drafted)
    changes its step like a step event, and the run's header too (its status, the title, the "Waiting for
    input" list), sent as `run-status` before the card; so does the end of a step that had asked.

    A fragment is drawn once per event, when a stream first needs it, from the run's state at that
    moment (the event's or later), and every viewer is sent those bytes: every viewer who may answer
    the run's requests, whose cards hold the forms, and every other, whose cards show what is asked.
    Each step's last event comes after everything else that changes the step, so its fragment, whenever
    drawn, shows the step's final state: a replayed or resumed stream may pass through older states on
    the way but ends on the latest, and can neither repeat a step nor leave one behind.

    A step event drawn once the step has a later event is sent as its id alone (a request's, as the
    run's header alone): the later event's fragments, drawn no earlier, show everything this one's
    would. A replay, or a stream that falls behind a for_each step's items, draws each step (card and
    node) once instead of once per event.
    """
    # All a fragment takes from its request: the proxy's path prefix, the embedded mode of its links, and
    # whether its cards carry the forms.
    variant = ("html", request.scope.get("root_path", ""), is_embedded(request), can_answer)

    def render(event: dict[str, Any]) -> bytes:
        frame = _frames.get(event, variant)
        if frame is None:
            frame = _draw(request, record, scenario, event, can_answer)
            _frames.put(event, variant, frame)
        return frame

    return render


def _draw(
    request: Request, record: RunRecord, scenario: Scenario | None, event: dict[str, Any], can_answer: bool
) -> bytes:
    kind = event["type"]
    of_step = kind.startswith("step_") or kind in INPUT_EVENTS
    view = run_view(record.state, scenario, event["seq"])
    context = {"request": request, "run": view}
    header = b""
    if kind in INPUT_EVENTS or (kind == EventType.STEP_FINISHED and _asked(record, event)):
        status = templates.get_template("_run_status.html").render({**context, "stream": True})
        header = ServerSentEvent(data=status, event="run-status").encode()
    if of_step:
        step = record.state.steps.get(event["step_name"])
        if step is not None and step.seq > event["seq"]:
            return header + ServerSentEvent(id=str(event["seq"])).encode()
    node = b""
    if of_step:
        step_view = view.step(event["index"])
        name = f"step-{step_view.index}"
        html = templates.get_template("_step.html").render(
            {**context, "step": step_view, **answering(request, can_answer)}
        )
        # The step's node in the graph goes first, with no id: the card's id then covers both.
        face = templates.get_template("_graph_node.html").render({**context, "face": step_node(step_view)})
        node = ServerSentEvent(data=face, event=f"node-{step_view.index}").encode()
    else:
        name = "run-finished" if kind == EventType.RUN_FINISHED else "run-status"
        html = templates.get_template("_run_status.html").render({**context, "stream": True})
        if name == "run-finished":
            # Steps that never ran have a skipped event of their own, except in runs recorded before that.
            step_template = templates.get_template("_step.html")
            node_template = templates.get_template("_graph_node.html")
            never_ran = [step for step in view.steps if step.status == StepStatus.SKIPPED and step.state is None]
            html += "".join(step_template.render({**context, "step": step, "oob": True}) for step in never_ran)
            html += "".join(
                node_template.render({**context, "face": step_node(step), "oob": True}) for step in never_ran
            )
    frame = ServerSentEvent(data=html, event=name, id=str(event["seq"]), retry=HTML_RECONNECT_MS).encode()
    return header + node + frame


def _asked(record: RunRecord, finished: dict[str, Any]) -> bool:
    """Whether a step that ended asked a person anything since it started: its end closes what is still open."""
    name = finished["step_name"]
    for event in reversed(record.events[: finished["seq"] - 1]):
        if event.get("step_name") != name:
            continue
        if event["type"] == EventType.INPUT_REQUESTED:
            return True
        if event["type"] == EventType.STEP_STARTED:
            return False
    return False


def event_stream(request: Request, record: RunRecord, render: FrameRenderer, *, after: int) -> Response:
    """Replay then tail `record` from `after`, each event rendered by `render`; 503 when no place is left."""
    try:
        place = request.app.state.stream_budget.open(record)
    except StreamsFull as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": str(exc.retry_after)}) from None
    return EventStream(record, render, after, place)
