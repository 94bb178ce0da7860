"""Workflows (scenario format v2) run end to end: expressions, the dependency graph, fail-fast,
conditions, for_each, retries, progress-aware timeouts, the run's output and the recorded plan.

One app in-process with `tests/servers/workflow.py`, an MCP server written with the SDK that proves
from its own side what happened: how many calls it had in flight at once, which calls the client
cancelled, how often a key was tried. Each run's events are read from its JSON event stream, as an
API caller reads them; a step's `group` is the run's id, so runs never count each other's calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from typing import Any

import pytest
from conftest import wait_until
from inprocess import InProcessApp, in_process
from mcp_process import workflow_home
from runs import get_run, start_run
from sse import read_events

# What the workflow server's `echo` reports for an argument that was left out.
NOT_GIVEN = "(not given)"
# Each run counts its own calls on the workflow server.
GROUP = "{{ run.id }}"
# Small, so that the cap is reached with a handful of items.
MAX_FOR_EACH_ITEMS = 5
FAST_RETRY = {"max_attempts": 3, "backoff_seconds": 0.05, "backoff_multiplier": 2}


def v2(scenario_id: str, *steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"schema_version": "2", "scenario_id": scenario_id, "name": scenario_id, "steps": list(steps), **extra}


def step(name: str, tool: str, **fields: Any) -> dict[str, Any]:
    fields.setdefault("input", {})
    return {"name": name, "tool": tool, **fields}


SCENARIOS = [
    v2(
        "expressions",
        step("whole", "echo", input={"value": "{{ input.tags }}", "note": "{{ input.count }}"}),
        step("mixed", "echo", input={"value": "Hello {{ input.name }}, {{ input.count }} items"}),
        step(
            "nested",
            "echo",
            input={
                "value": {
                    "list": [{"from": "input.name"}, "{{ input.count + 1 }}", "plain", {"in": "{{ input.tags[1] }}"}],
                    "object": {"inner": {"from": "input.tags.0"}},
                }
            },
        ),
        step("literal", "echo", input={"value": {"value": {"kept": "{{ input.name }}", "from": "input.name"}}}),
        step("omitted", "echo", input={"value": "{{ input.name }}", "note": "{{ input.nope.deeper.still }}"}),
        step("listing", "lines_text", input={"n": 3}),
        step(
            "per_line",
            "echo",
            for_each="{{ steps.listing.output | lines }}",
            input={"value": "{{ item }} #{{ item_index }}"},
        ),
        step("required_by_schema", "upper", input={"text": "{{ input.nope }}"}, on_error="continue"),
        step(
            "required_by_field",
            "echo",
            input={"value": "{{ steps.whole.output.missing }}"},
            required_input_fields=["value"],
            on_error="continue",
        ),
        step("undefined_in_text", "echo", input={"value": "id: {{ input.nope }}"}, on_error="continue"),
    ),
    v2(
        "graph",
        *(step(f"s{n}", "sleep", input={"seconds": 0.5, "label": f"s{n}", "group": GROUP}) for n in range(1, 6)),
        step("count", "in_flight", input={"group": GROUP}, needs=[f"s{n}" for n in range(1, 6)]),
        step("join", "echo", input={"value": "{{ steps.s1.output }}+{{ steps.s2.output }}"}),
        step("after_join", "upper", input={"text": "{{ steps.join.output.value }}"}),
        output={
            "most_at_once": "{{ steps.count.output.max }}",
            "joined": "{{ steps.after_join.output.text }}",
            "summary": "{{ steps.count.output.max }} at once, run {{ run.id }}",
            "literal": {"value": "{{ kept }}"},
        },
    ),
    v2(
        "fail_fast",
        step("slow_a", "sleep", input={"seconds": 30, "label": "a", "group": GROUP}),
        step("slow_b", "sleep", input={"seconds": 30, "label": "b", "group": GROUP}),
        # The failure comes once the server has both slow calls in hand, so both are cancelled mid-call.
        step("ready", "await_in_flight", input={"count": 2, "group": GROUP}),
        step("boom", "fail", input={"message": "kaput"}, needs=["ready"]),
        step("after_boom", "echo", input={"value": "{{ steps.boom.output }}"}),
        step("after_a", "echo", input={"value": "{{ steps.slow_a.output }}"}),
    ),
    v2(
        "probe",
        step("cancelled", "cancellations", input={"group": "{{ input.group }}"}),
        input_schema={"type": "object", "required": ["group"], "properties": {"group": {"type": "string"}}},
    ),
    v2(
        "conditions",
        step("maybe", "echo", input={"value": "A"}, when="{{ input.flag }}"),
        step("other", "echo", input={"value": "B"}),
        step("joined", "echo", input={"value": "{{ (steps.maybe.output or steps.other.output).value }}"}),
        step("tolerated", "fail", input={"message": "tolerated failure"}, on_error="continue"),
        step(
            "downstream",
            "echo",
            input={
                "value": {
                    "output": "{{ steps.tolerated.output }}",
                    "status": "{{ steps.tolerated.status }}",
                    "maybe": "{{ steps.maybe.status }}",
                }
            },
        ),
        input_schema={"type": "object", "required": ["flag"], "properties": {"flag": {"type": "boolean"}}},
    ),
    v2(
        "fan_out",
        step(
            "fan",
            "sleep",
            for_each="{{ input.seconds }}",
            max_parallel=2,
            input={"seconds": "{{ item }}", "label": "item {{ item_index }}", "group": GROUP},
        ),
        step("count", "in_flight", input={"group": GROUP}, needs=["fan"]),
        step(
            "judged",
            "judge",
            for_each="{{ input.words }}",
            input={"value": "{{ item }}", "reject": "bad"},
            on_error="continue",
        ),
        step("not_a_list", "echo", for_each="{{ input.text }}", input={"value": "{{ item }}"}, on_error="continue"),
        step("too_many", "echo", for_each="{{ input.many }}", input={"value": "{{ item }}"}, on_error="continue"),
    ),
    v2(
        "retries",
        step("recovers", "flaky", input={"key": "{{ run.id }}-recovers", "failures": 2}),
        step(
            "gives_up",
            "flaky",
            input={"key": "{{ run.id }}-gives-up", "failures": 2},
            retry={"max_attempts": 2, "backoff_seconds": 0.05},
            on_error="continue",
        ),
        step(
            "protocol_error",
            "flaky",
            input={"key": "{{ run.id }}-rpc", "failures": 1, "how": "jsonrpc"},
            retry={"max_attempts": 2, "backoff_seconds": 0.05},
        ),
        step("binding_error", "echo", input={"value": "x {{ input.nope }}"}, on_error="continue"),
        # Item 0 succeeds at once, item 1 on its second attempt.
        step(
            "per_item",
            "flaky",
            for_each="{{ ['first', 'second'] }}",
            input={"key": "{{ run.id }}-{{ item }}", "failures": "{{ item_index }}"},
        ),
        defaults={"retry": FAST_RETRY},
    ),
    v2(
        "long_backoff",
        step(
            "flaky",
            "flaky",
            input={"key": "{{ run.id }}", "failures": 5},
            retry={"max_attempts": 3, "backoff_seconds": 30},
        ),
    ),
    v2(
        "timeouts",
        step("kept_alive", "progress_for", input={"seconds": 2.4, "every": 0.4}, idle_timeout_seconds=1),
        step("silent", "silent", input={"seconds": 6}, idle_timeout_seconds=1, on_error="continue"),
        step("capped", "progress_for", input={"seconds": 5, "every": 0.2}, timeout_seconds=1, on_error="continue"),
        defaults={"idle_timeout_seconds": 30},
    ),
    v2(
        "bad_output",
        step("a", "echo", input={"value": "not json"}),
        output={"fine": "{{ steps.a.output.value }}", "parsed": "{{ steps.a.output.value | fromjson }}"},
    ),
    v2(
        "escape",
        step("bomb", "echo", input={"value": "{{ 'a' * 10**7 }}"}, on_error="continue"),
        step("escape", "echo", input={"value": "{{ ''.__class__.__mro__ }}"}, needs=["bomb"]),
    ),
    {
        "schema_version": "1",
        "scenario_id": "v1_chain",
        "name": "A version 1 chain",
        "steps": [
            {"name": "first", "tool": "echo", "input": {"value": {"from": "input.name"}}},
            {
                "name": "second",
                "tool": "echo",
                "input": {"value": {"nested": [{"from": "steps.first.output.value"}], "text": "{{ input.name }}"}},
            },
            {"name": "third", "tool": "upper", "input": {"text": {"from": "steps.second.output.value.nested.0"}}},
        ],
    },
]
# Files that must be left out of the catalog, and what the problem report says of each.
BROKEN = {
    "cycle": (
        v2("cycle", step("a", "echo", needs=["b"]), step("b", "echo", needs=["a"])),
        ["cycle between steps: "],
    ),
    "unknown_step": (
        v2("unknown_step", step("start", "echo"), step("chain", "echo", needs=["stast"])),
        ["steps.1 (chain).needs", "unknown step 'stast'"],
    ),
    "syntax": (
        v2("syntax", step("start", "echo", input={"value": "{{ input.url }"})),
        ["steps.0 (start).input.value", "template syntax error at line 1"],
    ),
}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessApp]:
    home = tmp_path_factory.mktemp("workflows")
    folder, config = workflow_home(home, [*SCENARIOS, *(broken for broken, _ in BROKEN.values())])
    with in_process(home, mcp_config=config, scenarios=folder, max_for_each_items=MAX_FOR_EACH_ITEMS) as started:
        started.wait_ready()
        yield started


@dataclass
class Run:
    """A finished run as its event stream told it."""

    run_id: str
    events: list[dict[str, Any]]

    def of(self, kind: str, step: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind and (step is None or e.get("step_name") == step)]

    def ended(self, step: str) -> dict[str, Any]:
        (finished,) = self.of("step_finished", step)
        return finished

    def output(self, step: str) -> Any:
        return self.ended(step)["output"]

    @property
    def finished(self) -> dict[str, Any]:
        (finished,) = self.of("run_finished")
        return finished

    @property
    def plan(self) -> dict[str, dict[str, Any]]:
        (started,) = self.of("run_started")
        return {summary["name"]: summary for summary in started["plan"]}

    def seq(self, kind: str, step: str) -> int:
        (event,) = self.of(kind, step)
        return event["seq"]

    def statuses(self) -> dict[str, str]:
        return {e["step_name"]: e["status"] for e in self.of("step_finished")}


def run(app: InProcessApp, scenario_id: str, run_input: dict[str, Any] | None = None) -> Run:
    run_id = start_run(app.client, scenario_id, run_input)["run_id"]
    return follow(app, run_id)


def follow(app: InProcessApp, run_id: str) -> Run:
    return Run(run_id, read_events(app.client, run_id, timeout=60))


def wait_for_event(app: InProcessApp, run_id: str, kind: str) -> dict[str, Any]:
    """The run's first event of `kind`, as soon as it is appended to the run's event list."""

    async def first() -> dict[str, Any]:
        async for event in app.state["runs"].held(run_id).follow():
            if event["type"] == kind:
                return event
        raise AssertionError(f"run {run_id} ended without a {kind} event")

    return app.call(asyncio.wait_for(first(), 20))


def cancelled_labels(app: InProcessApp, group: str) -> list[str]:
    """The labels of the group's calls the workflow server saw cancelled, asked through a run."""
    probe = run(app, "probe", {"group": group})
    assert probe.finished["status"] == "success", probe.finished
    return sorted(call["label"] for call in probe.output("cancelled")["cancelled"])


