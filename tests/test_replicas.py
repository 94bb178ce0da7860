"""Replicas: several `stepline serve` processes on one PostgreSQL database share the runs.

Each test starts real replicas (tests/replicas_support.py) on a fresh database, with short leases, and drives
them over HTTP as a user behind a load balancer would: any replica answers for any run; a replica killed,
frozen or stopped has its runs taken over by another. The tools are those of tests/servers/counting.py, in a
process of their own that outlives every replica: its counts prove, per run, which steps were called and how
often, whichever replica called them.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import StepServer, wait_until
from mcp_process import HttpMcpServer
from replicas_support import Cluster, Follower, health, replica_id
from runs import get_run, start_run, wait_finished
from sse import frames, parse_lines
from test_history import kill_hard
from test_resume import ALICE, ALICE_ACTOR, PAY, STEADY, assert_contiguous, by_item, started_steps, step, v2

# Three steps of a fraction of a second each: a run seen running from every replica.
PACED = v2(
    "paced",
    step("one", 1, seconds=0.6),
    step("two", 2, seconds=0.6, needs=["one"]),
    step("three", 3, seconds=0.6, needs=["two"]),
    output="{{ [steps.one.output.item, steps.two.output.item, steps.three.output.item] }}",
)
QUICK = v2("quick", step("a", 1, seconds=0.2), step("b", 2, needs=["a"]), output="{{ steps.b.output.item }}")
# The first call of `slow` answers after 2 s: while its replica is frozen, past the lease it holds.
FROZEN_HOLD_SECONDS = 2
HELD = v2(
    "held",
    step("slow", 1, seconds=FROZEN_HOLD_SECONDS),
    step("next", 2, needs=["slow"]),
    output="{{ [steps.slow.output.item, steps.next.output.item] }}",
)
APPROVE = v2(
    "approve",
    {"name": "approve", "type": "approval", "message": "Publish?"},
    step("publish", 1, needs=["approve"]),
    output="{{ steps.publish.output.item }}",
)
SCENARIOS = [PACED, QUICK, HELD, APPROVE, STEADY, PAY]


@pytest.fixture
def cluster(
    tmp_path: Path, make_server: Callable[..., StepServer], counting: HttpMcpServer, postgres: Any
) -> Cluster:
    folder = tmp_path / "scenarios"
    folder.mkdir()
    for scenario in SCENARIOS:
        (folder / f"{scenario['scenario_id']}.json").write_text(json.dumps(scenario), encoding="utf-8")
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"counting": {"type": "http", "url": counting.url}}}), "utf-8")
    return Cluster(make_server, counting, folder, config, postgres.fresh_database())


def cancel(server: StepServer, run_id: str) -> httpx.Response:
    return httpx.post(f"{server.url}/api/runs/{run_id}/cancel", headers=ALICE, timeout=30)


def answer(server: StepServer, run_id: str, request_id: str, action: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/runs/{run_id}/requests/{request_id}", json={"action": action}, headers=ALICE, timeout=30
    )


def pending(server: StepServer, run_id: str, kind: str) -> dict[str, Any]:
    """The run's one open request of `kind`, once the run waits on it."""
    wait_until(
        lambda: [r["kind"] for r in get_run(server.url, run_id)["pending_requests"]] == [kind],
        20,
        f"run {run_id} to wait on a {kind} request",
    )
    [request] = get_run(server.url, run_id)["pending_requests"]
    return request


def resumed(events: list[dict[str, Any]]) -> list[tuple[list[str], Any]]:
    return [(e["rerun_steps"], e["by"]) for e in events if e["type"] == "run_resumed"]


def stream_of(server: StepServer, run_id: str) -> list[dict[str, Any]]:
    """Every event of the run's JSON stream on `server`, read until the server ends it (within 20 s)."""
    return Follower(server, run_id).join(20)


def html_stream_events(server: StepServer, run_id: str) -> list[str]:
    """The names of the run page's HTML stream's frames, read until the server ends it."""
    with httpx.stream("GET", f"{server.url}/runs/{run_id}/stream", timeout=30) as response:
        assert response.status_code == 200
        return [frame.event for frame in frames(parse_lines(response.iter_lines()))]


