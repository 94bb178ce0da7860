"""Runs outlive their process, and their database's absence, when the history is in PostgreSQL.

A real `stepline serve --database URL` (a fresh database per test) is killed with -9 mid-run, and a new one on
the same database goes on with the run; the database server itself is stopped under a serving Stepline and
started again. The tools are those of tests/servers/counting.py over streamable HTTP, in a process that
outlives every Stepline of a test: its counts prove which for_each items and steps were called again.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from conftest import StepServer, wait_until
from mcp_process import HttpMcpServer
from pg_cutter import CommitCutter
from postgres import PostgresServer, postgres_server
from runs import get_run, start_run, wait_finished
from sse import read_events
from test_history import kill_hard
from test_resume import KEY, PAY, LiveReader, assert_contiguous, by_item, calls, steps_of, v2

from web.database import Location

ITEMS = 200
MAX_PARALLEL = 4
ITEM_SECONDS = 0.05
# Killed once this many items have ended on disk: well past the start, well before the end.
KILL_AFTER = 80
MANY = v2(
    "many",
    {
        "name": "each",
        "tool": "step",
        "for_each": "{{ input.items }}",
        "max_parallel": MAX_PARALLEL,
        "input": {"key": KEY, "item": "{{ item }}", "seconds": ITEM_SECONDS},
    },
    input_schema={"type": "object", "properties": {"items": {"type": "array"}}, "required": ["items"]},
    output="{{ steps.each.output | map(attribute='item') | list }}",
)
# One item at a time, slowly: the run is still writing events while its database is away and after it returns.
TRICKLE_ITEMS = 50
TRICKLE = v2(
    "trickle",
    {
        "name": "each",
        "tool": "step",
        "for_each": f"{{{{ range({TRICKLE_ITEMS}) | list }}}}",
        "max_parallel": 1,
        "input": {"key": KEY, "item": "{{ item }}", "seconds": 0.15},
    },
    output="{{ steps.each.output | map(attribute='item') | list }}",
)
# How long the database stays away in the tests of its loss: several of the run's items, several write retries.
OUTAGE_SECONDS = 2
QUICK = v2(
    "quick", {"name": "only", "tool": "step", "input": {"key": KEY, "item": 1}}, output="{{ steps.only.output.item }}"
)
SCENARIOS = [MANY, PAY, TRICKLE, QUICK]


@pytest.fixture(scope="module")
def lost_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of this module's own, for the tests that take it away: the session's is left running."""
    with postgres_server() as server:
        yield server


@pytest.fixture
def home(tmp_path: Path, counting: HttpMcpServer) -> tuple[Path, Path]:
    """(scenario folder, mcpServers file) the Stepline of a test and its restarts share."""
    folder = tmp_path / "scenarios"
    folder.mkdir()
    for scenario in SCENARIOS:
        (folder / f"{scenario['scenario_id']}.json").write_text(json.dumps(scenario), encoding="utf-8")
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"counting": {"type": "http", "url": counting.url}}}), "utf-8")
    return folder, config


def durable_database(postgres: PostgresServer) -> str:
    """A fresh database whose commits survive its server being stopped: the suite's servers run with
    synchronous_commit off for speed, which may lose the last commits when the server is killed; a database's
    own setting overrides the server's."""
    url = postgres.fresh_database()
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(postgres.url(), autocommit=True) as connection:
        connection.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = on')
    return url


@pytest.fixture
def serve(make_server: Callable[..., StepServer], home: tuple[Path, Path], tmp_path: Path) -> Callable[..., StepServer]:
    """Start a `stepline serve --database URL` (again after a kill or a stop) with the test's scenarios."""
    folder, config = home

    def start(url: str) -> StepServer:
        args = ("--scenarios", str(folder), "--mcp-config", str(config), "--data-dir", str(tmp_path / "data"))
        return make_server(*args, "--database", url)

    return start


def stored(url: str, run_id: str) -> list[dict[str, Any]]:
    """The run's events committed to the database so far, shaped as its event stream sends them."""
    with psycopg.connect(url, connect_timeout=5) as connection:
        rows = connection.execute(
            "SELECT seq, type, data FROM events WHERE run_id = %s ORDER BY seq", (run_id,)
        ).fetchall()
    return [{"type": kind, "run_id": run_id, "seq": seq, **json.loads(data)} for seq, kind, data in rows]


def ended_items(url: str, run_id: str) -> set[int]:
    return {e["item_index"] for e in stored(url, run_id) if e["type"] == "step_item_finished"}


def started_on_disk(url: str, run_id: str, step_name: str) -> bool:
    return any(e["type"] == "step_started" and e["step_name"] == step_name for e in stored(url, run_id))


def assert_on_disk(url: str, run_id: str, events: list[dict[str, Any]]) -> None:
    """The database holds the run as its stream tells it, event for event, to the end (a stored event may
    also keep what a stream never shows, such as what a request needs after a restart)."""
    on_disk = stored(url, run_id)
    assert [(e["seq"], e["type"]) for e in on_disk] == [(e["seq"], e["type"]) for e in events]
    assert all(kept.items() >= shown.items() for kept, shown in zip(on_disk, events, strict=True))


