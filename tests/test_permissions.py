"""Every route has a permission decision (web.permissions.ROUTE_ROLES), and answers as the table says: nobody
identified gets 401, a role below the route's gets 403, the route's role or above gets through. Plus what the
open routes show: /healthz in summary to all but admins, and the OpenAPI document's security scheme.

The app listens on 0.0.0.0 (so requests that name nobody are refused) behind a proxy on this machine that
names the user and their groups: `*=viewer,ops=operator,admins=admin`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import wait_until
from inprocess import InProcessApp, in_process
from runs import TERMINAL
from starlette.routing import Route

from web.access import Role
from web.app import create_app
from web.permissions import ROUTE_ROLES
from web.settings import Settings

NEWS = "news_source_discovery_v1"
NEWS_INPUT = {"url": "https://signal.example/culture/lighthouse-library-explainer"}
BEHIND_THE_PORTAL = {
    "host": "0.0.0.0",
    "auth_header": "X-Forwarded-User",
    "groups_header": "X-Forwarded-Groups",
    "trusted_proxies": "127.0.0.1",
    "role_map": "*=viewer,ops=operator,admins=admin",
}
# A user of each role, as the portal's proxy names them.
AS_ROLE = {
    Role.VIEWER: {"X-Forwarded-User": "vera"},
    Role.OPERATOR: {"X-Forwarded-User": "otto", "X-Forwarded-Groups": "staff, ops"},
    Role.ADMIN: {"X-Forwarded-User": "ada", "X-Forwarded-Groups": "admins"},
}
PARAM = re.compile(r"{(\w+)(?::\w+)?}")


@pytest.fixture(scope="module")
def portal_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessApp]:
    with in_process(tmp_path_factory.mktemp("permissions"), **BEHIND_THE_PORTAL) as app:
        app.wait_ready()
        yield app


@pytest.fixture(scope="module")
def finished_run(portal_app: InProcessApp) -> dict[str, Any]:
    body = {"scenario_id": NEWS, "input": NEWS_INPUT}
    response = portal_app.post("/api/runs", json=body, headers=AS_ROLE[Role.OPERATOR])
    assert response.status_code == 202, response.text
    path = f"/api/runs/{response.json()['run_id']}"

    def finished() -> bool:
        return portal_app.get(path, headers=AS_ROLE[Role.VIEWER]).json()["status"] in TERMINAL

    wait_until(finished, 20, "the run to finish")
    return portal_app.get(path, headers=AS_ROLE[Role.VIEWER]).json()


def guarded_requests(app: InProcessApp, run: dict[str, Any]) -> list[tuple[str, str, str, Role]]:
    """(route name, method, path, least role) for every method of every guarded route, its path filled in."""
    values = {
        "run_id": run["run_id"],
        "scenario_id": NEWS,
        "step_name": run["steps"][0]["node_id"],
        "request_id": "0" * 32,  # the guard answers before the handler looks for it
    }
    found = []
    for route in app.app.routes:
        role = ROUTE_ROLES[route.name]
        if not isinstance(route, Route) or role is None:
            continue
        unknown = set(PARAM.findall(route.path)) - set(values)
        assert not unknown, f"route {route.name}: give this test a value for {unknown}"
        path = PARAM.sub(lambda match: str(values[match[1]]), route.path)
        found += [(route.name, method, path, role) for method in sorted(route.methods or ()) if method != "HEAD"]
    return found


def send(app: InProcessApp, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    if method == "GET":
        return app.get(path, headers=headers)
    if path.startswith("/api/"):
        return app.client.request(method, path, json={}, headers=headers)
    # A page's form carries a real signed token, so it is the role, not the form, that decides.
    form = {"_csrf": app.app.state.form_tokens.issue()}
    return app.client.request(method, path, data=form, headers=headers)


# --- the table covers every route -----------------------------------------------------------------


def test_every_route_has_a_permission_decision() -> None:
    names = [route.name for route in create_app(Settings(history=False)).routes]

    assert [name for name in names if name not in ROUTE_ROLES] == []
    # And the table names no route that is gone.
    assert sorted(set(ROUTE_ROLES) - set(names)) == []


def test_a_route_without_a_decision_stops_the_app_from_being_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(ROUTE_ROLES, "api_tools")

    with pytest.raises(KeyError, match="'api_tools' has no entry in web.permissions.ROUTE_ROLES"):
        create_app(Settings(history=False))


# --- the table is what each route answers ---------------------------------------------------------


def test_nobody_identified_gets_401_on_every_guarded_route(
    portal_app: InProcessApp, finished_run: dict[str, Any]
) -> None:
    answers = {
        (name, method): send(portal_app, method, path, {})
        for name, method, path, _ in guarded_requests(portal_app, finished_run)
    }

    assert {key: response.status_code for key, response in answers.items() if response.status_code != 401} == {}
    for response in answers.values():
        assert response.headers["www-authenticate"] == 'Bearer realm="stepline"'
        assert "Sign-in required" in response.text


@pytest.mark.parametrize("role", list(Role), ids=str)
def test_each_role_gets_through_exactly_the_routes_the_table_gives_it(
    portal_app: InProcessApp, finished_run: dict[str, Any], role: Role
) -> None:
    refused: dict[str, httpx.Response] = {}
    let_through: dict[str, int] = {}
    for name, method, path, least in guarded_requests(portal_app, finished_run):
        response = send(portal_app, method, path, AS_ROLE[role])
        if role.includes(least):
            let_through[name] = response.status_code
        else:
            refused[name] = response

    assert {name: status for name, status in let_through.items() if status in (401, 403)} == {}
    assert {name: response.status_code for name, response in refused.items() if response.status_code != 403} == {}
    for name, response in refused.items():
        if response.headers["content-type"].startswith("application/json"):
            assert response.json()["detail"] == f"Refused: this needs the {ROUTE_ROLES[name]} role; yours is {role}"
    if role is Role.VIEWER:
        assert {"api_post_run", "api_cancel_run", "api_rerun", "scenario_run", "run_again"} <= set(refused)


def test_a_viewer_is_refused_on_a_page_with_a_page(portal_app: InProcessApp, finished_run: dict[str, Any]) -> None:
    form = {"_csrf": portal_app.app.state.form_tokens.issue()}
    headers = {**AS_ROLE[Role.VIEWER], "Accept": "text/html"}
    response = portal_app.post(f"/runs/{finished_run['run_id']}/again", data=form, headers=headers)

    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert "this needs the operator role; yours is viewer" in response.text


def test_open_routes_answer_without_credentials(portal_app: InProcessApp) -> None:
    open_routes = sorted(name for name, role in ROUTE_ROLES.items() if role is None)
    # /mcp authenticates itself, answering 401 as MCP's authorization spec asks (tests/test_mcp_access.py).
    assert open_routes == ["docs", "healthz", "mcp", "mcp_resource_metadata", "openapi", "static"]

    for path in ("/healthz", "/openapi.json", "/docs", "/static/app.css", "/.well-known/oauth-protected-resource/mcp"):
        assert portal_app.get(path).status_code == 200, path


# --- /healthz: open, details for admins only -------------------------------------------------------


def test_healthz_shows_anyone_but_an_admin_the_status_and_each_servers_state(portal_app: InProcessApp) -> None:
    for headers in ({}, AS_ROLE[Role.VIEWER], AS_ROLE[Role.OPERATOR]):
        response = portal_app.get("/healthz", headers=headers)
        assert response.status_code == 200
        assert response.json() == {"status": "ok", "servers": {"demo": {"state": "ready"}}}

    # Refused credentials on an open route: answered as to nobody.
    forged = portal_app.get("/healthz", headers={"Authorization": "Bearer stl_forged"})
    assert forged.json() == {"status": "ok", "servers": {"demo": {"state": "ready"}}}


def test_healthz_shows_an_admin_every_detail(portal_app: InProcessApp) -> None:
    health = portal_app.get("/healthz", headers=AS_ROLE[Role.ADMIN]).json()

    assert health["servers"]["demo"] == {"state": "ready", "transport": "stdio", "tools": 9, "error": None}
    assert health["history"]["state"] == "ok"
    assert health["history"]["path"].endswith("stepline.db")


def test_healthz_on_the_loopback_is_as_detailed_as_before(demo_app: InProcessApp) -> None:
    # Anonymous requests on a loopback-bound server are admin's.
    assert set(demo_app.get("/healthz").json()) == {"status", "servers", "history"}


# --- the OpenAPI document and /docs -----------------------------------------------------------------


@pytest.fixture(scope="module")
def openapi(portal_app: InProcessApp) -> dict[str, Any]:
    response = portal_app.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def test_openapi_declares_the_bearer_scheme_and_allows_anonymous_calls(openapi: dict[str, Any]) -> None:
    assert openapi["components"]["securitySchemes"]["bearerAuth"]["type"] == "http"
    assert openapi["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert openapi["security"] == [{"bearerAuth": []}, {}]


def test_openapi_documents_401_once_for_every_guarded_operation(
    portal_app: InProcessApp, openapi: dict[str, Any]
) -> None:
    unauthorized = openapi["components"]["responses"]["Unauthorized"]
    assert "WWW-Authenticate" in unauthorized["headers"]
    assert unauthorized["content"]["application/json"]["example"]["detail"].startswith("Sign-in required")

    for route in portal_app.app.routes:
        if not isinstance(route, Route) or route.path not in openapi["paths"]:
            continue
        for method in route.methods or ():
            if method == "HEAD":
                continue
            operation = openapi["paths"][route.path][method.lower()]
            if ROUTE_ROLES[route.name] is None:
                assert "401" not in operation["responses"] and operation["security"] == [], route.name
            else:
                assert operation["responses"]["401"] == {"$ref": "#/components/responses/Unauthorized"}, route.name
                assert "403" in operation["responses"], route.name


def test_docs_keep_a_pasted_token_across_reloads(portal_app: InProcessApp) -> None:
    page = portal_app.get("/docs")
    script = re.search(r'src="([^"]*docs\.js)"', page.text)

    assert page.status_code == 200 and script is not None
    assert "persistAuthorization: true" in portal_app.get(script[1]).text

