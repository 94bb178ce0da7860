"""One run's data the history cannot hold fails that run alone: the others are written, start and succeed.

On both backends (`history_location`: an SQLite data directory, then a PostgreSQL database), but for the faults
only an SQLite file has (a disk too full for its write-ahead log).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import PROJECT_ROOT, StepServer, wait_until
from inprocess import InProcessApp, in_process
from postgres import PostgresServer
from runs import get_run, run_to_end, start_run, wait_finished
from sse import frames, parse_text
from test_store import app_settings

from web.database import Database, Location
from web.events import step_progress
from web.registry import RunRecord
from web.run_state import utc_now
from web.store import RunRow, RunStore
from web.store_rows import Refusal

NEWS = "news_source_discovery_v1"
NEWS_INPUT = {"url": "https://signal.example/culture/lighthouse-library-explainer"}
REFUSED = "History could not be recorded: "
STOPPED_STEP = "Stopped: the run's history could not be recorded"
# A lone surrogate escaped in JSON: parsed, it is a str that UTF-8 (and so SQLite) cannot encode.
SURROGATE_BODY = b'{"scenario_id": "news_source_discovery_v1", "input": {"url": "\\ud800"}}'


def row(run_id: str, run_input: dict[str, Any] | None = None) -> RunRow:
    return RunRow(run_id, "scenario", "queued", "", run_input or {"n": 1}, utc_now(), None, None)


def run_events(run_id: str, output: Any = None, message: str = "") -> list[dict[str, Any]]:
    """A one-step run's events; `output` and `message` go into its step's progress and result."""
    now = utc_now()
    return [
        {"type": "run_started", "run_id": run_id, "seq": 1, "scenario_id": "scenario", "started_at": now},
        {"type": "step_started", "run_id": run_id, "seq": 2, "step_name": "work", "index": 0, "started_at": now,
         "input": {}},
        {"type": "step_progress", "run_id": run_id, "seq": 3, "step_name": "work", "index": 0, "progress": 1,
         "total": 2, "message": message},
        {"type": "step_finished", "run_id": run_id, "seq": 4, "step_name": "work", "index": 0, "status": "success",
         "started_at": now, "finished_at": now, "message": "", "output": output, "content": None},
        {"type": "run_finished", "run_id": run_id, "seq": 5, "status": "success", "finished_at": now, "message": ""},
    ]


def strict(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise AssertionError(f"non-standard JSON {constant} on disk")

    return json.loads(text, parse_constant=refuse)


def deep(levels: int, inside: Any = None) -> Any:
    value = [] if inside is None else inside
    for _ in range(levels):
        value = [value]
    return value


def limit_file_size(size: int) -> Callable[[], None]:
    # RLIMIT_FSIZE binds root as well: a write past it fails (EFBIG), as on a full disk.
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


# --- the store on its own ---------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("bad_output", "stored_output", "why"),
    [
        ({"title": "caf\ud800"}, {"title": "caf\ufffd"}, "text that is not valid Unicode (\\ud800)"),
        ({"score": math.nan}, {"score": None}, "a number JSON cannot hold (NaN or Infinity)"),
        ([1.0, -math.inf], [1.0, None], "a number JSON cannot hold (NaN or Infinity)"),
        ({"at": {1, 2}}, {"at": "{1, 2}"}, "a value JSON cannot hold (Object of type set is not JSON serializable)"),
        # Cut off (null) past the deepest nesting any setting allows.
        (deep(2000), deep(399, [None]), "values nested too deeply to store"),
    ],
    ids=["lone surrogate", "NaN", "Infinity", "not JSON", "too deep"],
)
async def test_a_bad_event_fails_its_run_alone_and_every_other_write_lands(
    history_location: Location, bad_output: Any, stored_output: Any, why: str
) -> None:
    store = RunStore(history_location, retention_days=30, retention_runs=100)
    refused: list[Refusal] = []
    store.on_refuse = refused.extend
    await store.open()
    try:
        good = {f"good-{n}": run_events(f"good-{n}", output={"n": n}, message="½ done ✓") for n in range(3)}
        bad = run_events("bad", output=bad_output)
        for run_id in [*good, "bad"]:
            store.add_run(row(run_id))
        # Interleaved, as concurrent runs are: the bad event shares its batch with the others' events.
        for events in zip(*good.values(), bad, strict=True):
            for event in events:
                store.add_event(event)
        await store.sync()

        assert store.health()["state"] == "ok"
        assert store.health()["error"] is None
        for run_id, events in good.items():
            stored = await store.load(run_id)
            assert stored is not None
            assert stored[0].status == "success"
            assert stored[1] == events
        stored = await store.load("bad")
        assert stored is not None
        bad_row, bad_events = stored
        message = f"{REFUSED}the output of step 'work' contains {why}. "
        assert bad_row.status == "failed"
        assert bad_row.message.startswith(message)
        assert [event["seq"] for event in bad_events] == [1, 2, 3, 4, 5], "the history keeps every seq"
        assert bad_events[3]["output"] == stored_output
        assert bad_events[4]["status"] == "failed"
        assert bad_events[4]["message"] == bad_row.message
        # What the loop was told: the run, why, and the stored version of each event it had to change.
        assert [(r.run_id, r.why) for r in refused] == [("bad", f"the output of step 'work' contains {why}")]
        assert [event["seq"] for event in refused[0].events] == [4, 5]
        assert refused[0].events == bad_events[3:]
    finally:
        await store.aclose()
    with contextlib.closing(Database.connect(history_location)) as database:
        for (data,) in database.execute("SELECT data FROM events").fetchall():
            strict(data)


@pytest.mark.anyio
async def test_a_run_whose_input_cannot_be_stored_is_recorded_with_it_repaired(history_location: Location) -> None:
    store = RunStore(history_location, retention_days=30, retention_runs=100)
    refused: list[Refusal] = []
    store.on_refuse = refused.extend
    await store.open()
    try:
        store.add_run(row("bad", {"url": "\ud800", "ratio": math.inf}))
        store.add_run(row("good", {"url": "https://example.com/ü"}))
        await store.sync()

        assert store.health()["state"] == "ok"
        bad = await store.load("bad")
        good = await store.load("good")
        assert bad is not None and good is not None
        assert bad[0].input == {"url": "\ufffd", "ratio": None}
        assert good[0].input == {"url": "https://example.com/ü"}
        # The first problem the encoder meets is named; every one is repaired.
        why = "the run's input contains a number JSON cannot hold (NaN or Infinity)"
        assert [(r.run_id, r.why, r.input) for r in refused] == [("bad", why, {"url": "\ufffd", "ratio": None})]
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_a_write_the_database_refuses_fails_that_run_and_the_rest_of_its_batch_lands(
    history_location: Location,
) -> None:
    store = RunStore(history_location, retention_days=30, retention_runs=100)
    refused: list[Refusal] = []
    store.on_refuse = refused.extend
    await store.open()
    try:
        first, other = run_events("first"), run_events("other")
        store.add_run(row("first"))
        store.add_event(first[0])
        await store.sync()
        # seq 1 again: a primary key the file already holds, in the same transaction as another run's writes.
        store.add_run(row("other"))
        for event in [first[0], *other, *first[1:]]:
            store.add_event(event)
        await store.sync()

        assert store.health()["state"] == "ok"
        stored_other = await store.load("other")
        assert stored_other is not None
        assert stored_other[0].status == "success"
        assert stored_other[1] == other
        stored_first = await store.load("first")
        assert stored_first is not None
        assert stored_first[0].status == "failed"
        # The database's own words for a key it already holds.
        taken = "UNIQUE" if history_location.dialect == "sqlite" else "duplicate key value"
        assert stored_first[0].message.startswith(f"{REFUSED}the history file refused one of its writes ({taken}")
        assert [event["seq"] for event in stored_first[1]] == [1, 2, 3, 4, 5]
        assert [r.run_id for r in refused] == ["first"]
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_numbers_an_older_version_stored_as_nan_read_back_as_null(history_location: Location) -> None:
    store = RunStore(history_location, retention_days=30, retention_runs=100)
    store.check()
    with contextlib.closing(Database.connect(history_location)) as database, database.transaction():
        database.execute(
            "INSERT INTO runs (run_id, scenario_id, status, message, input, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            ("old", "scenario", "success", "", '{"ratio":NaN}', utc_now()),
        )
        database.execute(
            "INSERT INTO events (run_id, seq, type, data) VALUES (?, ?, ?, ?)",
            ("old", 1, "run_finished", '{"status":"success","finished_at":"x","message":"","output":[Infinity]}'),
        )
    await store.open()
    try:
        stored = await store.load("old")
        assert stored is not None
        assert stored[0].input == {"ratio": None}
        assert stored[1][0]["output"] == [None]
    finally:
        await store.aclose()


def test_health_shows_the_data_directory_as_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with in_process(tmp_path, data_dir=Path("history")) as app:
        health = app.get("/healthz").json()["history"]
        assert health == {"state": "ok", "path": "history/stepline.db", "error": None}
        assert str(tmp_path) not in app.get("/healthz").text


def test_health_shows_the_database_without_its_password(make_app: Callable[..., InProcessApp],
                                                        postgres: PostgresServer) -> None:
    # Local connections are trusted, so any password is accepted: what matters is that none is shown.
    url = postgres.fresh_database().replace("stepline@", "stepline:Pa55-word%21@")
    app = make_app(database_url=url)
    health = app.get("/healthz")
    shown = Location.of(Path("unused"), url).shown
    assert "Pa55" not in shown
    assert health.json()["history"] == {"state": "ok", "path": shown, "error": None}
    assert "Pa55" not in health.text


# --- over the app ---------------------------------------------------------------------------------


def test_a_run_whose_input_cannot_be_stored_fails_and_other_runs_go_on(
    make_app: Callable[..., InProcessApp], history_location: Location, tmp_path: Path
) -> None:
    app = make_app(**app_settings(history_location, tmp_path))
    scenario = app.state["catalog"].get(NEWS)
    # Past the API's checks, as a value that slipped through would be.
    record: RunRecord = app.call(app.state["runner"].launch(scenario, {"url": "\ud800"}))

    run = get_run(app.client, record.run_id)
    assert run["status"] == "failed"
    assert run["message"].startswith(f"{REFUSED}the run's input contains text that is not valid Unicode (\\ud800)")
    assert run["input"] == {"url": "\ufffd"}
    events = [frame.json() for frame in frames(parse_text(app.get(f"/api/runs/{record.run_id}/events").text))]
    assert [(event["type"], event["status"]) for event in events] == [("run_finished", "failed")]

    for _ in range(3):
        assert run_to_end(app.client, NEWS, NEWS_INPUT)["status"] == "success"
    history = app.get("/healthz").json()["history"]
    assert (history["state"], history["error"]) == ("ok", None)


async def emit_bad_progress(record: RunRecord) -> None:
    running = [step for step in record.state.steps.values() if step.status == "running"]
    assert running, f"the run should still be in its first step: {record.state}"
    step = running[0]
    record.emit(step_progress(step_name=step.node_id, index=step.index, progress=1, total=2, message="caf\ud800"))


def test_a_bad_event_on_a_live_run_fails_it_and_survives_a_restart(
    tmp_path: Path, history_location: Location, caplog: pytest.LogCaptureFixture
) -> None:
    history = app_settings(history_location, tmp_path)
    # Each tool call takes 0.5 s: long enough to catch the first step running.
    with in_process(tmp_path, **history, demo_delay=0.5) as app:
        bad_id = start_run(app.client, NEWS, NEWS_INPUT)["run_id"]
        wait_until(lambda: get_run(app.client, bad_id)["steps"], 20, "the first step to start")
        app.call(emit_bad_progress(app.state["runs"].held(bad_id)))
        others = [start_run(app.client, NEWS, NEWS_INPUT)["run_id"] for _ in range(2)]

        bad = wait_finished(app.client, bad_id)
        assert bad["status"] == "failed"
        step = bad["steps"][0]["node_id"]
        assert bad["message"].startswith(
            f"{REFUSED}the message of step '{step}' contains text that is not valid Unicode (\\ud800)"
        )
        assert bad["steps"][0]["status"] == "cancelled"
        assert bad["steps"][0]["message"] == STOPPED_STEP
        stream = app.get(f"/api/runs/{bad_id}/events")
        assert stream.status_code == 200
        progress = [frame.json() for frame in frames(parse_text(stream.text)) if frame.event == "step_progress"]
        assert "caf\ufffd" in [event["message"] for event in progress], "the stored, repaired version is served"
        assert [wait_finished(app.client, run_id)["status"] for run_id in others] == ["success", "success"]
        later = run_to_end(app.client, NEWS, NEWS_INPUT)
        assert later["status"] == "success"
        others.append(later["run_id"])
        assert app.get("/healthz").json()["history"]["state"] == "ok"
        before = {run_id: get_run(app.client, run_id) for run_id in [bad_id, *others]}
        page = app.get(f"/runs/{bad_id}")
        assert page.status_code == 200
        assert "History could not be recorded: the message of step" in page.text
        assert STOPPED_STEP.replace("'", "&#39;") in page.text

    with in_process(tmp_path, **history) as app:
        after = {run_id: get_run(app.client, run_id) for run_id in [bad_id, *others]}
        assert after == before
        assert app.get(f"/api/runs/{bad_id}/events").text == stream.text
        page = app.get(f"/runs/{bad_id}")
        assert "History could not be recorded: the message of step" in page.text
        assert STOPPED_STEP.replace("'", "&#39;") in page.text
        listed = app.get("/api/runs", params={"limit": 200}).json()["runs"]
        assert not [run for run in listed if "Interrupted" in run["message"]]
    assert "writes are lost" not in caplog.text
    assert "unfinished when the server last stopped" not in caplog.text


# --- a real server, restarted ---------------------------------------------------------------------


def test_no_accepted_run_is_lost_across_restarts_after_a_bad_request(
    make_server: Callable[..., StepServer], tmp_path: Path, history_location: Location
) -> None:
    if history_location.dialect == "sqlite":
        history = ("--data-dir", str(history_location.data_dir))
    else:
        assert history_location.url is not None
        history = ("--database", history_location.url)
    server = make_server(*history)
    bad = httpx.post(
        f"{server.url}/api/runs", content=SURROGATE_BODY, headers={"Content-Type": "application/json"}, timeout=10
    )
    # Refused at the door, or accepted and then failed on its own: never the service wedged.
    assert bad.status_code in (202, 422), bad.text
    if bad.status_code == 202:
        refused = wait_finished(server.url, bad.json()["run_id"])
        assert refused["status"] == "failed"
        assert refused["message"].startswith(REFUSED)
    succeeded = [run_to_end(server.url, NEWS, NEWS_INPUT)["run_id"] for _ in range(3)]
    assert httpx.get(f"{server.url}/healthz", timeout=10).json()["history"]["state"] == "ok"
    server.stop(signal.SIGTERM)
    assert "writes are lost" not in server.log()

    server = make_server(*history)
    assert [get_run(server.url, run_id)["status"] for run_id in succeeded] == ["success"] * 3
    assert "unfinished when the server last stopped" not in server.log()
    succeeded += [run_to_end(server.url, NEWS, NEWS_INPUT)["run_id"] for _ in range(2)]
    # Its 202 means every write queued before it (the endings above included) is on disk, and the run itself.
    last = start_run(server.url, NEWS, NEWS_INPUT)["run_id"]
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(10)

    server = make_server(*history)
    assert [get_run(server.url, run_id)["status"] for run_id in succeeded] == ["success"] * 5
    # The run the kill cut short goes on (or starts) after the restart.
    assert wait_finished(server.url, last)["status"] == "success"


def test_an_unwritable_history_is_answered_503_with_retry_after_and_the_directory_as_configured(
    make_server: Callable[..., StepServer], tmp_path: Path
) -> None:
    # Relative to the server's working directory, as an operator may give it.
    data = os.path.relpath(tmp_path / "data", PROJECT_ROOT)
    # Enough room to start; the write-ahead log outgrows it within a few runs: a disk error, global.
    server = make_server("--data-dir", data, preexec_fn=limit_file_size(256 * 1024))

    def refused() -> httpx.Response | None:
        response = httpx.post(f"{server.url}/api/runs", json={"scenario_id": NEWS, "input": NEWS_INPUT}, timeout=10)
        assert response.status_code in (202, 503), response.text
        return response if response.status_code == 503 else None

    wait_until(lambda: refused() is not None, 30, "writes to fail")
    response = refused()
    assert response is not None
    assert response.headers["Retry-After"] == "10"
    assert response.json()["detail"].startswith(f"Run not started: run history in {data} cannot be written: ")
    health = httpx.get(f"{server.url}/healthz", timeout=10)
    assert health.json()["history"]["path"] == f"{data}/stepline.db"
    for text in (response.text, health.text):
        assert str(tmp_path) not in text.replace(data, "<as configured>"), "no absolute path is shown"
