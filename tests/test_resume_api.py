"""A run that waits for a Resume after a restart: POST /api/runs/{id}/resume, and the buttons on its page.

Runs of one scenario are left running by an app that stops (a graceful stop leaves them unfinished in the
history); a new app on the same data directory finds each one's `publish` step was in flight, and since its
tool (the tests' workflow server's `sleep`, not annotated idempotent or read-only) may have partly run, each
run waits for a person's Resume. People come through the portal's proxy: alice may run the scenario, bob may
only see it (an operator, but not on its run list), rita is a viewer, eve may not even see it.
"""

from __future__ import annotations

import re
import resource
import time
from collections.abc import Callable, Iterator
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from conftest import StepServer
from inprocess import InProcessApp, in_process
from mcp_process import workflow_home
from runs import get_run, start_run
from sse import frames, parse_lines
from ui_support import form_token

PUBLISH = {
    "schema_version": "2",
    "scenario_id": "publish",
    "name": "Publish",
    "access": {"view": ["newsroom"], "run": ["editors"]},
    "input_schema": {"type": "object", "properties": {"seconds": {"type": "number", "default": 60}}},
    "steps": [
        # Ended before the restart: its policy never comes into play.
        {"name": "draft", "tool": "echo", "resume": "auto", "input": {"value": "{{ input.seconds }}"}},
        # No policy of its own: its tool's annotations decide.
        {"name": "publish", "tool": "sleep", "needs": ["draft"],
         "input": {"seconds": "{{ input.seconds }}", "label": "published"}},
    ],
    "output": {"published": "{{ steps.publish.output }}"},
}
BEHIND_THE_PORTAL = {
    "auth_header": "X-Forwarded-User",
    "groups_header": "X-Forwarded-Groups",
    "trusted_proxies": "127.0.0.1",
    "role_map": "readers=viewer,ops=operator",
    "host": "0.0.0.0",
    "allowed_hosts": "*",
}
ALICE = {"X-Forwarded-User": "alice", "X-Forwarded-Groups": "ops,editors"}
BOB = {"X-Forwarded-User": "bob", "X-Forwarded-Groups": "ops,newsroom"}
RITA = {"X-Forwarded-User": "rita", "X-Forwarded-Groups": "readers,newsroom"}
EVE = {"X-Forwarded-User": "eve", "X-Forwarded-Groups": "ops"}
# How long each run's `publish` step sleeps: long enough to be in flight when the first app stops; the run
# resumed over the API sleeps briefly again, so that the test sees it end.
SECONDS = {"api": 3, "button": 60, "declined": 60, "refused": 60, "cancelled": 60}
QUESTION = (
    "Stepline stopped while step 'publish' was running: it may have partly run (its tool may have done some of "
    "its work). Resume runs it again from the start; the steps that had ended keep their results."
)
TERMINAL = {"success", "failed", "cancelled"}
UNKNOWN_RUN_ID = "0b8f3e52-5a1d-4c8e-9f61-2d7c4a9e8b10"


