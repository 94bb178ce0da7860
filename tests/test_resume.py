"""Runs outlive their process: a `stepline serve` killed (or stopped) mid-run comes back on the same data
directory and the run goes on from its recorded events.

The tools are those of tests/servers/counting.py, served over streamable HTTP in a process of its own: it
outlives every Stepline of a test, and its counts prove which steps and for_each items were called again.
Everything else is what a user sees: the run's snapshot (GET /api/runs/{id}) and its event stream.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import StepServer, wait_until
from inprocess import in_process
from mcp import Client
from mcp_process import SERVERS, HttpMcpServer
from runs import get_run, start_run, wait_finished
from sse import frames, parse_lines, read_events
from test_history import kill_hard

from web.events import AnswerAction

# The proxy header names who answers a Resume; an operator may.
ALICE = {"X-Forwarded-User": "alice", "X-Forwarded-Groups": "ops"}
ALICE_ACTOR = {"name": "alice", "source": "proxy"}
ACCESS = (
    "--auth-header", "X-Forwarded-User", "--groups-header", "X-Forwarded-Groups", "--trusted-proxies", "127.0.0.1",
)  # fmt: skip
# Requests naming nobody (the test's own) may start and read runs.
ACCESS_ENV = {"STEPLINE_ROLE_MAP": "ops=operator", "STEPLINE_ALLOW_ANONYMOUS": "operator"}
# Long enough that a test always stops Stepline during the call; the call made again answers at once.
HOLD_SECONDS = 60
ITEMS = 200
MAX_PARALLEL = 4
ITEM_SECONDS = 0.03
KEY = "{{ run.id }}"  # each run counts its own calls


def v2(scenario_id: str, *steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"schema_version": "2", "scenario_id": scenario_id, "name": scenario_id, "steps": list(steps), **extra}


def step(name: str, item: int, *, seconds: float = 0, **extra: Any) -> dict[str, Any]:
    """A call of the idempotent `step` tool, counted under the run's id and `item`."""
    return {"name": name, "tool": "step", "input": {"key": KEY, "item": item, "seconds": seconds}, **extra}


def charge(name: str, **extra: Any) -> dict[str, Any]:
    """A call of `charge` (no annotations: unsafe to call twice), held long enough to stop Stepline during it."""
    return {"name": name, "tool": "charge", "input": {"key": KEY, "seconds": HOLD_SECONDS}, **extra}


STEADY = v2(
    "steady",
    step("first", 1),
    step("slow", 2, seconds=HOLD_SECONDS, needs=["first"]),
    step("last", 3, needs=["slow"]),
    output="{{ [steps.first.output.item, steps.slow.output.item, steps.last.output.item] }}",
)
MANY = v2(
    "many",
    {
        "name": "each",
        "tool": "step",
        "for_each": "{{ input.items }}",
        "max_parallel": MAX_PARALLEL,
        "input": {"key": KEY, "item": "{{ item }}", "seconds": ITEM_SECONDS},
    },
    input_schema={"type": "object", "properties": {"items": {"type": "array"}}, "required": ["items"]},
    output="{{ steps.each.output | map(attribute='item') | list }}",
)
# Two calls in flight at once: one safe to call again, one not.
BOTH = v2(
    "both", step("quote", 1, seconds=HOLD_SECONDS), charge("pay"),
    output="{{ [steps.quote.output.item, steps.pay.output.charges] }}",
)  # fmt: skip
PAY = v2("pay", step("quote", 1), charge("pay", needs=["quote"]), output="{{ steps.pay.output.charges }}")
PAY_NEVER = v2("pay_never", step("quote", 1), charge("pay", needs=["quote"], resume="never"))
PAY_AUTO = v2(
    "pay_auto", step("quote", 1), charge("pay", needs=["quote"]), defaults={"resume": "auto"},
    output="{{ steps.pay.output.charges }}",
)  # fmt: skip
# Each item asks a person; one is answered before the kill.
SIGN_OFF = v2(
    "sign_off",
    {"name": "approve", "type": "approval", "message": "Publish {{ item }}?", "for_each": "{{ ['a', 'b', 'c'] }}"},
    output="{{ steps.approve.output | map(attribute='action') | list }}",
)
SCENARIOS = [STEADY, MANY, BOTH, PAY, PAY_NEVER, PAY_AUTO, SIGN_OFF]


