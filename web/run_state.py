"""The fold of a run's events into its state: what snapshots, pages and fragments show.

The event list is the single source of truth; RunState is derived from it, one event at a time,
the same way while a run executes and when it is rebuilt from the history.
"""

from __future__ import annotations

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

    def refold(self, events: list[dict[str, Any]]) -> None:
        """Fold `events` again from the start, into this same object (views may hold it)."""
        fresh = RunState(run_id=self.run_id, scenario_id=self.scenario_id, input=self.input, created_at=self.created_at)
        for event in events:
            fresh.apply(event)
        self.__dict__.update(fresh.__dict__)

    @property
    def is_finished(self) -> bool:
        return self.status in TERMINAL_STATUSES
