"""API tokens, kept in the history database (SQLite or PostgreSQL): issued, listed and revoked by
`stepline token`, checked by the server.

A token is `stl_` and 32 random bytes (urlsafe base64), shown once when it is created; the database keeps
only its SHA-256. The server looks each presented token up afresh (one indexed read), so a revoke or an
expiry takes effect on the very next request, whichever process wrote it. A token's name is what runs
record of who started them, so names are never reused, even once revoked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from web.access import Identity, IdentitySource, Role
from web.auth import TokenRefused, TokensUnavailable
from web.database import Database, Location, StoreError, reason

log = logging.getLogger(__name__)

TOKEN_PREFIX = "stl_"  # says what a leaked secret is, to people and to secret scanners
TOKEN_BYTES = 32
# What `stl_` + 32 bytes in urlsafe base64 (no padding) looks like: anything else is refused unread.
TOKEN_PATTERN = re.compile(r"stl_[A-Za-z0-9_-]{43}")
NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
SCENARIO_ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
LIFETIME_PATTERN = re.compile(r"(\d{1,6})([smhd])")
LIFETIME_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
# Ten years: longer is "never" in all but name, and keeps the date far from datetime's range.
MAX_LIFETIME = timedelta(days=3650)
# last_used_at is a hint for whoever audits tokens, not a log: one write a minute per token is plenty.
LAST_USED_EVERY_SECONDS = 60.0
COLUMNS = "name, role, scenarios, created_at, expires_at, revoked_at, last_used_at"


class TokenError(Exception):
    """A token command that cannot be done: a bad or taken name, an unknown token, a bad lifetime."""


@dataclass(frozen=True)
class TokenInfo:
    """A token as `stepline token list` shows it: everything but the secret and its hash."""

    name: str
    role: Role
    scenarios: tuple[str, ...] | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def as_json(self, now: datetime) -> dict[str, Any]:
        def stamp(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "name": self.name,
            "role": self.role.value,
            "scenarios": list(self.scenarios) if self.scenarios is not None else None,
            "state": self.state(now),
            "created_at": stamp(self.created_at),
            "expires_at": stamp(self.expires_at),
            "last_used_at": stamp(self.last_used_at),
            "revoked_at": stamp(self.revoked_at),
        }


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def parse_lifetime(text: str) -> timedelta | None:
    """`90d`, `12h`, `30m`, `45s` as a timedelta; `never` as None; TokenError naming the problem."""
    if text.strip().lower() == "never":
        return None
    match = LIFETIME_PATTERN.fullmatch(text.strip())
    if match is None:
        raise TokenError(f"--expires {text!r}: give a number and a unit (90d, 12h, 30m, 45s) or 'never'")
    lifetime = timedelta(**{LIFETIME_UNITS[match[2]]: int(match[1])})
    if not lifetime:
        raise TokenError(f"--expires {text!r}: a token must live longer than that; use 'never' for no expiry")
    if lifetime > MAX_LIFETIME:
        raise TokenError(f"--expires {text!r}: at most {MAX_LIFETIME.days}d; use 'never' for no expiry")
    return lifetime


def check_name(name: str) -> str:
    if NAME_PATTERN.fullmatch(name) is None:
        raise TokenError(f"token name {name!r}: use 1 to 64 letters, digits, '.', '_' or '-'")
    return name


def open_token_database(location: Location) -> Database:
    """The history database, created or migrated if need be. Takes no lock: a running server keeps it, and the
    database's own locking (SQLite's WAL and busy timeout, PostgreSQL's transactions) lets both write it."""
    if location.data_dir is not None:
        try:
            location.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot use data directory {location.data_dir}: {exc.strerror or exc}") from None
    return Database.open(location)


class TokenAdmin:
    """Creating, listing and revoking tokens on an open history database (what `stepline token` does)."""

    def __init__(self, connection: Database) -> None:
        self.connection = connection

    def create(
        self, name: str, role: Role, *, lifetime: timedelta | None, scenarios: list[str] | None = None
    ) -> tuple[str, TokenInfo]:
        """A new token: (the secret, to show once, its record). TokenError for a taken name or bad scenarios."""
        check_name(name)
        limited = _scenario_limit(role, scenarios)
        created = now_utc()
        expires = created + lifetime if lifetime is not None else None
        secret = new_secret()
        try:
            self.connection.execute(
                f"INSERT INTO tokens ({COLUMNS}, token_hash) VALUES (?, ?, ?, ?, ?, NULL, NULL, ?)",
                (
                    name,
                    role.value,
                    json.dumps(list(limited)) if limited is not None else None,
                    created.isoformat(),
                    expires.isoformat() if expires is not None else None,
                    token_hash(secret),
                ),
            )
        except (sqlite3.IntegrityError, psycopg.IntegrityError):
            existing = self.get(name)
            if existing is None:  # the hash collided: 256 random bits make that a broken random source
                raise
            state = "revoked, " if existing.revoked_at is not None else ""
            raise TokenError(
                f"a token named {name!r} already exists ({state}created {existing.created_at:%Y-%m-%d}); "
                "names are never reused, so runs it started stay attributed to it: choose another name"
            ) from None
        return secret, TokenInfo(name, role, limited, created, expires, None, None)

    def get(self, name: str) -> TokenInfo | None:
        row = self.connection.execute(f"SELECT {COLUMNS} FROM tokens WHERE name = ?", (name,)).fetchone()
        return _info(row) if row is not None else None

    def tokens(self) -> list[TokenInfo]:
        return [_info(row) for row in self.connection.execute(f"SELECT {COLUMNS} FROM tokens ORDER BY name")]

    def revoke(self, name: str) -> tuple[TokenInfo, bool]:
        """(the token, whether this call revoked it: False when it already was). TokenError when unknown."""
        revoked_now = self.connection.execute(
            "UPDATE tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", (now_utc().isoformat(), name)
        ).rowcount == 1
        info = self.get(name)
        if info is None:
            raise TokenError(f"no token named {name!r} (stepline token list shows them)")
        return info, revoked_now


