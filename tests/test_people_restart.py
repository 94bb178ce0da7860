"""Runs waiting on people outlive their server: killed with SIGKILL or stopped gracefully, the server comes
back with the run still waiting, and an answer then completes the step and the run.

The first server is a real `stepline serve` (a process to kill); the one that comes back on the same data
directory is in-process, so that the test answers through the run's inbox as the API and the pages do.
A run that was also calling a tool not known to be safe to call twice waits for a person's Resume first; one
whose scenario changed or went away meanwhile ends interrupted, saying why.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import StepServer, wait_until
from inprocess import InProcessApp, in_process
from mcp_process import HttpMcpServer, workflow_home
from runs import get_run as served_run
from runs import start_run
from sse import read_events
from test_approval import answer, get_run, pending, wait_asked, wait_finished
from test_history import kill_hard, stored_event_types

from web.events import AnswerAction, RequestKind
from web.inbox import Ask

ALICE = {"name": "alice", "source": "proxy"}
ANONYMOUS = {"name": "anonymous", "source": "anonymous"}
# What a person is asked after a restart before a call that may have partly run is made again.
RESUME_QUESTION = (
    "Stepline stopped while step 'slow' was running: it may have partly run (its tool may have done some of its "
    "work). Resume runs it again from the start; the steps that had ended keep their results."
)
SHUT_DOWN_MESSAGE = "Interrupted: the server shut down while this run was in progress"

FORM = {"type": "object", "properties": {"copies": {"type": "integer"}}, "required": ["copies"]}
SHIP = {
    "schema_version": "2",
    "scenario_id": "ship",
    "name": "Ship",
    "input_schema": {"type": "object", "properties": {"title": {"type": "string"}}},
    "steps": [
        {"name": "draft", "tool": "echo", "input": {"value": "{{ input.title }}"}},
        {"name": "approve", "type": "approval", "message": "Print '{{ steps.draft.output.value }}'?", "schema": FORM},
        {
            "name": "print",
            "tool": "echo",
            # The draft's structured content: a step that ended before a restart reads the same after it.
            "input": {"value": "{{ steps.approve.output.values.copies }} of {{ steps.draft.structured.value }}"},
        },
    ],
    "output": "{{ steps.print.output.value }}",
}
# An approval beside a call still in flight: the run was doing more than waiting on a person.
BUSY = {
    "schema_version": "2",
    "scenario_id": "busy",
    "name": "Busy",
    "steps": [
        {"name": "approve", "type": "approval", "message": "Go on?"},
        {"name": "slow", "tool": "sleep", "input": {"seconds": 60}},
    ],
}
SHORT = {
    "schema_version": "2",
    "scenario_id": "short",
    "name": "Short",
    "steps": [{"name": "approve", "type": "approval", "message": "Quick!", "wait_timeout_seconds": 1}],
}


PROFILE = {
    "schema_version": "2",
    "scenario_id": "profile",
    "name": "Profile",
    "steps": [{"name": "ask", "tool": "profile", "server": "asking"}],
}


@pytest.fixture
def asking(tmp_path: Path) -> Iterator[HttpMcpServer]:
    """tests/servers/asking.py over streamable HTTP, in a process of its own: it outlives Stepline's restart,
    as a remote server does (its input-required state is sealed with a key of its process)."""
    server = HttpMcpServer("asking.py", "streamable-http", tmp_path).start()
    yield server
    server.kill()


@pytest.fixture
def home(tmp_path: Path, asking: HttpMcpServer) -> tuple[Path, Path, Path]:
    """(scenario folder, mcpServers file, data directory): the tests' workflow server, and one that asks."""
    folder, config = workflow_home(tmp_path, [SHIP, BUSY, SHORT, PROFILE])
    servers = json.loads(config.read_text(encoding="utf-8"))
    servers["mcpServers"]["asking"] = {"type": "http", "url": asking.url}
    config.write_text(json.dumps(servers), encoding="utf-8")
    return folder, config, tmp_path / "data"


def serve(make_server: Callable[..., StepServer], home: tuple[Path, Path, Path]) -> StepServer:
    folder, config, data = home
    return make_server("--scenarios", str(folder), "--mcp-config", str(config), "--data-dir", str(data))


def come_back(make_app: Callable[..., InProcessApp], home: tuple[Path, Path, Path]) -> InProcessApp:
    folder, config, data = home
    app = make_app(scenarios=folder, mcp_config=config, data_dir=data)
    app.wait_ready()
    return app


