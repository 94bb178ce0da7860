"""Answering what a run asks people: POST /api/runs/{run_id}/requests/{request_id}, a model's draft of a
sampling reply, and the Resume of a run that waits for one after a restart (POST /api/runs/{run_id}/resume).
The run service judges and records; these handlers parse and render."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from web.api import RequestInvalid, model_response, read_json
from web.events import AnswerAction, RunStatus
from web.openapi_parts import error_response, error_responses, json_response, path_param, ref
from web.permissions import identity_of
from web.runs import AnswerInvalid, HistoryFailing
from web.schemas import (
    ALICE,
    REQUEST_ID,
    RESUME_REQUEST_ID,
    RUN_ID,
    SAMPLING_REQUEST_ID,
    SCENARIO_ID,
    Actor,
    SamplingDraft,
    ValidationErrorResponse,
    first_example,
)
from web.store import RETRY_AFTER_SECONDS, StoreError

RETRY_AFTER = {"Retry-After": str(RETRY_AFTER_SECONDS)}


class AnswerBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"action": "accept", "content": {"copies": 2, "edition": "morning"}},
                {"action": "accept", "content": {"text": "It started in a community newsletter on 5 March."}},
                {"action": "decline"},
            ]
        },
    )

    action: Literal["accept", "decline", "cancel"] = Field(
        description="`accept` (with `content`), `decline` (refused) or `cancel` (dismissed without a choice)."
    )
    content: Any = Field(
        None,
        description="With `accept`: the values the request asks for. A form (`elicitation`, `approval`): an object "
        "matching its `requested_schema` (an approval without one takes `{\"comment\"?}`). `sampling`: "
        "`{\"text\", \"model\"?}`, the reply (yours, or the reviewed draft). `url`: nothing (visit the page first). "
        "Ignored with `decline` and `cancel`.",
    )


class AnswerResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"run_id": RUN_ID, "request_id": REQUEST_ID, "action": "accept",
                 "content": {"copies": 2, "edition": "morning"}, "answered_by": ALICE,
                 "answered_at": "2026-04-24T09:31:12.408+00:00", "status": "running"}
            ]
        }
    )

    run_id: str
    request_id: str
    action: AnswerAction
    content: Any = Field(description="What was recorded: the accepted content; null otherwise.")
    answered_by: Actor | None = Field(description="Who answered, as the run records it.")
    answered_at: str
    status: RunStatus = Field(
        description="The run's status now: `running` as the step goes on, `waiting` while other requests are "
        "open, or already ended if the step's answer ended it."
    )


class DraftResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"run_id": RUN_ID, "request_id": SAMPLING_REQUEST_ID, "draft": first_example(SamplingDraft)}
            ]
        }
    )

    run_id: str
    request_id: str
    draft: SamplingDraft = Field(description="The model's reply: also in the snapshot's request, until answered.")


class ResumeResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"run_id": RUN_ID, "request_id": RESUME_REQUEST_ID, "steps": ["publish"], "resumed_by": ALICE,
                 "resumed_at": "2026-04-24T10:05:31.204+00:00", "status": "running"}
            ]
        }
    )

    run_id: str
    request_id: str = Field(description="The Resume request it answered (`kind` `resume` in `pending_requests`).")
    steps: list[str] = Field(description="The steps run again from the start (a for_each: its items not ended).")
    resumed_by: Actor | None = Field(description="Who resumed it, as the run records it (`run_resumed`'s `by`).")
    resumed_at: str
    status: RunStatus = Field(
        description="The run's status now: `running` as it goes on, or `waiting` while other requests are open."
    )


async def answer_request(request: Request) -> Response:
    body = await read_json(request, AnswerBody)
    service = request.state.run_service
    run_id, request_id = request.path_params["run_id"], request.path_params["request_id"]
    try:
        answered = await service.answer(
            run_id, request_id, AnswerAction(body.action), body.content, by=identity_of(request)
        )
    except AnswerInvalid as exc:
        raise RequestInvalid(exc.errors) from None
    except HistoryFailing as exc:
        raise HTTPException(503, str(exc), headers=RETRY_AFTER) from None
    except StoreError as exc:
        raise HTTPException(503, f"Answered, but not yet on disk: {exc}", headers=RETRY_AFTER) from None
    return model_response(AnswerResponse.model_validate(answered, from_attributes=True))


async def draft_reply(request: Request) -> Response:
    run_id, request_id = request.path_params["run_id"], request.path_params["request_id"]
    try:
        draft = await request.state.run_service.draft(
            run_id, request_id, model=getattr(request.state, "sampling", None), by=identity_of(request)
        )
    except HistoryFailing as exc:
        raise HTTPException(503, str(exc), headers=RETRY_AFTER) from None
    except StoreError as exc:
        raise HTTPException(503, f"Drafted, but not yet on disk: {exc}", headers=RETRY_AFTER) from None
    return model_response(DraftResponse(run_id=run_id, request_id=request_id, draft=draft))


async def resume_run(request: Request) -> Response:
    try:
        resumed = await request.state.run_service.resume_run(request.path_params["run_id"], by=identity_of(request))
    except HistoryFailing as exc:
        raise HTTPException(503, str(exc), headers=RETRY_AFTER) from None
    except StoreError as exc:
        raise HTTPException(503, f"Resumed, but not yet on disk: {exc}", headers=RETRY_AFTER) from None
    return model_response(ResumeResponse.model_validate(resumed, from_attributes=True))


routes = [
    Route("/api/runs/{run_id}/resume", resume_run, methods=["POST"], name="api_resume_run"),
    Route("/api/runs/{run_id}/requests/{request_id}", answer_request, methods=["POST"], name="api_answer_request"),
    Route("/api/runs/{run_id}/requests/{request_id}/draft", draft_reply, methods=["POST"], name="api_draft_reply"),
]

PARAMETERS = [
    path_param("run_id", "The run's id, as POST /api/runs returned it.", RUN_ID),
    path_param("request_id", "The request's id, from the run's `pending_requests`.", REQUEST_ID),
]
FORBIDDEN = error_responses(
    "Identified, but not allowed: answering is running, so it needs the operator role and a place on the "
    "scenario's `access.run` list (when it has one)",
    role_too_low="Refused: this needs the operator role; yours is viewer",
    not_on_the_run_list=f"Refused: you may not answer requests in runs of scenario '{SCENARIO_ID}' (its run list "
    "names neither you nor your groups)",
)
UNKNOWN = error_responses(
    "Unknown run (or a run of a scenario you may not see), or the run never asked this request",
    unknown_run=f"Unknown run_id: {RUN_ID}",
    unknown_request=f"Run {RUN_ID} has no request {REQUEST_ID}",
)
HISTORY_FAILING = {
    **error_responses(
        "The run history cannot be written (see /healthz); try again after `Retry-After` seconds",
        not_answered="Not answered: run history .stepline/stepline.db cannot be written: database or disk is full "
        "[SQLITE_FULL] (is the disk full or the directory read-only?)",
        answered_not_on_disk="Answered, but not yet on disk: run history in .stepline cannot be written: database "
        "or disk is full [SQLITE_FULL] (is the disk full or the directory read-only?)",
    ),
    "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before trying again."}},
}
CONTENT_INVALID = {
    "description": "The body is not strict JSON or not an answer (an unknown `action`, an unknown field), or the "
    "accepted `content` does not fit what was asked (`loc` starts with `body`, `content`)",
    "content": {
        "application/json": {
            "schema": ref(ValidationErrorResponse),
            "examples": {
                "content does not fit the form": {
                    "value": {"detail": [{"loc": ["body", "content", "copies"],
                                          "msg": "0 is less than the minimum of 1", "type": "jsonschema.minimum"}]}
                },
                "a required field is missing": {
                    "value": {"detail": [{"loc": ["body", "content"], "msg": "'copies' is a required property",
                                          "type": "jsonschema.required"}]}
                },
                "unknown action": {
                    "value": {"detail": [{"loc": ["body", "action"],
                                          "msg": "Input should be 'accept', 'decline' or 'cancel'",
                                          "type": "literal_error"}]}
                },
            },
        }
    },
}

PATHS: dict[str, dict[str, Any]] = {
    "/api/runs/{run_id}/resume": {
        "post": {
            "summary": "Resume a run after a restart",
            "description": "A run whose steps were running when Stepline stopped goes on by itself after the "
            'restart when calling them again is safe (the step says `"resume": "auto"`, or its tool is '
            "annotated `idempotentHint` or `readOnlyHint`). Otherwise it waits (`waiting`, a `pending_requests` "
            "entry of kind `resume` naming the `steps`), since those steps may have partly run. This accepts that "
            "request: the steps run again from the start (a for_each step: only its items that had not ended), "
            "the steps that had ended keep their results, and a `run_resumed` event names who resumed it. To end "
            "the run instead, decline the request (POST /api/runs/{run_id}/requests/{request_id} "
            '`{"action": "decline"}`): it fails "Not resumed after a server restart (declined by …)". '
            "Resuming is running: it needs the operator role and, when the scenario has an `access.run` list, a "
            "place on it. No body.",
            "parameters": [PARAMETERS[0]],
            "responses": {
                "200": json_response("The Resume, recorded on disk", ResumeResponse),
                "403": error_responses(
                    "Identified, but not allowed: resuming is running, so it needs the operator role and a place on "
                    "the scenario's `access.run` list (when it has one)",
                    role_too_low="Refused: this needs the operator role; yours is viewer",
                    not_on_the_run_list=f"Refused: you may not resume runs of scenario '{SCENARIO_ID}' (its run "
                    "list names neither you nor your groups)",
                ),
                "404": error_response(
                    "Unknown run (or a run of a scenario you may not see)", f"Unknown run_id: {RUN_ID}"
                ),
                "409": error_responses(
                    "The run waits for no Resume: it is running, waiting on other requests, or has ended (or its "
                    "Resume was answered already)",
                    running=f"Run {RUN_ID} is not waiting for a Resume (it is running)",
                    ended=f"Run {RUN_ID} is not waiting for a Resume (it is failed)",
                ),
                "503": {
                    "headers": HISTORY_FAILING["headers"],
                    **error_responses(
                        "The run history cannot be written (see /healthz); try again after `Retry-After` seconds",
                        not_resumed="Not answered: run history .stepline/stepline.db cannot be written: database "
                        "or disk is full [SQLITE_FULL] (is the disk full or the directory read-only?)",
                        resumed_not_on_disk="Resumed, but not yet on disk: run history in .stepline cannot be "
                        "written: database or disk is full [SQLITE_FULL] (is the disk full or the directory "
                        "read-only?)",
                    ),
                },
            },
        }
    },
    "/api/runs/{run_id}/requests/{request_id}": {
        "post": {
            "summary": "Answer a request",
            "description": "Answers one of the run's `pending_requests`: `accept` with the content asked for, "
            "`decline` or `cancel`. The answer goes to the step that asked (an MCP server's elicitation or sampling "
            "request, an input-required result, an approval step), which goes on; the run's events get an "
            "`input_answered` naming who answered. Answered once the answer is on disk. Answering is running: it "
            "needs the operator role and, when the scenario has an `access.run` list, a place on it.",
            "parameters": PARAMETERS,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": ref(AnswerBody),
                        "examples": {
                            "accept a form": {"value": {"action": "accept",
                                                        "content": {"copies": 2, "edition": "morning"}}},
                            "reply to a sampling request": {"value": {"action": "accept", "content": {
                                "text": "It started in a community newsletter on 5 March.",
                                "model": "gpt-4o-mini-2024-07-18"}}},
                            "confirm a visited URL": {"value": {"action": "accept"}},
                            "decline": {"value": {"action": "decline"}},
                        },
                    }
                },
            },
            "responses": {
                "200": json_response("The answer, recorded on disk", AnswerResponse),
                "403": FORBIDDEN,
                "404": UNKNOWN,
                "409": error_responses(
                    "The request is no longer open: answered already (by whom), its step ended, or its run ended",
                    answered_already=f"Request {REQUEST_ID} was answered already (accept by alice)",
                    run_ended=f"Request {REQUEST_ID} is closed: run {RUN_ID} has ended (cancelled)",
                    step_ended=f"Request {REQUEST_ID} is closed: its step has ended",
                ),
                "413": error_response(
                    "The body is larger than the limit (`STEPLINE_MAX_BODY_BYTES`, 1 MiB by default)",
                    "Request body too large: the limit is 1,048,576 bytes, and this one has 2,097,152 bytes.",
                ),
                "415": error_response(
                    "The body is not sent as JSON (`Content-Type: application/json`, UTF-8)",
                    "Send the body as JSON, with Content-Type: application/json (Content-Type text/plain was given)",
                ),
                "422": CONTENT_INVALID,
                "503": HISTORY_FAILING,
            },
        }
    },
    "/api/runs/{run_id}/requests/{request_id}/draft": {
        "post": {
            "summary": "Have a model draft a sampling reply",
            "description": "Sends an open `sampling` request (its messages, system prompt, max tokens, temperature "
            "and stop sequences) to the configured OpenAI-compatible endpoint (`--sampling-url`, "
            "`--sampling-model`, its key from the variable `--sampling-key-env` names) and records its reply as the "
            "request's `draft` (an `input_drafted` event). The draft is not an answer: review it, then send it (or "
            "your edit) with `POST /api/runs/{run_id}/requests/{request_id}`. Needs what answering needs. No body.",
            "parameters": [PARAMETERS[0], {**PARAMETERS[1], "example": SAMPLING_REQUEST_ID}],
            "responses": {
                "200": json_response("The model's draft, recorded on disk", DraftResponse),
                "403": FORBIDDEN,
                "404": UNKNOWN,
                "409": error_responses(
                    "No model endpoint is configured, the request is not a sampling request, or it is no longer open",
                    no_endpoint="No model endpoint is configured: start Stepline with --sampling-url "
                    "(STEPLINE_SAMPLING_URL) to have a model draft the reply, or write it yourself",
                    not_sampling=f"Request {REQUEST_ID} asks for approval, not a model's reply: only a sampling "
                    "request can be drafted",
                    answered_already=f"Request {SAMPLING_REQUEST_ID} was answered already (decline by alice)",
                ),
                "502": error_response(
                    "The model endpoint gave no reply: why, in its words (its key never shown)",
                    "The model endpoint https://llm.example.com/v1 answered HTTP 401: Incorrect API key provided: "
                    "Bearer [key removed]",
                ),
                "503": HISTORY_FAILING,
            },
        }
    },
}
MODELS: list[type[BaseModel]] = [AnswerBody, AnswerResponse, DraftResponse, ResumeResponse]
