"""Answering what runs ask people, over the JSON API: the snapshot's pending requests and each step's answers,
POST /api/runs/{id}/requests/{request_id} and its refusals, the model's draft of a sampling reply, the
`waiting` filter of the run list and the input events of the JSON stream.

One in-process app with the tests' workflow server (tests/servers/workflow.py) and the tests' chat model
endpoint (tests/servers/chat_model.py) as its sampling model. Runs wait on real approval steps; a server's
sampling or URL request is asked on a waiting step through the run's inbox, as the MCP client side asks it.
Users come through a trusted proxy's headers, their groups mapped to roles.
"""

from __future__ import annotations

import concurrent.futures
import json
import resource
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import StepServer
from inprocess import InProcessApp, in_process
from mcp_process import workflow_home
from runs import get_run, start_run
from servers.chat_model import ChatModel, chat_model
from sse import read_events
from test_access_api import PROXY

from web.events import RequestKind
from web.inbox import Answer, Ask
from web.resources import SCENARIOS as SCENARIOS_SHIPPED

GROUPS = {
    "alice": "ops,printers",  # an operator on every run list
    "bob": "ops",  # an operator, but not on the run list of `restricted`
    "vic": "readers,printers",  # a viewer: on the lists, yet runs nothing
}
TERMINAL = {"success", "failed", "cancelled"}
OUTLET = "outlet_profile_v1"
FORM = {
    "type": "object",
    "properties": {"copies": {"type": "integer", "minimum": 1}, "note": {"type": "string"}},
    "required": ["copies"],
}
SAMPLING = {
    "messages": [{"role": "user", "content": {"type": "text", "text": "Where did this story start?"}}],
    "system_prompt": "You are a careful fact-checker.",
    "model_preferences": {"hints": [{"name": "gpt-4o"}]},
    "max_tokens": 50,
    "temperature": 0.2,
    "stop_sequences": None,
    "include_context": "none",
}


def v2(scenario_id: str, *steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"schema_version": "2", "scenario_id": scenario_id, "name": scenario_id, "steps": list(steps), **extra}


def approval(message: str, **fields: Any) -> dict[str, Any]:
    return {"name": "approve", "type": "approval", "message": message, **fields}


PRINT = {"name": "print", "tool": "echo", "input": {"value": "{{ steps.approve.output.values.copies }} copies"}}
SCENARIOS = [
    v2(
        "ship",
        approval("Print '{{ input.title }}'?", schema=FORM),
        PRINT,
        input_schema={"type": "object", "properties": {"title": {"type": "string"}}},
    ),
    v2("restricted", approval("Print it?", schema=FORM), PRINT, access={"view": ["ops"], "run": ["printers"]}),
    v2("quick", approval("Go on?", wait_timeout_seconds=0.2)),
]


