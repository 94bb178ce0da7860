"""The OpenAPI document, generated from the API's pydantic models, and /docs to read it offline."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema
from pydantic_core import core_schema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from web import api, check_api, event_schemas, output_api, preview_api, requests_api, schemas
from web.api import SERVERS_DOWN_HEADER
from web.event_schemas import RunFinishedEvent, RunStartedEvent, StepFinishedEvent, StepProgressEvent, StepStartedEvent
from web.events import EventType, RunStatus
from web.json_limits import dumps
from web.openapi_parts import error_response, error_responses, json_response, path_param, query_param, ref
from web.permissions import ROUTE_ROLES, SIGN_IN
from web.run_list import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from web.schemas import examples_of, first_example
from web.templating import templates


def _frame(event: dict[str, Any]) -> str:
    return f"id: {event['seq']}\nevent: {event['type']}\ndata: {dumps(event)}\n\n"


# Some events of a story_origin_check_v2 run, as a client reads them: a keep-alive comment comes while a step is slow.
SSE_EXAMPLE = "".join(
    [
        *(_frame(first_example(model)) for model in (RunStartedEvent, StepStartedEvent, StepProgressEvent)),
        ": ping\n\n",
        *(_frame(event) for event in examples_of(StepFinishedEvent)[:2]),
        _frame(first_example(RunFinishedEvent)),
    ]
)

EVENT_TYPES = ", ".join(f"`{kind.value}`" for kind in EventType)

MODELS: list[type[BaseModel]] = [
    schemas.ScenarioRunRequest,
    schemas.RunSubmitResponse,
    schemas.ScenarioRunResponse,
    schemas.ScenarioSummary,
    schemas.ToolSummary,
    schemas.Health,
    schemas.ErrorDetail,
    schemas.ValidationErrorResponse,
    schemas.RunSummary,
    schemas.RunList,
    event_schemas.EventFrame,
    *event_schemas.EVENT_MODELS.values(),
    *output_api.MODELS,
    *check_api.MODELS,
    *preview_api.MODELS,
    *requests_api.MODELS,
]


class OpenApiSchema(GenerateJsonSchema):
    """pydantic's JSON Schema, with an example for every enum (statuses, event types) as for every model.

    Fields and examples keep the order they are written in: an event reads `type`, `run_id`, `seq` first.
    """

    def sort(self, value: JsonSchemaValue, parent_key: str | None = None) -> JsonSchemaValue:
        return value

    def enum_schema(self, schema: core_schema.EnumSchema) -> JsonSchemaValue:
        json_schema = super().enum_schema(schema)
        json_schema.setdefault("examples", json_schema["enum"][:1])
        return json_schema


RUN_ID_PARAM = path_param("run_id", "The run's id, as POST /api/runs returned it.", schemas.RUN_ID)
UNKNOWN_RUN = error_response(
    "Unknown run_id, or a run of a scenario you may not see", f"Unknown run_id: {schemas.RUN_ID}"
)
UNKNOWN_SCENARIO = error_response(
    "Unknown scenario_id, or a scenario you may not see", "Unknown scenario_id: news_source_discovery_v9"
)
INVALID = json_response("The request does not validate", schemas.ValidationErrorResponse)
STRICT_INVALID = {
    "description": "The body is not strict JSON (not UTF-8, malformed, NaN or Infinity, a lone surrogate, or nested "
    "deeper than `STEPLINE_MAX_JSON_DEPTH`, 64 by default), or the input does not match the scenario's "
    "`input_schema`",
    "content": {
        "application/json": {
            "schema": ref(schemas.ValidationErrorResponse),
            "examples": {
                "input does not match": {"value": first_example(schemas.ValidationErrorResponse)},
                "nested too deeply": {
                    "value": {
                        "detail": [
                            {
                                "loc": ["body", 353],
                                "msg": "JSON nested deeper than 64 levels (line 1, column 354)",
                                "type": "json_too_deep",
                            }
                        ]
                    }
                },
                "not a finite number": {
                    "value": {
                        "detail": [
                            {
                                "loc": ["body", "input", "limit"],
                                "msg": "NaN is not valid JSON: numbers must be finite",
                                "type": "json_non_finite",
                            }
                        ]
                    }
                },
            },
        }
    },
}
RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before trying again."}}
HISTORY_FAILING = {
    **error_response(
        "The run history cannot be written (see /healthz); no run was started",
        "Run not started: run history in .stepline cannot be written: database or disk is full "
        "[SQLITE_FULL] (is the disk full or the directory read-only?)",
    ),
    "headers": RETRY_AFTER,
}
CANCELLED_RUN = {
    **first_example(schemas.ScenarioRunResponse),
    "status": "cancelled",
    "message": "Cancelled by request",
    "finished_at": "2026-04-24T09:28:00.912+00:00",
    "steps": [
        schemas.NEWS_STEPS[0],
        {
            **schemas.NEWS_STEPS[1],
            "status": "cancelled",
            "finished_at": "2026-04-24T09:28:00.911+00:00",
            "message": "Cancelled by request",
        },
        *(
            {
                **step,
                "status": "skipped",
                "finished_at": "2026-04-24T09:28:00.911+00:00",
                "message": "Not run: Cancelled by request",
            }
            for step in schemas.NEWS_STEPS[2:]
        ),
    ],
}
HEALTH_SUMMARY = {
    "type": "object",
    "title": "HealthSummary",
    "description": "What /healthz tells anyone but an admin.",
    "required": ["status", "servers"],
    "properties": {
        "status": {"enum": ["ok", "degraded"]},
        "servers": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["state"],
                "properties": {"state": {"enum": ["connecting", "ready", "down"]}},
            },
        },
    },
}
# Every route behind the guard may answer these (web.permissions); each operation refers to them once.
SECURITY_RESPONSES = {
    "Unauthorized": {
        **error_response(
            "Nobody identified: send `Authorization: Bearer <token>` (see `stepline token create`), or come through "
            "the portal's proxy. A token that is unknown, expired, revoked or malformed gets the same answer.",
            SIGN_IN,
        ),
        "headers": {
            "WWW-Authenticate": {"schema": {"type": "string"}, "description": 'Always `Bearer realm="stepline"`.'}
        },
    },
    "Forbidden": error_responses(
        "Identified, but not allowed: the role is too low for this operation, or the identity header came from an "
        "address that is not a trusted proxy",
        role_too_low="Refused: this needs the operator role; yours is viewer",
        untrusted_proxy="Refused: the identity header is accepted only from the configured proxies",
    ),
}
ROUTED = [*api.routes, *output_api.routes, *check_api.routes, *preview_api.routes, *requests_api.routes]


def secured(paths: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`paths` with each guarded operation's 401 and 403 (unless it describes its own 403), from the permission
    table, so no operation can forget them."""
    guarded = {
        (route.path, method.lower())
        for route in ROUTED
        if isinstance(route, Route) and ROUTE_ROLES[route.name] is not None
        for method in route.methods or ()
    }
    result: dict[str, dict[str, Any]] = {}
    for path, operations in paths.items():
        result[path] = {}
        for method, operation in operations.items():
            if (path, method) in guarded:
                responses = {**operation["responses"], "401": {"$ref": "#/components/responses/Unauthorized"}}
                responses.setdefault("403", {"$ref": "#/components/responses/Forbidden"})
                operation = {**operation, "responses": dict(sorted(responses.items()))}
            result[path][method] = operation
    return result


