"""The JSON API under /api: the seed's contract, kept exactly, plus run history and control."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, TypeVar
from urllib.parse import quote

from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from web.access import Role
from web.events import EventType
from web.http_body import declared_charset, is_json_media_type
from web.json_limits import JsonProblem, parse
from web.mcp_server import McpServer
from web.permissions import identity_of
from web.registry import RunRecord
from web.run_list import BadCursor
from web.runs import (
    AnswerInvalid,
    HistoryFailing,
    ModelFailed,
    NoSamplingModel,
    ReplicaUnreachable,
    RequestClosed,
    RunAlreadyFinished,
    RunForbidden,
    RunRefused,
    ScenarioGone,
    UnknownRequest,
    UnknownRun,
    UnknownScenario,
)
from web.schemas import (
    Health,
    RunList,
    RunListQuery,
    RunSubmitResponse,
    ScenarioRunRequest,
    ScenarioRunResponse,
    ScenarioSummary,
    ToolSummary,
)
from web.streams import BadLastEventId, event_stream, json_frame, resume_point

ModelT = TypeVar("ModelT", bound=BaseModel)


class RequestInvalid(Exception):
    """A 422: the request's problems as FastAPI-shaped `{loc, msg, type}` entries."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors)
        self.errors = errors


async def read_json(request: Request, model: type[ModelT]) -> ModelT:
    """The body as `model`: 415 unless it is sent as JSON, 422 unless it is strict JSON that validates.

    Its size is bounded before it gets here (the app's body limit answers 413).
    """
    content_type = request.headers.get("content-type")
    if not is_json_media_type(content_type):
        sent = f"Content-Type {content_type}" if content_type else "no Content-Type"
        raise HTTPException(415, f"Send the body as JSON, with Content-Type: application/json ({sent} was given)")
    charset = declared_charset(content_type)
    if charset not in (None, "utf-8", "utf8"):
        raise HTTPException(415, f"Send the body as UTF-8 JSON (charset={charset} was given)")
    try:
        data = parse(await request.body(), max_depth=request.app.state.settings.max_json_depth)
    except JsonProblem as problem:
        raise RequestInvalid([{"loc": ["body", *problem.loc], "msg": problem.message, "type": problem.kind}]) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestInvalid(
            [{"loc": ["body", *error["loc"]], "msg": error["msg"], "type": error["type"]} for error in exc.errors()]
        ) from None


def read_query(request: Request, model: type[ModelT]) -> ModelT:
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise RequestInvalid(
            [{"loc": ["query", *error["loc"]], "msg": error["msg"], "type": error["type"]} for error in exc.errors()]
        ) from None


def model_response(model: BaseModel, status_code: int = 200) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json"), status_code=status_code)


# How each refusal of the run service is answered (InputInvalid: 422, with its `{loc, msg, type}` list).
REFUSAL_STATUS: dict[type[RunRefused], int] = {
    UnknownScenario: 404,
    UnknownRun: 404,
    ScenarioGone: 404,
    RunForbidden: 403,
    RunAlreadyFinished: 409,
    UnknownRequest: 404,
    RequestClosed: 409,
    AnswerInvalid: 422,
    NoSamplingModel: 409,
    ModelFailed: 502,
    HistoryFailing: 503,
    ReplicaUnreachable: 503,
}


async def require_run(request: Request) -> RunRecord:
    """The path's run, if the asker may see it: UnknownRun (404) otherwise, as if there were none."""
    return await request.state.run_service.run(request.path_params["run_id"], identity_of(request))


async def post_run(request: Request) -> Response:
    """Start a run and answer 202 once it is on disk (a StoreError is answered 503 by the app)."""
    body = await read_json(request, ScenarioRunRequest)
    record = await request.state.run_service.start(body.scenario_id, body.input, by=identity_of(request))
    # queued, or already failed when its input could not be recorded
    return model_response(RunSubmitResponse.of(record.state), 202)


async def list_runs(request: Request) -> Response:
    query = read_query(request, RunListQuery)
    try:
        page = await request.state.run_service.runs_page(
            identity_of(request),
            scenario_id=query.scenario_id,
            status=query.status,
            started_by=query.started_by,
            limit=query.limit,
            cursor=query.cursor,
        )
    except BadCursor as exc:
        raise RequestInvalid([{"loc": ["query", "cursor"], "msg": str(exc), "type": "value_error"}]) from None
    return model_response(RunList.of(page))


async def cancel_run(request: Request) -> Response:
    record = await request.state.run_service.cancel(request.path_params["run_id"], by=identity_of(request))
    return model_response(ScenarioRunResponse.of(record.state), 202)


async def rerun(request: Request) -> Response:
    """A new run of the same scenario with the same input, checked against the scenario as it is now."""
    record = await request.state.run_service.rerun(request.path_params["run_id"], by=identity_of(request))
    return model_response(RunSubmitResponse.of(record.state), 202)


async def get_run(request: Request) -> Response:
    return model_response(ScenarioRunResponse.of((await require_run(request)).state))


