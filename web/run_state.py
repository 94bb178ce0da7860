"""The fold of a run's events into its state: what snapshots, pages and fragments show.

The event list is the single source of truth; RunState is derived from it, one event at a time,
the same way while a run executes and when it is rebuilt from the history.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from web.events import STRUCTURED_IS_OUTPUT, TERMINAL_RUN_STATUSES, EventType, RequestKind, RunStatus, StepStatus
from web.step_content import full_content

STEP_EVENTS = frozenset(
    {EventType.STEP_STARTED, EventType.STEP_PROGRESS, EventType.STEP_RETRYING, EventType.STEP_ITEM_FINISHED,
     EventType.STEP_FINISHED}
)
INPUT_EVENTS = frozenset({EventType.INPUT_REQUESTED, EventType.INPUT_ANSWERED, EventType.INPUT_DRAFTED})
# What an input_requested holds that is not shown to people: the record's own keys, and what only its step reads.
_NOT_SHOWN = frozenset({"type", "run_id", "seq", "index", "resume", "run_status"})


# The date and time to the second of the last timestamp made: a run makes several a millisecond.
_second: tuple[int, str] = (0, "")


def utc_now() -> str:
    """Now, as `datetime.now(UTC).isoformat(timespec="milliseconds")` writes it."""
    global _second
    now = time.time()
    second, prefix = _second
    if int(now) != second:
        second = int(now)
        prefix = datetime.fromtimestamp(second, UTC).isoformat()[:19]
        _second = (second, prefix)
    return f"{prefix}.{min(999, int((now - second) * 1000)):03d}+00:00"


@dataclass
class ItemState:
    """One item of a for_each step, once it has ended."""

    item_index: int
    status: str
    message: str = ""
    output: Any = None
    input: dict[str, Any] | None = None
    attempt: int = 1


@dataclass
class Retry:
    """A retry waiting for its backoff: attempt `attempt` of `max_attempts` starts at `at`."""

    attempt: int
    max_attempts: int
    message: str  # why the previous attempt failed
    at: str
    delay: float


@dataclass
class StepState:
    """One step as the events so far describe it."""

    node_id: str
    index: int
    status: str = StepStatus.RUNNING.value
    started_at: str | None = None
    finished_at: str | None = None
    message: str = ""
    input: dict[str, Any] | None = None
    output: Any = None
    # The result's content blocks whole (references to the output restored); a marker when it was too large.
    content: list[dict[str, Any]] | dict[str, Any] | None = None
    # The result's structured content, when it had some (`steps.<name>.structured`).
    structured: Any = None
    progress: float | None = None
    total: float | None = None
    progress_message: str | None = None
    # The attempt under way, or the one a retry is waiting to start.
    attempt: int = 1
    max_attempts: int | None = None
    retry_message: str | None = None
    retry_at: str | None = None
    retry_delay: float | None = None
    # for_each: how many items, and those that have ended, by item index.
    item_count: int | None = None
    items: dict[int, ItemState] = field(default_factory=dict)
    items_done: int = 0
    items_failed: int = 0
    # Items waiting to be tried again, by item index (dropped when the item ends).
    item_retries: dict[int, Retry] = field(default_factory=dict)
    # Requests to people this step is waiting on (ids, in order), and the answers it has had, each
    # `{request_id, kind, action, answered_by, answered_at}`.
    waiting_on: list[str] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)
    seq: int = 0  # the last event that changed this step

    @property
    def is_for_each(self) -> bool:
        return self.item_count is not None

    @property
    def retry(self) -> Retry | None:
        if self.retry_at is None:
            return None
        return Retry(self.attempt, self.max_attempts or self.attempt, self.retry_message or "", self.retry_at,
                     self.retry_delay or 0.0)

    def started(self, event: dict[str, Any]) -> None:
        """A (new) attempt: the step runs again; its first start time stays."""
        self.status = StepStatus.RUNNING.value
        self.started_at = self.started_at or event["started_at"]
        self.finished_at = None
        self.message = ""
        self.input = event.get("input")
        self.output = self.content = self.structured = None
        self.attempt = event.get("attempt") or 1
        self.retry_message = self.retry_at = self.retry_delay = None
        self.progress = self.total = self.progress_message = None
        if "item_count" in event:
            self.item_count = event["item_count"]
            self.items, self.items_done, self.items_failed, self.item_retries = {}, 0, 0, {}
            self.progress, self.total = 0, event["item_count"]

    def retrying(self, event: dict[str, Any]) -> None:
        self.max_attempts = event.get("max_attempts") or self.max_attempts
        retry = Retry(event["attempt"], event.get("max_attempts") or event["attempt"], event.get("message") or "",
                      event["retry_at"], event.get("delay_seconds") or 0.0)
        if event.get("item_index") is not None:
            self.item_retries[event["item_index"]] = retry
            return
        self.attempt = retry.attempt
        self.retry_message, self.retry_at, self.retry_delay = retry.message, retry.at, retry.delay

    def item_finished(self, event: dict[str, Any]) -> None:
        index = event["item_index"]
        item = ItemState(index, event["status"], event.get("message") or "", event.get("output"),
                         event.get("input"), event.get("attempt") or 1)
        previous = self.items.get(index)
        if previous is not None:  # the same item told twice: counted once
            self.items_done -= 1
            self.items_failed -= int(previous.status == StepStatus.FAILED)
        self.items[index] = item
        self.items_done += 1
        self.items_failed += int(item.status == StepStatus.FAILED)
        self.item_retries.pop(index, None)
        self.progress, self.total = self.items_done, self.item_count

    def finished(self, event: dict[str, Any]) -> None:
        self.waiting_on = []
        self.status = event["status"]
        self.started_at = event.get("started_at") or self.started_at
        self.finished_at = event["finished_at"]
        self.message = event.get("message") or ""
        self.output = event.get("output")
        self.content = full_content(self.output, event.get("content"))
        structured = event.get("structured")
        self.structured = self.output if structured == STRUCTURED_IS_OUTPUT else structured
        # A step cancelled during a backoff waits for nothing any more.
        self.retry_message = self.retry_at = self.retry_delay = None
        self.item_retries = {}


@dataclass
class RunState:
    """The fold of a run's events: what a snapshot shows."""

    run_id: str
    scenario_id: str
    input: dict[str, Any]
    created_at: str
    status: str = RunStatus.QUEUED.value
    message: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    steps: dict[str, StepState] = field(default_factory=dict)
    # The steps this run follows (web.plan.PlannedStep.summary each), as run_started recorded them;
    # None for runs recorded before plans were.
    plan: list[dict[str, Any]] | None = None
    output: Any = None
    # Who acted on the run, each `{"name", "source"}` (web.access.Identity.audit); None when nobody named did,
    # and for runs recorded before access control. A person answering a request is recorded on the answer's
    # own event, the same way.
    started_by: dict[str, Any] | None = None
    cancelled_by: dict[str, Any] | None = None
    # Requests waiting for a person, by request_id in the order asked: each as its input_requested shows
    # it (web.events.input_requested, without what only the step reads), plus `draft` once a model drafted
    # a reply. The run is `waiting` while there is one.
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)

    def apply(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == EventType.RUN_STARTED:
            self.status = RunStatus.RUNNING.value
            self.started_at = event["started_at"]
            self.plan = event.get("plan")
            self.started_by = event.get("started_by") or self.started_by
        elif kind == EventType.RUN_RESUMED:
            self._drop_dead_requests()
        elif kind == EventType.RUN_FINISHED:
            self.pending = {}
            self.status = event["status"]
            self.finished_at = event["finished_at"]
            self.message = event.get("message") or ""
            self.output = event.get("output")
            self.cancelled_by = event.get("cancelled_by")
        elif kind in STEP_EVENTS:
            step = self.steps.get(event["step_name"])
            if step is None:
                step = self.steps[event["step_name"]] = StepState(node_id=event["step_name"], index=event["index"])
            step.seq = event.get("seq", step.seq)
            if kind == EventType.STEP_STARTED:
                step.started(event)
                # A new attempt (or the step run again after a restart) waits on nothing asked before it.
                self._drop_requests_of(step.node_id)
            elif kind == EventType.STEP_PROGRESS:
                step.progress = event["progress"]
                step.total = event.get("total")
                step.progress_message = event.get("message")
            elif kind == EventType.STEP_RETRYING:
                step.retrying(event)
            elif kind == EventType.STEP_ITEM_FINISHED:
                step.item_finished(event)
            elif kind == EventType.STEP_FINISHED:
                step.finished(event)
                self._drop_requests_of(step.node_id)
        elif kind in INPUT_EVENTS:
            self._input(kind, event)

    def _input(self, kind: str, event: dict[str, Any]) -> None:
        request_id = event["request_id"]
        step = self.steps.get(event["step_name"])
        if kind == EventType.INPUT_REQUESTED:
            if event.get("kind") == RequestKind.RESUME:
                self._drop_dead_requests()
            self.pending[request_id] = {key: value for key, value in event.items() if key not in _NOT_SHOWN}
            if step is not None:
                step.seq = event.get("seq", step.seq)
                step.waiting_on.append(request_id)
                step.status = StepStatus.WAITING.value
            self.status = RunStatus.WAITING.value
        elif kind == EventType.INPUT_DRAFTED:
            request = self.pending.get(request_id)
            if request is not None:
                request["draft"] = event.get("draft")
                if step is not None:
                    step.seq = event.get("seq", step.seq)
        else:
            request = self.pending.pop(request_id, None)
            if step is not None:
                step.seq = event.get("seq", step.seq)
                step.answers.append(
                    {
                        "request_id": request_id,
                        "kind": request["kind"] if request is not None else None,
                        "action": event["action"],
                        "answered_by": event.get("answered_by"),
                        "answered_at": event.get("answered_at"),
                    }
                )
                if request_id in step.waiting_on:
                    step.waiting_on.remove(request_id)
                if not step.waiting_on and step.status == StepStatus.WAITING:
                    step.status = StepStatus.RUNNING.value
            if not self.pending and self.status == RunStatus.WAITING:
                self.status = RunStatus.RUNNING.value

    def _drop_dead_requests(self) -> None:
        """After a restart (a Resume asked, or the run resumed), the requests that lived only on a connection of
        the process that stopped (a server asking over its session) are gone: only durable ones stay open."""
        for request_id, request in list(self.pending.items()):
            if not request.get("durable"):
                del self.pending[request_id]
                step = self.steps.get(request["step_name"])
                if step is not None and request_id in step.waiting_on:
                    step.waiting_on.remove(request_id)

    def _drop_requests_of(self, step_name: str) -> None:
        """A step that ended waits for nothing: its requests are no longer open."""
        dropped = [rid for rid, request in self.pending.items() if request["step_name"] == step_name]
        for request_id in dropped:
            del self.pending[request_id]
        if dropped and not self.pending and self.status == RunStatus.WAITING:
            self.status = RunStatus.RUNNING.value

    def refold(self, events: list[dict[str, Any]]) -> None:
        """Fold `events` again from the start, into this same object (views may hold it)."""
        fresh = RunState(
            run_id=self.run_id,
            scenario_id=self.scenario_id,
            input=self.input,
            created_at=self.created_at,
            started_by=self.started_by,
        )
        for event in events:
            fresh.apply(event)
        self.__dict__.update(fresh.__dict__)

    @property
    def is_finished(self) -> bool:
        return self.status in TERMINAL_RUN_STATUSES
