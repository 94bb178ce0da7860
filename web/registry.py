"""Runs in memory: each RunRecord owns an append-only event list, the single source of truth.

Snapshots, pages and streams are views of that list. Subscribers read it at their own cursor and
are woken by a shared asyncio.Event that is replaced on every append, so a stalled subscriber
costs nothing and holds no buffer of its own.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

TERMINAL_STATUSES = frozenset({"success", "failed", "cancelled"})


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class StepState:
    """One step as the events so far describe it."""

    node_id: str
    index: int
    status: str = "running"
    started_at: str | None = None
    finished_at: str | None = None
    message: str = ""
    input: dict[str, Any] | None = None
    output: Any = None
    content: list[dict[str, Any]] | None = None
    progress: float | None = None
    total: float | None = None
    progress_message: str | None = None


@dataclass
class RunState:
    """The fold of a run's events: what a snapshot shows."""

    run_id: str
    scenario_id: str
    input: dict[str, Any]
    created_at: str
    status: str = "queued"
    message: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    steps: dict[str, StepState] = field(default_factory=dict)

    def apply(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "run_started":
            self.status = "running"
            self.started_at = event["started_at"]
        elif kind == "run_finished":
            self.status = event["status"]
            self.finished_at = event["finished_at"]
            self.message = event.get("message", "")
        elif kind == "step_started":
            self.steps[event["step_name"]] = StepState(
                node_id=event["step_name"],
                index=event["index"],
                started_at=event["started_at"],
                input=event.get("input"),
            )
        elif kind == "step_progress":
            step = self.steps[event["step_name"]]
            step.progress = event["progress"]
            step.total = event.get("total")
            step.progress_message = event.get("message")
        elif kind == "step_finished":
            step = self.steps.setdefault(
                event["step_name"], StepState(node_id=event["step_name"], index=event["index"])
            )
            step.status = event["status"]
            step.started_at = event.get("started_at", step.started_at)
            step.finished_at = event["finished_at"]
            step.message = event.get("message", "")
            step.output = event.get("output")
            step.content = event.get("content")

    @property
    def is_finished(self) -> bool:
        return self.status in TERMINAL_STATUSES


class RunRecord:
    """A run: its event list, the state folded from it, and the task executing it."""

    def __init__(self, run_id: str, scenario_id: str, run_input: dict[str, Any], created_at: str) -> None:
        self.state = RunState(run_id=run_id, scenario_id=scenario_id, input=run_input, created_at=created_at)
        self.events: list[dict[str, Any]] = []
        self.task: asyncio.Task[None] | None = None
        self._appended = asyncio.Event()

    @property
    def run_id(self) -> str:
        return self.state.run_id

    @property
    def is_finished(self) -> bool:
        return self.state.is_finished

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Append one event, fold it into the state and wake every subscriber."""
        if self.is_finished:
            raise RuntimeError(f"run {self.run_id} has finished; no event may follow run_finished")
        event = {"type": kind, "run_id": self.run_id, "seq": len(self.events) + 1, **fields}
        self.events.append(event)
        self.state.apply(event)
        woken, self._appended = self._appended, asyncio.Event()
        woken.set()
        return event

    async def follow(self, after: int = 0) -> AsyncIterator[dict[str, Any]]:
        """Events with seq > `after`: first those already recorded, then each as it is appended.

        Ends after run_finished. Nothing is lost or repeated, whatever is emitted meanwhile,
        because the cursor is an index into the one list.
        """
        cursor = max(after, 0)
        while True:
            appended = self._appended
            while cursor < len(self.events):
                event = self.events[cursor]
                cursor += 1
                yield event
                if event["type"] == "run_finished":
                    return
            if self.is_finished:
                return
            await appended.wait()


def _close_unfinished(record: RunRecord) -> None:
    # A task cancelled before its first step never enters the runner, so nothing else would
    # write the run_finished its subscribers are waiting for.
    if not record.is_finished:
        record.emit("run_finished", status="cancelled", finished_at=utc_now(), message="Run cancelled")


class RunRegistry:
    """Runs by id, least recently used first; only finished runs are ever evicted."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._runs: OrderedDict[str, RunRecord] = OrderedDict()

    def create(self, scenario_id: str, run_input: dict[str, Any]) -> RunRecord:
        record = RunRecord(str(uuid.uuid4()), scenario_id, run_input, utc_now())
        self._runs[record.run_id] = record
        self._evict()
        return record

    def get(self, run_id: str) -> RunRecord | None:
        record = self._runs.get(run_id)
        if record is not None:
            self._runs.move_to_end(run_id)
        return record

    def recent(self) -> list[RunRecord]:
        """Newest first, by creation time."""
        return sorted(self._runs.values(), key=lambda r: r.state.created_at, reverse=True)

    def active(self) -> Iterable[RunRecord]:
        return [record for record in self._runs.values() if not record.is_finished]

    def __len__(self) -> int:
        return len(self._runs)

    def start(self, record: RunRecord, work: Callable[[RunRecord], Coroutine[Any, Any, None]]) -> None:
        record.task = asyncio.create_task(work(record), name=f"run {record.run_id}")
        record.task.add_done_callback(lambda _task: _close_unfinished(record))

    def stop_live(self) -> list[asyncio.Task[None]]:
        """Cancel every live run; each records its own ending (run_finished, cancelled)."""
        tasks = [record.task for record in self.active() if record.task is not None]
        for task in tasks:
            task.cancel()
        return tasks

    async def cancel_all(self) -> None:
        """Cancel every live run and wait until each has recorded how it ended."""
        await asyncio.gather(*self.stop_live(), return_exceptions=True)

    def _evict(self) -> None:
        excess = len(self._runs) - self.max_size
        if excess <= 0:
            return
        for run_id in [rid for rid, record in self._runs.items() if record.is_finished][:excess]:
            del self._runs[run_id]
