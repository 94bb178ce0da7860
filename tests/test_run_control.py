"""Run control, served in-process: cancel a run mid-step (its MCP server sees the cancellation), rerun, list."""

from __future__ import annotations

import concurrent.futures
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import wait_until
from inprocess import InProcessApp, in_process
from runs import get_run, run_to_end, start_run, wait_finished
from sse import aread_events, read_events

# An MCP server written for these tests: `wait` sleeps, leaving a mark when it starts, when the
# client cancels it and when it finishes; `echo` answers at once.
SLOW_SERVER = '''
import sys
from pathlib import Path

import anyio
from mcp.server.mcpserver import Context, MCPServer

marks = Path(sys.argv[1])
server = MCPServer("slow")


@server.tool()
async def wait(seconds: float, ctx: Context) -> str:
    """Sleep for `seconds`."""
    (marks / "started").write_text("started")
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        (marks / "cancelled").write_text("cancelled")
        raise
    (marks / "finished").write_text("finished")
    return "waited"


@server.tool()
def echo(text: str) -> str:
    """Return `text`."""
    return text


server.run()
'''

WAIT_THEN_ECHO = {
    "schema_version": "1",
    "scenario_id": "wait_then_echo",
    "name": "Wait, then echo",
    "input_schema": {
        "type": "object",
        "required": ["seconds", "text"],
        "properties": {"seconds": {"type": "number"}, "text": {"type": "string"}},
    },
    "steps": [
        {"name": "wait", "tool": "wait", "input": {"seconds": {"from": "input.seconds"}}},
        {"name": "echo", "tool": "echo", "input": {"text": {"from": "input.text"}}},
    ],
}
ECHO = {
    "schema_version": "1",
    "scenario_id": "echo_once",
    "name": "Echo once",
    "input_schema": {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}},
    "steps": [{"name": "echo", "tool": "echo", "input": {"text": {"from": "input.text"}}}],
}
OUTLET = "outlet_profile_v1"
NEWS = "news_source_discovery_v1"
NEWS_INPUT = {"url": "https://signal.example/culture/lighthouse-library-explainer"}


class SlowSetup:
    """The slow MCP server's config, a scenario folder using it, and where its marks appear."""

    def __init__(self, root: Path) -> None:
        self.marks = root / "marks"
        self.marks.mkdir()
        script = root / "slow_server.py"
        script.write_text(SLOW_SERVER)
        self.mcp_config = root / "mcp.json"
        self.mcp_config.write_text(
            json.dumps({"mcpServers": {"slow": {"command": sys.executable, "args": [str(script), str(self.marks)]}}})
        )
        self.scenarios = root / "scenarios"
        self.scenarios.mkdir()
        for scenario in (WAIT_THEN_ECHO, ECHO):
            self.write_scenario(scenario)

    def write_scenario(self, scenario: dict[str, Any]) -> None:
        (self.scenarios / f"{scenario['scenario_id']}.json").write_text(json.dumps(scenario))

    def settings(self, **extra: Any) -> dict[str, Any]:
        return {"mcp_config": self.mcp_config, "scenarios": self.scenarios, **extra}


@pytest.fixture
def slow(tmp_path: Path) -> SlowSetup:
    return SlowSetup(tmp_path)


def list_runs(app: InProcessApp, **params: Any) -> httpx.Response:
    return app.get("/api/runs", params=params)


