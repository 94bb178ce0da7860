"""The OpenAPI document describes what the API really sends: every event type has a schema and an
example, the examples validate, and the events and snapshot of real runs validate against the schemas.

Real runs: the shipped v2 scenarios on the bundled demo server, and one scenario on the tests' workflow
MCP server (tests/servers/workflow.py) that makes every event type happen, a retry included.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from inprocess import InProcessApp, in_process
from mcp_process import workflow_home
from runs import get_run, start_run, wait_finished
from servers.chat_model import chat_model
from sse import Frame, Parser, frames, parse_lines

from web.events import EventType, RequestKind, RunStatus, StepStatus
from web.inbox import Answer, Ask

# One run that emits every event type: a retried step, progress, for_each items, a false condition, a
# tolerated failure, two approvals (one answered at once, a server's sampling request drafted by a model and
# answered on its way; one answered after a restart) and an output.
EVERY_EVENT = {
    "schema_version": "2",
    "scenario_id": "every_event",
    "name": "Every event",
    "steps": [
        {"name": "retried", "tool": "flaky", "input": {"key": "{{ run.id }}", "failures": 1},
         "retry": {"max_attempts": 2, "backoff_seconds": 0}},
        {"name": "ticking", "tool": "progress_for", "input": {"seconds": 0.3, "every": 0.05}},
        {"name": "letters", "tool": "echo", "for_each": "{{ ['a', 'b', 'c'] }}", "input": {"value": "{{ item }}"}},
        {"name": "never", "tool": "echo", "when": "{{ steps.retried.output.attempt > 5 }}", "input": {}},
        {"name": "tolerated", "tool": "fail", "input": {"message": "refused, as planned"}, "on_error": "continue"},
        {"name": "approve", "type": "approval",
         "message": "Publish {{ steps.letters.output | length }} letters ({{ steps.ticking.status }}, "
                    "{{ steps.tolerated.status }})?",
         "schema": {"type": "object", "properties": {"copies": {"type": "integer"}}, "required": ["copies"]}},
        {"name": "review", "type": "approval", "message": "Review {{ steps.letters.output | length }} letters?"},
    ],
    "output": {"attempts": "{{ steps.retried.output.attempt }}", "letters": "{{ steps.letters.output | length }}"},
}


@pytest.fixture(scope="module")
def openapi(demo_app: InProcessApp) -> dict[str, Any]:
    response = demo_app.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


@pytest.fixture
def workflow_app(tmp_path: Path) -> Iterator[Callable[[], ContextManager[InProcessApp]]]:
    """Apps (one at a time) with the tests' workflow server and a model endpoint, sharing one history."""
    folder, config = workflow_home(tmp_path, [EVERY_EVENT])
    with chat_model() as model:

        @contextmanager
        def start() -> Iterator[InProcessApp]:
            settings = {"mcp_config": config, "scenarios": folder, "data_dir": tmp_path / "data"}
            with in_process(tmp_path, sampling_url=model.url, **settings) as app:
                app.wait_ready()
                yield app

        yield start


def validator(openapi: dict[str, Any], component: str) -> jsonschema.Draft202012Validator:
    """A validator for one component, its references resolved inside the document."""
    schema = {"$ref": f"#/components/schemas/{component}", "components": openapi["components"]}
    return jsonschema.Draft202012Validator(schema)


def problems(openapi: dict[str, Any], component: str, instance: Any) -> list[str]:
    found = validator(openapi, component).iter_errors(instance)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in found]


def stream(app: InProcessApp, run_id: str) -> list[Frame]:
    with app.client.stream("GET", f"/api/runs/{run_id}/events") as response:
        assert response.status_code == 200
        return list(frames(parse_lines(response.iter_lines())))


def as_frame(frame: Frame) -> dict[str, Any]:
    """A frame as the EventFrame schema describes it: its `id:`, `event:` and `data:` lines."""
    return {"id": int(frame.id or 0), "event": frame.event, "data": frame.json()}


# --- The document ----------------------------------------------------------------------------------