@dataclass(frozen=True)
class User:
    """Requests through the proxy as one user with their groups."""

    app: InProcessApp
    name: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Forwarded-User": self.name, "X-Forwarded-Groups": GROUPS[self.name]}

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.app.get(path, headers=self.headers, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.app.post(path, headers={**self.headers, **kwargs.pop("headers", {})}, **kwargs)

    def run(self, run_id: str) -> dict[str, Any]:
        response = self.get(f"/api/runs/{run_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def start(self, scenario_id: str, run_input: dict[str, Any] | None = None) -> str:
        response = self.post("/api/runs", json={"scenario_id": scenario_id, "input": run_input or {}})
        assert response.status_code == 202, response.text
        return response.json()["run_id"]

    def answer(self, run_id: str, request_id: str, body: Any) -> httpx.Response:
        return self.post(f"/api/runs/{run_id}/requests/{request_id}", json=body)

    def draft(self, run_id: str, request_id: str) -> httpx.Response:
        return self.post(f"/api/runs/{run_id}/requests/{request_id}/draft")

    def run_ids(self, **query: Any) -> list[str]:
        response = self.get("/api/runs", params={"limit": 200, **query})
        assert response.status_code == 200, response.text
        return [run["run_id"] for run in response.json()["runs"]]


@pytest.fixture(scope="module")
def model() -> Iterator[ChatModel]:
    with chat_model() as model:
        yield model


def people_app(home: Path, **settings: Any) -> Any:
    folder, config = workflow_home(home, SCENARIOS)
    return in_process(home, scenarios=folder, mcp_config=config, **PROXY, **settings)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, model: ChatModel) -> Iterator[InProcessApp]:
    with people_app(tmp_path_factory.mktemp("people-api"), sampling_url=model.url) as app:
        app.wait_ready()
        yield app


@pytest.fixture
def alice(app: InProcessApp) -> User:
    return User(app, "alice")


def until(what: str, predicate: Any, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


def waiting(who: User, run_id: str, count: int = 1) -> list[dict[str, Any]]:
    """The run's pending requests, once it has `count` of them."""
    return until(
        f"{count} request(s) of run {run_id}",
        lambda: len(found := who.run(run_id)["pending_requests"]) >= count and found,
    )


def finished(who: User, run_id: str) -> dict[str, Any]:
    return until(f"run {run_id} to end", lambda: (run := who.run(run_id))["status"] in TERMINAL and run)


def steps_of(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["node_id"]: step for step in run["steps"]}


def ask_on(app: InProcessApp, run_id: str, kind: RequestKind, message: str, **details: Any) -> Any:
    """A request asked on the run's waiting `approve` step, as a server's request during its call is asked;
    the future is its Answer."""

    async def ask() -> Answer:
        record = app.state["runs"].held(run_id)
        index = record.state.steps["approve"].index
        return await app.state["runner"].inbox.ask(record, "approve", index, Ask(kind, message, details))

    return app.submit(ask())


def answered(future: concurrent.futures.Future[Answer]) -> Answer:
    return future.result(10)


# --- Answering --------------------------------------------------------------------------------------


def test_a_waiting_run_shows_its_request_and_an_answer_lets_it_go_on(alice: User) -> None:
    run_id = alice.start("ship", {"title": "Spring issue"})
    [request] = waiting(alice, run_id)
    run = alice.run(run_id)

    assert run["status"] == "waiting"
    assert steps_of(run)["approve"]["status"] == "waiting"
    assert steps_of(run)["approve"]["waiting_on"] == [request["request_id"]]
    assert request["kind"] == "approval"
    assert request["step_name"] == "approve"
    assert request["item_index"] is None
    assert request["message"] == "Print 'Spring issue'?"
    assert request["requested_schema"] == FORM
    assert request["secret_fields"] == []
    assert request["durable"] is True
    assert request["created_at"] < request["expires_at"]
    assert "resume" not in request
    # The history's row follows the run's events by a batch.
    until("the run listed as waiting", lambda: run_id in alice.run_ids(status="waiting"))

    response = alice.answer(run_id, request["request_id"], {"action": "accept", "content": {"copies": 2}})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["run_id"] == run_id
    assert body["request_id"] == request["request_id"]
    assert (body["action"], body["content"]) == ("accept", {"copies": 2})
    assert body["answered_by"] == {"name": "alice", "source": "proxy"}
    assert body["answered_at"] >= request["created_at"]
    assert body["status"] in {"running", "success"}
    run = finished(alice, run_id)
    assert run["status"] == "success", run
    assert run["pending_requests"] == []
    steps = steps_of(run)
    assert steps["approve"]["message"] == "Approved by alice"
    assert steps["approve"]["waiting_on"] == []
    assert steps["approve"]["answers"] == [
        {
            "request_id": request["request_id"],
            "kind": "approval",
            "action": "accept",
            "answered_by": {"name": "alice", "source": "proxy"},
            "answered_at": body["answered_at"],
        }
    ]
    assert steps["print"]["output"]["value"] == "2 copies"
    until("the run listed as succeeded", lambda: run_id in alice.run_ids(status="success"))
    assert run_id not in alice.run_ids(status="waiting")


def test_the_json_stream_carries_the_request_and_its_answer(alice: User) -> None:
    run_id = alice.start("ship", {"title": "Streamed"})
    [request] = waiting(alice, run_id)
    alice.answer(run_id, request["request_id"], {"action": "accept", "content": {"copies": 1, "note": "rush"}})
    finished(alice, run_id)

    events = read_events(alice.app.client, run_id, headers=alice.headers)
    by_type = {event["type"]: event for event in events}

    asked, answer = by_type["input_requested"], by_type["input_answered"]
    assert [event["type"] for event in events].index("input_requested") < [e["type"] for e in events].index(
        "input_answered"
    )
    assert asked["request_id"] == answer["request_id"] == request["request_id"]
    assert (asked["kind"], asked["message"], asked["run_status"]) == ("approval", "Print 'Streamed'?", "waiting")
    assert asked["requested_schema"] == FORM
    assert "resume" not in asked  # the step's own state after a restart: kept in the history, not sent
    assert answer["action"] == "accept"
    assert answer["content"] == {"copies": 1, "note": "rush"}
    assert answer["answered_by"] == {"name": "alice", "source": "proxy"}
    assert answer["run_status"] == "running"


def test_a_declined_request_fails_its_step_and_records_who_declined(alice: User) -> None:
    run_id = alice.start("ship", {"title": "No"})
    [request] = waiting(alice, run_id)

    # Content is kept only with accept.
    response = alice.answer(run_id, request["request_id"], {"action": "decline", "content": {"copies": 9}})

    assert response.status_code == 200, response.text
    assert (response.json()["action"], response.json()["content"]) == ("decline", None)
    run = finished(alice, run_id)
    assert (run["status"], run["message"]) == ("failed", "Step 'approve' failed: Declined by alice")
    assert [answer["action"] for answer in steps_of(run)["approve"]["answers"]] == ["decline"]


def test_an_answer_is_on_disk_when_it_is_acknowledged(alice: User) -> None:
    run_id = alice.start("ship", {"title": "Kept"})
    [request] = waiting(alice, run_id)
    response = alice.answer(run_id, request["request_id"], {"action": "accept", "content": {"copies": 4}})
    assert response.status_code == 200

    store = alice.app.state["runs"].store
    stored = alice.app.call(_loaded(store, run_id))

    answers = [event for event in stored if event["type"] == "input_answered"]
    assert [(event["action"], event["answered_by"]["name"]) for event in answers] == [("accept", "alice")]
    finished(alice, run_id)


async def _loaded(store: Any, run_id: str) -> list[dict[str, Any]]:
    _, events = await store.load(run_id)
    return events


# --- Refusals -----------------------------------------------------------------------------------------


def test_an_answer_to_an_unknown_run_or_request_is_404(alice: User) -> None:
    run_id = alice.start("ship", {"title": "Unknown"})
    [request] = waiting(alice, run_id)

    unknown_run = alice.answer("no-such-run", request["request_id"], {"action": "accept", "content": {"copies": 1}})
    unknown_request = alice.answer(run_id, "0" * 32, {"action": "accept", "content": {"copies": 1}})
    draft_of_unknown = alice.draft(run_id, "0" * 32)

    assert unknown_run.status_code == 404
    assert unknown_run.json() == {"detail": "Unknown run_id: no-such-run"}
    assert unknown_request.status_code == 404
    assert unknown_request.json() == {"detail": f"Run {run_id} has no request {'0' * 32}"}
    assert draft_of_unknown.status_code == 404
    alice.post(f"/api/runs/{run_id}/cancel")


def test_a_second_answer_is_409_naming_who_answered(alice: User) -> None:
    run_id = alice.start("ship", {"title": "Twice"})
    [request] = waiting(alice, run_id)
    first = alice.answer(run_id, request["request_id"], {"action": "accept", "content": {"copies": 1}})
    bob = User(alice.app, "bob")

    second = bob.answer(run_id, request["request_id"], {"action": "decline"})

    assert first.status_code == 200
    assert second.status_code == 409
    # Whether or not the step has finished the run meanwhile, the refusal says who answered first.
    assert second.json()["detail"] == f"Request {request['request_id']} was answered already (accept by alice)"
    assert [answer["action"] for answer in steps_of(finished(alice, run_id))["approve"]["answers"]] == ["accept"]


def test_an_answer_after_the_run_ended_is_409(alice: User) -> None:
    run_id = alice.start("ship", {"title": "Cancelled"})
    [request] = waiting(alice, run_id)
    assert alice.post(f"/api/runs/{run_id}/cancel").status_code == 202
    assert finished(alice, run_id)["status"] == "cancelled"

    response = alice.answer(run_id, request["request_id"], {"action": "accept", "content": {"copies": 1}})

    assert response.status_code == 409
    assert response.json() == {
        "detail": f"Request {request['request_id']} is closed: run {run_id} has ended (cancelled)"
    }


def test_an_answer_after_the_request_expired_is_409(alice: User) -> None:
    run_id = alice.start("quick")
    [request] = waiting(alice, run_id)
    run = finished(alice, run_id)
    assert run["message"] == "Step 'approve' failed: Nobody answered within 0.2s (wait_timeout_seconds)"
    assert steps_of(run)["approve"]["answers"][0]["action"] == "expired"
    assert steps_of(run)["approve"]["answers"][0]["answered_by"] is None

    response = alice.answer(run_id, request["request_id"], {"action": "accept"})

    assert response.status_code == 409
    assert "closed" in response.json()["detail"] or "expired" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "loc", "kind"),
    [
        ({"action": "approve"}, ["body", "action"], "literal_error"),
        ({"content": {"copies": 1}}, ["body", "action"], "missing"),
        ({"action": "accept", "contents": {"copies": 1}}, ["body", "contents"], "extra_forbidden"),
        ({"action": "accept", "content": {"copies": 0}}, ["body", "content", "copies"], "jsonschema.minimum"),
        ({"action": "accept", "content": {"copies": "two"}}, ["body", "content", "copies"], "jsonschema.type"),
        ({"action": "accept", "content": {"note": "no copies"}}, ["body", "content", "copies"], "jsonschema.required"),
        ({"action": "accept", "content": ["copies", 1]}, ["body", "content"], "jsonschema.type"),
        (["accept"], ["body"], "model_type"),
    ],
)
def test_a_malformed_answer_is_422_naming_the_field_and_records_nothing(
    alice: User, body: Any, loc: list[Any], kind: str
) -> None:
    run_id = alice.start("ship", {"title": "Malformed"})
    [request] = waiting(alice, run_id)

    response = alice.answer(run_id, request["request_id"], body)

    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert (problem["loc"], problem["type"]) == (loc, kind)
    assert problem["msg"]
    assert alice.run(run_id)["pending_requests"] == [request]  # still open, nothing recorded
    alice.post(f"/api/runs/{run_id}/cancel")


