"""The role each route needs, in one table, and the guard that applies it to every route.

A route with no entry is a mistake the tests catch (tests/test_permissions.py): each new route must
say who may use it. `None`: open to anyone, credentials or not (health, the API's description, assets).
Per-scenario permissions (web.access.may_view / may_run) are judged by the handlers, which know the scenario.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from web.access import Identity, Role
from web.auth import TOKENS_RETRY_AFTER_SECONDS, Authenticator, AuthRefused

ROUTE_ROLES: dict[str, Role | None] = {
    # The JSON API
    "api_list_runs": Role.VIEWER,
    "api_post_run": Role.OPERATOR,
    "api_get_run": Role.VIEWER,
    "api_run_events": Role.VIEWER,
    "api_cancel_run": Role.OPERATOR,
    "api_rerun": Role.OPERATOR,
    "api_answer_request": Role.OPERATOR,  # answering is running (and the scenario's run list is judged too)
    "api_draft_reply": Role.OPERATOR,  # asks the configured model, at the operator's cost
    "api_resume_run": Role.OPERATOR,  # runs steps again (and the scenario's run list is judged too)
    "api_scenarios": Role.VIEWER,
    "api_scenario": Role.VIEWER,
    "api_tools": Role.VIEWER,
    "api_step_output": Role.VIEWER,
    "api_scenario_checks": Role.VIEWER,
    "api_scenario_preview": Role.VIEWER,  # computes, calls no tool, records nothing
    "healthz": None,  # details for admins only (the handler decides)
    # MCP clients: the endpoint answers 401 itself, as MCP's authorization spec asks (web.mcp_endpoint), and
    # lists and runs only the scenarios the caller may run.
    "mcp": None,
    "mcp_resource_metadata": None,
    "openapi": None,
    "docs": None,
    # The pages
    "index": Role.VIEWER,
    "scenario": Role.VIEWER,
    "scenario_run": Role.OPERATOR,
    "scenario_preview": Role.VIEWER,
    "runs": Role.VIEWER,
    "run": Role.VIEWER,
    "run_again": Role.OPERATOR,
    "run_cancel": Role.OPERATOR,
    "run_stream": Role.VIEWER,
    "run_answer": Role.OPERATOR,  # and the scenario's run list (the handler judges it)
    "run_draft": Role.OPERATOR,  # calls the configured model; records a draft, not an answer
    "tools": Role.VIEWER,
    "static": None,
}

SIGN_IN = (
    "Sign-in required: send 'Authorization: Bearer <token>' (stepline token create), "
    "or come through the portal that signs you in"
)


def identity_of(request: Request) -> Identity | None:
    """The identity the guard found for this request (None on open routes with no credentials)."""
    return getattr(request.state, "identity", None)


def guard_routes(routes: list[BaseRoute]) -> None:
    """Put every route behind the guard its table entry says; KeyError naming a route with none."""
    for route in routes:
        name = getattr(route, "name", None)
        if name not in ROUTE_ROLES:
            raise KeyError(f"route {name!r} has no entry in web.permissions.ROUTE_ROLES: say who may use it")
        # The route lists are the modules' own, shared by every app a process builds: guarded once.
        if isinstance(route, Route) and not isinstance(route.app, Guard):
            route.app = Guard(route.app, ROUTE_ROLES[name])


class Guard:
    """Identifies each request of one route and lets it through if its role suffices; 401/403 otherwise.

    Inside the routing, so its refusals are answered like any other error (a page, or JSON `{"detail"}`).
    """

    def __init__(self, app: ASGIApp, role: Role | None) -> None:
        self.app = app
        self.role = role

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        authenticator: Authenticator = request.app.state.authenticator
        try:
            identity = await authenticator.identify(request)
        except AuthRefused as refused:
            authenticator.log_refusal(request, refused)
            if self.role is not None:
                raise HTTPException(refused.status, str(refused), headers=_challenge(refused.status)) from None
            identity = None  # an open route answers anyway, as to nobody
        scope.setdefault("state", {})["identity"] = identity
        if self.role is not None:
            if identity is None:
                raise HTTPException(401, SIGN_IN, headers=_challenge(401))
            if not identity.has(self.role):
                raise HTTPException(
                    403, f"Refused: this needs the {self.role.value} role; yours is {identity.role.value}"
                )
        await self.app(scope, receive, send)


def _challenge(status: int) -> dict[str, str] | None:
    if status == 503:  # the tokens could not be checked: nothing wrong with the request
        return {"Retry-After": str(TOKENS_RETRY_AFTER_SECONDS)}
    return {"WWW-Authenticate": 'Bearer realm="stepline"'} if status == 401 else None
