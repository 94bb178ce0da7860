"""POST /api/scenarios/{scenario_id}/preview: what each step would receive, without calling any tool."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from web.access import Identity
from web.api import RequestInvalid, model_response, read_json
from web.openapi_parts import error_responses, json_response, path_param, ref
from web.permissions import identity_of
from web.preview import DEFAULT_ITEMS_SHOWN, Preview, PreviewStatus, RunOfAnotherScenario, preview_scenario
from web.registry import RunRecord
from web.runs import RunService
from web.scenarios import Scenario
from web.schemas import RUN_ID, ValidationErrorResponse, first_example

# The most items shown per for_each step that a caller may ask for: more is a listing, not a preview.
MAX_ITEMS_SHOWN = 1000
EXAMPLE_SCENARIO = "story_origin_check_v2"
EXAMPLE_URL = "https://signal.example/culture/lighthouse-library-explainer"
EXAMPLE_EARLIEST = "https://notes.example.net/2024/03/05/lighthouse-cottage-reading-room"


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


class PreviewRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"input": {"url": EXAMPLE_URL}, "outputs_from_run": RUN_ID}, {"input": {"url": EXAMPLE_URL}}]
        },
    )

    input: dict[str, Any] = Field(
        default_factory=dict, description="The run input, checked and completed with its defaults as a run's is."
    )
    outputs_from_run: str | None = Field(
        None,
        description="A run of this scenario whose recorded step outputs stand in for the tools' answers; "
        "without one, only the steps that read no other step are resolved.",
    )
    max_items: int = Field(
        DEFAULT_ITEMS_SHOWN, ge=0, le=MAX_ITEMS_SHOWN, description="Items shown per for_each step (all are checked)."
    )


class ItemPreviewModel(BaseModel):
    model_config = _examples(
        {"item_index": 0, "input": {"url": EXAMPLE_URL}, "omitted": [], "error": None},
    )

    item_index: int
    input: dict[str, Any] | None = Field(description="The arguments this item's call would get.")
    omitted: list[str] = Field(description="Arguments left out: their expression is undefined.")
    error: str | None = Field(description="Why this item would fail before its call; null when it would not.")


class StepPreviewModel(BaseModel):
    model_config = _examples(
        {
            "index": 4,
            "name": "trace",
            "tool": "trace_citation_chain",
            "server": None,
            "status": "ready",
            "message": "would call trace_citation_chain",
            "when_expression": "{{ steps.earliest.output.earliest[0].url != steps.article.output.url }}",
            "when": True,
            "for_each_expression": None,
            "for_each": None,
            "item_count": None,
            "input": {"from_url": EXAMPLE_URL, "to_url": EXAMPLE_EARLIEST},
            "omitted": [],
            "unresolved": [],
            "items": None,
            "needs": [],
            "error": None,
        },
        {
            "index": 1,
            "name": "related",
            "tool": "search_news_sources",
            "server": None,
            "status": "waiting",
            "message": "needs steps.article, which has no output yet",
            "when_expression": None,
            "when": None,
            "for_each_expression": None,
            "for_each": None,
            "item_count": None,
            "input": {},
            "omitted": [],
            "unresolved": ["url"],
            "items": None,
            "needs": ["article"],
            "error": None,
        },
    )

    index: int = Field(description="Its position in the scenario's steps.")
    name: str
    tool: str | None = Field(description="The tool it would call; null for an approval step, which asks a person.")
    server: str | None
    status: PreviewStatus = Field(
        description="`ready`: the tool would be called with `input` (or each item's); `skipped`: its condition is "
        "false; `waiting`: it reads steps with no output to take (`needs`); `error`: it would fail before its call."
    )
    message: str = Field(description="What would happen, in words: the call, the condition, what it needs, the error.")
    when_expression: str | None = Field(description="Its condition as written; null: it always runs.")
    when: Any = Field(description="The condition's value, once it could be evaluated.")
    for_each_expression: str | None = Field(description="Its for_each as written; null: one call.")
    for_each: list[Any] | None = Field(description="The first `max_items` items, once the list could be evaluated.")
    item_count: int | None = Field(description="for_each: how many items in all.")
    input: dict[str, Any] | None = Field(
        description="The arguments it would be called with (those it could resolve when it waits); null for a "
        "for_each step, see `items`."
    )
    omitted: list[str] = Field(description="Arguments left out: their expression is undefined.")
    unresolved: list[str] = Field(description="Arguments that read a step with no output to take.")
    items: list[ItemPreviewModel] | None = Field(description="for_each: the first `max_items` items' arguments.")
    needs: list[str] = Field(description="The steps it reads that have no output to take.")
    error: str | None = Field(description="Why it would fail before its call (every argument's problem).")


class PreviewResponse(BaseModel):
    model_config = _examples(
        {
            "scenario_id": EXAMPLE_SCENARIO,
            "input": {"url": EXAMPLE_URL},
            "outputs_from_run": RUN_ID,
            "steps": [first_example(StepPreviewModel)],
        }
    )

    scenario_id: str
    input: dict[str, Any] = Field(description="The input as a run would get it: checked, its defaults applied.")
    outputs_from_run: str | None = Field(description="The run whose recorded outputs were taken, if any.")
    steps: list[StepPreviewModel] = Field(description="Every step, in the scenario's order.")

    @classmethod
    def of(cls, preview: Preview) -> PreviewResponse:
        return cls.model_validate(preview, from_attributes=True)


async def source_run(
    service: RunService, scenario: Scenario, run_id: str | None, by: Identity | None
) -> RunRecord | None:
    """The run to take outputs from: UnknownRun if there is none `by` may see, RunOfAnotherScenario if it is not
    this scenario's."""
    if run_id is None:
        return None
    record = await service.run(run_id, by)
    if record.state.scenario_id != scenario.scenario_id:
        raise RunOfAnotherScenario(run_id, record.state.scenario_id, scenario.scenario_id)
    return record


