"""A tool call with everything people answer during it.

- Over the open session (protocol 2025) a server may ask in the middle of the call: web/mcp_server.py puts
  those requests to the call's asker.
- On protocol 2026-07-28 a server answers the call with an input-required result instead: requests for
  roots (answered from the configured folders), elicitation and sampling (put to people, all of a round at
  once), and an opaque `request_state`. The call is then sent again with the responses and the state echoed,
  as often as the server asks, up to MAX_INPUT_ROUNDS. Nothing is held open meanwhile, so these requests
  are durable: each records in its `resume` what the step needs to go on after a restart (the server, the
  round, its key in the round, the round's keys and request_state), and `call_answering(...,
  resume_events=...)` rebuilds the round from the step's events, waits on what is still open and sends the
  call again.
- A server that refuses the call until a person visits a page (error -32042, protocol 2025) has the person
  asked, and the call sent once more.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from mcp_types import (
    CallToolResult,
    CreateMessageRequest,
    ElicitRequest,
    ErrorData,
    InputRequest,
    InputRequiredResult,
    InputResponse,
    InputResponses,
    ListRootsRequest,
)

from web.client_requests import (
    Unsupported,
    elicit_result,
    elicitation_ask,
    roots_result,
    sampling_ask,
    sampling_result,
)
from web.events import AnswerAction, EventType, RequestKind
from web.inbox import Answer, Ask, UnaskableRequest
from web.mcp_pool import McpPool
from web.mcp_server import PersonDeclined, ToolCallError, UrlElicitationRequired, WaitExpired, innermost
from web.step_asker import StepAsker

__all__ = ["MAX_INPUT_ROUNDS", "WaitExpired", "call_answering", "resumable"]

# How many input-required rounds one call may take: a server asking for ever would hold its step for ever.
MAX_INPUT_ROUNDS = 20


@dataclasses.dataclass
class _Round:
    """Where a call stands between two sends: the responses and state to send it with, and its round number."""

    responses: InputResponses | None = None
    state: str | None = None
    number: int = 0


async def call_answering(
    pool: McpPool,
    server: str,
    tool: str,
    arguments: dict[str, Any],
    *,
    timeout: float,
    on_progress: Callable[[float, float | None, str | None], Awaitable[None]] | None,
    asker: StepAsker,
    resume_events: list[dict[str, Any]] | None = None,
) -> CallToolResult:
    """`pool.call` plus what people answer during it. Raises what pool.call raises, and WaitExpired when
    nobody answered in time. `resume_events`: the step's events since its last step_started, after a
    restart: the call goes on from its last recorded round."""
    at = await _resumed(pool, server, asker, resume_events) if resume_events else None
    at = at or _Round()
    visited = False
    while True:
        try:
            result = await pool.call(
                server,
                tool,
                arguments,
                timeout=timeout,
                on_progress=on_progress,
                asker=asker,
                input_responses=at.responses,
                request_state=at.state,
                allow_input_required=True,
            )
        except UrlElicitationRequired as exc:
            if visited:
                raise ToolCallError(f"{exc} (asked again after a person visited it)") from None
            await _visit(server, tool, asker, exc)
            visited = True
            continue
        if not isinstance(result, InputRequiredResult):
            return result
        number = at.number + 1
        if number > MAX_INPUT_ROUNDS:
            raise ToolCallError(
                f"'{tool}' on MCP server '{server}' still asked for input after {MAX_INPUT_ROUNDS} rounds, "
                "Stepline's limit for one call"
            )
        responses = await _answer_round(pool, server, asker, result, number)
        at = _Round(responses, result.request_state, number)


def resumable(step_events: list[dict[str, Any]]) -> bool:
    """Whether a step's open requests can be waited on again after a restart: each is a durable request of
    an input-required round (approval steps are resumed by the runner itself)."""
    answered = {event["request_id"] for event in step_events if event["type"] == EventType.INPUT_ANSWERED}
    open_requests = [
        event
        for event in step_events
        if event["type"] == EventType.INPUT_REQUESTED and event["request_id"] not in answered
    ]
    return bool(open_requests) and all(
        event.get("durable") and isinstance(event.get("resume"), dict) and "round" in event["resume"]
        for event in open_requests
    )


async def _answer_round(
    pool: McpPool, server: str, asker: StepAsker, result: InputRequiredResult, number: int
) -> InputResponses:
    """The responses to one round's requests: roots at once, the rest from people, asked all at once."""
    requests = result.input_requests or {}
    if not requests:
        raise ToolCallError(f"MCP server '{server}' asked for input but sent no requests")
    resume = {"server": server, "round": number, "request_state": result.request_state, "keys": list(requests)}
    responses: dict[str, InputResponse] = {}
    asks: dict[str, Ask] = {}
    for key, request in requests.items():
        if isinstance(request, ListRootsRequest):
            responses[key] = roots_result(pool.roots)
            continue
        try:
            ask = _ask_for(server, request)
        except Unsupported as exc:
            raise ToolCallError(f"MCP server '{server}' asked for input Stepline cannot give: {exc}") from None
        asks[key] = dataclasses.replace(ask, durable=True, resume={**resume, "key": key})
    try:
        answers = await _all_answered(
            server, asker, {key: (ask.kind, lambda ask=ask: asker.ask(ask)) for key, ask in asks.items()}
        )
    except UnaskableRequest as exc:
        raise ToolCallError(f"MCP server '{server}' asked for input Stepline cannot show to a person: {exc}") from None
    for key, ask in asks.items():
        responses[key] = _response(server, ask.kind, answers[key])
    return responses