# --- Expressions ---


def test_expressions_bind_typed_values_nested_literals_and_lines(app: InProcessApp) -> None:
    the_run = run(app, "expressions", {"tags": ["x", "y"], "name": "Ada", "count": 3})

    # A whole-value expression keeps its JSON type: the server received a list and a number.
    assert the_run.output("whole") == {"value": ["x", "y"], "note": 3}
    assert the_run.output("mixed")["value"] == "Hello Ada, 3 items"
    # Templates and v1 paths inside arrays and objects arrive resolved.
    assert the_run.output("nested")["value"] == {"list": ["Ada", 4, "plain", {"in": "y"}], "object": {"inner": "x"}}
    # {"value": x} is sent as written, templates and all.
    assert the_run.output("literal")["value"] == {"kept": "{{ input.name }}", "from": "input.name"}
    # An undefined whole value leaves its argument out (chained access on undefined stays undefined).
    assert the_run.output("omitted") == {"value": "Ada", "note": NOT_GIVEN}
    (omitted_started,) = the_run.of("step_started", "omitted")
    assert omitted_started["input"] == {"value": "Ada"}

    # `lines` turns a tool's text into a list, and for_each calls once per line, in order.
    assert [item["value"] for item in the_run.output("per_line")] == ["line 1 #0", "line 2 #1", "line 3 #2"]
    assert len(the_run.of("step_item_finished", "per_line")) == 3

    required = the_run.ended("required_by_schema")
    assert required["status"] == "failed"
    assert required["message"] == "required argument 'text' is missing: {{ input.nope }} is undefined"
    by_field = the_run.ended("required_by_field")
    assert by_field["status"] == "failed"
    assert by_field["message"] == (
        "required argument 'value' is missing: {{ steps.whole.output.missing }} is undefined"
    )
    in_text = the_run.ended("undefined_in_text")
    assert in_text["status"] == "failed"
    assert "input.nope" in in_text["message"] and "undefined" in in_text["message"], in_text["message"]

    assert the_run.finished["status"] == "success"
    message = the_run.finished["message"]
    assert message.startswith("Finished with 3 tolerated failure(s): "), message
    assert all(name in message for name in ("required_by_schema", "required_by_field", "undefined_in_text"))


