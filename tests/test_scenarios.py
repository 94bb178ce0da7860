"""Scenario files: the shipped folder, a table of broken files, and ids that try to escape."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import PROJECT_ROOT
from inprocess import InProcessApp

from web.scenarios import load_catalog

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
    assert {"news_source_discovery_v1", "outlet_profile_v1"} <= set(catalog.scenarios)
    assert {path.stem for path in SHIPPED.glob("*.json")} == set(catalog.scenarios)
    for scenario in catalog.scenarios.values():
        assert scenario.examples, scenario.scenario_id
        for example in scenario.examples:
            assert scenario.input_errors(example) == [], (scenario.scenario_id, example)


def test_a_version_1_file_loads_as_it_always_has(tmp_path: Path) -> None:
    """Keys of its own are tolerated, strings stay literal, and each step follows the one before."""
    raw = {**good(), "owner": "newsroom"}
    raw["steps"][1]["input"]["note"] = "{{ not an expression }}"
    (tmp_path / "good.json").write_text(json.dumps(raw), encoding="utf-8")

    catalog = load_catalog(tmp_path)

    assert catalog.problems == []
    plan = catalog.scenarios["good"].plan
    assert [(step.name, step.depends_on) for step in plan.steps] == [("first", ()), ("second", ("first",))]
    scope = {"input": {}, "steps": {"first": {"output": {"url": "https://a.example/x"}}}}
    arguments = plan.step("second").input.evaluate(scope)
    assert arguments == {"url": "https://a.example/x", "note": "{{ not an expression }}"}


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
    "unknown schema_version": (
        edit(lambda raw: raw.__setitem__("schema_version", "3")),
        ['schema_version: "3" is not known; it must be "1" or "2"'],
    ),
    "step without a tool": (edit(lambda raw: raw["steps"][0].pop("tool")), ["steps.0 (first).tool: Field required"]),
    "unknown step field": (edit(lambda raw: raw["steps"][0].__setitem__("tools", "x")), ["steps.0 (first).tools"]),
    "a version 2 field in a version 1 step": (
        edit(lambda raw: raw["steps"][1].__setitem__("needs", ["first"])),
        ['steps.1 (second).needs: only schema_version "2" files have this field'],
    ),
    "from an unknown step": (
        set_step_input(1, "url", {"from": "steps.nope.output.url"}),
        ["steps.1 (second).input.url: from steps.nope.output.url reads unknown step 'nope' (steps: first, second)"],
    ),
    "from a later step": (
        set_step_input(0, "url", {"from": "steps.second.output.url"}),
        ["steps.0 (first).input.url: from steps.second.output.url refers to 'second', which is not an earlier step"],
    ),
    "from a later step, nested": (
        set_step_input(0, "urls", [{"from": "steps.second.output.url"}]),
        ["steps.0 (first).input.urls", "refers to 'second', which is not an earlier step"],
    ),
    "from the step itself": (
        set_step_input(1, "url", {"from": "steps.second.output.url"}),
        ["steps.1 (second).input.url: from steps.second.output.url reads the step itself"],
    ),
    "from with a bad prefix": (
        set_step_input(1, "url", {"from": "output.url"}),
        ["steps.1 (second).input.url: path 'output.url' must start with 'input.' or 'steps.'"],
    ),
    "from without output": (
        set_step_input(1, "url", {"from": "steps.first.url"}),
        ["steps.1 (second).input.url", "steps.<step name>.output"],
    ),
    "from with an empty segment": (
        set_step_input(1, "url", {"from": "input..url"}),
        ["steps.1 (second).input.url", "empty segment"],
    ),
    "duplicate step name": (
        edit(lambda raw: raw["steps"][1].__setitem__("name", "first")),
        ["steps.1 (first): duplicate step name 'first'"],
    ),
    "step name with a dot": (edit(lambda raw: raw["steps"][0].__setitem__("name", "a.b")), ["steps.0 (a.b).name"]),
    "required field that is not an input": (
        edit(lambda raw: raw["steps"][0].__setitem__("required_input_fields", ["nope"])),
        ["steps.0 (first)", "required_input_fields", "nope"],
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
    "NaN in a literal input": (
        set_step_input(0, "limit", float("nan")),
        ["steps.0 (first).input.limit", "NaN is not valid"],
    ),
    "Infinity in a literal input": (
        set_step_input(0, "limit", float("inf")),
        ["steps.0 (first).input.limit", "Infinity"],
    ),
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
