"""The npm reference server asking people, end to end through the JSON API.

`@modelcontextprotocol/server-everything` offers `trigger-elicitation-request`, `trigger-url-elicitation`,
`trigger-sampling-request` and `get-roots-list` only to a client that declares elicitation, sampling and
roots; each asks its client in the middle of the tool call and answers with what it got. A run calls
them, the snapshot shows the request while the run waits, a POST answers it, and the step's output
shows what the server received. Roots are answered from the configured folders, with nobody asked. What
Stepline cannot do (tell concurrent calls' requests apart on one session, MCP tasks) fails saying so.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import wait_until
from inprocess import InProcessApp, in_process
from reference_server import reference_server
from runs import get_run, start_run, wait_finished
from servers.chat_model import MODEL, chat_model
from sse import read_events

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "people.md"
FORM_MESSAGE = "Please provide inputs for the following fields:"
SIGN_IN = "https://login.example.com/authorize?client=stepline&state=x1"
PROMPT = "Name a colour for the dashboard"


def v2(scenario_id: str, *steps: dict[str, Any]) -> dict[str, Any]:
    return {"schema_version": "2", "scenario_id": scenario_id, "name": scenario_id, "steps": list(steps)}


def call(name: str, tool: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "tool": tool, "server": "everything", "input": arguments}


SCENARIOS = [
    v2("form", call("ask", "trigger-elicitation-request")),
    v2("sign_in", call("visit", "trigger-url-elicitation", url=SIGN_IN, message="Sign in to the archive")),
    v2("sign_in_first", call("visit", "trigger-url-elicitation", url=SIGN_IN, errorPath=True)),
    v2("sample", call("complete", "trigger-sampling-request", prompt=PROMPT, maxTokens=40)),
    v2("roots", call("list", "get-roots-list")),
    v2("research", call("research", "simulate-research-query", topic="tides")),
    v2("two_forms", call("first", "trigger-elicitation-request"), call("second", "trigger-elicitation-request")),
]


def guide_tour() -> dict[str, Any]:
    """The scenario docs/people.md offers to try."""
    [tour] = [
        json.loads(block)
        for block in re.findall(r"```json\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.S)
        if '"schema_version"' in block
    ]
    return tour


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    base = tmp_path_factory.mktemp("roots")
    folders = [base / "reports", base / "archive"]
    for folder in folders:
        folder.mkdir()
    return folders


def reference_home(home: Path) -> dict[str, Any]:
    """The scenarios and an mcpServers file with the reference server: the settings of an app that runs them."""
    folder = home / "scenarios"
    folder.mkdir()
    for scenario in [*SCENARIOS, guide_tour()]:
        (folder / f"{scenario['scenario_id']}.json").write_text(json.dumps(scenario), encoding="utf-8")
    config = home / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"everything": reference_server()}}), encoding="utf-8")
    return {"scenarios": folder, "mcp_config": config}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, roots: list[Path]) -> Iterator[InProcessApp]:
    home = tmp_path_factory.mktemp("people-reference")
    with in_process(home, roots=roots, **reference_home(home)) as app:
        app.wait_ready()
        yield app


@pytest.fixture(autouse=True)
def no_run_left_waiting(app: InProcessApp) -> Iterator[None]:
    """Each test's runs end with it: a run a failed test left waiting would take the next test's requests
    for a second call in flight on the one session."""
    yield
    app.call(app.state["runs"].cancel_all())


def waiting_request(app: InProcessApp, run_id: str) -> dict[str, Any]:
    """The run's one open request, once the run shows it waiting."""
    wait_until(lambda: get_run(app.client, run_id)["status"] not in {"queued", "running"}, 20, "the run to ask")
    run = get_run(app.client, run_id)
    assert run["status"] == "waiting", run
    [request] = run["pending_requests"]
    [step] = [step for step in run["steps"] if step["status"] == "waiting"]
    assert step["node_id"] == request["step_name"]
    return request


def answer(app: InProcessApp, run_id: str, request_id: str, action: str, content: Any = None) -> httpx.Response:
    body = {"action": action} if content is None else {"action": action, "content": content}
    return app.post(f"/api/runs/{run_id}/requests/{request_id}", json=body)


def text_of(step: dict[str, Any]) -> str:
    return "\n".join(block["text"] for block in step["content"] if block["type"] == "text")


def the_step(run: dict[str, Any]) -> dict[str, Any]:
    [step] = run["steps"]
    return step