def test_every_event_type_has_a_schema_with_examples(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    mapping = schemas["RunEvent"]["discriminator"]["mapping"]

    assert schemas["RunEvent"]["discriminator"]["propertyName"] == "type"
    assert set(mapping) == {kind.value for kind in EventType}
    assert len(schemas["RunEvent"]["oneOf"]) == len(EventType)
    for kind, ref in mapping.items():
        name = ref.removeprefix("#/components/schemas/")
        schema = schemas[name]
        assert schema["properties"]["type"]["const"] == kind
        assert schema["examples"], name
        for example in schema["examples"]:
            assert example["type"] == kind
            assert problems(openapi, name, example) == []
            assert problems(openapi, "RunEvent", example) == []


def test_an_event_that_breaks_its_schema_is_refused(openapi: dict[str, Any]) -> None:
    # The schemas are strict enough to catch drift between what the runner sends and what is documented.
    started = openapi["components"]["schemas"]["StepStartedEvent"]["examples"][0]

    assert problems(openapi, "RunEvent", {**started, "surprise": 1})
    assert problems(openapi, "RunEvent", {key: value for key, value in started.items() if key != "step_name"})
    assert problems(openapi, "RunEvent", {**started, "type": "step_paused"})


def test_the_events_route_describes_its_frames_and_its_example_is_a_valid_stream(openapi: dict[str, Any]) -> None:
    media = openapi["paths"]["/api/runs/{run_id}/events"]["get"]["responses"]["200"]["content"]["text/event-stream"]
    parser = Parser()
    (example,) = media["examples"].values()
    parsed = [item for line in example["value"].split("\n") if isinstance(item := parser.feed(line), Frame)]

    assert media["schema"]["items"] == {"$ref": "#/components/schemas/EventFrame"}
    assert [frame.event for frame in parsed][0] == "run_started"
    assert [frame.event for frame in parsed][-1] == "run_finished"
    for frame in parsed:
        assert problems(openapi, "EventFrame", as_frame(frame)) == []
        assert frame.json()["seq"] == int(frame.id or 0)
        assert frame.json()["type"] == frame.event


def test_statuses_are_the_one_vocabulary(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    status_filter = next(
        parameter
        for parameter in openapi["paths"]["/api/runs"]["get"]["parameters"]
        if parameter["name"] == "status"
    )

    assert schemas["RunStatus"]["enum"] == [status.value for status in RunStatus]
    assert schemas["StepStatus"]["enum"] == [status.value for status in StepStatus]
    assert status_filter["schema"]["enum"] == [status.value for status in RunStatus]
    assert {"pending", "skipped"} <= set(schemas["StepStatus"]["enum"])


def test_the_snapshot_documents_output_plan_dependencies_attempts_and_items(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    step = schemas["StepStateModel"]["properties"]

    assert {"output", "plan"} <= set(schemas["ScenarioRunResponse"]["properties"])
    assert {"depends_on", "attempt", "max_attempts", "item_count", "items_done", "items_failed"} <= set(step)
    # Examples show them filled in, not only null.
    examples = schemas["ScenarioRunResponse"]["examples"]
    assert any(example["output"] and example["plan"] for example in examples)
    assert any(s["item_count"] for s in schemas["StepStateModel"]["examples"])


def test_a_steps_content_and_its_whole_output_are_documented(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    route = openapi["paths"]["/api/runs/{run_id}/steps/{step_name}/output"]["get"]

    assert "content" in schemas["StepStateModel"]["properties"]
    assert {block["type"] for s in schemas["StepStateModel"]["examples"] for block in s["content"] or []} >= {
        "text", "image", "resource_link"}
    assert "text_from" in schemas["StepFinishedEvent"]["properties"]["content"]["description"]
    assert set(route["responses"]) == {"200", "401", "403", "404", "409"}
    assert route["responses"]["200"]["content"]["application/json"]["example"]


# --- Real runs -------------------------------------------------------------------------------------


def pending_requests(app: InProcessApp, run_id: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while len((run := get_run(app.client, run_id))["pending_requests"]) < count:
        assert time.monotonic() < deadline, run
        time.sleep(0.02)
    assert problems(app.get("/openapi.json").json(), "ScenarioRunResponse", run) == []
    return run["pending_requests"]


def ask_sampling(app: InProcessApp, run_id: str) -> Any:
    """A server's sampling request, asked on the waiting review step as the MCP client side asks it."""

    async def ask() -> Answer:
        record = app.state["runs"].held(run_id)
        messages = [{"role": "user", "content": {"type": "text", "text": "One word for it?"}}]
        details = {"messages": messages, "system_prompt": None, "model_preferences": None, "max_tokens": 20,
                   "temperature": None, "stop_sequences": None, "include_context": None}
        return await app.state["runner"].inbox.ask(
            record, "review", record.state.steps["review"].index, Ask(RequestKind.SAMPLING, "Reply?", details)
        )

    return app.submit(ask())


def test_a_run_with_every_event_type_validates_against_the_schemas(
    workflow_app: Callable[[], ContextManager[InProcessApp]], openapi: dict[str, Any]
) -> None:
    with workflow_app() as app:
        run_id = start_run(app.client, "every_event")["run_id"]
        approvals = {request["step_name"]: request for request in pending_requests(app, run_id, 2)}
        sampling = ask_sampling(app, run_id)
        request = pending_requests(app, run_id, 3)[2]
        path = f"/api/runs/{run_id}/requests/{request['request_id']}"
        draft = app.post(f"{path}/draft")
        assert draft.status_code == 200, draft.text
        assert pending_requests(app, run_id, 3)[2]["draft"] == draft.json()["draft"]
        reply = {key: draft.json()["draft"][key] for key in ("text", "model")}
        assert app.post(path, json={"action": "accept", "content": reply}).status_code == 200
        sampling.result(10)
        review = f"/api/runs/{run_id}/requests/{approvals['review']['request_id']}"
        assert app.post(review, json={"action": "accept", "content": {"comment": "Fine"}}).status_code == 200
        approval = approvals["approve"]
    # The approval waits on across a restart, then goes on.
    with workflow_app() as app:
        assert pending_requests(app, run_id, 1) == [approval]
        path = f"/api/runs/{run_id}/requests/{approval['request_id']}"
        answered = app.post(path, json={"action": "accept", "content": {"copies": 2}})
        assert answered.status_code == 200, answered.text
        sent = stream(app, run_id)
        snapshot = get_run(app.client, run_id)

    assert {frame.event for frame in sent} == {kind.value for kind in EventType}
    for frame in sent:
        assert problems(openapi, "EventFrame", as_frame(frame)) == [], frame
    assert problems(openapi, "ScenarioRunResponse", snapshot) == []
    assert snapshot["status"] == "success", snapshot["message"]
    assert snapshot["message"] == "Finished with 1 tolerated failure(s): tolerated"
    assert snapshot["output"] == {"attempts": 2, "letters": 3}
    steps = {step["node_id"]: step for step in snapshot["steps"]}
    assert [step["node_id"] for step in snapshot["steps"]] == [step["name"] for step in EVERY_EVENT["steps"]]
    assert (steps["retried"]["attempt"], steps["retried"]["max_attempts"]) == (2, 2)
    letters = steps["letters"]
    assert (letters["item_count"], letters["items_done"], letters["items_failed"], letters["input"]) == (3, 3, 0, None)
    assert [item["value"] for item in letters["output"]] == ["a", "b", "c"]
    assert steps["ticking"]["item_count"] is None and steps["ticking"]["items_done"] is None
    assert steps["never"]["status"] == "skipped"
    assert steps["never"]["message"] == "Condition is false: {{ steps.retried.output.attempt > 5 }}"
    assert steps["never"]["depends_on"] == ["retried"]
    assert steps["tolerated"]["status"] == "failed"
    assert steps["tolerated"]["message"].endswith("refused, as planned")


@pytest.mark.parametrize(
    ("scenario_id", "run_input"),
    [
        ("story_origin_check_v2", {"url": "https://signal.example/culture/lighthouse-library-explainer"}),
        ("outlet_story_origins_v2", {"domain": "daily.example.com"}),
        ("outlet_profile_v1", {"domain": "nowhere.example.com"}),
    ],
)
def test_shipped_scenarios_runs_validate_against_the_schemas(
    demo_app: InProcessApp, openapi: dict[str, Any], scenario_id: str, run_input: dict[str, Any]
) -> None:
    run_id = start_run(demo_app.client, scenario_id, run_input)["run_id"]
    sent = stream(demo_app, run_id)
    snapshot = wait_finished(demo_app.client, run_id)

    assert sent[0].event == "run_started" and sent[-1].event == "run_finished"
    for frame in sent:
        assert problems(openapi, "EventFrame", as_frame(frame)) == [], frame
    assert problems(openapi, "ScenarioRunResponse", snapshot) == []
    assert snapshot["plan"] == sent[0].json()["plan"]