def test_an_answer_that_is_not_strict_json_is_refused(alice: User) -> None:
    run_id = alice.start("ship", {"title": "Not JSON"})
    [request] = waiting(alice, run_id)
    path = f"/api/runs/{run_id}/requests/{request['request_id']}"

    broken = alice.post(
        path, content=b'{"action": "accept", "content": {"copies": NaN}}', headers={"Content-Type": "application/json"}
    )
    as_text = alice.post(path, content=b'{"action": "decline"}', headers={"Content-Type": "text/plain"})

    assert broken.status_code == 422
    assert broken.json()["detail"][0]["type"] == "json_non_finite"
    assert as_text.status_code == 415
    assert alice.run(run_id)["pending_requests"] == [request]
    alice.post(f"/api/runs/{run_id}/cancel")


def test_who_may_not_run_the_scenario_may_not_answer_its_requests(app: InProcessApp, alice: User) -> None:
    run_id = alice.start("restricted")
    [request] = waiting(alice, run_id)
    body = {"action": "accept", "content": {"copies": 1}}

    as_viewer = User(app, "vic").answer(run_id, request["request_id"], body)
    off_the_list = User(app, "bob").answer(run_id, request["request_id"], body)
    draft_as_viewer = User(app, "vic").draft(run_id, request["request_id"])

    assert as_viewer.status_code == 403
    assert as_viewer.json() == {"detail": "Refused: this needs the operator role; yours is viewer"}
    assert draft_as_viewer.status_code == 403
    assert off_the_list.status_code == 403
    assert off_the_list.json() == {
        "detail": "Refused: you may not answer requests in runs of scenario 'restricted' "
        "(its run list names neither you nor your groups)"
    }
    assert User(app, "vic").run(run_id)["pending_requests"] == [request]  # a viewer still sees what is asked
    response = alice.answer(run_id, request["request_id"], body)
    assert response.status_code == 200
    assert finished(alice, run_id)["status"] == "success"