def test_the_guides_tour_runs_as_it_says(app: InProcessApp) -> None:
    run_id = start_run(app.client, "people_tour")["run_id"]
    form = waiting_request(app, run_id)
    assert (form["step_name"], form["kind"]) == ("profile", "elicitation")
    assert answer(app, run_id, form["request_id"], "accept", {"name": "Ada Lovelace"}).status_code == 200
    approval = waiting_request(app, run_id)
    assert (approval["step_name"], approval["kind"]) == ("go_ahead", "approval")
    assert approval["message"].startswith("The server said: ✅ User provided the requested information!")
    assert "- Name: Ada Lovelace" in approval["message"]
    assert answer(app, run_id, approval["request_id"], "accept").status_code == 200

    run = wait_finished(app.client, run_id)
    assert run["status"] == "success", run["message"]
    assert {step["node_id"]: step["output"] for step in run["steps"]}["thanks"] == "Echo: approved by anonymous"


def test_the_tools_that_ask_people_are_offered(app: InProcessApp) -> None:
    # The server lists them only to a client that declares elicitation (form and URL), sampling and roots.
    tools = {tool["name"] for tool in app.get("/api/tools").json() if tool["server"] == "everything"}
    asking = {"trigger-elicitation-request", "trigger-url-elicitation", "trigger-sampling-request", "get-roots-list"}
    assert asking <= tools


def test_a_form_request_is_shown_with_its_schema_and_the_server_gets_what_was_accepted(app: InProcessApp) -> None:
    run_id = start_run(app.client, "form")["run_id"]
    request = waiting_request(app, run_id)
    assert request["kind"] == "elicitation"
    assert request["step_name"] == "ask"
    assert request["message"] == FORM_MESSAGE
    schema = request["requested_schema"]
    assert schema["required"] == ["name"]
    assert schema["properties"]["integer"] == {
        "title": "Integer",
        "type": "integer",
        "description": "Your favorite integer (do not give us your phone number, pin, or other sensitive info)",
        "minimum": 1,
        "maximum": 100,
        "default": 42,
    }
    assert request["secret_fields"] == []
    assert request["durable"] is False

    # What does not fit the server's schema is refused, field by field, and the run goes on waiting.
    refused = answer(app, run_id, request["request_id"], "accept", {"integer": 500})
    assert refused.status_code == 422, refused.text
    problems = refused.json()["detail"]
    assert {(tuple(problem["loc"]), problem["type"]) for problem in problems} == {
        (("body", "content", "name"), "jsonschema.required"),
        (("body", "content", "integer"), "jsonschema.maximum"),
    }
    assert "'name' is a required property" in {problem["msg"] for problem in problems}
    assert get_run(app.client, run_id)["status"] == "waiting"

    content = {"name": "Ada Lovelace", "check": True, "email": "ada@example.com", "integer": 7, "number": 2.5}
    accepted = answer(app, run_id, request["request_id"], "accept", content)
    assert accepted.status_code == 200, accepted.text

    run = wait_finished(app.client, run_id)
    assert run["status"] == "success", run["message"]
    step = the_step(run)
    text = text_of(step)
    assert "✅ User provided the requested information!" in text
    for line in ("- Name: Ada Lovelace", "- Agreed to terms: true", "- Email: ada@example.com",
                 "- Favorite Integer: 7", "- Favorite Number: 2.5"):
        assert line in text
    assert '"action": "accept"' in text  # the raw result the server got back
    [given] = step["answers"]
    assert given["request_id"] == request["request_id"]
    assert (given["kind"], given["action"]) == ("elicitation", "accept")
    assert given["answered_by"] == {"name": "anonymous", "source": "anonymous"}
    assert run["pending_requests"] == []

    again = answer(app, run_id, request["request_id"], "accept", content)
    assert again.status_code == 409
    assert again.json()["detail"] == f"Request {request['request_id']} was answered already (accept by anonymous)"

    events = read_events(app.client, run_id)
    [asked] = [event for event in events if event["type"] == "input_requested"]
    [answered] = [event for event in events if event["type"] == "input_answered"]
    assert asked["request_id"] == answered["request_id"] == request["request_id"]
    assert "resume" not in asked or asked["resume"] is None
    assert answered["content"] == content
    assert answered["run_status"] == "running"


