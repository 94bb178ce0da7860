"""The JSON API over real HTTP: every endpoint of the contract, and a table of bad requests."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import jsonschema
import pytest
from conftest import DEMO_TOOLS, PROJECT_ROOT, StepServer, start_server
from runs import get_run, run_to_end, start_run, wait_finished

from web import api

NEWS = "news_source_discovery_v1"
NEWS_INPUT = {"url": "https://signal.example/culture/lighthouse-library-explainer"}
OUTLET = "outlet_profile_v1"


def is_iso_utc(value: str) -> bool:
    stamp = datetime.fromisoformat(value)
    return stamp.utcoffset() is not None


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StepServer]:
    """Demo tools that take 0.3 s each, so a run can be seen while it runs."""
    server = start_server(tmp_path_factory.mktemp("slow"), env={"STEPLINE_DEMO_DELAY": "0.3"})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def finished_run(demo_server: StepServer) -> dict[str, Any]:
    return run_to_end(demo_server.url, NEWS, NEWS_INPUT)


# --- POST /api/runs and GET /api/runs/{run_id} ------------------------------------------------


def test_post_run_answers_202_with_the_queued_run(demo_server: StepServer) -> None:
    response = httpx.post(f"{demo_server.url}/api/runs", json={"scenario_id": NEWS, "input": NEWS_INPUT})

    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"run_id", "scenario_id", "status", "input", "started_at"}
    assert body["scenario_id"] == NEWS
    assert body["status"] == "queued"
    assert body["input"] == NEWS_INPUT
    assert is_iso_utc(body["started_at"])
    assert get_run(demo_server.url, body["run_id"])["run_id"] == body["run_id"]


def test_post_run_without_input_uses_an_empty_object(demo_server: StepServer) -> None:
    # `input` defaults to {}, which this scenario's schema refuses, naming the missing field.
    response = httpx.post(f"{demo_server.url}/api/runs", json={"scenario_id": OUTLET})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "input", "domain"]


def test_run_snapshot_while_running_then_finished(slow_server: StepServer) -> None:
    run_id = start_run(slow_server.url, NEWS, NEWS_INPUT)["run_id"]

    deadline = time.monotonic() + 10
    while True:
        running = get_run(slow_server.url, run_id)
        if running["status"] == "running" and running["steps"]:
            break
        assert running["status"] in {"queued", "running"}, running
        assert time.monotonic() < deadline, running
        time.sleep(0.02)
    current = running["steps"][-1]
    assert current["status"] == "running"
    assert current["started_at"] is not None and is_iso_utc(current["started_at"])
    assert current["finished_at"] is None
    assert running["finished_at"] is None

    done = wait_finished(slow_server.url, run_id)

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


def test_failed_run_snapshot_names_the_failing_step(demo_server: StepServer) -> None:
    run = run_to_end(demo_server.url, OUTLET, {"domain": "nowhere.example.com"})

    assert run["status"] == "failed"
    assert run["message"].startswith("Step 'lookup_outlet' failed:")
    assert "Unknown outlet: nowhere.example.com" in run["message"]
    # Later steps never ran, so they are not in the snapshot.
    assert [(s["node_id"], s["status"]) for s in run["steps"]] == [("lookup_outlet", "failed")]
    assert "Unknown outlet: nowhere.example.com" in run["steps"][0]["message"]


# --- Scenarios, tools, health -------------------------------------------------------------------


def test_list_scenarios(demo_server: StepServer) -> None:
    response = httpx.get(f"{demo_server.url}/api/scenarios")

    assert response.status_code == 200
    scenarios = {s["id"]: s for s in response.json()}
    assert set(scenarios) == {NEWS, OUTLET}
    for scenario in scenarios.values():
        assert set(scenario) >= {"id", "name", "description", "input_schema"}
        assert scenario["name"] and scenario["description"]
        assert scenario["input_schema"]["type"] == "object"
    assert scenarios[NEWS]["input_schema"]["required"] == ["url"]


def test_get_scenario_is_the_files_json(demo_server: StepServer) -> None:
    response = httpx.get(f"{demo_server.url}/api/scenarios/{NEWS}")

    assert response.status_code == 200
    on_disk = json.loads((PROJECT_ROOT / "scenarios" / f"{NEWS}.json").read_text(encoding="utf-8"))
    assert response.json() == on_disk


def test_tools_name_their_server(demo_server: StepServer) -> None:
    response = httpx.get(f"{demo_server.url}/api/tools")

    assert response.status_code == 200
    tools = response.json()
    assert {t["name"] for t in tools} == DEMO_TOOLS
    for tool in tools:
        assert set(tool) >= {"name", "description", "input_schema", "server"}
        assert tool["server"] == "demo"
        assert tool["description"]
        assert tool["input_schema"]["type"] == "object"


def test_healthz_reports_each_server(demo_server: StepServer) -> None:
    response = httpx.get(f"{demo_server.url}/healthz")

    assert response.status_code == 200
    health = response.json()
    assert health["status"] == "ok"
    assert health["servers"] == {
        "demo": {"state": "ready", "transport": "stdio", "tools": len(DEMO_TOOLS), "error": None}
    }


# --- OpenAPI and /docs ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def openapi(demo_server: StepServer) -> dict[str, Any]:
    response = httpx.get(f"{demo_server.url}/openapi.json")
    assert response.status_code == 200
    return response.json()


def test_openapi_describes_every_api_route(openapi: dict[str, Any]) -> None:
    documented = {(path, method.upper()) for path, ops in openapi["paths"].items() for method in ops}
    served = {(route.path, method) for route in api.routes for method in route.methods or () if method != "HEAD"}

    assert served <= documented
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            assert operation["summary"], (path, method)
            for status, answer in operation["responses"].items():
                for media in answer.get("content", {}).values():
                    assert "example" in media or "examples" in media, (path, method, status)


def test_openapi_never_shows_placeholder_examples(demo_server: StepServer) -> None:
    text = httpx.get(f"{demo_server.url}/openapi.json").text

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


def test_docs_load_only_local_assets(demo_server: StepServer) -> None:
    page_url = f"{demo_server.url}/docs"
    response = httpx.get(page_url)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assets = _Assets()
    assets.feed(response.text)
    assert any(url.endswith(".js") for url in assets.urls)
    assert any(url.endswith(".css") for url in assets.urls)
    for url in assets.urls + assets.data_urls:
        absolute = urljoin(page_url, url)
        assert urlsplit(absolute).netloc == urlsplit(page_url).netloc, url
        fetched = httpx.get(absolute)
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
def test_bad_request(demo_server: StepServer, finished_run: dict[str, Any], case: Bad) -> None:
    path = case.path.replace("{run}", finished_run["run_id"])
    headers = {"Content-Type": "application/json", **case.headers} if case.body is not None else case.headers
    response = httpx.request(case.method, f"{demo_server.url}{path}", content=case.body, headers=headers)

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


def test_wrong_method_is_405(demo_server: StepServer) -> None:
    response = httpx.delete(f"{demo_server.url}/api/scenarios")

    assert response.status_code == 405
    assert "detail" in response.json()

