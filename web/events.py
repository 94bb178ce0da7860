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
    WAITING = "waiting"  # a person must answer a request before it can go on
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepStatus(StrEnum):
    PENDING = "pending"  # not started yet: never recorded, only shown
    RUNNING = "running"
    WAITING = "waiting"  # a person must answer a request before it can go on
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
    INPUT_REQUESTED = "input_requested"
    INPUT_ANSWERED = "input_answered"
    INPUT_DRAFTED = "input_drafted"
    RUN_RESUMED = "run_resumed"
    RUN_FINISHED = "run_finished"


class RequestKind(StrEnum):
    """What a person is asked for (web.inbox)."""

    ELICITATION = "elicitation"  # a form: values for a server's requestedSchema
    URL = "url"  # a page to visit (a login, a payment), confirmed by the person
    SAMPLING = "sampling"  # a model completion, written or reviewed by the person
    APPROVAL = "approval"  # a scenario's approval step
    RESUME = "resume"  # steps that may have partly run before a restart: run them again? (web.resume)


class AnswerAction(StrEnum):
    ACCEPT = "accept"
    DECLINE = "decline"
    CANCEL = "cancel"
    EXPIRED = "expired"  # nobody answered within wait_timeout_seconds: recorded, never sent by a person


class RecordedEvent(dict[str, Any]):
    """An event as its run's record holds it: `type`, `run_id`, `seq`, then its fields.

    It keeps its JSON text once made (web.store_rows.event_json): the history and every JSON stream
    share one encoding of each event.
    """

    __slots__ = ("json_text",)


# A step_finished's `structured` when the output is the result's structured content (structured content is
# always an object, so this string cannot be one).
STRUCTURED_IS_OUTPUT = "output"

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
    structured: Any = None,
) -> Event:
    """The step's end; a skipped step has only this event (no started_at), its reason as message.

    `content` is the result's blocks whole: each that `output` already holds is recorded as a reference to it
    (web.step_content), so that the history and the streams carry a result once. `structured`: the result's
    structured content, when it had some — STRUCTURED_IS_OUTPUT when it is the output (the usual case, said
    once), else itself (a failed result's); left out when there was none.
    """
    event = {
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
    if structured is not None:
        event["structured"] = structured
    return event


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


def input_requested(
    *,
    request_id: str,
    step_name: str,
    index: int,
    kind: RequestKind,
    message: str,
    created_at: str,
    expires_at: str,
    details: dict[str, Any],
    durable: bool,
    resume: dict[str, Any] | None = None,
    item_index: int | None = None,
) -> Event:
    """A person is asked for something; the step and the run wait (status `waiting`) until it is answered.

    `details`: what the person is shown besides `message`, by kind: `requested_schema` (elicitation,
    approval), `url` and `elicitation_id` (url), `messages`, `system_prompt`, `model_preferences`,
    `max_tokens`... (sampling). `durable`: the request outlives the process (an approval, or a server's
    input-required result) and is asked again after a restart; `resume` is what its step needs to go on
    then (web.input_rounds), never shown. The run's status becomes `waiting`.
    """
    return {
        "type": EventType.INPUT_REQUESTED.value,
        "request_id": request_id,
        "step_name": step_name,
        "index": index,
        "item_index": item_index,
        "kind": RequestKind(kind).value,
        "message": message,
        "created_at": created_at,
        "expires_at": expires_at,
        **details,
        "durable": durable,
        "resume": resume,
        "run_status": RunStatus.WAITING.value,
    }


def input_answered(
    *,
    request_id: str,
    step_name: str,
    index: int,
    action: AnswerAction,
    content: Any,
    answered_at: str,
    answered_by: Actor | None,
    run_status: RunStatus,
) -> Event:
    """The answer to an input_requested (or its expiry): `run_status` is the run's status after it
    (`waiting` while other requests remain, else `running`)."""
    return {
        "type": EventType.INPUT_ANSWERED.value,
        "request_id": request_id,
        "step_name": step_name,
        "index": index,
        "action": AnswerAction(action).value,
        "content": content,
        "answered_at": answered_at,
        "answered_by": answered_by,
        "run_status": RunStatus(run_status).value,
    }


def input_drafted(
    *, request_id: str, step_name: str, index: int, draft: dict[str, Any], drafted_by: Actor | None
) -> Event:
    """A model's reply to a sampling request, for the person to review before it is sent (not an answer)."""
    return {
        "type": EventType.INPUT_DRAFTED.value,
        "request_id": request_id,
        "step_name": step_name,
        "index": index,
        "draft": draft,
        "drafted_by": drafted_by,
    }


def run_resumed(
    *, attempt: int, resumed_at: str, waiting_steps: list[str], rerun_steps: list[str], by: Actor | None = None
) -> Event:
    """A run that outlived its process goes on (web.resume): its `waiting_steps` wait again on their requests,
    `rerun_steps` are called again from the start (none when every step in flight was waiting on people).

    `attempt`: the how-manyth time it goes on (1, 2…); `by`: who resumed it, None for the server itself.
    """
    return {
        "type": EventType.RUN_RESUMED.value,
        "attempt": attempt,
        "resumed_at": resumed_at,
        "waiting_steps": waiting_steps,
        "rerun_steps": rerun_steps,
        "by": by,
    }
