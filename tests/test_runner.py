"""The runner against a real MCP server, no HTTP: the graph, failures, retries, timeouts and every way a run stops.

The server is `tests/servers/workflow.py` (built with the SDK) over stdio, driven through a real `McpPool`;
what it saw (calls in flight, calls cancelled) is asked of it with its own tools. Each run's events are
checked for the shape every ending must have: each started step ends exactly once, a skipped step has
only its ending, run_finished comes last, and no task of the run is left behind.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mcp_process import SERVERS

from web.events import step_progress
from web.mcp_config import StdioServer
from web.mcp_pool import McpPool
from web.registry import RunRecord, RunRegistry
from web.runner import Runner
from web.scenarios import Scenario, parse_scenario
from web.store import RunStore
from web.store_rows import STOPPED_STEP_MESSAGE

pytestmark = pytest.mark.anyio

WORKFLOW = StdioServer(command=sys.executable, args=[str(SERVERS / "workflow.py"), "stdio"])
# Generous: tests wait for events, never for a time to pass; this only bounds a hang.
RUN_LIMIT_SECONDS = 20


@dataclass
class Engine:
    runner: Runner
    registry: RunRegistry
    pool: McpPool

    async def start(self, scenario: Scenario, run_input: dict[str, Any] | None = None) -> RunRecord:
        return await self.runner.launch(scenario, run_input or {})

    async def run(self, scenario: Scenario, run_input: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run to its end; its events, checked for their shape."""
        return await finished(await self.start(scenario, run_input))

    async def ask(self, tool: str, **arguments: Any) -> Any:
        """What the server says of itself, through its own tools."""
        result = await self.pool.call("wf", tool, arguments, timeout=10)
        return result.structured_content

    async def cancelled(self, count: int, key: str = "label") -> list[str]:
        """The labels (or tools) of the calls the server saw cancelled, once it has seen `count` (it notes each
        as its tool's task unwinds, a moment after the notification)."""
        async with asyncio.timeout(RUN_LIMIT_SECONDS):
            while True:
                seen = sorted(call[key] for call in (await self.ask("cancellations"))["cancelled"])
                if len(seen) >= count:
                    return seen
                await asyncio.sleep(0.05)


@asynccontextmanager
async def engine(
    tmp_path: Path | None = None, *, call_timeout: float = 30, max_for_each_items: int = 1000
) -> AsyncIterator[Engine]:
    store = RunStore(tmp_path, retention_days=1, retention_runs=100) if tmp_path is not None else None
    registry = RunRegistry(100, store=store)
    async with registry.history(), McpPool({"wf": WORKFLOW}, connect_timeout=15, heartbeat=5) as pool:
        await pool.settle()
        assert pool.health()["wf"]["state"] == "ready", pool.health()
        runner = Runner(
            pool,
            registry,
            call_timeout=call_timeout,
            max_json_depth=64,
            max_output_bytes=64 * 1024,
            max_for_each_items=max_for_each_items,
        )
        try:
            yield Engine(runner, registry, pool)
        finally:
            await registry.cancel_all()


def scenario(*steps: dict[str, Any], **extra: Any) -> Scenario:
    return parse_scenario({"schema_version": "2", "scenario_id": "t", "name": "t", "steps": list(steps), **extra})


def step(name: str, tool: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "tool": tool, **fields}


async def finished(record: RunRecord) -> list[dict[str, Any]]:
    """The run's events once it has ended (waiting on them, bounded), checked for the shape every ending has."""
    with_limit = asyncio.timeout(RUN_LIMIT_SECONDS)
    async with with_limit:
        events = [event async for event in record.follow()]
        assert record.task is not None
        await asyncio.wait({record.task})
    assert_well_formed(events)
    await asyncio.sleep(0)
    left = [task.get_name() for task in asyncio.all_tasks() if task.get_name().startswith("step ") and not task.done()]
    assert left == [], "tasks left behind"
    return events