# --- The graph ---


def test_independent_steps_run_at_once_and_joins_wait_for_their_branches(app: InProcessApp) -> None:
    the_run = run(app, "graph")

    assert the_run.finished["status"] == "success", the_run.finished
    # The server had all five sleeps in flight at once: concurrency seen from its side, not timed.
    assert the_run.output("count")["max"] == 5
    for branch in ("s1", "s2"):
        assert the_run.seq("step_finished", branch) < the_run.seq("step_started", "join")
    for sleeper in ("s1", "s2", "s3", "s4", "s5"):
        assert the_run.seq("step_finished", sleeper) < the_run.seq("step_started", "count")
    assert the_run.output("join")["value"] == "s1+s2"
    assert the_run.output("after_join") == {"text": "S1+S2"}

    # The plan the run followed is recorded, with each step's dependencies.
    plan = the_run.plan
    assert list(plan) == ["s1", "s2", "s3", "s4", "s5", "count", "join", "after_join"]
    assert plan["s1"]["tool"] == "sleep" and plan["s1"]["depends_on"] == []
    assert plan["count"]["depends_on"] == ["s1", "s2", "s3", "s4", "s5"]
    assert plan["join"]["depends_on"] == ["s1", "s2"]
    assert plan["after_join"]["depends_on"] == ["join"]
    assert not any(summary["for_each"] for summary in plan.values())

    # The scenario's output: on run_finished and in the snapshot.
    expected = {
        "most_at_once": 5,
        "joined": "S1+S2",
        "summary": f"5 at once, run {the_run.run_id}",
        "literal": "{{ kept }}",
    }
    assert the_run.finished["output"] == expected
    snapshot = get_run(app.client, the_run.run_id)
    assert snapshot["output"] == expected
    assert {step["node_id"]: step["depends_on"] for step in snapshot["steps"]}["join"] == ["s1", "s2"]


