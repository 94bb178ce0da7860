"""Pages, fragments, the run list and the API with values as deep and as large as a run may hold.

Run input may nest up to `max_json_depth` levels (64 by default, configurable to 200) and tool outputs
may be up to a few MB: every view of such a run answers 200, draws a bounded tree that collapses
deep parts, and links to the run's JSON for the whole value.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import PROJECT_ROOT
from inprocess import BASE_URL, InProcessApp, _WithLifespanState, in_process
from servers.nesting import nested
from ui_support import BehindProxy

from web.json_display import pretty_json
from web.templating import templates

NESTING_SERVER = Path(__file__).parent / "servers" / "nesting.py"
COLLAPSED = "nested deeper, see the"
MARKUP = "<script>window.__pwned=1</script>"
SCENARIOS = {
    # Takes any input and runs one trivial step: the run's input is what the page has to show.
    "keep_input": {
        "input_schema": {"type": "object"},
        "steps": [{"name": "small", "tool": "nest", "input": {"levels": 2}}],
    },
    # A deep tool result, then the same value sent to a tool as its argument.
    "deep_output": {
        "input_schema": {
            "type": "object",
            "properties": {"levels": {"type": "integer"}, "kind": {"type": "string"}},
        },
        "steps": [
            {
                "name": "nest",
                "tool": "nest",
                "input": {"levels": {"from": "input.levels"}, "kind": {"from": "input.kind"}},
            },
            {"name": "echo", "tool": "echo", "input": {"payload": {"from": "steps.nest.output"}}},
        ],
    },
    "big_output": {
        "input_schema": {"type": "object", "properties": {"items": {"type": "integer"}, "chars": {"type": "integer"}}},
        "steps": [
            {
                "name": "big",
                "tool": "big",
                "input": {"items": {"from": "input.items"}, "chars": {"from": "input.chars"}},
            },
        ],
    },
}


def write_setup(folder: Path) -> dict[str, Any]:
    scenarios = folder / "scenarios"
    scenarios.mkdir(parents=True)
    for scenario_id, body in SCENARIOS.items():
        scenario = {"schema_version": "1", "scenario_id": scenario_id, "name": scenario_id, "description": "", **body}
        (scenarios / f"{scenario_id}.json").write_text(json.dumps(scenario))
    config = folder / "mcp.json"
    server = {"command": sys.executable, "args": [str(NESTING_SERVER)], "cwd": str(PROJECT_ROOT)}
    config.write_text(json.dumps({"mcpServers": {"nesting": server}}))
    return {"scenarios": scenarios, "mcp_config": config}


@pytest.fixture(scope="module", params=[None, 200], ids=["default-depth", "depth-200"])
def app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessApp]:
    """An app with the nesting server, at the default depth limit or the highest one allowed."""
    folder = tmp_path_factory.mktemp("rendering-limits")
    settings = write_setup(folder)
    if request.param is not None:
        settings["max_json_depth"] = request.param
    with in_process(folder, **settings) as started:
        yield started


def depth_limit(app: InProcessApp) -> int:
    return app.settings.max_json_depth


def start(app: InProcessApp, scenario_id: str, run_input: dict[str, Any]) -> str:
    response = app.post("/api/runs", json={"scenario_id": scenario_id, "input": run_input})
    assert response.status_code == 202, response.text[:500]
    return response.json()["run_id"]


def start_deepest(app: InProcessApp, kind: str) -> tuple[str, dict[str, Any]]:
    """A run whose input nests as deeply as the app accepts: `max_json_depth` levels, the input object
    being the first (or one less, when the limit counts the request body's object that holds it)."""
    for levels in (depth_limit(app), depth_limit(app) - 1):
        run_input = {"deep": nested(levels - 1, kind), "note": MARKUP}
        response = app.post("/api/runs", json={"scenario_id": "keep_input", "input": run_input})
        if response.status_code == 202:
            return response.json()["run_id"], run_input
        assert response.status_code == 422, response.text[:500]
    raise AssertionError(f"no input nested {depth_limit(app) - 1} levels or more was accepted")


def finished_stream(app: InProcessApp, run_id: str) -> str:
    """The run page's live stream, read whole: it ends with the run."""
    response = app.get(f"/runs/{run_id}/stream")
    assert response.status_code == 200
    assert "event: run-finished" in response.text
    return response.text


@pytest.mark.parametrize("kind", ["object", "list"])
def test_every_view_of_a_run_with_input_nested_to_the_limit_answers(app: InProcessApp, kind: str) -> None:
    run_id, run_input = start_deepest(app, kind)
    stream = finished_stream(app, run_id)
    assert 'data-status="success"' in stream

    page = app.get(f"/runs/{run_id}")
    assert page.status_code == 200
    assert COLLAPSED in page.text
    assert f'href="/api/runs/{run_id}"' in page.text
    assert MARKUP not in page.text and "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page.text

    snapshot = app.get(f"/api/runs/{run_id}")
    assert snapshot.status_code == 200
    assert snapshot.json()["input"] == run_input

    listed = app.get("/api/runs", params={"limit": 200})
    assert listed.status_code == 200
    assert run_id in [run["run_id"] for run in listed.json()["runs"]]

    runs_page = app.get("/runs")
    assert runs_page.status_code == 200
    assert f"/runs/{run_id}" in runs_page.text


def test_long_strings_and_many_keys_are_cut_short_and_escaped(app: InProcessApp) -> None:
    long_text = MARKUP + "y" * 300_000
    many = {f"<b>key {index}</b>": index for index in range(5000)}
    run_id = start(app, "keep_input", {"text": long_text, "many": many})
    finished_stream(app, run_id)

    page = app.get(f"/runs/{run_id}")
    assert page.status_code == 200
    assert "more characters (see the JSON)" in page.text
    assert "… 4900 more keys (see the JSON)" in page.text
    assert "… truncated: the first 32 KB of" in page.text
    assert f'The whole value is in <a href="/api/runs/{run_id}">the run\'s JSON</a>' in page.text
    assert MARKUP not in page.text and "<b>key" not in page.text
    assert "&lt;b&gt;key 0&lt;/b&gt;" in page.text
    # Neither the tree nor the raw text carries the whole 300 KB string.
    assert len(page.content) < 200_000


@pytest.mark.parametrize("kind", ["object", "list"])
def test_a_deep_tool_output_ends_the_live_page(app: InProcessApp, kind: str) -> None:
    # 150 levels left the live page "running" for ever: its fragment could not be rendered. (Much
    # deeper cannot arrive at all: the MCP SDK's JSON parser refuses messages nested ~200 levels.)
    levels = 150
    run_id = start(app, "deep_output", {"levels": levels, "kind": kind})
    stream = finished_stream(app, run_id)
    page = app.get(f"/runs/{run_id}")
    assert page.status_code == 200
    assert 'data-status="running"' not in page.text
    run = app.get(f"/api/runs/{run_id}")
    assert run.status_code == 200
    nest_step = run.json()["steps"][0]
    # Whether an output deeper than the limit is kept is the runner's business; either way the live
    # page gets the step's final fragment and the run's end.
    assert f'id="step-0" class="step status-{nest_step["status"]}"' in stream
    if nest_step["status"] == "success":
        assert run.json()["status"] == "success", run.json()["message"]
        # The nest step's output and the echo step's input and output all collapse past the tree's depth.
        assert page.text.count(COLLAPSED) >= 3
        assert 'id="step-1" class="step status-success"' in stream
        assert COLLAPSED in stream
    else:
        assert depth_limit(app) < levels, nest_step["message"]


def test_a_large_tool_output_is_not_copied_into_the_page(app: InProcessApp) -> None:
    run_id = start(app, "big_output", {"items": 850, "chars": 1000})
    finished_stream(app, run_id)
    run = app.get(f"/api/runs/{run_id}").json()
    assert run["status"] == "success", run["message"]
    output_bytes = len(json.dumps(run["steps"][0]["output"], ensure_ascii=False).encode())
    assert output_bytes > 800_000

    page = app.get(f"/runs/{run_id}")
    assert page.status_code == 200
    # The page once carried the output twice over (tree and raw text): now a bounded part of it.
    assert len(page.content) < 2 * output_bytes
    assert len(page.content) < output_bytes / 4
    assert "… truncated: the first 64 KB of" in page.text
    assert f'<a href="/api/runs/{run_id}/steps/big/output">The whole output</a>' in page.text
    assert "… 750 more (see the JSON)" in page.text


@pytest.mark.parametrize("kind", ["object", "list"])
def test_pretty_json_writes_any_depth(kind: str) -> None:
    value = {"deep": nested(1000, kind), "text": MARKUP}
    text = pretty_json(value)
    assert text.startswith('{\n  "deep": ')
    assert text.count("the bottom") == 1 and text.rstrip().endswith("}")
    # Deep enough to read back with Python's own decoder: the same value.
    shallower = {"deep": nested(250, kind)}
    assert json.loads(pretty_json(shallower)) == shallower


def test_pretty_json_of_an_ordinary_value_is_indented_json() -> None:
    value = {"url": "https://example.com/ä", "sources": [{"n": 1, "ok": True, "none": None}], "empty": {}, "list": []}
    assert pretty_json(value) == json.dumps(value, indent=2, ensure_ascii=False)


@pytest.mark.parametrize("kind", ["object", "list"])
def test_the_json_block_draws_any_depth(kind: str) -> None:
    block = templates.env.from_string('{% from "_macros.html" import json_block %}{{ json_block("Deep", value) }}')
    html = block.render(value={"deep": nested(1000, kind), "text": MARKUP})
    assert COLLAPSED in html
    assert "Raw JSON" in html
    assert MARKUP not in html and "&lt;script&gt;" in html


def test_a_finished_runs_page_is_kept_drawn_but_never_for_another_path_prefix(app: InProcessApp) -> None:
    """A finished run's graph and step cards are drawn once and kept: never served to another prefix."""
    run_id = start(app, "big_output", {"items": 850, "chars": 1000})
    finished_stream(app, run_id)
    plain = app.get(f"/runs/{run_id}").text
    assert plain == app.get(f"/runs/{run_id}").text  # the kept drawing: the same page

    async def through_the_proxy() -> str:
        proxied = BehindProxy(_WithLifespanState(app.app, app.state), "/portal")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=proxied), base_url=BASE_URL) as client:
            return (await client.get(f"/runs/{run_id}")).text

    prefixed = app.call(through_the_proxy())
    # The big step's card links its whole output.
    assert f'href="/api/runs/{run_id}/steps/big/output"' in plain and "/portal/" not in plain
    assert f'href="/portal/api/runs/{run_id}/steps/big/output"' in prefixed
    assert f'href="/api/runs/{run_id}/steps/big/output"' not in prefixed
