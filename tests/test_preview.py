"""POST /api/scenarios/{id}/preview: each step's condition, items and arguments, worked out without calling any tool.

The shipped scenarios on the bundled demo server, previewed with the outputs of real runs, must give each step
exactly the arguments the run gave it. The tests' workflow server (tests/servers/workflow.py) proves from its
side that a preview calls nothing: `flaky` counts every call of its key.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from conftest import wait_until
from inprocess import InProcessApp, in_process
from mcp_process import workflow_home
from runs import get_run, run_to_end, start_run, wait_finished
from sse import read_events

NEWS = "news_source_discovery_v1"
ORIGIN = "story_origin_check_v2"
OUTLET = "outlet_story_origins_v2"
# Not the first report of its story: its citation chain is traced.
LATER_REPORT = "https://signal.example/culture/lighthouse-library-explainer"
# The first report of the same story: the trace step's condition is false.
FIRST_REPORT = "https://notes.example.net/2024/03/05/lighthouse-cottage-reading-room"
# Small, so that a for_each over a short list passes it.
MAX_FOR_EACH_ITEMS = 5


def v2(scenario_id: str, *steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"schema_version": "2", "scenario_id": scenario_id, "name": scenario_id, "steps": list(steps), **extra}


def step(name: str, tool: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "tool": tool, "input": fields.pop("input", {}), **fields}


FLOW = v2(
    "flow",
    step("first", "echo", input={"value": "{{ input.words }}", "note": "{{ run.id }}"}),
    step("shout", "upper", for_each="{{ input.words }}", input={"text": "{{ item }} #{{ item_index }}"}),
    step("big", "echo", when="{{ input.words | length > input.limit }}", input={"value": "{{ input.limit }}"}),
    step("after_big", "echo", input={"value": "{{ steps.big.status }}", "note": "{{ steps.big.output }}"}),
    step("after_first", "echo", input={"value": "{{ steps.first.output.value[0] }}", "note": "{{ input.limit }}"}),
    step("listing", "lines_text", input={"n": "{{ input.limit }}"}),
    step("per_line", "echo", for_each="{{ steps.listing.text | lines }}", input={"value": "{{ item }}"}),
    step("kind", "echo", input={"value": "{{ steps.listing.content[0].type }}"}),
    step("counted", "flaky", input={"key": "{{ input.key }}", "failures": 0}),
    input_schema={
        "type": "object",
        "required": ["words", "key"],
        "properties": {
            "words": {"type": "array", "items": {"type": "string"}},
            "limit": {"type": "integer", "default": 2},
            "key": {"type": "string"},
        },
    },
)
ERRORS = v2(
    "errors",
    step("fine", "echo", input={"value": "{{ input.n }}"}),
    step("divide", "echo", input={"value": "{{ 1 / input.n }}"}),
    step("in_text", "echo", input={"value": "id: {{ input.nope }}"}),
    step("by_field", "echo", input={"value": "{{ input.nope }}"}, required_input_fields=["value"]),
    step("by_schema", "upper", input={"text": "{{ input.nope }}"}),
    step("left_out", "echo", input={"value": "{{ input.n }}", "note": "{{ input.nope }}"}),
    step("not_a_list", "echo", for_each="{{ input.name }}"),
    step("too_many", "echo", for_each="{{ input.many }}", input={"value": "{{ item }}"}),
    step("some_items", "echo", for_each="{{ input.people }}", input={"value": "hi {{ item.name }}"}),
)
NEEDS = v2(
    "needs",
    step("slow", "sleep", input={"seconds": "{{ input.seconds }}", "label": "done"}),
    step("refused", "fail", input={"message": "no"}, on_error="continue"),
    step("after_slow", "echo", input={"value": "{{ steps.slow.output }}"}),
    step("after_refused", "echo", input={"value": "{{ steps.refused.status }}", "note": "{{ steps.refused.output }}"}),
)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessApp]:
    home = tmp_path_factory.mktemp("preview")
    folder, config = workflow_home(home, [FLOW, ERRORS, NEEDS])
    with in_process(home, mcp_config=config, scenarios=folder, max_for_each_items=MAX_FOR_EACH_ITEMS) as app:
        app.wait_ready()  # the tools' schemas are known: their required arguments are checked
        yield app


def preview(target: InProcessApp, scenario_id: str, body: dict[str, Any], status: int = 200) -> Any:
    response = target.post(f"/api/scenarios/{scenario_id}/preview", json=body)
    assert response.status_code == status, response.text
    return response.json()


def steps_of(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in answer["steps"]}


# --- The shipped scenarios, against their real runs ------------------------------------------------------


def test_without_a_run_the_first_step_is_resolved_and_the_others_wait(demo_app: InProcessApp) -> None:
    answer = preview(demo_app, NEWS, {"input": {"url": LATER_REPORT}})
    steps = steps_of(answer)

    assert answer["outputs_from_run"] is None and answer["input"] == {"url": LATER_REPORT}
    assert [s["name"] for s in answer["steps"]] == [
        "fetch_article",
        "search_news_sources",
        "pick_earliest",
        "trace_citations",
    ]
    assert steps["fetch_article"]["status"] == "ready"
    assert steps["fetch_article"]["input"] == {"url": LATER_REPORT}
    waiting = steps["search_news_sources"]
    assert waiting["status"] == "waiting" and waiting["needs"] == ["fetch_article"]
    assert waiting["message"] == "needs steps.fetch_article, which has no output yet"
    assert waiting["unresolved"] == ["url"] and waiting["error"] is None
    # A literal argument is known whatever the steps before give.
    assert steps["trace_citations"]["input"] == {"max_hops": 10}
    assert steps["trace_citations"]["message"] == (
        "needs steps.fetch_article and steps.pick_earliest, which have no output yet"
    )


@pytest.mark.parametrize(
    ("scenario_id", "run_input"),
    [(NEWS, {"url": LATER_REPORT}), (ORIGIN, {"url": LATER_REPORT}), (ORIGIN, {"url": FIRST_REPORT})],
)
def test_with_a_runs_outputs_each_step_gets_what_the_run_gave_it(
    demo_app: InProcessApp, scenario_id: str, run_input: dict[str, Any]
) -> None:
    run = run_to_end(demo_app.client, scenario_id, run_input)
    assert run["status"] == "success", run["message"]

    answer = preview(demo_app, scenario_id, {"input": run_input, "outputs_from_run": run["run_id"]})

    assert answer["outputs_from_run"] == run["run_id"]
    previewed = steps_of(answer)
    for ran in run["steps"]:
        step = previewed[ran["node_id"]]
        if ran["status"] == "skipped":  # its condition was false
            assert step["status"] == "skipped", step
            assert step["when"] is False and step["message"] == ran["message"]
            assert step["input"] is None
        else:
            assert step["status"] == "ready", step
            assert step["input"] == ran["input"], ran["node_id"]
            assert step["message"] == f"would call {step['tool']}"


def test_a_for_each_previews_each_items_arguments_as_the_run_gave_them(demo_app: InProcessApp) -> None:
    run = run_to_end(demo_app.client, OUTLET, {"domain": "daily.example.com"})
    items = {
        (e["step_name"], e["item_index"]): e["input"]
        for e in read_events(demo_app.client, run["run_id"])
        if e["type"] == "step_item_finished"
    }

    answer = preview(demo_app, OUTLET, {"input": {"domain": "daily.example.com"}, "outputs_from_run": run["run_id"]})

    for name in ("related", "origins"):
        step = steps_of(answer)[name]
        assert step["status"] == "ready" and step["input"] is None
        count = len([key for key in items if key[0] == name])
        assert step["item_count"] == count > 1 and len(step["for_each"]) == count
        assert step["message"] == f"would call {step['tool']} for each of {count} items"
        assert [item["item_index"] for item in step["items"]] == list(range(count))
        for item in step["items"]:
            assert item["input"] == items[(name, item["item_index"])] and item["error"] is None


def test_a_step_reading_the_run_input_only_needs_no_run(demo_app: InProcessApp) -> None:
    answer = preview(demo_app, OUTLET, {"input": {"domain": "daily.example.com"}})
    steps = steps_of(answer)

    assert steps["outlet"]["input"] == {"domain": "daily.example.com"}
    assert steps["related"]["status"] == "waiting"
    assert steps["related"]["message"] == "needs steps.articles, which has no output yet, to know its items"
    assert steps["related"]["for_each"] is None and steps["related"]["items"] is None


# --- Conditions, items, errors and defaults ------------------------------------------------------------


def test_conditions_items_defaults_and_skipped_steps_from_the_input_alone(app: InProcessApp) -> None:
    words = [f"w{n}" for n in range(4)]
    answer = preview(app, "flow", {"input": {"words": words, "key": "no-run"}, "max_items": 3})
    steps = steps_of(answer)

    assert answer["input"] == {"words": words, "key": "no-run", "limit": 2}  # the default applied
    assert steps["first"]["input"] == {"value": words, "note": "preview"}  # run.id: there is no run
    shout = steps["shout"]
    assert shout["status"] == "ready" and shout["item_count"] == 4
    assert shout["for_each"] == words[:3]  # as many as asked
    assert [item["input"] for item in shout["items"]] == [{"text": "w0 #0"}, {"text": "w1 #1"}, {"text": "w2 #2"}]
    # 4 words > limit 2: the condition holds.
    assert steps["big"]["status"] == "ready" and steps["big"]["when"] is True
    assert steps["big"]["input"] == {"value": 2}
    assert steps["after_first"]["status"] == "waiting" and steps["after_first"]["input"] == {"note": 2}

    answer = preview(app, "flow", {"input": {"words": ["one"], "key": "no-run", "limit": 5}})
    steps = steps_of(answer)
    assert steps["big"]["status"] == "skipped" and steps["big"]["when"] is False
    assert steps["big"]["message"] == "Condition is false: {{ input.words | length > input.limit }}"
    # A skipped step is known without a run: what follows reads its status and its null output, as in a run.
    assert steps["after_big"]["status"] == "ready"
    assert steps["after_big"]["input"] == {"value": "skipped", "note": None}


def test_every_steps_error_is_shown_with_the_others_still_previewed(app: InProcessApp) -> None:
    run_input = {
        "n": 0,
        "name": "Ada",
        "many": list(range(MAX_FOR_EACH_ITEMS + 1)),
        "people": [{"name": "Ann"}, {}, {"name": "Bo"}, {}],
    }
    steps = steps_of(preview(app, "errors", {"input": run_input}))

    assert steps["fine"]["status"] == "ready" and steps["fine"]["input"] == {"value": 0}
    errors = {name: step["error"] for name, step in steps.items() if step["status"] == "error"}
    assert set(errors) == {"divide", "in_text", "by_field", "by_schema", "not_a_list", "too_many", "some_items"}
    assert errors["divide"].startswith("steps.1 (divide).input.value: {{ 1 / input.n }}: ")
    assert "division by zero" in errors["divide"]
    assert errors["in_text"] == "steps.2 (in_text).input.value: {{ input.nope }}: 'input.nope' is undefined"
    assert errors["by_field"] == "required argument 'value' is missing: {{ input.nope }} is undefined"
    assert errors["by_schema"] == "required argument 'text' is missing: {{ input.nope }} is undefined"
    assert errors["not_a_list"] == "steps.6 (not_a_list).for_each: {{ input.name }} gives text, not a list"
    assert errors["too_many"] == (
        "steps.7 (too_many).for_each: {{ input.many }} gives 6 items, more than the 5 allowed "
        "(STEPLINE_MAX_FOR_EACH_ITEMS)"
    )
    some = steps["some_items"]
    assert errors["some_items"].startswith("2 of 4 items would fail; item 1: steps.8 (some_items).input.value: ")
    assert [item["error"] is None for item in some["items"]] == [True, False, True, False]
    assert some["items"][0]["input"] == {"value": "hi Ann"}
    # An argument left out that the tool does not require is only noted.
    assert steps["left_out"]["status"] == "ready"
    assert steps["left_out"]["input"] == {"value": 0} and steps["left_out"]["omitted"] == ["note"]


def test_a_preview_calls_no_tool(app: InProcessApp) -> None:
    body = {"input": {"words": ["a"], "key": "counted-once"}}
    for _ in range(3):
        assert steps_of(preview(app, "flow", body))["counted"]["input"] == {"key": "counted-once", "failures": 0}

    run = run_to_end(app.client, "flow", body["input"])

    # `flaky` counts each call of its key: the run's was the first.
    assert {s["node_id"]: s for s in run["steps"]}["counted"]["output"] == {"key": "counted-once", "attempt": 1}


def test_text_and_content_of_a_runs_steps_are_read_as_a_run_reads_them(app: InProcessApp) -> None:
    run_input = {"words": ["a", "b"], "key": "text-and-content", "limit": 3}
    run = run_to_end(app.client, "flow", run_input)

    steps = steps_of(preview(app, "flow", {"input": run_input, "outputs_from_run": run["run_id"]}))

    assert steps["per_line"]["status"] == "ready"
    assert steps["per_line"]["for_each"] == ["line 1", "line 2", "line 3"]
    assert steps["kind"]["input"] == {"value": "text"}
    assert steps["after_first"]["input"] == {"value": "a", "note": 3}


def test_steps_the_run_did_not_end_wait_and_tolerated_failures_read_as_null(app: InProcessApp) -> None:
    live = start_run(app.client, "needs", {"seconds": 30})["run_id"]
    try:
        wait_until(
            lambda: {s["node_id"]: s["status"] for s in get_run(app.client, live)["steps"]}.get("refused") == "failed",
            20,
            "the tolerated failure",
        )
        steps = steps_of(preview(app, "needs", {"input": {"seconds": 30}, "outputs_from_run": live}))
    finally:
        assert app.post(f"/api/runs/{live}/cancel").status_code in (202, 409)

    assert steps["after_slow"]["status"] == "waiting"
    assert steps["after_slow"]["message"] == f"needs steps.slow, which has not ended in run {live}"
    assert steps["after_refused"]["status"] == "ready"
    assert steps["after_refused"]["input"] == {"value": "failed", "note": None}

    cancelled = wait_finished(app.client, live)
    assert cancelled["status"] == "cancelled"
    steps = steps_of(preview(app, "needs", {"input": {"seconds": 0}, "outputs_from_run": live}))
    assert steps["after_slow"]["message"] == f"needs steps.slow, which has no output: it was cancelled in run {live}"


# --- Bad requests ------------------------------------------------------------------------------------


def test_an_unknown_scenario_or_run_is_404_naming_it(demo_app: InProcessApp) -> None:
    assert preview(demo_app, "nowhere_v1", {"input": {}}, 404) == {"detail": "Unknown scenario_id: nowhere_v1"}
    answer = preview(demo_app, NEWS, {"input": {"url": LATER_REPORT}, "outputs_from_run": "no-such-run"}, 404)
    assert answer == {"detail": "Unknown run_id: no-such-run"}


def test_a_run_of_another_scenario_is_422_naming_both(demo_app: InProcessApp) -> None:
    other = run_to_end(demo_app.client, ORIGIN, {"url": LATER_REPORT})["run_id"]

    answer = preview(demo_app, NEWS, {"input": {"url": LATER_REPORT}, "outputs_from_run": other}, 422)

    (problem,) = answer["detail"]
    assert problem["loc"] == ["body", "outputs_from_run"]
    assert problem["msg"].startswith(f"Run {other} is a run of scenario '{ORIGIN}', not of '{NEWS}'")


def test_input_that_would_not_run_is_422_as_for_a_run(demo_app: InProcessApp) -> None:
    body = {"scenario_id": NEWS, "input": {"url": 42}}
    as_run = demo_app.post("/api/runs", json=body)
    answer = preview(demo_app, NEWS, {"input": body["input"]}, 422)

    assert as_run.status_code == 422 and answer == as_run.json()
    assert answer["detail"][0]["loc"] == ["body", "input", "url"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"input": {"url": LATER_REPORT}, "outputs_from": "x"}, ["body", "outputs_from"]),
        ({"input": {"url": LATER_REPORT}, "max_items": 5000}, ["body", "max_items"]),
        ({"input": "https://x.example"}, ["body", "input"]),
    ],
)
def test_a_malformed_body_is_422_naming_the_field(demo_app: InProcessApp, body: dict[str, Any], loc: list[str]) -> None:
    assert preview(demo_app, NEWS, body, 422)["detail"][0]["loc"] == loc


def test_a_body_not_sent_as_json_is_415(demo_app: InProcessApp) -> None:
    response = demo_app.post(f"/api/scenarios/{NEWS}/preview", content=b"{}", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415 and "Send the body as JSON" in response.json()["detail"]


def test_the_route_is_documented_with_examples_that_validate(demo_app: InProcessApp) -> None:
    document = demo_app.get("/openapi.json").json()
    operation = document["paths"]["/api/scenarios/{scenario_id}/preview"]["post"]
    assert set(operation["responses"]) == {"200", "401", "403", "404", "413", "415", "422"}
    schemas = document["components"]["schemas"]
    for name in ("PreviewRequest", "PreviewResponse", "StepPreviewModel"):
        validator = jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{name}", **document})
        for example in schemas[name]["examples"]:
            assert list(validator.iter_errors(example)) == [], name
    # What the route answers validates too.
    real = preview(demo_app, NEWS, {"input": {"url": LATER_REPORT}})
    validator = jsonschema.Draft202012Validator({"$ref": "#/components/schemas/PreviewResponse", **document})
    assert list(validator.iter_errors(real)) == []
