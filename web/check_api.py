"""GET /api/scenarios/{scenario_id}/checks: the scenario checked against the live MCP tools."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from web.checks import CheckItem, ScenarioChecks, scenario_checks
from web.openapi_parts import error_response, json_response, path_param
from web.permissions import identity_of


async def get_checks(request: Request) -> Response:
    scenario_id = request.path_params["scenario_id"]
    scenario = request.state.run_service.scenario(scenario_id, identity_of(request))
    checks = await scenario_checks(scenario, request.state.pool)
    report = ScenarioChecks.of(f"{scenario_id}.json", checks, scenario_id)
    return JSONResponse(report.model_dump(mode="json"))


routes = [Route("/api/scenarios/{scenario_id}/checks", get_checks, methods=["GET"], name="api_scenario_checks")]

PATHS: dict[str, dict[str, Any]] = {
    "/api/scenarios/{scenario_id}/checks": {
        "get": {
            "summary": "Check a scenario against the live tools",
            "description": "What `stepline validate` says of this scenario, without running it: each step's tool "
            "exists on one server and needs no MCP feature Stepline lacks (tasks); every argument the tool "
            "requires is given; literal arguments fit the tool's input schema; arguments it does not declare "
            "(an error when it allows no others, else a warning); `input.X` reads declared in `input_schema`; "
            "`steps.X.output.f` reads declared in the output schema of X's tool, when it has one (an error when "
            "that schema allows no other field, else a warning); a required argument bound to a run input a run "
            "may leave out (a warning). Waits for no MCP server longer than its first connection: the steps of a "
            "server that is down get a warning saying they were not checked. `valid` is false when any "
            "problem is an error.",
            "parameters": [path_param("scenario_id", "The scenario's id.", "outlet_story_origins_v2")],
            "responses": {
                "200": json_response("The problems, errors and warnings (none: an empty list)", ScenarioChecks),
                "404": error_response(
                    "Unknown scenario_id, or a scenario you may not see", "Unknown scenario_id: outlet_story_origins_v9"
                ),
            },
        }
    }
}
MODELS: list[type[BaseModel]] = [CheckItem, ScenarioChecks]
