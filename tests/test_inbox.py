"""Requests to people, recorded on a run: asking, answering, expiring, and what the run's state shows."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from web.events import AnswerAction, RequestKind, RunStatus, StepStatus, run_finished, run_started, step_finished
from web.events import step_started as started
from web.inbox import AnswerInvalid, Ask, Inbox, RequestClosed, RequestNotFound, UnaskableRequest
from web.registry import RunRecord
from web.run_state import RunState, utc_now

pytestmark = pytest.mark.anyio

ALICE = {"name": "alice", "source": "proxy"}
FORM = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name"],
}


def running_record() -> RunRecord:
    record = RunRecord("run-1", "scenario", {}, utc_now())
    record.emit(run_started(scenario_id="scenario", started_at=utc_now(), plan=None))
    record.emit(started(step_name="ask", index=0, started_at=utc_now(), input={}))
    return record


async def asked(inbox: Inbox, record: RunRecord, ask: Ask, **options: Any) -> tuple[asyncio.Task[Any], str]:
    """Start asking in a task, and return it with the request's id once it is recorded."""
    task = asyncio.create_task(inbox.ask(record, "ask", 0, ask, **options))
    while not record.state.pending and not task.done():
        await asyncio.sleep(0)
    return task, next(iter(record.state.pending))


async def test_a_request_makes_the_step_and_run_wait_and_the_answer_names_who_gave_it() -> None:
    record, inbox = running_record(), Inbox()
    task, request_id = await asked(
        inbox, record, Ask(RequestKind.ELICITATION, "Who are you?", {"requested_schema": FORM})
    )
    state = record.state
    assert state.status == RunStatus.WAITING
    assert state.steps["ask"].status == StepStatus.WAITING
    shown = state.pending[request_id]
    assert shown["kind"] == "elicitation" and shown["message"] == "Who are you?"
    assert shown["requested_schema"] == FORM and "resume" not in shown

    answer = inbox.answer(record, request_id, AnswerAction.ACCEPT, {"name": "Ann", "age": 3}, by=ALICE)
    assert (await task) == answer
    assert answer.content == {"name": "Ann", "age": 3} and answer.by == ALICE
    assert state.status == RunStatus.RUNNING and state.steps["ask"].status == StepStatus.RUNNING
    assert state.pending == {}
    assert state.steps["ask"].answers == [
        {
            "request_id": request_id,
            "kind": "elicitation",
            "action": "accept",
            "answered_by": ALICE,
            "answered_at": record.events[-1]["answered_at"],
        }
    ]
    # The history folds the same events to the same state.
    again = RunState(run_id="run-1", scenario_id="scenario", input={}, created_at=state.created_at)
    for event in record.events:
        again.apply(event)
    assert again.steps["ask"].answers == state.steps["ask"].answers and again.status == RunStatus.RUNNING


async def test_content_that_does_not_fit_the_form_is_refused_field_by_field_and_the_request_stays_open() -> None:
    record, inbox = running_record(), Inbox()
    task, request_id = await asked(inbox, record, Ask(RequestKind.ELICITATION, "?", {"requested_schema": FORM}))
    with pytest.raises(AnswerInvalid) as refused:
        inbox.answer(record, request_id, AnswerAction.ACCEPT, {"age": -1}, by=None)
    problems = {tuple(problem["loc"]): problem["type"] for problem in refused.value.problems}
    assert problems == {
        ("body", "content", "name"): "jsonschema.required",
        ("body", "content", "age"): "jsonschema.minimum",
    }
    assert request_id in record.state.pending and not task.done()
    inbox.answer(record, request_id, AnswerAction.DECLINE, {"ignored": True}, by=None)
    assert (await task).content is None


async def test_a_second_answer_says_who_answered_first_and_an_unknown_id_is_not_found() -> None:
    record, inbox = running_record(), Inbox()
    task, request_id = await asked(inbox, record, Ask(RequestKind.APPROVAL, "Ship it?", durable=True))
    inbox.answer(record, request_id, AnswerAction.ACCEPT, {"comment": "yes"}, by=ALICE)
    await task
    with pytest.raises(RequestClosed, match="answered already \\(accept by alice\\)"):
        inbox.answer(record, request_id, AnswerAction.DECLINE, None, by=None)
    with pytest.raises(RequestNotFound):
        inbox.answer(record, "nope", AnswerAction.ACCEPT, None, by=None)


async def test_nobody_answering_in_time_is_recorded_as_expired() -> None:
    record, inbox = running_record(), Inbox()
    answer = await inbox.ask(
        record, "ask", 0, Ask(RequestKind.URL, "Log in", {"url": "https://x.test"}), wait_seconds=0.05
    )
    assert answer.action == AnswerAction.EXPIRED
    assert record.events[-1]["type"] == "input_answered" and record.events[-1]["action"] == "expired"
    assert record.state.status == RunStatus.RUNNING and record.state.pending == {}