def until(what: str, predicate: Any, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


def snapshot(app: InProcessApp, run_id: str) -> dict[str, Any]:
    response = app.get(f"/api/runs/{run_id}", headers=ALICE)
    assert response.status_code == 200, response.text
    return response.json()


def steps_of(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["node_id"]: step for step in run["steps"]}


def publishing(run: dict[str, Any]) -> bool:
    """Whether the run's `publish` step is in flight (a queued run has no steps yet)."""
    return steps_of(run).get("publish", {}).get("status") == "running"


def events(app: InProcessApp, run_id: str) -> list[dict[str, Any]]:
    """The run's events as its JSON stream sends them (read whole: the run has ended)."""
    with app.client.stream("GET", f"/api/runs/{run_id}/events", headers=ALICE) as response:
        assert response.status_code == 200
        return [frame.json() for frame in frames(parse_lines(response.iter_lines()))]


def page(app: InProcessApp, run_id: str, headers: dict[str, str] = ALICE) -> str:
    response = app.get(f"/runs/{run_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.text


def text_of(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def resume(app: InProcessApp, run_id: str, headers: dict[str, str] = ALICE) -> Any:
    return app.post(f"/api/runs/{run_id}/resume", headers=headers)


def problems(document: dict[str, Any], component: str, instance: Any) -> list[str]:
    schema = {"$ref": f"#/components/schemas/{component}", "components": document["components"]}
    found = jsonschema.Draft202012Validator(schema).iter_errors(instance)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in found]


@pytest.fixture(scope="module")
def restarted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InProcessApp, dict[str, str]]]:
    """An app started after another stopped while runs were in their `publish` step: (the app, run ids by use)."""
    home = tmp_path_factory.mktemp("resume")
    folder, config = workflow_home(home, [PUBLISH])
    settings = {"mcp_config": config, "scenarios": folder, "data_dir": home / "data", **BEHIND_THE_PORTAL}
    with in_process(home, **settings) as app:
        app.wait_ready()
        runs = {}
        for use, seconds in SECONDS.items():
            response = app.post("/api/runs", json={"scenario_id": "publish", "input": {"seconds": seconds}},
                                headers=ALICE)
            assert response.status_code == 202, response.text
            runs[use] = response.json()["run_id"]
        for run_id in runs.values():
            until("the publish step", lambda r=run_id: publishing(snapshot(app, r)))
    with in_process(home, **settings) as app:
        app.wait_ready()
        for run_id in runs.values():
            until(f"run {run_id} to wait", lambda r=run_id: snapshot(app, r)["pending_requests"])
        yield app, runs


def test_a_run_whose_step_may_have_partly_run_waits_for_a_resume(
    restarted: tuple[InProcessApp, dict[str, str]],
) -> None:
    app, runs = restarted
    run = snapshot(app, runs["refused"])
    [request] = run["pending_requests"]

    assert run["status"] == "waiting"
    assert (request["kind"], request["step_name"], request["steps"]) == ("resume", "publish", ["publish"])
    publish = steps_of(run)["publish"]
    assert (publish["status"], publish["waiting_on"]) == ("waiting", [request["request_id"]])
    assert request["message"] == QUESTION
    assert request["durable"] is True
    assert steps_of(run)["draft"]["status"] == "success"
    assert [step.get("resume") for step in run["plan"]] == ["auto", None]
    assert "resume" not in run["plan"][1]  # a plan without a policy reads as before there were any
    assert problems(app.get("/openapi.json").json(), "ScenarioRunResponse", run) == []


def test_resume_runs_the_step_again_and_the_run_goes_on_to_its_end(
    restarted: tuple[InProcessApp, dict[str, str]],
) -> None:
    app, runs = restarted
    run_id = runs["api"]
    [request] = snapshot(app, run_id)["pending_requests"]

    response = resume(app, run_id)

    assert response.status_code == 200, response.text
    resumed = response.json()
    assert resumed["request_id"] == request["request_id"]
    assert (resumed["run_id"], resumed["steps"], resumed["status"]) == (run_id, ["publish"], "running")
    assert resumed["resumed_by"] == {"name": "alice", "source": "proxy"}
    document = app.get("/openapi.json").json()
    assert problems(document, "ResumeResponse", resumed) == []
    # Asked again, it is refused: the run waits for no Resume now.
    again = resume(app, run_id)
    assert again.status_code == 409
    assert again.json()["detail"] == f"Run {run_id} is not waiting for a Resume (it is running)"

    run = until("the run to end", lambda: (found := snapshot(app, run_id))["status"] in TERMINAL and found)
    assert (run["status"], run["output"]) == ("success", {"published": "published"}), run["message"]
    sent = events(app, run_id)
    assert [event["seq"] for event in sent] == list(range(1, len(sent) + 1))
    asked = next(e for e in sent if e["type"] == "input_requested")
    [run_resumed] = [e for e in sent if e["type"] == "run_resumed"]
    assert (asked["kind"], asked["steps"]) == ("resume", ["publish"])
    assert run_resumed["rerun_steps"] == ["publish"]
    assert run_resumed["by"] == {"name": "alice", "source": "proxy"}
    # The step that had ended kept its result: started once; the one in flight started again after the Resume.
    starts = [e["step_name"] for e in sent if e["type"] == "step_started"]
    assert starts == ["draft", "publish", "publish"]
    assert sent.index(run_resumed) < max(i for i, e in enumerate(sent) if e["type"] == "step_started")
    for event in sent:
        assert problems(document, "RunEvent", event) == [], event

    finished = resume(app, run_id)
    assert finished.status_code == 409
    assert finished.json()["detail"] == f"Run {run_id} is not waiting for a Resume (it is success)"


