"""Runs outlive their process: after a restart, every run left unfinished goes on from its recorded events.

Its finished steps, and the finished items of a for_each step, keep their results and are never called again.
A step waiting on people (an approval, a server's input-required result) waits again on the same requests.
A step whose call was in flight may have partly run: it runs again from the start when that is safe (its
step or scenario says `"resume": "auto"`, or its tool is annotated idempotent or read-only); when unsafe
(`"resume": "ask"`, the default for other tools) the run waits for a person's Resume; `"resume": "never"`
ends the run failed (interrupted), as before runs were resumed. All of it needs the scenario the run
started with, unchanged: a run whose scenario is gone or changed since ends interrupted, saying why.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from web.events import TERMINAL_STEP_STATUSES, EventType, RequestKind, RunStatus, StepStatus
from web.input_rounds import resumable
from web.mcp_pool import ToolInfo
from web.plan import APPROVAL, Plan, PlannedStep
from web.registry import Ending, RunRecord
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


AUTO, ASK, NEVER = "auto", "ask", "never"
Locate = Callable[[str, str | None], Awaitable[ToolInfo]]


@dataclass(frozen=True)
class RerunStep:
    """A step in flight when its process stopped, to run again from the start (a for_each: its items not ended)."""

    name: str
    policy: str  # auto | ask | never
    started_at: str | None
    # A for_each step's items that had ended, their step_item_finished by item index: not called again.
    ended_items: dict[int, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Restart:
    """What a restart finds of an unfinished run that has started: the steps that wait again, those to run
    again, and the request for a Resume that was open when it stopped (asked again, not anew)."""

    waiting: dict[str, ResumedStep]
    rerun: dict[str, RerunStep]
    asked: dict[str, Any] | None = None

    @property
    def policy(self) -> str:
        """never when any step to run again says so, else ask when any does (or a Resume was being asked)."""
        policies = {step.policy for step in self.rerun.values()}
        if NEVER in policies:
            return NEVER
        return ASK if ASK in policies or self.asked is not None else AUTO


async def restart_of(record: RunRecord, plan: Plan, locate: Locate) -> Restart:
    """How `record` goes on after a restart, following `plan` (the scenario's, unchanged since it started)."""
    state = record.state
    asked = next((r for r in state.pending.values() if r["kind"] == RequestKind.RESUME), None)
    waiting: dict[str, ResumedStep] = {}
    rerun: dict[str, RerunStep] = {}
    for step in state.steps.values():
        if step.status in TERMINAL_STEP_STATUSES:
            continue
        planned = plan.step(step.node_id)
        events = step_events(record.events, step.node_id)
        resumed = None if step.is_for_each else _waiting_on_people(record, planned, events)
        if resumed is not None:
            waiting[step.node_id] = resumed
            continue
        ended_items = {
            event["item_index"]: event for event in events if event["type"] == EventType.STEP_ITEM_FINISHED
        }
        policy = await policy_of(planned, locate)
        rerun[step.node_id] = RerunStep(step.node_id, policy, step.started_at, ended_items)
    return Restart(waiting, rerun, asked)


async def policy_of(step: PlannedStep, locate: Locate) -> str:
    """The step's own (or its scenario's) resume policy; else auto when its tool says calling it again is
    harmless (idempotentHint or readOnlyHint), ask when it says otherwise or cannot be asked."""
    if step.resume is not None:
        return step.resume
    if step.tool is None:  # an approval: asking again is harmless
        return AUTO
    try:
        annotations = (await locate(step.tool, step.server)).annotations or {}
    except Exception:  # the server down or the tool gone: nothing says it is safe
        return ASK
    return AUTO if annotations.get("idempotentHint") or annotations.get("readOnlyHint") else ASK


def _waiting_on_people(record: RunRecord, step: PlannedStep, events: list[dict[str, Any]]) -> ResumedStep | None:
    """The step, if it was waiting on people and can go on waiting after a restart; else None."""
    state = record.state
    step_state = state.steps[step.name]
    pending = [state.pending[rid] for rid in step_state.waiting_on if rid in state.pending]
    pending = [request for request in pending if request["kind"] != RequestKind.RESUME]
    answered = _unused_answer(events)
    if step.kind == APPROVAL:
        if not (pending or answered) or not all(request.get("durable") for request in pending):
            return None
    elif step_state.status != StepStatus.WAITING or not resumable(events):
        return None
    started = events[0] if events and events[0]["type"] == EventType.STEP_STARTED else {}
    return ResumedStep(
        name=step.name,
        started_at=step_state.started_at,
        attempt=started.get("attempt") or 1,
        arguments=started.get("input"),
        events=events,
        pending=pending,
        answered=answered,
    )


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
    """How an unfinished run ends when it cannot go on after a restart: interrupted, saying why."""
    return Ending(
        RunStatus.FAILED,
        f"Interrupted by a server restart: {why}, so this run could not go on",
        f"Interrupted by a server restart: {why}",
        StepStatus.FAILED,
    )


def resume_question(restart: Restart) -> str:
    """What a person is asked before steps that may have partly run are run again."""
    unsafe = [f"'{name}'" for name, step in restart.rerun.items() if step.policy != AUTO] or [
        f"'{name}'" for name in restart.rerun
    ]
    if len(unsafe) == 1:
        what, them = f"step {unsafe[0]} was running: it may have partly run (its tool may have done some", "it"
    else:
        names = ", ".join(unsafe[:-1]) + f" and {unsafe[-1]}"
        what, them = f"steps {names} were running: they may have partly run (their tools may have done some", "them"
    return (
        f"Stepline stopped while {what} of its work). Resume runs {them} again from the start; the steps that had "
        "ended keep their results."
    )