def test_a_declined_form_tells_the_server_so(app: InProcessApp) -> None:
    run_id = start_run(app.client, "form")["run_id"]
    request = waiting_request(app, run_id)
    response = answer(app, run_id, request["request_id"], "decline", {"name": "not sent"})
    assert response.status_code == 200, response.text

    run = wait_finished(app.client, run_id)
    assert run["status"] == "success", run["message"]
    text = text_of(the_step(run))
    assert "❌ User declined to provide the requested information." in text
    assert "not sent" not in text  # content goes back only with accept
    assert [given["action"] for given in the_step(run)["answers"]] == ["decline"]


def test_a_url_request_shows_the_url_and_the_server_hears_it_was_visited(app: InProcessApp) -> None:
    run_id = start_run(app.client, "sign_in")["run_id"]
    request = waiting_request(app, run_id)
    assert request["kind"] == "url"
    assert request["url"] == SIGN_IN
    assert request["message"] == "Sign in to the archive"
    assert request["elicitation_id"]
    assert "requested_schema" not in request

    response = answer(app, run_id, request["request_id"], "accept")
    assert response.status_code == 200, response.text

    run = wait_finished(app.client, run_id)
    assert run["status"] == "success", run["message"]
    text = text_of(the_step(run))
    assert "✅ User completed the URL elicitation flow." in text
    assert f"Elicitation ID: {request['elicitation_id']}" in text
    assert f"URL: {SIGN_IN}" in text


def test_a_call_refused_until_a_page_is_visited_is_sent_again_once_a_person_has_been_there(
    app: InProcessApp,
) -> None:
    run_id = start_run(app.client, "sign_in_first")["run_id"]
    # The server refuses the call (-32042) naming a page to visit first: a person is asked to.
    first = waiting_request(app, run_id)
    assert first["kind"] == "url"
    assert first["url"] == "https://modelcontextprotocol.io"
    assert first["message"] == "Open this link to satisfy the prerequisite, then retry the request."
    assert answer(app, run_id, first["request_id"], "accept").status_code == 200

    # Sent again, the call goes the request path: the server asks for its own page over the session.
    second = waiting_request(app, run_id)
    assert second["request_id"] != first["request_id"]
    assert (second["kind"], second["url"]) == ("url", SIGN_IN)
    assert answer(app, run_id, second["request_id"], "accept").status_code == 200

    run = wait_finished(app.client, run_id)
    assert run["status"] == "success", run["message"]
    assert f"URL: {SIGN_IN}" in text_of(the_step(run))
    assert [given["action"] for given in the_step(run)["answers"]] == ["accept", "accept"]


def test_a_sampling_request_is_answered_with_what_a_person_wrote(app: InProcessApp) -> None:
    run_id = start_run(app.client, "sample")["run_id"]
    request = waiting_request(app, run_id)
    assert request["kind"] == "sampling"
    assert request["system_prompt"] == "You are a helpful test server."
    assert request["max_tokens"] == 40
    assert request["temperature"] == 0.7
    [message] = request["messages"]
    assert message["role"] == "user"
    assert message["content"]["text"] == f"Resource trigger-sampling-request context: {PROMPT}"

    # Nobody configured a model to draft the reply: a person writes it.
    no_model = app.post(f"/api/runs/{run_id}/requests/{request['request_id']}/draft")
    assert no_model.status_code == 409
    assert no_model.json()["detail"].startswith("No model endpoint is configured")
    # A sampling reply needs its text.
    empty = answer(app, run_id, request["request_id"], "accept", {"model": "by hand"})
    assert empty.status_code == 422, empty.text

    reply = "Teal: calm, and readable on both themes."
    response = answer(app, run_id, request["request_id"], "accept", {"text": reply})
    assert response.status_code == 200, response.text

    run = wait_finished(app.client, run_id)
    assert run["status"] == "success", run["message"]
    text = text_of(the_step(run))
    assert text.startswith("LLM sampling result:")
    result = json.loads(text.removeprefix("LLM sampling result:").strip())
    assert result["role"] == "assistant"
    assert result["content"] == {"type": "text", "text": reply}
    assert result["model"] == "human"  # a person wrote it and named no model
    assert result["stopReason"] == "endTurn"