async def test_a_cancelled_step_closes_its_request_and_a_late_answer_is_refused() -> None:
    record, inbox = running_record(), Inbox()
    task, request_id = await asked(inbox, record, Ask(RequestKind.SAMPLING, "Summarise", {"messages": []}))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    record.emit(
        step_finished(
            step_name="ask", index=0, status=StepStatus.CANCELLED, started_at=None, finished_at=utc_now(), message="x"
        )
    )
    assert record.state.pending == {} and record.state.status == RunStatus.RUNNING
    with pytest.raises(RequestClosed, match="its step has ended"):
        inbox.answer(record, request_id, AnswerAction.ACCEPT, {"text": "hi"}, by=None)
    record.emit(run_finished(status=RunStatus.CANCELLED, finished_at=utc_now(), message="Cancelled"))
    with pytest.raises(RequestClosed, match="has ended"):
        inbox.answer(record, request_id, AnswerAction.ACCEPT, {"text": "hi"}, by=None)


async def test_two_open_requests_keep_the_run_waiting_until_both_are_answered() -> None:
    record, inbox = running_record(), Inbox()
    first, first_id = await asked(inbox, record, Ask(RequestKind.SAMPLING, "one", {"messages": []}))
    second = asyncio.create_task(inbox.ask(record, "ask", 0, Ask(RequestKind.SAMPLING, "two", {"messages": []})))
    while len(record.state.pending) < 2:
        await asyncio.sleep(0)
    second_id = [rid for rid in record.state.pending if rid != first_id][0]
    inbox.answer(record, first_id, AnswerAction.ACCEPT, {"text": "a", "model": "m"}, by=None)
    assert record.events[-1]["run_status"] == "waiting" and record.state.status == RunStatus.WAITING
    inbox.answer(record, second_id, AnswerAction.ACCEPT, {"text": "b"}, by=None)
    assert record.events[-1]["run_status"] == "running" and record.state.status == RunStatus.RUNNING
    assert (await first).content == {"text": "a", "model": "m"} and (await second).content == {"text": "b"}


async def test_a_sampling_request_takes_a_drafted_reply_for_review_before_it_is_answered() -> None:
    record, inbox = running_record(), Inbox()
    task, request_id = await asked(inbox, record, Ask(RequestKind.SAMPLING, "Summarise", {"messages": []}))
    draft = {"text": "A summary", "model": "m1", "stop_reason": "endTurn"}
    inbox.draft(record, request_id, draft, by=ALICE)
    assert record.state.pending[request_id]["draft"] == draft and not task.done()
    with pytest.raises(AnswerInvalid):
        inbox.answer(record, request_id, AnswerAction.ACCEPT, {"text": ""}, by=None)
    inbox.answer(record, request_id, AnswerAction.ACCEPT, {"text": "A summary", "model": "m1"}, by=ALICE)
    assert (await task).accepted


async def test_a_form_nobody_can_be_shown_is_refused_before_anything_is_recorded() -> None:
    record, inbox = running_record(), Inbox()
    before = len(record.events)
    with pytest.raises(UnaskableRequest, match="not a valid JSON Schema"):
        await inbox.ask(record, "ask", 0, Ask(RequestKind.ELICITATION, "?", {"requested_schema": {"type": 7}}))
    with pytest.raises(UnaskableRequest, match="must describe an object"):
        await inbox.ask(record, "ask", 0, Ask(RequestKind.ELICITATION, "?", {"requested_schema": {"type": "string"}}))
    assert len(record.events) == before


async def test_fields_that_look_like_secrets_are_named_for_a_warning() -> None:
    record, inbox = running_record(), Inbox()
    schema = {
        "type": "object",
        "properties": {
            "password": {"type": "string"},
            "apiKey": {"type": "string"},
            "x": {"type": "string", "title": "Access token"},
            "city": {"type": "string"},
        },
    }
    task, request_id = await asked(inbox, record, Ask(RequestKind.ELICITATION, "?", {"requested_schema": schema}))
    assert record.state.pending[request_id]["secret_fields"] == ["password", "apiKey", "x"]
    task.cancel()


async def test_a_request_too_large_or_not_json_is_refused_and_a_long_message_is_cut() -> None:
    record, inbox = running_record(), Inbox(max_request_bytes=2048)
    before = len(record.events)
    huge = {"messages": [{"role": "user", "content": {"type": "text", "text": "x" * 4096}}]}
    with pytest.raises(UnaskableRequest, match="more than the 2,048 a person is shown"):
        await inbox.ask(record, "ask", 0, Ask(RequestKind.SAMPLING, "Summarise", huge))
    with pytest.raises(UnaskableRequest, match="holds what JSON cannot"):
        await inbox.ask(record, "ask", 0, Ask(RequestKind.SAMPLING, "Summarise", {"temperature": float("nan")}))
    assert len(record.events) == before

    task, request_id = await asked(inbox, record, Ask(RequestKind.URL, "y" * 10_000, {"url": "https://x.test"}))
    message = record.state.pending[request_id]["message"]
    assert message.startswith("y" * 4000) and message.endswith("(6,000 more characters)")
    task.cancel()
