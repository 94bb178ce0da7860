"""Who a request is (web.access.Identity): the portal's proxy, an API token, or anonymous.

- `Authorization: Bearer <token>`: an API token (web.tokens); a token that is unknown, expired or
  revoked is refused 401, its reason logged, never told.
- The proxy's header (`auth_header`, with `groups_header`): believed only from `trusted_proxies`; the
  same header from anywhere else is refused 403 and logged. Groups map to a role (`role_map`); a user
  whose groups map to none is refused 403.
- Neither: anonymous, with the `allow_anonymous` role, or admin on a loopback-bound server with no proxy
  header configured (only this machine can reach it); else nobody (None), whom every guarded route answers 401.
"""

from __future__ import annotations

import logging
from typing import Protocol

from starlette.requests import Request

from web.access import Identity, IdentitySource, Role
from web.hosts import TrustedProxies, is_loopback
from web.settings import Settings

log = logging.getLogger(__name__)

# A name or group from the proxy: printable, no separators, bounded.
MAX_NAME_CHARS = 256
MAX_GROUPS_HEADER_CHARS = 4096
MAX_TOKEN_CHARS = 512


class AuthRefused(Exception):
    """A request whose credentials are refused: `status` (401 or 403) and a message that reveals nothing;
    `reason` is for the log only."""

    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class TokenRefused(Exception):
    """Why a token is not accepted (unknown, expired, revoked, malformed): logged, never told."""


class TokensUnavailable(Exception):
    """The history holding the tokens cannot be read now: no token can be checked, good or bad (503)."""


# How long a client is told to wait when tokens cannot be checked: about what the history takes to retry.
TOKENS_RETRY_AFTER_SECONDS = 10


class TokenBook(Protocol):
    async def identify(self, secret: str) -> Identity:
        """The token's identity; TokenRefused when it is not accepted."""
        ...


def parse_role_map(spec: str) -> dict[str, Role]:
    """`readers=viewer,ops=operator` as {group: role}; ValueError naming a bad entry."""
    roles: dict[str, Role] = {}
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        group, sep, role = entry.partition("=")
        if not sep or not group.strip():
            raise ValueError(f"role map entry {entry!r} is not GROUP=ROLE")
        try:
            roles[group.strip()] = Role(role.strip())
        except ValueError:
            raise ValueError(
                f"role map entry {entry!r}: unknown role {role.strip()!r} (viewer, operator or admin)"
            ) from None
    return roles


class Authenticator:
    def __init__(self, settings: Settings, tokens: TokenBook | None) -> None:
        self.header = settings.auth_header.lower() if settings.auth_header else None
        self.groups_header = settings.groups_header.lower() if settings.groups_header else None
        self.proxies = TrustedProxies(settings.trusted_proxies)
        self.role_map = parse_role_map(settings.role_map)
        self.tokens = tokens
        # On a loopback-bound server only this machine can reach it: nobody named is admin, as before access
        # control, unless a proxy names the users (then a direct request must not pass for one of them).
        local_admin = Role.ADMIN if is_loopback(settings.host) and self.header is None else None
        self.anonymous_role = settings.allow_anonymous or local_admin

    async def identify(self, request: Request) -> Identity | None:
        """The request's identity; None when it names nobody and anonymous requests are not allowed.

        Raises AuthRefused for credentials that are bad, or come from where they may not.
        """
        authorization = request.headers.get("authorization")
        if authorization is not None:
            return await self._token(request, authorization)
        if self.header is not None and self.header in request.headers:
            return self._proxy_user(request)
        if self.anonymous_role is None:
            return None
        return Identity("anonymous", IdentitySource.ANONYMOUS, self.anonymous_role)

    def log_refusal(self, request: Request, refused: AuthRefused) -> None:
        client = request.client.host if request.client else "?"
        log.warning(
            "Refused %s %s from %s (%s): %s", request.method, request.url.path, client, refused.status, refused.reason
        )

    async def _token(self, request: Request, authorization: str) -> Identity:
        scheme, _, secret = authorization.partition(" ")
        secret = secret.strip()
        refused = AuthRefused(401, "Invalid token: send 'Authorization: Bearer <token>' with a valid token", "")
        if scheme.lower() != "bearer" or not secret or len(secret) > MAX_TOKEN_CHARS or not secret.isprintable():
            refused.reason = "a malformed Authorization header"
            raise refused
        if self.tokens is None:
            refused.reason = "a token, but this server keeps no history, so no tokens"
            raise refused
        try:
            return await self.tokens.identify(secret)
        except TokensUnavailable as exc:
            raise AuthRefused(503, "The run history cannot be read, so the token cannot be checked now: try again",
                              str(exc)) from None
        except TokenRefused as exc:
            refused.reason = str(exc)
            raise refused from None

    def _proxy_user(self, request: Request) -> Identity:
        client = request.client.host if request.client else None
        if client not in self.proxies:
            raise AuthRefused(
                403,
                "Refused: the identity header is accepted only from the configured proxies",
                f"the identity header {self.header} from {client}, which is not a trusted proxy",
            )
        name = request.headers[self.header or ""].strip()
        if not _clean(name, MAX_NAME_CHARS):
            raise AuthRefused(403, "Refused: the identity header is malformed", f"a malformed {self.header} header")
        groups: frozenset[str] = frozenset()
        if self.groups_header is not None:
            raw = request.headers.get(self.groups_header, "")
            if len(raw) > MAX_GROUPS_HEADER_CHARS or not raw.isprintable():
                raise AuthRefused(403, "Refused: the groups header is malformed", f"a malformed {self.groups_header}")
            groups = frozenset(group.strip() for group in raw.split(",") if group.strip())
        role = self._role(groups)
        if role is None:
            raise AuthRefused(403, "Refused: your account has no role in Stepline", f"user {name!r} in no mapped group")
        return Identity(name, IdentitySource.PROXY, role, groups)

    def _role(self, groups: frozenset[str]) -> Role | None:
        roles = [role for group, role in self.role_map.items() if group in groups or group == "*"]
        return max(roles, key=lambda role: role.rank) if roles else None


def _clean(text: str, limit: int) -> bool:
    return 0 < len(text) <= limit and text.isprintable()
