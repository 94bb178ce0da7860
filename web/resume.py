"""Runs waiting on people go on after a restart.

A run whose every step in flight waits on durable requests (an approval, a server's input-required result)
was only waiting when its process stopped, gracefully or not: nothing of it was lost. After a restart it is
resumed rather than ended: its finished steps keep their results, its waiting steps wait again on the same
requests (answered, they go on as they would have), and the rest of its plan runs as usual. That needs the
scenario it ran, unchanged: a run whose scenario is gone or changed since ends as any interrupted run does,
saying why. Every other unfinished run ends failed (interrupted), as web.registry.RunRegistry.recover says.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from web.events import TERMINAL_STEP_STATUSES, EventType, RequestKind, StepStatus
from web.input_rounds import resumable
from web.plan import APPROVAL, TOOL
from web.registry import RESTARTED, Ending, RunRecord
from web.scenarios import Scenario

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResumedStep:
    """A step that was waiting on people when its process stopped, as its events since it last started tell it."""

    name: str
    started_at: str | None
    attempt: int
    arguments: dict[str, Any] | None  # what its last attempt called the tool with (a tool step)
    events: list[dict[str, Any]]  # its events since its last step_started, that one included
    pending: list[dict[str, Any]]  # its open requests, as the run's state shows them, in the order asked
    answered: dict[str, Any] | None  # an answer recorded that the step had not acted on yet (approval)


def waiting_steps(record: RunRecord) -> dict[str, ResumedStep] | None:
    """The run's steps in flight, if each only waits on people and can go on after a restart; else None."""
    state = record.state
    if state.plan is None:
        return None
    kinds = {planned["name"]: planned.get("type", TOOL) for planned in state.plan}
    in_flight = [step for step in state.steps.values() if step.status not in TERMINAL_STEP_STATUSES]
    if not in_flight:
        return None  # it stopped between its last step and its end: nothing waits, nothing to go on with
    steps = {}
    for step in in_flight:
        if step.is_for_each or step.node_id not in kinds:
            return None
        events = step_events(record.events, step.node_id)
        pending = [state.pending[rid] for rid in step.waiting_on if rid in state.pending]
        answered = _unused_answer(events)
        if kinds[step.node_id] == APPROVAL:
            if not (pending or answered) or not all(request.get("durable") for request in pending):
                return None
        elif step.status != StepStatus.WAITING or not resumable(events):
            return None
        started = events[0] if events and events[0]["type"] == EventType.STEP_STARTED else {}
        steps[step.node_id] = ResumedStep(
            name=step.node_id,
            started_at=step.started_at,
            attempt=started.get("attempt") or 1,
            arguments=started.get("input"),
            events=events,
            pending=pending,
            answered=answered,
        )
    return steps


def step_events(events: list[dict[str, Any]], step_name: str) -> list[dict[str, Any]]:
    """The step's events since its last step_started (that one first)."""
    mine = [event for event in events if event.get("step_name") == step_name]
    starts = [position for position, event in enumerate(mine) if event["type"] == EventType.STEP_STARTED]
    return mine[starts[-1] :] if starts else mine


def _unused_answer(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The answer to the step's approval request, when nothing it did followed it (it stopped right after)."""
    approvals = {
        event["request_id"]
        for event in events
        if event["type"] == EventType.INPUT_REQUESTED and event.get("kind") == RequestKind.APPROVAL
    }
    for event in reversed(events):
        if event["type"] == EventType.INPUT_ANSWERED:
            return event if event["request_id"] in approvals else None
        if event["type"] != EventType.INPUT_DRAFTED:
            return None
    return None


def scenario_changed(record: RunRecord, scenario: Scenario | None) -> str | None:
    """Why the run cannot go on with the scenario the catalog serves now; None when it can."""
    if scenario is None:
        return f"its scenario '{record.state.scenario_id}' is no longer served"
    if [step.summary() for step in scenario.plan.steps] != record.state.plan:
        return f"its scenario '{record.state.scenario_id}' changed since"
    return None


def not_resumed(why: str) -> Ending:
    """How a waiting run ends when it cannot go on: interrupted, as any other, saying why."""
    return Ending(
        RESTARTED.status,
        f"Interrupted by a server restart: {why}, so this run could not go on waiting",
        f"Interrupted by a server restart: {why}",
        RESTARTED.step_status,
    )
