"""The run history: schema migrations, batched writes, concurrent runs, retention.

Each restart is a new in-process app on the same history: what is stored is under test. The tests about the
store's behaviour run on both backends (`history_location`: an SQLite data directory, then a PostgreSQL
database); those about the SQLite file itself (a hand-written old schema) run on SQLite alone.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import psycopg
import pytest
from conftest import wait_until
from inprocess import InProcessApp, in_process
from runs import get_run, run_to_end
from sse import aread_events, read_events

from web.database import Database, Location
from web.events import RunStatus, run_finished, run_started
from web.registry import RunRegistry
from web.run_state import utc_now
from web.schema import SCHEMA_VERSION
from web.store import RunRow, RunStore

NEWS = "news_source_discovery_v1"
NEWS_INPUT = {"url": "https://signal.example/culture/lighthouse-library-explainer"}
OUTLET = "outlet_profile_v1"

# Schema version 1 exactly as it shipped, written here by hand so the test keeps the old file's
# shape even as the code's migrations grow.
SCHEMA_V1 = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, scenario_id TEXT NOT NULL, status TEXT NOT NULL, message TEXT NOT NULL DEFAULT '',
    input TEXT NOT NULL, created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT
);
CREATE TABLE events (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
PRAGMA user_version = 1;
"""
# Yesterday: well within retention, which a start-up prune would otherwise apply to these runs.
DAY = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
OLD_DONE = "4f7d1c0e-2b8a-4e55-9d0c-6a1e3b2f9c71"
OLD_RUNNING = "9a2e6b14-7c3d-4f08-b1e5-0d8c4f6a2e93"
OUTLET_OUTPUT = {"domain": "daily.example.com", "name": "Harbor Daily"}


def app_settings(location: Location, tmp_path: Path) -> dict[str, Any]:
    """What an in-process app (`in_process`, `make_app`) is given to keep its history at `location`."""
    if location.dialect == "sqlite":
        return {"data_dir": location.data_dir}
    return {"data_dir": tmp_path / "unused-data", "database_url": location.url}


@contextlib.contextmanager
def write_locked(location: Location) -> Any:
    """Another connection holding the events table's write lock, for the length of the block; yields a cursor."""
    if location.dialect == "sqlite":
        with contextlib.closing(sqlite3.connect(location.path, isolation_level=None)) as other:
            other.execute("BEGIN EXCLUSIVE")
            yield other
            other.execute("ROLLBACK")
        return
    assert location.url is not None
    with psycopg.connect(location.url) as other:
        other.execute("LOCK TABLE events IN EXCLUSIVE MODE")
        yield other
        other.rollback()


def old_events(run_id: str, *, finished: bool) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [
        {"type": "run_started", "scenario_id": OUTLET, "started_at": f"{DAY}T10:00:00.100+00:00"},
        {
            "type": "step_started",
            "step_name": "lookup_outlet",
            "index": 0,
            "started_at": f"{DAY}T10:00:00.101+00:00",
            "input": {"domain": "daily.example.com"},
        },
    ]
    if finished:
        events += [
            {
                "type": "step_finished",
                "step_name": "lookup_outlet",
                "index": 0,
                "status": "success",
                "started_at": f"{DAY}T10:00:00.101+00:00",
                "finished_at": f"{DAY}T10:00:01.500+00:00",
                "message": "",
                "output": OUTLET_OUTPUT,
            },
            {"type": "run_finished", "status": "success", "finished_at": f"{DAY}T10:00:01.501+00:00", "message": ""},
        ]
    return [{"type": e["type"], "run_id": run_id, "seq": n, **e} for n, e in enumerate(events, 1)]