NOT_ALLOWED_TO_RUN = "(its run list names neither you nor your groups)"
# Starting, rerunning and cancelling are judged by the scenario's run list too (web.runs.RunForbidden).
RUN_FORBIDDEN = error_responses(
    "Identified, but not allowed: the role is too low, the scenario's `access.run` list names neither you nor "
    "your groups, or the identity header came from an address that is not a trusted proxy; nothing was done",
    role_too_low="Refused: this needs the operator role; yours is viewer",
    not_on_the_run_list=f"Refused: you may not run scenario '{schemas.SCENARIO_ID}' {NOT_ALLOWED_TO_RUN}",
    untrusted_proxy="Refused: the identity header is accepted only from the configured proxies",
)
CANCEL_FORBIDDEN = error_responses(
    "Identified, but not allowed: the role is too low, the run's scenario's `access.run` list names neither you "
    "nor your groups, or the identity header came from an address that is not a trusted proxy",
    role_too_low="Refused: this needs the operator role; yours is viewer",
    not_on_the_run_list=f"Refused: you may not cancel runs of scenario '{schemas.SCENARIO_ID}' {NOT_ALLOWED_TO_RUN}",
    untrusted_proxy="Refused: the identity header is accepted only from the configured proxies",
)
RUN_EXAMPLES = dict(
    zip(
        ["running", "a workflow that has ended", "waiting for a person"],
        schemas.examples_of(schemas.ScenarioRunResponse),
        strict=True,
    )
)

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
                        "schema": ref(schemas.ScenarioRunRequest),
                        "example": first_example(schemas.ScenarioRunRequest),
                    }
                },
            },
            "responses": {
                "202": json_response("Run accepted (and recorded on disk)", schemas.RunSubmitResponse),
                "403": RUN_FORBIDDEN,
                "404": UNKNOWN_SCENARIO,
                "413": error_response(
                    "The body is larger than the limit (`STEPLINE_MAX_BODY_BYTES`, 1 MiB by default); nothing was run",
                    "Request body too large: the limit is 1,048,576 bytes, and this one has 104,857,600 bytes.",
                ),
                "415": error_response(
                    "The body is not sent as JSON (`Content-Type: application/json`, or `application/*+json`, UTF-8)",
                    "Send the body as JSON, with Content-Type: application/json (Content-Type text/plain was given)",
                ),
                "422": STRICT_INVALID,
                "503": HISTORY_FAILING,
            },
        },
        "get": {
            "summary": "List runs, newest first",
            "description": "Every run in the history (it survives restarts; see `--retention-days` and "
            "`--retention-runs`) of the scenarios you may see, newest first, optionally filtered by scenario, status "
            "and who started them. Pages are `limit` runs long; pass the answer's `next_cursor` as `cursor` for the "
            "next page, until it is null. A cursor marks a position, so runs started meanwhile never shift a page: no "
            "run is repeated or skipped. An empty `scenario_id`, `started_by`, `limit` or `cursor` counts as not "
            "given; an empty `status` is refused (422).",
            "parameters": [
                query_param("scenario_id", "Only runs of this scenario.", {"type": "string"}, schemas.SCENARIO_ID),
                query_param(
                    "status",
                    "Only runs with this status: `waiting` lists the runs waiting for a person to answer a request.",
                    {"type": "string", "enum": [status.value for status in RunStatus]},
                    "failed",
                ),
                query_param(
                    "started_by",
                    "Only runs started by this name: a user the portal signed in, or an API token's name.",
                    {"type": "string", "maxLength": schemas.MAX_NAME_CHARS},
                    "alice",
                ),
                query_param(
                    "limit",
                    "Runs per page.",
                    {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": DEFAULT_PAGE_SIZE},
                    20,
                ),
                query_param(
                    "cursor", "The previous page's `next_cursor`, as given.", {"type": "string"}, schemas.NEXT_CURSOR
                ),
            ],
            "responses": {
                "200": json_response("A page of runs", schemas.RunList),
                "422": {
                    "description": "A parameter does not validate",
                    "content": {
                        "application/json": {
                            "schema": ref(schemas.ValidationErrorResponse),
                            "example": {
                                "detail": [
                                    {
                                        "loc": ["query", "status"],
                                        "msg": "Input should be 'queued', 'running', 'waiting', 'success', "
                                        "'failed' or 'cancelled'",
                                        "type": "enum",
                                    }
                                ]
                            },
                        }
                    },
                },
            },
        },
    },
    "/api/runs/{run_id}/cancel": {
        "post": {
            "summary": "Cancel a run",
            "description": "Stops a queued, running or waiting run, during a retry's backoff too (its open "
            "requests close unanswered). Each tool call in flight "
            "is cancelled on its MCP server (the client sends `notifications/cancelled`) and its step ends "
            '`cancelled`; steps not started end `skipped` ("Not run: Cancelled by request"), and the run ends '
            "`cancelled` with a `run_finished` event. Answers with the run's state once it has "
            "recorded its ending (waiting at most 2 s; a server slow to let go may leave it `running` a moment "
            "longer: follow its events).",
            "parameters": [RUN_ID_PARAM],
            "responses": {
                "202": {
                    "description": "Cancellation accepted; the run's state",
                    "content": {
                        "application/json": {"schema": ref(schemas.ScenarioRunResponse), "example": CANCELLED_RUN}
                    },
                },
                "403": CANCEL_FORBIDDEN,
                "404": UNKNOWN_RUN,
                "409": error_response(
                    "The run has already finished", f"Run {schemas.RUN_ID} has already finished (success)"
                ),
            },
        }
    },
    "/api/runs/{run_id}/rerun": {
        "post": {
            "summary": "Run again",
            "description": "Starts a new run of the same scenario with the same input, checked against the "
            "scenario as it is now. Answers like `POST /api/runs`, with the new run's id.",
            "parameters": [RUN_ID_PARAM],
            "responses": {
                "202": json_response("The new run, accepted", schemas.RunSubmitResponse),
                "403": RUN_FORBIDDEN,
                "404": error_responses(
                    "Unknown run (or a run of a scenario you may not see), or its scenario no longer exists",
                    unknown_run=f"Unknown run_id: {schemas.RUN_ID}",
                    scenario_gone=f"Scenario '{schemas.SCENARIO_ID}' of run {schemas.RUN_ID} no longer exists",
                ),
                "422": json_response(
                    "The run's input no longer matches the scenario's input_schema", schemas.ValidationErrorResponse
                ),
                "503": HISTORY_FAILING,
            },
        }
    },
    "/api/runs/{run_id}": {
        "get": {
            "summary": "Get a run's state",
            "description": "The run as its events so far describe it: partial while it runs, complete after. "
            "`steps` lists every step of the plan the run recorded when it started (`plan`), `pending` until it "
            "starts; `output` is the scenario's `output`, evaluated once the run has succeeded. A for_each step "
            "counts its items (`item_count`, `items_done`, `items_failed`); each item's result is in its "
            "`step_item_finished` event, so the snapshot stays small however many items there are. Each step's "
            "`content` is its tool result's MCP content blocks, whole (text, image, audio, resource_link, resource, "
            "with their annotations). While a step waits for a person the run and the step are `waiting`: "
            "`pending_requests` lists what is asked (a form, a URL to visit, a model reply to write or review), each "
            "answered with `POST /api/runs/{run_id}/requests/{request_id}`; each step's `answers` say who answered "
            "what, and when.",
            "parameters": [RUN_ID_PARAM],
            "responses": {
                "200": {
                    "description": "The run",
                    "content": {
                        "application/json": {
                            "schema": ref(schemas.ScenarioRunResponse),
                            "examples": {name: {"summary": name, "value": run} for name, run in RUN_EXAMPLES.items()},
                        }
                    },
                },
                "404": UNKNOWN_RUN,
            },
        }
    },
    "/api/runs/{run_id}/events": {
        "get": {
            "summary": "Follow a run's events (Server-Sent Events)",
            "description": "Replays the run's recorded events, then each new one as it happens, and ends after "
            "`run_finished`. Each frame has `id:` (the event's `seq`), `event:` (its type) and `data:` (the event "
            f"as JSON, see `RunEvent`). Types: {EVENT_TYPES}. A skipped step has only its `step_finished`; a "
            "for_each step has one `step_started` (with `item_count`) and a `step_item_finished` per item; each "
            "retry is announced by `step_retrying`. A result is sent once: in `step_finished`, a content block "
            'whose text the `output` reproduces is a reference to it (`{"type": "text", "text_from": "output"}`, '
            "see `StepFinishedEvent`). A request to a person is `input_requested` (its step and the run become "
            "`waiting`), then `input_answered` (who answered, or `expired`); `input_drafted` is a model's draft of a "
            "sampling reply; `run_resumed` a run that goes on after a restart of Stepline (after an `input_requested` "
            "of kind `resume` when steps that may have partly run wait for a person's Resume). To resume after a "
            "dropped connection, send "
            "`Last-Event-ID: <seq>` or `?last_event_id=<seq>`: nothing is lost or repeated. Comments (`: ping`) "
            "keep the connection alive while a step is slow.",
            "parameters": [
                RUN_ID_PARAM,
                {
                    "name": "last_event_id",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 0},
                    "description": "Resume after this seq (the `Last-Event-ID` header wins when both are sent).",
                    "example": 3,
                },
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 0},
                    "description": "Resume after this seq.",
                    "example": 3,
                },
            ],
            "responses": {
                "200": {
                    "description": "The run's events",
                    "content": {
                        "text/event-stream": {
                            # OpenAPI 3.1 has no schema for a stream's items (3.2's itemSchema): the stream is
                            # described as the sequence of its frames.
                            "schema": {"type": "array", "items": ref(event_schemas.EventFrame)},
                            "examples": {
                                "excerpt": {
                                    "summary": "Some of the 41 events of a story_origin_check_v2 run",
                                    "value": SSE_EXAMPLE,
                                }
                            },
                        }
                    },
                },
                "404": UNKNOWN_RUN,
                "422": INVALID,
                "503": {
                    **error_responses(
                        "Too many event streams are open, on this run or in the server; try again after "
                        "`Retry-After` seconds",
                        per_run="Run 0b7e5c1a-3f2d-4c8e-9a61-2d4f8b9c7e10 has 2000 event streams open, the most "
                        "one run allows (max_streams_per_run); try again in 5 seconds.",
                        per_server="The server has 3000 event streams open, the most it allows (max_streams); "
                        "try again in 5 seconds.",
                    ),
                    "headers": RETRY_AFTER,
                },
            },
        }
    },
    "/api/scenarios": {
        "get": {
            "summary": "List the scenarios",
            "description": "Every valid scenario in the scenario folder that you may see (its `access.view` or "
            "`access.run` list names you or one of your groups, or it has none), with its input schema. Broken "
            "files are left out (see `stepline validate`).",
            "responses": {"200": json_response("The scenarios", schemas.ScenarioSummary, many=True)},
        }
    },
    "/api/scenarios/{scenario_id}": {
        "get": {
            "summary": "Get a scenario's definition",
            "description": "The scenario file's JSON, steps included.",
            "parameters": [path_param("scenario_id", "The scenario's id.", schemas.SCENARIO_ID)],
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
                                "input_schema": first_example(schemas.ScenarioSummary)["input_schema"],
                                "steps": [
                                    {
                                        "name": "search_news_sources",
                                        "type": "tool",
                                        "tool": "search_news_sources",
                                        "input": {"url": {"from": "input.url"}},
                                        "required_input_fields": ["url"],
                                    },
                                    {
                                        "name": "pick_earliest",
                                        "type": "tool",
                                        "tool": "find_earliest_source",
                                        "input": {
                                            "sources": {"from": "steps.search_news_sources.output.sources"},
                                            "limit": 1,
                                        },
                                    },
                                ],
                            },
                        }
                    },
                },
                "404": UNKNOWN_SCENARIO,
            },
        }
    },
    "/api/tools": {
        "get": {
            "summary": "List the MCP tools",
            "description": "The tools of every configured MCP server that can be reached, each naming its server. "
            f"While some servers are down the others' tools are listed, and the `{SERVERS_DOWN_HEADER}` header "
            "names those down (see `/healthz` for why); 502 only when no server can be reached.",
            "responses": {
                "200": {
                    **json_response("The tools of the servers that can be reached", schemas.ToolSummary, many=True),
                    "headers": {
                        SERVERS_DOWN_HEADER: {
                            "description": "Only while some servers are down: their names, comma-separated and "
                            "percent-encoded. Their tools are not in the list.",
                            "schema": {"type": "string"},
                            "example": "remote",
                        }
                    },
                },
                "502": error_response(
                    "No server can be reached: each one's reason",
                    "MCP server 'demo' is unavailable: the connection closed; "
                    "MCP server 'remote' is unavailable: [Errno 111] Connect call failed ('127.0.0.1', 9000)",
                ),
            },
        }
    },
    "/healthz": {
        "get": {
            "summary": "Health",
            "description": "Always 200 while the service runs, to anyone, credentials or not; `degraded` when an MCP "
            "server is not ready or the run history cannot be written (its writes are then held in memory and "
            "retried). Admins see the details (`Health`: each server's transport, tool count and error, the history "
            "file and its error); anyone else sees the status and each server's state only.",
            "security": [],
            "responses": {
                "200": {
                    "description": "The service's state: in detail for admins, in summary for anyone else",
                    "content": {
                        "application/json": {
                            "schema": {"anyOf": [ref(schemas.Health), HEALTH_SUMMARY]},
                            "examples": {
                                "as an admin": {"value": first_example(schemas.Health)},
                                "as anyone else": {"value": {"status": "ok", "servers": {"demo": {"state": "ready"}}}},
                            },
                        }
                    },
                }
            },
        }
    },
}


