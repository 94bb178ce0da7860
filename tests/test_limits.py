"""Input limits and strict JSON: what a request or a tool result may hold, and what the service answers.

One app in-process with `tests/servers/nasty.py`, an MCP server whose tools answer with hostile
results, and scenarios of the tests' own. Every refused request is followed by a run that succeeds:
one bad request must never wedge the service.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import pytest
from inprocess import BASE_URL, InProcessApp, in_process
from runs import get_run, start_run, wait_finished
from sse import frames, parse_text
from ui_support import form_token

NASTY_SERVER = Path(__file__).resolve().parent / "servers" / "nasty.py"
MIB = 1024 * 1024
CHUNK = 64 * 1024


def scenario(scenario_id: str, tool: str, step_input: dict[str, Any], schema: dict[str, Any] | None = None) -> dict:
    return {
        "schema_version": "1",
        "scenario_id": scenario_id,
        "name": scenario_id.replace("_", " ").capitalize(),
        "input_schema": schema or {"type": "object"},
        "steps": [{"name": "call", "tool": tool, "input": step_input}],
    }


SCENARIOS = [
    # Any input; its `value` comes back as the output.
    scenario("keep", "echo", {"value": {"from": "input.value"}}),
    scenario(
        "greet", "echo", {"value": {"from": "input.name"}},
        {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
    ),
    scenario("nan", "non_finite", {"number": "nan"}),
    scenario("infinity", "non_finite", {"number": "-inf"}),
    scenario("surrogate", "surrogate_text", {}),
    scenario("deep", "deep", {"levels": 65}),
    scenario("deep_text", "deep_text", {"levels": 100_000}),
    scenario("big", "big", {"size": 3 * MIB}),
    scenario("big_image", "big_image", {"size": 3 * MIB}),
    scenario("shout", "shout", {"size": 5_000}),
    scenario("nan_progress", "nan_progress", {}),
]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessApp]:
    folder = tmp_path_factory.mktemp("limits")
    scenarios = folder / "scenarios"
    scenarios.mkdir()
    for each in SCENARIOS:
        (scenarios / f"{each['scenario_id']}.json").write_text(json.dumps(each))
    config = folder / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"nasty": {"command": sys.executable, "args": [str(NASTY_SERVER)]}}}))
    with in_process(folder, mcp_config=config, scenarios=scenarios) as started:
        yield started


def run_count(app: InProcessApp) -> int:
    response = app.get("/api/runs", params={"limit": 200})
    assert response.status_code == 200, response.text
    return len(response.json()["runs"])


def assert_still_starts_runs(app: InProcessApp) -> None:
    run = wait_finished(app.client, start_run(app.client, "keep", {"value": {"still": "fine"}})["run_id"])
    assert run["status"] == "success", run
    assert run["steps"][0]["output"] == {"value": {"still": "fine"}}


def nested_body(depth: int) -> bytes:
    """A POST /api/runs body nested exactly `depth` levels deep (the body itself is level 1)."""
    value: Any = []
    for _ in range(depth - 3):
        value = [value]
    return json.dumps({"scenario_id": "keep", "input": {"value": value}}).encode()


# --- Bodies sent as they are, or streamed ---------------------------------------------------------


@dataclass
class Streamed:
    response: httpx.Response
    chunks_read: int


def post_streamed(
    app: InProcessApp, path: str, chunks: int, headers: dict[str, str], chunk: bytes = b"x" * CHUNK
) -> Streamed:
    """POST `chunks` chunks, read by the app only as it asks for them; how many it took."""
    taken = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal taken
        for _ in range(chunks):
            taken += 1
            yield chunk

    async def with_state(scope: Any, receive: Any, send: Any) -> None:
        await app.app({**scope, "state": dict(app.state)}, receive, send)

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=with_state)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            response = await client.post(path, content=body(), headers=headers)
            await response.aread()
            return response

    return Streamed(app.call(send()), taken)


def test_a_body_declared_larger_than_the_limit_is_refused_before_it_is_read(app: InProcessApp) -> None:
    before = run_count(app)
    hundred_mb = 100 * MIB // CHUNK
    headers = {"Content-Type": "application/json", "Content-Length": str(100 * MIB)}

    sent = post_streamed(app, "/api/runs", hundred_mb, headers)

    assert sent.response.status_code == 413
    assert sent.response.json() == {
        "detail": "Request body too large: the limit is 1,048,576 bytes, and this one has 104,857,600 bytes."
    }
    assert sent.chunks_read == 0
    assert run_count(app) == before
    assert_still_starts_runs(app)


def test_a_chunked_body_is_cut_off_as_soon_as_it_passes_the_limit(app: InProcessApp) -> None:
    before = run_count(app)

    sent = post_streamed(app, "/api/runs", 100 * MIB // CHUNK, {"Content-Type": "application/json"})

    assert sent.response.status_code == 413
    assert "Request body too large: the limit is 1,048,576 bytes" in sent.response.json()["detail"]
    # 1 MiB is 16 chunks: the 17th passes the limit, and nothing after it is read.
    assert sent.chunks_read == MIB // CHUNK + 1
    assert run_count(app) == before
    assert_still_starts_runs(app)


def test_a_huge_form_is_refused_with_the_error_page(app: InProcessApp) -> None:
    before = run_count(app)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}

    declared = app.post("/scenarios/keep", content=b"in=" + b"1" * (2 * MIB), headers=headers)
    streamed = post_streamed(app, "/scenarios/keep", 100 * MIB // CHUNK, headers, chunk=b"a" * CHUNK)

    for response in (declared, streamed.response):
        assert response.status_code == 413
        assert response.headers["content-type"].startswith("text/html")
        assert "Too much was sent" in response.text
        assert "the limit is 1,048,576 bytes" in response.text
    assert streamed.chunks_read == MIB // CHUNK + 1
    assert run_count(app) == before
    assert_still_starts_runs(app)


# --- Strict JSON bodies -----------------------------------------------------------------------------


@dataclass
class Bad:
    body: bytes
    status: int
    says: str
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    loc: list[Any] | None = None
    type: str | None = None


def keep_input(raw_value: str) -> bytes:
    """A body whose input value is `raw_value`, JSON text written as is (escapes and all)."""
    return b'{"scenario_id": "keep", "input": {"value": ' + raw_value.encode() + b"}}"


BAD_BODIES = {
    "lone surrogate": Bad(
        b'{"scenario_id": "keep", "input": {"url": "\\ud800"}}', 422, "lone surrogate (\\ud800)",
        loc=["body", "input", "url"], type="json_lone_surrogate",
    ),
    "lone surrogate in a key": Bad(
        keep_input('{"\\udc00": 1}'), 422, "lone surrogate (\\udc00)",
        loc=["body", "input", "value", "\ufffd"], type="json_lone_surrogate",
    ),
    "NaN": Bad(keep_input("NaN"), 422, "NaN is not valid JSON", loc=["body", "input", "value"], type="json_non_finite"),
    "Infinity": Bad(
        keep_input("[1, Infinity]"), 422, "Infinity is not valid JSON", loc=["body", "input", "value", 1],
        type="json_non_finite",
    ),
    "-Infinity": Bad(keep_input("-Infinity"), 422, "-Infinity is not valid JSON", type="json_non_finite"),
    "a number too large for a float": Bad(keep_input("1e999"), 422, "Infinity is not valid JSON"),
    "an integer of 5000 digits": Bad(keep_input("9" * 5000), 422, "Exceeds the limit", type="json_invalid"),
    "nested 65 deep": Bad(
        nested_body(65), 422, "JSON nested deeper than 64 levels (line 1, column 106)", loc=["body", 105],
        type="json_too_deep",
    ),
    "[ × 100,000": Bad(
        b"[" * 100_000, 422, "JSON nested deeper than 64 levels (line 1, column 65)", loc=["body", 64],
        type="json_too_deep",
    ),
    "not UTF-8": Bad(
        b'{"scenario_id": "keep", "input": {"value": "caf\xe9"}}', 422, "Not UTF-8: byte 47",
        loc=["body", 47], type="json_invalid",
    ),
    "text/plain": Bad(
        keep_input("1"), 415, "Content-Type: application/json (Content-Type text/plain was given)",
        headers={"Content-Type": "text/plain"},
    ),
    "form encoded": Bad(
        keep_input("1"), 415, "Content-Type application/x-www-form-urlencoded was given",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ),
    "no Content-Type": Bad(keep_input("1"), 415, "(no Content-Type was given)", headers={}),
    "latin-1": Bad(
        keep_input("1"), 415, "UTF-8 JSON (charset=latin-1 was given)",
        headers={"Content-Type": "application/json; charset=latin-1"},
    ),
}


@pytest.mark.parametrize("case", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_a_body_that_is_not_strict_json_is_refused_and_nothing_runs(app: InProcessApp, case: Bad) -> None:
    before = run_count(app)

    response = app.post("/api/runs", content=case.body, headers=case.headers)

    assert response.status_code == case.status, response.text
    detail = response.json()["detail"]
    if case.status == 422:
        assert len(detail) == 1 and set(detail[0]) == {"loc", "msg", "type"}
        assert case.says in detail[0]["msg"]
        if case.loc is not None:
            assert detail[0]["loc"] == case.loc
        if case.type is not None:
            assert detail[0]["type"] == case.type
    else:
        assert case.says in detail
    assert run_count(app) == before
    assert_still_starts_runs(app)


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "application/vnd.stepline+json"]
)
def test_every_json_content_type_is_taken(app: InProcessApp, content_type: str) -> None:
    response = app.post("/api/runs", content=keep_input('"typed"'), headers={"Content-Type": content_type})

    assert response.status_code == 202, response.text
    assert wait_finished(app.client, response.json()["run_id"])["status"] == "success"


def test_input_nested_to_the_limit_is_taken_and_runs(app: InProcessApp) -> None:
    response = app.post("/api/runs", content=nested_body(64), headers={"Content-Type": "application/json"})

    assert response.status_code == 202, response.text
    run = wait_finished(app.client, response.json()["run_id"])
    assert run["status"] == "success", run
    assert run["steps"][0]["output"] == {"value": json.loads(nested_body(64))["input"]["value"]}
    assert app.get(f"/runs/{run['run_id']}").status_code == 200


# --- Forms ---------------------------------------------------------------------------------------------


def post_form(app: InProcessApp, scenario_id: str, fields: dict[str, str]) -> httpx.Response:
    token = form_token(app.get(f"/scenarios/{scenario_id}").text)
    return app.post(f"/scenarios/{scenario_id}", data={"_csrf": token, **fields})


def field_errors(html: str) -> list[str]:
    """The errors listed beside fields (each `<li>` under a `field-errors` list)."""
    lists = re.findall(r'<ul class="field-errors"[^>]*>(.*?)</ul>', html, re.DOTALL)
    return [unescape(item).strip() for each in lists for item in re.findall(r"</span>([^<]*)</li>", each)]


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ('{"value": NaN}', "NaN is not valid JSON: numbers must be finite, at value."),
        ('{"value": [1, -Infinity]}', "-Infinity is not valid JSON: numbers must be finite, at value.1."),
        ('{"value": "\\ud800"}', "A lone surrogate (\\ud800) is not valid Unicode, at value."),
        ("[" * 65 + "]" * 65, "JSON nested deeper than 64 levels (line 1, column 65)."),
    ],
    ids=["NaN", "-Infinity", "lone surrogate", "nested 65 deep"],
)
def test_a_json_box_that_is_not_strict_json_comes_back_with_its_error(
    app: InProcessApp, typed: str, says: str
) -> None:
    before = run_count(app)

    response = post_form(app, "keep", {"in": typed})

    assert response.status_code == 422
    assert any(says in error for error in field_errors(response.text)), field_errors(response.text)
    assert unescape(typed) in unescape(response.text)  # shown again as typed, to correct it
    assert run_count(app) == before
    assert_still_starts_runs(app)


def test_text_decoded_into_lone_surrogates_is_shown_replaced_and_refused(app: InProcessApp) -> None:
    """A multipart form may name any charset; `unicode_escape` turns the text `\\ud800` into a lone surrogate."""
    token = form_token(app.get("/scenarios/greet").text)
    boundary = "limits"
    parts = [("_csrf", token), ("in.name", "\\ud800 the first")]
    body = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n' for name, value in parts
    ) + f"--{boundary}--\r\n"
    headers = {"Content-Type": f"multipart/form-data; charset=unicode_escape; boundary={boundary}"}

    response = app.post("/scenarios/greet", content=body.encode(), headers=headers)

    assert response.status_code == 422
    assert field_errors(response.text) == [
        "This field holds characters that are not valid Unicode (lone surrogates); retype it."
    ]
    assert 'value="\ufffd the first"' in response.text
    assert_still_starts_runs(app)


def test_a_form_token_that_is_not_ascii_is_an_expired_form(app: InProcessApp) -> None:
    response = app.post("/scenarios/greet", data={"_csrf": "1.\u00e9t\u00e9", "in.name": "Ada"})

    assert response.status_code == 403
    assert "This form had expired" in response.text


# --- Query parameters and methods ---------------------------------------------------------------------


def test_an_empty_status_is_refused_by_the_api_and_means_any_on_the_page(app: InProcessApp) -> None:
    api = app.get("/api/runs", params={"status": ""})
    page = app.get("/runs", params={"status": "", "scenario_id": ""})

    assert api.status_code == 422
    assert [error["loc"] for error in api.json()["detail"]] == [["query", "status"]]
    assert "'queued', 'running', 'waiting', 'success', 'failed' or 'cancelled'" in api.json()["detail"][0]["msg"]
    assert page.status_code == 200


def test_a_cursor_of_deeply_nested_json_is_refused(app: InProcessApp) -> None:
    cursor = base64.urlsafe_b64encode(b"[" * 3000).decode().rstrip("=")

    api = app.get("/api/runs", params={"cursor": cursor})
    page = app.get("/runs", params={"cursor": cursor})

    assert api.status_code == 422
    assert [error["loc"] for error in api.json()["detail"]] == [["query", "cursor"]]
    assert page.status_code == 422
    assert "This link to older runs is not valid" in page.text


@pytest.mark.parametrize(
    ("method", "path", "allow", "html"),
    [
        ("DELETE", "/api/runs", "GET, HEAD, POST", False),
        ("PUT", "/scenarios/keep", "GET, HEAD, POST", True),
        ("GET", "/runs/any-run/cancel", "POST", True),
    ],
)
def test_a_405_allows_every_method_of_its_path(
    app: InProcessApp, method: str, path: str, allow: str, html: bool
) -> None:
    response = app.client.request(method, path)

    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert response.headers["content-type"].startswith("text/html" if html else "application/json")


# --- Tool results -------------------------------------------------------------------------------------


def run_of(app: InProcessApp, scenario_id: str) -> dict[str, Any]:
    return wait_finished(app.client, start_run(app.client, scenario_id)["run_id"])


def stream_of(app: InProcessApp, run_id: str) -> list[dict[str, Any]]:
    response = app.get(f"/api/runs/{run_id}/events")
    assert response.status_code == 200
    return [frame.json() for frame in frames(parse_text(response.text))]


def finished_step(events: list[dict[str, Any]]) -> dict[str, Any]:
    return next(event for event in events if event["type"] == "step_finished")


@pytest.mark.parametrize(
    ("scenario_id", "message"),
    [
        ("nan", "'non_finite' returned output that cannot be stored (NaN is not valid JSON: numbers must be finite, "
                "at score)"),
        ("infinity", "'non_finite' returned output that cannot be stored (-Infinity is not valid JSON: numbers must "
                     "be finite, at score)"),
        ("surrogate", "'surrogate_text' returned output that cannot be stored (a lone surrogate (\\ud800) is not "
                      "valid Unicode, at name)"),
        ("deep", "'deep' returned output nested deeper than 64 levels"),
        ("deep_text", "'deep_text' returned output nested deeper than 64 levels"),
    ],
)
def test_an_output_json_cannot_hold_fails_its_step_and_harms_nothing(
    app: InProcessApp, scenario_id: str, message: str
) -> None:
    run = run_of(app, scenario_id)

    assert run["status"] == "failed"
    assert run["message"] == f"Step 'call' failed: {message}"
    assert [(s["status"], s["message"], s["output"]) for s in run["steps"]] == [("failed", message, None)]
    events = stream_of(app, run["run_id"])
    assert (finished_step(events)["status"], finished_step(events)["message"]) == ("failed", message)
    assert events[-1]["type"] == "run_finished"
    page = app.get(f"/runs/{run['run_id']}")
    assert page.status_code == 200
    assert message in unescape(page.text)
    history = app.get("/healthz").json()["history"]
    assert history["state"] == "ok", history
    assert_still_starts_runs(app)
    assert get_run(app.client, run["run_id"])["status"] == "failed"


def test_an_output_too_big_is_kept_truncated_and_marked(app: InProcessApp) -> None:
    run = run_of(app, "big")

    assert run["status"] == "success"
    step = run["steps"][0]
    size = len(json.dumps({"blob": "x" * 3 * MIB}, separators=(",", ":")))
    assert step["status"] == "success"
    assert step["message"].startswith(f"Output truncated: {size:,} bytes as JSON, more than the 1,048,576 kept")
    assert step["output"] == {"truncated": True, "bytes": size, "preview": '{"blob":"' + "x" * 4087}
    event = finished_step(stream_of(app, run["run_id"]))
    assert event["output"] == step["output"]
    assert len(json.dumps(event)) < 64 * 1024
    assert app.get(f"/runs/{run['run_id']}").status_code == 200


def test_raw_content_too_big_is_kept_truncated_and_marked(app: InProcessApp) -> None:
    run = run_of(app, "big_image")

    step = run["steps"][0]
    assert (run["status"], step["status"], step["output"]) == ("success", "success", {"image": "attached"})
    assert step["message"].startswith("Raw content truncated: ")
    content = finished_step(stream_of(app, run["run_id"]))["content"]
    assert content["truncated"] is True and content["bytes"] > 4 * MIB
    assert content["preview"].startswith('[{"type":"image","data":"iVBORw')


def test_an_error_message_is_kept_short(app: InProcessApp) -> None:
    run = run_of(app, "shout")

    message = run["steps"][0]["message"]
    assert run["status"] == "failed"
    assert len(message) < 4100
    assert message.endswith(" more characters)")
    assert "EEEE" in message


def test_progress_that_is_not_a_number_is_left_out(app: InProcessApp) -> None:
    run = run_of(app, "nan_progress")

    assert run["status"] == "success"
    progress = [event for event in stream_of(app, run["run_id"]) if event["type"] == "step_progress"]
    assert [(e["progress"], e["total"], e["message"]) for e in progress] == [(None, None, "counting")]