def write_v1_file(data_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """A data file as the previous version left it: one finished run, one it was running when stopped."""
    data_dir.mkdir()
    written = {OLD_DONE: old_events(OLD_DONE, finished=True), OLD_RUNNING: old_events(OLD_RUNNING, finished=False)}
    with contextlib.closing(sqlite3.connect(data_dir / "stepline.db")) as connection:
        connection.executescript(SCHEMA_V1)
        with connection:
            connection.execute(
                "INSERT INTO runs VALUES (?, ?, 'success', '', ?, ?, ?, ?)",
                (
                    OLD_DONE,
                    OUTLET,
                    '{"domain":"daily.example.com"}',
                    f"{DAY}T10:00:00.000+00:00",
                    f"{DAY}T10:00:00.100+00:00",
                    f"{DAY}T10:00:01.501+00:00",
                ),
            )
            connection.execute(
                "INSERT INTO runs VALUES (?, ?, 'running', '', ?, ?, ?, NULL)",
                (
                    OLD_RUNNING,
                    OUTLET,
                    '{"domain":"daily.example.com"}',
                    f"{DAY}T11:00:00.000+00:00",
                    f"{DAY}T10:00:00.100+00:00",
                ),
            )
            for run_events in written.values():
                connection.executemany(
                    "INSERT INTO events VALUES (?, ?, ?, ?)",
                    [
                        (
                            e["run_id"],
                            e["seq"],
                            e["type"],
                            json.dumps({k: v for k, v in e.items() if k not in ("type", "run_id", "seq")}),
                        )
                        for e in run_events
                    ],
                )
    return written


def test_a_data_file_from_the_previous_schema_version_opens(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    written = write_v1_file(data_dir)

    with in_process(tmp_path, data_dir=data_dir) as app:
        done = get_run(app.client, OLD_DONE)
        assert (done["status"], done["input"]) == ("success", {"domain": "daily.example.com"})
        assert [(s["node_id"], s["status"], s["output"]) for s in done["steps"]] == [
            ("lookup_outlet", "success", OUTLET_OUTPUT)
        ]
        assert read_events(app.client, OLD_DONE) == written[OLD_DONE]
        # The previous version recorded no plan: nothing says how its unfinished run would go on.
        why = "Interrupted by a server restart: it was recorded before runs recorded their plan"
        interrupted = read_events(app.client, OLD_RUNNING)
        assert interrupted[:2] == written[OLD_RUNNING]
        assert [(e["type"], e["status"], e["message"]) for e in interrupted[2:]] == [
            ("step_finished", "failed", why),
            ("run_finished", "failed", f"{why}, so this run could not go on"),
        ]
        listed = app.get("/api/runs", params={"scenario_id": OUTLET}).json()["runs"]
        assert [(r["run_id"], r["status"]) for r in listed] == [(OLD_RUNNING, "failed"), (OLD_DONE, "success")]
        # The file is now at the current version, and new runs are written to it.
        new = run_to_end(app.client, OUTLET, {"domain": "signal.example"})
    with contextlib.closing(sqlite3.connect(data_dir / "stepline.db")) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert connection.execute("SELECT status FROM runs WHERE run_id = ?", (new["run_id"],)).fetchone() == (
            "success",
        )


@pytest.mark.anyio
async def test_events_are_written_in_batches_and_read_back_unchanged(history_location: Location) -> None:
    store = RunStore(history_location, retention_days=30, retention_runs=100)
    committed: dict[str, int] = {}
    store.on_commit = committed.update
    await store.open()
    try:
        row = RunRow("run-1", "scenario", "queued", "", {"n": 1}, "2026-03-01T10:00:00.000+00:00", None, None)
        events = [
            {
                "type": "step_progress",
                "run_id": "run-1",
                "seq": seq,
                "step_name": "s",
                "index": 0,
                "progress": seq,
                "total": None,
                "message": f"step {seq} ✓",
            }
            for seq in range(1, 3001)
        ]
        # Handing writes over never waits for the database: not even while another connection holds its
        # write lock (a write made there and then would wait for it, and on SQLite then fail "locked").
        with write_locked(history_location) as other:
            store.add_run(row)
            for event in events:
                store.add_event(event)
            assert other.execute("SELECT COUNT(*) FROM events").fetchone() == (0,)
        await store.sync()

        assert store.events_written == len(events)
        assert store.batches <= len(events) // 20, "events should be committed many per transaction"
        assert committed == {"run-1": 3000}
        loaded = await store.load("run-1")
        assert loaded is not None
        assert loaded[0] == row
        assert loaded[1] == events
    finally:
        await store.aclose()


def test_fifty_concurrent_runs_lose_no_event(tmp_path: Path, history_location: Location) -> None:
    history = app_settings(history_location, tmp_path)

    async def run_and_follow_fifty(app: InProcessApp) -> dict[str, list[dict[str, Any]]]:
        live: dict[str, list[dict[str, Any]]] = {}

        async def run_and_follow(client: httpx.AsyncClient, n: int) -> None:
            scenario_id, run_input = (NEWS, NEWS_INPUT) if n % 2 else (OUTLET, {"domain": "daily.example.com"})
            response = await client.post("/api/runs", json={"scenario_id": scenario_id, "input": run_input})
            assert response.status_code == 202, response.text
            run_id = response.json()["run_id"]
            live[run_id] = await aread_events(client, run_id)

        async with app.async_client() as client, anyio.create_task_group() as group:
            for n in range(50):
                group.start_soon(run_and_follow, client, n)
        return live

    async def replay_all(app: InProcessApp, run_ids: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        replayed: dict[str, list[dict[str, Any]]] = {}

        async def replay(client: httpx.AsyncClient, run_id: str) -> None:
            replayed[run_id] = await aread_events(client, run_id)

        async with app.async_client() as client:
            async with anyio.create_task_group() as group:
                for run_id in run_ids:
                    group.start_soon(replay, client, run_id)
            listed = (await client.get("/api/runs", params={"limit": 200})).json()["runs"]
        return replayed, listed

    # Few runs in memory: most streams and snapshots below are read back from disk.
    with in_process(tmp_path, **history, demo_delay=0.1, run_registry_max_size=5) as app:
        live = app.call(run_and_follow_fifty(app))

    assert len(live) == 50
    for events in live.values():
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert (events[-1]["type"], events[-1]["status"]) == ("run_finished", "success")

    with in_process(tmp_path, **history) as app:
        replayed, listed = app.call(replay_all(app, list(live)))

    assert replayed == live
    assert {r["run_id"] for r in listed} == set(live)


def insert_old_run(
    location: Location, run_id: str, age: timedelta, *, scenario_id: str = OUTLET, status: str = "success"
) -> None:
    """A finished run written straight into the history, `age` ago."""
    created = (datetime.now(UTC) - age).isoformat(timespec="milliseconds")
    database = Database.connect(location)
    try:
        with database.transaction():
            database.execute(
                "INSERT INTO runs (run_id, scenario_id, status, message, input, created_at, started_at, finished_at) "
                "VALUES (?, ?, ?, '', '{}', ?, ?, ?)",
                (run_id, scenario_id, status, created, created, created),
            )
            database.execute(
                "INSERT INTO events (run_id, seq, type, data) VALUES (?, 1, 'run_finished', ?)",
                (run_id, json.dumps({"status": status, "finished_at": created, "message": ""})),
            )
    finally:
        database.close()


def test_the_run_list_pages_and_filters_the_history_newest_first(
    tmp_path: Path, history_location: Location
) -> None:
    history = app_settings(history_location, tmp_path)
    with in_process(tmp_path, **history):
        pass  # the history is created, then written to directly
    # Two pairs created at the same moment: run_id breaks the tie, and a cursor between them loses neither.
    for run_id, hours, scenario_id, status in [
        ("run-a", 3, OUTLET, "success"),
        ("run-b", 2, NEWS, "failed"),
        ("run-c", 2, OUTLET, "failed"),
        ("run-d", 1, OUTLET, "success"),
        ("run-e", 1, NEWS, "cancelled"),
    ]:
        insert_old_run(history_location, run_id, timedelta(hours=hours), scenario_id=scenario_id, status=status)

    with in_process(tmp_path, **history) as app:

        def pages(**params: Any) -> list[list[str]]:
            found, cursor = [], None
            while True:
                query = {**params, "limit": 2, **({"cursor": cursor} if cursor else {})}
                response = app.get("/api/runs", params=query)
                assert response.status_code == 200, response.text
                found.append([run["run_id"] for run in response.json()["runs"]])
                cursor = response.json()["next_cursor"]
                if cursor is None:
                    return found

        assert pages() == [["run-e", "run-d"], ["run-c", "run-b"], ["run-a"]]
        assert pages(scenario_id=OUTLET) == [["run-d", "run-c"], ["run-a"]]
        assert pages(status="failed") == [["run-c", "run-b"]]
        assert pages(scenario_id=OUTLET, status="failed") == [["run-c"]]
        assert pages(scenario_id="no_such_scenario") == [[]]
        listed = app.get("/api/runs", params={"scenario_id": NEWS}).json()["runs"]
        assert [(run["run_id"], run["status"]) for run in listed] == [("run-e", "cancelled"), ("run-b", "failed")]
        bad = app.get("/api/runs", params={"cursor": "not-a-cursor"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "cursor"]


def test_retention_prunes_old_runs_and_keeps_the_newest(tmp_path: Path, history_location: Location) -> None:
    history = app_settings(history_location, tmp_path)
    with in_process(tmp_path, **history) as app:
        runs = [run_to_end(app.client, OUTLET, {"domain": "daily.example.com"}) for _ in range(4)]
    insert_old_run(history_location, "old-run", timedelta(days=31))
    insert_old_run(history_location, "recent-run", timedelta(days=29))

    with in_process(tmp_path, **history, retention_days=30) as app:
        wait_until(lambda: app.get("/api/runs/old-run").status_code == 404, 10, "the old run to go")
        kept = [r["run_id"] for r in app.get("/api/runs").json()["runs"]]
        assert kept == [*(r["run_id"] for r in reversed(runs)), "recent-run"]

    with in_process(tmp_path, **history, retention_runs=2) as app:

        def newest_two_left() -> bool:
            listed = app.get("/api/runs").json()["runs"]
            return [r["run_id"] for r in listed] == [runs[3]["run_id"], runs[2]["run_id"]]

        wait_until(newest_two_left, 10, "all but the two newest runs to be pruned")
        assert app.get(f"/api/runs/{runs[0]['run_id']}").status_code == 404
        assert read_events(app.client, runs[3]["run_id"])[-1]["type"] == "run_finished"


@pytest.mark.anyio
async def test_a_run_is_listed_by_the_status_it_has_now_before_its_row_is_written(
    history_location: Location,
) -> None:
    """The list filters in the history, whose rows trail memory by a batch: a run that just reached a status
    is listed under it all the same, and not under the one its row still says."""
    registry = RunRegistry(10, store=RunStore(history_location, retention_days=30, retention_runs=100))
    async with registry.history():
        record = registry.create("scenario", {})
        await registry.sync()
        record.emit(run_started(scenario_id="scenario", started_at=utc_now(), plan=None))
        record.emit(run_finished(status=RunStatus.CANCELLED, finished_at=utc_now(), message="Cancelled"))
        # No await since: nothing of it has been written yet.
        assert [row.run_id for row in (await registry.page(status="cancelled")).runs] == [record.run_id]
        assert (await registry.page(status="queued")).runs == []
