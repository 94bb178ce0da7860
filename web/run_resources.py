"""Runs as MCP resources: `stepline://runs/{run_id}` reads a run's JSON snapshot, and recent runs are listed.

Who asks sees only the runs they may see (web.runs.RunService judges); a run they may not see reads as
unknown, as it does over the API.
"""

from __future__ import annotations

import json
import re

import mcp_types as types
from mcp.shared.exceptions import MCPError

from web.access import Identity
from web.database import StoreError
from web.runs import RunService, UnknownRun
from web.schemas import ScenarioRunResponse

RUN_URI_TEMPLATE = "stepline://runs/{run_id}"
# Run ids are UUIDs; anything much longer is not one, and is not looked up.
RUN_URI = re.compile(r"stepline://runs/([A-Za-z0-9_-]{1,64})")
JSON = "application/json"


async def run_resources(service: RunService, by: Identity | None, *, limit: int = 50) -> list[types.Resource]:
    """The most recent runs `by` may see, newest first (`limit` of them at the most)."""
    try:
        rows = (await service.runs_page(by, limit=limit)).runs
    except StoreError as exc:
        raise MCPError(types.INTERNAL_ERROR, f"The run history cannot be read: {exc}") from None
    resources = []
    for row in rows:
        scenario = service.catalog.get(row.scenario_id)
        title = scenario.name if scenario is not None else row.scenario_id
        resources.append(
            types.Resource(
                name=f"run {row.run_id[:8]} of {row.scenario_id}",
                title=f"{title}: run {row.run_id[:8]} ({row.status})",
                uri=RUN_URI_TEMPLATE.format(run_id=row.run_id),
                mime_type=JSON,
                description=f"{row.status}, started {row.started_at or row.created_at}",
            )
        )
    return resources


def resource_templates() -> list[types.ResourceTemplate]:
    return [
        types.ResourceTemplate(
            name="run",
            title="A Stepline run",
            uri_template=RUN_URI_TEMPLATE,
            mime_type=JSON,
            description="A run's JSON snapshot, as GET /api/runs/{run_id} gives it: status, steps, output",
        )
    ]


async def read_run(service: RunService, by: Identity | None, uri: str) -> types.ReadResourceResult:
    """The run's snapshot; MCPError (invalid params, naming the uri) for a uri that names no run `by` may see."""
    found = RUN_URI.fullmatch(uri)
    if found is None:
        raise MCPError(
            types.INVALID_PARAMS,
            f"Unknown resource: {uri[:200]} (a run's uri is {RUN_URI_TEMPLATE})",
            {"uri": uri[:200]},
        )
    try:
        record = await service.run(found.group(1), by)
    except UnknownRun:
        raise MCPError(types.INVALID_PARAMS, f"Unknown resource: {uri}: no such run", {"uri": uri}) from None
    except StoreError as exc:
        raise MCPError(types.INTERNAL_ERROR, f"The run history cannot be read: {exc}") from None
    snapshot = ScenarioRunResponse.of(record.state).model_dump(mode="json")
    # As the API writes it (starlette's JSONResponse).
    text = json.dumps(snapshot, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return types.ReadResourceResult(contents=[types.TextResourceContents(uri=uri, mime_type=JSON, text=text)])
