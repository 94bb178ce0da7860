"""What event streams may cost: caps on open streams, stalled readers dropped, one fragment per event.

Streams held open need a real server (the in-process client hands a response back only once it ends):
those tests start `stepline serve` with small limits set through its environment variables.
"""

from __future__ import annotations

import contextlib
import errno
import json
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import PROJECT_ROOT, StepServer, wait_until
from inprocess import InProcessApp
from runs import get_run, start_run, wait_finished
from sse import Frame, frames, parse_lines, parse_text, read_events

NEWS = "news_source_discovery_v1"
NEWS_INPUT = {"url": "https://signal.example/culture/lighthouse-library-explainer"}
TOOLBOX = PROJECT_ROOT / "tests" / "servers" / "toolbox.py"


@contextlib.contextmanager
def open_stream(client: httpx.Client, path: str) -> Iterator[Iterator[Frame]]:
    """A stream held open: yields its frames as they come, once the first has arrived."""
    with client.stream("GET", path) as response:
        assert response.status_code == 200, response.read()
        stream = frames(parse_lines(response.iter_lines()))
        next(stream)
        yield stream


# --- Caps -----------------------------------------------------------------------------------------------


@pytest.fixture
def capped(make_server: Any) -> StepServer:
    """Two streams per run and three in all; demo tools slow enough that runs stay live throughout."""
    return make_server(
        env={"STEPLINE_DEMO_DELAY": "5", "STEPLINE_MAX_STREAMS_PER_RUN": "2", "STEPLINE_MAX_STREAMS": "3"}
    )


def assert_refused(response: httpx.Response, limit: str) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) > 0
    assert limit in response.json()["detail"]


def test_a_stream_past_a_runs_cap_is_refused_with_503_and_retry_after(capped: StepServer) -> None:
    run_id = start_run(capped.url, NEWS, NEWS_INPUT)["run_id"]
    with (
        httpx.Client(base_url=capped.url, timeout=10) as client,
        open_stream(client, f"/api/runs/{run_id}/events"),
        open_stream(client, f"/runs/{run_id}/stream"),
    ):
        refused = client.get(f"/api/runs/{run_id}/events")
        assert_refused(refused, f"Run {run_id} has 2 event streams open, the most one run allows")

        # The run page's stream is refused alike, with a page saying why.
        page = client.get(f"/runs/{run_id}/stream")
        assert page.status_code == 503
        assert int(page.headers["retry-after"]) > 0
        assert page.headers["content-type"].startswith("text/html")
        assert "the most one run allows" in page.text

        # The run itself, and everything else, is served as usual.
        assert client.get(f"/api/runs/{run_id}").json()["status"] == "running"


def test_a_stream_past_the_servers_cap_is_refused_and_a_freed_place_is_taken_again(capped: StepServer) -> None:
    first = start_run(capped.url, NEWS, NEWS_INPUT)["run_id"]
    second = start_run(capped.url, NEWS, NEWS_INPUT)["run_id"]
    with httpx.Client(base_url=capped.url, timeout=10) as client, contextlib.ExitStack() as held:
        held.enter_context(open_stream(client, f"/api/runs/{first}/events"))
        held.enter_context(open_stream(client, f"/api/runs/{second}/events"))
        with open_stream(client, f"/api/runs/{second}/events"):
            assert_refused(client.get(f"/api/runs/{first}/events"), "The server has 3 event streams open")
        # A reader that leaves gives its place back: the next one gets in.
        wait_until(lambda: client.head(f"/api/runs/{first}/events").status_code == 200, 5, "the place to be freed")
        with open_stream(client, f"/api/runs/{first}/events") as stream:
            assert next(stream).id == "2"


def test_streams_that_end_free_their_places(make_app: Any) -> None:
    app: InProcessApp = make_app(max_streams_per_run=1, max_streams=1)
    run_id = start_run(app.client, NEWS, NEWS_INPUT)["run_id"]
    wait_finished(app.client, run_id)

    # Each stream of the finished run replays it and ends; one place serves them all, one after another.
    for path in [f"/api/runs/{run_id}/events", f"/runs/{run_id}/stream", f"/api/runs/{run_id}/events"] * 3:
        response = app.get(path)
        assert response.status_code == 200, response.text
        assert list(frames(parse_text(response.text)))[-1].event in {"run_finished", "run-finished"}


# --- Readers that stop reading ---------------------------------------------------------------------------


