"""Scenario files: the shipped folder, a table of broken files, ids that try to escape, and input paths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import PROJECT_ROOT
from inprocess import InProcessApp

from web.runner import StepFailed, map_inputs
from web.scenarios import MISSING, FromPath, LiteralValue, Step, load_catalog, parse_binding, resolve_path

SHIPPED = PROJECT_ROOT / "scenarios"


def good(scenario_id: str = "good") -> dict[str, Any]:
    """A valid two-step scenario to break in one place at a time."""
    return {
        "schema_version": "1",
        "scenario_id": scenario_id,
        "name": "Good",
        "input_schema": {"type": "object", "required": ["url"], "properties": {"url": {"type": "string"}}},
        "steps": [
            {"name": "first", "tool": "fetch_article", "input": {"url": {"from": "input.url"}}},
            {"name": "second", "tool": "search_news_sources", "input": {"url": {"from": "steps.first.output.url"}}},
        ],
    }


def test_the_shipped_scenarios_load_and_their_examples_are_valid() -> None:
    catalog = load_catalog(SHIPPED)

    assert catalog.problems == []
    assert set(catalog.scenarios) == {"news_source_discovery_v1", "outlet_profile_v1"}
    for scenario in catalog.scenarios.values():
        assert scenario.examples, scenario.scenario_id
        for example in scenario.examples:
            assert scenario.input_errors(example) == [], (scenario.scenario_id, example)


def edit(change: Any) -> Any:
    """A broken scenario: `change` edits a copy of good() in place."""

    def build() -> Any:
        raw = good("broken")
        change(raw)
        return raw

    return build


def set_step_input(index: int, key: str, value: Any) -> Any:
    return edit(lambda raw: raw["steps"][index]["input"].__setitem__(key, value))


BROKEN_FILES: dict[str, tuple[Any, list[str]]] = {
    "invalid JSON": ('{\n  "schema_version": "1",\n  "name": ,\n}', ["invalid JSON at line 3, column 11"]),
    "not an object": ("[1, 2, 3]", ["must be a JSON object"]),
    "missing name": (edit(lambda raw: raw.pop("name")), ["name", "Field required"]),
    "missing steps": (edit(lambda raw: raw.pop("steps")), ["steps", "Field required"]),
    "no steps": (edit(lambda raw: raw.__setitem__("steps", [])), ["steps", "at least 1"]),
    "unknown schema_version": (edit(lambda raw: raw.__setitem__("schema_version", "2")), ["schema_version"]),
    "step without a tool": (edit(lambda raw: raw["steps"][0].pop("tool")), ["steps.0.tool", "Field required"]),
    "unknown step field": (edit(lambda raw: raw["steps"][0].__setitem__("tools", "x")), ["steps.0.tools"]),
    "from an unknown step": (
        set_step_input(1, "url", {"from": "steps.nope.output.url"}),
        ["steps.1.input.url", "'steps.nope.output.url'", "not an earlier step"],
    ),
    "from a later step": (
        set_step_input(0, "url", {"from": "steps.second.output.url"}),
        ["steps.0.input.url", "'second'", "not an earlier step"],
    ),
    "from the step itself": (
        set_step_input(1, "url", {"from": "steps.second.output.url"}),
        ["steps.1.input.url", "the step itself"],
    ),
    "from with a bad prefix": (
        set_step_input(1, "url", {"from": "output.url"}),
        ["steps.1.input.url", "must start with 'input.' or 'steps.'"],
    ),
    "from without output": (
        set_step_input(1, "url", {"from": "steps.first.url"}),
        ["steps.1.input.url", "steps.<step name>.output"],
    ),
    "from with an empty segment": (
        set_step_input(1, "url", {"from": "input..url"}),
        ["steps.1.input.url", "empty segment"],
    ),
    "duplicate step name": (
        edit(lambda raw: raw["steps"][1].__setitem__("name", "first")),
        ["steps.1", "duplicate step name 'first'"],
    ),
    "step name with a dot": (edit(lambda raw: raw["steps"][0].__setitem__("name", "a.b")), ["steps.0.name"]),
    "required field that is not an input": (
        edit(lambda raw: raw["steps"][0].__setitem__("required_input_fields", ["nope"])),
        ["steps.0", "required_input_fields", "nope"],
    ),
    "scenario_id is not the file name": (
        edit(lambda raw: raw.__setitem__("scenario_id", "other")),
        ["scenario_id 'other'", "file name 'broken'"],
    ),
    "scenario_id with a slash": (
        edit(lambda raw: raw.__setitem__("scenario_id", "../broken")),
        ["scenario_id", "pattern"],
    ),
    "input_schema not a JSON Schema": (
        edit(lambda raw: raw.__setitem__("input_schema", {"type": "banana"})),
        ["input_schema", "not a valid JSON Schema"],
    ),
    "input_schema not of an object": (
        edit(lambda raw: raw.__setitem__("input_schema", {"type": "string"})),
        ["input_schema", "must describe an object", "'string'"],
    ),
    # Literals become tool arguments, events and history: strict JSON, as any input is.
    "NaN in a literal input": (set_step_input(0, "limit", float("nan")), ["steps.0.input.limit", "NaN is not valid"]),
    "Infinity in a literal input": (set_step_input(0, "limit", float("inf")), ["steps.0.input.limit", "Infinity"]),
    "a lone surrogate in the description": (
        edit(lambda raw: raw.__setitem__("description", "caf\ud800")),
        ["description", "lone surrogate (\\ud800)"],
    ),
    "nested deeper than the limit": ('{"a":' * 65 + "1" + "}" * 65, ["nested deeper than 64 levels"]),
    "nested deeper than the parser recurses": ("[" * 100_000 + "]" * 100_000, ["nested deeper than 64 levels"]),
}


@pytest.mark.parametrize("content, expected", BROKEN_FILES.values(), ids=BROKEN_FILES.keys())
def test_a_broken_file_is_left_out_and_reported(tmp_path: Path, content: Any, expected: list[str]) -> None:
    (tmp_path / "good.json").write_text(json.dumps(good()), encoding="utf-8")
    text = content if isinstance(content, str) else json.dumps(content(), indent=2)
    (tmp_path / "broken.json").write_text(text, encoding="utf-8")

    catalog = load_catalog(tmp_path)

    assert list(catalog.scenarios) == ["good"]
    assert [problem.file for problem in catalog.problems] == ["broken.json"]
    report = str(catalog.problems[0])
    assert report.startswith("broken.json: ")
    for fragment in expected:
        assert fragment in report, report


def test_a_file_that_cannot_be_decoded_is_reported(tmp_path: Path) -> None:
    (tmp_path / "latin.json").write_bytes(b'{"name": "caf\xe9"}')

    catalog = load_catalog(tmp_path)

    assert catalog.scenarios == {}
    assert str(catalog.problems[0]).startswith("latin.json: cannot read")


def test_a_missing_folder_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    catalog = load_catalog(tmp_path / "nowhere")

    assert catalog.scenarios == {}
    assert "does not exist" in str(catalog.problems[0])


# --- Ids cannot escape the folder -------------------------------------------------------------------


def test_ids_cannot_reach_outside_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "scenarios"
    folder.mkdir()
    (folder / "good.json").write_text(json.dumps(good()), encoding="utf-8")
    (tmp_path / "outside.json").write_text(json.dumps(good("outside")), encoding="utf-8")

    catalog = load_catalog(folder)

    assert catalog.get("good") is not None
    for scenario_id in ["../outside", "../x", "..", "/etc/passwd", "./good", "good.json", "../scenarios/good"]:
        assert catalog.get(scenario_id) is None, scenario_id


@pytest.mark.parametrize("path", ["/api/scenarios/..%2F..", "/api/scenarios/..%2Fscenarios%2Foutlet_profile_v1",
                                  "/api/scenarios/%2E%2E", "/api/scenarios/outlet_profile_v1.json"])
def test_escaping_ids_are_unknown_over_http(demo_app: InProcessApp, path: str) -> None:
    response = demo_app.get(path)

    assert response.status_code == 404
    assert "detail" in response.json()


def test_an_escaping_id_cannot_be_run(demo_app: InProcessApp) -> None:
    response = demo_app.post("/api/runs", json={"scenario_id": "../scenarios/outlet_profile_v1", "input": {}})

    assert response.status_code == 404
    assert "../scenarios/outlet_profile_v1" in response.json()["detail"]


# --- Bindings and paths -----------------------------------------------------------------------------

CONTEXT = {
    "input": {"url": "https://a.example/x", "tags": ["one", "two"], "nothing": None},
    "steps": {"search": {"output": {"sources": [{"url": "https://b.example/1"}, {"url": "https://c.example/2"}]}}},
}


@pytest.mark.parametrize(
    "path, expected",
    [
        ("input.url", "https://a.example/x"),
        ("input.tags.1", "two"),
        ("input.nothing", None),
        ("steps.search.output.sources.0.url", "https://b.example/1"),
        ("steps.search.output.sources.1", {"url": "https://c.example/2"}),
        ("input.tags.2", MISSING),
        ("input.tags.-1", MISSING),
        ("input.tags.first", MISSING),
        ("input.url.0", MISSING),
        ("input.missing", MISSING),
        ("steps.other.output", MISSING),
    ],
)
def test_resolve_path(path: str, expected: Any) -> None:
    assert resolve_path(FromPath(path), CONTEXT) == expected


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"from": "input.url"}, FromPath("input.url")),
        ({"value": {"from": "input.url"}}, LiteralValue({"from": "input.url"})),
        ({"value": None}, LiteralValue(None)),
        ({"from": 5}, LiteralValue({"from": 5})),
        ({"from": "input.url", "limit": 1}, LiteralValue({"from": "input.url", "limit": 1})),
        (10, LiteralValue(10)),
        ("input.url", LiteralValue("input.url")),
        ([{"from": "input.url"}], LiteralValue([{"from": "input.url"}])),
    ],
)
def test_parse_binding(raw: Any, expected: Any) -> None:
    assert parse_binding(raw) == expected


def test_map_inputs_leaves_out_what_a_path_does_not_find() -> None:
    step = Step(
        name="s",
        tool="t",
        input={
            "url": {"from": "steps.search.output.sources.0.url"},
            "third": {"from": "steps.search.output.sources.2.url"},
            "limit": 3,
            "options": {"value": {"deep": True}},
        },
    )

    assert map_inputs(step, CONTEXT) == {"url": "https://b.example/1", "limit": 3, "options": {"deep": True}}


def test_map_inputs_fails_naming_a_required_field_and_its_path() -> None:
    step = Step(
        name="s",
        tool="t",
        input={"third": {"from": "steps.search.output.sources.2.url"}},
        required_input_fields=["third"],
    )

    with pytest.raises(StepFailed) as failed:
        map_inputs(step, CONTEXT)

    assert "'third'" in str(failed.value)
    assert "'steps.search.output.sources.2.url'" in str(failed.value)


def test_a_null_value_found_is_passed_on() -> None:
    step = Step(name="s", tool="t", input={"n": {"from": "input.nothing"}}, required_input_fields=["n"])

    assert map_inputs(step, CONTEXT) == {"n": None}
