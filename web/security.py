"""Browser-facing safety: the hosts served (see web/hosts.py), response headers, and refusing forged
cross-site form posts.

Forgery is stopped twice. The middleware refuses any state-changing request a browser sends from
another site (`Sec-Fetch-Site`, else `Origin`), unless that origin is one of the configured frame
ancestors. Page forms also carry a signed token, checked by the handler, for browsers that send
neither header. Cookies cannot do this job: the pages run inside other sites' iframes, often over
plain http, where a `SameSite=None` cookie (which must be `Secure`) is never sent back.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from web.hosts import DEFAULT_PORTS, HostPolicy, believe_forwarded_headers
from web.settings import Settings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
MCP_PATH = "/mcp"
TOKEN_FIELD = "_csrf"
# A form may sit open in a tab for a working day or two before it is sent.
TOKEN_MAX_AGE_SECONDS = 48 * 3600


def content_security_policy(frame_ancestors: str) -> str:
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            # A tool's images and audio are drawn from data: URLs the page writes from checked bytes.
            "img-src 'self' data:",
            "media-src data:",
            "connect-src 'self'",
            "font-src 'self'",
            "form-action 'self'",
            "base-uri 'none'",
            f"frame-ancestors {frame_ancestors}",
        ]
    )


class SecurityMiddleware:
    """Refuses unknown hosts and cross-site state changes; adds the security headers to every response."""

    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.hosts = HostPolicy.from_settings(settings)
        frame_ancestors = settings.frame_ancestors
        # The portal that frames the pages may also post to them.
        self.allowed_sources = frame_ancestors.split()
        common = {
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
        }
        # Older browsers ignore frame-ancestors; give them the nearest equivalent when there is one.
        legacy = {"'self'": "SAMEORIGIN", "'none'": "DENY"}.get(frame_ancestors.strip())
        if legacy:
            common["X-Frame-Options"] = legacy
        self.headers = {**common, "Content-Security-Policy": content_security_policy(frame_ancestors)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers.setdefault(name, value)
            await send(message)

        await (self.refusal(scope) or self.app)(scope, receive, send_with_headers)

    def refusal(self, scope: Scope) -> Response | None:
        """The answer to a request for a host we do not serve, or a cross-site state change; None if fine."""
        headers = Headers(scope=scope)
        hosts: list[str | None] = [headers.get("host")]
        client = scope.get("client")
        if client and client[0] in self.hosts.proxies:
            hosts += believe_forwarded_headers(scope, headers, self.hosts.proxies)
        unknown_host = self.hosts.refusal(hosts)
        if unknown_host:
            return PlainTextResponse(unknown_host, status_code=400)
        named = [host for host in hosts if host]
        # /mcp's event stream is read by MCP clients, never by our pages: another site's page gets none of it.
        changes_state = scope["method"] not in SAFE_METHODS or route_path(scope) == MCP_PATH
        if changes_state and not is_same_site_request(headers, self.allowed_sources, named):
            return PlainTextResponse(
                "Refused: this request came from another site. Submit the form from Stepline's own page.",
                status_code=403,
            )
        return None


def route_path(scope: Scope) -> str:
    """The path the app routes on: uvicorn puts the proxy's prefix (root_path) in front of it."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    return (path[len(root) :] or "/") if root and path.startswith(root) else path


def is_same_site_request(headers: Headers, allowed_sources: list[str], hosts: Collection[str] | None = None) -> bool:
    """Whether a request may change state: sent by our own pages, by an allowed origin, or not by a browser.

    `hosts` are the names the request was sent to (default: its Host header).
    """
    if hosts is None:
        hosts = [headers["host"]] if "host" in headers else []
    site = headers.get("sec-fetch-site")
    origin = headers.get("origin")
    if site in ("same-origin", "none"):
        return True
    if site is None:
        # No fetch metadata: a non-browser client, or an old browser that still sends Origin.
        if origin is None:
            return True
        return origin_matches_host(origin, hosts) or origin_allowed(origin, allowed_sources)
    return origin is not None and origin_allowed(origin, allowed_sources)


def origin_matches_host(origin: str, hosts: Collection[str]) -> bool:
    netloc = urlsplit(origin).netloc.lower()
    return bool(netloc) and netloc in {host.lower() for host in hosts}


def origin_allowed(origin: str, sources: list[str]) -> bool:
    """Whether `origin` is one of the CSP host sources (`https://portal.example`, `*.example.com`)."""
    parts = urlsplit(origin)
    if not parts.scheme or not parts.hostname:
        return False
    default_port = DEFAULT_PORTS.get(parts.scheme)
    origin_port = parts.port or default_port
    for source in sources:
        if source.startswith("'"):
            continue  # keywords: 'self' is same-origin, handled already; 'none' allows nothing
        scheme, _, rest = source.rpartition("://")
        if scheme and scheme != parts.scheme:
            continue
        host, _, port = rest.partition(":")
        if port != "*" and origin_port != (int(port) if port.isdigit() else default_port):
            continue
        if host == parts.hostname or (host.startswith("*.") and parts.hostname.endswith(host[1:])):
            return True
    return False


class FormTokens:
    """Signed, expiring tokens for page forms: `<issued, hex>.<HMAC of it>`."""

    def __init__(self, secret: str | None) -> None:
        self._key = secret.encode() if secret else secrets.token_bytes(32)

    def issue(self, now: float | None = None) -> str:
        issued = f"{int(now if now is not None else time.time()):x}"
        return f"{issued}.{self._sign(issued)}"

    def verify(self, token: str, now: float | None = None) -> bool:
        if not token.isascii():  # a token is hex and a dot; compare_digest refuses other text
            return False
        issued, _, signature = token.partition(".")
        try:
            age = (now if now is not None else time.time()) - int(issued, 16)
        except ValueError:
            return False
        # A token from the future is tolerated by a minute of clock skew, no more.
        return -60 <= age <= TOKEN_MAX_AGE_SECONDS and hmac.compare_digest(signature, self._sign(issued))

    def _sign(self, issued: str) -> str:
        return hmac.new(self._key, f"stepline-form:{issued}".encode(), hashlib.sha256).hexdigest()[:32]


def form_token(request: Request) -> str:
    return request.app.state.form_tokens.issue()


def form_token_valid(request: Request, form: Mapping[str, Any]) -> bool:
    """Whether the posted form (a FormData, or control name → values) carries a good token."""
    token = form.get(TOKEN_FIELD)
    if isinstance(token, list):
        token = token[0] if len(token) == 1 else None
    return isinstance(token, str) and request.app.state.form_tokens.verify(token)