Reads = Callable[[str, Sequence[Any]], Awaitable[list[tuple[Any, ...]]]]


class TokenBook:
    """The server's side (web.auth.TokenBook): who a presented token is, read afresh from the history.

    One indexed read per request through the history's reader (`reads`: web.store.RunStore.fetchall);
    `last_used_at` is written at most once a minute per token, by a short-lived thread, so a request never
    waits for a write.
    """

    def __init__(self, location: Location, reads: Reads) -> None:
        self.location = location
        self._reads = reads
        self._lock = threading.Lock()
        self._recorded: dict[str, float] = {}  # token name -> when (monotonic) its last use was last written

    async def identify(self, secret: str) -> Identity:
        if TOKEN_PATTERN.fullmatch(secret) is None:
            raise TokenRefused("a token not in Stepline's format")
        try:
            rows = await self._reads(f"SELECT {COLUMNS} FROM tokens WHERE token_hash = ?", (token_hash(secret),))
        except StoreError as exc:
            log.error("Cannot read API tokens: %s", exc)
            raise TokensUnavailable(f"a token that could not be checked: {exc}") from None
        row = rows[0] if rows else None
        if row is None:
            raise TokenRefused("an unknown token")
        info = _info(row)
        now = now_utc()
        if info.revoked_at is not None:
            raise TokenRefused(f"token {info.name!r}, revoked at {info.revoked_at.isoformat()}")
        if info.expires_at is not None and info.expires_at <= now:
            raise TokenRefused(f"token {info.name!r}, expired at {info.expires_at.isoformat()}")
        log.info("Request with token %r (%s)", info.name, info.role.value)
        self._note_use(info, now)
        scenarios = frozenset(info.scenarios) if info.scenarios is not None else None
        return Identity(info.name, IdentitySource.TOKEN, info.role, scenarios=scenarios)

    def _note_use(self, info: TokenInfo, now: datetime) -> None:
        if info.last_used_at is not None and (now - info.last_used_at).total_seconds() < LAST_USED_EVERY_SECONDS:
            return
        moment = time.monotonic()
        with self._lock:
            if moment - self._recorded.get(info.name, -LAST_USED_EVERY_SECONDS) < LAST_USED_EVERY_SECONDS:
                return
            self._recorded[info.name] = moment
        threading.Thread(
            target=self._write_use, args=(info.name, now), name="stepline-token-last-used", daemon=True
        ).start()

    def _write_use(self, name: str, now: datetime) -> None:
        try:
            database = Database.connect(self.location)
            try:
                database.execute("UPDATE tokens SET last_used_at = ? WHERE name = ?", (now.isoformat(), name))
            finally:
                database.close()
        except (sqlite3.Error, psycopg.Error) as exc:
            # A hint lost, nothing more: the next use after a minute tries again.
            log.warning("Cannot record the use of token %r in %s: %s", name, self.location.shown_file, reason(exc))


def _scenario_limit(role: Role, scenarios: list[str] | None) -> tuple[str, ...] | None:
    if not scenarios:
        return None
    if role is Role.ADMIN:
        raise TokenError("an admin token sees every scenario: --scenario limits viewer and operator tokens only")
    for scenario_id in scenarios:
        if SCENARIO_ID_PATTERN.fullmatch(scenario_id) is None:
            raise TokenError(f"--scenario {scenario_id!r}: a scenario id is letters, digits, '_', '.' or '-'")
    return tuple(sorted(set(scenarios)))


def _info(row: tuple[Any, ...]) -> TokenInfo:
    name, role, scenarios, created_at, expires_at, revoked_at, last_used_at = row
    return TokenInfo(
        name=name,
        role=Role(role),
        scenarios=tuple(json.loads(scenarios)) if scenarios is not None else None,
        created_at=datetime.fromisoformat(created_at),
        expires_at=_stamp(expires_at),
        revoked_at=_stamp(revoked_at),
        last_used_at=_stamp(last_used_at),
    )


def _stamp(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None