@pytest.fixture
def home(tmp_path: Path, counting: HttpMcpServer) -> tuple[Path, Path, Path]:
    """(scenario folder, mcpServers file, data directory) the Stepline of a test and its restarts share."""
    folder = tmp_path / "scenarios"
    folder.mkdir()
    for scenario in SCENARIOS:
        (folder / f"{scenario['scenario_id']}.json").write_text(json.dumps(scenario), encoding="utf-8")
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"counting": {"type": "http", "url": counting.url}}}), "utf-8")
    return folder, config, tmp_path / "data"


@pytest.fixture
def serve(make_server: Callable[..., StepServer], home: tuple[Path, Path, Path]) -> Callable[..., StepServer]:
    """Start a `stepline serve` on the test's data directory (again after a kill or a stop), with `more` flags."""
    folder, config, data = home
    args = ("--scenarios", str(folder), "--mcp-config", str(config), "--data-dir", str(data), *ACCESS)
    return lambda *more: make_server(*args, *more, env=ACCESS_ENV)


def calls(counting: HttpMcpServer, key: str) -> dict[str, Any]:
    """The counting server's own account of the calls under `key` (its `calls` tool)."""

    async def ask() -> dict[str, Any]:
        async with Client(counting.url) as client:
            result = await client.call_tool("calls", {"key": key})
        assert not result.is_error and result.structured_content is not None, result
        return result.structured_content

    return anyio.run(ask)


def by_item(counting: HttpMcpServer, key: str) -> dict[int, int]:
    return {int(item): count for item, count in calls(counting, key)["by_item"].items()}


def stored(data: Path, run_id: str) -> list[dict[str, Any]]:
    """The run's events committed to the history so far: what a restarted Stepline goes on from."""
    uri = f"file:{data / 'stepline.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as db:
        rows = db.execute("SELECT seq, type, data FROM events WHERE run_id = ? ORDER BY seq", (run_id,))
        return [{"seq": seq, "type": kind, **json.loads(data)} for seq, kind, data in rows]


def ended_items(data: Path, run_id: str) -> set[int]:
    return {e["item_index"] for e in stored(data, run_id) if e["type"] == "step_item_finished"}


def started_on_disk(data: Path, run_id: str, step_name: str) -> bool:
    return any(e["type"] == "step_started" and e["step_name"] == step_name for e in stored(data, run_id))


def wait_in_call(counting: HttpMcpServer, data: Path, run_id: str, step_name: str, item: int) -> None:
    """Until the server holds the step's call and its start (with all before it) is on disk."""
    wait_until(
        lambda: by_item(counting, run_id).get(item) == 1 and started_on_disk(data, run_id, step_name),
        20,
        f"step {step_name!r} of run {run_id} in its call",
    )


def pending_resume(server: StepServer, run_id: str) -> dict[str, Any]:
    wait_until(lambda: get_run(server.url, run_id)["status"] == "waiting", 20, f"run {run_id} to wait")
    [request] = get_run(server.url, run_id)["pending_requests"]
    return request


def kinds_pending(server: StepServer, run_id: str) -> list[str]:
    return [request["kind"] for request in get_run(server.url, run_id)["pending_requests"]]


def answer(server: StepServer, run_id: str, request_id: str, action: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/runs/{run_id}/requests/{request_id}", json={"action": action}, headers=ALICE, timeout=10
    )


def steps_of(run: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s["node_id"], s["status"]) for s in run["steps"]]


def started_steps(events: list[dict[str, Any]]) -> list[str]:
    return [e["step_name"] for e in events if e["type"] == "step_started"]


def assert_contiguous(events: list[dict[str, Any]]) -> None:
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


