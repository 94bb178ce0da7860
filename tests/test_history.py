"""Run history across restarts: finished runs stay, interrupted runs go on, bad disks stop the server.

A graceful restart is two in-process apps on one data directory, one after the other. What needs a
process boundary (kill -9, SIGTERM, a file-size limit, `serve` refusing to start) uses a real
`stepline serve`; the app that comes back after it is in-process again.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import PROJECT_ROOT, StepServer, free_port, wait_until
from inprocess import InProcessApp, in_process
from runs import get_run, run_to_end, start_run, wait_finished
from sse import read_events

NEWS = "news_source_discovery_v1"
NEWS_INPUT = {"url": "https://signal.example/culture/lighthouse-library-explainer"}
# news_source_discovery_v1's steps, in order.
NEWS_STEPS = ["fetch_article", "search_news_sources", "pick_earliest", "trace_citations"]
OUTLET = "outlet_profile_v1"
# How a run ends when a server without a history stops gracefully during it.
SHUT_DOWN_MESSAGE = "Interrupted: the server shut down while this run was in progress"
SHUT_DOWN_STEP_MESSAGE = "Interrupted: the server shut down during this step"


def list_all(app: InProcessApp) -> list[dict[str, Any]]:
    response = app.get("/api/runs", params={"limit": 200})
    assert response.status_code == 200, response.text
    return response.json()["runs"]


def kill_hard(server: StepServer) -> None:
    """kill -9 the server and its MCP children: nothing gets to write a last word."""
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(10)


def stored_event_types(data_dir: Path, run_id: str) -> list[str]:
    """The run's events committed to the history file so far, read as a restarted server would."""
    with contextlib.closing(sqlite3.connect(f"file:{data_dir / 'stepline.db'}?mode=ro", uri=True, timeout=5)) as db:
        return [kind for (kind,) in db.execute("SELECT type FROM events WHERE run_id = ? ORDER BY seq", (run_id,))]


def serve_and_fail(*args: str, preexec_fn: Callable[[], None] | None = None) -> subprocess.CompletedProcess[str]:
    """`stepline serve` that is expected to refuse to start."""
    return subprocess.run(
        [sys.executable, "-m", "web", "serve", "--port", str(free_port()), *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, "STEPLINE_DEMO_DELAY": "0"},
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=preexec_fn,
    )


def limit_file_size(size: int) -> Callable[[], None]:
    # RLIMIT_FSIZE binds root as well: a write past it fails (EFBIG), as on a full disk.
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


def test_finished_runs_are_served_unchanged_after_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with in_process(tmp_path, data_dir=data) as app:
        runs = [
            run_to_end(app.client, NEWS, NEWS_INPUT),
            run_to_end(app.client, OUTLET, {"domain": "daily.example.com"}),
            run_to_end(app.client, OUTLET, {"domain": "nowhere.example.com"}),
        ]
        assert [run["status"] for run in runs] == ["success", "success", "failed"]
        streams = {run["run_id"]: read_events(app.client, run["run_id"]) for run in runs}
        listed = list_all(app)

    with in_process(tmp_path, data_dir=data) as app:
        for run in runs:
            assert get_run(app.client, run["run_id"]) == run
            assert read_events(app.client, run["run_id"]) == streams[run["run_id"]]
            resumed = read_events(app.client, run["run_id"], params={"last_event_id": "3"})
            assert resumed == streams[run["run_id"]][3:]
        assert list_all(app) == listed
        assert app.get("/healthz").json()["history"]["state"] == "ok"


def test_runs_evicted_from_memory_are_read_back_from_disk(make_app: Callable[..., InProcessApp]) -> None:
    app = make_app(run_registry_max_size=1)
    runs = [run_to_end(app.client, OUTLET, {"domain": domain}) for domain in ("daily.example.com", "signal.example")]
    fresh = run_to_end(app.client, NEWS, NEWS_INPUT)
    registry = app.state["runs"]
    app.call(registry.sync())
    # Once on disk, only the newest run is still held in memory: the others can only come from the file.
    assert [record.run_id for record in registry.recent()] == [fresh["run_id"]]

    for run in [*runs, fresh]:
        assert get_run(app.client, run["run_id"]) == run
        events = read_events(app.client, run["run_id"])
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert events[-1]["type"] == "run_finished"


