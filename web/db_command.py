"""`stepline db migrate`: bring the run history's schema up to date, SQLite file or PostgreSQL database.

`stepline serve` migrates at start too; a deployment with several replicas runs this once first, so
no replica starts on a schema it does not know. Migrating is safe to repeat and to run beside a server.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from web.database import Location, migrate_database
from web.settings import Settings


def add_database_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database",
        dest="database_url",
        metavar="URL",
        help="keep run history in this PostgreSQL database (postgresql://user:password@host:port/name) "
        "instead of the data directory; also STEPLINE_DATABASE_URL",
    )


def add_db_parser(commands: argparse._SubParsersAction) -> None:
    db = commands.add_parser("db", help="manage the run history's database")
    actions = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    migrate = actions.add_parser(
        "migrate", help="bring the history's schema up to date (serve does it at start too)"
    )
    migrate.add_argument(
        "--data-dir", type=Path, metavar="DIR", help="the server's data directory (default ./.stepline/)"
    )
    add_database_option(migrate)


def db_command(args: argparse.Namespace, settings: Settings) -> int:
    """Raises StoreError (the caller prints it and exits 2) when the database cannot be opened or migrated."""
    location = Location.of(settings.data_dir, settings.database_url)
    before, after = migrate_database(location)
    if before == after:
        print(f"Run history {location.shown_file} is at schema version {after}: nothing to do.")
    else:
        print(f"Run history {location.shown_file} migrated from schema version {before} to {after}.")
    return 0