def test_any_replica_serves_a_run_another_one_runs(cluster: Cluster) -> None:
    a, b = cluster.serve(), cluster.serve()
    run_id = start_run(a.url, "paced")["run_id"]
    follower = Follower(b, run_id)
    wait_until(lambda: "step_started" in follower.kinds(), 10, "B's stream to show the run going")

    # While A runs it, B answers for it: snapshot, page, runs list.
    snapshot = get_run(b.url, run_id)
    assert (snapshot["scenario_id"], snapshot["status"]) == ("paced", "running"), snapshot
    page = httpx.get(f"{b.url}/runs/{run_id}", timeout=10)
    assert page.status_code == 200
    assert 'id="run-status"' in page.text and 'data-status="running"' in page.text
    listed = httpx.get(f"{b.url}/api/runs", timeout=10).json()
    assert run_id in [run["run_id"] for run in listed["runs"]]
    assert cluster.owner(run_id) == replica_id(a)

    events = follower.join()
    run = wait_finished(b.url, run_id)
    assert (run["status"], run["output"]) == ("success", [1, 2, 3]), run
    # B's stream: every event of the history once, in order, with its seq as the frame's id, ended by the end.
    assert_contiguous(events)
    assert events == cluster.stored(run_id) and follower.ids == [str(e["seq"]) for e in events]
    assert events[-1]["type"] == "run_finished"
    assert stream_of(a, run_id) == events
    assert html_stream_events(b, run_id)[-1] == "run-finished"
    assert by_item(cluster.counting, run_id) == {1: 1, 2: 1, 3: 1}
    assert get_run(a.url, run_id) == run


def test_a_run_whose_replica_is_killed_goes_on_on_another_and_its_stream_there_with_it(cluster: Cluster) -> None:
    a, b = cluster.serve(), cluster.serve()
    run_id = start_run(a.url, "steady")["run_id"]
    follower = Follower(b, run_id)
    cluster.wait_in_call(run_id, "slow", 2)
    wait_until(lambda: "slow" in started_steps(follower.seen), 10, "B's stream to show the slow step")

    kill_hard(a)
    run = wait_finished(b.url, run_id, timeout=30)

    assert (run["status"], run["output"]) == ("success", [1, 2, 3]), run
    assert cluster.owner(run_id) == replica_id(b)
    # The step that had ended was not called again; the one in flight was (its tool is idempotent), once.
    assert by_item(cluster.counting, run_id) == {1: 1, 2: 2, 3: 1}
    events = follower.join()
    assert_contiguous(events)
    assert events == stream_of(b, run_id) == cluster.stored(run_id)
    assert started_steps(events) == ["first", "slow", "slow", "last"]
    assert resumed(events) == [(["slow"], None)]


def test_queued_runs_raced_for_by_replicas_each_run_once(cluster: Cluster) -> None:
    a = cluster.serve("--max-concurrent-runs", "1")
    b, c = cluster.serve(), cluster.serve()
    run_ids = [start_run(a.url, "quick")["run_id"] for _ in range(10)]

    runs = [wait_finished(a.url, run_id, timeout=30) for run_id in run_ids]

    assert [(run["status"], run["output"]) for run in runs] == [("success", 2)] * 10, runs
    for run_id in run_ids:
        # Every step of every run called exactly once, whichever replica claimed it.
        assert by_item(cluster.counting, run_id) == {1: 1, 2: 1}, run_id
        events = cluster.stored(run_id)
        assert_contiguous(events)
        assert started_steps(events) == ["a", "b"]
        assert [e["type"] for e in events].count("run_started") == 1
    owners = {cluster.owner(run_id) for run_id in run_ids}
    assert owners <= {replica_id(server) for server in (a, b, c)}
    assert len(owners) > 1, "A had room for one run: the others were run by B or C"


def test_replicas_starting_together_on_queued_runs_run_each_once(cluster: Cluster) -> None:
    a = cluster.serve("--max-concurrent-runs", "1")
    # A's one place is taken by a run waiting for a person: the runs after it wait in the database.
    waiting = start_run(a.url, "approve")["run_id"]
    pending(a, waiting, "approval")
    run_ids = [start_run(a.url, "quick")["run_id"] for _ in range(8)]
    assert {get_run(a.url, run_id)["status"] for run_id in run_ids} == {"queued"}
    assert a.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    assert {cluster.owner(run_id) for run_id in [waiting, *run_ids]} == {None}

    # Two replicas start at the same moment, each claiming what it finds.
    starting = [threading.Thread(target=cluster.serve) for _ in range(2)]
    for thread in starting:
        thread.start()
    for thread in starting:
        thread.join(60)
    b, c = cluster.replicas[1:]
    runs = [wait_finished(b.url, run_id, timeout=30) for run_id in run_ids]

    assert [(run["status"], run["output"]) for run in runs] == [("success", 2)] * 8, runs
    for run_id in run_ids:
        assert by_item(cluster.counting, run_id) == {1: 1, 2: 1}, run_id
        events = cluster.stored(run_id)
        assert_contiguous(events)
        assert started_steps(events) == ["a", "b"]
        assert [e["type"] for e in events].count("run_started") == 1
    assert {cluster.owner(run_id) for run_id in [waiting, *run_ids]} <= {replica_id(b), replica_id(c)}
    assert get_run(c.url, waiting)["status"] == "waiting"