class LiveReader:
    """A reader of the run's JSON event stream, in a thread: what it had seen when its server died."""

    def __init__(self, server: StepServer, run_id: str) -> None:
        self.seen: list[dict[str, Any]] = []
        self._url = f"{server.url}/api/runs/{run_id}/events"
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(httpx.HTTPError):
            with httpx.stream("GET", self._url, timeout=httpx.Timeout(10, read=None)) as response:
                for frame in frames(parse_lines(response.iter_lines())):
                    self.seen.append(frame.json())

    def join(self) -> list[dict[str, Any]]:
        self._thread.join(10)
        assert not self._thread.is_alive(), "the stream outlived its server"
        return self.seen


def test_a_run_killed_mid_step_goes_on_calling_only_the_step_in_flight(
    serve: Callable[..., StepServer], counting: HttpMcpServer, home: tuple[Path, Path, Path]
) -> None:
    data = home[2]
    server = serve()
    run_id = start_run(server.url, "steady")["run_id"]
    reader = LiveReader(server, run_id)
    wait_in_call(counting, data, run_id, "slow", 2)
    wait_until(lambda: "slow" in started_steps(reader.seen), 10, "the reader to see the step start")

    kill_hard(server)
    seen_before = reader.join()
    server = serve()
    run = wait_finished(server.url, run_id)

    assert (run["status"], run["output"]) == ("success", [1, 2, 3]), run
    assert steps_of(run) == [("first", "success"), ("slow", "success"), ("last", "success")]
    # The step that had ended was not called again; the one in flight was, once.
    assert by_item(counting, run_id) == {1: 1, 2: 2, 3: 1}
    events = read_events(server.url, run_id)
    assert_contiguous(events)
    [resumed] = [e for e in events if e["type"] == "run_resumed"]
    assert (resumed["attempt"], resumed["waiting_steps"], resumed["rerun_steps"]) == (1, [], ["slow"])
    assert resumed["by"] is None  # the server resumed it: nobody was asked
    assert started_steps(events) == ["first", "slow", "slow", "last"]
    # What the reader saw before the kill is what the history kept: the run goes on after it, seq for seq.
    assert seen_before == events[: len(seen_before)]
    last_seen = seen_before[-1]["seq"]
    tail = read_events(server.url, run_id, headers={"Last-Event-ID": str(last_seen)})
    assert tail == events[last_seen:]
    assert (tail[0]["type"], tail[-1]["type"]) == ("run_resumed", "run_finished")


def test_a_for_each_killed_midway_twice_calls_again_only_the_items_that_had_not_ended(
    serve: Callable[..., StepServer], counting: HttpMcpServer, home: tuple[Path, Path, Path]
) -> None:
    data = home[2]
    server = serve()
    run_id = start_run(server.url, "many", {"items": list(range(ITEMS))})["run_id"]
    # Per kill, the items called again after it: called before it, their ending not on disk (in flight, or
    # answered in the last instant before the history could record it).
    again: list[set[int]] = []
    unanswered: Counter[int] = Counter()  # calls the server never answered (cut off by a kill), by item
    for fraction in (0.4, 0.7):
        wait_until(lambda f=fraction: len(ended_items(data, run_id)) >= ITEMS * f, 30, f"{fraction:.0%} of the items")
        kill_hard(server)
        ended = ended_items(data, run_id)  # what the restart goes on from
        at_kill = calls(counting, run_id)
        called = {int(item) for item in at_kill["by_item"]}
        cut_off = Counter({int(i): n - at_kill["answered"].get(i, 0) for i, n in at_kill["by_item"].items()})
        in_flight = set(cut_off - unanswered)
        unanswered = cut_off
        assert 0 < len(ended) < ITEMS and ended <= called
        assert len(in_flight) <= MAX_PARALLEL and in_flight <= called - ended
        again.append(called - ended)
        server = serve()
    run = wait_finished(server.url, run_id, timeout=60)

    assert run["status"] == "success", run
    assert run["output"] == list(range(ITEMS))
    counts = by_item(counting, run_id)
    assert counts == {item: 1 + sum(item in items for items in again) for item in range(ITEMS)}
    events = read_events(server.url, run_id)
    assert_contiguous(events)
    # The step was started once: its items go on under that start, each ended once.
    assert started_steps(events) == ["each"]
    finished_items = [e["item_index"] for e in events if e["type"] == "step_item_finished"]
    assert sorted(finished_items) == list(range(ITEMS))
    resumed = [e for e in events if e["type"] == "run_resumed"]
    assert [(e["attempt"], e["rerun_steps"], e["by"]) for e in resumed] == [(1, ["each"], None), (2, ["each"], None)]


