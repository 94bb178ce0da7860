"""The JSON API's request and response models: the seed's contract, with realistic examples."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, field_validator, model_serializer

from web.access import IdentitySource
from web.auth import MAX_NAME_CHARS
from web.events import AnswerAction, RequestKind, RunStatus, StepStatus
from web.run_list import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, RunPage
from web.run_state import RunState, StepState
from web.store import RunRow

RUN_ID = "76d6903c-f520-4a40-b0fc-8fed3f7955d2"
SCENARIO_ID = "news_source_discovery_v1"
ARTICLE_URL = "https://daily.example.com/2026/03/harbor-bridge-closure"
# A 1×1 PNG, as an image block carries it (base64).
PIXEL_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


def examples_of(model: type[BaseModel]) -> list[Any]:
    return model.model_config["json_schema_extra"]["examples"]  # type: ignore[index,return-value]


def first_example(model: type[BaseModel]) -> Any:
    return examples_of(model)[0]


def text_content(value: Any) -> list[dict[str, Any]]:
    """The content of a result whose one text block is `value` as an MCP SDK server writes it."""
    return [{"type": "text", "text": value if isinstance(value, str) else json.dumps(value, indent=2)}]


def attributes(source: object, model: type[BaseModel]) -> dict[str, Any]:
    """The attributes of `source` that `model` has fields for: a state read into a response model."""
    return {name: getattr(source, name) for name in model.model_fields if hasattr(source, name)}


class Actor(BaseModel):
    """Who acted on a run, as the run recorded it: a name and where it came from, never a credential."""

    model_config = _examples({"name": "alice", "source": "proxy"}, {"name": "ci-bot", "source": "token"})

    name: str = Field(
        description="The user the portal's proxy named, the API token's name, `anonymous`, or the local account "
        "that started `stepline mcp`."
    )
    source: IdentitySource | None = Field(
        description="`proxy` (the portal signed them in), `token` (an API token), `anonymous`, or `local` (an MCP "
        "client of `stepline mcp` over stdio); null when the history kept only the name (a run cancelled "
        "before it started, read back after a restart)."
    )
    client: str | None = Field(
        None,
        description="For a run started as an MCP tool call: the MCP client that called, as it names itself "
        "(name and version). Absent otherwise.",
    )

    @model_serializer(mode="wrap")
    def _client_only_when_known(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if data.get("client") is None:
            data.pop("client", None)
        return data


STARTED_BY = "Who started the run; null for runs recorded before access control."
CANCELLED_BY = "Who cancelled the run; null unless someone named cancelled it."


class ScenarioRunRequest(BaseModel):
    model_config = _examples({"scenario_id": SCENARIO_ID, "input": {"url": ARTICLE_URL}})

    scenario_id: str = Field(description="Which scenario to run (see GET /api/scenarios).")
    input: dict[str, Any] = Field(default_factory=dict, description="Must match the scenario's input_schema.")


class RunSubmitResponse(BaseModel):
    model_config = _examples(
        {
            "run_id": RUN_ID,
            "scenario_id": SCENARIO_ID,
            "status": "queued",
            "input": {"url": ARTICLE_URL},
            "started_at": "2026-04-24T09:27:59.873+00:00",
        }
    )

    run_id: str
    scenario_id: str
    status: RunStatus = Field(description="`queued`, or `failed` when the run could not be recorded.")
    input: dict[str, Any]
    started_at: str = Field(description="When the run was accepted (ISO 8601, UTC).")

    @classmethod
    def of(cls, state: RunState) -> RunSubmitResponse:
        return cls.model_validate({**attributes(state, cls), "started_at": state.created_at})


class PlanStep(BaseModel):
    """One step of the plan a run follows, as its `run_started` event recorded it."""

    model_config = _examples(
        {
            "name": "trace",
            "tool": "trace_citation_chain",
            "server": None,
            "depends_on": ["article", "earliest"],
            "for_each": False,
            "when": "{{ steps.earliest.output.earliest[0].url != steps.article.output.url }}",
            "on_error": "fail",
            "max_attempts": 1,
            "description": "How the article leads back to the first report, when it is not the first report itself.",
        }
    )

    name: str
    # Absent for a tool step, as runs recorded it before there were other types.
    type: Literal["tool", "approval"] = Field(
        "tool", exclude_if=lambda kind: kind == "tool", description="`approval`: it calls no tool, it waits for a "
        "person; absent for a tool step."
    )
    tool: str | None = Field(description="The tool it calls; null for an approval step.")
    server: str | None = Field(description="The MCP server named in the scenario; null: the one offering the tool.")
    depends_on: list[str] = Field(description="The steps it waits for: those its expressions read, and `needs`.")
    for_each: bool = Field(description="Whether the tool is called once per item of a list.")
    when: str | None = Field(description="Its condition, as written; null: it always runs.")
    on_error: Literal["fail", "continue"] = Field(description="`continue`: its failure does not fail the run.")
    max_attempts: int = Field(ge=1, description="Attempts allowed by its `retry` (1: no retry).")
    description: str = ""
    # Absent unless the scenario sets it, as runs recorded it before there were resume policies.
    resume: Literal["auto", "ask", "never"] | None = Field(
        None, exclude_if=lambda policy: policy is None, description="What the step does when Stepline restarts "
        "while it runs, as the scenario says: `auto` (run again), `ask` (wait for a Resume) or `never` (the run "
        "fails); absent: auto when its tool is annotated idempotent or read-only, else ask."
    )


REQUEST_ID = "9b1f0c7e4d2a4e61a8c3f5b7d9e0a1c2"
SAMPLING_REQUEST_ID = "e4c8a2f06b1d4f3a9e7c5b2d0a8f6e14"
ALICE = {"name": "alice", "source": "proxy"}


class StepAnswer(BaseModel):
    """One answer a step has had: who answered which request, how and when."""

    model_config = _examples(
        {"request_id": REQUEST_ID, "kind": "approval", "action": "accept", "answered_by": ALICE,
         "answered_at": "2026-04-24T09:31:12.408+00:00"},
        {"request_id": SAMPLING_REQUEST_ID, "kind": "sampling", "action": "expired", "answered_by": None,
         "answered_at": "2026-04-25T09:28:03.120+00:00"},
    )

    request_id: str
    kind: RequestKind | None = Field(description="What was asked; null when the history lost the request.")
    action: AnswerAction = Field(
        description="`accept`, `decline` or `cancel` as the person chose; `expired` when nobody answered within "
        "the step's `wait_timeout_seconds`."
    )
    answered_by: Actor | None = Field(description="Who answered; null for `expired` (and for nobody named).")
    answered_at: str | None = Field(description="When (ISO 8601, UTC).")


class SamplingDraft(BaseModel):
    """A model's reply to a sampling request, shown to its reviewer: not an answer until a person sends it."""

    model_config = _examples(
        {"text": "The article traces back to a community newsletter published two days earlier.",
         "model": "gpt-4o-mini-2024-07-18", "stop_reason": "endTurn"}
    )

    text: str
    model: str = Field(description="The model that wrote it, as the endpoint named it.")
    stop_reason: str | None = Field(description="`endTurn`, `maxTokens`, or what the endpoint said; null if none.")