async def get_run_events(request: Request) -> Response:
    record = await require_run(request)
    try:
        after = resume_point(request)
    except BadLastEventId as exc:
        raise RequestInvalid([{"loc": exc.loc, "msg": str(exc), "type": "int_parsing"}]) from None
    return event_stream(request, record, public_json_frame, after=after)


# Stripped copies of input_requested events, by (run_id, seq): made once, so that each is encoded once too.
_SHOWN_REQUESTS: OrderedDict[tuple[str, int], dict[str, Any]] = OrderedDict()
SHOWN_REQUESTS_KEPT = 1024


def public_json_frame(event: dict[str, Any]) -> bytes:
    """The event's JSON frame, an input request's `resume` left out: opaque state only its step reads after a
    restart (it stays in the history), of no use to a client and not the client's to see."""
    if event["type"] != EventType.INPUT_REQUESTED or "resume" not in event:
        return json_frame(event)
    key = (event["run_id"], event["seq"])
    shown = _SHOWN_REQUESTS.get(key)
    if shown is None:
        shown = _SHOWN_REQUESTS[key] = {name: value for name, value in event.items() if name != "resume"}
        if len(_SHOWN_REQUESTS) > SHOWN_REQUESTS_KEPT:
            _SHOWN_REQUESTS.popitem(last=False)
    else:
        _SHOWN_REQUESTS.move_to_end(key)
    return json_frame(shown)


async def list_scenarios(request: Request) -> Response:
    """The scenarios the asker may see."""
    summaries = [
        ScenarioSummary(
            id=s.scenario_id,
            name=s.name,
            description=s.description,
            input_schema=s.input_schema,
            step_count=len(s.steps),
        ).model_dump(mode="json")
        for s in request.state.run_service.scenarios(identity_of(request))
    ]
    return JSONResponse(summaries)


async def get_scenario(request: Request) -> Response:
    scenario_id = request.path_params["scenario_id"]
    request.state.run_service.scenario(scenario_id, identity_of(request))
    return JSONResponse(request.state.catalog.raw[scenario_id])


# Names the servers that could not be reached when /api/tools lists the others' tools (200).
SERVERS_DOWN_HEADER = "Stepline-Servers-Down"


def unavailable(server: McpServer) -> str:
    reason = server.error or f"did not connect within {server.connect_timeout:g}s"
    return f"MCP server '{server.name}' is unavailable: {reason}"


async def list_tools(request: Request) -> Response:
    """The reachable servers' tools; a header names those down, and 502 only when none can be reached."""
    pool = request.state.pool
    await pool.settle()
    down = [server for server in pool.servers.values() if server.state != "ready"]
    if down and len(down) == len(pool.servers):
        raise HTTPException(502, "; ".join(unavailable(server) for server in down))
    names = [server.name for server in down]
    tools = [
        ToolSummary(name=t.name, description=t.description, input_schema=t.input_schema, server=t.server)
        for t in pool.known_tools()
        if t.server not in names
    ]
    # Percent-encoded, so that any server name fits in a header and a comma only ever separates two.
    headers = {SERVERS_DOWN_HEADER: ", ".join(quote(name, safe="") for name in names)} if names else None
    return JSONResponse([tool.model_dump(mode="json") for tool in tools], headers=headers)


async def healthz(request: Request) -> Response:
    servers = request.state.pool.health()
    history = request.state.runs.history_health()
    replica = request.state.replica.health() if request.state.replica is not None else None
    healthy = all(s["state"] == "ready" for s in servers.values()) and (history is None or history["state"] == "ok")
    healthy = healthy and (replica is None or replica["database"] == "ok")
    status = "ok" if healthy else "degraded"
    identity = identity_of(request)
    if identity is None or not identity.has(Role.ADMIN):
        # Open to all, for load balancers and monitors: servers' errors, tool counts and paths are for admins.
        states = {name: {"state": s["state"]} for name, s in servers.items()}
        shown: dict[str, Any] = {"status": status, "servers": states}
        if replica is not None:
            shown["replica"] = {key: replica[key] for key in ("id", "leases", "database")}
        return JSONResponse(shown)
    health = Health.model_validate({"status": status, "servers": servers, "history": history, "replica": replica})
    # `replica` only where there are replicas: a single process's health reads as it always has.
    return JSONResponse(health.model_dump(mode="json", exclude={"replica"} if replica is None else None))


routes = [
    Route("/api/runs", list_runs, methods=["GET"], name="api_list_runs"),
    Route("/api/runs", post_run, methods=["POST"], name="api_post_run"),
    Route("/api/runs/{run_id}", get_run, methods=["GET"], name="api_get_run"),
    Route("/api/runs/{run_id}/events", get_run_events, methods=["GET"], name="api_run_events"),
    Route("/api/runs/{run_id}/cancel", cancel_run, methods=["POST"], name="api_cancel_run"),
    Route("/api/runs/{run_id}/rerun", rerun, methods=["POST"], name="api_rerun"),
    Route("/api/scenarios", list_scenarios, methods=["GET"], name="api_scenarios"),
    Route("/api/scenarios/{scenario_id}", get_scenario, methods=["GET"], name="api_scenario"),
    Route("/api/tools", list_tools, methods=["GET"], name="api_tools"),
    Route("/healthz", healthz, methods=["GET"], name="healthz"),
]
