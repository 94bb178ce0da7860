"""Requests to people: a step asks and waits, a person answers through the API or the page.

A request is recorded as an input_requested event, which makes the step and the run `waiting`; its
answer is an input_answered event naming who answered, which the asking step reads. Both are in the
run's event list like everything else, so the snapshot, the page, both streams and the history show
them, and a durable request (an approval, a server's input-required result) is asked again after a
restart from what its events say.

The inbox holds only what a live process needs besides: which requests a step is waiting on now.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from web.events import (
    Actor,
    AnswerAction,
    EventType,
    RequestKind,
    RunStatus,
    input_answered,
    input_drafted,
    input_requested,
)
from web.json_limits import MESSAGE_MAX_CHARS, dumps, json_size, safe_text
from web.object_schemas import misfits, object_schema_problem
from web.registry import RunRecord
from web.run_state import utc_now

# The largest request a person is shown unless the inbox is told otherwise (the largest result a step keeps).
DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024
# How long a request waits for a person unless its step says (wait_timeout_seconds).
DEFAULT_WAIT_SECONDS = 24 * 60 * 60.0
# Field names that ask for a secret, which the MCP spec forbids asking for in a form: shown with a warning.
SECRET_FIELD = re.compile(
    r"pass(word|phrase|wd)?|secret|token|api[ _-]?key|credential|private[ _-]?key|otp|pin\b", re.I
)
# A sampling reply a person writes or reviews: its text, and optionally the model that wrote it and why it
# stopped (a draft posted back as it came is a valid answer).
SAMPLING_ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "text": {"type": "string", "minLength": 1},
        "model": {"type": "string", "minLength": 1},
        "stop_reason": {"type": ["string", "null"]},
    },
    "required": ["text"],
    "additionalProperties": False,
}
# An approval without a schema takes an optional comment.
APPROVAL_DEFAULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"comment": {"type": "string", "title": "Comment"}},
}


class RequestNotFound(Exception):
    """No such request in this run (404)."""


class RequestClosed(Exception):
    """The request was answered already, or its step or run has ended (409); the message says which."""


class AnswerInvalid(Exception):
    """The answer's content does not fit what was asked (422): `problems` as `{loc, msg, type}` entries."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(problem["msg"] for problem in problems))
        self.problems = problems


class UnaskableRequest(Exception):
    """A request no person can be shown (its schema is not a usable JSON Schema); the message says why."""


@dataclass(frozen=True)
class Ask:
    """What a step asks a person. `details` by kind: see web.events.input_requested."""

    kind: RequestKind
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    durable: bool = False
    resume: dict[str, Any] | None = None
    item_index: int | None = None


@dataclass(frozen=True)
class Answer:
    """How a request ended: a person's action and content (`by`: who), or `expired`."""

    request_id: str
    action: AnswerAction
    content: Any = None
    by: Actor | None = None

    @property
    def accepted(self) -> bool:
        return self.action == AnswerAction.ACCEPT


