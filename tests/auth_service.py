"""A portal's sign-in service, as nginx's `auth_request` asks it: who is this visitor?

It stands in for the SSO an intranet portal puts in front of Stepline (oauth2-proxy, a Kerberos
gateway...). `GET /sign-in?as=NAME` signs a known user in with a session cookie and sends them on to
Stepline; `GET /check` is nginx's subrequest: 204 naming the cookie's user and groups in response
headers (nginx copies them into `X-Forwarded-User` / `X-Forwarded-Groups`), else 401. It believes the
cookie alone: identity headers a client sends are never read.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

COOKIE = "portal_session"
# The portal's directory: each user's groups. Stepline maps `ops` and `viewers` to roles; `contractors` to none.
USERS = {
    "olga": ("ops",),
    "vera": ("viewers",),
    "mallory": ("contractors",),
}


@dataclass
class AuthService:
    port: int
    checks: list[str | None] = field(default_factory=list)  # the user each `auth_request` check found, or None


def _handler(service: AuthService, landing: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            url = urlsplit(self.path)
            if url.path == "/sign-in":
                self._sign_in(parse_qs(url.query).get("as", [""])[0])
            elif url.path == "/check":
                self._check()
            else:
                self._answer(404)

        def _sign_in(self, name: str) -> None:
            if name not in USERS:
                self._answer(403)
                return
            self._answer(303, {"Location": landing, "Set-Cookie": f"{COOKIE}={name}; Path=/; HttpOnly; SameSite=Lax"})

        def _check(self) -> None:
            morsel = SimpleCookie(self.headers.get("Cookie", "")).get(COOKIE)
            name = morsel.value if morsel is not None and morsel.value in USERS else None
            service.checks.append(name)
            if name is None:
                self._answer(401)
            else:
                self._answer(204, {"X-Auth-User": name, "X-Auth-Groups": ",".join(USERS[name])})

        def _answer(self, status: int, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the stdlib's name)
            pass  # a check per request: noise in the test output

    return Handler


@contextmanager
def auth_service(landing: str) -> Iterator[AuthService]:
    """The service on a free loopback port, in a thread; a signed-in user is sent on to `landing`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    service = AuthService(server.server_address[1])
    server.RequestHandlerClass = _handler(service, landing)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield service
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