class _PendingRequest(BaseModel):
    request_id: str = Field(description="Answer it with POST /api/runs/{run_id}/requests/{request_id}.")
    step_name: str = Field(description="The step that asks.")
    item_index: int | None = Field(None, description="for_each: the item whose call asks; null for a plain step.")
    kind: RequestKind
    message: str = Field(description="What the person is asked, as the server or the scenario wrote it (plain text).")
    created_at: str
    expires_at: str = Field(description="When it ends unanswered (`expired`) and its step fails: wait_timeout_seconds.")
    durable: bool = Field(
        description="Whether it outlives a restart of Stepline (an approval step, a server's input-required result): "
        "still waiting afterwards, and answering it then completes the step."
    )


FORM_SCHEMA = {
    "type": "object",
    "properties": {
        "copies": {"type": "integer", "title": "Copies to print", "minimum": 1, "default": 1},
        "edition": {"type": "string", "enum": ["morning", "evening"]},
    },
    "required": ["copies"],
}


class FormRequest(_PendingRequest):
    """A form: values for `requested_schema` (an MCP server's elicitation, or a scenario's approval step)."""

    model_config = _examples(
        {"request_id": REQUEST_ID, "step_name": "approve", "item_index": None, "kind": "approval",
         "message": "Print 'Harbor bridge to close for repairs' in the morning edition?",
         "created_at": "2026-04-24T09:28:01.415+00:00", "expires_at": "2026-04-25T09:28:01.415+00:00",
         "durable": True, "requested_schema": FORM_SCHEMA, "secret_fields": []},
        {"request_id": "5d0c2e8a7f3b4a19b6e1d4c7a2f8e903", "step_name": "publish", "item_index": None,
         "kind": "elicitation", "message": "Sign in to the CMS to publish the brief",
         "created_at": "2026-04-24T09:28:02.003+00:00", "expires_at": "2026-04-25T09:28:02.003+00:00",
         "durable": False,
         "requested_schema": {"type": "object", "properties": {"username": {"type": "string"},
                                                               "password": {"type": "string"}}},
         "secret_fields": ["password"]},
    )

    kind: Literal[RequestKind.ELICITATION, RequestKind.APPROVAL]
    requested_schema: dict[str, Any] = Field(
        description="A JSON Schema of an object: the form. An accepted answer's `content` must match it."
    )
    secret_fields: list[str] = Field(
        [], description="Fields that look like they ask for a secret (password, token, API key), which the MCP "
        "specification forbids a form to ask for: the page warns. Think twice before answering them."
    )