async def until(record: RunRecord, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first event (recorded already or to come) that `predicate` accepts."""
    async with asyncio.timeout(RUN_LIMIT_SECONDS):
        async for event in record.follow():
            if predicate(event):
                return event
    raise AssertionError(f"the run ended without such an event: {record.events[-1]}")


def assert_well_formed(events: list[dict[str, Any]]) -> None:
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    kinds = [event["type"] for event in events]
    assert kinds.count("run_finished") == 1 and kinds[-1] == "run_finished", kinds
    started = {event["step_name"] for event in events if event["type"] == "step_started"}
    ends = Counter(event["step_name"] for event in events if event["type"] == "step_finished")
    assert all(count == 1 for count in ends.values()), ends
    assert started <= set(ends), f"started but never ended: {started - set(ends)}"
    for event in events:
        if event["type"] == "step_finished" and event["status"] == "skipped":
            assert event["step_name"] not in started and event["started_at"] is None
    planned = events[0].get("plan") if kinds[0] == "run_started" else None
    if planned is not None:  # a run that started ends every step of its plan
        assert set(ends) == {entry["name"] for entry in planned}


def ends(events: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    return {e["step_name"]: (e["status"], e["message"]) for e in events if e["type"] == "step_finished"}


def of(events: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind and (name is None or e.get("step_name") == name)]


# --- the graph ------------------------------------------------------------------------------------


async def test_independent_steps_run_at_once_and_a_join_waits_for_both() -> None:
    async with engine() as wf:
        events = await wf.run(
            scenario(
                *(step(name, "sleep", input={"seconds": 1, "label": name}) for name in ("a", "b", "c")),
                step("join", "echo", input={"value": ["{{ steps.a.output }}", "{{ steps.c.status }}"]}),
                step("after", "echo", input={"value": "{{ steps.join.output.value }}"}, needs=["b"]),
                # The server saw the three calls in flight at once.
                step("peak", "in_flight", needs=["a", "b", "c"]),
                output={"joined": "{{ steps.after.output.value }}", "text": "{{ steps.peak.output.max }} at once"},
            )
        )

    plan = events[0]["plan"]
    assert [(s["name"], s["depends_on"]) for s in plan] == [
        ("a", []), ("b", []), ("c", []), ("join", ["a", "c"]), ("after", ["b", "join"]), ("peak", ["a", "b", "c"])
    ]
    assert {name: status for name, (status, _) in ends(events).items()} == dict.fromkeys(plan_names(plan), "success")
    order = [e["step_name"] for e in of(events, "step_finished")]
    assert order.index("join") > max(order.index("a"), order.index("c"))
    assert events[-1]["status"] == "success"
    assert events[-1]["output"] == {"joined": ["a", "success"], "text": "3 at once"}


def plan_names(plan: list[dict[str, Any]]) -> list[str]:
    return [entry["name"] for entry in plan]


async def test_a_version_1_chain_runs_on_the_same_engine() -> None:
    chain = parse_scenario(
        {
            "schema_version": "1",
            "scenario_id": "v1",
            "name": "v1",
            "steps": [
                {"name": "first", "tool": "echo", "input": {"value": {"from": "input.word"}}},
                {
                    "name": "second",
                    "tool": "echo",
                    "input": {"value": [{"from": "steps.first.output.value"}, "{{ x }}"]},
                },
            ],
        }
    )
    async with engine() as wf:
        events = await wf.run(chain, {"word": "hello"})

    assert [(s["name"], s["depends_on"]) for s in events[0]["plan"]] == [("first", []), ("second", ["first"])]
    second = of(events, "step_finished", "second")[0]
    # A nested path is read now; a version 1 string stays literal.
    assert second["output"] == {"value": ["hello", "{{ x }}"], "note": "(not given)"}
    assert (events[-1]["status"], events[-1]["message"], events[-1]["output"]) == ("success", "", None)


async def test_a_false_condition_skips_the_step_and_what_depends_on_it_still_runs() -> None:
    async with engine() as wf:
        events = await wf.run(
            scenario(
                step("count", "echo", input={"value": 0}),
                step("shout", "upper", input={"text": "x"}, when="{{ steps.count.output.value > 0 }}"),
                step("after", "echo", input={"value": "{{ steps.shout.status }}", "note": "{{ steps.shout.output }}"}),
            )
        )

    assert ends(events)["shout"] == ("skipped", "Condition is false: {{ steps.count.output.value > 0 }}")
    assert not of(events, "step_started", "shout")
    assert of(events, "step_finished", "after")[0]["output"] == {"value": "skipped", "note": None}


async def test_a_tolerated_failure_lets_the_run_succeed_and_says_so() -> None:
    async with engine() as wf:
        events = await wf.run(
            scenario(
                step("nap", "sleep", input={"seconds": 0.2}),
                # Ends after "worse" does; the run's message names them in the file's order all the same.
                step("bad", "fail", input={"message": "no luck"}, on_error="continue", needs=["nap"]),
                step("worse", "fail", input={"message": "none"}, on_error="continue"),
                step("after", "echo", input={"value": "{{ steps.bad.status }}", "note": "{{ steps.bad.output }}"},
                     needs=["worse"]),
            )
        )

    assert ends(events)["bad"] == ("failed", "Error executing tool fail: no luck")
    assert of(events, "step_finished", "after")[0]["output"] == {"value": "failed", "note": None}
    assert (events[-1]["status"], events[-1]["message"]) == (
        "success", "Finished with 2 tolerated failure(s): bad, worse"
    )


# --- failures and stops ---------------------------------------------------------------------------


async def test_a_failure_cancels_the_steps_in_flight_on_the_server_and_skips_the_rest() -> None:
    async with engine() as wf:
        started = time.monotonic()
        events = await wf.run(
            scenario(
                step("slow1", "sleep", input={"seconds": 30, "label": "one"}),
                step("slow2", "sleep", input={"seconds": 30, "label": "two"}),
                step("both", "await_in_flight", input={"count": 2}),
                step("boom", "fail", input={"message": "it broke"}, needs=["both"]),
                step("later", "echo", needs=["boom"]),
                step("never", "echo", needs=["slow1"]),
            )
        )
        took = time.monotonic() - started
        cancelled = await wf.cancelled(2)

    assert ends(events) == {
        "both": ("success", ""),
        "boom": ("failed", "Error executing tool fail: it broke"),
        "later": ("skipped", "Not run: step 'boom' failed"),
        "never": ("skipped", "Not run: step 'boom' failed"),
        "slow1": ("cancelled", "Cancelled: step 'boom' failed"),
        "slow2": ("cancelled", "Cancelled: step 'boom' failed"),
    }
    assert (events[-1]["status"], events[-1]["message"]) == (
        "failed", "Step 'boom' failed: Error executing tool fail: it broke"
    )
    assert cancelled == ["one", "two"]
    assert took < 15, "the sleeping calls were cut short, not waited for"


async def test_a_cancel_by_request_ends_the_step_in_flight_and_skips_the_rest() -> None:
    async with engine() as wf:
        record = await wf.start(
            scenario(
                step("slow", "sleep", input={"seconds": 30, "label": "slow"}),
                step("next", "echo", needs=["slow"]),
            )
        )
        await until(record, lambda e: e["type"] == "step_started")
        await wf.ask("await_in_flight", count=1)
        await wf.registry.cancel(record.run_id)
        events = await finished(record)
        cancelled = await wf.cancelled(1)

    assert ends(events) == {
        "slow": ("cancelled", "Cancelled by request"),
        "next": ("skipped", "Not run: Cancelled by request"),
    }
    assert (events[-1]["status"], events[-1]["message"]) == ("cancelled", "Cancelled by request")
    # The step in flight ends first, then those that will never run.
    assert [e["step_name"] for e in of(events, "step_finished")] == ["slow", "next"]
    assert cancelled == ["slow"]


async def test_a_shutdown_ends_parallel_steps_as_interrupted() -> None:
    async with engine() as wf:
        record = await wf.start(
            scenario(
                step("a", "sleep", input={"seconds": 30}),
                step("b", "sleep", input={"seconds": 30}),
                step("c", "echo", needs=["a", "b"]),
            )
        )
        await wf.ask("await_in_flight", count=2)
        await wf.registry.cancel_all()
        events = await finished(record)

    step_message = "Interrupted: the server shut down during this step"
    run_message = "Interrupted: the server shut down while this run was in progress"
    assert ends(events) == {
        "a": ("cancelled", step_message),
        "b": ("cancelled", step_message),
        "c": ("skipped", f"Not run: {run_message}"),
    }
    assert (events[-1]["status"], events[-1]["message"]) == ("failed", run_message)


async def test_a_run_whose_history_is_refused_stops_its_steps(tmp_path: Path) -> None:
    async with engine(tmp_path) as wf:
        record = await wf.start(
            scenario(step("slow", "sleep", input={"seconds": 30}), step("next", "echo", needs=["slow"]))
        )
        await wf.ask("await_in_flight", count=1)
        # Text the history cannot hold: the store refuses the run, and the run is stopped for it.
        record.emit(step_progress(step_name="slow", index=0, progress=1, total=None, message="caf\ud800"))
        events = await finished(record)

    assert ends(events)["slow"] == ("cancelled", STOPPED_STEP_MESSAGE)
    assert ends(events)["next"][0] == "skipped"
    assert events[-1]["status"] == "failed"
    assert "History could not be recorded" in events[-1]["message"]


async def test_a_cancel_during_a_backoff_ends_the_step_at_once() -> None:
    async with engine() as wf:
        record = await wf.start(
            scenario(
                step("flaky", "flaky", input={"key": "backoff", "failures": 5},
                     retry={"max_attempts": 3, "backoff_seconds": 60}),
            )
        )
        retrying = await until(record, lambda e: e["type"] == "step_retrying")
        started = time.monotonic()
        await wf.registry.cancel(record.run_id)
        events = await finished(record)

    assert time.monotonic() - started < 5
    assert (retrying["attempt"], retrying["max_attempts"], retrying["delay_seconds"]) == (2, 3, 60)
    assert retrying["message"] == "Error executing tool flaky: flaky 'backoff' failed attempt 1 of 5 planned failures"
    assert ends(events) == {"flaky": ("cancelled", "Cancelled by request")}
    assert events[-1]["status"] == "cancelled"


async def test_a_cancel_stops_every_item_in_flight() -> None:
    async with engine() as wf:
        record = await wf.start(
            scenario(
                step("fan", "sleep", for_each="{{ [1, 2, 3, 4, 5] }}", max_parallel=3,
                     input={"seconds": 30, "label": "item {{ item }}"}),
            )
        )
        await wf.ask("await_in_flight", count=3)
        await wf.registry.cancel(record.run_id)
        events = await finished(record)
        cancelled = await wf.cancelled(3)

    assert ends(events) == {"fan": ("cancelled", "Cancelled by request")}
    assert cancelled == ["item 1", "item 2", "item 3"]
    assert not of(events, "step_item_finished")


# --- retries and timeouts -------------------------------------------------------------------------


async def test_retries_until_success_with_one_start_per_attempt() -> None:
    async with engine() as wf:
        events = await wf.run(
            scenario(
                step("flaky", "flaky", input={"key": "k", "failures": 2, "how": "jsonrpc"},
                     retry={"max_attempts": 3, "backoff_seconds": 0.01, "backoff_multiplier": 3}),
            )
        )

    assert [e["attempt"] for e in of(events, "step_started")] == [1, 2, 3]
    retries = of(events, "step_retrying")
    assert [(e["attempt"], e["max_attempts"], e["delay_seconds"], e["item_index"]) for e in retries] == [
        (2, 3, 0.01, None), (3, 3, pytest.approx(0.03), None)
    ]
    assert "flaky 'k' failed attempt 1 of 2 planned failures" in retries[0]["message"]
    assert of(events, "step_finished")[0]["output"] == {"key": "k", "attempt": 3}


async def test_a_binding_error_is_never_retried() -> None:
    async with engine() as wf:
        events = await wf.run(
            scenario(
                step("shout", "upper", input={"text": "{{ input.missing }}"}, retry={"max_attempts": 3}),
            )
        )

    assert of(events, "step_retrying") == []
    status, message = ends(events)["shout"]
    assert status == "failed"
    assert message == "required argument 'text' is missing: {{ input.missing }} is undefined"


async def test_an_idle_timeout_fails_a_silent_call_and_progress_keeps_a_call_alive() -> None:
    async with engine() as wf:
        started = time.monotonic()
        events = await wf.run(
            scenario(
                step("quiet", "silent", input={"seconds": 20}, idle_timeout_seconds=0.5, on_error="continue"),
                step("chatty", "progress_for", input={"seconds": 1.5, "every": 0.2}, idle_timeout_seconds=0.6),
                step("capped", "progress_for", input={"seconds": 20, "every": 0.1}, idle_timeout_seconds=5,
                     timeout_seconds=0.5, on_error="continue"),
            )
        )
        took = time.monotonic() - started
        # Both calls cut short were cancelled on the server too.
        cancelled = await wf.cancelled(2, key="tool")

    assert cancelled == ["progress_for", "silent"]
    assert ends(events)["quiet"] == ("failed", "'silent' sent no progress for 0.5s (idle_timeout_seconds)")
    assert ends(events)["chatty"][0] == "success"
    assert len(of(events, "step_progress", "chatty")) >= 5
    assert ends(events)["capped"] == ("failed", "'progress_for' on MCP server 'wf' did not answer within 0.5s")
    assert took < 10


# --- for_each -------------------------------------------------------------------------------------


async def test_for_each_calls_once_per_item_at_most_max_parallel_at_once() -> None:
    async with engine() as wf:
        events = await wf.run(
            scenario(
                step("fan", "sleep", for_each="{{ input.labels }}", max_parallel=2,
                     input={"seconds": 0.1, "label": "{{ item }}-{{ item_index }}"}),
                step("peak", "in_flight", needs=["fan"]),
            ),
            {"labels": ["a", "b", "c", "d", "e"]},
        )

    (started,) = of(events, "step_started", "fan")
    assert (started["input"], started["item_count"], started["attempt"]) == (None, 5, 1)
    items = of(events, "step_item_finished")
    assert sorted(e["item_index"] for e in items) == [0, 1, 2, 3, 4]
    assert {e["item_index"]: e["input"]["label"] for e in items}[3] == "d-3"
    fan = of(events, "step_finished", "fan")[0]
    assert (fan["status"], fan["output"]) == ("success", ["a-0", "b-1", "c-2", "d-3", "e-4"])
    assert of(events, "step_finished", "peak")[0]["output"]["max"] == 2


async def test_a_failed_item_fails_the_step_after_every_item_has_run() -> None:
    async with engine() as wf:
        events = await wf.run(
            scenario(
                step("check", "judge", for_each="{{ [1, 2, 3, 2] }}", input={"value": "{{ item }}", "reject": 2},
                     on_error="continue"),
                step("after", "echo", input={"value": "{{ steps.check.output }}"}),
            )
        )

    items = sorted(of(events, "step_item_finished"), key=lambda e: e["item_index"])
    assert [e["status"] for e in items] == ["success", "failed", "success", "failed"]
    check = of(events, "step_finished", "check")[0]
    assert check["status"] == "failed"
    assert check["message"] == "2 of 4 items failed; item 1: Error executing tool judge: rejected 2"
    assert check["output"] == [{"accepted": 1}, None, {"accepted": 3}, None]
    assert of(events, "step_finished", "after")[0]["output"]["value"] is None


async def test_for_each_over_a_non_list_or_too_many_items_fails_the_step_saying_why() -> None:
    async with engine(max_for_each_items=3) as wf:
        events = await wf.run(
            scenario(
                step("text", "echo", for_each="{{ input.word }}", on_error="continue"),
                step("many", "echo", for_each="{{ input.numbers }}", on_error="continue"),
                step("retried_item", "flaky", for_each="{{ ['x'] }}", retry={"max_attempts": 2, "backoff_seconds": 0},
                     input={"key": "{{ item }}", "failures": 1}),
            ),
            {"word": "abc", "numbers": [1, 2, 3, 4]},
        )

    assert ends(events)["text"] == ("failed", "steps.0 (text).for_each: {{ input.word }} gives text, not a list")
    assert ends(events)["many"] == (
        "failed",
        "steps.1 (many).for_each: {{ input.numbers }} gives 4 items, "
        "more than the 3 allowed (STEPLINE_MAX_FOR_EACH_ITEMS)",
    )
    (retry,) = of(events, "step_retrying")
    assert (retry["item_index"], retry["attempt"]) == (0, 2)
    (item,) = of(events, "step_item_finished", "retried_item")
    assert (item["status"], item["attempt"], item["output"]) == ("success", 2, {"key": "x", "attempt": 2})


# --- the run's output -----------------------------------------------------------------------------


async def test_an_output_that_cannot_be_evaluated_fails_the_run_naming_its_key() -> None:
    async with engine() as wf:
        events = await wf.run(
            scenario(
                step("one", "echo", input={"value": 1}),
                output={"fine": "{{ steps.one.output.value }}", "broken": "{{ steps.one.output.note | fromjson }}"},
            )
        )

    assert ends(events)["one"][0] == "success"
    assert events[-1]["status"] == "failed"
    assert events[-1]["output"] is None
    assert "output.broken" in events[-1]["message"]
