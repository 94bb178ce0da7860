"""`stepline token create | list | revoke`: API tokens in the history database of a data directory.

It opens the SQLite file directly, without the data directory's lock, so it works beside a running
`stepline serve` (which sees a new or revoked token on its next request) and on a fresh directory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from web.access import Role
from web.database import Location
from web.db_command import add_database_option
from web.settings import Settings
from web.tokens import TokenAdmin, TokenError, TokenInfo, now_utc, open_token_database, parse_lifetime

DEFAULT_LIFETIME = "90d"


def add_token_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    token = commands.add_parser(
        "token",
        help="create, list or revoke API tokens",
        description="API tokens for scripts and CI: send 'Authorization: Bearer <token>' to the API, the event "
        "streams and the pages. Only a token's SHA-256 is stored, in the run history of the data directory.",
        epilog="Exit status: 0 done; 2 bad input, a name already taken, an unknown token, "
        "or an unusable data directory.",
    )
    actions = token.add_subparsers(dest="token_command", required=True)

    create = actions.add_parser("create", help="create a token and print it (shown only this once)")
    create.add_argument("name", metavar="NAME", help="the token's name, what runs record: [A-Za-z0-9._-], 1 to 64")
    create.add_argument("--role", required=True, choices=[role.value for role in Role], help="what the token may do")
    create.add_argument(
        "--expires",
        default=DEFAULT_LIFETIME,
        metavar="LIFETIME",
        help=f"how long it is valid: 90d, 12h, 30m, 45s, or never (default {DEFAULT_LIFETIME})",
    )
    create.add_argument(
        "--scenario",
        dest="limit_to",
        action="append",
        metavar="ID",
        help="limit the token to this scenario (repeatable; default: every scenario its role allows)",
    )
    _add_data_dir(create)

    listing = actions.add_parser("list", help="list the tokens (never their secrets)")
    listing.add_argument("--json", action="store_true", help="print the list as one JSON document")
    _add_data_dir(listing)

    revoke = actions.add_parser("revoke", help="revoke a token: refused from the next request on")
    revoke.add_argument("name", metavar="NAME", help="the token's name")
    _add_data_dir(revoke)


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", type=Path, metavar="DIR", help="the server's data directory (default ./.stepline/)"
    )
    add_database_option(parser)


def token_command(args: argparse.Namespace, settings: Settings) -> int:
    try:
        if args.token_command == "create":
            lifetime = parse_lifetime(args.expires)  # checked before the file is touched
            with _admin(settings) as admin:
                secret, info = admin.create(args.name, Role(args.role), lifetime=lifetime, scenarios=args.limit_to)
            _print_created(secret, info)
        elif args.token_command == "list":
            with _admin(settings) as admin:
                tokens = admin.tokens()
            _print_list(tokens, as_json=args.json)
        else:
            with _admin(settings) as admin:
                info, revoked_now = admin.revoke(args.name)
            assert info.revoked_at is not None
            when = _when(info.revoked_at)
            print(f"Token {info.name!r} {'revoked' if revoked_now else 'was already revoked'} ({when}).")
    except TokenError as exc:
        print(f"stepline token: {exc}", file=sys.stderr)
        return 2
    return 0


@contextlib.contextmanager
def _admin(settings: Settings) -> Iterator[TokenAdmin]:
    """The history file of the settings' data directory, open for the length of one command."""
    connection = open_token_database(Location.of(settings.data_dir, settings.database_url))
    try:
        yield TokenAdmin(connection)
    finally:
        connection.close()


def _print_created(secret: str, info: TokenInfo) -> None:
    # The secret alone on stdout, so `TOKEN=$(stepline token create …)` captures it; the rest is for the person.
    print(secret)
    limits = f", limited to {', '.join(info.scenarios)}" if info.scenarios else ""
    expires = f"expires {_when(info.expires_at)}" if info.expires_at else "never expires"
    print(
        f"Created token {info.name!r}: role {info.role.value}{limits}, {expires}.\n"
        "It is shown only this once and cannot be recovered; revoke it and create another if it is lost.\n"
        "Send it in the Authorization header:\n"
        '  curl -H "Authorization: Bearer <token>" http://<stepline host:port>/api/runs',
        file=sys.stderr,
    )


def _print_list(tokens: list[TokenInfo], *, as_json: bool) -> None:
    now = now_utc()
    if as_json:
        print(json.dumps([token.as_json(now) for token in tokens], indent=2))
        return
    if not tokens:
        print("No tokens. Create one with: stepline token create NAME --role viewer|operator|admin")
        return
    header = ("NAME", "ROLE", "SCENARIOS", "CREATED", "EXPIRES", "LAST USED", "STATE")
    rows = [
        (
            token.name,
            token.role.value,
            ",".join(token.scenarios) if token.scenarios is not None else "*",
            _when(token.created_at),
            _when(token.expires_at) if token.expires_at else "never",
            _when(token.last_used_at) if token.last_used_at else "never",
            token.state(now) + (f" {_when(token.revoked_at)}" if token.revoked_at else ""),
        )
        for token in tokens
    ]
    widths = [max(len(row[column]) for row in (header, *rows)) for column in range(len(header))]
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment is not None else "-"
