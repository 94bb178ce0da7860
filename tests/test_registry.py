"""The run registry in memory: LRU that keeps live runs, and subscribers reading one event list."""

from __future__ import annotations

import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from web.events import run_finished, run_started, step_finished, step_progress, step_started
from web.registry import RunRecord, RunRegistry, close
from web.resume import not_resumed
from web.run_state import utc_now
from web.store import RunStore

EMITTED = 1000


def new_record(run_id: str = "run-1") -> RunRecord:
    return RunRecord(run_id, "scenario", {}, utc_now())


def start(record: RunRecord) -> None:
    record.emit(run_started(scenario_id="scenario", started_at=utc_now(), plan=None))
    record.emit(step_started(step_name="work", index=0, started_at=utc_now(), input=None))


def progress(record: RunRecord, done: int) -> None:
    record.emit(step_progress(step_name="work", index=0, progress=done, total=EMITTED, message=f"{done}"))


def finish(record: RunRecord, status: Any = "success") -> None:
    now = utc_now()
    record.emit(
        step_finished(step_name="work", index=0, status=status, started_at=now, finished_at=now, message="")
    )
    record.emit(run_finished(status=status, finished_at=now, message=""))


def ids(registry: RunRegistry) -> set[str]:
    return {record.run_id for record in registry.recent()}


# --- LRU ------------------------------------------------------------------------------------------


def test_live_runs_are_kept_beyond_the_limit() -> None:
    registry = RunRegistry(max_size=2)
    queued = [registry.create("scenario", {"n": n}) for n in range(3)]
    running = [registry.create("scenario", {"n": n}) for n in range(3)]
    for record in running:
        start(record)

    assert len(registry) == 6
    assert ids(registry) == {r.run_id for r in queued + running}


def test_finished_runs_go_first_once_over_the_limit() -> None:
    registry = RunRegistry(max_size=2)
    live = [registry.create("scenario", {}) for _ in range(4)]
    for record in live[::2]:
        start(record)
        finish(record)

    newest = registry.create("scenario", {})

    # Both finished runs went; every live one stayed although that is still over the limit.
    assert ids(registry) == {live[1].run_id, live[3].run_id, newest.run_id}


@pytest.mark.anyio
async def test_the_least_recently_used_finished_run_is_evicted() -> None:
    registry = RunRegistry(max_size=3)
    a, b, c = (registry.create("scenario", {}) for _ in range(3))
    for record in (a, b, c):
        start(record)
        finish(record)
    assert await registry.get(a.run_id) is a  # reading a run makes it recently used

    d = registry.create("scenario", {})

    assert ids(registry) == {a.run_id, c.run_id, d.run_id}
    assert await registry.get(b.run_id) is None


# --- Followers ------------------------------------------------------------------------------------


async def emit_all(record: RunRecord) -> None:
    start(record)
    for done in range(1, EMITTED + 1):
        progress(record, done)
        if done % 3 == 0:
            await anyio.sleep(0)
    finish(record)


@pytest.mark.anyio
async def test_followers_from_any_cursor_get_each_later_event_once() -> None:
    record = new_record()
    total = EMITTED + 4
    # (resume after seq, join once this many events exist)
    followers = [(0, 0), (1, 0), (10, 0), (0, 300), (250, 300), (300, 300), (700, 300), (999, 700),
                 (total - 1, 0), (total, 0), (total + 5, 0)]
    received: dict[int, list[int]] = {}

    async def follow(key: int, after: int, join_at: int) -> None:
        while len(record.events) < join_at:
            await anyio.sleep(0)
        seqs = []
        async for event in record.follow(after):
            seqs.append(event["seq"])
            if key % 2:  # every other follower is slower than the emitter
                await anyio.sleep(0)
                await anyio.sleep(0)
        received[key] = seqs

    async with anyio.create_task_group() as tg:
        for key, (after, join_at) in enumerate(followers):
            tg.start_soon(follow, key, after, join_at)
        tg.start_soon(emit_all, record)

    assert len(record.events) == total
    for key, (after, _) in enumerate(followers):
        assert received[key] == list(range(after + 1, total + 1)), (after, received[key][:3])


