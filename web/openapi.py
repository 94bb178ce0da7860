"""The OpenAPI document, generated from the API's pydantic models, and /docs to read it offline."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from web import schemas
from web.templating import templates

SSE_EXAMPLE = (
    "id: 1\nevent: run_started\n"
    'data: {"type":"run_started","run_id":"76d6903c-f520-4a40-b0fc-8fed3f7955d2","seq":1,'
    '"scenario_id":"news_source_discovery_v1","started_at":"2026-04-24T09:27:59.873+00:00"}\n\n'
    "id: 2\nevent: step_started\n"
    'data: {"type":"step_started","run_id":"76d6903c-f520-4a40-b0fc-8fed3f7955d2","seq":2,'
    '"step_name":"fetch_article","index":0,"started_at":"2026-04-24T09:27:59.875+00:00"}\n\n'
    "id: 3\nevent: step_progress\n"
    'data: {"type":"step_progress","run_id":"76d6903c-f520-4a40-b0fc-8fed3f7955d2","seq":3,'
    '"step_name":"fetch_article","index":0,"progress":1,"total":4,"message":"Looking up the URL"}\n\n'
    "id: 4\nevent: step_finished\n"
    'data: {"type":"step_finished","run_id":"76d6903c-f520-4a40-b0fc-8fed3f7955d2","seq":4,'
    '"step_name":"fetch_article","index":0,"status":"success","started_at":"2026-04-24T09:27:59.875+00:00",'
    '"finished_at":"2026-04-24T09:28:01.402+00:00","message":"","output":{"title":"Harbor bridge to close"}}\n\n'
    ": ping\n\n"
    "id: 12\nevent: run_finished\n"
    'data: {"type":"run_finished","run_id":"76d6903c-f520-4a40-b0fc-8fed3f7955d2","seq":12,'
    '"status":"success","finished_at":"2026-04-24T09:28:05.750+00:00","message":""}\n\n'
)

MODELS: list[type[BaseModel]] = [
    schemas.ScenarioRunRequest,
    schemas.RunSubmitResponse,
    schemas.ScenarioRunResponse,
    schemas.ScenarioSummary,
    schemas.ToolSummary,
    schemas.Health,
    schemas.ErrorDetail,
    schemas.ValidationErrorResponse,
]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _first_example(model: type[BaseModel]) -> Any:
    return model.model_config["json_schema_extra"]["examples"][0]  # type: ignore[index]


def _json(description: str, model: type[BaseModel], *, many: bool = False) -> dict[str, Any]:
    schema = {"type": "array", "items": _ref(model)} if many else _ref(model)
    example = [_first_example(model)] if many else _first_example(model)
    return {"description": description, "content": {"application/json": {"schema": schema, "example": example}}}


def _error(description: str, example: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref(schemas.ErrorDetail), "example": {"detail": example}}},
    }


def _path_param(name: str, description: str, example: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": "string"},
            "example": example}


RUN_ID_PARAM = _path_param("run_id", "The run's id, as POST /api/runs returned it.", schemas.RUN_ID)
UNKNOWN_RUN = _error("Unknown run_id", f"Unknown run_id: {schemas.RUN_ID}")
INVALID = _json("The request does not validate", schemas.ValidationErrorResponse)

PATHS: dict[str, dict[str, Any]] = {
    "/api/runs": {
        "post": {
            "summary": "Schedule a scenario run",
            "description": "Validates the input against the scenario's `input_schema`, records the run and "
            "executes it in the background. Answers at once with the `run_id`: poll "
            "`GET /api/runs/{run_id}` or subscribe to `GET /api/runs/{run_id}/events`.",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": _ref(schemas.ScenarioRunRequest),
                        "example": _first_example(schemas.ScenarioRunRequest),
                    }
                },
            },
            "responses": {
                "202": _json("Run accepted", schemas.RunSubmitResponse),
                "404": _error("Unknown scenario_id", "Unknown scenario_id: news_source_discovery_v9"),
                "422": INVALID,
            },
        }
    },
    "/api/runs/{run_id}": {
        "get": {
            "summary": "Get a run's state",
            "description": "The run as its events so far describe it: partial while it runs, complete after.",
            "parameters": [RUN_ID_PARAM],
            "responses": {"200": _json("The run", schemas.ScenarioRunResponse), "404": UNKNOWN_RUN},
        }
    },
    "/api/runs/{run_id}/events": {
        "get": {
            "summary": "Follow a run's events (Server-Sent Events)",
            "description": "Replays the run's recorded events, then each new one as it happens, and ends after "
            "`run_finished`. Each frame has `id:` (the event's `seq`), `event:` (its type) and `data:` (the event "
            "as JSON). Types: `run_started`, `step_started`, `step_progress`, `step_finished`, `run_finished`. "
            "To resume after a dropped connection, send `Last-Event-ID: <seq>` or `?last_event_id=<seq>`: "
            "nothing is lost or repeated. Comments (`: ping`) keep the connection alive while a step is slow.",
            "parameters": [
                RUN_ID_PARAM,
                {"name": "last_event_id", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0},
                 "description": "Resume after this seq (the `Last-Event-ID` header wins when both are sent).",
                 "example": 3},
                {"name": "Last-Event-ID", "in": "header", "required": False,
                 "schema": {"type": "integer", "minimum": 0}, "description": "Resume after this seq.", "example": 3},
            ],
            "responses": {
                "200": {
                    "description": "The run's events",
                    "content": {"text/event-stream": {"schema": {"type": "string"}, "example": SSE_EXAMPLE}},
                },
                "404": UNKNOWN_RUN,
                "422": INVALID,
            },
        }
    },
    "/api/scenarios": {
        "get": {
            "summary": "List the scenarios",
            "description": "Every valid scenario in the scenario folder, with its input schema. Broken files are "
            "left out (see `stepline validate`).",
            "responses": {"200": _json("The scenarios", schemas.ScenarioSummary, many=True)},
        }
    },
    "/api/scenarios/{scenario_id}": {
        "get": {
            "summary": "Get a scenario's definition",
            "description": "The scenario file's JSON, steps included.",
            "parameters": [_path_param("scenario_id", "The scenario's id.", schemas.SCENARIO_ID)],
            "responses": {
                "200": {
                    "description": "The scenario definition",
                    "content": {
                        "application/json": {
                            "schema": {"type": "object"},
                            "example": {
                                "schema_version": "1",
                                "scenario_id": schemas.SCENARIO_ID,
                                "name": "News Source Discovery V1",
                                "description": "Find the earliest source of a news story.",
                                "input_schema": _first_example(schemas.ScenarioSummary)["input_schema"],
                                "steps": [
                                    {"name": "search_news_sources", "type": "tool", "tool": "search_news_sources",
                                     "input": {"url": {"from": "input.url"}}, "required_input_fields": ["url"]},
                                    {"name": "pick_earliest", "type": "tool", "tool": "find_earliest_source",
                                     "input": {"sources": {"from": "steps.search_news_sources.output.sources"},
                                               "limit": 1}},
                                ],
                            },
                        }
                    },
                },
                "404": _error("Unknown scenario_id", "Unknown scenario_id: news_source_discovery_v9"),
            },
        }
    },
    "/api/tools": {
        "get": {
            "summary": "List the MCP tools",
            "description": "The tools of every configured MCP server, each naming its server.",
            "responses": {
                "200": _json("The tools", schemas.ToolSummary, many=True),
                "502": _error(
                    "A server cannot be reached",
                    "MCP server 'remote' is unavailable: [Errno 111] Connect call failed ('127.0.0.1', 9000)",
                ),
            },
        }
    },
    "/healthz": {
        "get": {
            "summary": "Health",
            "description": "Always 200 while the service runs; `degraded` when an MCP server is not ready.",
            "responses": {"200": _json("Each MCP server's state", schemas.Health)},
        }
    },
}


def openapi_document(root_path: str) -> dict[str, Any]:
    _, definitions = models_json_schema(
        [(model, "validation") for model in MODELS], ref_template="#/components/schemas/{model}"
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Stepline",
            "version": "1.0.0",
            "description": "Run multi-step MCP tool scenarios and watch them live.",
        },
        "servers": [{"url": root_path or "/"}],
        "paths": PATHS,
        "components": {"schemas": definitions.get("$defs", {})},
    }


async def openapi_json(request: Request) -> Response:
    return JSONResponse(openapi_document(request.scope.get("root_path", "")))


async def docs(request: Request) -> Response:
    return templates.TemplateResponse(request, "docs.html", {})


routes = [
    Route("/openapi.json", openapi_json, methods=["GET"], name="openapi"),
    Route("/docs", docs, methods=["GET"], name="docs"),
]
