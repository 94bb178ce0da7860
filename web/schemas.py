"""The JSON API's request and response models: the seed's contract, with realistic examples."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from web.run_list import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, RunPage
from web.run_state import RunState
from web.store import RunRow

RUN_ID = "76d6903c-f520-4a40-b0fc-8fed3f7955d2"
SCENARIO_ID = "news_source_discovery_v1"
ARTICLE_URL = "https://daily.example.com/2026/03/harbor-bridge-closure"
RunStatus = Literal["queued", "running", "success", "failed", "cancelled"]
StepStatus = Literal["running", "success", "failed", "skipped", "cancelled"]


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


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
    status: RunStatus
    input: dict[str, Any]
    started_at: str = Field(description="When the run was accepted (ISO 8601, UTC).")


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
            "progress": 4,
            "total": 4,
        }
    )

    node_id: str = Field(description="The step's name.")
    index: int
    status: StepStatus
    started_at: str | None
    finished_at: str | None
    message: str
    input: dict[str, Any] | None = None
    output: Any = None
    progress: float | None = None
    total: float | None = None


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
            "steps": [StepStateModel.model_config["json_schema_extra"]["examples"][0]],  # type: ignore[index]
        }
    )

    run_id: str
    scenario_id: str
    status: RunStatus
    message: str
    input: dict[str, Any]
    started_at: str | None
    finished_at: str | None
    steps: list[StepStateModel] = Field(description="The steps that have started, in order.")

    @classmethod
    def of(cls, state: RunState) -> ScenarioRunResponse:
        return cls(
            run_id=state.run_id,
            scenario_id=state.scenario_id,
            status=state.status,  # type: ignore[arg-type]
            message=state.message,
            input=state.input,
            started_at=state.started_at or state.created_at,
            finished_at=state.finished_at,
            steps=[
                StepStateModel(
                    node_id=step.node_id,
                    index=step.index,
                    status=step.status,  # type: ignore[arg-type]
                    started_at=step.started_at,
                    finished_at=step.finished_at,
                    message=step.message,
                    input=step.input,
                    output=step.output,
                    progress=step.progress,
                    total=step.total,
                )
                for step in sorted(state.steps.values(), key=lambda s: s.index)
            ],
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
    tools: int
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
    limit: int = Field(DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    cursor: str | None = None

    @field_validator("scenario_id", "limit", "cursor", mode="before")
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