def test_a_replica_frozen_past_its_lease_stops_the_run_another_took_when_woken(cluster: Cluster) -> None:
    a, b = cluster.serve(), cluster.serve()
    run_id = start_run(a.url, "held")["run_id"]
    cluster.wait_in_call(run_id, "slow", 1)
    a_id = replica_id(a)

    os.kill(a.process.pid, signal.SIGSTOP)
    try:
        run = wait_finished(b.url, run_id, timeout=30)
        assert cluster.owner(run_id) == replica_id(b)
        # The frozen replica's call has answered meanwhile: it hears it only once woken, the run being B's.
    finally:
        os.kill(a.process.pid, signal.SIGCONT)
    wait_until(lambda: health(a)["replica"]["leases"] == 0, 10, "the woken replica to let the run go")

    assert (run["status"], run["output"]) == ("success", [1, 2]), run
    assert health(a)["replica"]["id"] == a_id
    # The step in flight was called again by B; the next step only by B: A called nothing once woken.
    assert by_item(cluster.counting, run_id) == {1: 2, 2: 1}
    events = cluster.stored(run_id)
    assert_contiguous(events)
    assert started_steps(events) == ["slow", "slow", "next"]
    assert resumed(events) == [(["slow"], None)]
    assert [e["type"] for e in events].count("run_finished") == 1
    # Both replicas show the history B wrote.
    assert stream_of(a, run_id) == events == stream_of(b, run_id)
    assert get_run(a.url, run_id) == get_run(b.url, run_id)


def test_a_replica_stopped_gracefully_hands_its_run_over_at_once(cluster: Cluster) -> None:
    # Leases far longer than the test waits: the run goes on only because it was handed over.
    a, b = cluster.serve(lease_seconds=120), cluster.serve(lease_seconds=120)
    run_id = start_run(a.url, "steady")["run_id"]
    approved = start_run(a.url, "approve")["run_id"]
    follower = Follower(b, run_id)
    cluster.wait_in_call(run_id, "slow", 2)
    request = pending(a, approved, "approval")

    # A clean exit: uvicorn ends by raising the signal it stopped for again, as the project's other stops expect.
    assert a.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in a.log()
    run = wait_finished(b.url, run_id, timeout=30)

    assert (run["status"], run["output"]) == ("success", [1, 2, 3]), run
    assert cluster.owner(run_id) == replica_id(b)
    assert by_item(cluster.counting, run_id) == {1: 1, 2: 2, 3: 1}
    events = follower.join()
    assert_contiguous(events)
    assert events == cluster.stored(run_id)
    # Nothing failed or was cancelled by the stop: B resumed it by itself.
    assert [e for e in events if e.get("status") in ("failed", "cancelled")] == []
    assert resumed(events) == [(["slow"], None)]
    assert "Handed 2 live run(s) over" in a.log()

    # The run waiting for a person waits on B, on the same request, and goes on once answered there.
    wait_until(lambda: cluster.owner(approved) == replica_id(b), 10, "B to take the waiting run")
    assert pending(b, approved, "approval") == request
    response = answer(b, approved, request["request_id"], "accept")
    assert response.status_code == 200, response.text
    run = wait_finished(b.url, approved)
    assert (run["status"], run["output"]) == ("success", 1), run
    assert by_item(cluster.counting, approved) == {1: 1}
    events = cluster.stored(approved)
    assert_contiguous(events)
    assert [e["type"] for e in events].count("input_requested") == 1