class UrlRequest(_PendingRequest):
    """A page to visit (a sign-in, a payment) that an MCP server asked for; accept once done. Nothing opens it."""

    model_config = _examples(
        {"request_id": "0f6a3d9c2b7e4c58a1d0e9f8b7c6a5d4", "step_name": "connect", "item_index": None, "kind": "url",
         "message": "Authorize read access to your Daily Example account",
         "created_at": "2026-04-24T09:28:02.100+00:00", "expires_at": "2026-04-25T09:28:02.100+00:00",
         "durable": False, "url": "https://auth.daily.example.com/authorize?request=7f3c", "elicitation_id": "7f3c"}
    )

    kind: Literal[RequestKind.URL]
    url: str = Field(description="The full URL, as the server sent it.")
    elicitation_id: str | None = Field(None, description="The server's id for the request.")


SAMPLING_MESSAGES = [
    {"role": "user", "content": {"type": "text", "text": "Summarise in one sentence where this story started."}}
]


class SamplingRequest(_PendingRequest):
    """A model completion an MCP server asked for: a person writes the reply, or reviews a model's draft."""

    model_config = _examples(
        {"request_id": SAMPLING_REQUEST_ID, "step_name": "summarise", "item_index": None, "kind": "sampling",
         "message": "The server asks for a model's reply", "created_at": "2026-04-24T09:28:03.120+00:00",
         "expires_at": "2026-04-25T09:28:03.120+00:00", "durable": False, "messages": SAMPLING_MESSAGES,
         "system_prompt": "You are a careful fact-checker.", "model_preferences": {"hints": [{"name": "gpt-4o"}]},
         "max_tokens": 200, "temperature": None, "stop_sequences": None, "include_context": "none",
         "draft": first_example(SamplingDraft)}
    )

    kind: Literal[RequestKind.SAMPLING]
    messages: list[dict[str, Any]] = Field(
        description="The conversation, as the MCP request has it: each `{role, content}`, content a block or a list "
        "of blocks (text, image, audio)."
    )
    system_prompt: str | None = None
    model_preferences: dict[str, Any] | None = Field(None, description="`hints` (model names) and priorities.")
    max_tokens: int | None = None
    temperature: float | None = None
    stop_sequences: list[str] | None = None
    include_context: str | None = None
    draft: SamplingDraft | None = Field(
        None, description="A model's reply, once POST …/draft asked for one: review it, then answer."
    )


RESUME_REQUEST_ID = "a7d2c9e04f1b4d6e8c3a5b0f9e2d7c61"
RESUME_QUESTION = (
    "Stepline stopped while step 'publish' was running: it may have partly run (its tool may have done some of its "
    "work). Resume runs it again from the start; the steps that had ended keep their results."
)


class ResumeRequest(_PendingRequest):
    """Stepline restarted while steps whose tools are not known to be safe to call twice were running: a person
    says whether they run again from the start (accept: Resume) or the run ends (decline: End the run)."""

    model_config = _examples(
        {"request_id": RESUME_REQUEST_ID, "step_name": "publish", "item_index": None, "kind": "resume",
         "message": RESUME_QUESTION, "created_at": "2026-04-24T10:02:44.910+00:00",
         "expires_at": "2026-04-25T10:02:44.910+00:00", "durable": True, "steps": ["publish"]}
    )

    kind: Literal[RequestKind.RESUME]
    steps: list[str] = Field(
        description="The steps that were running when Stepline stopped: a Resume runs them again from the start "
        "(a for_each step: only its items that had not ended). Accept it with POST /api/runs/{run_id}/resume."
    )


PendingRequest = Annotated[FormRequest | UrlRequest | SamplingRequest | ResumeRequest, Field(discriminator="kind")]


