"""Browser-facing safety: the hosts served, response headers, and refusing forged cross-site form posts.

A request must name one of the allowed hosts, so a page on a rebound DNS name (`evil.example`
resolving to 127.0.0.1) cannot reach a server on the loopback. `X-Forwarded-*` headers are believed
only from the configured reverse proxies: from anyone else they would let a client claim any host.

Forgery is stopped twice. The middleware refuses any state-changing request a browser sends from
another site (`Sec-Fetch-Site`, else `Origin`), unless that origin is one of the configured frame
ancestors. Page forms also carry a signed token, checked by the handler, for browsers that send
neither header. Cookies cannot do this job: the pages run inside other sites' iframes, often over
plain http, where a `SameSite=None` cookie (which must be `Secure`) is never sent back.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from web.settings import Settings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
TOKEN_FIELD = "_csrf"
# A form may sit open in a tab for a working day or two before it is sent.
TOKEN_MAX_AGE_SECONDS = 48 * 3600
DEFAULT_PORTS = {"http": 80, "https": 443}
# What a loopback-bound server answers to by default: names only this machine resolves to it.
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
# A refused Host is echoed back to help whoever set it up; an attacker's megabyte is not.
ECHO_MAX_CHARS = 100
HOST_VALUE = re.compile(r"(?P<name>\[[0-9a-f:.]+\]|[a-z0-9_.-]+?)\.?(?::(?P<port>[0-9]{1,5}))?")
HOST_PATTERN = re.compile(r"\*|(?P<name>(?:\*\.)?[a-z0-9_.-]+?|\[[0-9a-f:.]+\])\.?(?::(?P<port>[0-9]{1,5}))?")


def content_security_policy(frame_ancestors: str) -> str:
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "connect-src 'self'",
            "font-src 'self'",
            "form-action 'self'",
            "base-uri 'none'",
            f"frame-ancestors {frame_ancestors}",
        ]
    )


def is_loopback(host: str) -> bool:
    """Whether a listening address (`--host`) is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class HostPattern:
    """One allowed host: a name (`*` any, `*.example.com` its subdomains) and a port (None: any)."""

    name: str
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> HostPattern:
        match = HOST_PATTERN.fullmatch(text.strip().lower())
        if not match:
            raise ValueError(
                f"allowed hosts: {text.strip()!r} is not a host name, address or pattern "
                "(e.g. stepline.example.com, 10.0.0.5:8000, [::1], *.example.com, *)"
            )
        port = match["port"]
        return cls(match["name"] or "*", int(port) if port else None)

    def matches(self, name: str, port: int | None) -> bool:
        if self.port is not None and port != self.port:
            return False
        if self.name == "*":
            return True
        if self.name.startswith("*."):
            return name.endswith(self.name[1:])
        return name == self.name

    def __str__(self) -> str:
        return self.name if self.port is None else f"{self.name}:{self.port}"


class TrustedProxies:
    """The reverse proxies whose `X-Forwarded-*` headers are believed: addresses, networks, or `*`."""

    def __init__(self, spec: str) -> None:
        entries = [entry.strip() for entry in spec.split(",") if entry.strip()]
        self.anyone = "*" in entries
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in entries:
            if entry == "*":
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(
                    f"forwarded allow ips: {entry!r} is not an IP address or network (e.g. 10.0.0.5, 10.0.0.0/8, *)"
                ) from None

    def __contains__(self, address: str | None) -> bool:
        if self.anyone:
            return True
        if not address or not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)

    def client(self, forwarded_for: str) -> str | None:
        """The client behind the proxies: the nearest `X-Forwarded-For` address that is not a proxy."""
        chain = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(chain):
            if hop not in self:
                return hop
        return chain[0] if chain else None


@dataclass(frozen=True)
class HostPolicy:
    """Which `Host` values are served, and whose `X-Forwarded-*` headers are believed."""

    allowed: tuple[HostPattern, ...]
    proxies: TrustedProxies

    @classmethod
    def from_settings(cls, settings: Settings) -> HostPolicy:
        """Raises ValueError naming the setting and the entry that is wrong."""
        if settings.allowed_hosts is not None:
            entries = [entry for entry in settings.allowed_hosts.split(",") if entry.strip()]
            if not entries:
                raise ValueError("allowed hosts is empty: name at least one host, or * for any")
        elif is_loopback(settings.host):
            bound = settings.host.strip("[]")
            entries = [*LOOPBACK_NAMES, f"[{bound}]" if ":" in bound else bound]
        else:
            # Bound where others can reach it: any name is served (the operator was warned at start).
            entries = ["*"]
        allowed = tuple(dict.fromkeys(HostPattern.parse(entry) for entry in entries))
        return cls(allowed, TrustedProxies(settings.forwarded_allow_ips))

    def refusal(self, hosts: list[str | None]) -> str | None:
        """Why a request naming these hosts is not served, or None when every one is allowed."""
        if any(pattern.name == "*" and pattern.port is None for pattern in self.allowed):
            return None
        for host in hosts:
            match = HOST_VALUE.fullmatch(host.strip().lower()) if host else None
            port = match["port"] if match else None
            if match and any(p.matches(match["name"], int(port) if port else None) for p in self.allowed):
                continue
            named = f"the host {host[:ECHO_MAX_CHARS]!r}" if host else "no host (the request has no Host header)"
            allowed = ", ".join(str(pattern) for pattern in self.allowed)
            return f"Refused: this server does not answer to {named}. Allowed: {allowed} (see --allowed-hosts)."
        return None


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
        if scope["method"] not in SAFE_METHODS and not is_same_site_request(headers, self.allowed_sources, named):
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


def believe_forwarded_headers(scope: Scope, headers: Headers, proxies: TrustedProxies) -> list[str]:
    """Take the scheme and client a trusted proxy reports; return the hosts it says were asked for."""
    proto = headers.get("x-forwarded-proto", "").strip().lower()
    if proto in DEFAULT_PORTS:
        scope["scheme"] = proto
    forwarded_for = ",".join(headers.getlist("x-forwarded-for"))
    client = proxies.client(forwarded_for) if forwarded_for else None
    if client:
        scope["client"] = (client, 0)
    return [host.strip() for value in headers.getlist("x-forwarded-host") for host in value.split(",") if host.strip()]


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