def running(postgres: PostgresServer) -> bool:
    try:
        with psycopg.connect(postgres.url(), connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


@contextlib.contextmanager
def database_away(postgres: PostgresServer, mode: str) -> Iterator[None]:
    """The database server stopped (`immediate`: as if it crashed) for the block; running again after it,
    whatever the block did."""
    postgres.stop(mode)
    assert not running(postgres)
    try:
        yield
    finally:
        if not running(postgres):
            postgres.resume()


def history(server: StepServer) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/healthz", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_for_each_killed_midway_goes_on_on_a_new_server_calling_only_the_items_not_ended(
    serve: Callable[..., StepServer], counting: HttpMcpServer, postgres: PostgresServer
) -> None:
    url = postgres.fresh_database()
    server = serve(url)
    run_id = start_run(server.url, "many", {"items": list(range(ITEMS))})["run_id"]
    wait_until(lambda: len(ended_items(url, run_id)) >= KILL_AFTER, 60, f"{KILL_AFTER} items ended on disk")

    kill_hard(server)
    ended = ended_items(url, run_id)  # what the new server goes on from
    called = {int(item) for item in calls(counting, run_id)["by_item"]}
    assert KILL_AFTER <= len(ended) < ITEMS and ended <= called
    server = serve(url)
    run = wait_finished(server.url, run_id, timeout=90)

    assert (run["status"], run["output"]) == ("success", list(range(ITEMS))), run["message"]
    # An item that had ended was called once; one called but not ended at the kill, twice; the rest once.
    assert by_item(counting, run_id) == {item: 1 + (item in called - ended) for item in range(ITEMS)}
    events = read_events(server.url, run_id)
    assert_contiguous(events)
    assert [e["step_name"] for e in events if e["type"] == "step_started"] == ["each"]
    assert sorted(e["item_index"] for e in events if e["type"] == "step_item_finished") == list(range(ITEMS))
    [resumed] = [e for e in events if e["type"] == "run_resumed"]
    assert (resumed["attempt"], resumed["rerun_steps"], resumed["by"]) == (1, ["each"], None)
    assert_on_disk(url, run_id, events)
    assert events[-1]["type"] == "run_finished"


def test_an_unsafe_step_killed_mid_call_waits_on_a_new_server_until_resumed(
    serve: Callable[..., StepServer], counting: HttpMcpServer, postgres: PostgresServer
) -> None:
    url = postgres.fresh_database()
    server = serve(url)
    run_id = start_run(server.url, "pay")["run_id"]
    wait_until(
        lambda: by_item(counting, run_id).get(0) == 1 and started_on_disk(url, run_id, "pay"),
        20,
        "the charge in its call, its start on disk",
    )

    kill_hard(server)
    server = serve(url)
    wait_until(lambda: get_run(server.url, run_id)["status"] == "waiting", 20, "the run to wait")
    run = get_run(server.url, run_id)
    [request] = run["pending_requests"]
    assert (request["kind"], request["step_name"], request["steps"]) == ("resume", "pay", ["pay"])
    assert "step 'pay' was running: it may have partly run" in request["message"]
    assert steps_of(run) == [("quote", "success"), ("pay", "waiting")]
    assert by_item(counting, run_id) == {1: 1, 0: 1}  # nothing called again while it waits

    response = httpx.post(f"{server.url}/api/runs/{run_id}/resume", timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["steps"] == ["pay"]
    run = wait_finished(server.url, run_id)
    assert (run["status"], run["output"]) == ("success", 2), run
    assert by_item(counting, run_id) == {1: 1, 0: 2}
    events = read_events(server.url, run_id)
    assert_contiguous(events)
    assert [e["rerun_steps"] for e in events if e["type"] == "run_resumed"] == [["pay"]]
    assert_on_disk(url, run_id, events)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_run_live_while_its_database_is_away_goes_on_and_loses_nothing(
    serve: Callable[..., StepServer], counting: HttpMcpServer, lost_postgres: PostgresServer, mode: str
) -> None:
    url = durable_database(lost_postgres)
    shown = Location.of(Path("."), url).shown
    server = serve(url)
    run_id = start_run(server.url, "trickle")["run_id"]
    reader = LiveReader(server, run_id)
    wait_until(lambda: len(ended_items(url, run_id)) >= 5, 30, "five items ended on disk")

    with database_away(lost_postgres, mode):
        refused = httpx.post(f"{server.url}/api/runs", json={"scenario_id": "quick", "input": {}}, timeout=30)
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["Retry-After"]) > 0
        assert f"run history in {shown} cannot be written" in refused.json()["detail"]
        unread = httpx.get(f"{server.url}/api/runs", timeout=30)
        assert (unread.status_code, "Retry-After" in unread.headers) == (503, True), unread.text
        health = history(server)
        assert (health["status"], health["history"]["state"], health["history"]["path"]) == (
            "degraded", "failing", shown,
        )  # fmt: skip
        # The live run is held in memory: its snapshot answers, whether the run goes on meanwhile or pauses.
        assert get_run(server.url, run_id)["status"] == "running"
        time.sleep(OUTAGE_SECONDS)
        assert server.process.poll() is None

    run = wait_finished(server.url, run_id, timeout=90)
    assert (run["status"], run["output"]) == ("success", list(range(TRICKLE_ITEMS))), run["message"]
    assert by_item(counting, run_id) == dict.fromkeys(range(TRICKLE_ITEMS), 1)
    wait_until(lambda: history(server)["history"]["state"] == "ok", 30, "the history to be written again")
    # New runs are taken again.
    quick = wait_finished(server.url, start_run(server.url, "quick")["run_id"])
    assert (quick["status"], quick["output"]) == ("success", 1)
    seen = read_events(server.url, run_id)
    # The reader watching since before the database went away saw every event once, in order.
    assert reader.join() == seen
    assert server.process.poll() is None
    assert server.stop() in (0, -signal.SIGTERM)

    # What a new server reads back from the database is the whole run, seq for seq.
    server = serve(url)
    events = read_events(server.url, run_id)
    assert_contiguous(events)
    assert events == seen
    assert_on_disk(url, run_id, events)
    assert sorted(e["item_index"] for e in events if e["type"] == "step_item_finished") == list(range(TRICKLE_ITEMS))
    assert (events[-1]["type"], events[-1]["status"]) == ("run_finished", "success")
    assert get_run(server.url, run_id)["output"] == list(range(TRICKLE_ITEMS))


