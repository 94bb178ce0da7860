"""The history's schema: one list of migrations, written once and rendered for SQLite and PostgreSQL.

The statements use the SQL both databases share (TEXT and INTEGER columns, row-value comparisons,
ALTER TABLE … ADD COLUMN). What differs is named by a marker that `render` turns into each dialect's
form, so a table is never defined twice and the two backends cannot drift apart.
"""

from __future__ import annotations

from typing import Literal

Dialect = Literal["sqlite", "postgresql"]

# Markers in the statements below and what each dialect writes for them.
DIALECT_FORMS: dict[str, dict[Dialect, str]] = {
    # SQLite clusters a table on its primary key only when told; PostgreSQL has no such option.
    "{clustered}": {"sqlite": " WITHOUT ROWID", "postgresql": ""},
    # A moment: the database's own clock keeps leases (PostgreSQL), so replicas' clocks need not agree.
    "{moment}": {"sqlite": "TEXT", "postgresql": "TIMESTAMPTZ"},
}

# MIGRATIONS[n] takes a database from schema version n to n + 1. Append only: a shipped migration is
# never edited, so every older database follows the same path forward.
MIGRATIONS: list[tuple[str, ...]] = [
    # 1: runs, and their events keyed by (run_id, seq), clustered so a replay reads one range.
    (
        """
        CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            scenario_id TEXT NOT NULL,
            status TEXT NOT NULL,
            message TEXT NOT NULL DEFAULT '',
            input TEXT NOT NULL,
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT
        )
        """,
        """
        CREATE TABLE events (
            run_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            type TEXT NOT NULL,
            data TEXT NOT NULL,
            PRIMARY KEY (run_id, seq)
        ){clustered}
        """,
    ),
    # 2: indexes for the run list (newest first, by scenario, by status) and for pruning by age,
    # and a small key/value table the start-up write check uses.
    (
        "CREATE INDEX runs_by_created ON runs (created_at, run_id)",
        "CREATE INDEX runs_by_scenario ON runs (scenario_id, created_at, run_id)",
        "CREATE INDEX runs_by_status ON runs (status, created_at, run_id)",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ),
    # 3: who started each run (its identity's name; NULL for runs from before access control), and the
    # API tokens: a token itself is never stored, only its SHA-256.
    (
        "ALTER TABLE runs ADD COLUMN started_by TEXT",
        "CREATE INDEX runs_by_starter ON runs (started_by, created_at, run_id)",
        """
        CREATE TABLE tokens (
            name TEXT PRIMARY KEY,
            token_hash TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL,
            scenarios TEXT,
            created_at TEXT NOT NULL,
            expires_at TEXT,
            revoked_at TEXT,
            last_used_at TEXT
        )
        """,
    ),
    # 4: replicas sharing one database. A live run is owned by the replica running it (`owner`, its id)
    # for as long as it renews its lease; a run whose lease ran out is claimed by another. Commands for
    # a run (cancel, answers, Resume) reach its owner through run_commands, which also holds the reply.
    (
        "ALTER TABLE runs ADD COLUMN owner TEXT",
        "ALTER TABLE runs ADD COLUMN lease_until {moment}",
        "CREATE INDEX runs_by_owner ON runs (owner)",
        """
        CREATE TABLE run_commands (
            command_id TEXT PRIMARY KEY,
            run_id TEXT NOT NULL,
            command TEXT NOT NULL,
            sent_at {moment} NOT NULL,
            reply TEXT
        )
        """,
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)


def render(statement: str, dialect: Dialect) -> str:
    """`statement` with its dialect markers written out for `dialect`."""
    for marker, forms in DIALECT_FORMS.items():
        statement = statement.replace(marker, forms[dialect])
    return statement


def migration(target: int, dialect: Dialect) -> list[str]:
    """The statements that take a database from version `target - 1` to `target`, for `dialect`."""
    return [render(statement, dialect) for statement in MIGRATIONS[target - 1]]