def test_a_models_draft_is_reviewed_and_sent_with_the_models_name_and_its_key_shown_nowhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = "sk-test-people-0123456789abcdef"
    monkeypatch.setenv("STEPLINE_SAMPLING_API_KEY", key)
    with chat_model() as endpoint, in_process(
        tmp_path, sampling_url=endpoint.url, sampling_model=MODEL, **reference_home(tmp_path)
    ) as app:
        app.wait_ready()
        run_id = start_run(app.client, "sample")["run_id"]
        request = waiting_request(app, run_id)
        drafted = app.post(f"/api/runs/{run_id}/requests/{request['request_id']}/draft")
        assert drafted.status_code == 200, drafted.text
        draft = drafted.json()["draft"]
        # The model got the system prompt, the server's message and its max tokens, and the key, and only it.
        asked = f"Resource trigger-sampling-request context: {PROMPT}"
        assert draft == {
            "text": f"You said: {asked} (max 40, system: You are a helpful test server.)",
            "model": f"{MODEL}-0601",
            "stop_reason": "endTurn",
        }
        [received] = endpoint.received
        assert received.headers["authorization"] == f"Bearer {key}"
        # Not an answer yet: the run still waits, the draft shown with the request for its reviewer.
        run = get_run(app.client, run_id)
        assert run["status"] == "waiting"
        assert run["pending_requests"][0]["draft"] == draft

        sent = answer(app, run_id, request["request_id"], "accept", draft)  # sent as it came
        assert sent.status_code == 200, sent.text
        run = wait_finished(app.client, run_id)
        assert run["status"] == "success", run["message"]
        result = json.loads(text_of(the_step(run)).removeprefix("LLM sampling result:").strip())
        assert result["content"]["text"] == draft["text"]
        assert (result["model"], result["stopReason"]) == (f"{MODEL}-0601", "endTurn")

        seen = [json.dumps(read_events(app.client, run_id)), app.get(f"/runs/{run_id}").text, json.dumps(run)]
        assert not [where for where in seen if key in where]
    assert caplog.records and key not in caplog.text


def test_a_declined_sampling_request_is_the_specs_user_rejected_error(app: InProcessApp) -> None:
    run_id = start_run(app.client, "sample")["run_id"]
    request = waiting_request(app, run_id)
    response = answer(app, run_id, request["request_id"], "decline")
    assert response.status_code == 200, response.text

    run = wait_finished(app.client, run_id)
    assert run["status"] == "failed"
    assert "User rejected sampling request" in the_step(run)["message"]


def test_a_run_cancelled_while_it_waits_closes_its_request(app: InProcessApp) -> None:
    run_id = start_run(app.client, "form")["run_id"]
    request = waiting_request(app, run_id)
    assert app.post(f"/api/runs/{run_id}/cancel").status_code == 202

    run = wait_finished(app.client, run_id)
    assert run["status"] == "cancelled"
    assert run["pending_requests"] == []
    late = answer(app, run_id, request["request_id"], "accept", {"name": "Too late"})
    assert late.status_code == 409
    assert f"run {run_id} has ended" in late.json()["detail"]


def test_with_two_calls_asking_at_once_on_one_session_the_server_hears_which_limit_it_met(
    app: InProcessApp,
) -> None:
    # Two independent steps call the same server at once: a request over the session does not say which
    # call it belongs to, so Stepline answers it with an error naming its own limitation instead of guessing.
    run = wait_finished(app.client, start_run(app.client, "two_forms")["run_id"])
    assert run["status"] == "failed"
    messages = [step["message"] for step in run["steps"]]
    assert any(
        "Stepline cannot tell which of the 2 calls in flight on 'everything' asked" in message
        and "(a limitation of Stepline)" in message
        for message in messages
    ), messages
    assert run["pending_requests"] == []


def test_a_tool_that_runs_only_as_an_mcp_task_fails_saying_it_is_stepline_that_cannot(app: InProcessApp) -> None:
    run = wait_finished(app.client, start_run(app.client, "research")["run_id"])
    assert run["status"] == "failed"
    message = the_step(run)["message"]
    assert "'simulate-research-query' on MCP server 'everything' can only run as an MCP task" in message
    assert "Stepline does not support MCP tasks (a limitation of Stepline)" in message


def test_roots_are_answered_from_the_configured_folders_with_nobody_asked(
    app: InProcessApp, roots: list[Path]
) -> None:
    run_id = start_run(app.client, "roots")["run_id"]
    run = wait_finished(app.client, run_id)
    assert run["status"] == "success", run["message"]
    text = text_of(the_step(run))
    assert "Current MCP Roots (2 total)" in text
    for folder in roots:
        assert f"URI: {folder.as_uri()}" in text
    assert not [event for event in read_events(app.client, run_id) if event["type"].startswith("input_")]