def test_a_failure_cancels_the_steps_in_flight_and_skips_the_rest(app: InProcessApp) -> None:
    the_run = run(app, "fail_fast")

    assert the_run.finished["status"] == "failed"
    assert "boom" in the_run.finished["message"] and "kaput" in the_run.finished["message"]
    assert the_run.ended("boom")["status"] == "failed"
    for slow in ("slow_a", "slow_b"):
        ended = the_run.ended(slow)
        assert (ended["status"], ended["message"]) == ("cancelled", "Cancelled: step 'boom' failed")
    for pending in ("after_boom", "after_a"):
        ended = the_run.ended(pending)
        assert (ended["status"], ended["message"]) == ("skipped", "Not run: step 'boom' failed")
        assert ended["started_at"] is None
        assert the_run.of("step_started", pending) == []
    # The server was told: notifications/cancelled reached both slow calls.
    wait_until(
        lambda: cancelled_labels(app, the_run.run_id) == ["a", "b"], 10, "the server to see both calls cancelled"
    )
    snapshot = get_run(app.client, the_run.run_id)
    assert {step["node_id"]: step["status"] for step in snapshot["steps"]}["after_a"] == "skipped"


def test_conditions_skip_with_their_reason_and_tolerated_failures_flow_on(app: InProcessApp) -> None:
    skipped = run(app, "conditions", {"flag": False})

    maybe = skipped.ended("maybe")
    assert (maybe["status"], maybe["message"]) == ("skipped", "Condition is false: {{ input.flag }}")
    assert skipped.of("step_started", "maybe") == []
    # A skipped step's output is null: `or` joins the branches.
    assert skipped.output("joined")["value"] == "B"
    assert skipped.output("downstream")["value"] == {"output": None, "status": "failed", "maybe": "skipped"}
    assert skipped.finished["status"] == "success"
    assert skipped.finished["message"] == "Finished with 1 tolerated failure(s): tolerated"

    taken = run(app, "conditions", {"flag": True})
    assert taken.ended("maybe")["status"] == "success"
    assert taken.output("joined")["value"] == "A"
    assert taken.output("downstream")["value"]["maybe"] == "success"