class StepStateModel(BaseModel):
    model_config = _examples(
        {
            "node_id": "search_news_sources",
            "index": 1,
            "status": "success",
            "started_at": "2026-04-24T09:27:59.875+00:00",
            "finished_at": "2026-04-24T09:28:01.412+00:00",
            "message": "",
            "input": {"url": ARTICLE_URL},
            "output": {"sources": [{"url": ARTICLE_URL, "outlet": "Daily Example"}]},
            "content": text_content({"sources": [{"url": ARTICLE_URL, "outlet": "Daily Example"}]}),
            "progress": 4,
            "total": 4,
            "depends_on": ["fetch_article"],
            "attempt": 1,
            "max_attempts": 1,
            "item_count": None,
            "items_done": None,
            "items_failed": None,
        },
        {
            "node_id": "related",
            "index": 2,
            "status": "running",
            "started_at": "2026-04-24T09:28:00.102+00:00",
            "finished_at": None,
            "message": "",
            "input": None,
            "output": None,
            "content": None,
            "progress": 3,
            "total": 5,
            "depends_on": ["articles"],
            "attempt": 1,
            "max_attempts": 3,
            "item_count": 5,
            "items_done": 3,
            "items_failed": 1,
        },
        {
            "node_id": "front_page",
            "index": 3,
            "status": "success",
            "started_at": "2026-04-24T09:28:01.415+00:00",
            "finished_at": "2026-04-24T09:28:01.902+00:00",
            "message": "",
            "input": {"url": ARTICLE_URL},
            # No text and no structured content: the output is the list of content blocks.
            "output": [
                {"type": "image", "data": PIXEL_PNG, "mimeType": "image/png",
                 "annotations": {"audience": ["user"], "priority": 0.5}},
                {"type": "resource_link", "uri": ARTICLE_URL, "name": "harbor-bridge-closure.html",
                 "title": "Harbor bridge to close for repairs", "mimeType": "text/html"},
            ],
            "content": [
                {"type": "image", "data": PIXEL_PNG, "mimeType": "image/png",
                 "annotations": {"audience": ["user"], "priority": 0.5}},
                {"type": "resource_link", "uri": ARTICLE_URL, "name": "harbor-bridge-closure.html",
                 "title": "Harbor bridge to close for repairs", "mimeType": "text/html"},
            ],
            "progress": None,
            "total": None,
            "depends_on": ["fetch_article"],
            "attempt": 1,
            "max_attempts": 1,
            "item_count": None,
            "items_done": None,
            "items_failed": None,
        },
        {
            "node_id": "approve",
            "index": 2,
            "status": "waiting",
            "started_at": "2026-04-24T09:28:01.412+00:00",
            "finished_at": None,
            "message": "",
            "input": None,
            "output": None,
            "content": None,
            "progress": None,
            "total": None,
            "depends_on": ["search_news_sources"],
            "attempt": 1,
            "max_attempts": 1,
            "item_count": None,
            "items_done": None,
            "items_failed": None,
            "waiting_on": [REQUEST_ID],
            "answers": [],
        },
        {
            "node_id": "approve",
            "index": 2,
            "status": "success",
            "started_at": "2026-04-24T09:28:01.412+00:00",
            "finished_at": "2026-04-24T09:31:12.409+00:00",
            "message": "Approved by alice",
            "input": None,
            "output": {"action": "accept", "values": {"copies": 2, "edition": "morning"}, "answered_by": ALICE},
            "content": None,
            "progress": None,
            "total": None,
            "depends_on": ["search_news_sources"],
            "attempt": 1,
            "max_attempts": 1,
            "item_count": None,
            "items_done": None,
            "items_failed": None,
            "waiting_on": [],
            "answers": [first_example(StepAnswer)],
        },
    )

    node_id: str = Field(description="The step's name.")
    index: int = Field(description="Its position in the scenario's steps.")
    status: StepStatus = Field(
        description="`skipped` when its condition was false or the run ended before it; `waiting` while it waits "
        "for a person to answer a request."
    )
    started_at: str | None
    finished_at: str | None
    message: str = Field(description="Why it failed, was skipped or was cancelled; empty when it succeeded.")
    input: dict[str, Any] | None = Field(None, description="Its latest attempt's arguments; null for a for_each step.")
    output: Any = Field(
        None,
        description="The tool result's structured content, else its text parsed as JSON, else its text, else (a "
        "result with neither) its list of content blocks. for_each: the item outputs in item order (null for a "
        "failed item). Larger than `STEPLINE_MAX_OUTPUT_BYTES` as JSON: `{\"truncated\": true, \"bytes\", "
        "\"preview\"}`. Also at `GET /api/runs/{run_id}/steps/{step_name}/output`.",
    )
    content: list[dict[str, Any]] | dict[str, Any] | None = Field(
        None,
        description="The tool result's MCP content blocks, each as the MCP SDK writes it: `text` (`text`), `image` "
        "and `audio` (`data` in base64, `mimeType`), `resource_link` (`uri`, `name`, `title`, `description`, "
        "`mimeType`, `size`), `resource` (`resource`: `uri`, `mimeType`, `text` or `blob` in base64); any with "
        "`annotations` (`audience`, `priority`, `lastModified`) and `_meta`. Null for a step that called no tool "
        "and for a for_each step (each item's call is its own). Larger than `STEPLINE_MAX_OUTPUT_BYTES` as JSON: "
        "the truncated marker.",
    )
    progress: float | None = Field(None, description="From the tool's progress notifications; for_each: items ended.")
    total: float | None = Field(None, description="As the tool reported it; for_each: the number of items.")
    depends_on: list[str] | None = Field(None, description="From the run's plan; null for a run recorded without one.")
    attempt: int = Field(1, description="The attempt under way, or the one a retry waits to start (1 is the first).")
    max_attempts: int | None = Field(None, description="Attempts its `retry` allows; null when the run has no plan.")
    item_count: int | None = Field(None, description="for_each: how many items; null for a plain step.")
    items_done: int | None = Field(None, description="for_each: items ended, failed ones included (see the events).")
    items_failed: int | None = Field(None, description="for_each: items that failed.")
    waiting_on: list[str] = Field(
        [], description="The requests it waits on a person for (their ids; see the run's `pending_requests`)."
    )
    answers: list[StepAnswer] = Field([], description="The answers it has had, in order.")

    @classmethod
    def of(cls, step: StepState, planned: dict[str, Any] | None) -> StepStateModel:
        """A step as its events tell it, with what the run's plan says of it."""
        fields = attributes(step, cls)
        if step.item_count is None:  # a plain step has no items to count
            fields["items_done"] = fields["items_failed"] = None
        if planned is not None:
            fields["depends_on"] = planned["depends_on"]
            fields["max_attempts"] = step.max_attempts or planned["max_attempts"]
        return cls.model_validate(fields)