@pytest.mark.anyio
async def test_many_waiting_followers_all_see_every_event() -> None:
    record = new_record()
    counts: list[int] = []

    async def follow() -> None:
        counts.append(sum([1 async for _ in record.follow()]))

    async with anyio.create_task_group() as tg:
        for _ in range(200):
            tg.start_soon(follow)
        await anyio.sleep(0)
        tg.start_soon(emit_all, record)

    assert counts == [EMITTED + 4] * 200


async def memory_growth_of_emitting(stalled_readers: int) -> tuple[int, int]:
    """Bytes allocated and kept while emitting EMITTED events, with readers that read once then stall."""
    record = new_record()
    start(record)
    readers: list[AsyncIterator[dict[str, Any]]] = [record.follow() for _ in range(stalled_readers)]
    for reader in readers:
        await reader.__anext__()
    before = len(record.events)
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        # A plain loop with no await: emitting never waits for a reader.
        for done in range(EMITTED):
            progress(record, done)
        grown = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert len(record.events) == before + EMITTED
    for reader in readers:
        await reader.aclose()  # type: ignore[attr-defined]
    return grown, len(record.events)


@pytest.mark.anyio
async def test_stalled_readers_hold_no_buffers() -> None:
    alone, _ = await memory_growth_of_emitting(0)
    stalled, _ = await memory_growth_of_emitting(1000)

    # A queue per reader would hold 1,000 x 1,000 references (8 MB); reading the one list holds nothing.
    assert stalled - alone < 256 * 1024, (alone, stalled)


@pytest.mark.anyio
async def test_a_stalled_reader_resumes_where_it_stopped() -> None:
    record = new_record()
    start(record)
    reader = record.follow()
    assert (await reader.__anext__())["seq"] == 1
    for done in range(EMITTED):
        progress(record, done)
    finish(record)

    rest = [event["seq"] async for event in reader]

    assert rest == list(range(2, EMITTED + 5))


# --- Ending -----------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_stream_ends_after_run_finished() -> None:
    record = new_record()
    seen: list[str] = []

    async def follow() -> None:
        seen.extend([event["type"] async for event in record.follow()])

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow)
        await anyio.sleep(0)
        start(record)
        await anyio.sleep(0)
        finish(record)
    # The task group only returns once the follower's loop has ended by itself.

    assert seen[-1] == "run_finished"
    assert [event["type"] async for event in record.follow(len(record.events))] == []
    with pytest.raises(RuntimeError, match="no event may follow run_finished"):
        progress(record, 1)


class Work:
    """A run's work that only notes it was started: a run stopped before it starts must never run."""

    def __init__(self) -> None:
        self.started: list[str] = []

    async def __call__(self, record: RunRecord) -> None:
        self.started.append(record.run_id)


@pytest.mark.anyio
async def test_a_run_cancelled_by_request_before_it_starts_finishes_cancelled() -> None:
    registry = RunRegistry(max_size=10)
    record = registry.create("scenario", {})
    work = Work()
    registry.start(record, work)

    with anyio.fail_after(5):
        answered = await registry.cancel(record.run_id)
        events = [event async for event in record.follow()]

    assert answered is record
    assert work.started == []
    assert [(e["type"], e["status"], e["message"]) for e in events] == [
        ("run_finished", "cancelled", "Cancelled by request")
    ]
    assert (record.state.status, record.state.message) == ("cancelled", "Cancelled by request")


@pytest.mark.anyio
async def test_a_run_stopped_by_a_shutdown_before_it_starts_finishes_failed() -> None:
    registry = RunRegistry(max_size=10)
    record = registry.create("scenario", {})
    work = Work()
    registry.start(record, work)

    with anyio.fail_after(5):
        await registry.cancel_all()
        events = [event async for event in record.follow()]

    assert work.started == []

    # Not "cancelled": nobody asked for it, and history must tell the two apart.
    assert [(e["type"], e["status"], e["message"]) for e in events] == [
        ("run_finished", "failed", "Interrupted: the server shut down while this run was in progress")
    ]
    assert record.state.status == "failed"


