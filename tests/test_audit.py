"""The audit trail, served in-process: who started a run and who cancelled it, in its snapshot, events, the run
list (and its `started_by` filter), the run page and its stream, and after a restart from the history."""

from __future__ import annotations

import html
import json
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until
from inprocess import InProcessApp, in_process
from runs import TERMINAL, wait_finished
from sse import read_events

from web.schema import migration

OUTLET = "outlet_profile_v1"
OUTLET_INPUT = {"domain": "daily.example.com"}
# The portal's proxy names the user in a header; every user it names is an admin here.
PORTAL = {
    "auth_header": "X-Forwarded-User",
    "trusted_proxies": "127.0.0.1",
    "role_map": "*=admin",
    "host": "0.0.0.0",
    "allowed_hosts": "*",
}
# Each demo tool takes this long, so that a run is still running when it is cancelled.
SLOW_TOOLS = 1.0
ALICE = {"name": "alice", "source": "proxy"}
BOB = {"name": "bob", "source": "proxy"}
CI_BOT = {"name": "ci-bot", "source": "token"}


def as_user(name: str) -> dict[str, str]:
    return {"X-Forwarded-User": name}


def start(app: InProcessApp, user: str, scenario_id: str = OUTLET, run_input: dict[str, Any] | None = None) -> str:
    response = app.post(
        "/api/runs", json={"scenario_id": scenario_id, "input": run_input or OUTLET_INPUT}, headers=as_user(user)
    )
    assert response.status_code == 202, response.text
    return response.json()["run_id"]


def snapshot(app: InProcessApp, run_id: str, user: str = "carol") -> dict[str, Any]:
    response = app.get(f"/api/runs/{run_id}", headers=as_user(user))
    assert response.status_code == 200, response.text
    return response.json()


def finished(app: InProcessApp, run_id: str) -> dict[str, Any]:
    """The run's snapshot once it has ended."""
    deadline = time.monotonic() + 20
    while (run := snapshot(app, run_id))["status"] not in TERMINAL:
        assert time.monotonic() < deadline, f"run {run_id} still {run['status']}"
        time.sleep(0.02)
    return run


def listed(app: InProcessApp, user: str = "carol", **params: Any) -> list[dict[str, Any]]:
    response = app.get("/api/runs", params=params, headers=as_user(user))
    assert response.status_code == 200, response.text
    return response.json()["runs"]


def page_text(app: InProcessApp, path: str, user: str = "carol") -> str:
    """The page's text as a reader sees it: tags dropped, entities decoded, white space collapsed."""
    response = app.get(path, headers=as_user(user))
    assert response.status_code == 200, response.text
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", response.text)).split())


def events_of(app: InProcessApp, run_id: str, user: str = "carol") -> list[dict[str, Any]]:
    return read_events(app.client, run_id, headers=as_user(user))


@pytest.fixture
def portal(make_app: Callable[..., InProcessApp]) -> InProcessApp:
    return make_app(demo_delay=SLOW_TOOLS, **PORTAL)


@pytest.fixture
def history(tmp_path: Path) -> Callable[[], Iterator[InProcessApp]]:
    """Start the portal app on one data directory, as often as a test restarts it."""
    data_dir = tmp_path / "history"

    def open_app() -> Iterator[InProcessApp]:
        return in_process(tmp_path, data_dir=data_dir, demo_delay=SLOW_TOOLS, **PORTAL)

    return open_app


def cancel(app: InProcessApp, run_id: str, user: str) -> dict[str, Any]:
    response = app.post(f"/api/runs/{run_id}/cancel", headers=as_user(user))
    assert response.status_code == 202, response.text
    return response.json()


def test_a_run_records_who_started_it_and_who_cancelled_it(portal: InProcessApp) -> None:
    run_id = start(portal, "alice")
    assert snapshot(portal, run_id)["started_by"] == ALICE
    answer = cancel(portal, run_id, "bob")
    assert (answer["status"], answer["started_by"], answer["cancelled_by"]) == ("cancelled", ALICE, BOB)

    run = finished(portal, run_id)
    assert (run["started_by"], run["cancelled_by"]) == (ALICE, BOB)
    events = events_of(portal, run_id)
    assert (events[0]["type"], events[0]["started_by"]) == ("run_started", ALICE)
    assert (events[-1]["type"], events[-1]["status"], events[-1]["cancelled_by"]) == ("run_finished", "cancelled", BOB)

    text = page_text(portal, f"/runs/{run_id}")
    assert "Started by alice (portal)" in text
    assert "Cancelled by bob (portal)" in text