def test_a_run_killed_mid_step_goes_on_after_restart(
    make_server: Callable[..., StepServer], make_app: Callable[..., InProcessApp], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    with in_process(tmp_path, data_dir=data) as app:  # a finished run in the history, quickly
        done = run_to_end(app.client, OUTLET, {"domain": "nowhere.example.com"})
    server = make_server("--data-dir", str(data), env={"STEPLINE_DEMO_DELAY": "2"})
    run_id = start_run(server.url, NEWS, NEWS_INPUT)["run_id"]
    # Events reach the disk in batches a few milliseconds apart: kill once the step's start is there.
    wait_until(
        lambda: stored_event_types(data, run_id)[:2] == ["run_started", "step_started"],
        10,
        "the first step's start to be on disk",
    )

    kill_hard(server)
    app = make_app(data_dir=data)

    # The demo's tools are read-only: the step in flight is called again without asking, and the run goes on.
    run = wait_finished(app.client, run_id)
    assert (run["status"], run["message"]) == ("success", "")
    assert [(s["node_id"], s["status"]) for s in run["steps"]] == [(name, "success") for name in NEWS_STEPS]
    # The same results as a run that was never interrupted.
    fresh = run_to_end(app.client, NEWS, NEWS_INPUT)
    assert [s["output"] for s in run["steps"]] == [s["output"] for s in fresh["steps"]]
    events = read_events(app.client, run_id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    types = [e["type"] for e in events]
    assert types.count("run_started") == 1 and types.count("run_finished") == 1
    [resumed] = [e for e in events if e["type"] == "run_resumed"]
    assert (resumed["attempt"], resumed["waiting_steps"], resumed["rerun_steps"], resumed["by"]) == (
        1,
        [],
        ["fetch_article"],
        None,
    )
    # The step in flight started again after the restart; nothing ended as failed or interrupted.
    assert [e["step_name"] for e in events if e["type"] == "step_started"] == [NEWS_STEPS[0], *NEWS_STEPS]
    starts = [position for position, e in enumerate(events) if e["type"] == "step_started"]
    assert starts[0] < types.index("run_resumed") < starts[1] < types.index("step_finished")
    assert {e["status"] for e in events if e["type"] == "step_finished"} == {"success"}
    assert get_run(app.client, done["run_id"]) == done  # finished runs are never altered
    assert {r["run_id"]: r["status"] for r in list_all(app)} == {
        run_id: "success",
        done["run_id"]: "failed",
        fresh["run_id"]: "success",
    }


def test_a_run_stopped_gracefully_goes_on_after_restart(
    make_server: Callable[..., StepServer], make_app: Callable[..., InProcessApp], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    server = make_server("--data-dir", str(data), env={"STEPLINE_DEMO_DELAY": "2"})
    run_id = start_run(server.url, NEWS, NEWS_INPUT)["run_id"]
    wait_until(lambda: bool(get_run(server.url, run_id)["steps"]), 10, "the first step to start")

    assert server.stop() in (0, -signal.SIGTERM)
    # The stopping server recorded no ending: neither the step's nor the run's.
    stored = stored_event_types(data, run_id)
    assert stored[:2] == ["run_started", "step_started"]
    assert "step_finished" not in stored and "run_finished" not in stored
    app = make_app(data_dir=data)

    run = wait_finished(app.client, run_id)
    assert [(s["node_id"], s["status"]) for s in run["steps"]] == [(name, "success") for name in NEWS_STEPS]
    assert run["status"] == "success"
    events = read_events(app.client, run_id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["type"] for e in events[: len(stored)]] == stored  # what was recorded before the stop, unchanged
    resumed = events[len(stored)]
    assert (resumed["type"], resumed["rerun_steps"], resumed["by"]) == ("run_resumed", ["fetch_article"], None)
    assert {e["status"] for e in events if e["type"] == "step_finished"} == {"success"}


def test_without_a_history_a_graceful_stop_records_the_shutdown(tmp_path: Path) -> None:
    """Nothing could resume the run: the stopping server ends it itself, failed (not cancelled)."""
    with in_process(tmp_path, history=False, demo_delay=2) as app:
        run_id = start_run(app.client, NEWS, NEWS_INPUT)["run_id"]
        wait_until(lambda: bool(get_run(app.client, run_id)["steps"]), 10, "the first step to start")
        record = app.state["runs"].held(run_id)

    state = record.state
    assert (state.status, state.message) == ("failed", SHUT_DOWN_MESSAGE)
    assert [(s.node_id, s.status, s.message) for s in state.steps.values()] == [
        ("fetch_article", "cancelled", SHUT_DOWN_STEP_MESSAGE),
        *((name, "skipped", f"Not run: {SHUT_DOWN_MESSAGE}") for name in NEWS_STEPS[1:]),
    ]
    endings = [(e["type"], e.get("step_name"), e["status"]) for e in record.events if "status" in e]
    assert endings == [
        ("step_finished", "fetch_article", "cancelled"),
        *(("step_finished", name, "skipped") for name in NEWS_STEPS[1:]),
        ("run_finished", None, "failed"),
    ]
    assert [e["seq"] for e in record.events] == list(range(1, len(record.events) + 1))


def test_a_queued_run_killed_before_any_event_still_runs(
    make_server: Callable[..., StepServer], make_app: Callable[..., InProcessApp], tmp_path: Path
) -> None:
    # The kill comes right after the 202, before the run's events may have reached the disk.
    data = tmp_path / "data"
    server = make_server("--data-dir", str(data), env={"STEPLINE_DEMO_DELAY": "5"})
    run_id = start_run(server.url, OUTLET, {"domain": "daily.example.com"})["run_id"]
    kill_hard(server)  # the 202 promised the run is on disk

    app = make_app(data_dir=data)

    run = wait_finished(app.client, run_id)
    assert (run["status"], run["input"]) == ("success", {"domain": "daily.example.com"})
    events = read_events(app.client, run_id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    types = [e["type"] for e in events]
    assert (types.count("run_started"), types[-1]) == (1, "run_finished")


@pytest.mark.parametrize("layout", ["parent is a file", "path is a file"])
def test_an_unusable_data_dir_stops_serve_with_its_name(tmp_path: Path, layout: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    data_dir = blocker / "data" if layout == "parent is a file" else blocker

    result = serve_and_fail("--data-dir", str(data_dir))

    assert result.returncode == 2
    assert f"data directory {data_dir}" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_full_disk_at_start_stops_serve_with_its_name(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"

    result = serve_and_fail("--data-dir", str(data_dir), preexec_fn=limit_file_size(0))

    assert result.returncode == 2
    assert f"cannot write run history {data_dir / 'stepline.db'}" in result.stderr
    assert "is the disk full or the directory read-only?" in result.stderr


def test_a_data_dir_in_use_by_another_server_stops_serve(make_app: Callable[..., InProcessApp], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    make_app(data_dir=data_dir)  # holds the directory, as a running server does

    result = serve_and_fail("--data-dir", str(data_dir))

    assert result.returncode == 2
    assert f"data directory {data_dir} is in use by another Stepline process" in result.stderr


def test_a_data_file_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with contextlib.closing(sqlite3.connect(data_dir / "stepline.db")) as connection:
        connection.execute("PRAGMA user_version = 99")

    result = serve_and_fail("--data-dir", str(data_dir))

    assert result.returncode == 2
    assert "schema version 99, newer than this Stepline knows" in result.stderr


def test_a_write_failure_while_serving_is_loud_and_refuses_new_runs(
    make_server: Callable[..., StepServer], tmp_path: Path
) -> None:
    # Enough room to start; the write-ahead log outgrows it within a few runs.
    server = make_server(preexec_fn=limit_file_size(256 * 1024))

    def failing() -> bool:
        response = httpx.post(
            f"{server.url}/api/runs", json={"scenario_id": OUTLET, "input": {"domain": "daily.example.com"}}, timeout=10
        )
        assert response.status_code in (202, 503), response.text
        return response.status_code == 503

    wait_until(failing, 30, "writes to fail")

    health = httpx.get(f"{server.url}/healthz", timeout=10).json()
    assert health["status"] == "degraded"
    assert health["history"]["state"] == "failing"
    assert "[SQLITE_" in health["history"]["error"]
    refused = httpx.post(
        f"{server.url}/api/runs", json={"scenario_id": OUTLET, "input": {"domain": "daily.example.com"}}, timeout=10
    )
    assert refused.status_code == 503
    assert refused.json()["detail"].startswith("Run not started: run history in ")
    assert "ERROR web.store: Run history in" in server.log()
    assert "cannot be written" in server.log()