def test_an_unsafe_step_killed_mid_call_waits_for_a_resume_unless_its_scenario_says_otherwise(
    serve: Callable[..., StepServer], counting: HttpMcpServer, home: tuple[Path, Path, Path]
) -> None:
    data = home[2]
    server = serve()
    runs = {name: start_run(server.url, scenario)["run_id"] for name, scenario in [
        ("accepted", "pay"), ("declined", "pay"), ("never", "pay_never"), ("auto", "pay_auto"),
    ]}  # fmt: skip
    for run_id in runs.values():
        wait_in_call(counting, data, run_id, "pay", 0)

    kill_hard(server)
    server = serve()

    # "resume": "never": the run ends as before runs were resumed, saying why.
    never = wait_finished(server.url, runs["never"])
    message = 'Interrupted by a server restart: step \'pay\' says "resume": "never", so this run could not go on'
    assert (never["status"], never["message"]) == ("failed", message)
    assert steps_of(never) == [("quote", "success"), ("pay", "failed")]
    assert never["steps"][1]["message"] == 'Interrupted by a server restart: step \'pay\' says "resume": "never"'
    # "resume": "auto" (in the scenario's defaults): run again without asking.
    auto = wait_finished(server.url, runs["auto"])
    assert (auto["status"], auto["output"]) == ("success", 2)
    [resumed] = [e for e in read_events(server.url, runs["auto"]) if e["type"] == "run_resumed"]
    assert (resumed["rerun_steps"], resumed["by"]) == (["pay"], None)

    # Otherwise the run waits for a person, saying the step may have partly run.
    for name in ("accepted", "declined"):
        run = get_run(server.url, runs[name])
        assert run["status"] == "waiting"
        [request] = run["pending_requests"]
        assert (request["kind"], request["step_name"], request["steps"]) == ("resume", "pay", ["pay"])
        assert "step 'pay' was running: it may have partly run" in request["message"]
        assert by_item(counting, runs[name]) == {1: 1, 0: 1}  # nothing called again while it waits
        assert steps_of(run) == [("quote", "success"), ("pay", "waiting")]

    accepted = get_run(server.url, runs["accepted"])["pending_requests"][0]
    assert answer(server, runs["accepted"], accepted["request_id"], "accept").status_code == 200
    run = wait_finished(server.url, runs["accepted"])
    assert (run["status"], run["output"]) == ("success", 2)
    assert by_item(counting, runs["accepted"]) == {1: 1, 0: 2}
    events = read_events(server.url, runs["accepted"])
    assert_contiguous(events)
    [resumed] = [e for e in events if e["type"] == "run_resumed"]
    assert (resumed["rerun_steps"], resumed["by"]) == (["pay"], ALICE_ACTOR)

    declined = get_run(server.url, runs["declined"])["pending_requests"][0]
    assert answer(server, runs["declined"], declined["request_id"], "decline").status_code == 200
    run = wait_finished(server.url, runs["declined"])
    assert (run["status"], run["message"]) == ("failed", "Not resumed after a server restart (declined by alice)")
    assert by_item(counting, runs["declined"]) == {1: 1, 0: 1}
    assert (steps_of(run), run["pending_requests"]) == ([("quote", "success"), ("pay", "failed")], [])
    assert not [e for e in read_events(server.url, runs["declined"]) if e["type"] == "run_resumed"]