def test_only_who_may_run_the_scenario_may_resume_and_a_refusal_changes_nothing(
    restarted: tuple[InProcessApp, dict[str, str]],
) -> None:
    app, runs = restarted
    run_id = runs["refused"]

    by_bob, by_rita, by_eve = resume(app, run_id, BOB), resume(app, run_id, RITA), resume(app, run_id, EVE)
    unknown = resume(app, UNKNOWN_RUN_ID)
    anonymous = app.post(f"/api/runs/{run_id}/resume")

    assert (by_bob.status_code, by_bob.json()["detail"]) == (
        403, "Refused: you may not resume runs of scenario 'publish' (its run list names neither you nor your groups)"
    )
    assert (by_rita.status_code, by_rita.json()["detail"]) == (
        403, "Refused: this needs the operator role; yours is viewer"
    )
    assert (by_eve.status_code, by_eve.json()["detail"]) == (404, f"Unknown run_id: {run_id}")
    assert (unknown.status_code, unknown.json()["detail"]) == (404, f"Unknown run_id: {UNKNOWN_RUN_ID}")
    assert anonymous.status_code == 401
    run = snapshot(app, run_id)
    assert run["status"] == "waiting"
    assert [request["kind"] for request in run["pending_requests"]] == ["resume"]


def test_the_page_shows_the_question_with_resume_and_end_the_run_buttons(
    restarted: tuple[InProcessApp, dict[str, str]],
) -> None:
    app, runs = restarted
    html = page(app, runs["refused"])
    card = re.search(r'<section class="request request-resume".*?</section>', html, re.S)

    assert card, "no Resume request on the page"
    assert "Resume after a restart" in text_of(card.group(0))
    assert QUESTION in text_of(card.group(0))
    buttons = re.findall(r'<button type="submit" name="action" value="(\w+)"[^>]*>([^<]+)</button>', card.group(0))
    assert buttons == [("accept", "Resume"), ("decline", "End the run")]
    # A viewer sees what is asked, and no buttons.
    seen_by_rita = page(app, runs["refused"], RITA)
    assert QUESTION in text_of(seen_by_rita)
    assert 'value="accept"' not in seen_by_rita
    assert "Only people who may run this scenario can answer." in text_of(seen_by_rita)


def press(app: InProcessApp, run_id: str, action: str) -> Any:
    """The page's button `action` on the run's Resume request, posted as a browser without JavaScript does."""
    html = page(app, run_id)
    request_id = re.search(r'<section class="request request-resume" id="request-([0-9a-f]{32})"', html)
    assert request_id, "no Resume request on the page"
    return app.post(
        f"/runs/{run_id}/requests/{request_id.group(1)}",
        data={"_csrf": form_token(html), "action": action},
        headers={**ALICE, "Sec-Fetch-Site": "same-origin"},
    )


def test_the_resume_button_runs_the_step_again(restarted: tuple[InProcessApp, dict[str, str]]) -> None:
    app, runs = restarted
    run_id = runs["button"]

    response = press(app, run_id, "accept")

    assert response.status_code == 303, response.text
    run = until("the step to run again", lambda: (found := snapshot(app, run_id))["status"] == "running" and found)
    assert run["pending_requests"] == []
    assert steps_of(run)["publish"]["status"] == "running"
    assert "Resume after a restart" not in page(app, run_id)
    record = app.state["runs"].held(run_id)
    [run_resumed] = [e for e in record.events if e["type"] == "run_resumed"]
    assert (run_resumed["rerun_steps"], run_resumed["by"]["name"]) == (["publish"], "alice")