def listed_status(target: str | InProcessApp, run_id: str) -> str:
    """The run's status in the run list filtered on `waiting`, as GET /api/runs?status=waiting shows it."""
    if isinstance(target, str):
        response = httpx.get(f"{target}/api/runs", params={"status": "waiting"}, timeout=10)
    else:
        response = target.get("/api/runs", params={"status": "waiting"})
    assert response.status_code == 200, response.text
    return {run["run_id"]: run["status"] for run in response.json()["runs"]}.get(run_id, "not waiting")


def pending_of_kind(app: InProcessApp, run_id: str, kind: str) -> dict[str, Any]:
    [request] = [request for request in pending(app, run_id) if request["kind"] == kind]
    return request


def respond(app: InProcessApp, run_id: str, request_id: str, action: str) -> None:
    """Answer a request as the run's page and the API do (nobody named, on a loopback server)."""
    response = app.post(f"/api/runs/{run_id}/requests/{request_id}", json={"action": action})
    assert response.status_code == 200, response.text
    assert response.json()["answered_by"] == ANONYMOUS


def wait_waiting_on_disk(server: StepServer, data: Path, run_id: str) -> None:
    wait_until(lambda: listed_status(server.url, run_id) == "waiting", 10, "the run to wait")
    wait_until(lambda: "input_requested" in stored_event_types(data, run_id), 10, "the request to be on disk")


