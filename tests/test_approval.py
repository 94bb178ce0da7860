"""Approval steps (scenario format v2): the run waits for a person, whose answer is the step's result.

One in-process app with the tests' workflow server. A person answers with POST
/api/runs/{id}/requests/{request_id}, or through the run's inbox as that route does when the test needs a
person named; what the test checks is what a user sees: the run's snapshot (statuses, messages, outputs,
pending requests) and the values the next step was called with.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import PROJECT_ROOT, wait_until
from inprocess import InProcessApp, in_process
from mcp_process import SERVERS, workflow_home
from runs import start_run

from web.events import AnswerAction

TERMINAL = {"success", "failed", "cancelled"}
ALICE = {"name": "alice", "source": "proxy"}
BOB = {"name": "bob", "source": "token"}
FORM = {
    "type": "object",
    "properties": {"copies": {"type": "integer", "minimum": 1}, "note": {"type": "string"}},
    "required": ["copies"],
}


def v2(scenario_id: str, *steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"schema_version": "2", "scenario_id": scenario_id, "name": scenario_id, "steps": list(steps), **extra}


def approval(name: str, message: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "type": "approval", "message": message, **fields}


SCENARIOS = [
    v2(
        "ship",
        {"name": "draft", "tool": "echo", "input": {"value": "{{ input.title }}"}},
        approval("approve", "Print '{{ steps.draft.output.value }}' for run {{ run.id }}?", schema=FORM),
        {"name": "print", "tool": "echo", "input": {"value": "{{ steps.approve.output.values.copies }} copies"}},
        input_schema={"type": "object", "properties": {"title": {"type": "string"}}},
        output={"copies": "{{ steps.approve.output.values.copies }}", "by": "{{ steps.approve.output.answered_by }}"},
    ),
    v2(
        "quick",
        approval("approve", "Go on?", wait_timeout_seconds=0.3),
        {"name": "after", "tool": "echo", "input": {"value": "{{ steps.approve.output }}"}},
    ),
    v2("by_default", approval("approve", "Go on?"), defaults={"wait_timeout_seconds": 0.2}),
    v2("server_wide", approval("approve", "Go on?")),
    v2(
        "tolerated",
        approval("approve", "Optional sign-off", on_error="continue"),
        {"name": "after", "tool": "echo", "input": {"value": "{{ steps.approve.status }}"}},
    ),
    # A tool whose server asks a person during the call (over the session, as 2025 servers do).
    v2(
        "confirm_idle",
        {
            "name": "ask",
            "tool": "confirm",
            "server": "asking",
            "input": {"question": "Sure?"},
            "idle_timeout_seconds": 0.3,
            "wait_timeout_seconds": 30,
        },
    ),
    v2(
        "confirm_retried",
        {
            "name": "ask",
            "tool": "confirm",
            "server": "asking",
            "input": {"question": "Quick?"},
            "wait_timeout_seconds": 0.3,
            "retry": {"max_attempts": 3, "backoff_seconds": 0},
        },
    ),
    v2(
        "each",
        approval("approve", "Publish {{ item }}?", for_each="{{ input.items }}"),
        input_schema={"type": "object", "properties": {"items": {"type": "array"}}},
    ),
]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessApp]:
    home = tmp_path_factory.mktemp("approval")
    folder, config = workflow_home(home, SCENARIOS)
    servers = json.loads(config.read_text(encoding="utf-8"))
    servers["mcpServers"]["asking"] = {"command": sys.executable, "args": [str(SERVERS / "asking.py"), "legacy-stdio"]}
    config.write_text(json.dumps(servers), encoding="utf-8")
    # The server-wide wait, for steps that set none: short, so that a test sees it end.
    with in_process(home, scenarios=folder, mcp_config=config, wait_timeout=0.5) as app:
        app.wait_ready()
        yield app


def get_run(app: InProcessApp, run_id: str) -> dict[str, Any]:
    """The run's snapshot, GET /api/runs/{id}."""
    response = app.get(f"/api/runs/{run_id}")
    assert response.status_code == 200, response.text
    return response.json()


def pending(app: InProcessApp, run_id: str) -> list[dict[str, Any]]:
    return get_run(app, run_id)["pending_requests"]


def wait_finished(app: InProcessApp, run_id: str) -> dict[str, Any]:
    wait_until(lambda: get_run(app, run_id)["status"] in TERMINAL, 10, f"run {run_id} to end")
    return get_run(app, run_id)


