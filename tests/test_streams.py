"""A run's event stream: frames, replay, live tail, resume, keep-alive and shutdown.

Whole streams are read from the in-process app; what must be read while the stream is still open
(a live tail, a client leaving mid-run) or needs a signal uses a real `stepline serve`.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import StepServer, start_server, wait_until
from inprocess import InProcessApp
from runs import get_run, run_to_end, start_run, wait_finished
from sse import Comment, Frame, aread_events, frames, parse_lines, parse_text, read_events

NEWS = "news_source_discovery_v1"
NEWS_INPUT = {"url": "https://signal.example/culture/lighthouse-library-explainer"}
NEWS_STEPS = ["fetch_article", "search_news_sources", "pick_earliest", "trace_citations"]
# The fields design.md promises on each event type, besides type, run_id and seq.
EVENT_FIELDS = {
    "run_started": {"scenario_id", "started_at"},
    "step_started": {"step_name", "index", "started_at"},
    "step_progress": {"step_name", "index", "progress", "total", "message"},
    "step_finished": {"step_name", "index", "status", "started_at", "finished_at", "message", "output"},
    "run_finished": {"status", "finished_at", "message"},
}
TIMESTAMPS = {"started_at", "finished_at"}


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StepServer]:
    """Demo tools take 0.3 s each (progress every 75 ms): streams read while their run is live."""
    server = start_server(tmp_path_factory.mktemp("slow"), env={"STEPLINE_DEMO_DELAY": "0.3"})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def finished(demo_app: InProcessApp) -> tuple[str, list[dict[str, Any]]]:
    """A finished run of the news scenario and its complete event list."""
    run_id = run_to_end(demo_app.client, NEWS, NEWS_INPUT)["run_id"]
    return run_id, read_events(demo_app.client, run_id)


def events_url(server: StepServer, run_id: str) -> str:
    return f"{server.url}/api/runs/{run_id}/events"


def events_path(run_id: str) -> str:
    return f"/api/runs/{run_id}/events"


# --- Frames and replay ----------------------------------------------------------------------------


def test_replayed_frames_carry_seq_type_and_json(demo_app: InProcessApp, finished: tuple[str, Any]) -> None:
    run_id, _ = finished
    response = demo_app.get(events_path(run_id))  # returns only once the stream ends

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    items = parse_text(response.text)
    stream = list(frames(items))
    assert stream, response.text
    for expected_seq, frame in enumerate(stream, start=1):
        event = frame.json()
        assert frame.id == str(event["seq"]) == str(expected_seq)
        assert frame.event == event["type"]
        assert event["run_id"] == run_id
        assert set(event) >= {"type", "run_id", "seq", *EVENT_FIELDS[event["type"]]}, event
        for key in TIMESTAMPS & set(event):
            assert datetime.fromisoformat(event[key]).utcoffset() is not None, event
    assert stream[0].event == "run_started"
    assert stream[-1].event == "run_finished"
    assert stream[-1].json()["status"] == "success"
    # Nothing but the blank line that ends it follows run_finished.
    assert items[-1] == stream[-1]


def test_events_tell_the_runs_story_in_order(finished: tuple[str, list[dict[str, Any]]]) -> None:
    _, events = finished
    shape = [(e["type"], e.get("step_name")) for e in events if e["type"] != "step_progress"]

    assert shape == [
        ("run_started", None),
        *[pair for step in NEWS_STEPS for pair in (("step_started", step), ("step_finished", step))],
        ("run_finished", None),
    ]
    for event in events:
        if event["type"].startswith("step_"):
            assert event["index"] == NEWS_STEPS.index(event["step_name"])
    progress = [e for e in events if e["type"] == "step_progress"]
    assert {e["step_name"] for e in progress} == set(NEWS_STEPS)


def test_stream_agrees_with_the_snapshot(demo_app: InProcessApp, finished: tuple[str, Any]) -> None:
    run_id, events = finished
    snapshot = get_run(demo_app.client, run_id)
    finished_steps = {e["step_name"]: e for e in events if e["type"] == "step_finished"}

    assert snapshot["status"] == events[-1]["status"]
    for step in snapshot["steps"]:
        event = finished_steps[step["node_id"]]
        assert (step["status"], step["started_at"], step["finished_at"], step["output"]) == (
            event["status"],
            event["started_at"],
            event["finished_at"],
            event["output"],
        )


def test_stream_headers_let_a_proxy_pass_events_through(demo_app: InProcessApp, finished: tuple[str, Any]) -> None:
    run_id, _ = finished
    response = demo_app.get(events_path(run_id), headers={"Accept-Encoding": "gzip, deflate, br"})

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert "content-encoding" not in response.headers
    assert list(frames(parse_text(response.text)))[-1].event == "run_finished"


# --- Resume ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["header", "query"])
def test_resume_after_event_n_of_a_finished_run(
    demo_app: InProcessApp, finished: tuple[str, list[dict[str, Any]]], how: str
) -> None:
    run_id, events = finished
    for seen in [0, 1, 2, len(events) // 2, len(events) - 1, len(events)]:
        if how == "header":
            resumed = read_events(demo_app.client, run_id, headers={"Last-Event-ID": str(seen)})
        else:
            resumed = read_events(demo_app.client, run_id, params={"last_event_id": str(seen)})
        assert resumed == events[seen:], seen


def test_the_header_wins_over_the_query_parameter(
    demo_app: InProcessApp, finished: tuple[str, list[dict[str, Any]]]
) -> None:
    run_id, events = finished
    resumed = read_events(demo_app.client, run_id, headers={"Last-Event-ID": "4"}, params={"last_event_id": "2"})

    assert resumed == events[4:]


def test_resume_a_live_run_loses_and_repeats_nothing(slow_server: StepServer) -> None:
    run_id = start_run(slow_server.url, NEWS, NEWS_INPUT)["run_id"]
    first: list[dict[str, Any]] = []
    with httpx.stream("GET", events_url(slow_server, run_id), timeout=10) as response:
        for frame in frames(parse_lines(response.iter_lines())):
            first.append(frame.json())
            if len(first) == 3:
                break
    assert get_run(slow_server.url, run_id)["status"] == "running"

    rest = read_events(slow_server.url, run_id, headers={"Last-Event-ID": str(first[-1]["seq"])})

    assert first + rest == read_events(slow_server.url, run_id)
    assert [e["seq"] for e in first + rest] == list(range(1, len(first) + len(rest) + 1))


# --- Live tail --------------------------------------------------------------------------------------


def test_live_tail_shows_progress_as_it_happens(slow_server: StepServer) -> None:
    run_id = start_run(slow_server.url, NEWS, NEWS_INPUT)["run_id"]
    events: list[dict[str, Any]] = []
    status_at_first_progress = None
    with httpx.stream("GET", events_url(slow_server, run_id), timeout=10) as response:
        for frame in frames(parse_lines(response.iter_lines())):
            events.append(frame.json())
            if frame.event == "step_progress" and status_at_first_progress is None:
                status_at_first_progress = get_run(slow_server.url, run_id)["status"]

    # The progress event reached us while the run was still going: a live tail, not a replay.
    assert status_at_first_progress == "running"
    progress = [e for e in events if e["type"] == "step_progress"]
    assert {e["step_name"] for e in progress} == set(NEWS_STEPS)
    for event in progress:
        assert event["total"] and 0 <= event["progress"] <= event["total"]
        assert event["message"]
    assert events[-1]["type"] == "run_finished" and events[-1]["status"] == "success"
    assert events == read_events(slow_server.url, run_id)


def test_keepalive_comments_flow_while_a_step_is_slow(slow_demo_app: InProcessApp) -> None:
    # Keep-alive comments every 0.2 s, tools of 0.3 s: the whole stream, once read, shows where they fell.
    run_id = start_run(slow_demo_app.client, NEWS, NEWS_INPUT)["run_id"]
    items = parse_text(slow_demo_app.get(events_path(run_id)).text)

    running: str | None = None
    comments_during_steps = 0
    for item in items:
        if isinstance(item, Frame) and item.event == "step_started":
            running = item.json()["step_name"]
        elif isinstance(item, Frame) and item.event == "step_finished":
            running = None
        elif isinstance(item, Comment) and running is not None:
            comments_during_steps += 1
    assert comments_during_steps >= 1, items


def test_concurrent_subscribers_receive_the_same_events(slow_demo_app: InProcessApp) -> None:
    run_id = start_run(slow_demo_app.client, NEWS, NEWS_INPUT)["run_id"]

    async def subscribe_eight() -> tuple[bool, list[list[dict[str, Any]]]]:
        live = not slow_demo_app.state["runs"].held(run_id).is_finished
        async with slow_demo_app.async_client() as client:
            received = await asyncio.gather(*(aread_events(client, run_id) for _ in range(8)))
        return live, list(received)

    # All eight subscribe at once, while the run has a second of steps ahead of it: a live tail each.
    live_when_subscribed, received = slow_demo_app.call(subscribe_eight())

    full = read_events(slow_demo_app.client, run_id)
    assert live_when_subscribed
    assert full[-1]["type"] == "run_finished" and full[-1]["status"] == "success"
    assert len(received) == 8
    assert all(events == full for events in received)


def test_a_client_leaving_mid_run_does_not_break_it(slow_server: StepServer) -> None:
    run_id = start_run(slow_server.url, NEWS, NEWS_INPUT)["run_id"]
    for _ in range(3):
        with httpx.stream("GET", events_url(slow_server, run_id), timeout=10) as response:
            for frame in frames(parse_lines(response.iter_lines())):
                if frame.event == "step_progress":
                    break  # leaving the block drops the connection mid-stream

    run = wait_finished(slow_server.url, run_id)

    assert run["status"] == "success"
    assert [s["status"] for s in run["steps"]] == ["success"] * len(NEWS_STEPS)
    assert httpx.get(f"{slow_server.url}/healthz").json()["status"] == "ok"
    assert read_events(slow_server.url, run_id)[-1]["status"] == "success"
    assert "Traceback" not in slow_server.log()


# --- Shutdown -------------------------------------------------------------------------------------


def child_pids(pid: int) -> set[int]:
    out = subprocess.run(["ps", "--ppid", str(pid), "-o", "pid="], capture_output=True, text=True).stdout
    return {int(line) for line in out.split()}


def alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "\nState:\tZ" not in status.read_text()
    except FileNotFoundError:
        return False


def stream_until_sigterm(server: StepServer, run_id: str) -> list[dict[str, Any]]:
    """The run's events as streamed live, SIGTERM sent at its first progress; read until the server ends it."""
    events: list[dict[str, Any]] = []
    signalled = False
    with httpx.stream("GET", events_url(server, run_id), timeout=10) as response:
        for frame in frames(parse_lines(response.iter_lines())):
            events.append(frame.json())
            if frame.event == "step_progress" and not signalled:
                signalled = True
                server.process.send_signal(signal.SIGTERM)
    assert signalled
    return events