def test_nobody_signed_in_may_answer(alice: User) -> None:
    run_id = alice.start("ship", {"title": "Anonymous"})
    [request] = waiting(alice, run_id)

    response = alice.app.post(f"/api/runs/{run_id}/requests/{request['request_id']}", json={"action": "decline"})

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="stepline"'
    alice.post(f"/api/runs/{run_id}/cancel")


# --- The run list --------------------------------------------------------------------------------------


def test_the_run_list_filters_waiting_runs_and_refuses_an_unknown_status(alice: User) -> None:
    waiting_id = alice.start("ship", {"title": "Filter"})
    waiting(alice, waiting_id)
    done_id = alice.start("quick")
    finished(alice, done_id)

    until("the run listed as waiting", lambda: waiting_id in alice.run_ids(status="waiting"))
    listed = alice.get("/api/runs", params={"status": "waiting", "limit": 200}).json()["runs"]
    paused = alice.get("/api/runs", params={"status": "paused"})

    assert waiting_id in [run["run_id"] for run in listed]
    assert done_id not in [run["run_id"] for run in listed]
    assert {run["status"] for run in listed} == {"waiting"}
    assert paused.status_code == 422
    [problem] = paused.json()["detail"]
    assert problem["loc"] == ["query", "status"]
    assert "'waiting'" in problem["msg"]
    alice.post(f"/api/runs/{waiting_id}/cancel")