def wait_asked(app: InProcessApp, run_id: str, count: int = 1) -> list[dict[str, Any]]:
    wait_until(lambda: len(pending(app, run_id)) >= count, 10, f"{count} request(s) of run {run_id}")
    return pending(app, run_id)


def answer(app: InProcessApp, run_id: str, request_id: str, action: str, content: Any = None, by: Any = None) -> None:
    async def send() -> None:
        record = app.state["runs"].held(run_id)
        app.state["runner"].inbox.answer(record, request_id, AnswerAction(action), content, by=by)

    app.call(send())


def steps_of(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["node_id"]: step for step in run["steps"]}


def test_an_accepted_approval_gives_its_values_and_who_answered_to_the_steps_after_it(app: InProcessApp) -> None:
    run_id = start_run(app.client, "ship", {"title": "Spring issue"})["run_id"]
    [request] = wait_asked(app, run_id)

    waiting = get_run(app, run_id)
    assert waiting["status"] == "waiting"
    assert steps_of(waiting)["approve"]["status"] == "waiting"
    assert "print" not in steps_of(waiting)
    assert request["kind"] == "approval"
    assert request["step_name"] == "approve"
    assert request["message"] == f"Print 'Spring issue' for run {run_id}?"
    assert request["requested_schema"] == FORM
    assert request["durable"] is True

    answer(app, run_id, request["request_id"], "accept", {"copies": 3}, by=ALICE)
    run = wait_finished(app, run_id)

    assert run["status"] == "success", run
    approve = steps_of(run)["approve"]
    assert (approve["status"], approve["message"]) == ("success", "Approved by alice")
    assert approve["output"] == {"action": "accept", "values": {"copies": 3}, "answered_by": ALICE}
    assert steps_of(run)["print"]["output"]["value"] == "3 copies"
    assert run["output"] == {"copies": 3, "by": ALICE}


def test_plan_records_the_approval_type_and_no_tool(app: InProcessApp) -> None:
    run_id = start_run(app.client, "ship", {"title": "Plan"})["run_id"]
    [request] = wait_asked(app, run_id)
    plan = {step["name"]: step for step in get_run(app, run_id)["plan"]}
    answer(app, run_id, request["request_id"], "accept", {"copies": 1}, by=ALICE)
    wait_finished(app, run_id)

    assert (plan["approve"]["type"], plan["approve"]["tool"], plan["approve"]["depends_on"]) == (
        "approval",
        None,
        ["draft"],
    )
    assert plan["print"]["depends_on"] == ["approve"]


@pytest.mark.parametrize(("action", "message"), [("decline", "Declined by bob"), ("cancel", "Dismissed by bob")])
def test_a_declined_or_dismissed_approval_fails_its_step_and_the_run(
    app: InProcessApp, action: str, message: str
) -> None:
    run_id = start_run(app.client, "ship", {"title": "No"})["run_id"]
    [request] = wait_asked(app, run_id)

    answer(app, run_id, request["request_id"], action, by=BOB)
    run = wait_finished(app, run_id)

    assert (run["status"], run["message"]) == ("failed", f"Step 'approve' failed: {message}")
    steps = steps_of(run)
    assert (steps["approve"]["status"], steps["approve"]["message"], steps["approve"]["output"]) == (
        "failed",
        message,
        None,
    )
    assert (steps["print"]["status"], steps["print"]["message"]) == ("skipped", "Not run: step 'approve' failed")


def test_a_declined_approval_that_is_tolerated_lets_the_run_go_on(app: InProcessApp) -> None:
    run_id = start_run(app.client, "tolerated")["run_id"]
    [request] = wait_asked(app, run_id)
    answer(app, run_id, request["request_id"], "decline", by=None)
    run = wait_finished(app, run_id)

    assert run["status"] == "success"
    assert steps_of(run)["approve"]["message"] == "Declined"  # nobody named answered
    assert steps_of(run)["after"]["output"]["value"] == "failed"


