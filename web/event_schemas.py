"""The events of GET /api/runs/{id}/events as OpenAPI schemas, one per web.events.EventType, with examples.

They describe what web.events builds; tests check that every type has one and that a real run's events
validate against them. A field that events recorded before it existed lack is optional here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from web.events import AnswerAction, EventType, RequestKind, RunStatus, StepStatus
from web.schemas import (
    ALICE,
    CANCELLED_BY,
    FORM_SCHEMA,
    PIXEL_PNG,
    REQUEST_ID,
    RESUME_QUESTION,
    RESUME_REQUEST_ID,
    SAMPLING_MESSAGES,
    SAMPLING_REQUEST_ID,
    STARTED_BY,
    WAITING_RUN_ID,
    Actor,
    PlanStep,
    SamplingDraft,
    first_example,
)

# A run of story_origin_check_v2 on the demo server, another whose article is the first report, and a run of
# outlet_story_origins_v2 (for_each).
RUN_ID = "3f9a1c2e-7b4d-4e0a-9c61-5d2e8f7a9b30"
FIRST_REPORT_RUN_ID = "61d3fdfd-4634-4b2b-8d9d-0da08232045c"
OUTLET_RUN_ID = "c41d7e09-2a6b-4f3c-8d15-9e0b7a6c5f21"
IMAGE_RUN_ID = "5b0e7d2a-91c4-4f68-a3e2-7c1d9f0b4e56"
ARTICLE_URL = "https://signal.example/culture/lighthouse-library-explainer"
FIRST_REPORT_URL = "https://notes.example.net/2024/03/05/lighthouse-cottage-reading-room"
LIGHTHOUSE_URL = "https://daily.example.com/news/2024-03-05/old-lighthouse-solar-library"
ARTICLE = {
    "url": ARTICLE_URL,
    "outlet": "Metro Signal",
    "domain": "signal.example",
    "title": "Why a tiny town's lighthouse library went viral",
    "published_at": "2024-03-07T10:00:00+00:00",
    "cites": ["https://ledger.example.org/2024/03/06/lighthouse-library-what-we-know"],
}
# A run Stepline restarted under while its step 'publish' (a tool not known to be safe to call twice) was running.
RESUMED_RUN_ID = "8e4b2f17-6c3a-4d95-b0e8-3a7f1c9d2e64"
NOT_ARCHIVED = f"Error executing tool check_archive: No archived copy of {ARTICLE_URL}: the archive never captured it"
EARLIEST_CONDITION = "{{ steps.earliest.output.earliest[0].url != steps.article.output.url }}"
# The plan of the shipped story_origin_check_v2 scenario, as its run_started records it.
PLAN = [
    {"name": "article", "tool": "fetch_article", "server": None, "depends_on": [], "for_each": False, "when": None,
     "on_error": "fail", "max_attempts": 1, "description": ""},
    {"name": "related", "tool": "search_news_sources", "server": None, "depends_on": ["article"], "for_each": False,
     "when": None, "on_error": "fail", "max_attempts": 1, "description": "Every article on the same story."},
    {"name": "archive", "tool": "check_archive", "server": None, "depends_on": ["article"], "for_each": False,
     "when": None, "on_error": "continue", "max_attempts": 1,
     "description": "A copy in the web archive, if it kept one; the run goes on without it."},
    {"name": "earliest", "tool": "find_earliest_source", "server": None, "depends_on": ["related"],
     "for_each": False, "when": None, "on_error": "fail", "max_attempts": 1, "description": ""},
    {"name": "trace", "tool": "trace_citation_chain", "server": None, "depends_on": ["article", "earliest"],
     "for_each": False, "when": EARLIEST_CONDITION, "on_error": "fail", "max_attempts": 1,
     "description": "How the article leads back to the first report, when it is not the first report itself."},
    {"name": "first_outlet", "tool": "lookup_outlet", "server": None, "depends_on": ["earliest"], "for_each": False,
     "when": None, "on_error": "fail", "max_attempts": 1, "description": "Who published the first report."},
]


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    # Events are exactly what web.events builds: a field it does not know is a mistake, not an extension.
    return ConfigDict(extra="forbid", json_schema_extra={"examples": list(examples)})


class _Event(BaseModel):
    type: EventType
    run_id: str
    seq: int = Field(ge=1, description="1, 2, 3… per run: the frame's `id:`, to resume after with Last-Event-ID.")


class _StepEvent(_Event):
    step_name: str
    index: int = Field(description="The step's position in the scenario's steps.")


class RunStartedEvent(_Event):
    model_config = _examples(
        {"type": "run_started", "run_id": RUN_ID, "seq": 1, "scenario_id": "story_origin_check_v2",
         "started_at": "2026-04-24T09:30:02.114+00:00", "plan": PLAN,
         "started_by": {"name": "alice", "source": "proxy"}}
    )

    type: Literal[EventType.RUN_STARTED]
    scenario_id: str
    started_at: str
    plan: list[PlanStep] | None = Field(
        None, description="The steps this run follows, in index order; absent for runs recorded before plans were."
    )
    started_by: Actor | None = Field(None, description=STARTED_BY)


class StepStartedEvent(_StepEvent):
    model_config = _examples(
        {"type": "step_started", "run_id": RUN_ID, "seq": 2, "step_name": "article", "index": 0,
         "started_at": "2026-04-24T09:30:02.116+00:00", "input": {"url": ARTICLE_URL}, "attempt": 1},
        {"type": "step_started", "run_id": OUTLET_RUN_ID, "seq": 16, "step_name": "related", "index": 2,
         "started_at": "2026-04-24T09:41:17.530+00:00", "input": None, "attempt": 1, "item_count": 3},
    )

    type: Literal[EventType.STEP_STARTED]
    started_at: str
    input: dict[str, Any] | None = Field(
        description="The arguments of this attempt; null for a for_each step (each item has its own)."
    )
    attempt: int = Field(1, ge=1, description="One `step_started` per attempt of a plain step: 1, 2, …")
    item_count: int | None = Field(None, ge=0, description="for_each only: how many items the tool is called for.")


class StepProgressEvent(_StepEvent):
    model_config = _examples(
        {"type": "step_progress", "run_id": RUN_ID, "seq": 4, "step_name": "article", "index": 0, "progress": 1,
         "total": 4, "message": "Looking it up among 17 articles…"}
    )

    type: Literal[EventType.STEP_PROGRESS]
    progress: float | None = Field(description="From the tool's MCP progress notification.")
    total: float | None
    message: str | None


class StepRetryingEvent(_StepEvent):
    model_config = _examples(
        {"type": "step_retrying", "run_id": "8e2b5f40-1c7a-4d93-b6e8-0a4f3c9d2e17", "seq": 4, "step_name": "outlet",
         "index": 0, "attempt": 2, "max_attempts": 3, "message": "'lookup_outlet' did not answer within 5s",
         "delay_seconds": 1.0, "retry_at": "2026-04-24T09:45:08.221+00:00", "item_index": None},
        {"type": "step_retrying", "run_id": "8e2b5f40-1c7a-4d93-b6e8-0a4f3c9d2e17", "seq": 19, "step_name": "related",
         "index": 2, "attempt": 2, "max_attempts": 2,
         "message": "MCP server 'demo' is unavailable: the connection was lost", "delay_seconds": 2.0,
         "retry_at": "2026-04-24T09:45:20.004+00:00", "item_index": 1},
    )

    type: Literal[EventType.STEP_RETRYING]
    attempt: int = Field(ge=2, description="The attempt that will start.")
    max_attempts: int = Field(ge=2)
    message: str = Field(description="Why the previous attempt failed.")
    delay_seconds: float = Field(ge=0)
    retry_at: str = Field(description="When the attempt starts (ISO 8601, UTC).")
    item_index: int | None = Field(description="The for_each item retrying; null for a plain step.")


class StepItemFinishedEvent(_StepEvent):
    model_config = _examples(
        {"type": "step_item_finished", "run_id": OUTLET_RUN_ID, "seq": 26, "step_name": "related", "index": 2,
         "item_index": 2, "status": "success", "message": "",
         "output": {"query_url": LIGHTHOUSE_URL, "sources": [
             {"url": LIGHTHOUSE_URL, "outlet": "Harbor Daily", "published_at": "2024-03-05T09:30:00+00:00",
              "title": "Old Port Alder lighthouse will become a solar-powered library", "found_via": "query"},
             {"url": FIRST_REPORT_URL, "outlet": "Port Alder Community Notes",
              "title": "Keepers' cottage at the lighthouse to reopen as a reading room",
              "published_at": "2024-03-05T06:05:00+00:00", "found_via": "citation"}]},
         "input": {"url": LIGHTHOUSE_URL}, "attempt": 1},
    )

    type: Literal[EventType.STEP_ITEM_FINISHED]
    item_index: int = Field(ge=0, description="The item's position in the for_each list.")
    status: Literal[StepStatus.SUCCESS, StepStatus.FAILED, StepStatus.CANCELLED]
    message: str
    output: Any
    input: dict[str, Any] | None = Field(None, description="The item's arguments (null when they could not be made).")
    attempt: int = Field(1, ge=1)


class StepFinishedEvent(_StepEvent):
    model_config = _examples(
        # The one text block is the output written as JSON (indented by 2): recorded as a reference to it.
        {"type": "step_finished", "run_id": RUN_ID, "seq": 8, "step_name": "article", "index": 0, "status": "success",
         "started_at": "2026-04-24T09:30:02.116+00:00", "finished_at": "2026-04-24T09:30:03.239+00:00",
         "message": "", "output": ARTICLE, "content": [{"type": "text", "text_from": "output", "json": "indent2"}],
         "structured": "output"},
        {"type": "step_finished", "run_id": RUN_ID, "seq": 17, "step_name": "archive", "index": 2, "status": "failed",
         "started_at": "2026-04-24T09:30:03.240+00:00", "finished_at": "2026-04-24T09:30:03.245+00:00",
         "message": NOT_ARCHIVED, "output": None, "content": [{"type": "text", "text": NOT_ARCHIVED}]},
        {"type": "step_finished", "run_id": FIRST_REPORT_RUN_ID, "seq": 30, "step_name": "trace", "index": 4,
         "status": "skipped", "started_at": None, "finished_at": "2026-04-24T09:31:40.511+00:00",
         "message": f"Condition is false: {EARLIEST_CONDITION}", "output": None, "content": None},
        # Two text blocks (the output is their text, joined) around an image.
        {"type": "step_finished", "run_id": IMAGE_RUN_ID, "seq": 5, "step_name": "logo", "index": 0,
         "status": "success", "started_at": "2026-04-24T09:50:11.020+00:00",
         "finished_at": "2026-04-24T09:50:11.031+00:00", "message": "",
         "output": "Here's the image you requested:\nThe image above is the MCP logo.",
         "content": [{"type": "text", "text": "Here's the image you requested:"},
                     {"type": "image", "data": PIXEL_PNG, "mimeType": "image/png"},
                     {"type": "text", "text": "The image above is the MCP logo."}]},
        # No text and no structured content: the output is the content blocks, recorded once.
        {"type": "step_finished", "run_id": IMAGE_RUN_ID, "seq": 9, "step_name": "links", "index": 1,
         "status": "success", "started_at": "2026-04-24T09:50:11.033+00:00",
         "finished_at": "2026-04-24T09:50:11.040+00:00", "message": "",
         "output": [{"type": "resource_link", "uri": "demo://resource/static/document/architecture.md",
                     "name": "architecture.md", "mimeType": "text/markdown",
                     "annotations": {"audience": ["user"], "priority": 0.8}}],
         "content": {"from": "output"}},
    )

    type: Literal[EventType.STEP_FINISHED]
    status: Literal[StepStatus.SUCCESS, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED]
    started_at: str | None = Field(description="Null for a skipped step: it never started.")
    finished_at: str
    message: str = Field(description="Why it failed, was skipped or was cancelled; empty on success (or a note).")
    output: Any = Field(
        None,
        description="The tool's structured content, else its text parsed as JSON, else its text, else (no text "
        "and no structured content) its list of content blocks; for_each: the item outputs.",
    )
    content: list[dict[str, Any]] | dict[str, Any] | None = Field(
        None,
        description="The tool result's MCP content blocks (see the snapshot's `content`), each kept once: a text "
        'block whose text the output reproduces byte for byte is `{"type": "text", "text_from": "output"}` (its '
        "text is the output, a string), with `\"json\": \"indent2\" | \"compact\" | \"spaced\"` when it is "
        "the output written as JSON (`JSON.stringify(output, null, 2)`, `JSON.stringify(output)`, Python's "
        '`json.dumps(output)`) and `"ascii": true` when every non-ASCII character is escaped; its other keys '
        '(`annotations`, `_meta`) stay. `{"from": "output"}`: the content is the output (a result of blocks with '
        'no text). `{"truncated": true, ...}` when larger than `STEPLINE_MAX_OUTPUT_BYTES`. '
        "`GET /api/runs/{run_id}` shows the blocks whole.",
    )
    structured: Any = Field(
        None,
        description='The result\'s structured content, present only when it had some: `"output"` when the output '
        "is it (the usual case, said once), else the structured content itself (a result the tool marked as an "
        "error). Expressions read it as `steps.<name>.structured`.",
    )


class RunFinishedEvent(_Event):
    model_config = _examples(
        {"type": "run_finished", "run_id": RUN_ID, "seq": 41, "status": "success",
         "finished_at": "2026-04-24T09:30:03.290+00:00", "message": "Finished with 1 tolerated failure(s): archive",
         "output": {"title": ARTICLE["title"], "first_report": FIRST_REPORT_URL, "is_first_report": False,
                    "first_outlet": "Port Alder Community Notes (community newsletter)", "citation_hops": 3,
                    "chain": "Metro Signal (2024-03-07) traces back to Port Alder Community Notes (2024-03-05) in 3 "
                    "hops: Metro Signal → Riverside Ledger → Coastline Gazette → Port Alder Community Notes.",
                    "archived_copy": None},
         "cancelled_by": None},
        {"type": "run_finished", "run_id": "0b8f3e52-5a1d-4c8e-9f61-2d7c4a9e8b10", "seq": 5, "status": "failed",
         "finished_at": "2026-04-24T09:25:13.590+00:00",
         "message": "Step 'lookup_outlet' failed: Unknown outlet: nowhere.example.com", "output": None,
         "cancelled_by": None},
        {"type": "run_finished", "run_id": "9c2d4e61-3b7a-4f08-a5c9-1e6f2d8b7a40", "seq": 4, "status": "cancelled",
         "finished_at": "2026-04-24T09:52:40.207+00:00", "message": "Cancelled by request", "output": None,
         "cancelled_by": {"name": "ci-bot", "source": "token"}},
    )

    type: Literal[EventType.RUN_FINISHED]
    status: Literal[RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.CANCELLED]
    finished_at: str
    message: str
    output: Any = Field(None, description="The scenario's `output`, evaluated; null unless the run succeeded.")
    cancelled_by: Actor | None = Field(None, description=CANCELLED_BY)


class InputRequestedEvent(_StepEvent):
    model_config = _examples(
        {"type": "input_requested", "run_id": WAITING_RUN_ID, "seq": 9, "request_id": REQUEST_ID,
         "step_name": "approve", "index": 2, "item_index": None, "kind": "approval",
         "message": "Print 'Harbor bridge to close for repairs' in the morning edition?",
         "created_at": "2026-04-24T09:28:01.415+00:00", "expires_at": "2026-04-25T09:28:01.415+00:00",
         "requested_schema": FORM_SCHEMA, "secret_fields": [], "durable": True, "run_status": "waiting"},
        {"type": "input_requested", "run_id": WAITING_RUN_ID, "seq": 14, "request_id": SAMPLING_REQUEST_ID,
         "step_name": "summarise", "index": 3, "item_index": None, "kind": "sampling",
         "message": "The server asks for a model's reply", "created_at": "2026-04-24T09:31:15.002+00:00",
         "expires_at": "2026-04-25T09:31:15.002+00:00", "messages": SAMPLING_MESSAGES,
         "system_prompt": "You are a careful fact-checker.", "model_preferences": {"hints": [{"name": "gpt-4o"}]},
         "max_tokens": 200, "temperature": None, "stop_sequences": None, "include_context": "none",
         "durable": False, "run_status": "waiting"},
        {"type": "input_requested", "run_id": WAITING_RUN_ID, "seq": 20,
         "request_id": "0f6a3d9c2b7e4c58a1d0e9f8b7c6a5d4", "step_name": "connect", "index": 4,
         "item_index": None, "kind": "url",
         "message": "Authorize read access to your Daily Example account",
         "created_at": "2026-04-24T09:32:40.310+00:00", "expires_at": "2026-04-25T09:32:40.310+00:00",
         "url": "https://auth.daily.example.com/authorize?request=7f3c", "elicitation_id": "7f3c", "durable": False,
         "run_status": "waiting"},
        {"type": "input_requested", "run_id": RESUMED_RUN_ID, "seq": 7, "request_id": RESUME_REQUEST_ID,
         "step_name": "publish", "index": 2, "item_index": None, "kind": "resume", "message": RESUME_QUESTION,
         "created_at": "2026-04-24T10:02:44.910+00:00", "expires_at": "2026-04-25T10:02:44.910+00:00",
         "steps": ["publish"], "durable": True, "run_status": "waiting"},
    )

    type: Literal[EventType.INPUT_REQUESTED]
    request_id: str
    item_index: int | None = Field(description="for_each: the item whose call asks; null for a plain step.")
    kind: RequestKind
    message: str
    created_at: str
    expires_at: str = Field(description="When it ends unanswered (`expired`): the step's wait_timeout_seconds.")
    requested_schema: dict[str, Any] | None = Field(None, description="elicitation, approval: the form's JSON Schema.")
    secret_fields: list[str] | None = Field(
        None, description="elicitation, approval: the fields that look like they ask for a secret."
    )
    url: str | None = Field(None, description="url: the page to visit.")
    elicitation_id: str | None = Field(None, description="url: the server's id for the request.")
    messages: list[dict[str, Any]] | None = Field(None, description="sampling: the conversation, `{role, content}`.")
    system_prompt: str | None = Field(None, description="sampling.")
    model_preferences: dict[str, Any] | None = Field(None, description="sampling.")
    max_tokens: int | None = Field(None, description="sampling.")
    temperature: float | None = Field(None, description="sampling.")
    stop_sequences: list[str] | None = Field(None, description="sampling.")
    include_context: str | None = Field(None, description="sampling.")
    steps: list[str] | None = Field(
        None, description="resume: the steps that were running when Stepline stopped, run again on a Resume."
    )
    durable: bool = Field(description="Whether it is asked again after a restart of Stepline.")
    run_status: Literal[RunStatus.WAITING] = Field(description="The run's status now.")


class InputAnsweredEvent(_StepEvent):
    model_config = _examples(
        {"type": "input_answered", "run_id": WAITING_RUN_ID, "seq": 10, "request_id": REQUEST_ID,
         "step_name": "approve", "index": 2, "action": "accept", "content": {"copies": 2, "edition": "morning"},
         "answered_at": "2026-04-24T09:31:12.408+00:00", "answered_by": ALICE, "run_status": "running"},
        {"type": "input_answered", "run_id": WAITING_RUN_ID, "seq": 16, "request_id": SAMPLING_REQUEST_ID,
         "step_name": "summarise", "index": 3, "action": "expired", "content": None,
         "answered_at": "2026-04-25T09:31:15.004+00:00", "answered_by": None, "run_status": "running"},
    )

    type: Literal[EventType.INPUT_ANSWERED]
    request_id: str
    action: AnswerAction = Field(
        description="`accept`, `decline` or `cancel` as a person chose; `expired`: nobody answered in time."
    )
    content: Any = Field(description="The accepted values (a form's, a sampling reply's `{text, model?}`); else null.")
    answered_at: str
    answered_by: Actor | None = Field(description="Who answered; null when it expired.")
    run_status: Literal[RunStatus.RUNNING, RunStatus.WAITING] = Field(
        description="The run's status after it: `waiting` while other requests remain open."
    )


class InputDraftedEvent(_StepEvent):
    model_config = _examples(
        {"type": "input_drafted", "run_id": WAITING_RUN_ID, "seq": 15, "request_id": SAMPLING_REQUEST_ID,
         "step_name": "summarise", "index": 3, "draft": first_example(SamplingDraft), "drafted_by": ALICE}
    )

    type: Literal[EventType.INPUT_DRAFTED]
    request_id: str
    draft: SamplingDraft = Field(description="The model's reply, for the person to review: not an answer.")
    drafted_by: Actor | None = Field(description="Who asked the model for it.")


class RunResumedEvent(_Event):
    model_config = _examples(
        {"type": "run_resumed", "run_id": WAITING_RUN_ID, "seq": 11, "attempt": 1,
         "resumed_at": "2026-04-24T10:02:44.913+00:00", "waiting_steps": ["approve"], "rerun_steps": [], "by": None},
        {"type": "run_resumed", "run_id": RESUMED_RUN_ID, "seq": 9, "attempt": 1,
         "resumed_at": "2026-04-24T10:05:31.207+00:00", "waiting_steps": [], "rerun_steps": ["publish"], "by": ALICE},
    )

    type: Literal[EventType.RUN_RESUMED]
    attempt: int = Field(ge=1, description="The how-manyth time the run goes on after a restart.")
    resumed_at: str
    waiting_steps: list[str] = Field(description="The steps that wait again on their open requests.")
    rerun_steps: list[str] = Field(description="The steps called again from the start.")
    by: Actor | None = Field(
        description="Who resumed it (the Resume button, POST /api/runs/{run_id}/resume); null for the server itself, "
        "at start."
    )


EVENT_MODELS: dict[EventType, type[BaseModel]] = {
    EventType.RUN_STARTED: RunStartedEvent,
    EventType.STEP_STARTED: StepStartedEvent,
    EventType.STEP_PROGRESS: StepProgressEvent,
    EventType.STEP_RETRYING: StepRetryingEvent,
    EventType.STEP_ITEM_FINISHED: StepItemFinishedEvent,
    EventType.STEP_FINISHED: StepFinishedEvent,
    EventType.INPUT_REQUESTED: InputRequestedEvent,
    EventType.INPUT_ANSWERED: InputAnsweredEvent,
    EventType.INPUT_DRAFTED: InputDraftedEvent,
    EventType.RUN_RESUMED: RunResumedEvent,
    EventType.RUN_FINISHED: RunFinishedEvent,
}


class RunEvent(
    RootModel[
        Annotated[
            RunStartedEvent
            | StepStartedEvent
            | StepProgressEvent
            | StepRetryingEvent
            | StepItemFinishedEvent
            | StepFinishedEvent
            | InputRequestedEvent
            | InputAnsweredEvent
            | InputDraftedEvent
            | RunResumedEvent
            | RunFinishedEvent,
            Field(discriminator="type"),
        ]
    ]
):
    """One event of a run, told apart by its `type`."""

    model_config = ConfigDict(json_schema_extra={"examples": [first_example(m) for m in EVENT_MODELS.values()]})


class EventFrame(BaseModel):
    """One Server-Sent Events frame of the stream: `id:`, `event:` and `data:` lines, then a blank line."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"id": 1, "event": "run_started", "data": first_example(RunStartedEvent)}]
        }
    )

    id: int = Field(ge=1, description="The event's `seq`.")
    event: EventType = Field(description="The event's `type`.")
    data: RunEvent = Field(description="The event, as one line of JSON.")