@pytest.mark.parametrize("with_history", [True, False], ids=["history", "memory only"])
def test_the_run_list_says_who_started_each_run_and_filters_by_it(
    make_app: Callable[..., InProcessApp], with_history: bool
) -> None:
    portal = make_app(demo_delay=SLOW_TOOLS, history=with_history, **PORTAL)
    mine = start(portal, "alice")
    theirs = start(portal, "bob")
    for run_id in (mine, theirs):
        cancel(portal, run_id, "bob")

    everyone = {run["run_id"]: run["started_by"] for run in listed(portal)}
    assert everyone == {mine: "alice", theirs: "bob"}
    assert [run["run_id"] for run in listed(portal, started_by="alice")] == [mine]
    assert [run["run_id"] for run in listed(portal, started_by="bob", status="cancelled")] == [theirs]
    assert listed(portal, started_by="dave") == []
    # An empty filter is no filter, as for the other parameters.
    assert len(listed(portal, started_by="")) == 2

    # The runs page's "My runs": the signed-in user's own.
    page = portal.get("/runs", params={"started_by": "me"}, headers=as_user("alice")).text
    assert mine[:8] in page and theirs[:8] not in page


def test_a_started_by_filter_longer_than_any_name_is_refused(portal: InProcessApp) -> None:
    response = portal.get("/api/runs", params={"started_by": "a" * 257}, headers=as_user("alice"))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "started_by"]


def test_the_live_page_is_told_who_cancelled_the_run(portal: InProcessApp) -> None:
    run_id = start(portal, "alice")
    cancel(portal, run_id, "bob")
    # The stream sends the run's header again when the run ends: a page open meanwhile shows who cancelled it.
    response = portal.get(f"/runs/{run_id}/stream", headers=as_user("carol"))
    assert response.status_code == 200
    finished = response.text.rsplit("event: run-finished", 1)[1]
    assert "Cancelled by" in finished and "bob" in finished


def test_who_acted_is_read_back_after_a_restart(history: Callable[[], Iterator[InProcessApp]]) -> None:
    with history() as app:
        run_id = start(app, "alice")
        cancel(app, run_id, "bob")
        finished(app, run_id)
        kept = start(app, "alice")  # still running when the server stops
        wait_until(lambda: bool(snapshot(app, kept)["steps"]), 10, "the kept run's first step to start")

    with history() as app:
        run = snapshot(app, run_id)
        assert (run["status"], run["started_by"], run["cancelled_by"]) == ("cancelled", ALICE, BOB)
        # Gone on after the restart, by the server itself: still alice's run, cancelled by nobody.
        went_on = finished(app, kept)
        assert (went_on["status"], went_on["started_by"], went_on["cancelled_by"]) == ("success", ALICE, None)
        went_on_events = events_of(app, kept)
        assert [e["started_by"] for e in went_on_events if e["type"] == "run_started"] == [ALICE]
        assert [e["by"] for e in went_on_events if e["type"] == "run_resumed"] == [None]
        assert went_on_events[-1]["cancelled_by"] is None
        assert "Started by alice (portal)" in page_text(app, f"/runs/{kept}")
        assert [row["run_id"] for row in listed(app, started_by="alice")] == [kept, run_id]
        assert listed(app, started_by="bob") == []
        events = events_of(app, run_id)
        assert (events[0]["started_by"], events[-1]["cancelled_by"]) == (ALICE, BOB)
        text = page_text(app, f"/runs/{run_id}")
        assert "Started by alice (portal)" in text and "Cancelled by bob (portal)" in text