# --- for_each ---


def test_for_each_keeps_item_order_respects_max_parallel_and_reports_items(app: InProcessApp) -> None:
    the_run = run(
        app,
        "fan_out",
        {
            # The first item is the slowest: items finish out of order.
            "seconds": [0.3, 0.05, 0.2, 0.05, 0.1],
            "words": ["ok", "bad", "fine"],
            "text": "abc",
            "many": list(range(MAX_FOR_EACH_ITEMS + 1)),
        },
    )

    assert the_run.output("fan") == [f"item {n}" for n in range(5)]
    (fan_started,) = the_run.of("step_started", "fan")
    assert fan_started["item_count"] == 5 and fan_started["input"] is None
    items = the_run.of("step_item_finished", "fan")
    assert sorted(item["item_index"] for item in items) == [0, 1, 2, 3, 4]
    assert {item["status"] for item in items} == {"success"}
    assert {item["item_index"]: item["input"]["label"] for item in items}[3] == "item 3"
    # The server never had more than max_parallel of them at once.
    assert the_run.output("count")["max"] == 2

    judged = the_run.ended("judged")
    assert judged["status"] == "failed"
    assert judged["message"].startswith("1 of 3 items failed; item 1: "), judged["message"]
    assert "rejected 'bad'" in judged["message"]
    assert judged["output"] == [{"accepted": "ok"}, None, {"accepted": "fine"}]
    failed_items = [item for item in the_run.of("step_item_finished", "judged") if item["status"] == "failed"]
    assert [item["item_index"] for item in failed_items] == [1]

    not_a_list = the_run.ended("not_a_list")
    assert not_a_list["status"] == "failed"
    assert "for_each" in not_a_list["message"] and "list" in not_a_list["message"], not_a_list["message"]
    too_many = the_run.ended("too_many")
    assert too_many["status"] == "failed"
    assert too_many["message"].startswith("steps.")  # names the step and the field
    assert ".for_each: {{" in too_many["message"]
    assert too_many["message"].endswith("gives 6 items, more than the 5 allowed (STEPLINE_MAX_FOR_EACH_ITEMS)")
    assert the_run.of("step_item_finished", "too_many") == []

    assert the_run.plan["fan"]["for_each"] is True and the_run.plan["count"]["for_each"] is False
    snapshot = {step["node_id"]: step for step in get_run(app.client, the_run.run_id)["steps"]}
    assert (snapshot["fan"]["progress"], snapshot["fan"]["total"]) == (5, 5)
    judged_now = snapshot["judged"]
    assert (judged_now["item_count"], judged_now["items_done"], judged_now["items_failed"]) == (3, 3, 1)