def test_end_the_run_fails_it_saying_who_declined(restarted: tuple[InProcessApp, dict[str, str]]) -> None:
    app, runs = restarted
    run_id = runs["declined"]

    response = press(app, run_id, "decline")

    assert response.status_code == 303, response.text
    run = until("the run to end", lambda: (found := snapshot(app, run_id))["status"] in TERMINAL and found)
    assert (run["status"], run["message"]) == ("failed", "Not resumed after a server restart (declined by alice)")
    assert steps_of(run)["draft"]["status"] == "success"
    assert "Not resumed after a server restart (declined by alice)" in text_of(page(app, run_id))
    refused = resume(app, run_id)
    assert (refused.status_code, refused.json()["detail"]) == (
        409, f"Run {run_id} is not waiting for a Resume (it is failed)"
    )


def test_a_run_waiting_for_a_resume_can_be_cancelled(restarted: tuple[InProcessApp, dict[str, str]]) -> None:
    app, runs = restarted
    run_id = runs["cancelled"]

    response = app.post(f"/api/runs/{run_id}/cancel", headers=ALICE)

    assert response.status_code == 202, response.text
    run = until("the run to end", lambda: (found := snapshot(app, run_id))["status"] in TERMINAL and found)
    assert (run["status"], run["pending_requests"]) == ("cancelled", [])
    assert run["cancelled_by"] == {"name": "alice", "source": "proxy"}
    assert steps_of(run)["draft"]["status"] == "success"
    assert resume(app, run_id).status_code == 409


def test_the_openapi_document_describes_resuming(restarted: tuple[InProcessApp, dict[str, str]]) -> None:
    app, _ = restarted
    document = app.get("/openapi.json").json()
    operation = document["paths"]["/api/runs/{run_id}/resume"]["post"]
    schemas = document["components"]["schemas"]

    assert set(operation["responses"]) == {"200", "401", "403", "404", "409", "503"}
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ResumeResponse"
    }
    assert "resume" in schemas["RequestKind"]["enum"]
    assert "steps" in schemas["InputRequestedEvent"]["properties"]
    assert any(example["kind"] == "resume" for example in schemas["InputRequestedEvent"]["examples"])
    assert any(example["by"] and example["rerun_steps"] for example in schemas["RunResumedEvent"]["examples"])
    assert "resume" in schemas["PlanStep"]["properties"]


# --- A history that cannot be written ----------------------------------------------------------------------


def limit_file_size(size: int) -> Callable[[], None]:
    # RLIMIT_FSIZE binds root as well: a write past it fails (EFBIG), as on a full disk.
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


def test_a_resume_while_the_history_cannot_be_written_is_503_and_changes_nothing(
    make_server: Callable[..., StepServer], tmp_path: Path
) -> None:
    open_to_all = {key: value for key, value in PUBLISH.items() if key != "access"}
    note = {"schema_version": "2", "scenario_id": "note", "name": "Note",
            "steps": [{"name": "note", "tool": "echo", "input": {"value": "a note"}}]}
    folder, config = workflow_home(tmp_path, [open_to_all, note])
    data = tmp_path / "data"
    with in_process(tmp_path, mcp_config=config, scenarios=folder, data_dir=data) as app:
        app.wait_ready()
        run_id = start_run(app.client, "publish")["run_id"]
        until("the publish step", lambda: publishing(get_run(app.client, run_id)))
    # Enough room to start; the history outgrows it within a few runs.
    room = max(path.stat().st_size for path in data.iterdir()) + 256 * 1024
    server = make_server("--scenarios", str(folder), "--mcp-config", str(config), "--data-dir", str(data),
                         preexec_fn=limit_file_size(room))
    until("the Resume request", lambda: get_run(server.url, run_id)["pending_requests"])

    def failing() -> bool:
        response = httpx.post(f"{server.url}/api/runs", json={"scenario_id": "note", "input": {}}, timeout=10)
        assert response.status_code in (202, 503), response.text
        return response.status_code == 503

    until("writes to fail", failing, timeout=60)
    response = httpx.post(f"{server.url}/api/runs/{run_id}/resume", timeout=10)

    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"].isdigit()
    assert response.json()["detail"].startswith("Not answered: run history ")
    assert "cannot be written" in response.json()["detail"]
    run = get_run(server.url, run_id)
    assert (run["status"], [request["kind"] for request in run["pending_requests"]]) == ("waiting", ["resume"])