# --- Other kinds: sampling with a model's draft, a URL -------------------------------------------------


def test_a_sampling_request_is_drafted_by_the_model_reviewed_and_answered(alice: User, model: ChatModel) -> None:
    run_id = alice.start("ship", {"title": "Sampled"})
    [approval_request] = waiting(alice, run_id)
    future = ask_on(alice.app, run_id, RequestKind.SAMPLING, "The server asks for a model's reply", **SAMPLING)
    [_, request] = waiting(alice, run_id, 2)
    assert {key: request[key] for key in SAMPLING} == SAMPLING
    assert request["kind"] == "sampling"
    assert request.get("draft") is None

    response = alice.draft(run_id, request["request_id"])

    assert response.status_code == 200, response.text
    draft = response.json()["draft"]
    assert draft == {
        "text": "You said: Where did this story start? (max 50, system: You are a careful fact-checker.)",
        "model": "gpt-4o-mini-0601",
        "stop_reason": "endTurn",
    }
    assert model.received[-1].body["messages"][0] == {"role": "system", "content": "You are a careful fact-checker."}
    assert alice.run(run_id)["pending_requests"][1]["draft"] == draft
    # Drafting is not answering: the request is still open, and only a sampling request has a draft.
    assert alice.run(run_id)["status"] == "waiting"
    not_sampling = alice.draft(run_id, approval_request["request_id"])
    assert not_sampling.status_code == 409
    assert "only a sampling request can be drafted" in not_sampling.json()["detail"]

    empty = alice.answer(run_id, request["request_id"], {"action": "accept", "content": {"text": ""}})
    assert empty.status_code == 422
    assert empty.json()["detail"][0]["loc"] == ["body", "content", "text"]
    reply = {"text": draft["text"] + " Reviewed.", "model": draft["model"]}
    accepted = alice.answer(run_id, request["request_id"], {"action": "accept", "content": reply})

    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["status"] == "waiting"  # the approval is still open
    answer = answered(future)
    assert (answer.action, answer.content, answer.by) == ("accept", reply, {"name": "alice", "source": "proxy"})
    too_late = alice.draft(run_id, request["request_id"])
    assert too_late.status_code == 409
    assert too_late.json()["detail"] == f"Request {request['request_id']} was answered already (accept by alice)"
    alice.answer(run_id, approval_request["request_id"], {"action": "accept", "content": {"copies": 1}})
    run = finished(alice, run_id)
    assert [(a["kind"], a["action"]) for a in steps_of(run)["approve"]["answers"]] == [
        ("sampling", "accept"),
        ("approval", "accept"),
    ]
    events = read_events(alice.app.client, run_id, headers=alice.headers)
    [drafted] = [event for event in events if event["type"] == "input_drafted"]
    assert (drafted["request_id"], drafted["draft"]) == (request["request_id"], draft)
    assert drafted["drafted_by"] == {"name": "alice", "source": "proxy"}


def test_a_model_that_fails_is_502_with_its_reason_and_the_request_stays_open(alice: User, model: ChatModel) -> None:
    run_id = alice.start("ship", {"title": "Refused"})
    waiting(alice, run_id)
    future = ask_on(alice.app, run_id, RequestKind.SAMPLING, "Reply, please", **SAMPLING)
    [_, request] = waiting(alice, run_id, 2)
    model.answer = "refuse"
    try:
        response = alice.draft(run_id, request["request_id"])
    finally:
        model.answer = "reply"

    assert response.status_code == 502
    assert response.json()["detail"].startswith(f"The model endpoint {model.url} answered HTTP 401: ")
    assert "draft" not in alice.run(run_id)["pending_requests"][1] or (
        alice.run(run_id)["pending_requests"][1]["draft"] is None
    )
    # A person writes the reply instead.
    written = alice.answer(run_id, request["request_id"], {"action": "accept", "content": {"text": "Mine."}})
    assert written.status_code == 200
    assert answered(future).content == {"text": "Mine."}
    alice.post(f"/api/runs/{run_id}/cancel")


