"""The history's SQLite file: connecting, versioned schema migrations, transactions, error messages."""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

# sqlite result codes that mean the disk refused a write, rather than a bug or a corrupt file.
DISK_ERRORS = ("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN")
# What a write raises because of the values it carries: text or numbers SQLite cannot take, a key
# already taken. Anything else (the disk, the file, a closed connection) concerns every run alike.
DATA_ERRORS = (
    ValueError,
    TypeError,
    OverflowError,
    RecursionError,
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.InterfaceError,
)
# MIGRATIONS[n] takes a file from schema version n to n + 1 (PRAGMA user_version). Append only:
# a shipped migration is never edited, so every older file follows the same path forward.
MIGRATIONS: list[str] = [
    # 1: runs, and their events keyed by (run_id, seq), clustered so a replay reads one range.
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
    );
    CREATE TABLE events (
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        type TEXT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;
    """,
    # 2: indexes for the run list (newest first, by scenario, by status) and for pruning by age,
    # and a small key/value table the start-up write check uses.
    """
    CREATE INDEX runs_by_created ON runs (created_at, run_id);
    CREATE INDEX runs_by_scenario ON runs (scenario_id, created_at, run_id);
    CREATE INDEX runs_by_status ON runs (status, created_at, run_id);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 3: who started each run (its identity's name; NULL for runs from before access control), and the
    # API tokens: a token itself is never stored, only its SHA-256.
    """
    ALTER TABLE runs ADD COLUMN started_by TEXT;
    CREATE INDEX runs_by_starter ON runs (started_by, created_at, run_id);
    CREATE TABLE tokens (
        name TEXT PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        scenarios TEXT,
        created_at TEXT NOT NULL,
        expires_at TEXT,
        revoked_at TEXT,
        last_used_at TEXT
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(Exception):
    """Run history cannot be read or written; the message names the data directory and the reason."""


class transaction:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any error (sqlite may already have rolled back)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def __enter__(self) -> None:
        self.connection.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self.connection.execute("COMMIT")
        elif self.connection.in_transaction:
            self.connection.execute("ROLLBACK")


def connect(path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE), never implied by a statement.
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=check_same_thread, timeout=5)
    try:
        connection.execute("PRAGMA busy_timeout = 5000")
    except sqlite3.Error:
        connection.close()
        raise
    return connection


def open_database(path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """Connect, switch to WAL, migrate and prove a write lands; StoreError naming the file otherwise."""
    try:
        connection = connect(path, check_same_thread=check_same_thread)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open run history {path}: {reason(exc)}") from None
    try:
        # WAL: readers never wait for the writer. synchronous=NORMAL: a commit survives the process
        # being killed (kill -9); only a power cut can lose the last moments, and costs no fsync per batch.
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        migrate(connection, path)
        with transaction(connection):
            connection.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('opened_at', ?)",
                (datetime.now(UTC).isoformat(timespec="milliseconds"),),
            )
    except sqlite3.Error as exc:
        connection.close()
        raise StoreError(f"cannot write run history {path}: {reason(exc)}") from None
    except BaseException:
        connection.close()
        raise
    return connection


def migrate(connection: sqlite3.Connection, path: Path) -> None:
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"run history {path} has schema version {version}, newer than this Stepline knows ({SCHEMA_VERSION}); "
            "upgrade Stepline or point --data-dir elsewhere"
        )
    for target in range(version + 1, SCHEMA_VERSION + 1):
        # One transaction per step, version bump included: a failed step leaves the file as it was.
        try:
            connection.executescript(
                f"BEGIN IMMEDIATE;\n{MIGRATIONS[target - 1]}\nPRAGMA user_version = {target};\nCOMMIT;"
            )
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        if version:
            log.info("Run history %s migrated to schema version %d", path, target)


def reason(exc: Exception) -> str:
    """sqlite's message and code, with a hint when the code means the disk refused the write."""
    code = getattr(exc, "sqlite_errorname", None)
    if code is None:
        return f"{type(exc).__name__}: {exc}"
    hint = " (is the disk full or the directory read-only?)" if code.startswith(DISK_ERRORS) else ""
    return f"{exc} [{code}]{hint}"


def is_data_error(exc: BaseException) -> bool:
    """True when a write failed because of the values in it (one run's data), not the file or the disk."""
    return isinstance(exc, DATA_ERRORS)
