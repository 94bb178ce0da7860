"""Scenarios as MCP tools and finished runs as tool results, read as an MCP client reads them on the wire."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import mcp_types as types
import pytest
from inprocess import InProcessApp
from mcp_process import workflow_home
from runs import run_to_end, start_run, wait_finished

from web.mcp_pool import ToolInfo
from web.resources import SCENARIOS
from web.scenario_tools import (
    TOOL_NAME_PATTERN,
    RunLinks,
    call_result,
    input_error_result,
    output_schema_of,
    run_uri,
    structured_output,
    tool_name_problem,
    tool_of,
)
from web.scenarios import Scenario, load_catalog, parse_scenario

ARTICLE = "https://signal.example/culture/lighthouse-library-explainer"
LINKS = RunLinks("http://stepline.example/tools/")


def wire(model: Any) -> dict[str, Any]:
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)


def scenario(**fields: Any) -> Scenario:
    raw = {
        "schema_version": "2",
        "scenario_id": "digest",
        "name": "Digest",
        "steps": [{"name": "a", "tool": "fetch"}],
        **fields,
    }
    return parse_scenario(raw)


def tool(name: str, server: str = "demo", **hints: bool) -> ToolInfo:
    return ToolInfo(server, name, "", {"type": "object"}, None, hints or None)


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


def links_of(result: types.CallToolResult) -> dict[str, str | None]:
    return {block.uri: block.mime_type for block in result.content if isinstance(block, types.ResourceLink)}


# --- tools ------------------------------------------------------------------------------------------------


def test_every_shipped_scenario_is_a_tool_as_a_client_reads_it(demo_app: InProcessApp) -> None:
    demo_app.wait_ready()
    catalog = load_catalog(SCENARIOS)
    known = demo_app.state["pool"].known_tools()
    assert catalog.scenarios
    for scenario_id, shipped in catalog.scenarios.items():
        listed = wire(tool_of(shipped, known))
        assert re.fullmatch(TOOL_NAME_PATTERN, listed["name"]) and listed["name"] == scenario_id
        assert listed["title"] == shipped.name
        assert listed["description"].startswith(shipped.description)
        assert listed["inputSchema"] == shipped.input_schema
        # The SDK's own model reads it back unchanged.
        assert wire(types.Tool.model_validate(listed)) == listed
        assert ("outputSchema" in listed) == ("output" in catalog.raw[scenario_id])
    news = wire(tool_of(catalog.scenarios["news_source_discovery_v1"], known))
    assert news["description"].endswith(
        "Steps: fetch_article, search_news_sources, pick_earliest (find_earliest_source), "
        "trace_citations (trace_citation_chain)."
    )
    # Every demo tool says it is read-only, idempotent and closed-world: so does a scenario of them.
    assert news["annotations"] == {
        "readOnlyHint": True,
        "destructiveHint": False,
        "idempotentHint": True,
        "openWorldHint": False,
    }
    # A person approving is more than reading.
    brief = wire(tool_of(catalog.scenarios["outlet_brief_approval_v2"], known))
    assert "readOnlyHint" not in brief["annotations"]
    assert "approve (a person approves)" in brief["description"]


def test_annotations_say_only_what_the_steps_tools_let_be_known() -> None:
    two = scenario(steps=[{"name": "a", "tool": "fetch"}, {"name": "b", "tool": "store", "server": "db"}])
    reads = tool("fetch", readOnlyHint=True, openWorldHint=True)
    writes = tool("store", "db", readOnlyHint=False, destructiveHint=True, idempotentHint=False, openWorldHint=False)
    assert wire(tool_of(two, [reads, writes]))["annotations"] == {
        "readOnlyHint": False,
        "destructiveHint": True,
        "idempotentHint": False,
        "openWorldHint": True,
    }
    # The step names its server: a tool of that name elsewhere is not the one it calls.
    elsewhere = tool("store", "other", readOnlyHint=True)
    assert wire(tool_of(two, [reads, elsewhere]))["annotations"] == {"openWorldHint": True}
    # A tool two servers offer, called without a server: which one runs is not known, nor its hints.
    one = scenario()
    assert "annotations" not in wire(
        tool_of(one, [tool("fetch", "x", readOnlyHint=True), tool("fetch", "y", readOnlyHint=True)])
    )
    # A tool that says nothing of itself, or is not offered now.
    assert "annotations" not in wire(tool_of(one, [ToolInfo("demo", "fetch", "", {}, None)]))
    assert "annotations" not in wire(tool_of(one, []))


def test_input_schema_without_a_type_is_given_one() -> None:
    listed = wire(tool_of(scenario(input_schema={"properties": {"q": {"type": "string"}}}), []))
    assert listed["inputSchema"] == {"type": "object", "properties": {"q": {"type": "string"}}}


def test_a_scenario_id_too_long_for_a_tool_name_is_said() -> None:
    assert tool_name_problem("news_source_discovery_v1") is None
    assert "128 characters" in (tool_name_problem("x" * 129) or "")
    assert "not an MCP tool name" in (tool_name_problem("a b") or "")


def test_output_schema_follows_the_declared_output() -> None:
    assert output_schema_of(scenario()) is None
    fields = scenario(
        output={
            "title": "{{ steps.a.output.title }}",
            "line": "by {{ steps.a.output.by }}",
            "kind": "digest",
            "tags": ["{{ steps.a.output.tag }}"],
        }
    )
    schema = output_schema_of(fields)
    assert schema == {
        "type": "object",
        "properties": {
            "title": {"description": "{{ steps.a.output.title }}"},
            "line": {"type": "string", "description": "by {{ steps.a.output.by }}"},
            "kind": {"const": "digest"},
            "tags": {"type": "array"},
        },
    }
    wrapped = output_schema_of(scenario(output="{{ steps.a.output }}"))
    assert wrapped is not None and wrapped["required"] == ["output"]
    jsonschema.validate({"output": {"any": "thing"}}, wrapped)
    jsonschema.validate({"output": None}, wrapped)


# --- results ----------------------------------------------------------------------------------------------


def test_a_succeeded_run_gives_its_output_summary_and_links(demo_app: InProcessApp) -> None:
    run = run_to_end(demo_app.client, "story_origin_check_v2", {"url": ARTICLE})
    assert run["status"] == "success"
    record = demo_app.state["runs"].held(run["run_id"])
    shipped = demo_app.state["catalog"].get("story_origin_check_v2")

    result = call_result(record, LINKS, shipped)
    sent = wire(result)
    assert sent.get("isError") is False
    # structuredContent is the API's output, and fits the tool's outputSchema.
    assert sent["structuredContent"] == run["output"]
    jsonschema.validate(sent["structuredContent"], output_schema_of(shipped))
    text = text_of(result)
    assert text.startswith(f"Run {run['run_id']} of Story Origin Check V2 (story_origin_check_v2) succeeded in ")
    assert "Steps: 6 (" in text
    assert f"Output: {json.dumps(run['output'], ensure_ascii=False, separators=(',', ':'))}" in text
    assert links_of(result) == {
        f"http://stepline.example/tools/runs/{run['run_id']}": "text/html",
        f"http://stepline.example/tools/api/runs/{run['run_id']}": "application/json",
        f"stepline://runs/{run['run_id']}": "application/json",
    }
    # The page and snapshot links are the app's own routes.
    assert demo_app.get(f"/runs/{run['run_id']}").status_code == 200
    assert demo_app.get(f"/api/runs/{run['run_id']}").json() == run
    # Without an address to link to, only the run's MCP resource is linked.
    assert links_of(call_result(record, None, shipped)) == {run_uri(run["run_id"]): "application/json"}
    # Without the scenario, the output (an object) is given as it is.
    assert structured_output(record) == run["output"]


def test_a_scenario_without_an_output_shows_its_last_steps_output(demo_app: InProcessApp) -> None:
    run = run_to_end(demo_app.client, "news_source_discovery_v1", {"url": ARTICLE})
    assert run["status"] == "success"
    record = demo_app.state["runs"].held(run["run_id"])
    result = call_result(record, LINKS, demo_app.state["catalog"].get("news_source_discovery_v1"))
    assert "structuredContent" not in wire(result)
    last = next(step for step in run["steps"] if step["node_id"] == "trace_citations")
    shown = json.dumps(last["output"], ensure_ascii=False, separators=(",", ":"))
    lines = text_of(result).splitlines()
    assert lines[1:] == ["Steps: 4 (4 success).", f"Output of step 'trace_citations': {shown}"[: len(lines[2])]]
    assert len(lines[2]) <= 2200


def test_a_failed_run_is_an_error_naming_the_step_and_its_message(demo_app: InProcessApp) -> None:
    run = run_to_end(demo_app.client, "outlet_profile_v1", {"domain": "nowhere.example.com"})
    assert run["status"] == "failed"
    record = demo_app.state["runs"].held(run["run_id"])
    result = call_result(record, LINKS, demo_app.state["catalog"].get("outlet_profile_v1"))
    sent = wire(result)
    assert sent["isError"] is True and "structuredContent" not in sent
    step = next(step for step in run["steps"] if step["node_id"] == "lookup_outlet")
    assert "Unknown outlet" in step["message"]
    first_line = text_of(result).splitlines()[0]
    assert first_line.startswith(
        f"Run {run['run_id']} of Outlet Profile V1 (outlet_profile_v1) failed at step 'lookup_outlet' in "
    )
    assert first_line.endswith(f": {step['message']}")
    assert text_of(result).splitlines()[-1] == "Steps: 3 (1 failed, 2 skipped)."
    assert len(links_of(result)) == 3


def test_a_tolerated_failure_is_not_what_failed_the_run(tmp_path: Path, make_app: Callable[..., InProcessApp]) -> None:
    folder, config = workflow_home(
        tmp_path,
        [
            {
                "schema_version": "2",
                "scenario_id": "two_failures",
                "name": "Two failures",
                "steps": [
                    {
                        "name": "optional",
                        "tool": "fail",
                        "input": {"message": "optional went wrong"},
                        "on_error": "continue",
                    },
                    {
                        "name": "needed",
                        "tool": "fail",
                        "input": {"message": "needed went wrong"},
                        "needs": ["optional"],
                    },
                ],
            }
        ],
    )
    app = make_app(scenarios=folder, mcp_config=config)
    run = run_to_end(app.client, "two_failures")
    assert run["status"] == "failed"
    result = call_result(app.state["runs"].held(run["run_id"]), LINKS)
    assert "failed at step 'needed'" in text_of(result) and "needed went wrong" in text_of(result)
    assert "optional went wrong" not in text_of(result).splitlines()[0]


def test_a_cancelled_run_is_an_error_saying_who_cancelled_it(make_app: Callable[..., InProcessApp]) -> None:
    app = make_app(demo_delay=5)
    run_id = start_run(app.client, "outlet_profile_v1", {"domain": "daily.example.com"})["run_id"]
    assert app.post(f"/api/runs/{run_id}/cancel").status_code == 202
    run = wait_finished(app.client, run_id)
    assert run["status"] == "cancelled"
    result = call_result(app.state["runs"].held(run_id), LINKS)
    assert wire(result)["isError"] is True
    by = run["cancelled_by"]
    expected = f"Run {run_id} of outlet_profile_v1 was cancelled"
    assert text_of(result).startswith(f"{expected} (by {by['name']})" if by else expected)


def test_a_long_output_is_cut_and_said_to_be(tmp_path: Path, make_app: Callable[..., InProcessApp]) -> None:
    folder, config = workflow_home(
        tmp_path,
        [
            {
                "schema_version": "2",
                "scenario_id": "long_text",
                "name": "Long text",
                "input_schema": {"type": "object", "properties": {"text": {"type": "string"}}},
                "steps": [{"name": "say", "tool": "echo", "input": {"value": "{{ input.text }}"}}],
                "output": "{{ input.text }}",
            }
        ],
    )
    app = make_app(scenarios=folder, mcp_config=config)
    text = "<b>" + "x" * 5000 + "</b>"
    run = run_to_end(app.client, "long_text", {"text": text})
    assert run["status"] == "success", run
    shipped = app.state["catalog"].get("long_text")
    result = call_result(app.state["runs"].held(run["run_id"]), LINKS, shipped)
    # structuredContent is whole, wrapped (the output is no object), and fits the outputSchema.
    assert wire(result)["structuredContent"] == {"output": text}
    jsonschema.validate(wire(result)["structuredContent"], output_schema_of(shipped))
    summary = text_of(result)
    assert '"<b>xxx' in summary and "</b>" not in summary
    assert "more characters; the run's snapshot has it whole)" in summary
    assert len(summary) < 2600


def test_arguments_breaking_the_input_schema_name_each_field(demo_app: InProcessApp) -> None:
    response = demo_app.post("/api/runs", json={"scenario_id": "outlet_profile_v1", "input": {"domain": "", "x": 1}})
    assert response.status_code == 422
    errors = response.json()["detail"]
    result = wire(input_error_result(errors))
    assert result["isError"] is True
    lines = result["content"][0]["text"].splitlines()
    assert lines[0] == "The arguments do not fit the tool's inputSchema:"
    assert any(line.startswith("- domain: ") for line in lines)
    assert any(line.startswith("- x: ") for line in lines)


@pytest.mark.parametrize("base", ["http://h:8000", "http://h:8000/"])
def test_run_links_are_under_the_app_root(base: str) -> None:
    links = RunLinks(base)
    assert (links.page("r1"), links.snapshot("r1")) == ("http://h:8000/runs/r1", "http://h:8000/api/runs/r1")


def test_an_output_written_as_one_expression_is_always_wrapped(
    tmp_path: Path, make_app: Callable[..., InProcessApp]
) -> None:
    folder, config = workflow_home(
        tmp_path,
        [
            {
                "schema_version": "2",
                "scenario_id": "whole",
                "name": "Whole",
                "steps": [{"name": "say", "tool": "echo", "input": {"value": "hello"}}],
                "output": "{{ steps.say.output }}",
            }
        ],
    )
    app = make_app(scenarios=folder, mcp_config=config)
    run = run_to_end(app.client, "whole")
    assert run["status"] == "success" and isinstance(run["output"], dict), run
    record, shipped = app.state["runs"].held(run["run_id"]), app.state["catalog"].get("whole")
    # The value is an object this time, but the template is no object: the outputSchema says `output`.
    assert structured_output(record, shipped) == {"output": run["output"]}
    jsonschema.validate(structured_output(record, shipped), output_schema_of(shipped))
    # Without the scenario, only the value can tell.
    assert structured_output(record) == run["output"]
