"""GET /api/runs/{run_id}/steps/{step_name}/output: one step's whole output, for pages that show only its start."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, RootModel
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from web.api import require_run
from web.events import TERMINAL_STEP_STATUSES
from web.json_limits import dumps
from web.openapi_parts import error_response, error_responses, json_response, path_param
from web.run_state import RunState
from web.schemas import RUN_ID


class StepOutput(RootModel[Any]):
    """A step's output, whatever its JSON type, exactly as the run recorded it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"sources": [{"url": "https://daily.example.com/2026/03/harbor-bridge-closure",
                              "outlet": "Daily Example"}]},
                "Port Alder's lighthouse keepers' cottage reopens as a reading room on Saturday…",
            ]
        }
    )


async def get_step_output(request: Request) -> Response:
    state = (await require_run(request)).state
    name = request.path_params["step_name"]
    step = state.steps.get(name)
    if step is None:
        if name in _planned(state):
            raise HTTPException(409, f"Step '{name}' of run {state.run_id} has not ended (pending)")
        raise HTTPException(404, f"Run {state.run_id} has no step '{name}'{_known(state)}")
    if step.status not in TERMINAL_STEP_STATUSES:
        raise HTTPException(409, f"Step '{name}' of run {state.run_id} has not ended ({step.status})")
    return Response(dumps(step.output), media_type="application/json")


def _planned(state: RunState) -> list[str]:
    return [planned["name"] for planned in state.plan or []]


def _known(state: RunState) -> str:
    names = list(dict.fromkeys([*_planned(state), *state.steps]))
    return f" (steps: {', '.join(names)})" if names else ""


routes = [
    Route("/api/runs/{run_id}/steps/{step_name}/output", get_step_output, methods=["GET"], name="api_step_output"),
]

STEP_NAME = "search_news_sources"
PATHS: dict[str, dict[str, Any]] = {
    "/api/runs/{run_id}/steps/{step_name}/output": {
        "get": {
            "summary": "Get a step's whole output",
            "description": "The step's output as JSON, whole: the run page shows only the first "
            "`STEPLINE_PAGE_OUTPUT_BYTES` of it (64 KiB by default) and links here. It is the tool result's "
            "structured content, else its text parsed as JSON, else its text (a JSON string), else its list of "
            "content blocks; null for a step that was skipped or failed. An output larger than "
            '`STEPLINE_MAX_OUTPUT_BYTES` was recorded truncated: `{"truncated": true, "bytes": ..., "preview": ...}`. '
            "Runs reloaded from the history answer alike.",
            "parameters": [
                path_param("run_id", "The run's id, as POST /api/runs returned it.", RUN_ID),
                path_param("step_name", "The step's name, as the scenario writes it.", STEP_NAME),
            ],
            "responses": {
                "200": json_response("The step's output", StepOutput),
                "404": error_responses(
                    "Unknown run (or a run of a scenario you may not see), or the run has no such step",
                    unknown_run=f"Unknown run_id: {RUN_ID}",
                    unknown_step=f"Run {RUN_ID} has no step 'serach' (steps: fetch_article, {STEP_NAME}, "
                    "pick_earliest, trace_citations)",
                ),
                "409": error_response(
                    "The step has not ended yet", f"Step '{STEP_NAME}' of run {RUN_ID} has not ended (running)"
                ),
            },
        }
    }
}
MODELS: list[type[BaseModel]] = [StepOutput]

