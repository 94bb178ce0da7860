"""The history's database itself, SQLite file or PostgreSQL: migrations, refusals at start, values it cannot hold.

`stepline db migrate` and `stepline serve` run as real processes; PostgreSQL is a real server (tests/postgres.py).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import PROJECT_ROOT, free_port, wait_until
from inprocess import in_process
from runs import get_run, run_to_end, start_run, wait_finished
from sse import read_events
from test_store import app_settings

from web.database import MIGRATION_LOCK, Location
from web.run_state import utc_now
from web.schema import SCHEMA_VERSION
from web.store import RunRow, RunStore
from web.store_rows import Refusal

STEPLINE = str(Path(sys.executable).parent / "stepline")
OUTLET = "outlet_profile_v1"  # one step, lookup_outlet: an unknown domain fails it, naming the domain
NEWS = "news_source_discovery_v1"
NEWS_INPUT = {"url": "https://signal.example/culture/lighthouse-library-explainer"}
PASSWORD = "s3cret-Pa55word"
REFUSED = "History could not be recorded: "


def stepline(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STEPLINE, *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout)


def where(location: Location) -> list[str]:
    """The command-line options naming `location`."""
    if location.dialect == "sqlite":
        return ["--data-dir", str(location.data_dir)]
    assert location.url is not None
    return ["--database", location.url]


def tables(location: Location) -> dict[str, list[str]]:
    """Each table of the history and its columns, in order."""
    if location.dialect == "sqlite":
        with contextlib.closing(sqlite3.connect(location.path)) as connection:
            names = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            return {name: [col[1] for col in connection.execute(f"PRAGMA table_info({name})")] for name in names}
    assert location.url is not None
    with psycopg.connect(location.url) as connection:
        rows = connection.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
            " ORDER BY table_name, ordinal_position"
        ).fetchall()
    found: dict[str, list[str]] = {}
    for table, column in rows:
        found.setdefault(table, []).append(column)
    # SQLite keeps the version in its header (PRAGMA user_version); PostgreSQL in a table of its own.
    assert found.pop("schema_version") == ["version"]
    return found


def indexes(location: Location) -> set[str]:
    """The indexes the schema names (not those a primary key or UNIQUE makes by itself)."""
    if location.dialect == "sqlite":
        with contextlib.closing(sqlite3.connect(location.path)) as connection:
            rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
            return {row[0] for row in rows}
    assert location.url is not None
    with psycopg.connect(location.url) as connection:
        rows = connection.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' AND indexname NOT LIKE '%_pkey'"
            " AND indexname NOT LIKE '%_key'"
        ).fetchall()
    return {row[0] for row in rows}


def set_version(location: Location, version: int) -> None:
    if location.dialect == "sqlite":
        with contextlib.closing(sqlite3.connect(location.path)) as connection:
            connection.execute(f"PRAGMA user_version = {version}")
        return
    assert location.url is not None
    with psycopg.connect(location.url) as connection:
        connection.execute("UPDATE schema_version SET version = %s", (version,))


def versions(url: str) -> list[int]:
    with psycopg.connect(url) as connection:
        return [row[0] for row in connection.execute("SELECT version FROM schema_version")]


# --- migrations ---------------------------------------------------------------------------------------------


def test_db_migrate_brings_a_new_database_to_the_schema_version_then_has_nothing_to_do(
    history_location: Location,
) -> None:
    first = stepline("db", "migrate", *where(history_location))
    assert first.returncode == 0, first.stderr
    shown = history_location.shown_file
    assert first.stdout.strip() == f"Run history {shown} migrated from schema version 0 to {SCHEMA_VERSION}."

    again = stepline("db", "migrate", *where(history_location))
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"Run history {shown} is at schema version {SCHEMA_VERSION}: nothing to do."


def test_the_schema_is_one_the_same_tables_columns_and_indexes_on_both_backends(postgres: Any, tmp_path: Path) -> None:
    sqlite = Location.of(tmp_path / "data", None)
    postgresql = Location.of(tmp_path, postgres.fresh_database())
    for location in (sqlite, postgresql):
        assert stepline("db", "migrate", *where(location)).returncode == 0
    on_sqlite = tables(sqlite)
    assert on_sqlite == tables(postgresql)
    assert on_sqlite["events"] == ["run_id", "seq", "type", "data"]
    assert {"runs", "events", "meta", "tokens"} <= set(on_sqlite)
    assert indexes(sqlite) == indexes(postgresql)
    assert {"runs_by_created", "runs_by_scenario", "runs_by_status"} <= indexes(sqlite)


def test_migrations_started_together_on_one_postgresql_database_run_one_after_another(postgres: Any) -> None:
    url = postgres.fresh_database()
    with psycopg.connect(url, autocommit=True) as holder:
        # As if another migration were under way: each of the three waits for it, then for the one before.
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        migrations = [
            subprocess.Popen(
                [STEPLINE, "db", "migrate", "--database", url],
                cwd=PROJECT_ROOT,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _ in range(3)
        ]

        def all_waiting() -> bool:
            for process in migrations:
                assert process.poll() is None, process.communicate()
            waiting = holder.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchone()
            return waiting is not None and waiting[0] == 3

        wait_until(all_waiting, 30, "the three migrations to wait for the lock")
        holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    outcomes = [(process.wait(60), *process.communicate()) for process in migrations]
    for code, _out, err in outcomes:
        assert code == 0, err
    # Each says what it did itself (a step is a transaction: they may take turns): one found the database new,
    # the others where it was when their turn came.
    said = [out.strip().removeprefix(f"Run history {url} ") for _code, out, _err in outcomes]
    assert said.count(f"migrated from schema version 0 to {SCHEMA_VERSION}.") == 1, outcomes
    for words in said:
        assert re.fullmatch(
            rf"migrated from schema version [1-9]\d* to {SCHEMA_VERSION}\.|is at schema version "
            rf"{SCHEMA_VERSION}: nothing to do\.|migrated from schema version 0 to {SCHEMA_VERSION}\.",
            words,
        ), outcomes
    assert versions(url) == [SCHEMA_VERSION]


def test_a_database_from_a_newer_stepline_is_refused_by_migrate_and_serve(
    history_location: Location, tmp_path: Path
) -> None:
    assert stepline("db", "migrate", *where(history_location)).returncode == 0
    set_version(history_location, SCHEMA_VERSION + 1)
    message = (
        f"run history {history_location.shown_file} has schema version {SCHEMA_VERSION + 1}, newer than "
        f"this Stepline knows ({SCHEMA_VERSION})"
    )

    migrate = stepline("db", "migrate", *where(history_location))
    assert migrate.returncode == 2
    assert message in migrate.stderr

    serve = stepline(
        "serve", "--port", str(free_port()), "--data-dir", str(tmp_path / "serve-data"), *where(history_location)
    )
    assert serve.returncode == 2, serve.stderr
    assert message in serve.stderr


# --- the database unreachable or misnamed at start --------------------------------------------------------


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["db", "migrate"], ["token", "list"]])
def test_an_unreachable_database_stops_the_command_naming_it_without_its_password(
    command: list[str], tmp_path: Path
) -> None:
    port = free_port()  # nobody listens there
    url = f"postgresql://stepline:{PASSWORD}@127.0.0.1:{port}/history"
    if command[0] == "serve":
        command = ["serve", "--port", str(free_port())]
    done = stepline(*command, "--data-dir", str(tmp_path / "data"), "--database", url)
    assert done.returncode == 2, done
    assert f"postgresql://stepline@127.0.0.1:{port}/history" in done.stderr
    assert "connection" in done.stderr.lower()
    assert PASSWORD not in done.stdout + done.stderr


def test_an_unreachable_database_named_in_the_environment_stops_the_server(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "STEPLINE_DATABASE_URL": f"postgresql://stepline:{PASSWORD}@127.0.0.1:{port}/history"}
    done = subprocess.run(
        [STEPLINE, "serve", "--port", str(free_port()), "--data-dir", str(tmp_path / "data")],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 2, done
    assert f"cannot open run history postgresql://stepline@127.0.0.1:{port}/history: " in done.stderr
    assert PASSWORD not in done.stdout + done.stderr


@pytest.mark.parametrize("command", [["serve"], ["db", "migrate"], ["token", "list"]])
def test_a_malformed_database_url_is_refused_without_its_password(command: list[str], tmp_path: Path) -> None:
    # The driver quotes a URL it cannot parse in its message: the password must not go out with it.
    if command == ["serve"]:
        command = ["serve", "--port", str(free_port())]
    done = stepline(*command, "--data-dir", str(tmp_path / "data"), "--database", f"postgresql://u:{PASSWORD}@[::1/x")
    assert done.returncode == 2, done
    assert "cannot open run history" in done.stderr and "IPv6 host address" in done.stderr
    assert PASSWORD not in done.stdout + done.stderr


@pytest.mark.parametrize(
    "url",
    [f"mysql://stepline:{PASSWORD}@db.example/history", "sqlite:///tmp/history.db", "history.db"],
)
def test_a_database_url_that_is_not_postgresql_is_refused_by_name(url: str, tmp_path: Path) -> None:
    for command in (["serve", "--port", str(free_port())], ["db", "migrate"]):
        done = stepline(*command, "--data-dir", str(tmp_path / "data"), "--database", url)
        assert done.returncode == 2, done
        assert "--database must be a postgresql:// URL" in done.stderr
        assert PASSWORD not in done.stdout + done.stderr


# --- values a database cannot hold as given ----------------------------------------------------------------


def row(run_id: str, run_input: dict[str, Any], message: str = "") -> RunRow:
    return RunRow(run_id, "scenario", "queued", message, run_input, utc_now(), None, None)


def failed_run(run_id: str, text: str, output: Any) -> list[dict[str, Any]]:
    """A one-step run that fails saying `text`, its step's progress and output carrying it too."""
    now = utc_now()
    return [
        {"type": "run_started", "run_id": run_id, "seq": 1, "scenario_id": "scenario", "started_at": now},
        {
            "type": "step_started",
            "run_id": run_id,
            "seq": 2,
            "step_name": "work",
            "index": 0,
            "started_at": now,
            "input": {"text": text},
        },
        {
            "type": "step_progress",
            "run_id": run_id,
            "seq": 3,
            "step_name": "work",
            "index": 0,
            "progress": 1,
            "total": 2,
            "message": text,
        },
        {
            "type": "step_finished",
            "run_id": run_id,
            "seq": 4,
            "step_name": "work",
            "index": 0,
            "status": "failed",
            "started_at": now,
            "finished_at": now,
            "message": text,
            "output": output,
            "content": None,
        },
        {
            "type": "run_finished",
            "run_id": run_id,
            "seq": 5,
            "status": "failed",
            "finished_at": now,
            "message": f"Step 'work' failed: {text}",
        },
    ]