@pytest.mark.parametrize(("scenario_id", "seconds"), [("quick", "0.3"), ("by_default", "0.2"), ("server_wide", "0.5")])
def test_an_approval_nobody_answers_fails_when_its_wait_ends(app: InProcessApp, scenario_id: str, seconds: str) -> None:
    """The step's wait_timeout_seconds, else its scenario's defaults, else the server's wait timeout."""
    run_id = start_run(app.client, scenario_id)["run_id"]
    [request] = wait_asked(app, run_id)

    run = wait_finished(app, run_id)

    message = f"Nobody answered within {seconds}s (wait_timeout_seconds)"
    assert (run["status"], run["message"]) == ("failed", f"Step 'approve' failed: {message}")
    assert (steps_of(run)["approve"]["status"], steps_of(run)["approve"]["message"]) == ("failed", message)
    assert pending(app, run_id) == []
    # Too late: the request is closed, saying how it ended.
    with pytest.raises(Exception, match="answered already \\(expired\\)|has ended"):
        answer(app, run_id, request["request_id"], "accept", {}, by=ALICE)


def test_a_run_waiting_for_an_approval_can_be_cancelled(app: InProcessApp) -> None:
    run_id = start_run(app.client, "ship", {"title": "Stop"})["run_id"]
    wait_asked(app, run_id)

    app.call(app.state["runs"].cancel(run_id))  # what POST /api/runs/{id}/cancel does
    run = wait_finished(app, run_id)

    assert (run["status"], run["message"]) == ("cancelled", "Cancelled by request")
    assert steps_of(run)["approve"]["status"] == "cancelled"
    assert steps_of(run)["print"]["status"] == "skipped"
    assert pending(app, run_id) == []


def test_the_idle_timeout_does_not_run_while_a_person_is_asked_during_a_call(app: InProcessApp) -> None:
    run_id = start_run(app.client, "confirm_idle")["run_id"]
    [request] = wait_asked(app, run_id)
    time.sleep(1)  # more than the step's idle_timeout_seconds (0.3) with no progress from the tool

    answer(app, run_id, request["request_id"], "accept", {"approved": True, "note": "go"}, by=ALICE)
    run = wait_finished(app, run_id)

    assert run["status"] == "success", run
    assert steps_of(run)["ask"]["output"] == {"action": "accept", "content": {"approved": True, "note": "go"}}


def test_a_call_whose_request_nobody_answered_fails_without_being_retried(app: InProcessApp) -> None:
    run_id = start_run(app.client, "confirm_retried")["run_id"]
    wait_asked(app, run_id)
    run = wait_finished(app, run_id)

    assert run["status"] == "failed"
    assert "within 0.3s (wait_timeout_seconds)" in steps_of(run)["ask"]["message"]

    async def asked() -> int:
        return sum(e["type"] == "input_requested" for e in app.state["runs"].held(run_id).events)

    assert app.call(asked()) == 1  # one attempt, one request: asking again would be in vain


def test_each_item_of_a_for_each_approval_waits_for_its_own_answer(app: InProcessApp) -> None:
    run_id = start_run(app.client, "each", {"items": ["red", "blue"]})["run_id"]
    requests = wait_asked(app, run_id, 2)
    assert sorted((r["item_index"], r["message"]) for r in requests) == [(0, "Publish red?"), (1, "Publish blue?")]

    by_item = {r["item_index"]: r["request_id"] for r in requests}
    answer(app, run_id, by_item[1], "accept", {"comment": "fine"}, by=BOB)
    assert get_run(app, run_id)["status"] == "waiting"  # item 0 still waits
    answer(app, run_id, by_item[0], "accept", {}, by=ALICE)
    run = wait_finished(app, run_id)

    assert run["status"] == "success", run
    assert steps_of(run)["approve"]["output"] == [
        {"action": "accept", "values": {}, "answered_by": ALICE},
        {"action": "accept", "values": {"comment": "fine"}, "answered_by": BOB},
    ]


def test_an_answer_that_does_not_fit_the_form_is_refused_and_the_run_keeps_waiting(app: InProcessApp) -> None:
    run_id = start_run(app.client, "ship", {"title": "Form"})["run_id"]
    [request] = wait_asked(app, run_id)
    url = f"/api/runs/{run_id}/requests/{request['request_id']}"

    refused = app.post(url, json={"action": "accept", "content": {"copies": 0}})
    assert refused.status_code == 422, refused.text
    assert [(problem["loc"], problem["msg"]) for problem in refused.json()["detail"]] == [
        (["body", "content", "copies"], "0 is less than the minimum of 1")
    ]
    assert get_run(app, run_id)["status"] == "waiting"

    accepted = app.post(url, json={"action": "accept", "content": {"copies": 2, "note": "matte"}})
    assert accepted.status_code == 200, accepted.text
    run = wait_finished(app, run_id)
    assert run["status"] == "success"
    assert steps_of(run)["approve"]["output"]["values"] == {"copies": 2, "note": "matte"}
    assert steps_of(run)["approve"]["message"] == "Approved by anonymous"  # nobody named, on a loopback server


