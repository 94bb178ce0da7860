"""The plan: a scenario compiled into a dependency graph, its settings merged, and every problem it has."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from web.plan import RetryPolicy
from web.scenarios import ScenarioFileError, load_catalog, parse_scenario

# The example of the format's reference (design.md), on the demo server's tools.
OUTLET_DIGEST: dict[str, Any] = {
    "schema_version": "2",
    "scenario_id": "outlet_digest_v2",
    "name": "Outlet digest",
    "input_schema": {
        "type": "object",
        "required": ["domain"],
        "properties": {"domain": {"type": "string"}, "zone": {"type": "string", "default": "UTC"}},
    },
    "defaults": {"timeout_seconds": 120, "idle_timeout_seconds": 30, "retry": {"max_attempts": 2}},
    "steps": [
        {"name": "outlet", "tool": "lookup_outlet", "input": {"domain": "{{ input.domain }}"}},
        {"name": "articles", "tool": "list_outlet_articles", "input": {"domain": "{{ steps.outlet.output.domain }}"}},
        {
            "name": "sources",
            "tool": "search_news_sources",
            "for_each": "{{ steps.articles.output.articles[:5] }}",
            "max_parallel": 4,
            "input": {"url": "{{ item.url }}"},
        },
        {
            "name": "stats",
            "tool": "outlet_stats",
            "input": {"articles": "{{ steps.articles.output.articles }}", "outlet": "{{ steps.outlet.output.name }}"},
        },
        {
            "name": "chain",
            "tool": "trace_citation_chain",
            "when": "{{ steps.stats.output.times_cited > 0 }}",
            "on_error": "continue",
            "input": {
                "from_url": "{{ steps.articles.output.articles[0].url }}",
                "to_url": "{{ steps.sources.output[0].sources[-1].url }}",
            },
        },
    ],
    "output": {
        "outlet": "{{ steps.outlet.output.name }}",
        "summary": "{{ steps.stats.output.summary }}",
        "traced": "{{ steps.sources.output | length }} stories, chain: {{ steps.chain.status }}",
    },
}


def workflow(*steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"schema_version": "2", "scenario_id": "wf", "name": "Workflow", "steps": list(steps), **extra}


def tool(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "tool": "echo", **fields}


def problems_of(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ScenarioFileError) as failed:
        parse_scenario(raw)
    return failed.value.problems


# --- The graph --------------------------------------------------------------------------------------


def test_the_reference_example_compiles_into_its_graph() -> None:
    plan = parse_scenario(copy.deepcopy(OUTLET_DIGEST)).plan

    assert plan.schema_version == "2"
    assert {step.name: step.depends_on for step in plan.steps} == {
        "outlet": (),
        "articles": ("outlet",),
        "sources": ("articles",),
        "stats": ("outlet", "articles"),
        "chain": ("articles", "sources", "stats"),
    }
    assert plan.stages() == [["outlet"], ["articles"], ["sources", "stats"], ["chain"]]
    assert plan.output is not None
    assert plan.step("sources").for_each is not None and plan.step("sources").max_parallel == 4
    assert plan.step("chain").summary() == {
        "name": "chain",
        "tool": "trace_citation_chain",
        "server": None,
        "depends_on": ["articles", "sources", "stats"],
        "for_each": False,
        "when": "{{ steps.stats.output.times_cited > 0 }}",
        "on_error": "continue",
        "max_attempts": 2,
        "description": "",
    }
    assert json.loads(json.dumps([step.summary() for step in plan.steps]))  # what run_started records is JSON


def test_needs_adds_a_dependency_no_expression_reads() -> None:
    plan = parse_scenario(workflow(tool("a"), tool("b"), tool("c", needs=["b", "a"]))).plan

    assert plan.step("c").depends_on == ("a", "b")
    assert plan.stages() == [["a", "b"], ["c"]]


def test_a_step_may_read_a_step_written_after_it() -> None:
    plan = parse_scenario(workflow(tool("report", input={"text": "{{ steps.fetch.output }}"}), tool("fetch"))).plan

    assert plan.step("report").depends_on == ("fetch",)
    assert plan.stages() == [["fetch"], ["report"]]


def test_a_diamond_joins_two_parallel_branches() -> None:
    plan = parse_scenario(
        workflow(
            tool("start"),
            tool("left", input={"x": "{{ steps.start.output }}"}),
            tool("right", input={"x": "{{ steps.start.output }}"}),
            tool("join", input={"x": "{{ steps.left.output or steps.right.output }}"}),
        )
    ).plan

    assert plan.stages() == [["start"], ["left", "right"], ["join"]]


def test_a_nested_from_path_is_a_dependency_too() -> None:
    plan = parse_scenario(
        workflow(tool("a"), tool("b", input={"entities": [{"name": {"from": "steps.a.output.name"}}]}))
    ).plan

    assert plan.step("b").depends_on == ("a",)


def test_a_version_1_file_stays_a_chain_with_literal_strings() -> None:
    raw = {
        "schema_version": "1",
        "scenario_id": "chain",
        "name": "Chain",
        "steps": [
            {"name": "a", "tool": "echo", "input": {"text": "{{ input.url }}"}},
            {"name": "b", "tool": "echo", "input": {"text": {"from": "input.url"}}},
            {"name": "c", "tool": "echo", "input": {"text": {"from": "steps.a.output.text"}}},
        ],
    }

    plan = parse_scenario(raw).plan

    assert [step.depends_on for step in plan.steps] == [(), ("a",), ("b",)]
    assert plan.stages() == [["a"], ["b"], ["c"]]
    scope = {"input": {"url": "https://a.example/x"}, "steps": {}, "run": {"id": "r"}}
    assert plan.step("a").input.evaluate(scope) == {"text": "{{ input.url }}"}
    assert plan.step("b").input.evaluate(scope) == {"text": "https://a.example/x"}
    first = plan.step("a")
    assert (first.on_error, first.retry, first.timeout_seconds, first.when, first.for_each) == (
        "fail",
        RetryPolicy(),
        None,
        None,
        None,
    )


# --- Settings: defaults, then the step's own ------------------------------------------------------------


def test_a_steps_own_settings_win_over_defaults_and_retry_merges_field_by_field() -> None:
    raw = workflow(
        tool("plain"),
        tool(
            "own",
            timeout_seconds=5,
            on_error="continue",
            max_parallel=16,
            retry={"backoff_multiplier": 3, "max_backoff_seconds": 10},
        ),
        defaults={
            "timeout_seconds": 30,
            "idle_timeout_seconds": 2.5,
            "on_error": "fail",
            "max_parallel": 8,
            "retry": {"max_attempts": 3, "backoff_seconds": 2},
        },
    )

    plan = parse_scenario(raw).plan

    plain, own = plan.step("plain"), plan.step("own")
    assert (plain.timeout_seconds, plain.idle_timeout_seconds, plain.on_error, plain.max_parallel) == (
        30,
        2.5,
        "fail",
        8,
    )
    assert plain.retry == RetryPolicy(max_attempts=3, backoff_seconds=2, backoff_multiplier=2, max_backoff_seconds=60)
    assert (own.timeout_seconds, own.idle_timeout_seconds, own.on_error, own.max_parallel) == (5, 2.5, "continue", 16)
    assert own.retry == RetryPolicy(max_attempts=3, backoff_seconds=2, backoff_multiplier=3, max_backoff_seconds=10)


def test_without_defaults_a_step_gets_the_built_in_settings() -> None:
    step = parse_scenario(workflow(tool("a"))).plan.step("a")

    assert (step.timeout_seconds, step.idle_timeout_seconds, step.on_error, step.max_parallel) == (
        None,
        None,
        "fail",
        4,
    )
    assert step.retry == RetryPolicy(max_attempts=1)


def test_the_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(max_attempts=10, backoff_seconds=1, backoff_multiplier=2, max_backoff_seconds=5)

    assert [policy.delay(attempt) for attempt in range(1, 6)] == [1, 2, 4, 5, 5]


# --- Problems, each named ------------------------------------------------------------------------------

PROBLEMS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "template syntax error": (
        workflow(tool("a"), tool("b", input={"url": "{{ steps.a.output.url }"})),
        ["steps.1 (b).input.url: template syntax error at line 1, column"],
    ),
    "syntax error deep in the input": (
        workflow(tool("a", input={"entities": [{"name": "{{ input.name | }}"}]})),
        ["steps.0 (a).input.entities", "template syntax error at line 1, column"],
    ),
    "syntax error in when": (
        workflow(tool("a", when="{{ input.go == }}")),
        ["steps.0 (a).when: template syntax error"],
    ),
    "syntax error in for_each": (
        workflow(tool("a", for_each="{{ input.list[ }}")),
        ["steps.0 (a).for_each: template syntax error"],
    ),
    "syntax error in the output": (
        workflow(tool("a"), output={"answer": "{{ steps.a.output.( }}"}),
        ["output.answer: template syntax error"],
    ),
    "unknown name": (
        workflow(tool("a", input={"url": "{{ inptu.url }}"})),
        ["steps.0 (a).input.url: unknown name 'inptu'"],
    ),
    "unknown step in an expression": (
        workflow(tool("a"), tool("b", input={"url": "{{ steps.nope.output.url }}"})),
        ["steps.1 (b).input.url: {{ steps.nope.output.url }} reads unknown step 'nope' (steps: a, b)"],
    ),
    "unknown step in when": (
        workflow(tool("a", when="{{ steps.stast.output.ok }}")),
        ["steps.0 (a).when: {{ steps.stast.output.ok }} reads unknown step 'stast'"],
    ),
    "a misspelt step": (
        workflow(tool("stats"), tool("b", needs=["stast"])),
        ["steps.1 (b).needs.0: unknown step 'stast' (did you mean 'stats'?)"],
    ),
    "unknown step in needs": (
        workflow(tool("a"), tool("b", needs=["a", "stast"])),
        ["steps.1 (b).needs.1: unknown step 'stast' (steps: a, b)"],
    ),
    "unknown step in the output": (
        workflow(tool("a"), output={"x": "{{ steps.b.output }}"}),
        ["output.x: {{ steps.b.output }} reads unknown step 'b' (steps: a)"],
    ),
    "a step reading itself": (
        workflow(tool("a", input={"again": "{{ steps.a.output }}"})),
        ["steps.0 (a).input.again: {{ steps.a.output }} reads the step itself"],
    ),
    "a step needing itself": (workflow(tool("a", needs=["a"])), ["steps.0 (a).needs.0: a step cannot need itself"]),
    "item without for_each": (
        workflow(tool("a", input={"url": "{{ item.url }}"})),
        ["steps.0 (a).input.url: reads item, but the step has no for_each"],
    ),
    "for_each reading item": (
        workflow(tool("a", for_each="{{ item }}")),
        ["steps.0 (a).for_each: reads item"],
    ),
    "when reading item": (
        workflow(tool("a", for_each="{{ input.urls }}", when="{{ item_index > 0 }}")),
        ["steps.0 (a).when: reads item", "evaluated once for the whole step"],
    ),
    "the output reading item": (
        workflow(tool("a"), output="{{ item }}"),
        ["output: reads item, which is known only inside a for_each step"],
    ),
    "a cycle of two": (
        workflow(tool("a", input={"x": "{{ steps.b.output }}"}), tool("b", input={"x": "{{ steps.a.output }}"})),
        ["cycle between steps: a → b → a"],
    ),
    "a cycle of three through needs": (
        workflow(tool("start"), tool("a", needs=["c"]), tool("b", needs=["a"]), tool("c", needs=["b", "start"])),
        ["cycle between steps: a → c → b → a"],
    ),
    "duplicate step name": (workflow(tool("a"), tool("a")), ["steps.1 (a): duplicate step name 'a'"]),
    "a name expressions cannot read": (
        workflow(tool("my-step")),
        ["steps.0 (my-step).name: 'my-step' is not a name expressions can read as steps.my-step"],
    ),
    "a condition that is no expression": (workflow(tool("a", when=3)), ["steps.0 (a).when"]),
    "a for_each that is no string": (workflow(tool("a", for_each=["x"])), ["steps.0 (a).for_each"]),
    "max_parallel too high": (
        workflow(tool("a", max_parallel=65)),
        ["steps.0 (a).max_parallel: Input should be less than or equal to 64"],
    ),
    "max_parallel zero in defaults": (
        workflow(tool("a"), defaults={"max_parallel": 0}),
        ["defaults.max_parallel: Input should be greater than or equal to 1"],
    ),
    "unknown on_error": (
        workflow(tool("a", on_error="ignore")),
        ["steps.0 (a).on_error: Input should be 'fail' or 'continue'"],
    ),
    "too many attempts": (
        workflow(tool("a", retry={"max_attempts": 11})),
        ["steps.0 (a).retry.max_attempts: Input should be less than or equal to 10"],
    ),
    "a shrinking backoff": (
        workflow(tool("a", retry={"backoff_multiplier": 0.5})),
        ["steps.0 (a).retry.backoff_multiplier: Input should be greater than or equal to 1"],
    ),
    "a negative backoff": (
        workflow(tool("a"), defaults={"retry": {"backoff_seconds": -1}}),
        ["defaults.retry.backoff_seconds: Input should be greater than or equal to 0"],
    ),
    "unknown retry field": (workflow(tool("a", retry={"attempts": 3})), ["steps.0 (a).retry.attempts: Extra inputs"]),
    "zero timeout": (
        workflow(tool("a", timeout_seconds=0)),
        ["steps.0 (a).timeout_seconds: Input should be greater than 0"],
    ),
    "negative idle timeout": (
        workflow(tool("a", idle_timeout_seconds=-1)),
        ["steps.0 (a).idle_timeout_seconds: Input should be greater than 0"],
    ),
    "unknown step field": (workflow(tool("a", need=["b"])), ["steps.0 (a).need: Extra inputs are not permitted"]),
    "unknown scenario field": (workflow(tool("a"), default={}), ["default: Extra inputs are not permitted"]),
    "unknown schema_version": (
        {**workflow(tool("a")), "schema_version": "3"},
        ['schema_version: "3" is not known; it must be "1" or "2"'],
    ),
    "no schema_version": (
        {key: value for key, value in workflow(tool("a")).items() if key != "schema_version"},
        ['schema_version: missing; it must be "1" or "2"'],
    ),
    "a version 2 step field in a version 1 file": (
        {**workflow(tool("a", needs=[])), "schema_version": "1"},
        ['steps.0 (a).needs: only schema_version "2" files have this field; this file is version "1"'],
    ),
    "a version 2 scenario field in a version 1 file": (
        {**workflow(tool("a")), "schema_version": "1", "output": {"x": 1}},
        ['output: only schema_version "2" files have this field; this file is version "1"'],
    ),
    "version 1: a path to a later step": (
        {
            **workflow(tool("a", input={"x": {"from": "steps.b.output.x"}}), tool("b")),
            "schema_version": "1",
        },
        ["steps.0 (a).input.x", "'b', which is not an earlier step"],
    ),
}


@pytest.mark.parametrize("raw, expected", PROBLEMS.values(), ids=PROBLEMS.keys())
def test_each_problem_is_named_with_its_step_and_field(raw: dict[str, Any], expected: list[str]) -> None:
    problems = problems_of(raw)

    assert len(problems) == 1, problems
    for fragment in expected:
        assert fragment in problems[0], problems


def test_an_unknown_step_among_many_is_named_without_listing_them_all() -> None:
    raw = workflow(*(tool(f"s{i}") for i in range(13)), tool("b", input={"x": "{{ steps.zzz.output }}"}))

    assert problems_of(raw) == ["steps.13 (b).input.x: {{ steps.zzz.output }} reads unknown step 'zzz'"]


def test_every_problem_of_a_file_is_reported(tmp_path: Path) -> None:
    raw = workflow(
        tool("a", input={"url": "{{ input.url }"}),
        tool("b", input={"x": "{{ steps.c.output }}", "y": "{{ item }}"}, needs=["ghost"]),
        tool("c", input={"x": "{{ steps.b.output }}"}, when="{{ item }}"),
        output={"x": "{{ steps.nope.output }}"},
    )
    (tmp_path / "wf.json").write_text(json.dumps(raw), encoding="utf-8")

    catalog = load_catalog(tmp_path)

    assert catalog.scenarios == {}
    reported = [str(problem) for problem in catalog.problems]
    assert [problem.file for problem in catalog.problems] == ["wf.json"] * 6, reported
    assert reported[0].startswith("wf.json: steps.0 (a).input.url: template syntax error at line 1, column ")
    assert reported[1:] == [
        "wf.json: steps.1 (b).needs.0: unknown step 'ghost' (steps: a, b, c)",
        "wf.json: steps.1 (b).input.y: reads item, but the step has no for_each",
        "wf.json: steps.2 (c).when: reads item, but the condition is evaluated once for the whole step",
        "wf.json: output.x: {{ steps.nope.output }} reads unknown step 'nope' (steps: a, b, c)",
        "wf.json: cycle between steps: b → c → b",
    ]


def test_a_step_whose_input_does_not_compile_still_has_its_condition_checked() -> None:
    problems = problems_of(workflow(tool("a", input={"x": "{{ ( }}"}, when="{{ steps.ghost.output }}")))

    assert len(problems) == 2, problems
    assert problems[0].startswith("steps.0 (a).input.x: template syntax error")
    assert problems[1] == "steps.0 (a).when: {{ steps.ghost.output }} reads unknown step 'ghost' (steps: a)"


def test_structural_problems_are_all_reported_each_with_its_step() -> None:
    problems = problems_of(
        workflow(
            tool("a", max_parallel=0),
            {"name": "b", "input": {}},
            tool("c", retry={"max_attempts": 0}, on_error="sometimes"),
        )
    )

    assert problems == [
        "steps.0 (a).max_parallel: Input should be greater than or equal to 1",
        "steps.1 (b).tool: Field required",
        "steps.2 (c).on_error: Input should be 'fail' or 'continue'",
        "steps.2 (c).retry.max_attempts: Input should be greater than or equal to 1",
    ]


def test_several_cycles_are_each_named() -> None:
    problems = problems_of(
        workflow(
            tool("a", needs=["b"]),
            tool("b", needs=["a"]),
            tool("c", needs=["d"]),
            tool("d", needs=["c"]),
            tool("free"),
        )
    )

    assert problems == ["cycle between steps: a → b → a", "cycle between steps: c → d → c"]


def test_a_long_chain_compiles_without_recursion() -> None:
    # Deeper than Python's recursion limit (1000).
    steps = [tool("s0")] + [tool(f"s{i}", input={"x": f"{{{{ steps.s{i - 1}.output }}}}"}) for i in range(1, 1500)]

    plan = parse_scenario(workflow(*steps)).plan

    assert len(plan.stages()) == 1500
    assert plan.step("s1499").depends_on == ("s1498",)