@pytest.mark.anyio
async def test_nul_characters_are_kept_in_events_and_repaired_in_the_run_row_on_both_backends(
    history_location: Location,
) -> None:
    store = RunStore(history_location, retention_days=30, retention_runs=100)
    refused: list[Refusal] = []
    store.on_refuse = refused.extend
    await store.open()
    try:
        nul = failed_run("nul", "a\x00b", {"raw": "\x00", "k\x00": [1]})
        good = failed_run("good", "plain", {"raw": "ok"})
        store.add_run(row("nul", {"url": "x\x00y"}))
        store.add_run(row("good", {"url": "plain"}))
        for pair in zip(nul, good, strict=True):
            for event in pair:
                store.add_event(event)
        await store.sync()

        assert store.health() == {"state": "ok", "path": history_location.shown_file, "error": None}
        assert refused == [], "a NUL is valid text: no run is refused for it"
        stored = await store.load("nul")
        assert stored is not None
        nul_row, nul_events = stored
        # Events are JSON (a NUL is the escape \u0000 there): read back exactly as written.
        assert nul_events == nul
        assert nul_row.input == {"url": "x\x00y"}
        # The run's own columns are plain text, which PostgreSQL cannot give a NUL: U+FFFD in its place on both.
        assert (nul_row.status, nul_row.message) == ("failed", "Step 'work' failed: a\ufffdb")
        assert nul_row.finished_at == nul[-1]["finished_at"]
        good_stored = await store.load("good")
        assert good_stored is not None and good_stored[1] == good
        listed = await store.list_runs(scenario_id=None, status="failed", limit=10, before=None)
        assert {r.run_id: r.message for r in listed} == {
            "nul": "Step 'work' failed: a\ufffdb",
            "good": "Step 'work' failed: plain",
        }
        assert await store.unfinished() == []
    finally:
        await store.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("bad_output", "stored_output", "why"),
    [
        ({"title": "caf\ud800"}, {"title": "caf\ufffd"}, "text that is not valid Unicode (\\ud800)"),
        ({"score": math.nan}, {"score": None}, "a number JSON cannot hold (NaN or Infinity)"),
    ],
    ids=["lone surrogate", "NaN"],
)
async def test_surrogates_and_nan_fail_their_run_alone_the_same_way_on_both_backends(
    history_location: Location, bad_output: Any, stored_output: Any, why: str
) -> None:
    store = RunStore(history_location, retention_days=30, retention_runs=100)
    refused: list[Refusal] = []
    store.on_refuse = refused.extend
    await store.open()
    try:
        store.add_run(row("bad", {"n": 1}, message="caf\udc80"))
        store.add_run(row("good", {"n": 2}))
        for pair in zip(failed_run("bad", "x", bad_output), failed_run("good", "y", {"n": 2}), strict=True):
            for event in pair:
                store.add_event(event)
        await store.sync()

        assert store.health()["state"] == "ok"
        assert [(r.run_id, r.why) for r in refused] == [("bad", f"the output of step 'work' contains {why}")]
        bad = await store.load("bad")
        assert bad is not None
        assert bad[1][3]["output"] == stored_output
        assert bad[0].status == "failed"
        assert bad[0].message.startswith(f"Step 'work' failed: x. {REFUSED}the output of step 'work' contains {why}")
        good = await store.load("good")
        assert good is not None and good[0].message == "Step 'work' failed: y"
    finally:
        await store.aclose()