def test_a_preview_shows_the_message_a_person_would_be_shown(app: InProcessApp) -> None:
    response = app.post("/api/scenarios/ship/preview", json={"input": {"title": "Zine"}})
    assert response.status_code == 200, response.text
    approve = {step["name"]: step for step in response.json()["steps"]}["approve"]
    assert (approve["status"], approve["message"]) == (
        "waiting",
        "needs steps.draft, which has no output yet, to write its message",
    )

    quick = app.post("/api/scenarios/quick/preview", json={"input": {}}).json()
    assert quick["steps"][0]["message"] == "would ask a person to approve: Go on?"


# --- files ---------------------------------------------------------------------------------------------


def validate(folder: Path, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "web", "validate", "--scenarios", str(folder), "--mcp-config", str(config)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "STEPLINE_DEMO_DELAY": "0"},
    )


BAD_FILES: dict[str, tuple[dict[str, Any], str]] = {
    "tool": (
        v2("tool", approval("ok", "Go?", tool="echo")),
        "tool.json: steps.0 (ok).tool: an approval step calls no tool: remove 'tool', or make the step a tool step",
    ),
    "no_message": (
        v2("no_message", {"name": "ok", "type": "approval"}),
        "no_message.json: steps.0 (ok).message: an approval step needs a message: what the person is asked to approve",
    ),
    "bad_schema": (
        v2("bad_schema", approval("ok", "Go?", schema={"type": "object", "properties": {"n": {"type": "nombre"}}})),
        "bad_schema.json: steps.0 (ok).schema: not a valid JSON Schema: 'nombre' is not valid under any of the "
        "given schemas",
    ),
    "list_schema": (
        v2("list_schema", approval("ok", "Go?", schema={"type": "array"})),
        'list_schema.json: steps.0 (ok).schema: must describe an object ("type": "object"), not \'array\'',
    ),
    "call_fields": (
        v2("call_fields", approval("ok", "Go?", input={"a": 1}, retry={"max_attempts": 2})),
        "call_fields.json: steps.0 (ok): an approval step calls no tool: remove input, retry "
        "(wait_timeout_seconds bounds how long it waits for an answer)",
    ),
    "unknown_step": (
        v2("unknown_step", approval("ok", "Ship {{ steps.draft.output }}?")),
        "unknown_step.json: steps.0 (ok).message: Ship {{ steps.draft.output }}? reads unknown step 'draft' "
        "(steps: ok)",
    ),
    "message_on_tool": (
        v2("message_on_tool", {"name": "t", "tool": "echo", "message": "Hi"}),
        'message_on_tool.json: steps.0 (t).message: only approval steps have a message (this step has "type": "tool")',
    ),
    "version_1": (
        {
            "schema_version": "1",
            "scenario_id": "version_1",
            "name": "v1",
            "steps": [{"name": "ok", "type": "approval", "tool": "echo"}],
        },
        'version_1.json: steps.0 (ok).type: only schema_version "2" files have approval steps; this file is '
        'version "1"',
    ),
}


def test_a_bad_approval_step_is_named_with_its_file_step_and_field(tmp_path: Path) -> None:
    good = v2(
        "good",
        {"name": "draft", "tool": "echo", "input": {"value": 1}},
        approval("ok", "Ship {{ steps.draft.output.value }}?", schema=FORM, wait_timeout_seconds=60),
    )
    folder, config = workflow_home(tmp_path, [good, *(scenario for scenario, _ in BAD_FILES.values())])

    result = validate(folder, config)

    assert result.returncode == 1, result.stdout + result.stderr
    assert sorted(result.stdout.splitlines()) == sorted(problem for _, problem in BAD_FILES.values())
    assert f"1 valid scenario(s), {len(BAD_FILES)} problem(s), 0 warning(s)" in result.stderr


def test_a_good_approval_file_is_served_with_its_step(app: InProcessApp) -> None:
    response = app.get("/api/scenarios/ship")
    assert response.status_code == 200
    assert response.json()["steps"][1] == {
        "name": "approve",
        "type": "approval",
        "message": "Print '{{ steps.draft.output.value }}' for run {{ run.id }}?",
        "schema": FORM,
    }