def test_a_cancel_and_an_answer_sent_to_a_replica_that_does_not_run_the_run(cluster: Cluster) -> None:
    a, b = cluster.serve(), cluster.serve()
    cancelled = start_run(a.url, "steady")["run_id"]
    approved = start_run(a.url, "approve")["run_id"]
    cluster.wait_in_call(cancelled, "slow", 2)
    request = pending(b, approved, "approval")

    response = cancel(b, cancelled)
    assert response.status_code == 202, response.text
    run = wait_finished(b.url, cancelled)
    assert run["status"] == "cancelled", run
    assert [(s["node_id"], s["status"]) for s in run["steps"]] == [
        ("first", "success"), ("slow", "cancelled"), ("last", "skipped")
    ]  # fmt: skip
    [finished] = [e for e in cluster.stored(cancelled) if e["type"] == "run_finished"]
    assert finished["cancelled_by"] == ALICE_ACTOR
    assert by_item(cluster.counting, cancelled) == {1: 1, 2: 1}

    response = answer(b, approved, request["request_id"], "accept")
    assert response.status_code == 200, response.text
    assert response.json()["action"] == "accept"
    run = wait_finished(b.url, approved)
    assert (run["status"], run["output"]) == ("success", 1), run
    [answered] = [e for e in cluster.stored(approved) if e["type"] == "input_answered"]
    assert (answered["action"], answered["answered_by"]) == ("accept", ALICE_ACTOR)
    assert by_item(cluster.counting, approved) == {1: 1}
    # A ran both: the commands were carried out there.
    assert {cluster.owner(cancelled), cluster.owner(approved)} == {replica_id(a)}
    # The same answer again, through either replica: the request is closed.
    assert answer(a, approved, request["request_id"], "accept").status_code == 409
    assert answer(b, approved, request["request_id"], "accept").status_code == 409


def test_commands_for_a_run_whose_replica_was_killed(cluster: Cluster) -> None:
    a = cluster.serve(lease_seconds=4)
    others = {}
    for _ in range(2):
        server = cluster.serve(lease_seconds=4)
        others[replica_id(server)] = server
    first, second = others.values()
    to_cancel, to_resume = (start_run(a.url, "pay")["run_id"] for _ in range(2))
    for run_id in (to_cancel, to_resume):
        cluster.wait_in_call(run_id, "pay", 0)

    kill_hard(a)
    # At once, while the killed replica's lease still holds: nobody can carry the cancel out yet.
    response = cancel(first, to_cancel)
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"].isdigit()
    assert "did not answer" in response.json()["detail"] and "try again" in response.json()["detail"]

    # Once the lease is out, another replica claims each run; the charge (unsafe to call again) waits for a Resume.
    for run_id in (to_cancel, to_resume):
        pending(first, run_id, "resume")
        assert cluster.owner(run_id) in others
    assert get_run(first.url, to_cancel)["status"] == "waiting"

    def non_owner(run_id: str) -> StepServer:
        return next(server for rid, server in others.items() if rid != cluster.owner(run_id))

    response = cancel(non_owner(to_cancel), to_cancel)
    assert response.status_code == 202, response.text
    run = wait_finished(second.url, to_cancel)
    assert run["status"] == "cancelled"
    [finished] = [e for e in cluster.stored(to_cancel) if e["type"] == "run_finished"]
    assert finished["cancelled_by"] == ALICE_ACTOR

    request = pending(second, to_resume, "resume")
    response = answer(non_owner(to_resume), to_resume, request["request_id"], "accept")
    assert response.status_code == 200, response.text
    run = wait_finished(first.url, to_resume)
    assert (run["status"], run["output"]) == ("success", 2), run
    events = cluster.stored(to_resume)
    assert_contiguous(events)
    assert resumed(events) == [(["pay"], ALICE_ACTOR)]
    # The charge was called again only after the Resume; the cancelled run's never.
    assert by_item(cluster.counting, to_resume) == {1: 1, 0: 2}
    assert by_item(cluster.counting, to_cancel) == {1: 1, 0: 1}


def test_a_replica_runs_at_most_its_max_concurrent_runs_and_queues_the_rest(cluster: Cluster) -> None:
    a = cluster.serve("--max-concurrent-runs", "1")
    leases: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            leases.append(health(a)["replica"]["leases"])

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        submitted = [start_run(a.url, "paced") for _ in range(3)]
        run_ids = [s["run_id"] for s in submitted]
        assert [get_run(a.url, run_id)["status"] for run_id in run_ids[1:]] == ["queued", "queued"]
        runs = [wait_finished(a.url, run_id, timeout=30) for run_id in run_ids]
    finally:
        done.set()
        watcher.join(10)

    assert [(run["status"], run["output"]) for run in runs] == [("success", [1, 2, 3])] * 3, runs
    assert leases and max(leases) == 1, leases
    # One at a time: each run ended before the next one started.
    spans = []
    for run_id in run_ids:
        events = cluster.stored(run_id)
        assert_contiguous(events)
        spans.append((events[0]["started_at"], events[-1]["finished_at"]))
        assert by_item(cluster.counting, run_id) == {1: 1, 2: 1, 3: 1}
    spans.sort()
    assert all(earlier[1] <= later[0] for earlier, later in zip(spans, spans[1:], strict=False)), spans