class Inbox:
    """The requests steps are waiting on in this process, by request id.

    `max_request_bytes`: the largest request (its details as JSON) a person is shown; a server's larger one
    is refused to it (STEPLINE_MAX_OUTPUT_BYTES, the bound of what a server's result may bring too).
    """

    def __init__(self, *, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> None:
        self.max_request_bytes = max_request_bytes
        # The answer each request waited on now is awaiting, by request id.
        self._waiting: dict[str, asyncio.Future[Answer]] = {}

    async def ask(
        self,
        record: RunRecord,
        step_name: str,
        index: int,
        ask: Ask,
        *,
        wait_seconds: float = DEFAULT_WAIT_SECONDS,
        again: dict[str, Any] | None = None,
    ) -> Answer:
        """Record the request, wait for its answer (or its expiry, recorded as such) and return it.

        `again`: a request recorded before (its input_requested, as the run's state holds it in `pending`),
        waited on again after a restart: nothing new is recorded, and it expires when it always would have.
        Raises UnaskableRequest before recording anything; CancelledError when the step is stopped meanwhile
        (its step's ending closes the request).
        """
        if again is None:
            details = _checked(ask, self.max_request_bytes)
            request_id = uuid.uuid4().hex
            expires_at = (datetime.now(UTC) + timedelta(seconds=wait_seconds)).isoformat(timespec="milliseconds")
            record.emit(
                input_requested(
                    request_id=request_id,
                    step_name=step_name,
                    index=index,
                    kind=ask.kind,
                    message=safe_text(ask.message, MESSAGE_MAX_CHARS),
                    created_at=utc_now(),
                    expires_at=expires_at,
                    details=details,
                    durable=ask.durable,
                    resume=ask.resume,
                    item_index=ask.item_index,
                )
            )
        else:
            request_id, expires_at = again["request_id"], again["expires_at"]
        answer = self._waiting[request_id] = asyncio.get_running_loop().create_future()
        left = (datetime.fromisoformat(expires_at) - datetime.now(UTC)).total_seconds()
        try:
            # asyncio.wait neither cancels the future nor turns a cancel of this task into a timeout.
            await asyncio.wait({answer}, timeout=max(left, 0.0))
            if answer.done():  # answered, even in the same tick as the expiry: the answer stands
                return answer.result()
            answer.cancel()
            record.emit(
                input_answered(
                    request_id=request_id,
                    step_name=step_name,
                    index=index,
                    action=AnswerAction.EXPIRED,
                    content=None,
                    answered_at=utc_now(),
                    answered_by=None,
                    run_status=_status_after(record, request_id),
                )
            )
            return Answer(request_id, AnswerAction.EXPIRED)
        finally:
            self._waiting.pop(request_id, None)

    def answer(
        self, record: RunRecord, request_id: str, action: AnswerAction, content: Any, *, by: Actor | None
    ) -> Answer:
        """Record a person's answer and hand it to the waiting step.

        Raises RequestNotFound, RequestClosed, AnswerInvalid (content that does not fit; `loc` starts
        with "body", "content"). Content is kept only with `accept`.
        """
        request = self.open_request(record, request_id)
        if action not in (AnswerAction.ACCEPT, AnswerAction.DECLINE, AnswerAction.CANCEL):
            problem = {"loc": ["body", "action"], "msg": "must be one of accept, decline, cancel", "type": "enum"}
            raise AnswerInvalid([problem])
        content = answer_content(request, content) if action == AnswerAction.ACCEPT else None
        waiting = self._waiting.get(request_id)
        # A durable request outlives whoever waited on it: answered while its run is down or waits for a Resume,
        # its step takes the recorded answer when it goes on (web.resume).
        if waiting.done() if waiting is not None else not request.get("durable"):
            raise RequestClosed(f"Request {request_id} is not being waited on any more")
        record.emit(
            input_answered(
                request_id=request_id,
                step_name=request["step_name"],
                index=record.state.steps[request["step_name"]].index,
                action=action,
                content=content,
                answered_at=utc_now(),
                answered_by=by,
                run_status=_status_after(record, request_id),
            )
        )
        answer = Answer(request_id, action, content, by)
        if waiting is not None:
            waiting.set_result(answer)
        return answer

    def draft(self, record: RunRecord, request_id: str, draft: dict[str, Any], *, by: Actor | None) -> None:
        """Record a model's reply to a sampling request, for its reviewer (not an answer)."""
        request = self.open_request(record, request_id)
        if request["kind"] != RequestKind.SAMPLING:
            raise RequestClosed(f"Request {request_id} asks for {request['kind']}, not a model's reply")
        record.emit(
            input_drafted(
                request_id=request_id,
                step_name=request["step_name"],
                index=record.state.steps[request["step_name"]].index,
                draft=draft,
                drafted_by=by,
            )
        )

    @staticmethod
    def open_request(record: RunRecord, request_id: str) -> dict[str, Any]:
        """The request as the run shows it while it is open; RequestNotFound or RequestClosed otherwise."""
        request = record.state.pending.get(request_id)
        if request is not None:
            if record.is_finished:  # the fold drops them at the end; a run that ended answers nothing
                raise RequestClosed(f"Run {record.run_id} has ended")
            return request
        asked = any(
            event["type"] == EventType.INPUT_REQUESTED and event.get("request_id") == request_id
            for event in record.events
        )
        if not asked:
            raise RequestNotFound(f"Run {record.run_id} has no request {request_id}")
        answered = next(
            (
                event
                for event in reversed(record.events)
                if event["type"] == EventType.INPUT_ANSWERED and event.get("request_id") == request_id
            ),
            None,
        )
        if answered is not None:
            by = (answered.get("answered_by") or {}).get("name")
            who = f" by {by}" if by else ""
            raise RequestClosed(f"Request {request_id} was answered already ({answered['action']}{who})")
        if record.is_finished:
            raise RequestClosed(
                f"Request {request_id} is closed: run {record.run_id} has ended ({record.state.status})"
            )
        raise RequestClosed(f"Request {request_id} is closed: its step has ended")


def answer_schema(request: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON Schema an accepted answer's content must fit; None: it takes no content (url)."""
    kind = request["kind"]
    if kind == RequestKind.SAMPLING:
        return SAMPLING_ANSWER_SCHEMA
    if kind in (RequestKind.URL, RequestKind.RESUME):
        return None
    return request.get("requested_schema") or APPROVAL_DEFAULT_SCHEMA


def answer_content(request: dict[str, Any], content: Any) -> Any:
    """The content of an accepted answer, checked against what the request asked; AnswerInvalid."""
    schema = answer_schema(request)
    if schema is None:
        return None
    if content is None:
        content = {}
    problems = misfits(schema, content, ["body", "content"])
    if problems:
        raise AnswerInvalid(problems)
    return content


def secret_fields(schema: dict[str, Any]) -> list[str]:
    """The fields of a form that look like they ask for a secret (password, token, API key…)."""
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return []
    return [
        name
        for name, spec in properties.items()
        if SECRET_FIELD.search(name)
        or (isinstance(spec, dict) and SECRET_FIELD.search(str(spec.get("title", ""))))
        or (isinstance(spec, dict) and spec.get("format") == "password")
    ]


def _checked(ask: Ask, max_bytes: int) -> dict[str, Any]:
    """The request's details, with a form's schema checked and its secret-looking fields named."""
    details = dict(ask.details)
    try:
        size = json_size(dumps(details))
    except (TypeError, ValueError) as exc:  # NaN, or what JSON cannot hold at all
        raise UnaskableRequest(f"it holds what JSON cannot ({exc})") from None
    if size > max_bytes:
        raise UnaskableRequest(f"it is {size:,} bytes of JSON, more than the {max_bytes:,} a person is shown")
    if ask.kind in (RequestKind.ELICITATION, RequestKind.APPROVAL):
        schema = details.get("requested_schema") or (
            APPROVAL_DEFAULT_SCHEMA if ask.kind == RequestKind.APPROVAL else None
        )
        if not isinstance(schema, dict):
            raise UnaskableRequest("the request has no requestedSchema to build a form from")
        problem = object_schema_problem(schema)
        if problem is not None:
            raise UnaskableRequest(
                f"its requestedSchema is {problem}" if problem.startswith("not") else f"its requestedSchema {problem}"
            )
        details["requested_schema"] = schema
        details["secret_fields"] = secret_fields(schema)
    return details


def _status_after(record: RunRecord, request_id: str) -> RunStatus:
    others = [rid for rid in record.state.pending if rid != request_id]
    return RunStatus.WAITING if others else RunStatus.RUNNING