def assert_stopped_with_its_children(server: StepServer, children: set[int]) -> None:
    # The 2 s tool call was cut short, not waited for; the process exits, its demo server with it.
    assert server.process.wait(timeout=15) in (0, -signal.SIGTERM)
    wait_until(lambda: not any(alive(pid) for pid in children), 5, "the demo server process to exit")
    demo_processes = subprocess.run(["pgrep", "-f", "web.demo"], capture_output=True, text=True).stdout.split()
    assert children.isdisjoint(int(pid) for pid in demo_processes)
    assert "Traceback" not in server.log()


def test_sigterm_without_a_history_ends_live_runs_open_streams_and_children(make_server: Any) -> None:
    server: StepServer = make_server("--no-history", env={"STEPLINE_DEMO_DELAY": "2"})
    children = child_pids(server.process.pid)
    assert children, "the demo MCP server should run as a child process"
    run_id = start_run(server.url, NEWS, NEWS_INPUT)["run_id"]

    events = stream_until_sigterm(server, run_id)
    # The stream ended by itself, after telling us how the run ended: interrupted by the shutdown (nothing could
    # resume it), recorded as failed so that it is told apart from a user's cancel.
    assert events[-1]["type"] == "run_finished"
    assert (events[-1]["status"], events[-1]["message"]) == (
        "failed", "Interrupted: the server shut down while this run was in progress"
    )
    (stopped_step,) = [e for e in events if e["type"] == "step_finished" and e["status"] != "skipped"]
    assert (stopped_step["step_name"], stopped_step["status"], stopped_step["message"]) == (
        "fetch_article", "cancelled", "Interrupted: the server shut down during this step"
    )
    assert_stopped_with_its_children(server, children)