def _planned(name: str, tool: str | None, depends_on: list[str], server: str | None = None) -> dict[str, Any]:
    return {"name": name, "tool": tool, "server": server, "depends_on": depends_on, "for_each": False,
            "when": None, "on_error": "fail", "max_attempts": 1, "description": ""}


def _step_example(name: str, index: int, depends_on: list[str]) -> dict[str, Any]:
    return {"node_id": name, "index": index, "status": "running", "started_at": None, "finished_at": None,
            "message": "", "input": None, "output": None, "content": None, "progress": None, "total": None,
            "depends_on": depends_on,
            "attempt": 1, "max_attempts": 1, "item_count": None, "items_done": None, "items_failed": None,
            "waiting_on": [], "answers": []}


# news_source_discovery_v1 as its runs record it (a version 1 chain: each step waits for the one before),
# and a run of it in its second step.
NEWS_PLAN = [
    _planned("fetch_article", "fetch_article", []),
    _planned("search_news_sources", "search_news_sources", ["fetch_article"]),
    _planned("pick_earliest", "find_earliest_source", ["search_news_sources"], server="demo"),
    _planned("trace_citations", "trace_citation_chain", ["pick_earliest"]),
]
NEWS_STEPS = [
    {
        **_step_example("fetch_article", 0, []),
        "status": "success",
        "started_at": "2026-04-24T09:27:59.875+00:00",
        "finished_at": "2026-04-24T09:28:00.611+00:00",
        "input": {"url": ARTICLE_URL},
        "output": {"url": ARTICLE_URL, "title": "Harbor bridge to close for repairs", "outlet": "Harbor Daily"},
        "content": text_content(
            {"url": ARTICLE_URL, "title": "Harbor bridge to close for repairs", "outlet": "Harbor Daily"}
        ),
        "progress": 4,
        "total": 4,
    },
    {
        **_step_example("search_news_sources", 1, ["fetch_article"]),
        "status": "running",
        "started_at": "2026-04-24T09:28:00.613+00:00",
        "input": {"url": ARTICLE_URL},
        "progress": 2,
        "total": 4,
    },
]