# --- Retries ---


def test_retries_back_off_and_report_each_attempt(app: InProcessApp) -> None:
    the_run = run(app, "retries")

    recovers = the_run.ended("recovers")
    assert recovers["status"] == "success" and recovers["output"]["attempt"] == 3
    assert [e["attempt"] for e in the_run.of("step_started", "recovers")] == [1, 2, 3]
    retrying = the_run.of("step_retrying", "recovers")
    assert [(e["attempt"], e["max_attempts"]) for e in retrying] == [(2, 3), (3, 3)]
    # The scenario's defaults: 0.05 s, doubled each time.
    assert [e["delay_seconds"] for e in retrying] == pytest.approx([0.05, 0.1])
    assert "failed attempt 1 of 2" in retrying[0]["message"]
    assert "failed attempt 2 of 2" in retrying[1]["message"]

    gives_up = the_run.ended("gives_up")
    assert gives_up["status"] == "failed" and "failed attempt 2 of 2" in gives_up["message"]
    assert [e["attempt"] for e in the_run.of("step_retrying", "gives_up")] == [2]

    # A JSON-RPC error from the server is retried too.
    assert the_run.output("protocol_error")["attempt"] == 2
    # A binding error is the scenario's fault: calling again would not help.
    assert the_run.ended("binding_error")["status"] == "failed"
    assert the_run.of("step_retrying", "binding_error") == []
    # A for_each item is retried alone, and says which item it is.
    assert [item["attempt"] for item in the_run.output("per_item")] == [1, 2]
    assert [(e["item_index"], e["attempt"]) for e in the_run.of("step_retrying", "per_item")] == [(1, 2)]
    items = sorted(the_run.of("step_item_finished", "per_item"), key=lambda item: item["item_index"])
    assert [(item["status"], item["attempt"]) for item in items] == [("success", 1), ("success", 2)]

    snapshot = {step["node_id"]: step for step in get_run(app.client, the_run.run_id)["steps"]}
    assert (snapshot["recovers"]["attempt"], snapshot["recovers"]["max_attempts"]) == (3, 3)
    assert (snapshot["gives_up"]["status"], snapshot["gives_up"]["attempt"]) == ("failed", 2)

    assert the_run.finished["status"] == "success"
    message = the_run.finished["message"]
    assert message.startswith("Finished with 2 tolerated failure(s): "), message
    assert "gives_up" in message and "binding_error" in message


def test_a_cancel_during_a_long_backoff_ends_the_run_at_once(app: InProcessApp) -> None:
    run_id = start_run(app.client, "long_backoff")["run_id"]
    retrying = wait_for_event(app, run_id, "step_retrying")
    assert (retrying["attempt"], retrying["delay_seconds"]) == (2, 30)

    response = app.post(f"/api/runs/{run_id}/cancel")
    assert response.status_code == 202, response.text
    the_run = follow(app, run_id)  # would take the whole 30 s backoff were the sleep not cancelled
    assert the_run.finished["status"] == "cancelled"
    assert the_run.ended("flaky")["status"] == "cancelled"
    assert [e["attempt"] for e in the_run.of("step_started", "flaky")] == [1]