def test_without_a_model_endpoint_a_draft_is_409_saying_how_to_configure_one(tmp_path: Path) -> None:
    with people_app(tmp_path) as app:
        app.wait_ready()
        alice = User(app, "alice")
        run_id = alice.start("ship", {"title": "No model"})
        waiting(alice, run_id)
        future = ask_on(app, run_id, RequestKind.SAMPLING, "Reply, please", **SAMPLING)
        [_, request] = waiting(alice, run_id, 2)

        response = alice.draft(run_id, request["request_id"])

        assert response.status_code == 409
        assert "--sampling-url" in response.json()["detail"]
        alice.answer(run_id, request["request_id"], {"action": "decline"})
        assert answered(future).action == "decline"
        alice.post(f"/api/runs/{run_id}/cancel")


def test_a_url_request_is_confirmed_without_content(alice: User) -> None:
    run_id = alice.start("ship", {"title": "Sign in"})
    waiting(alice, run_id)
    url = "https://auth.daily.example.com/authorize?request=7f3c"
    future = ask_on(alice.app, run_id, RequestKind.URL, "Authorize read access", url=url, elicitation_id="7f3c")
    [_, request] = waiting(alice, run_id, 2)

    assert (request["kind"], request["url"], request["elicitation_id"]) == ("url", url, "7f3c")
    response = alice.answer(run_id, request["request_id"], {"action": "accept"})

    assert response.status_code == 200, response.text
    assert (response.json()["action"], response.json()["content"]) == ("accept", None)
    assert answered(future).action == "accept"
    alice.post(f"/api/runs/{run_id}/cancel")


def test_the_openapi_document_describes_answering(app: InProcessApp) -> None:
    document = app.get("/openapi.json").json()
    answer = document["paths"]["/api/runs/{run_id}/requests/{request_id}"]["post"]
    draft = document["paths"]["/api/runs/{run_id}/requests/{request_id}/draft"]["post"]

    assert set(answer["responses"]) == {"200", "401", "403", "404", "409", "413", "415", "422", "503"}
    assert set(draft["responses"]) == {"200", "401", "403", "404", "409", "502", "503"}
    assert document["components"]["schemas"]["ScenarioRunResponse"]["properties"]["pending_requests"]
    assert "waiting" in document["components"]["schemas"]["RunStatus"]["enum"]


# --- A history that cannot be written ----------------------------------------------------------------------


def limit_file_size(size: int) -> Callable[[], None]:
    # RLIMIT_FSIZE binds root as well: a write past it fails (EFBIG), as on a full disk.
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


def test_an_answer_while_the_history_cannot_be_written_is_503_and_records_nothing(
    make_server: Callable[..., StepServer], tmp_path: Path
) -> None:
    folder = tmp_path / "scenarios"
    folder.mkdir()
    (folder / "hold.json").write_text(json.dumps(v2("hold", approval("Go on?"))), encoding="utf-8")
    shutil.copy(SCENARIOS_SHIPPED / f"{OUTLET}.json", folder)
    # Enough room to start; the write-ahead log outgrows it within a few runs.
    server = make_server("--scenarios", str(folder), preexec_fn=limit_file_size(256 * 1024))
    run_id = start_run(server.url, "hold")["run_id"]
    request_id = until("the approval", lambda: get_run(server.url, run_id)["pending_requests"])[0]["request_id"]

    def failing() -> bool:
        response = httpx.post(
            f"{server.url}/api/runs", json={"scenario_id": OUTLET, "input": {"domain": "daily.example.com"}}, timeout=10
        )
        assert response.status_code in (202, 503), response.text
        return response.status_code == 503

    until("writes to fail", failing, timeout=30)
    response = httpx.post(f"{server.url}/api/runs/{run_id}/requests/{request_id}", json={"action": "accept"})

    assert response.status_code == 503
    assert response.headers["Retry-After"].isdigit()
    assert response.json()["detail"].startswith("Not answered: run history ")
    assert "cannot be written" in response.json()["detail"]
    run = get_run(server.url, run_id)
    assert (run["status"], [r["request_id"] for r in run["pending_requests"]]) == ("waiting", [request_id])