async def _resumed(pool: McpPool, server: str, asker: StepAsker, events: list[dict[str, Any]]) -> _Round | None:
    """The round a call was in when its process stopped, answered: from the step's events, the answers given
    then, and those still open waited on again."""
    requested = [
        event
        for event in events
        if event["type"] == EventType.INPUT_REQUESTED
        and isinstance(event.get("resume"), dict)
        and "round" in event["resume"]
    ]
    if not requested:
        return None
    last = requested[-1]["resume"]
    this_round = [event for event in requested if event["resume"]["round"] == last["round"]]
    answered = {event["request_id"]: event for event in events if event["type"] == EventType.INPUT_ANSWERED}
    waits: dict[str, tuple[RequestKind, Callable[[], Awaitable[Answer]]]] = {}
    for event in this_round:
        key, done = event["resume"]["key"], answered.get(event["request_id"])
        if done is not None:
            answer = Answer(event["request_id"], AnswerAction(done["action"]), done.get("content"))
            waits[key] = (event["kind"], lambda answer=answer: _given(answer))
        else:
            waits[key] = (event["kind"], lambda event=event: asker.again(event))
    answers = await _all_answered(server, asker, waits)
    responses: dict[str, InputResponse] = {}
    for key in last["keys"]:
        if key in answers:
            responses[key] = _response(server, waits[key][0], answers[key])
        else:  # roots, answered from the folders configured now
            responses[key] = roots_result(pool.roots)
    return _Round(responses, last.get("request_state"), last["round"])


async def _given(answer: Answer) -> Answer:
    return answer


async def _all_answered(
    server: str, asker: StepAsker, waits: dict[str, tuple[RequestKind, Callable[[], Awaitable[Answer]]]]
) -> dict[str, Answer]:
    """Each request's answer, waited on together; the first that nobody answered in time stops the others."""

    async def answered(kind: RequestKind, wait: Callable[[], Awaitable[Answer]]) -> Answer:
        answer = await wait()
        if answer.action == AnswerAction.EXPIRED:
            raise asker.expired(f"the {_what(kind)} of MCP server '{server}'")
        return answer

    try:
        async with asyncio.TaskGroup() as group:
            tasks = {key: group.create_task(answered(kind, wait)) for key, (kind, wait) in waits.items()}
    except BaseExceptionGroup as exc:
        raise innermost(exc) from None
    return {key: task.result() for key, task in tasks.items()}


def _ask_for(server: str, request: InputRequest) -> Ask:
    if isinstance(request, ElicitRequest):
        return elicitation_ask(request.params)
    assert isinstance(request, CreateMessageRequest)
    return sampling_ask(server, request.params)


def _response(server: str, kind: RequestKind, answer: Answer) -> InputResponse:
    if kind != RequestKind.SAMPLING:
        return elicit_result(answer)
    result = sampling_result(answer)
    if isinstance(result, ErrorData):  # declined: an input-required round has no way to say so but failing
        raise PersonDeclined(f"A person declined the sampling request of MCP server '{server}' ({answer.action})")
    return result


def _what(kind: RequestKind) -> str:
    return {
        RequestKind.URL: "request to visit a page",
        RequestKind.SAMPLING: "sampling request",
    }.get(kind, "elicitation request")


async def _visit(server: str, tool: str, asker: StepAsker, refused: UrlElicitationRequired) -> None:
    """Have a person visit each page the server named before it runs the call."""
    for params in refused.elicitations:
        answer = await asker.ask(elicitation_ask(params))
        if answer.action == AnswerAction.EXPIRED:
            raise asker.expired(f"the request of MCP server '{server}' to visit {params.url}")
        if not answer.accepted:
            raise PersonDeclined(
                f"'{tool}' on MCP server '{server}' needs a person to visit {params.url} first, "
                f"and the person answered {answer.action}"
            )
