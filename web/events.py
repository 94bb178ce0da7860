"""A run's events and statuses: the one place their names and fields are defined.

Every event is a plain JSON object. The constructors here give its `type` and fields; the run's
record adds `run_id` and `seq` when it appends it (web.registry). The runner, the registry, the
history, the API's schemas and the pages all take the names from here.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from web.step_content import recorded_content

Event = dict[str, Any]
# Who acted on a run, as runs record it: `{"name", "source"}` (web.access.Identity.audit), never a credential.
Actor = dict[str, Any]


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepStatus(StrEnum):
    PENDING = "pending"  # not started yet: never recorded, only shown
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class EventType(StrEnum):
    RUN_STARTED = "run_started"
    STEP_STARTED = "step_started"
    STEP_PROGRESS = "step_progress"
    STEP_RETRYING = "step_retrying"
    STEP_ITEM_FINISHED = "step_item_finished"
    STEP_FINISHED = "step_finished"
    RUN_FINISHED = "run_finished"


class RecordedEvent(dict[str, Any]):
    """An event as its run's record holds it: `type`, `run_id`, `seq`, then its fields.

    It keeps its JSON text once made (web.store_rows.event_json): the history and every JSON stream
    share one encoding of each event.
    """

    __slots__ = ("json_text",)


TERMINAL_RUN_STATUSES = frozenset({RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.CANCELLED})
TERMINAL_STEP_STATUSES = frozenset({StepStatus.SUCCESS, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED})


def run_started(
    *, scenario_id: str, started_at: str, plan: list[dict[str, Any]] | None, started_by: Actor | None = None
) -> Event:
    """`plan`: each step's summary (web.plan.PlannedStep.summary), the plan this run follows.

    `started_by`: who started the run; its record fills it in when left None (web.registry.RunRecord.emit).
    """
    return {
        "type": EventType.RUN_STARTED.value,
        "scenario_id": scenario_id,
        "started_at": started_at,
        "plan": plan,
        "started_by": started_by,
    }


def step_started(
    *,
    step_name: str,
    index: int,
    started_at: str,
    input: dict[str, Any] | None,
    attempt: int = 1,
    item_count: int | None = None,
) -> Event:
    """One per attempt of a step; a for_each step's has `item_count` and no input (its items have)."""
    event: Event = {
        "type": EventType.STEP_STARTED.value,
        "step_name": step_name,
        "index": index,
        "started_at": started_at,
        "input": input,
        "attempt": attempt,
    }
    if item_count is not None:
        event["item_count"] = item_count
    return event


def step_progress(
    *, step_name: str, index: int, progress: float | None, total: float | None, message: str | None
) -> Event:
    return {
        "type": EventType.STEP_PROGRESS.value,
        "step_name": step_name,
        "index": index,
        "progress": progress,
        "total": total,
        "message": message,
    }


def step_retrying(
    *,
    step_name: str,
    index: int,
    attempt: int,
    max_attempts: int,
    message: str,
    delay_seconds: float,
    retry_at: str,
    item_index: int | None = None,
) -> Event:
    """Attempt `attempt` (2, 3…) starts at `retry_at`, `delay_seconds` from now; `message` says why the last failed."""
    return {
        "type": EventType.STEP_RETRYING.value,
        "step_name": step_name,
        "index": index,
        "attempt": attempt,
        "max_attempts": max_attempts,
        "message": message,
        "delay_seconds": delay_seconds,
        "retry_at": retry_at,
        "item_index": item_index,
    }


def step_item_finished(
    *,
    step_name: str,
    index: int,
    item_index: int,
    status: StepStatus,
    message: str,
    output: Any,
    input: dict[str, Any] | None = None,
    attempt: int = 1,
) -> Event:
    return {
        "type": EventType.STEP_ITEM_FINISHED.value,
        "step_name": step_name,
        "index": index,
        "item_index": item_index,
        "status": StepStatus(status).value,
        "message": message,
        "output": output,
        "input": input,
        "attempt": attempt,
    }


def step_finished(
    *,
    step_name: str,
    index: int,
    status: StepStatus,
    started_at: str | None,
    finished_at: str,
    message: str,
    output: Any = None,
    content: Any = None,
) -> Event:
    """The step's end; a skipped step has only this event (no started_at), its reason as message.

    `content` is the result's blocks whole: each that `output` already holds is recorded as a reference to it
    (web.step_content), so that the history and the streams carry a result once.
    """
    return {
        "type": EventType.STEP_FINISHED.value,
        "step_name": step_name,
        "index": index,
        "status": StepStatus(status).value,
        "started_at": started_at,
        "finished_at": finished_at,
        "message": message,
        "output": output,
        "content": recorded_content(output, content),
    }


def run_finished(
    *, status: RunStatus, finished_at: str, message: str, output: Any = None, cancelled_by: Actor | None = None
) -> Event:
    """`cancelled_by`: who cancelled the run; its record fills it in when left None (web.registry.RunRecord.emit)."""
    return {
        "type": EventType.RUN_FINISHED.value,
        "status": RunStatus(status).value,
        "finished_at": finished_at,
        "message": message,
        "output": output,
        "cancelled_by": cancelled_by,
    }