def all_pages(app: InProcessApp, **params: Any) -> list[dict[str, Any]]:
    """Every run the list yields, following next_cursor to the end."""
    runs: list[dict[str, Any]] = []
    cursor = None
    while True:
        response = list_runs(app, **params, **({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200, response.text
        body = response.json()
        runs += body["runs"]
        cursor = body["next_cursor"]
        if cursor is None:
            return runs


def follow_in_background(app: InProcessApp, run_id: str) -> concurrent.futures.Future[list[dict[str, Any]]]:
    """Subscribe to the run's stream now; the future holds its events once the stream ends."""

    async def read() -> list[dict[str, Any]]:
        async with app.async_client() as client:
            return await aread_events(client, run_id)

    return app.submit(read())


def test_cancel_stops_the_tool_call_on_the_mcp_server(make_app: Callable[..., InProcessApp], slow: SlowSetup) -> None:
    app = make_app(**slow.settings())
    run_id = start_run(app.client, "wait_then_echo", {"seconds": 60, "text": "never"})["run_id"]
    streamed = follow_in_background(app, run_id)
    wait_until(lambda: (slow.marks / "started").exists(), 15, "the slow tool to start")
    running = list_runs(app, status="running").json()["runs"]
    assert [run["run_id"] for run in running] == [run_id]

    response = app.post(f"/api/runs/{run_id}/cancel")

    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["run_id"] == run_id
    assert (answer["status"], answer["message"]) == ("cancelled", "Cancelled by request")
    events = streamed.result(30)
    assert events[-1]["type"] == "run_finished"
    assert (events[-1]["status"], events[-1]["message"]) == ("cancelled", "Cancelled by request")
    finished = [e for e in events if e["type"] == "step_finished"]
    assert [(e["step_name"], e["status"], e["message"]) for e in finished] == [
        ("wait", "cancelled", "Cancelled by request"),
        ("echo", "skipped", "Not run: Cancelled by request"),
    ]
    assert not any(e["type"] == "step_started" and e["step_name"] == "echo" for e in events)
    # The MCP client sent notifications/cancelled, and the server stopped the tool because of it.
    wait_until(lambda: (slow.marks / "cancelled").exists(), 10, "the MCP server to receive the cancellation")
    assert not (slow.marks / "finished").exists()
    run = get_run(app.client, run_id)
    assert run["status"] == "cancelled"
    assert [(s["node_id"], s["status"]) for s in run["steps"]] == [("wait", "cancelled"), ("echo", "skipped")]


def test_cancel_answers_409_once_finished_and_404_when_unknown(demo_app: InProcessApp) -> None:
    run = run_to_end(demo_app.client, OUTLET, {"domain": "daily.example.com"})

    finished = demo_app.post(f"/api/runs/{run['run_id']}/cancel")
    unknown = demo_app.post("/api/runs/00000000-0000-4000-8000-000000000000/cancel")

    assert finished.status_code == 409
    assert finished.json() == {"detail": f"Run {run['run_id']} has already finished (success)"}
    assert get_run(demo_app.client, run["run_id"])["status"] == "success"
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "Unknown run_id: 00000000-0000-4000-8000-000000000000"}


def test_rerun_starts_a_new_run_with_the_same_scenario_and_input(demo_app: InProcessApp) -> None:
    first = run_to_end(demo_app.client, OUTLET, {"domain": "notes.example.net"})

    response = demo_app.post(f"/api/runs/{first['run_id']}/rerun")

    assert response.status_code == 202, response.text
    again = response.json()
    assert again["run_id"] != first["run_id"]
    assert again["status"] == "queued"
    assert (again["scenario_id"], again["input"]) == (OUTLET, {"domain": "notes.example.net"})
    second = wait_finished(demo_app.client, again["run_id"])
    assert second["status"] == "success"
    assert [s["output"] for s in second["steps"]] == [s["output"] for s in first["steps"]]
    assert demo_app.post("/api/runs/00000000-0000-4000-8000-000000000000/rerun").status_code == 404


def test_rerun_checks_the_scenario_as_it_is_now(slow: SlowSetup, tmp_path: Path) -> None:
    # The scenarios are loaded when the app starts: the app is stopped, the files changed, a new one started.
    settings = slow.settings(data_dir=tmp_path / "data")
    with in_process(tmp_path, **settings) as app:
        echo_run = run_to_end(app.client, "echo_once", {"text": "hello"})
        wait_run = run_to_end(app.client, "wait_then_echo", {"seconds": 0, "text": "hello"})
    assert (echo_run["status"], wait_run["status"]) == ("success", "success")
    # Between restarts one scenario is deleted and the other now asks for an input the old run lacks.
    (slow.scenarios / "echo_once.json").unlink()
    stricter = json.loads(json.dumps(WAIT_THEN_ECHO))
    stricter["input_schema"]["required"].append("label")
    slow.write_scenario(stricter)

    with in_process(tmp_path, **settings) as app:
        gone = app.post(f"/api/runs/{echo_run['run_id']}/rerun")
        invalid = app.post(f"/api/runs/{wait_run['run_id']}/rerun")
        listed = all_pages(app)

    assert gone.status_code == 404
    assert gone.json() == {"detail": f"Scenario 'echo_once' of run {echo_run['run_id']} no longer exists"}
    assert invalid.status_code == 422
    assert [issue["msg"] for issue in invalid.json()["detail"]] == ["'label' is a required property"]
    # Neither refusal started a run.
    assert sorted(run["run_id"] for run in listed) == sorted([echo_run["run_id"], wait_run["run_id"]])


def test_the_list_pages_newest_first_without_gaps_or_repeats(make_app: Callable[..., InProcessApp]) -> None:
    app = make_app()  # a history of its own: only this test's runs
    plan = [
        (OUTLET, {"domain": "daily.example.com"}),
        (OUTLET, {"domain": "nowhere.example.com"}),
        (NEWS, NEWS_INPUT),
        (OUTLET, {"domain": "signal.example"}),
        (OUTLET, {"domain": "nowhere.example.org"}),
        (NEWS, NEWS_INPUT),
        (OUTLET, {"domain": "notes.example.net"}),
    ]
    created = [run_to_end(app.client, scenario_id, run_input) for scenario_id, run_input in plan]
    newest_first = [run["run_id"] for run in reversed(created)]

    for limit in (1, 2, 3, 7, 50):
        assert [run["run_id"] for run in all_pages(app, limit=limit)] == newest_first
    first_page = list_runs(app, limit=3).json()
    assert len(first_page["runs"]) == 3 and first_page["next_cursor"]
    assert first_page["runs"][0] == {
        "run_id": created[-1]["run_id"],
        "scenario_id": OUTLET,
        "status": "success",
        "message": "",
        "input": {"domain": "notes.example.net"},
        "created_at": first_page["runs"][0]["created_at"],
        "started_at": created[-1]["started_at"],
        "finished_at": created[-1]["finished_at"],
        "started_by": "anonymous",
    }
    assert list_runs(app, limit=7).json()["next_cursor"] is None

    outlets = [r["run_id"] for r in reversed(created) if r["scenario_id"] == OUTLET]
    failed = [r["run_id"] for r in reversed(created) if r["status"] == "failed"]
    assert len(failed) == 2
    assert [r["run_id"] for r in all_pages(app, scenario_id=OUTLET, limit=2)] == outlets
    assert [r["run_id"] for r in all_pages(app, status="failed", limit=1)] == failed
    assert [r["run_id"] for r in all_pages(app, scenario_id=NEWS, status="failed")] == []
    # A plain HTML form sends every field, empty ones included: an empty scenario or limit means "any"
    # (an empty status is refused, see below).
    assert [r["run_id"] for r in all_pages(app, scenario_id="", limit="")] == newest_first


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"status": "done"}, ["query", "status"]),
        # A filter that came out blank must not be answered with every run.
        ({"status": ""}, ["query", "status"]),
        ({"limit": "0"}, ["query", "limit"]),
        ({"limit": "201"}, ["query", "limit"]),
        ({"limit": "ten"}, ["query", "limit"]),
        ({"cursor": "not-a-cursor"}, ["query", "cursor"]),
        ({"cursor": "WyJvbmx5LW9uZSJd"}, ["query", "cursor"]),
    ],
)
def test_the_list_refuses_bad_parameters(demo_app: InProcessApp, params: dict[str, str], loc: list[str]) -> None:
    response = list_runs(demo_app, **params)

    assert response.status_code == 422
    assert [issue["loc"] for issue in response.json()["detail"]] == [loc]


def test_a_cancelled_run_stays_cancelled_in_its_replay(make_app: Callable[..., InProcessApp], slow: SlowSetup) -> None:
    app = make_app(**slow.settings())
    run_id = start_run(app.client, "wait_then_echo", {"seconds": 60, "text": "x"})["run_id"]
    wait_until(lambda: (slow.marks / "started").exists(), 15, "the slow tool to start")
    assert app.post(f"/api/runs/{run_id}/cancel").status_code == 202

    events = read_events(app.client, run_id)
    resumed = read_events(app.client, run_id, headers={"Last-Event-ID": "2"})

    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert resumed == events[2:]
    assert events[-1]["status"] == "cancelled"