def preview_of(
    request: Request,
    scenario: Scenario,
    run_input: dict[str, Any],
    source: RunRecord | None,
    max_items: int = DEFAULT_ITEMS_SHOWN,
) -> Preview:
    """The preview, with the tools the servers have listed so far: none is asked, and no tool is called."""
    return preview_scenario(
        scenario,
        run_input,
        source.state if source is not None else None,
        tools=request.state.pool.known_tools(),
        max_items=max_items,
        max_for_each_items=request.app.state.settings.max_for_each_items,
    )


async def post_preview(request: Request) -> Response:
    service: RunService = request.state.run_service
    by = identity_of(request)
    scenario = service.scenario(request.path_params["scenario_id"], by)
    body = await read_json(request, PreviewRequest)
    run_input = service.check_input(scenario, body.input)
    try:
        source = await source_run(service, scenario, body.outputs_from_run, by)
    except RunOfAnotherScenario as exc:
        raise RequestInvalid([{"loc": ["body", "outputs_from_run"], "msg": str(exc), "type": "value_error"}]) from None
    preview = preview_of(request, scenario, run_input, source, body.max_items)
    return model_response(PreviewResponse.of(preview))


routes = [
    Route("/api/scenarios/{scenario_id}/preview", post_preview, methods=["POST"], name="api_scenario_preview"),
]

OTHER_SCENARIO = (
    f"Run {RUN_ID} is a run of scenario 'news_source_discovery_v1', not of '{EXAMPLE_SCENARIO}': "
    "take outputs from a run of the scenario previewed"
)
PATHS: dict[str, dict[str, Any]] = {
    "/api/scenarios/{scenario_id}/preview": {
        "post": {
            "summary": "Preview a run without calling any tool",
            "description": "Each step's condition, for_each items and resolved arguments, computed from the input "
            "(checked and completed with `input_schema` defaults, as `POST /api/runs` does) and, optionally, the "
            "outputs an earlier run of the scenario recorded, which stand in for the tools' answers. No tool is "
            "called and nothing is recorded. A step that reads a step with no output to take is `waiting` and "
            "names it; an expression that fails or a required argument left undefined makes the step `error`, "
            "with the message a run would give. `run.id` reads `preview`.",
            "parameters": [path_param("scenario_id", "The scenario to preview.", EXAMPLE_SCENARIO)],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": ref(PreviewRequest), "example": first_example(PreviewRequest)}
                },
            },
            "responses": {
                "200": json_response("Every step previewed", PreviewResponse),
                "404": error_responses(
                    "The scenario, or the run to take outputs from, does not exist or is one you may not see",
                    unknown_scenario="Unknown scenario_id: story_origin_check_v9",
                    unknown_run=f"Unknown run_id: {RUN_ID}",
                ),
                "413": error_responses(
                    "The body is larger than the limit (`STEPLINE_MAX_BODY_BYTES`, 1 MiB by default)",
                    too_large="Request body too large: the limit is 1,048,576 bytes, and this one has 104,857,600 "
                    "bytes.",
                ),
                "415": error_responses(
                    "The body is not sent as JSON",
                    not_json="Send the body as JSON, with Content-Type: application/json (Content-Type text/plain "
                    "was given)",
                ),
                "422": {
                    "description": "The body is not strict JSON or does not validate, the input does not match the "
                    "scenario's `input_schema`, or `outputs_from_run` is a run of another scenario",
                    "content": {
                        "application/json": {
                            "schema": ref(ValidationErrorResponse),
                            "examples": {
                                "input does not match": {"value": first_example(ValidationErrorResponse)},
                                "a run of another scenario": {
                                    "value": {
                                        "detail": [
                                            {
                                                "loc": ["body", "outputs_from_run"],
                                                "msg": OTHER_SCENARIO,
                                                "type": "value_error",
                                            }
                                        ]
                                    }
                                },
                            },
                        }
                    },
                },
            },
        }
    }
}
MODELS: list[type[BaseModel]] = [PreviewRequest, ItemPreviewModel, StepPreviewModel, PreviewResponse]