@pytest.fixture
def bulky(make_server: Any, tmp_path: Path) -> StepServer:
    """A scenario of ~12 MB of events (far more than socket buffers hold), one stream per run, 1 s send timeout."""
    config = tmp_path / "mcp.json"
    toolbox = {"command": sys.executable, "args": [str(TOOLBOX), "stdio"]}
    config.write_text(json.dumps({"mcpServers": {"toolbox": toolbox}}))
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    steps = [{"name": "wait", "tool": "slow", "input": {"seconds": 0.5}}]
    steps += [{"name": f"echo{n}", "tool": "echo", "input": {"text": str(n % 10) * 100_000}} for n in range(40)]
    bulky = {"schema_version": "1", "scenario_id": "bulky", "name": "Bulky", "steps": steps}
    (scenarios / "bulky.json").write_text(json.dumps(bulky))
    return make_server(
        "--mcp-config", str(config), "--scenarios", str(scenarios),
        env={"STEPLINE_STREAM_SEND_TIMEOUT": "1", "STEPLINE_MAX_STREAMS_PER_RUN": "1"},
    )


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sent before it closed or reset the connection (socket.timeout if it did not)."""
    sock.settimeout(timeout)
    received = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(1 << 20):
            received.append(chunk)
    return b"".join(received)


def test_a_reader_that_stops_reading_is_dropped_and_resumes_where_it_stopped(bulky: StepServer) -> None:
    run_id = start_run(bulky.url, "bulky")["run_id"]
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", bulky.port))
    stalled.sendall(f"GET /api/runs/{run_id}/events HTTP/1.1\r\nHost: 127.0.0.1:{bulky.port}\r\n\r\n".encode())
    with stalled, httpx.Client(base_url=bulky.url, timeout=10) as client:
        # Its stream holds the run's one place while it is open.
        wait_until(lambda: client.head(f"/api/runs/{run_id}/events").status_code == 503, 5, "the stream to open")

        # The run goes on regardless of the reader that takes nothing, and succeeds.
        assert wait_finished(client, run_id)["status"] == "success"

        # Within the send timeout that reader is dropped, and its place freed: its connection is reset,
        # not left holding what it never took...
        wait_until(lambda: client.head(f"/api/runs/{run_id}/events").status_code == 200, 10, "the reader to be dropped")
        assert stalled.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNRESET
        # ...and what it had received ends before the end of the run.
        raw = read_until_closed(stalled, timeout=10)
        received = [frame.json() for frame in frames(parse_text(unchunk(raw.partition(b"\r\n\r\n")[2])))]
        assert all(event["type"] != "run_finished" for event in received)

        # It resumes after the last event it got: every later event, once.
        seen = received[-1]["seq"] if received else 0
        resumed = read_events(bulky.url, run_id, headers={"Last-Event-ID": str(seen)})
        assert received + resumed == read_events(bulky.url, run_id)
        assert resumed[-1]["status"] == "success"
    assert "Traceback" not in bulky.log()


def unchunk(body: bytes) -> str:
    """The text inside an HTTP/1.1 chunked body. A cut connection leaves the last chunk partial, and
    with it a frame without the blank line that ends it: the parser never counts that one."""
    text, rest = [], body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        try:
            size = int(size_line, 16)
        except ValueError:
            break
        text.append(rest[:size])
        rest = rest[size + 2 :]
    return b"".join(text).decode(errors="replace")


def test_the_connection_closes_when_the_stream_ends(demo_server: StepServer) -> None:
    run_id = start_run(demo_server.url, NEWS, NEWS_INPUT)["run_id"]
    with socket.create_connection(("127.0.0.1", demo_server.port), timeout=3) as sock:
        sock.sendall(f"GET /api/runs/{run_id}/events HTTP/1.1\r\nHost: 127.0.0.1:{demo_server.port}\r\n\r\n".encode())
        # The server closes the connection after run_finished: nothing lingers as an idle keep-alive.
        raw = read_until_closed(sock, timeout=3)
    assert b"event: run_finished" in raw
    assert b"connection: close" in raw.partition(b"\r\n\r\n")[0].lower()


# --- One fragment per event, shared by every viewer -------------------------------------------------------


def test_every_viewer_of_a_run_is_sent_the_same_fragments(make_app: Any) -> None:
    app: InProcessApp = make_app(demo_delay=0.3)
    run_id = start_run(app.client, NEWS, NEWS_INPUT)["run_id"]
    bodies: dict[str, str] = {}

    def watch(name: str) -> None:
        bodies[name] = app.get(f"/runs/{run_id}/stream", params={"last_event_id": "0"}).text

    early = threading.Thread(target=watch, args=("early",))
    early.start()
    # The second viewer comes once the first step has ended: it replays what the first saw live.
    wait_until(lambda: len(get_run(app.client, run_id)["steps"]) >= 2, 20, "the second step to start")
    watch("late")
    early.join(30)

    early_frames = [item for item in parse_text(bodies["early"]) if isinstance(item, Frame)]
    late_frames = [item for item in parse_text(bodies["late"]) if isinstance(item, Frame)]
    assert [frame.id for frame in late_frames] == [frame.id for frame in early_frames]
    assert late_frames == early_frames
    assert early_frames[-1].event == "run-finished"
    assert 'data-status="success"' in early_frames[-1].data