def test_a_run_cancelled_before_it_started_keeps_who_started_it(history: Callable[[], Iterator[InProcessApp]]) -> None:
    with history() as app:
        runs = app.state["runs"]

        async def queue_and_cancel() -> str:
            record = runs.create(OUTLET, OUTLET_INPUT, started_by=CI_BOT)
            await runs.sync()
            await runs.cancel(record.run_id, cancelled_by=CI_BOT)
            return record.run_id

        run_id = app.call(queue_and_cancel())
        run = snapshot(app, run_id)
        assert (run["status"], run["started_by"], run["cancelled_by"]) == ("cancelled", CI_BOT, CI_BOT)
        text = page_text(app, f"/runs/{run_id}")
        assert "Started by ci-bot (token)" in text and "Cancelled by ci-bot (token)" in text

    with history() as app:
        run = snapshot(app, run_id)
        # It never recorded a run_started: the history's run row kept the name alone.
        assert (run["started_by"], run["cancelled_by"]) == ({"name": "ci-bot", "source": None}, CI_BOT)
        assert [row["run_id"] for row in listed(app, started_by="ci-bot")] == [run_id]
        text = page_text(app, f"/runs/{run_id}")
        assert "Started by ci-bot Cancelled by ci-bot (token)" in text


def test_anonymous_runs_on_loopback_record_anonymous(demo_app: InProcessApp) -> None:
    response = demo_app.post("/api/runs", json={"scenario_id": OUTLET, "input": OUTLET_INPUT})
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    anonymous = {"name": "anonymous", "source": "anonymous"}

    run = wait_finished(demo_app.client, run_id)
    assert (run["status"], run["started_by"], run["cancelled_by"]) == ("success", anonymous, None)
    events = read_events(demo_app.client, run_id)
    assert (events[0]["started_by"], events[-1]["cancelled_by"]) == (anonymous, None)
    assert run_id in [row["run_id"] for row in demo_app.get("/api/runs?started_by=anonymous").json()["runs"]]
    page = demo_app.get(f"/runs/{run_id}").text
    assert "Started by" in page and "(anonymous)" not in page


def test_a_user_name_is_escaped_on_the_run_page(portal: InProcessApp) -> None:
    name = '<img src=x onerror="alert(1)">'
    run_id = start(portal, name)
    assert snapshot(portal, run_id)["started_by"] == {"name": name, "source": "proxy"}
    page = portal.get(f"/runs/{run_id}", headers=as_user("carol")).text
    assert name not in page
    assert html.escape(name) in page or "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page


def test_runs_recorded_before_access_control_have_nobody(tmp_path: Path) -> None:
    data_dir = tmp_path / "old-history"
    data_dir.mkdir()
    run_id = "0b8f3e52-5a1d-4c8e-9f61-2d7c4a9e8b10"
    write_version_2_history(data_dir / "stepline.db", run_id)

    with in_process(tmp_path, data_dir=data_dir, **PORTAL) as app:
        run = snapshot(app, run_id)
        assert (run["status"], run["started_by"], run["cancelled_by"]) == ("cancelled", None, None)
        assert [(row["run_id"], row["started_by"]) for row in listed(app)] == [(run_id, None)]
        assert listed(app, started_by="alice") == []
        events = events_of(app, run_id)
        assert "started_by" not in events[0] and "cancelled_by" not in events[-1]
        text = page_text(app, f"/runs/{run_id}")
        # The run's own message says "Cancelled by request"; no line names who.
        assert re.findall(r"(?:Started|Cancelled) by \S+", text) == ["Cancelled by request"]


def write_version_2_history(path: Path, run_id: str) -> None:
    """A history file as Stepline wrote it before runs recorded who acted: one cancelled run."""
    connection = sqlite3.connect(path, isolation_level=None)
    for version in (1, 2):
        for statement in migration(version, "sqlite"):
            connection.execute(statement)
    connection.execute("PRAGMA user_version = 2")
    at = "2026-04-24T09:25:12.041+00:00"
    connection.execute(
        "INSERT INTO runs (run_id, scenario_id, status, message, input, created_at, started_at, finished_at) "
        "VALUES (?, ?, 'cancelled', 'Cancelled by request', ?, ?, ?, ?)",
        (run_id, OUTLET, json.dumps(OUTLET_INPUT), at, at, at),
    )
    events = [
        ("run_started", {"scenario_id": OUTLET, "started_at": at, "plan": None}),
        ("run_finished", {"status": "cancelled", "finished_at": at, "message": "Cancelled by request", "output": None}),
    ]
    connection.executemany(
        "INSERT INTO events (run_id, seq, type, data) VALUES (?, ?, ?, ?)",
        [(run_id, seq, kind, json.dumps(data)) for seq, (kind, data) in enumerate(events, start=1)],
    )
    connection.close()