def test_a_tool_error_with_a_nul_character_fails_only_its_run_and_reads_back_after_a_restart(
    history_location: Location, tmp_path: Path
) -> None:
    settings = app_settings(history_location, tmp_path)
    with in_process(tmp_path, **settings) as app:
        # The demo's lookup_outlet fails naming the domain it was given, NUL and all.
        bad = start_run(app.client, OUTLET, {"domain": "no\x00where.example"})["run_id"]
        others = [start_run(app.client, NEWS, NEWS_INPUT)["run_id"] for _ in range(2)]
        failed = wait_finished(app.client, bad)
        assert failed["status"] == "failed"
        assert "no\x00where.example" in failed["message"]
        assert [wait_finished(app.client, run_id)["status"] for run_id in others] == ["success", "success"]
        events = read_events(app.client, bad)
        assert (events[-1]["type"], events[-1]["status"]) == ("run_finished", "failed")
        assert app.get("/healthz").json()["history"] == {
            "state": "ok",
            "path": history_location.shown_file,
            "error": None,
        }

    with in_process(tmp_path, **settings) as app:
        # Listed from its row, before anything loads the run: its end was written, with U+FFFD for the NUL.
        listed = {r["run_id"]: r for r in app.get("/api/runs", params={"status": "failed"}).json()["runs"]}
        assert list(listed) == [bad]
        assert listed[bad]["message"] == failed["message"].replace("\x00", "\ufffd")
        # Its events keep the NUL: the run reads back as it ended, not resumed nor failed by the restart.
        assert get_run(app.client, bad) == failed
        assert read_events(app.client, bad) == events
        assert [get_run(app.client, run_id)["status"] for run_id in others] == ["success", "success"]


def test_a_nul_in_a_run_id_or_filter_finds_nothing_on_both_backends(history_location: Location, tmp_path: Path) -> None:
    with in_process(tmp_path, **app_settings(history_location, tmp_path)) as app:
        run_id = run_to_end(app.client, NEWS, NEWS_INPUT)["run_id"]
        for path in ("/api/runs/a%00b", "/api/runs/a%00b/events", "/runs/a%00b"):
            assert app.get(path).status_code == 404, path
        assert app.get("/api/runs/a%00b").json()["detail"] == "Unknown run_id: a\x00b"
        for params in ({"scenario_id": "news\x00"}, {"started_by": "a\x00b"}):
            listed = app.get("/api/runs", params=params)
            assert listed.status_code == 200, listed.text
            assert listed.json() == {"runs": [], "next_cursor": None}
        assert [run["run_id"] for run in app.get("/api/runs").json()["runs"]] == [run_id]
        assert app.get("/healthz").json()["history"]["state"] == "ok"