def grow_read_pool(server: StepServer) -> None:
    """Reads side by side, so the server's pool holds several connections to the database."""

    def read() -> None:
        for _ in range(5):
            assert httpx.get(f"{server.url}/api/runs", timeout=30).status_code == 200

    readers = [threading.Thread(target=read) for _ in range(8)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(60)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_database_restarted_between_two_requests_answers_the_next_ones_at_once(
    serve: Callable[..., StepServer], lost_postgres: PostgresServer, mode: str
) -> None:
    """Every connection the server held was closed by the restart: none of them may fail the first
    request after it, a read through the pool or a run's first write."""
    url = durable_database(lost_postgres)
    server = serve(url)
    done = [wait_finished(server.url, start_run(server.url, "quick")["run_id"])["run_id"]]
    # Twice: the second time long after the server's start, with nothing but requests to use its connections.
    for _ in range(2):
        grow_read_pool(server)
        with database_away(lost_postgres, mode):
            pass

        listed = httpx.get(f"{server.url}/api/runs", timeout=30)
        assert listed.status_code == 200, listed.text
        assert [run["run_id"] for run in listed.json()["runs"]] == done[::-1]
        run = wait_finished(server.url, start_run(server.url, "quick")["run_id"])
        assert (run["status"], run["output"]) == ("success", 1)
        done.append(run["run_id"])
        assert history(server)["history"]["state"] == "ok"
    assert "cannot be written" not in server.log()


def test_health_shows_the_database_away_before_anything_is_written(
    serve: Callable[..., StepServer], lost_postgres: PostgresServer
) -> None:
    server = serve(durable_database(lost_postgres))
    with database_away(lost_postgres, "fast"):
        wait_until(lambda: history(server)["history"]["state"] == "failing", 10, "the history to show failing")
        assert history(server)["status"] == "degraded"


def test_a_read_refused_while_the_database_is_away_says_what_failed(
    serve: Callable[..., StepServer], lost_postgres: PostgresServer
) -> None:
    server = serve(durable_database(lost_postgres))
    with database_away(lost_postgres, "fast"):
        for path in ("/api/runs", "/api/runs/no-such-run"):
            response = httpx.get(f"{server.url}{path}", timeout=30)
            assert response.status_code == 503, response.text
            assert "cannot be read" in response.json()["detail"]
            assert "Run not started" not in response.json()["detail"]


def test_a_write_committed_as_its_connection_is_lost_is_not_taken_for_a_refused_one(
    serve: Callable[..., StepServer], counting: HttpMcpServer, lost_postgres: PostgresServer
) -> None:
    """The server committed a batch of events and the connection dropped before its reply: the batch is
    written again over a new connection, and finds its events already there."""
    url = durable_database(lost_postgres)
    cutter = CommitCutter(lost_postgres.host, lost_postgres.port)
    try:
        server = serve(cutter.url(url.rsplit("/", 1)[1], "stepline"))
        run_id = start_run(server.url, "trickle")["run_id"]
        wait_until(lambda: len(ended_items(url, run_id)) >= 3, 30, "three items ended on disk")
        cutter.arm()
        wait_until(lambda: cutter.cuts == 1, 30, "a commit cut off")
        run = wait_finished(server.url, run_id, timeout=90)
    finally:
        cutter.close()

    assert (run["status"], run["output"]) == ("success", list(range(TRICKLE_ITEMS))), run["message"]
    events = read_events(server.url, run_id)
    assert_contiguous(events)
    assert_on_disk(url, run_id, events)