def test_a_queued_run_cancelled_through_any_replica_calls_nothing(cluster: Cluster) -> None:
    a = cluster.serve("--max-concurrent-runs", "1")
    b = cluster.serve("--max-concurrent-runs", "1")
    for server in (a, b):  # each replica's one place taken by a run waiting for a person
        pending(server, start_run(server.url, "approve")["run_id"], "approval")
    queued = [start_run(server.url, "quick")["run_id"] for server in (a, b, a)]
    assert {get_run(a.url, run_id)["status"] for run_id in queued} == {"queued"}

    for server, run_id in zip((b, a, a), queued, strict=True):
        response = cancel(server, run_id)
        assert response.status_code == 202, response.text
        run = wait_finished(server.url, run_id)
        assert run["status"] == "cancelled", run
        assert by_item(cluster.counting, run_id) == {}, f"run {run_id} called a tool once cancelled"
        # Cancelled before it started: it never did, on any replica.
        events = cluster.stored(run_id)
        assert [e["type"] for e in events] == ["run_finished"], events
        assert events[0]["cancelled_by"] == ALICE_ACTOR
        assert stream_of(a, run_id) == events == stream_of(b, run_id)
        assert [h["replica"]["leases"] for h in (health(a), health(b))] == [1, 1]


def test_a_run_whose_replica_was_killed_cancelled_through_a_replica_with_no_room(cluster: Cluster) -> None:
    a = cluster.serve()
    b = cluster.serve("--max-concurrent-runs", "1")
    pending(b, start_run(b.url, "approve")["run_id"], "approval")  # B's one place taken: it claims nothing
    run_id = start_run(a.url, "steady")["run_id"]
    cluster.wait_in_call(run_id, "slow", 2)
    a_id = replica_id(a)

    kill_hard(a)
    wait_until(lambda: cluster.lease_out(run_id), 10, "A's lease to run out")
    assert cluster.owner(run_id) == a_id and get_run(b.url, run_id)["status"] == "running"
    response = cancel(b, run_id)

    # B took the run to cancel it, and cancelled it without going on with it first.
    assert response.status_code == 202, response.text
    run = wait_finished(b.url, run_id)
    assert run["status"] == "cancelled", run
    assert [(s["node_id"], s["status"]) for s in run["steps"]] == [
        ("first", "success"), ("slow", "cancelled"), ("last", "skipped")
    ]  # fmt: skip
    events = cluster.stored(run_id)
    assert_contiguous(events)
    assert events[-1]["cancelled_by"] == ALICE_ACTOR
    assert resumed(events) == [] and started_steps(events) == ["first", "slow"]
    assert by_item(cluster.counting, run_id) == {1: 1, 2: 1}
    assert health(b)["replica"]["leases"] == 1


def test_an_answer_for_a_run_whose_replica_was_killed_through_a_replica_with_no_room(cluster: Cluster) -> None:
    a = cluster.serve()
    b = cluster.serve("--max-concurrent-runs", "1")
    pending(b, start_run(b.url, "approve")["run_id"], "approval")  # B's one place taken: it claims nothing
    run_id = start_run(a.url, "approve")["run_id"]
    request = pending(a, run_id, "approval")
    wait_until(lambda: "input_requested" in [e["type"] for e in cluster.stored(run_id)], 10, "the request stored")

    kill_hard(a)
    wait_until(lambda: cluster.lease_out(run_id), 10, "A's lease to run out")
    response = answer(b, run_id, request["request_id"], "accept")

    # B took the run to answer it: the same request, answered once, and the run went on there.
    assert response.status_code == 200, response.text
    run = wait_finished(b.url, run_id)
    assert (run["status"], run["output"]) == ("success", 1), run
    events = cluster.stored(run_id)
    assert_contiguous(events)
    assert [e["type"] for e in events].count("input_requested") == 1
    [answered] = [e for e in events if e["type"] == "input_answered"]
    assert (answered["request_id"], answered["answered_by"]) == (request["request_id"], ALICE_ACTOR)
    assert by_item(cluster.counting, run_id) == {1: 1}
    assert cluster.owner(run_id) == replica_id(b)