# --- Timeouts ---


def test_progress_keeps_a_call_alive_silence_and_the_cap_end_it(app: InProcessApp) -> None:
    the_run = run(app, "timeouts")

    kept_alive = the_run.ended("kept_alive")
    assert kept_alive["status"] == "success", kept_alive["message"]
    assert kept_alive["output"]["notifications"] >= 5
    assert len(the_run.of("step_progress", "kept_alive")) >= 5

    silent = the_run.ended("silent")
    assert silent["status"] == "failed"
    assert silent["message"] == "'silent' sent no progress for 1s (idle_timeout_seconds)"
    capped = the_run.ended("capped")
    assert capped["status"] == "failed"
    assert capped["message"] == "'progress_for' on MCP server 'workflow' did not answer within 1s"
    assert the_run.of("step_progress", "capped"), "progress came, yet the cap still held"
    assert the_run.finished["status"] == "success"


# --- The run's output ---


def test_an_output_that_cannot_be_evaluated_fails_the_run_naming_its_key(app: InProcessApp) -> None:
    the_run = run(app, "bad_output")

    assert the_run.ended("a")["status"] == "success"
    assert the_run.finished["status"] == "failed"
    assert "output.parsed" in the_run.finished["message"], the_run.finished["message"]
    assert the_run.finished["output"] is None
    snapshot = get_run(app.client, the_run.run_id)
    assert (snapshot["status"], snapshot["output"]) == ("failed", None)


# --- Bad input ---


def test_a_sandbox_escape_fails_its_step_and_harms_no_other_run(app: InProcessApp) -> None:
    escape_id = start_run(app.client, "escape")["run_id"]
    others = [start_run(app.client, "conditions", {"flag": True})["run_id"] for _ in range(3)]

    escaped = follow(app, escape_id)
    assert escaped.ended("escape")["status"] == "failed"
    assert "unsafe" in escaped.ended("escape")["message"], escaped.ended("escape")["message"]
    # A string of 10 MB is refused before it is built into an argument.
    assert escaped.ended("bomb")["status"] == "failed"
    assert escaped.finished["status"] == "failed"
    for run_id in others:
        assert follow(app, run_id).finished["status"] == "success"
    # The server and the service keep answering.
    assert run(app, "conditions", {"flag": False}).finished["status"] == "success"


def test_a_scenario_with_a_cycle_an_unknown_step_or_a_syntax_error_is_left_out_and_reported(
    app: InProcessApp,
) -> None:
    listed = {scenario["id"] for scenario in app.get("/api/scenarios").json()}
    assert {"expressions", "graph", "v1_chain"} <= listed
    assert listed.isdisjoint(BROKEN)
    assert app.get("/api/scenarios/cycle").status_code == 404

    page = app.get("/")
    assert page.status_code == 200
    text = unescape(page.text)
    for scenario_id, (_, says) in BROKEN.items():
        assert f"{scenario_id}.json" in text
        for words in says:
            assert words in text, f"{words!r} not on the page"
    assert "a → b → a" in text or "b → a → b" in text


# --- Version 1 ---


def test_a_version_1_chain_still_runs_and_resolves_nested_paths(app: InProcessApp) -> None:
    the_run = run(app, "v1_chain", {"name": "Ada"})

    assert the_run.finished["status"] == "success", the_run.finished
    assert the_run.output("first")["value"] == "Ada"
    # Nested {"from"} is resolved now; templates stay literal text in a version 1 file.
    assert the_run.output("second")["value"] == {"nested": ["Ada"], "text": "{{ input.name }}"}
    assert the_run.output("third") == {"text": "ADA"}
    # Each step still waits for the one before.
    assert the_run.seq("step_finished", "first") < the_run.seq("step_started", "second")
    assert the_run.seq("step_finished", "second") < the_run.seq("step_started", "third")
    assert the_run.plan["second"]["depends_on"] == ["first"]
    assert the_run.finished["output"] is None