def openapi_document(root_path: str) -> dict[str, Any]:
    _, definitions = models_json_schema(
        [(model, "validation") for model in MODELS],
        ref_template="#/components/schemas/{model}",
        schema_generator=OpenApiSchema,
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Stepline",
            "version": "1.0.0",
            "description": "Run multi-step MCP tool scenarios and watch them live.",
        },
        "servers": [{"url": root_path or "/"}],
        "paths": secured(
            {**PATHS, **output_api.PATHS, **check_api.PATHS, **preview_api.PATHS, **requests_api.PATHS}
        ),
        # A token, or nothing: anonymous requests are served on a loopback-bound server (or when allowed).
        "security": [{"bearerAuth": []}, {}],
        "components": {
            "schemas": definitions.get("$defs", {}),
            "responses": SECURITY_RESPONSES,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token from `stepline token create NAME --role ROLE`.",
                }
            },
        },
    }


async def openapi_json(request: Request) -> Response:
    return JSONResponse(openapi_document(request.scope.get("root_path", "")))


async def docs(request: Request) -> Response:
    return templates.TemplateResponse(request, "docs.html", {})


routes = [
    Route("/openapi.json", openapi_json, methods=["GET"], name="openapi"),
    Route("/docs", docs, methods=["GET"], name="docs"),
]