def test_a_graceful_stop_mid_run_records_no_failure_and_the_run_goes_on_after_the_restart(
    serve: Callable[..., StepServer], counting: HttpMcpServer, home: tuple[Path, Path, Path]
) -> None:
    data = home[2]
    server = serve()
    run_id = start_run(server.url, "steady")["run_id"]
    wait_in_call(counting, data, run_id, "slow", 2)

    assert server.stop() in (0, -signal.SIGTERM)
    # The stopping server recorded no ending: nothing failed, the run is left for the restart.
    on_disk = stored(data, run_id)
    assert [e for e in on_disk if e.get("status") in ("failed", "cancelled")] == []
    assert "run_finished" not in [e["type"] for e in on_disk]
    server = serve()
    run = wait_finished(server.url, run_id)

    assert (run["status"], run["output"]) == ("success", [1, 2, 3]), run
    assert by_item(counting, run_id) == {1: 1, 2: 2, 3: 1}
    events = read_events(server.url, run_id)
    assert_contiguous(events)
    assert [e["rerun_steps"] for e in events if e["type"] == "run_resumed"] == [["slow"]]


def test_a_resume_request_outlives_a_kill_and_a_graceful_stop_and_is_answered_after_them(
    serve: Callable[..., StepServer], counting: HttpMcpServer, home: tuple[Path, Path, Path]
) -> None:
    data = home[2]
    server = serve()
    run_id = start_run(server.url, "pay")["run_id"]
    wait_in_call(counting, data, run_id, "pay", 0)
    kill_hard(server)
    server = serve()
    asked = pending_resume(server, run_id)
    wait_until(lambda: "input_requested" in [e["type"] for e in stored(data, run_id)], 10, "the request on disk")

    kill_hard(server)
    server = serve()
    # The same request, asked again rather than anew; a graceful stop leaves it as it is too.
    assert pending_resume(server, run_id) == asked
    assert server.stop() in (0, -signal.SIGTERM)
    assert [e["type"] for e in stored(data, run_id)][-1] == "input_requested"
    server = serve()

    assert pending_resume(server, run_id) == asked
    assert answer(server, run_id, asked["request_id"], "accept").status_code == 200
    run = wait_finished(server.url, run_id)
    assert (run["status"], run["output"]) == ("success", 2)
    assert by_item(counting, run_id) == {1: 1, 0: 2}
    events = read_events(server.url, run_id)
    assert_contiguous(events)
    assert [e["kind"] for e in events if e["type"] == "input_requested"] == ["resume"]
    assert [(e["attempt"], e["by"]) for e in events if e["type"] == "run_resumed"] == [(1, ALICE_ACTOR)]


