"""The JSON API, served in-process: every endpoint of the contract, and a table of bad requests."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import jsonschema
import pytest
from conftest import DEMO_TOOLS, PROJECT_ROOT, wait_until
from inprocess import InProcessApp
from runs import get_run, run_to_end, start_run, wait_finished
from starlette.routing import Route

NEWS = "news_source_discovery_v1"
NEWS_INPUT = {"url": "https://signal.example/culture/lighthouse-library-explainer"}
OUTLET = "outlet_profile_v1"
ORIGIN_CHECK = "story_origin_check_v2"
STORY_ORIGINS = "outlet_story_origins_v2"
FIRST_REPORT = "https://notes.example.net/2024/03/05/lighthouse-cottage-reading-room"


def is_iso_utc(value: str) -> bool:
    stamp = datetime.fromisoformat(value)
    return stamp.utcoffset() is not None


@pytest.fixture(scope="module")
def finished_run(demo_app: InProcessApp) -> dict[str, Any]:
    return run_to_end(demo_app.client, NEWS, NEWS_INPUT)


# --- POST /api/runs and GET /api/runs/{run_id} ------------------------------------------------


def test_post_run_answers_202_with_the_queued_run(demo_app: InProcessApp) -> None:
    response = demo_app.post("/api/runs", json={"scenario_id": NEWS, "input": NEWS_INPUT})

    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"run_id", "scenario_id", "status", "input", "started_at"}
    assert body["scenario_id"] == NEWS
    assert body["status"] == "queued"
    assert body["input"] == NEWS_INPUT
    assert is_iso_utc(body["started_at"])
    assert get_run(demo_app.client, body["run_id"])["run_id"] == body["run_id"]


def test_post_run_without_input_uses_an_empty_object(demo_app: InProcessApp) -> None:
    # `input` defaults to {}, which this scenario's schema refuses, naming the missing field.
    response = demo_app.post("/api/runs", json={"scenario_id": OUTLET})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "input", "domain"]


def test_run_snapshot_while_running_then_finished(slow_demo_app: InProcessApp) -> None:
    run_id = start_run(slow_demo_app.client, NEWS, NEWS_INPUT)["run_id"]
    snapshots: list[dict[str, Any]] = []

    def a_step_is_running() -> bool:
        snapshots.append(get_run(slow_demo_app.client, run_id))
        assert snapshots[-1]["status"] in {"queued", "running"}, snapshots[-1]
        return snapshots[-1]["status"] == "running" and bool(snapshots[-1]["steps"])

    wait_until(a_step_is_running, 10, "a step to be running")
    running = snapshots[-1]
    # The steps that have started are listed; the plan names every step, started or not.
    current = running["steps"][-1]
    assert current["status"] == "running"
    assert current["started_at"] is not None and is_iso_utc(current["started_at"])
    assert current["finished_at"] is None
    assert running["finished_at"] is None
    assert running["output"] is None
    assert [s["name"] for s in running["plan"]][: len(running["steps"])] == [s["node_id"] for s in running["steps"]]
    assert len(running["plan"]) == 4

    done = wait_finished(slow_demo_app.client, run_id)

    assert set(done) >= {"run_id", "scenario_id", "status", "message", "input", "steps"}
    assert done["status"] == "success"
    assert done["message"] == ""
    assert done["input"] == NEWS_INPUT
    assert [s["node_id"] for s in done["steps"]] == [
        "fetch_article",
        "search_news_sources",
        "pick_earliest",
        "trace_citations",
    ]
    for step in done["steps"]:
        assert set(step) >= {"node_id", "status", "started_at", "finished_at", "message"}
        assert step["status"] == "success"
        assert step["message"] == ""
        assert is_iso_utc(step["started_at"]) and is_iso_utc(step["finished_at"])
        assert step["started_at"] <= step["finished_at"]
    earliest = done["steps"][2]["output"]["earliest"][0]
    assert earliest["url"] == "https://notes.example.net/2024/03/05/lighthouse-cottage-reading-room"


def test_failed_run_snapshot_names_the_failing_step(demo_app: InProcessApp) -> None:
    run = run_to_end(demo_app.client, OUTLET, {"domain": "nowhere.example.com"})

    assert run["status"] == "failed"
    assert run["message"].startswith("Step 'lookup_outlet' failed:")
    assert "Unknown outlet: nowhere.example.com" in run["message"]
    assert run["output"] is None
    # Later steps never ran: skipped, saying why, never started.
    assert [(s["node_id"], s["status"]) for s in run["steps"]] == [
        ("lookup_outlet", "failed"),
        ("list_articles", "skipped"),
        ("coverage_stats", "skipped"),
    ]
    assert "Unknown outlet: nowhere.example.com" in run["steps"][0]["message"]
    for skipped in run["steps"][1:]:
        assert skipped["message"] == "Not run: step 'lookup_outlet' failed"
        assert skipped["started_at"] is None


def test_workflow_snapshot_has_the_output_the_plan_and_each_steps_dependencies(demo_app: InProcessApp) -> None:
    on_disk = json.loads((PROJECT_ROOT / "scenarios" / f"{ORIGIN_CHECK}.json").read_text(encoding="utf-8"))

    run = run_to_end(demo_app.client, ORIGIN_CHECK, NEWS_INPUT)

    # The archive never captured this article: a failure the scenario tolerates.
    assert run["status"] == "success"
    assert run["message"] == "Finished with 1 tolerated failure(s): archive"
    assert run["output"]["first_report"] == FIRST_REPORT
    assert run["output"]["is_first_report"] is False
    assert run["output"]["archived_copy"] is None
    assert [planned["name"] for planned in run["plan"]] == [step["name"] for step in on_disk["steps"]]
    assert [s["node_id"] for s in run["steps"]] == [step["name"] for step in on_disk["steps"]]
    for step, planned in zip(run["steps"], run["plan"], strict=True):
        assert step["depends_on"] == planned["depends_on"]
        assert (step["attempt"], step["max_attempts"]) == (1, 1)
        assert step["item_count"] is None
    steps = {s["node_id"]: s for s in run["steps"]}
    assert steps["trace"]["depends_on"] == ["article", "earliest"]
    assert steps["archive"]["status"] == "failed"
    assert "never captured" in steps["archive"]["message"]
    assert steps["trace"]["status"] == "success"


def test_for_each_snapshot_counts_its_items(demo_app: InProcessApp) -> None:
    run = run_to_end(demo_app.client, STORY_ORIGINS, {"domain": "daily.example.com"})

    assert run["status"] == "success", run["message"]
    steps = {s["node_id"]: s for s in run["steps"]}
    articles = steps["articles"]["output"]["articles"]
    related = steps["related"]
    assert len(articles) > 1
    assert (related["item_count"], related["items_done"], related["items_failed"]) == (len(articles), len(articles), 0)
    assert (related["progress"], related["total"]) == (len(articles), len(articles))
    assert related["input"] is None
    assert len(related["output"]) == len(articles)
    assert run["output"]["articles"] == [article["url"] for article in articles]


def test_a_run_recorded_before_plans_shows_the_steps_it_recorded(make_app: Callable[..., InProcessApp]) -> None:
    app = make_app(history=False)
    # The events a run wrote before runs recorded their plan, attempts and output.
    recorded = [
        {"type": "run_started", "scenario_id": OUTLET, "started_at": "2026-01-05T10:00:00.000+00:00"},
        {"type": "step_started", "step_name": "lookup_outlet", "index": 0,
         "started_at": "2026-01-05T10:00:00.002+00:00", "input": {"domain": "nowhere.example.com"}},
        {"type": "step_finished", "step_name": "lookup_outlet", "index": 0, "status": "failed",
         "started_at": "2026-01-05T10:00:00.002+00:00", "finished_at": "2026-01-05T10:00:00.120+00:00",
         "message": "Unknown outlet: nowhere.example.com", "output": None, "content": None},
        {"type": "run_finished", "status": "failed", "finished_at": "2026-01-05T10:00:00.121+00:00",
         "message": "Step 'lookup_outlet' failed: Unknown outlet: nowhere.example.com"},
    ]

    async def record_old_run() -> str:
        record = app.state["runs"].create(OUTLET, {"domain": "nowhere.example.com"})
        for event in recorded:
            record.emit(event)
        return record.run_id

    run = get_run(app.client, app.call(record_old_run()))

    assert (run["status"], run["plan"], run["output"]) == ("failed", None, None)
    (step,) = run["steps"]
    assert (step["node_id"], step["status"], step["attempt"]) == ("lookup_outlet", "failed", 1)
    assert (step["depends_on"], step["max_attempts"]) == (None, None)


# --- Scenarios, tools, health -------------------------------------------------------------------


def test_list_scenarios(demo_app: InProcessApp) -> None:
    response = demo_app.get("/api/scenarios")

    assert response.status_code == 200
    scenarios = {s["id"]: s for s in response.json()}
    assert set(scenarios) == {NEWS, OUTLET, ORIGIN_CHECK, STORY_ORIGINS, "outlet_brief_approval_v2"}
    for scenario in scenarios.values():
        assert set(scenario) >= {"id", "name", "description", "input_schema"}
        assert scenario["name"] and scenario["description"]
        assert scenario["input_schema"]["type"] == "object"
    assert scenarios[NEWS]["input_schema"]["required"] == ["url"]


def test_get_scenario_is_the_files_json(demo_app: InProcessApp) -> None:
    response = demo_app.get(f"/api/scenarios/{NEWS}")

    assert response.status_code == 200
    on_disk = json.loads((PROJECT_ROOT / "scenarios" / f"{NEWS}.json").read_text(encoding="utf-8"))
    assert response.json() == on_disk


def test_tools_name_their_server(demo_app: InProcessApp) -> None:
    response = demo_app.get("/api/tools")

    assert response.status_code == 200
    tools = response.json()
    assert {t["name"] for t in tools} == DEMO_TOOLS
    for tool in tools:
        assert set(tool) >= {"name", "description", "input_schema", "server"}
        assert tool["server"] == "demo"
        assert tool["description"]
        assert tool["input_schema"]["type"] == "object"


def test_healthz_reports_each_server(demo_app: InProcessApp) -> None:
    demo_app.wait_ready()

    response = demo_app.get("/healthz")

    assert response.status_code == 200
    health = response.json()
    assert health["status"] == "ok"
    assert health["servers"] == {
        "demo": {"state": "ready", "transport": "stdio", "tools": len(DEMO_TOOLS), "error": None}
    }


# --- OpenAPI and /docs ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def openapi(demo_app: InProcessApp) -> dict[str, Any]:
    response = demo_app.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def is_api_route(path: str) -> bool:
    return path.startswith("/api/") or path == "/healthz"


def test_openapi_documents_exactly_the_served_api_routes(demo_app: InProcessApp, openapi: dict[str, Any]) -> None:
    documented = {(path, method.upper()) for path, ops in openapi["paths"].items() for method in ops}
    served = {
        (route.path, method)
        for route in demo_app.app.routes
        if isinstance(route, Route) and is_api_route(route.path)
        for method in route.methods or ()
        if method != "HEAD"
    }

    # Both ways: a route the app serves is documented, and the document promises no route it does not serve.
    assert documented == served
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            assert operation["summary"], (path, method)
            for status, answer in operation["responses"].items():
                for media in answer.get("content", {}).values():
                    assert "example" in media or "examples" in media, (path, method, status)


def test_openapi_never_shows_placeholder_examples(demo_app: InProcessApp) -> None:
    text = demo_app.get("/openapi.json").text

    # Generators fill example-less free-form objects with "additionalProp1"; the JSON Schema keyword
    # "additionalProperties" is of course fine.
    assert re.findall(r"additionalProp(?!erties)\w*", text) == []


def test_openapi_every_model_has_examples(openapi: dict[str, Any]) -> None:
    models = openapi["components"]["schemas"]
    missing = [name for name, schema in models.items() if not schema.get("examples")]

    assert missing == []


def test_openapi_examples_match_their_models(openapi: dict[str, Any]) -> None:
    models = openapi["components"]["schemas"]
    for name, schema in models.items():
        document = {**schema, "components": {"schemas": models}}
        for example in schema.get("examples", []):
            errors = [e.message for e in jsonschema.Draft202012Validator(document).iter_errors(example)]
            assert errors == [], (name, example)


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.data_urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in {"src", "href"}:
                self.urls.append(value)
            elif name.startswith("data-") and name.endswith("url"):
                self.data_urls.append(value)


def test_docs_load_only_local_assets(demo_app: InProcessApp) -> None:
    page_url = f"{demo_app.client.base_url}/docs"
    response = demo_app.get(page_url)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assets = _Assets()
    assets.feed(response.text)
    assert any(url.endswith(".js") for url in assets.urls)
    assert any(url.endswith(".css") for url in assets.urls)
    for url in assets.urls + assets.data_urls:
        absolute = urljoin(page_url, url)
        assert urlsplit(absolute).netloc == urlsplit(page_url).netloc, url
        fetched = demo_app.get(absolute)
        assert fetched.status_code == 200, url
        assert "sourceMappingURL" not in fetched.text, url


# --- Bad requests -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    method: str
    path: str
    status: int
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    loc: list[Any] | None = None  # the first error's loc, for a 422
    type: str | None = None  # the first error's type, for a 422
    says: str | None = None  # text the detail must contain


def post(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


BAD_REQUESTS = {
    "malformed JSON": Bad("POST", "/api/runs", 422, b'{"scenario_id": ', type="json_invalid"),
    "empty body": Bad("POST", "/api/runs", 422, b"", type="json_invalid"),
    "body is a list": Bad("POST", "/api/runs", 422, post([1]), loc=["body"]),
    "body is a string": Bad("POST", "/api/runs", 422, post("x"), loc=["body"]),
    "body is null": Bad("POST", "/api/runs", 422, post(None), loc=["body"]),
    "no scenario_id": Bad("POST", "/api/runs", 422, post({"input": {}}), loc=["body", "scenario_id"]),
    "input is a list": Bad(
        "POST", "/api/runs", 422, post({"scenario_id": OUTLET, "input": [1]}), loc=["body", "input"]
    ),
    "input is a string": Bad(
        "POST", "/api/runs", 422, post({"scenario_id": OUTLET, "input": "x"}), loc=["body", "input"]
    ),
    "unknown scenario": Bad(
        "POST", "/api/runs", 404, post({"scenario_id": "no_such_scenario", "input": {}}), says="no_such_scenario"
    ),
    "input misses a required field": Bad(
        "POST", "/api/runs", 422, post({"scenario_id": OUTLET, "input": {}}), loc=["body", "input", "domain"],
        says="'domain' is a required property",
    ),
    "input field of the wrong type": Bad(
        "POST", "/api/runs", 422, post({"scenario_id": OUTLET, "input": {"domain": 5}}),
        loc=["body", "input", "domain"], says="not of type 'string'",
    ),
    "input field too short": Bad(
        "POST", "/api/runs", 422, post({"scenario_id": OUTLET, "input": {"domain": ""}}),
        loc=["body", "input", "domain"],
    ),
    "input with an unexpected field": Bad(
        "POST", "/api/runs", 422, post({"scenario_id": OUTLET, "input": {"domain": "daily.example.com", "x": 1}}),
        loc=["body", "input", "x"], says="'x' was unexpected",
    ),
    "unknown run": Bad("GET", "/api/runs/no-such-run", 404, says="no-such-run"),
    "events of an unknown run": Bad("GET", "/api/runs/no-such-run/events", 404, says="no-such-run"),
    "unknown scenario id": Bad("GET", "/api/scenarios/no_such_scenario", 404, says="no_such_scenario"),
    "Last-Event-ID not a number": Bad(
        "GET", "/api/runs/{run}/events", 422, headers={"Last-Event-ID": "abc"}, loc=["header", "Last-Event-ID"]
    ),
    "Last-Event-ID negative": Bad(
        "GET", "/api/runs/{run}/events", 422, headers={"Last-Event-ID": "-1"}, loc=["header", "Last-Event-ID"]
    ),
    "last_event_id not a number": Bad(
        "GET", "/api/runs/{run}/events?last_event_id=3.5", 422, loc=["query", "last_event_id"]
    ),
}


@pytest.mark.parametrize("case", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_bad_request(demo_app: InProcessApp, finished_run: dict[str, Any], case: Bad) -> None:
    path = case.path.replace("{run}", finished_run["run_id"])
    headers = {"Content-Type": "application/json", **case.headers} if case.body is not None else case.headers
    response = demo_app.client.request(case.method, path, content=case.body, headers=headers)

    assert response.status_code == case.status, response.text
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    if case.status == 422:
        assert isinstance(detail, list) and detail
        for error in detail:
            assert set(error) == {"loc", "msg", "type"}
            assert error["msg"]
        if case.loc is not None:
            assert detail[0]["loc"] == case.loc
        if case.type is not None:
            assert detail[0]["type"] == case.type
    else:
        assert isinstance(detail, str)
    if case.says is not None:
        assert case.says in json.dumps(detail)


def test_wrong_method_is_405(demo_app: InProcessApp) -> None:
    response = demo_app.client.delete("/api/scenarios")

    assert response.status_code == 405
    assert "detail" in response.json()