def test_sigterm_ends_open_streams_and_children_and_the_run_goes_on_after_the_restart(
    make_server: Any, make_app: Callable[..., InProcessApp], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    server: StepServer = make_server("--data-dir", str(data), env={"STEPLINE_DEMO_DELAY": "2"})
    children = child_pids(server.process.pid)
    assert children, "the demo MCP server should run as a child process"
    run_id = start_run(server.url, NEWS, NEWS_INPUT)["run_id"]

    events = stream_until_sigterm(server, run_id)
    # The stream ended by itself without an ending: the run is left as it was, to go on after the restart.
    assert [e["type"] for e in events][:2] == ["run_started", "step_started"]
    assert not [e for e in events if e["type"] in ("step_finished", "run_finished")]
    assert_stopped_with_its_children(server, children)

    # A reader reconnecting with the last seq it saw simply sees the run go on, with nothing lost or repeated.
    app = make_app(data_dir=data)
    seen = events[-1]["seq"]
    rest = read_events(app.client, run_id, headers={"Last-Event-ID": str(seen)})
    assert [e["seq"] for e in rest] == list(range(seen + 1, seen + 1 + len(rest)))
    [resumed] = [position for position, e in enumerate(rest) if e["type"] == "run_resumed"]
    # Only the step's last progress, if it came after the stream ended, before it.
    assert {e["type"] for e in rest[:resumed]} <= {"step_progress"}
    assert rest[resumed]["rerun_steps"] == ["fetch_article"]
    assert (rest[-1]["type"], rest[-1]["status"]) == ("run_finished", "success")
    finished = [e["step_name"] for e in rest if e["type"] == "step_finished" and e["status"] == "success"]
    assert finished == NEWS_STEPS