def test_a_run_waiting_on_an_approval_outlives_kill_9_and_finishes_once_answered(
    make_server: Callable[..., StepServer], make_app: Callable[..., InProcessApp], home: tuple[Path, Path, Path]
) -> None:
    server = serve(make_server, home)
    run_id = start_run(server.url, "ship", {"title": "Spring issue"})["run_id"]
    wait_waiting_on_disk(server, home[2], run_id)

    kill_hard(server)
    app = come_back(make_app, home)

    assert listed_status(app, run_id) == "waiting"
    run = get_run(app, run_id)
    assert run["status"] == "waiting"
    assert [(s["node_id"], s["status"]) for s in run["steps"]] == [("draft", "success"), ("approve", "waiting")]
    [request] = run["pending_requests"]
    assert (request["kind"], request["message"]) == ("approval", "Print 'Spring issue'?")

    response = app.post(
        f"/api/runs/{run_id}/requests/{request['request_id']}", json={"action": "accept", "content": {"copies": 2}}
    )
    assert response.status_code == 200, response.text
    assert response.json()["answered_by"] == ANONYMOUS  # nobody named, on a loopback server
    run = wait_finished(app, run_id)

    assert run["status"] == "success", run
    # The step before the restart kept its result: the step after it reads both.
    assert run["output"] == "2 of Spring issue"
    assert [(s["node_id"], s["status"], s["message"]) for s in run["steps"]] == [
        ("draft", "success", ""),
        ("approve", "success", "Approved by anonymous"),
        ("print", "success", ""),
    ]
    events = read_events(app.client, run_id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    types = [e["type"] for e in events]
    assert types.count("run_started") == 1 and types.count("input_requested") == 1
    resumed = next(e for e in events if e["type"] == "run_resumed")
    assert (resumed["attempt"], resumed["waiting_steps"], resumed["rerun_steps"], resumed["by"]) == (
        1,
        ["approve"],
        [],
        None,
    )
    # The step that had ended before the restart was not called again.
    assert [e["step_name"] for e in events if e["type"] == "step_started"] == ["draft", "approve", "print"]
    assert listed_status(app, run_id) == "not waiting"


def test_a_run_waiting_on_an_approval_outlives_a_graceful_restart(
    make_server: Callable[..., StepServer], make_app: Callable[..., InProcessApp], home: tuple[Path, Path, Path]
) -> None:
    server = serve(make_server, home)
    run_id = start_run(server.url, "ship", {"title": "Autumn"})["run_id"]
    wait_waiting_on_disk(server, home[2], run_id)

    assert server.stop() in (0, -signal.SIGTERM)
    # The stopping server recorded no ending: the run was only waiting on a person.
    assert stored_event_types(home[2], run_id)[-1] == "input_requested"
    app = come_back(make_app, home)

    [request] = pending(app, run_id)
    answer(app, run_id, request["request_id"], "accept", {"copies": 5}, by=ALICE)
    run = wait_finished(app, run_id)
    assert (run["status"], run["output"]) == ("success", "5 of Autumn")


def test_an_approval_declined_after_a_restart_fails_the_run(
    make_server: Callable[..., StepServer], make_app: Callable[..., InProcessApp], home: tuple[Path, Path, Path]
) -> None:
    server = serve(make_server, home)
    run_id = start_run(server.url, "ship", {"title": "Never"})["run_id"]
    wait_waiting_on_disk(server, home[2], run_id)
    kill_hard(server)
    app = come_back(make_app, home)

    [request] = pending(app, run_id)
    answer(app, run_id, request["request_id"], "decline", by=ALICE)
    run = wait_finished(app, run_id)

    assert (run["status"], run["message"]) == ("failed", "Step 'approve' failed: Declined by alice")
    assert [(s["node_id"], s["status"]) for s in run["steps"]] == [
        ("draft", "success"),
        ("approve", "failed"),
        ("print", "skipped"),
    ]


def test_a_request_that_expired_while_the_server_was_down_fails_its_step(
    make_server: Callable[..., StepServer], make_app: Callable[..., InProcessApp], home: tuple[Path, Path, Path]
) -> None:
    server = serve(make_server, home)
    run_id = start_run(server.url, "short")["run_id"]
    wait_waiting_on_disk(server, home[2], run_id)
    kill_hard(server)
    time.sleep(1.2)  # past the request's expiry (wait_timeout_seconds: 1)
    app = come_back(make_app, home)

    run = wait_finished(app, run_id)
    message = "Nobody answered within 1s (wait_timeout_seconds)"
    assert (run["status"], run["message"]) == ("failed", f"Step 'approve' failed: {message}")
    events = read_events(app.client, run_id)
    expired = [e for e in events if e["type"] == "input_answered"]
    assert [(e["action"], e["answered_by"]) for e in expired] == [("expired", None)]


@pytest.mark.parametrize("change", ["changed", "removed"])
def test_a_run_whose_scenario_changed_while_it_waited_ends_saying_so(
    make_server: Callable[..., StepServer],
    make_app: Callable[..., InProcessApp],
    home: tuple[Path, Path, Path],
    change: str,
) -> None:
    server = serve(make_server, home)
    run_id = start_run(server.url, "ship", {"title": "Changed"})["run_id"]
    wait_waiting_on_disk(server, home[2], run_id)
    kill_hard(server)
    if change == "changed":
        changed = {**SHIP, "steps": [*SHIP["steps"][:2], {"name": "print", "tool": "upper", "input": {"text": "x"}}]}
        (home[0] / "ship.json").write_text(json.dumps(changed), encoding="utf-8")
        why = "its scenario 'ship' changed since"
    else:
        (home[0] / "ship.json").unlink()
        why = "its scenario 'ship' is no longer served"
    app = come_back(make_app, home)

    run = get_run(app, run_id)
    ending = f"Interrupted by a server restart: {why}, so this run could not go on"
    assert (run["status"], run["message"]) == ("failed", ending)
    assert [(s["node_id"], s["status"], s["message"]) for s in run["steps"]] == [
        ("draft", "success", ""),
        ("approve", "failed", f"Interrupted by a server restart: {why}"),
        ("print", "skipped", f"Not run: {ending}"),
    ]
    assert run["pending_requests"] == []
    events = read_events(app.client, run_id)
    assert "run_resumed" not in [e["type"] for e in events]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


def test_a_run_doing_more_than_waiting_asks_to_resume_its_call_and_waits_again_once_resumed(
    make_server: Callable[..., StepServer], make_app: Callable[..., InProcessApp], home: tuple[Path, Path, Path]
) -> None:
    """An approval waiting beside a call in flight whose tool may not be called twice (no annotations): after
    the restart, the run waits for a person's Resume. Ending it ends the waiting step too; resuming it asks the
    approval again (the same request) and calls the tool again from the start."""
    server = serve(make_server, home)
    ended, resumed, answered = (start_run(server.url, "busy")["run_id"] for _ in range(3))

    def busy_on_disk(run_id: str) -> bool:
        stored = stored_event_types(home[2], run_id)
        return "input_requested" in stored and stored.count("step_started") == 2

    runs = (ended, resumed, answered)
    wait_until(lambda: all(map(busy_on_disk, runs)), 10, "the approvals asked and the calls started")
    before = {run_id: served_run(server.url, run_id) for run_id in runs}
    kill_hard(server)
    app = come_back(make_app, home)

    for run_id in runs:
        run = get_run(app, run_id)
        assert run["status"] == "waiting"
        assert listed_status(app, run_id) == "waiting"
        by_kind = {request["kind"]: request for request in run["pending_requests"]}
        assert sorted(by_kind) == ["approval", "resume"]
        # The approval still open as it was; the Resume asked of the call that may have partly run.
        assert by_kind["approval"] == before[run_id]["pending_requests"][0]
        question = by_kind["resume"]
        assert (question["step_name"], question["steps"], question["message"]) == ("slow", ["slow"], RESUME_QUESTION)

    question = {run_id: pending_of_kind(app, run_id, "resume") for run_id in runs}
    respond(app, ended, question[ended]["request_id"], "decline")
    run = wait_finished(app, ended)
    declined = "Not resumed after a server restart (declined by anonymous)"
    assert (run["status"], run["message"]) == ("failed", declined)
    assert sorted((s["node_id"], s["status"], s["message"]) for s in run["steps"]) == [
        ("approve", "failed", declined),
        ("slow", "failed", declined),
    ]
    assert run["pending_requests"] == []
    events = read_events(app.client, ended)
    assert "run_resumed" not in [e["type"] for e in events]
    assert events[-1]["type"] == "run_finished"

    respond(app, resumed, question[resumed]["request_id"], "accept")
    record = app.state["runs"].held(resumed)
    wait_until(
        lambda: [e.get("step_name") for e in record.events if e["type"] == "step_started"].count("slow") == 2,
        10,
        "the call to start again",
    )
    run = get_run(app, resumed)
    assert run["status"] == "waiting"
    assert [(s["node_id"], s["status"]) for s in run["steps"]] == [("approve", "waiting"), ("slow", "running")]
    assert run["pending_requests"] == before[resumed]["pending_requests"]  # asked again, not anew
    # The call would take a minute: cancelling ends the run, and its stream can be read whole.
    assert app.post(f"/api/runs/{resumed}/cancel").status_code == 202
    events = read_events(app.client, resumed)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    [event] = [e for e in events if e["type"] == "run_resumed"]
    assert (event["attempt"], event["waiting_steps"], event["rerun_steps"], event["by"]) == (
        1,
        ["approve"],
        ["slow"],
        ANONYMOUS,
    )
    assert [e["step_name"] for e in events if e["type"] == "step_started"] == ["approve", "slow", "slow"]
    assert [e["kind"] for e in events if e["type"] == "input_requested"] == ["approval", "resume"]
    assert (events[-1]["type"], events[-1]["status"]) == ("run_finished", "cancelled")

    # The approval may be answered while the run waits for its Resume: the step takes that answer once resumed.
    respond(app, answered, pending_of_kind(app, answered, "approval")["request_id"], "accept")
    respond(app, answered, question[answered]["request_id"], "accept")
    wait_until(
        lambda: [(s["node_id"], s["status"]) for s in get_run(app, answered)["steps"]]
        == [("approve", "success"), ("slow", "running")],
        10,
        "the approval to take its answer and the call to start again",
    )
    assert get_run(app, answered)["pending_requests"] == []
    assert app.post(f"/api/runs/{answered}/cancel").status_code == 202


def test_an_answer_given_as_the_server_stops_is_acted_on_after_the_restart(
    tmp_path: Path, home: tuple[Path, Path, Path]
) -> None:
    """The answer is on disk, but the step was stopped before it heard it: it goes on from the answer."""
    folder, config, data = home
    with in_process(tmp_path, scenarios=folder, mcp_config=config, data_dir=data) as app:
        app.wait_ready()
        run_id = start_run(app.client, "ship", {"title": "Last minute"})["run_id"]
        [request] = wait_asked(app, run_id)

        async def answer_then_shut_down() -> None:
            record = app.state["runs"].held(run_id)
            inbox = app.state["runner"].inbox
            inbox.answer(record, request["request_id"], AnswerAction.ACCEPT, {"copies": 4}, by=ALICE)
            app.app.state.stop_runs()  # in the same tick: the step never hears the answer

        app.call(answer_then_shut_down())

    assert stored_event_types(data, run_id)[-1] == "input_answered"
    with in_process(tmp_path, scenarios=folder, mcp_config=config, data_dir=data) as app:
        run = wait_finished(app, run_id)
        assert (run["status"], run["output"]) == ("success", "4 of Last minute")
        assert pending(app, run_id) == []
        assert [e["type"] for e in read_events(app.client, run_id)].count("input_requested") == 1


def test_an_answer_to_another_request_of_the_step_is_not_taken_for_its_approval(
    tmp_path: Path, home: tuple[Path, Path, Path]
) -> None:
    """Only the approval's own answer approves it: after the restart it still waits for that one."""
    folder, config, data = home
    with in_process(tmp_path, scenarios=folder, mcp_config=config, data_dir=data) as app:
        app.wait_ready()
        run_id = start_run(app.client, "ship", {"title": "Careful"})["run_id"]
        [approval] = wait_asked(app, run_id)

        async def another_request_answered_then_shut_down() -> None:
            record = app.state["runs"].held(run_id)
            inbox = app.state["runner"].inbox
            other = Ask(RequestKind.ELICITATION, "Anything else?", {"requested_schema": FORM}, durable=True)
            asking = asyncio.create_task(inbox.ask(record, "approve", 1, other))
            while len(record.state.pending) < 2:
                await asyncio.sleep(0)
            other_id = [rid for rid in record.state.pending if rid != approval["request_id"]][0]
            inbox.answer(record, other_id, AnswerAction.ACCEPT, {"copies": 9}, by=ALICE)
            await asking
            app.app.state.stop_runs()

        app.call(another_request_answered_then_shut_down())

    with in_process(tmp_path, scenarios=folder, mcp_config=config, data_dir=data) as app:
        app.wait_ready()
        assert [request["request_id"] for request in wait_asked(app, run_id)] == [approval["request_id"]]
        assert get_run(app, run_id)["status"] == "waiting"


def test_without_a_history_a_waiting_run_ends_at_shutdown(tmp_path: Path, home: tuple[Path, Path, Path]) -> None:
    """Nothing could resume it: it ends as any run the server stopped."""
    folder, config, _ = home
    with in_process(tmp_path, scenarios=folder, mcp_config=config, history=False) as app:
        app.wait_ready()
        run_id = start_run(app.client, "ship", {"title": "Memory only"})["run_id"]
        wait_asked(app, run_id)
        record = app.state["runs"].held(run_id)

    assert (record.state.status, record.state.message) == ("failed", SHUT_DOWN_MESSAGE)
    assert record.state.steps["approve"].status == "cancelled"
    assert record.state.pending == {}


def test_a_run_waiting_on_an_input_required_request_outlives_kill_9(
    make_server: Callable[..., StepServer], make_app: Callable[..., InProcessApp], home: tuple[Path, Path, Path]
) -> None:
    """The server answered the call with input-required results (protocol 2026-07-28): nothing stays open on
    its side, so after the restart the call is sent again with the answers and the round's state."""
    server = serve(make_server, home)
    run_id = start_run(server.url, "profile")["run_id"]
    # The first round asks for a form and a model completion at once (its roots request is answered by itself).
    wait_until(lambda: stored_event_types(home[2], run_id).count("input_requested") == 2, 15, "the first round")

    kill_hard(server)
    app = come_back(make_app, home)

    run = get_run(app, run_id)
    assert run["status"] == "waiting"
    by_kind = {request["kind"]: request for request in run["pending_requests"]}
    assert sorted(by_kind) == ["elicitation", "sampling"]
    assert by_kind["elicitation"]["message"] == "Who is this for?"
    answer(app, run_id, by_kind["elicitation"]["request_id"], "accept", {"name": "Ada"}, by=ALICE)
    answer(app, run_id, by_kind["sampling"]["request_id"], "accept", {"text": "Onwards"}, by=ALICE)
    # The call goes on: its second round asks again.
    wait_until(lambda: [r["message"] for r in pending(app, run_id)] == ["Publish the profile?"], 15, "round two")
    [confirm] = pending(app, run_id)
    answer(app, run_id, confirm["request_id"], "accept", {"ok": True}, by=ALICE)
    run = wait_finished(app, run_id)

    assert run["status"] == "success", run
    [step] = run["steps"]
    assert step["output"]["name"] == {"action": "accept", "content": {"name": "Ada"}}
    assert step["output"]["confirm"] == {"action": "accept", "content": {"ok": True}}
    assert step["output"]["motto"]["content"]["text"] == "Onwards"
    events = read_events(app.client, run_id)
    assert [e["waiting_steps"] for e in events if e["type"] == "run_resumed"] == [["ask"]]