WAITING_RUN_ID = "a7e3c1d5-9f24-4b8e-8c60-3d1f5e7b9a02"
# The approval step of print_brief_v2 while it waits for a person.
WAITING_STEP = {**examples_of(StepStateModel)[3], "depends_on": ["search_news_sources"]}


class ScenarioRunResponse(BaseModel):
    model_config = _examples(
        {
            "run_id": RUN_ID,
            "scenario_id": SCENARIO_ID,
            "status": "running",
            "message": "",
            "input": {"url": ARTICLE_URL},
            "started_at": "2026-04-24T09:27:59.873+00:00",
            "finished_at": None,
            "steps": NEWS_STEPS,
            "output": None,
            "plan": NEWS_PLAN,
            "started_by": {"name": "alice", "source": "proxy"},
            "cancelled_by": None,
        },
        {
            "run_id": "3f9a1c2e-7b4d-4e0a-9c61-5d2e8f7a9b30",
            "scenario_id": "story_origin_check_v2",
            "status": "success",
            "message": "Finished with 1 tolerated failure(s): archive",
            "input": {"url": ARTICLE_URL},
            "started_at": "2026-04-24T09:30:02.114+00:00",
            "finished_at": "2026-04-24T09:30:03.870+00:00",
            "steps": [
                {
                    "node_id": "archive",
                    "index": 2,
                    "status": "failed",
                    "started_at": "2026-04-24T09:30:02.410+00:00",
                    "finished_at": "2026-04-24T09:30:02.702+00:00",
                    "message": f"Error executing tool check_archive: No archived copy of {ARTICLE_URL}: the archive "
                    "never captured it",
                    "input": {"url": ARTICLE_URL},
                    "output": None,
                    "content": text_content(
                        f"Error executing tool check_archive: No archived copy of {ARTICLE_URL}: the archive never "
                        "captured it"
                    ),
                    "progress": None,
                    "total": None,
                    "depends_on": ["article"],
                    "attempt": 1,
                    "max_attempts": 1,
                    "item_count": None,
                    "items_done": None,
                    "items_failed": None,
                },
                {
                    "node_id": "trace",
                    "index": 4,
                    "status": "skipped",
                    "started_at": None,
                    "finished_at": "2026-04-24T09:30:03.511+00:00",
                    "message": "Condition is false: {{ steps.earliest.output.earliest[0].url != "
                    "steps.article.output.url }}",
                    "input": None,
                    "output": None,
                    "content": None,
                    "progress": None,
                    "total": None,
                    "depends_on": ["article", "earliest"],
                    "attempt": 1,
                    "max_attempts": 1,
                    "item_count": None,
                    "items_done": None,
                    "items_failed": None,
                },
            ],
            "output": {
                "title": "Harbor bridge to close for repairs",
                "first_report": ARTICLE_URL,
                "is_first_report": True,
                "citation_hops": 0,
                "archived_copy": None,
            },
            "plan": [
                {
                    "name": "archive",
                    "tool": "check_archive",
                    "server": None,
                    "depends_on": ["article"],
                    "for_each": False,
                    "when": None,
                    "on_error": "continue",
                    "max_attempts": 1,
                    "description": "A copy in the web archive, if it kept one; the run goes on without it.",
                },
                first_example(PlanStep),
            ],
            "started_by": {"name": "ci-bot", "source": "token"},
            "cancelled_by": None,
            "pending_requests": [],
        },
        {
            "run_id": WAITING_RUN_ID,
            "scenario_id": "print_brief_v2",
            "status": "waiting",
            "message": "",
            "input": {"url": ARTICLE_URL},
            "started_at": "2026-04-24T09:27:59.873+00:00",
            "finished_at": None,
            "steps": [{**NEWS_STEPS[0], "answers": []}, {**NEWS_STEPS[1], "status": "success",
                       "finished_at": "2026-04-24T09:28:01.410+00:00", "progress": 4}, WAITING_STEP],
            "output": None,
            "plan": [*NEWS_PLAN[:2], {**_planned("approve", None, ["search_news_sources"]), "type": "approval"}],
            "started_by": {"name": "alice", "source": "proxy"},
            "cancelled_by": None,
            "pending_requests": [first_example(FormRequest)],
        },
    )

    run_id: str
    scenario_id: str
    status: RunStatus = Field(
        description="`queued`, `running`, `waiting` (a step waits for a person: see `pending_requests`), then "
        "`success`, `failed` or `cancelled`."
    )
    message: str
    input: dict[str, Any]
    started_at: str | None
    finished_at: str | None
    steps: list[StepStateModel] = Field(
        description="The steps that have started or ended (skipped ones included), in plan order; `plan` lists them "
        "all. A for_each step's items are in its `step_item_finished` events."
    )
    output: Any = Field(
        None, description="The scenario's `output`, evaluated when the run succeeded; null otherwise or without one."
    )
    plan: list[PlanStep] | None = Field(
        None, description="The steps this run follows, as recorded when it started, whatever the file says since."
    )
    started_by: Actor | None = Field(None, description=STARTED_BY)
    cancelled_by: Actor | None = Field(None, description=CANCELLED_BY)
    pending_requests: list[PendingRequest] = Field(
        [],
        description="The requests waiting for a person, in the order asked: a form (`elicitation`, `approval`), a "
        "page to visit (`url`), a model's reply (`sampling`) or, after a restart, whether steps that may have "
        "partly run run again (`resume`: `POST /api/runs/{run_id}/resume`). Answer each with "
        "`POST /api/runs/{run_id}/requests/{request_id}`. Empty unless the run is `waiting`.",
    )

    @classmethod
    def of(cls, state: RunState) -> ScenarioRunResponse:
        planned = {step["name"]: step for step in state.plan or []}
        steps = [
            StepStateModel.of(step, planned.get(step.node_id))
            for step in sorted(state.steps.values(), key=lambda step: step.index)
        ]
        return cls.model_validate(
            {
                **attributes(state, cls),
                "started_at": state.started_at or state.created_at,
                "steps": steps,
                "pending_requests": list(state.pending.values()),
            }
        )


