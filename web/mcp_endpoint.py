"""`/mcp`: the scenarios' MCP server over streamable HTTP, behind the API's bearer tokens.

Stepline is an OAuth resource server in MCP's authorization terms: a request without credentials is
answered 401 with `WWW-Authenticate: Bearer resource_metadata="…"` pointing at its protected-resource
metadata (RFC 9728, at `/.well-known/oauth-protected-resource/mcp` under the root path). Tokens are the
API's own (`stepline token create`); a portal's proxy header and anonymous access work as on every route.
The MCP session manager itself is the SDK's, started with the app (web.app).
"""

from __future__ import annotations

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from web.access import Identity, Role
from web.auth import TOKENS_RETRY_AFTER_SECONDS, Authenticator, AuthRefused
from web.mcp_serving import ScenarioServer
from web.settings import Settings

METADATA_PATH = "/.well-known/oauth-protected-resource/mcp"
# How long a session may sit idle before the SDK closes it (its calls' runs are then cancelled).
SESSION_IDLE_SECONDS = 30 * 60


def session_manager(mcp: ScenarioServer, settings: Settings) -> StreamableHTTPSessionManager:
    """The SDK's streamable HTTP sessions for `mcp` (run it with the app: `async with manager.run()`)."""
    return StreamableHTTPSessionManager(
        app=mcp.server,
        max_request_body_size=settings.max_body_bytes,
        session_idle_timeout=SESSION_IDLE_SECONDS,
        # Each session holds a little memory; a crowd of them is bounded below the connection cap.
        max_sessions=settings.max_connections,
    )


def _base(request: Request) -> str:
    """Where clients reach Stepline: its public URL when set (a proxy in front may not say), else as asked."""
    settings: Settings = request.app.state.settings
    return (settings.public_url or str(request.base_url)).rstrip("/")


def metadata_url(request: Request) -> str:
    return _base(request) + METADATA_PATH


def _refusal(request: Request, status: int, description: str, error: str | None = None) -> Response:
    challenge = f'Bearer resource_metadata="{metadata_url(request)}"'
    if error is not None:
        challenge += f', error="{error}"'
    body = {"error": error or ("unauthorized" if status == 401 else "forbidden"), "error_description": description}
    headers = {"WWW-Authenticate": challenge} if status == 401 else None
    if status == 503:
        body["error"] = "temporarily_unavailable"
        headers = {"Retry-After": str(TOKENS_RETRY_AFTER_SECONDS)}
    return JSONResponse(body, status_code=status, headers=headers)


class McpEndpoint:
    """The `/mcp` route: who is calling, then the SDK's session manager (the app's `state.mcp_sessions`)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = await self._refused(request)
        if response is not None:
            await response(scope, receive, send)
            return
        manager: StreamableHTTPSessionManager | None = getattr(request.app.state, "mcp_sessions", None)
        if manager is None:
            await JSONResponse({"detail": "Not started yet"}, status_code=503, headers={"Retry-After": "1"})(
                scope, receive, send
            )
            return
        await manager.handle_request(scope, receive, send)

    async def _refused(self, request: Request) -> Response | None:
        authenticator: Authenticator = request.app.state.authenticator
        try:
            identity = await authenticator.identify(request)
        except AuthRefused as refused:
            authenticator.log_refusal(request, refused)
            error = "invalid_token" if refused.status == 401 else None
            return _refusal(request, refused.status, str(refused), error)
        if identity is None:
            return _refusal(
                request, 401, "Sign-in required: send 'Authorization: Bearer <token>' (stepline token create)"
            )
        if not identity.has(Role.VIEWER):
            return _refusal(request, 403, f"Refused: this needs the viewer role; yours is {identity.role.value}")
        request.scope.setdefault("state", {})["identity"] = identity
        request.scope["user"] = session_owner(identity)
        return None


def session_owner(identity: Identity) -> AuthenticatedUser:
    """`identity` as the SDK's session manager knows a principal: it serves a session only to the one that opened
    it, so another caller who learnt a session's id can neither read its questions nor act in it."""
    principal = f"{identity.source.value}:{identity.name}"
    # The manager compares principals only; the secret itself is never kept.
    return AuthenticatedUser(AccessToken(token="", client_id=principal, scopes=[], subject=identity.name))


async def resource_metadata(request: Request) -> Response:
    """RFC 9728 protected-resource metadata: `/mcp` takes bearer tokens in the Authorization header."""
    base = _base(request)
    return JSONResponse(
        {
            "resource": base + "/mcp",
            "resource_name": "Stepline",
            "bearer_methods_supported": ["header"],
            "authorization_servers": [],
            "resource_documentation": base + "/docs",
        }
    )


routes = [
    Route("/mcp", McpEndpoint(), methods=["GET", "POST", "DELETE"], name="mcp"),
    Route(METADATA_PATH, resource_metadata, methods=["GET"], name="mcp_resource_metadata"),
]