@pytest.mark.anyio
async def test_stopping_live_runs_records_how_each_ended() -> None:
    registry = RunRegistry(max_size=10)
    done = registry.create("scenario", {})
    start(done)
    finish(done)

    async def forever(record: RunRecord) -> None:
        start(record)
        await anyio.sleep_forever()

    live = [registry.create("scenario", {}) for _ in range(3)]
    for record in live:
        registry.start(record, forever)
    await anyio.sleep(0)
    assert all(record.state.status == "running" for record in live)

    with anyio.fail_after(5):
        await registry.cancel_all()

    for record in live:
        last = record.events[-1]
        assert (last["type"], last["status"], last["message"]) == (
            "run_finished", "failed", "Interrupted: the server shut down while this run was in progress"
        )
        assert record.state.status == "failed"
    assert done.state.status == "success"
    assert done.events[-1]["status"] == "success"
    assert list(registry.active()) == []


# --- Runs that end without their runner -------------------------------------------------------------

PLAN = [{"name": name, "tool": "echo", "depends_on": []} for name in ("done", "busy", "later")]


def begin_three_steps(record: RunRecord) -> None:
    """A run of three planned steps: the first has ended, the second is in flight, the third not started."""
    now = utc_now()
    record.emit(run_started(scenario_id="scenario", started_at=now, plan=PLAN))
    record.emit(step_started(step_name="done", index=0, started_at=now, input={}))
    record.emit(
        step_finished(step_name="done", index=0, status="success", started_at=now, finished_at=now, message="")
    )
    record.emit(step_started(step_name="busy", index=1, started_at=now, input={}))


def endings(record: RunRecord) -> list[tuple[str, str, str]]:
    return [
        (event.get("step_name", "run"), event["status"], event["message"])
        for event in record.events
        if event["type"] in ("step_finished", "run_finished")
    ]


@pytest.mark.anyio
async def test_a_run_stopped_outside_its_runner_still_ends_each_step() -> None:
    registry = RunRegistry(max_size=10)
    record = registry.create("scenario", {})

    async def unguarded(record: RunRecord) -> None:
        begin_three_steps(record)
        await anyio.sleep_forever()  # ends nothing of its own when cancelled

    registry.start(record, unguarded)
    await anyio.sleep(0)
    with anyio.fail_after(5):
        await registry.cancel(record.run_id)

    assert endings(record) == [
        ("done", "success", ""),
        ("busy", "cancelled", "Cancelled by request"),
        ("later", "skipped", "Not run: Cancelled by request"),
        ("run", "cancelled", "Cancelled by request"),
    ]
    later = record.events[-2]
    assert (later["index"], later["started_at"]) == (2, None)


@pytest.mark.anyio
async def test_a_restart_keeps_the_runs_left_unfinished_as_they_were_until_ended_step_by_step(tmp_path: Path) -> None:
    def store() -> RunStore:
        return RunStore(tmp_path, retention_days=1, retention_runs=100)

    before = RunRegistry(max_size=10, store=store())
    async with before.history():
        record = before.create("scenario", {})
        begin_three_steps(record)
        await before.sync()
    # What a process killed mid-run leaves: no ending on disk. The next one keeps the run as it was, for its
    # runner to resume (web.resume), and records nothing of its own.
    stored = [dict(event) for event in record.events]
    after = RunRegistry(max_size=10, store=store())
    async with after.history():
        recovered = await after.get(record.run_id)
        assert recovered is not None
        assert recovered.events == stored
        assert recovered.state.status == "running"
        assert {name: step.status for name, step in recovered.state.steps.items()} == {
            "done": "success",
            "busy": "running",
        }
        # Handed to the runner once.
        assert after.take_suspended() == [recovered]
        assert after.take_suspended() == []
        # A run that cannot go on (its scenario gone, here) is ended step by step, seq going on from the last.
        close(recovered, not_resumed("its scenario 'scenario' is no longer served"))
        await after.sync()

    why = "Interrupted by a server restart: its scenario 'scenario' is no longer served"
    ending = f"{why}, so this run could not go on"
    assert endings(recovered) == [
        ("done", "success", ""),
        ("busy", "failed", why),
        ("later", "skipped", f"Not run: {ending}"),
        ("run", "failed", ending),
    ]
    assert [event["seq"] for event in recovered.events] == list(range(1, len(stored) + 4))
    # Its ending is on disk: the next start reads it back finished and keeps nothing to resume.
    again = RunRegistry(max_size=10, store=store())
    async with again.history():
        assert again.take_suspended() == []
        reread = await again.get(record.run_id)
        assert reread is not None
        assert (reread.state.status, reread.state.message) == ("failed", ending)
        assert reread.events == recovered.events