class ScenarioSummary(BaseModel):
    model_config = _examples(
        {
            "id": SCENARIO_ID,
            "name": "News Source Discovery V1",
            "description": "Find the earliest source of a news story using sequential MCP tools.",
            "input_schema": {
                "type": "object",
                "required": ["url"],
                "properties": {"url": {"type": "string", "description": "URL of the news article"}},
                "examples": [{"url": ARTICLE_URL}],
            },
            "step_count": 4,
        }
    )

    id: str
    name: str
    description: str
    input_schema: dict[str, Any]
    step_count: int


class ToolSummary(BaseModel):
    model_config = _examples(
        {
            "name": "find_earliest_source",
            "description": "Sort sources by publication time and return the earliest.",
            "input_schema": {
                "type": "object",
                "required": ["sources"],
                "properties": {"sources": {"type": "array"}, "limit": {"type": "integer", "default": 1}},
            },
            "server": "demo",
        }
    )

    name: str
    description: str
    input_schema: dict[str, Any]
    server: str = Field(description="The configured MCP server that offers the tool.")


class ServerHealth(BaseModel):
    model_config = _examples(
        {"state": "ready", "transport": "stdio", "tools": 7, "error": None},
        {"state": "down", "transport": "streamable-http", "tools": 0,
         "error": "[Errno 111] Connect call failed ('127.0.0.1', 9000)"},
    )

    state: Literal["connecting", "ready", "down"]
    transport: Literal["stdio", "streamable-http", "sse"]
    tools: int = Field(description="The tools the server offers now: 0 unless its state is ready.")
    error: str | None


class HistoryHealth(BaseModel):
    model_config = _examples(
        {"state": "ok", "path": ".stepline/stepline.db", "error": None},
        {
            "state": "failing",
            "path": ".stepline/stepline.db",
            "error": "database or disk is full [SQLITE_FULL] (is the disk full or the directory read-only?)",
        },
    )

    state: Literal["ok", "failing"] = Field(description="`failing`: writes are held in memory and retried.")
    path: str = Field(description="The SQLite file, under the data directory as configured (never resolved).")
    error: str | None = Field(description="Why the last write failed, while it fails.")


class ReplicaHealth(BaseModel):
    model_config = _examples(
        {
            "id": "web-1:8000",
            "leases": 2,
            "runs": ["0b7c2a8e-3c4f-4c1e-9f51-2d1b7f0c9a10", "5e0f3b1c-8d2a-4f6b-a0c3-7e9d1b2c4f58"],
            "max_concurrent_runs": 100,
            "lease_seconds": 10.0,
            "listening": True,
            "database": "ok",
            "error": None,
        }
    )

    id: str = Field(description="This replica's id (--replica-id).")
    leases: int = Field(description="Live runs this replica holds a lease on, and runs.")
    runs: list[str] = Field(description="Their ids (the first 100).")
    max_concurrent_runs: int
    lease_seconds: float
    listening: bool = Field(description="Whether it hears the other replicas (LISTEN) at the moment.")
    database: Literal["ok", "failing"] = Field(
        description="Whether its last lease renewal or claim reached the database."
    )
    error: str | None


