"""Runs as MCP resources: recent runs listed, each readable as `stepline://runs/{run_id}`, for whoever may see it."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import mcp_types as types
import pytest
from inprocess import InProcessApp
from mcp.shared.exceptions import MCPError
from runs import run_to_end

from web.access import Identity, IdentitySource, Role
from web.run_resources import RUN_URI_TEMPLATE, read_run, resource_templates, run_resources
from web.scenario_tools import run_uri

T = TypeVar("T")
DOMAIN = {"domain": "daily.example.com"}
# A viewer whose token is limited to one scenario: the runs of the others are not theirs to see.
PROFILE_ONLY = Identity("viewer", IdentitySource.TOKEN, Role.VIEWER, scenarios=frozenset({"outlet_profile_v1"}))


def wire(model: Any) -> dict[str, Any]:
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)


def on_app(app: InProcessApp, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """`make()` awaited on the app's loop, where its registry and history are used."""
    return app.call(make())


def test_recent_runs_are_listed_newest_first_for_whoever_may_see_them(make_app: Callable[..., InProcessApp]) -> None:
    app = make_app()
    service = app.state["run_service"]
    first = run_to_end(app.client, "outlet_profile_v1", DOMAIN)
    second = run_to_end(app.client, "outlet_brief_approval_v2", {"domain": "nowhere.example.com"})
    third = run_to_end(app.client, "outlet_profile_v1", {"domain": "nowhere.example.com"})

    listed = [wire(r) for r in on_app(app, lambda: run_resources(service, None))]
    assert [r["uri"] for r in listed] == [run_uri(run["run_id"]) for run in (third, second, first)]
    newest = listed[0]
    assert newest == {
        "name": f"run {third['run_id'][:8]} of outlet_profile_v1",
        "title": f"Outlet Profile V1: run {third['run_id'][:8]} (failed)",
        "uri": f"stepline://runs/{third['run_id']}",
        "mimeType": "application/json",
        "description": f"failed, started {third['started_at']}",
    }
    assert listed[2]["description"] == f"success, started {first['started_at']}"

    assert len(on_app(app, lambda: run_resources(service, None, limit=2))) == 2
    mine = on_app(app, lambda: run_resources(service, PROFILE_ONLY))
    assert [r.uri for r in mine] == [run_uri(third["run_id"]), run_uri(first["run_id"])]


def test_a_run_reads_as_its_api_snapshot(demo_app: InProcessApp) -> None:
    run = run_to_end(demo_app.client, "outlet_profile_v1", DOMAIN)
    service = demo_app.state["run_service"]
    uri = run_uri(run["run_id"])
    result = wire(on_app(demo_app, lambda: read_run(service, None, uri)))
    [contents] = result["contents"]
    assert (contents["uri"], contents["mimeType"]) == (uri, "application/json")
    assert json.loads(contents["text"]) == demo_app.get(f"/api/runs/{run['run_id']}").json()
    # The SDK's own model reads it back.
    assert types.ReadResourceResult.model_validate(result).contents[0].uri == uri


@pytest.mark.parametrize(
    "uri",
    [
        "stepline://runs/00000000-0000-0000-0000-000000000000",
        "stepline://runs/",
        "stepline://runs/a/b",
        "stepline://scenarios/outlet_profile_v1",
        "https://example.com/runs/x",
    ],
)
def test_a_uri_naming_no_run_is_an_error_naming_it(demo_app: InProcessApp, uri: str) -> None:
    service = demo_app.state["run_service"]
    with pytest.raises(MCPError) as caught:
        on_app(demo_app, lambda: read_run(service, None, uri))
    assert caught.value.code == types.INVALID_PARAMS
    assert uri in caught.value.message


def test_a_run_its_reader_may_not_see_is_unknown_to_them(demo_app: InProcessApp) -> None:
    run = run_to_end(demo_app.client, "outlet_brief_approval_v2", {"domain": "nowhere.example.com"})
    service = demo_app.state["run_service"]
    uri = run_uri(run["run_id"])
    with pytest.raises(MCPError) as caught:
        on_app(demo_app, lambda: read_run(service, PROFILE_ONLY, uri))
    assert caught.value.code == types.INVALID_PARAMS
    assert caught.value.message == f"Unknown resource: {uri}: no such run"
    assert on_app(demo_app, lambda: read_run(service, None, uri)).contents


def test_the_run_template_is_offered() -> None:
    [template] = [wire(t) for t in resource_templates()]
    assert template["uriTemplate"] == RUN_URI_TEMPLATE == "stepline://runs/{run_id}"
    assert template["mimeType"] == "application/json"