def test_a_for_each_stopped_gracefully_midway_goes_on_after_the_restart(
    serve: Callable[..., StepServer], counting: HttpMcpServer, home: tuple[Path, Path, Path]
) -> None:
    data = home[2]
    server = serve()
    run_id = start_run(server.url, "many", {"items": list(range(ITEMS))})["run_id"]
    wait_until(lambda: len(ended_items(data, run_id)) >= ITEMS // 4, 30, "a quarter of the items ended")

    assert server.stop() in (0, -signal.SIGTERM)
    # The items stopped in their calls were not recorded as ended (failed or cancelled): they run again.
    on_disk = stored(data, run_id)
    assert [e for e in on_disk if e.get("status") not in (None, "success")] == []
    ended = ended_items(data, run_id)
    server = serve()
    run = wait_finished(server.url, run_id, timeout=60)

    assert (run["status"], run["output"]) == ("success", list(range(ITEMS))), run["message"]
    counts = by_item(counting, run_id)
    assert {item for item, count in counts.items() if count == 1} >= ended
    assert set(counts.values()) <= {1, 2}


def test_steps_in_flight_side_by_side_are_asked_about_together_when_one_is_unsafe(
    serve: Callable[..., StepServer], counting: HttpMcpServer, home: tuple[Path, Path, Path]
) -> None:
    data = home[2]
    server = serve()
    run_id = start_run(server.url, "both")["run_id"]
    wait_in_call(counting, data, run_id, "quote", 1)
    wait_in_call(counting, data, run_id, "pay", 0)
    kill_hard(server)
    server = serve()

    request = pending_resume(server, run_id)
    # Only the unsafe step is named to the person; both run again once resumed.
    assert "step 'pay' was running" in request["message"]
    assert sorted(request["steps"]) == ["pay", "quote"]
    assert by_item(counting, run_id) == {1: 1, 0: 1}
    assert answer(server, run_id, request["request_id"], "accept").status_code == 200
    run = wait_finished(server.url, run_id)
    assert (run["status"], run["output"]) == ("success", [1, 2])
    assert by_item(counting, run_id) == {1: 2, 0: 2}
    [resumed] = [e for e in read_events(server.url, run_id) if e["type"] == "run_resumed"]
    assert (sorted(resumed["rerun_steps"]), resumed["by"]) == (["pay", "quote"], ALICE_ACTOR)


def test_a_resume_nobody_answers_ends_the_run_and_one_waiting_for_it_can_be_cancelled(
    serve: Callable[..., StepServer], counting: HttpMcpServer, home: tuple[Path, Path, Path]
) -> None:
    data = home[2]
    server = serve()
    unanswered, cancelled = (start_run(server.url, "pay")["run_id"] for _ in range(2))
    for run_id in (unanswered, cancelled):
        wait_in_call(counting, data, run_id, "pay", 0)
    kill_hard(server)
    server = serve("--wait-timeout", "2")
    pending_resume(server, cancelled)

    response = httpx.post(f"{server.url}/api/runs/{cancelled}/cancel", headers=ALICE, timeout=10)
    assert response.status_code == 202, response.text
    run = wait_finished(server.url, cancelled)
    assert (run["status"], run["pending_requests"]) == ("cancelled", [])
    assert [(s["node_id"], s["status"], s["message"]) for s in run["steps"]] == [
        ("quote", "success", ""),
        ("pay", "cancelled", "Cancelled by request"),
    ]
    run = wait_finished(server.url, unanswered)
    expired = "Not resumed after a server restart (expired: nobody answered)"
    assert (run["status"], run["message"]) == ("failed", expired)
    assert run["pending_requests"] == []
    assert [(s["node_id"], s["status"], s["message"]) for s in run["steps"]] == [
        ("quote", "success", ""),
        ("pay", "failed", expired),
    ]
    for run_id in (unanswered, cancelled):
        assert by_item(counting, run_id) == {1: 1, 0: 1}  # the unsafe step was not called again
        assert [e["type"] for e in read_events(server.url, run_id)].count("run_resumed") == 0


def test_a_for_each_approval_waits_again_on_the_same_requests_after_a_kill(
    serve: Callable[..., StepServer], home: tuple[Path, Path, Path]
) -> None:
    data = home[2]
    server = serve()
    run_id = start_run(server.url, "sign_off")["run_id"]
    wait_until(lambda: len(get_run(server.url, run_id)["pending_requests"]) == 3, 10, "the three items to ask")
    first, *_ = get_run(server.url, run_id)["pending_requests"]
    assert answer(server, run_id, first["request_id"], "accept").status_code == 200
    wait_until(lambda: "step_item_finished" in [e["type"] for e in stored(data, run_id)], 10, "the item ended on disk")
    asked = get_run(server.url, run_id)["pending_requests"]
    kill_hard(server)
    server = serve()

    # The items not answered wait on their own requests again: not asked anew beside them.
    wait_until(lambda: get_run(server.url, run_id)["status"] == "waiting", 10, "the run to wait")
    assert get_run(server.url, run_id)["pending_requests"] == asked
    for request in asked:
        assert answer(server, run_id, request["request_id"], "accept").status_code == 200
    run = wait_finished(server.url, run_id)
    assert (run["status"], run["output"], run["pending_requests"]) == ("success", ["accept"] * 3, [])
    events = read_events(server.url, run_id)
    assert_contiguous(events)
    assert [e["type"] for e in events].count("input_requested") == 3
    [resumed] = [e for e in events if e["type"] == "run_resumed"]
    assert (resumed["rerun_steps"], resumed["by"]) == (["approve"], None)


def test_an_item_approved_as_the_server_stops_is_not_asked_again(tmp_path: Path, home: tuple[Path, Path, Path]) -> None:
    """The answer is on disk but its item never heard it: after the restart the item goes on from it."""
    folder, config, data = home
    with in_process(tmp_path, scenarios=folder, mcp_config=config, data_dir=data) as app:
        app.wait_ready()
        run_id = start_run(app.client, "sign_off")["run_id"]
        wait_until(lambda: len(get_run(app.client, run_id)["pending_requests"]) == 3, 10, "the three items to ask")
        requests = {r["item_index"]: r for r in get_run(app.client, run_id)["pending_requests"]}

        async def answer_then_shut_down() -> None:
            record = app.state["runs"].held(run_id)
            inbox = app.state["runner"].inbox
            inbox.answer(record, requests[1]["request_id"], AnswerAction.DECLINE, None, by=ALICE_ACTOR)
            app.app.state.stop_runs()  # in the same tick: the item never hears the answer

        app.call(answer_then_shut_down())
    assert [e["type"] for e in stored(data, run_id)][-1] == "input_answered"

    with in_process(tmp_path, scenarios=folder, mcp_config=config, data_dir=data) as app:
        app.wait_ready()
        wait_until(lambda: len(get_run(app.client, run_id)["pending_requests"]) == 2, 10, "the run to wait again")
        assert get_run(app.client, run_id)["pending_requests"] == [requests[0], requests[2]]
        for item in (0, 2):
            path = f"/api/runs/{run_id}/requests/{requests[item]['request_id']}"
            response = app.post(path, json={"action": "accept"})
            assert response.status_code == 200, response.text
        run = wait_finished(app.client, run_id)
        assert run["status"] == "failed"
        assert run["steps"][0]["message"] == "1 of 3 items failed; item 1: Declined by alice"
        assert [e["type"] for e in read_events(app.client, run_id)].count("input_requested") == 3


def test_a_call_asking_a_person_when_killed_is_asked_about_once_after_the_resume(
    make_server: Callable[..., StepServer], tmp_path: Path
) -> None:
    """The question was put over the call's session (protocol 2025): it died with the call, so after the
    restart only the Resume is open, and the call made again asks anew."""
    folder = tmp_path / "scenarios"
    folder.mkdir()
    order = v2("order", {"name": "order", "tool": "ask_form", "server": "asker", "input": {"message": "How many?"}})
    (folder / "order.json").write_text(json.dumps(order), encoding="utf-8")
    config = tmp_path / "mcp.json"
    asker = {"command": sys.executable, "args": [str(SERVERS / "form_asker.py"), "stdio"], "protocol": "legacy"}
    config.write_text(json.dumps({"mcpServers": {"asker": asker}}), "utf-8")
    data = tmp_path / "data"
    args = ("--scenarios", str(folder), "--mcp-config", str(config), "--data-dir", str(data), *ACCESS)
    server = make_server(*args, env=ACCESS_ENV)
    run_id = start_run(server.url, "order")["run_id"]
    wait_until(lambda: "input_requested" in [e["type"] for e in stored(data, run_id)], 10, "the form asked")
    kill_hard(server)
    server = make_server(*args, env=ACCESS_ENV)

    wait_until(lambda: "resume" in kinds_pending(server, run_id), 10, "the Resume to be asked")
    assert kinds_pending(server, run_id) == ["resume"]
    [resume] = get_run(server.url, run_id)["pending_requests"]
    assert answer(server, run_id, resume["request_id"], "accept").status_code == 200
    wait_until(lambda: kinds_pending(server, run_id) == ["elicitation"], 10, "the form asked again, once")
    [form] = get_run(server.url, run_id)["pending_requests"]
    response = httpx.post(
        f"{server.url}/api/runs/{run_id}/requests/{form['request_id']}",
        json={"action": "accept", "content": {"copies": 2}}, headers=ALICE, timeout=10,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    assert wait_finished(server.url, run_id)["status"] == "success"