class Health(BaseModel):
    model_config = _examples(
        {
            "status": "ok",
            "servers": {"demo": {"state": "ready", "transport": "stdio", "tools": 6, "error": None}},
            "history": {"state": "ok", "path": ".stepline/stepline.db", "error": None},
        }
    )

    status: Literal["ok", "degraded"]
    servers: dict[str, ServerHealth]
    history: HistoryHealth | None = Field(None, description="Run history on disk; null when it is turned off.")
    replica: ReplicaHealth | None = Field(
        None, description="With --database: this replica among the others (absent without one)."
    )


class ErrorDetail(BaseModel):
    model_config = _examples({"detail": f"Unknown run_id: {RUN_ID}"})

    detail: str


class ValidationIssue(BaseModel):
    model_config = _examples(
        {"loc": ["body", "input", "url"], "msg": "'url' is a required property", "type": "jsonschema.required"},
        {"loc": ["query", "limit"], "msg": "Input should be less than or equal to 200", "type": "less_than_equal"},
    )

    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorResponse(BaseModel):
    model_config = _examples(
        {
            "detail": [
                {"loc": ["body", "input", "url"], "msg": "'url' is a required property", "type": "jsonschema.required"}
            ]
        }
    )

    detail: list[ValidationIssue]


NEXT_CURSOR = "WyIyMDI2LTA0LTI0VDA5OjI1OjEyLjA0MSswMDowMCIsIjBiOGYzZTUyLTVhMWQtNGM4ZS05ZjYxLTJkN2M0YTllOGIxMCJd"
class RunListQuery(BaseModel):
    """GET /api/runs's query. An empty `scenario_id`, `limit` or `cursor` means "not given"; an empty
    `status` is refused, so a client whose filter came out blank is not handed every run instead."""

    scenario_id: str | None = None
    status: RunStatus | None = None
    started_by: str | None = Field(
        None, max_length=MAX_NAME_CHARS, description="Only runs started by this name (a user, a token's name)."
    )
    limit: int = Field(DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    cursor: str | None = None

    @field_validator("scenario_id", "started_by", "limit", "cursor", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any, info: Any) -> Any:
        if value == "":
            return cls.model_fields[info.field_name].default
        return value


class RunSummary(BaseModel):
    model_config = _examples(
        {
            "run_id": RUN_ID,
            "scenario_id": SCENARIO_ID,
            "status": "success",
            "message": "",
            "input": {"url": ARTICLE_URL},
            "created_at": "2026-04-24T09:27:59.873+00:00",
            "started_at": "2026-04-24T09:27:59.874+00:00",
            "finished_at": "2026-04-24T09:28:05.750+00:00",
            "started_by": "alice",
        }
    )

    run_id: str
    scenario_id: str
    status: RunStatus
    message: str
    input: dict[str, Any]
    created_at: str = Field(description="When the run was accepted (ISO 8601, UTC); the list's order.")
    started_at: str | None = Field(description="When its first step began; null while queued.")
    finished_at: str | None
    started_by: str | None = Field(
        None, description="The name of who started it (its snapshot also says from where); null for runs "
        "recorded before access control."
    )

    @classmethod
    def of(cls, row: RunRow) -> RunSummary:
        return cls.model_validate(dataclasses.asdict(row))


class RunList(BaseModel):
    model_config = _examples(
        {
            "runs": [
                RunSummary.model_config["json_schema_extra"]["examples"][0],  # type: ignore[index]
                {
                    "run_id": "0b8f3e52-5a1d-4c8e-9f61-2d7c4a9e8b10",
                    "scenario_id": "outlet_profile_v1",
                    "status": "failed",
                    "message": "Step 'lookup_outlet' failed: Unknown outlet: nowhere.example.com",
                    "input": {"domain": "nowhere.example.com"},
                    "created_at": "2026-04-24T09:25:12.041+00:00",
                    "started_at": "2026-04-24T09:25:12.043+00:00",
                    "finished_at": "2026-04-24T09:25:13.590+00:00",
                    "started_by": "ci-bot",
                },
            ],
            "next_cursor": NEXT_CURSOR,
        }
    )

    runs: list[RunSummary] = Field(description="Newest first.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page. Opaque: use it as given."
    )

    @classmethod
    def of(cls, page: RunPage) -> RunList:
        return cls(runs=[RunSummary.of(row) for row in page.runs], next_cursor=page.next_cursor)
