"""The history's database, SQLite or PostgreSQL, behind one small synchronous interface.

The writer thread (web.store), the token commands and `stepline db migrate` speak through `Database`:
statements are written once, with `?` placeholders, and run on either. SQLite is a file in the data
directory; PostgreSQL is named by a `postgresql://` URL. Both are brought to the same schema
(web.schema) when opened. The server's reads go through web.history_reads instead, which does not
block the event loop.
"""

from __future__ import annotations

import contextlib
import logging
import re
import select
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from web.schema import SCHEMA_VERSION, Dialect, migration

log = logging.getLogger(__name__)

DB_NAME = "stepline.db"
# How long a PostgreSQL connection attempt may take before the server is called unreachable.
CONNECT_TIMEOUT_SECONDS = 5
# What poll() reports on a socket the server has closed (POLLRDHUP: Linux's word for the peer's hang-up).
PEER_CLOSED = select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0)
# The password of a postgresql://user:password@host URL, found even when the rest of the URL is malformed.
PASSWORD_IN_URL = re.compile(r"[a-z]+://[^:/@]*:([^@/]*)@")
# Held while PostgreSQL is migrated, so replicas starting together migrate it once, one after another.
MIGRATION_LOCK = 0x5374_6570  # "Step"

# sqlite result codes that mean the disk refused a write, rather than a bug or a corrupt file.
DISK_ERRORS = ("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN")
# What a write raises because of the values it carries: text or numbers the database cannot take, a key
# already taken. Anything else (the disk, the file, the server, a lost connection) concerns every run alike.
DATA_ERRORS = (
    ValueError,
    TypeError,
    OverflowError,
    RecursionError,
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.InterfaceError,
    psycopg.DataError,
    psycopg.IntegrityError,
)


class StoreError(Exception):
    """Run history cannot be read or written; the message names where it is kept and the reason."""


@dataclass(frozen=True)
class Location:
    """Where the history is kept: an SQLite file in a data directory, or a PostgreSQL database."""

    dialect: Dialect
    # SQLite: the data directory, as configured (messages show it so).
    data_dir: Path | None = None
    # PostgreSQL: the connection URL, password and all; never shown (see `shown`).
    url: str | None = None

    @classmethod
    def of(cls, data_dir: Path, database_url: str | None) -> Location:
        if database_url:
            if not database_url.startswith(("postgresql://", "postgres://")):
                raise StoreError(f"--database must be a postgresql:// URL, not {_without_password(database_url)!r}")
            return cls("postgresql", url=database_url)
        return cls("sqlite", data_dir=data_dir)

    @property
    def path(self) -> Path:
        """The SQLite file."""
        assert self.data_dir is not None
        return self.data_dir.absolute() / DB_NAME

    @property
    def shown(self) -> str:
        """How messages name it: the data directory as configured, or the URL without its password."""
        if self.dialect == "sqlite":
            return str(self.data_dir)
        return _without_password(self.url or "")

    def hide(self, message: str) -> str:
        """`message` with the URL, should the driver quote it (a malformed one), shown without its password."""
        if not self.url:
            return message
        message = message.replace(self.url, self.shown)
        password = PASSWORD_IN_URL.match(self.url)
        return message.replace(password[1], "****") if password and password[1] else message

    @property
    def shown_file(self) -> str:
        """The file itself, or the URL: what health reports."""
        return str(Path(self.shown) / DB_NAME) if self.dialect == "sqlite" else self.shown


class Database:
    """One connection, SQLite's or PostgreSQL's; statements use `?` placeholders whichever it is."""

    def __init__(self, location: Location, connection: Any) -> None:
        self.location = location
        self.dialect = location.dialect
        self.connection = connection

    @classmethod
    def connect(cls, location: Location, *, check_same_thread: bool = True) -> Database:
        """A connection, no more: raises sqlite3.Error or psycopg.Error."""
        if location.dialect == "sqlite":
            return cls(location, connect_sqlite(location.path, check_same_thread=check_same_thread))
        assert location.url is not None
        # autocommit: transactions are explicit (`transaction`), never implied by a statement.
        return cls(location, psycopg.connect(location.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS))

    @classmethod
    def open(cls, location: Location, *, check_same_thread: bool = True) -> Database:
        """Connect, migrate and prove a write lands; StoreError naming the database otherwise."""
        try:
            database = cls.connect(location, check_same_thread=check_same_thread)
        except (sqlite3.Error, psycopg.Error) as exc:
            raise StoreError(
                f"cannot open run history {location.shown_file}: {location.hide(reason(exc))}"
            ) from None
        try:
            database.prepare()
            database.migrate()
            with database.transaction():
                database.execute(
                    "INSERT INTO meta (key, value) VALUES ('opened_at', ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (datetime.now(UTC).isoformat(timespec="milliseconds"),),
                )
        except (sqlite3.Error, psycopg.Error) as exc:
            database.close()
            raise StoreError(f"cannot write run history {location.shown_file}: {reason(exc)}") from None
        except BaseException:
            database.close()
            raise
        return database

    def prepare(self) -> None:
        if self.dialect == "sqlite":
            # WAL: readers never wait for the writer. synchronous=NORMAL: a commit survives the process
            # being killed (kill -9); only a power cut can lose the last moments, and costs no fsync per batch.
            self.connection.execute("PRAGMA journal_mode = WAL")
            self.connection.execute("PRAGMA synchronous = NORMAL")

    # --- statements -----------------------------------------------------------------------------

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The cursor of `sql` run with `params`."""
        return self.connection.execute(self._sql(sql), params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if not rows:
            return
        if self.dialect == "sqlite":
            self.connection.executemany(sql, rows)
        else:
            with self.connection.cursor() as cursor:
                cursor.executemany(self._sql(sql), rows)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN … COMMIT, rolled back on any error."""
        if self.dialect == "postgresql":
            with self.connection.transaction():
                yield
            return
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self.connection.in_transaction:  # sqlite may already have rolled back
                self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    # --- the connection -------------------------------------------------------------------------

    @property
    def broken(self) -> bool:
        """True when the connection is gone (PostgreSQL restarted, the network cut): `reconnect` before use."""
        if self.dialect == "sqlite":
            return False
        return bool(self.connection.broken or self.connection.closed) or _closed_by_server(self.connection)

    def reconnect(self) -> None:
        """A new connection in place of a broken one; raises as `connect` does."""
        fresh = Database.connect(self.location, check_same_thread=False)
        with contextlib.suppress(Exception):
            self.connection.close()
        self.connection = fresh.connection

    def close(self) -> None:
        self.connection.close()

    # --- the schema -----------------------------------------------------------------------------

    def version(self) -> int:
        if self.dialect == "sqlite":
            return int(self.connection.execute("PRAGMA user_version").fetchone()[0])
        # Looked up, not created: concurrent CREATE TABLE IF NOT EXISTS can collide; `migrate` creates it, locked.
        if not self.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()[0]:
            return 0
        row = self.execute("SELECT version FROM schema_version").fetchone()
        return int(row[0]) if row is not None else 0

    def migrate(self) -> tuple[int, int]:
        """Bring the schema up to date, one transaction per step; (version before, version now)."""
        before = self.version()
        if before > SCHEMA_VERSION:
            where = "--data-dir" if self.dialect == "sqlite" else "--database"
            raise StoreError(
                f"run history {self.location.shown_file} has schema version {before}, newer than this Stepline "
                f"knows ({SCHEMA_VERSION}); upgrade Stepline or point {where} elsewhere"
            )
        first: int | None = None
        while True:
            with self.transaction():
                if self.dialect == "postgresql":
                    self.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
                    self.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                # Read under the lock: another process may have migrated meanwhile, and then this one did not.
                version = self.version()
                first = version if first is None else first
                if version >= SCHEMA_VERSION:
                    return first, version
                for statement in migration(version + 1, self.dialect):
                    self.execute(statement)
                self._set_version(version + 1)
            if before:
                log.info("Run history %s migrated to schema version %d", self.location.shown_file, version + 1)

    def _set_version(self, version: int) -> None:
        if self.dialect == "sqlite":
            self.connection.execute(f"PRAGMA user_version = {int(version)}")
        else:
            self.execute("DELETE FROM schema_version")
            self.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))


def migrate_database(location: Location) -> tuple[int, int]:
    """Create the data directory if need be and migrate; (version before, version now). StoreError."""
    if location.data_dir is not None:
        try:
            location.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot use data directory {location.data_dir}: {exc.strerror or exc}") from None
    try:
        database = Database.connect(location)
    except (sqlite3.Error, psycopg.Error) as exc:
        raise StoreError(f"cannot open run history {location.shown_file}: {location.hide(reason(exc))}") from None
    try:
        database.prepare()
        return database.migrate()
    except (sqlite3.Error, psycopg.Error) as exc:
        raise StoreError(f"cannot migrate run history {location.shown_file}: {reason(exc)}") from None
    finally:
        database.close()


def connect_sqlite(path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE), never implied by a statement.
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=check_same_thread, timeout=5)
    try:
        connection.execute("PRAGMA busy_timeout = 5000")
    except sqlite3.Error:
        connection.close()
        raise
    return connection


def reason(exc: BaseException) -> str:
    """The database's message and code, with a hint when the code means the disk refused the write."""
    if isinstance(exc, psycopg.Error):
        message = " ".join(str(exc).split()) or type(exc).__name__
        return f"{message} [{exc.sqlstate}]" if exc.sqlstate else message
    code = getattr(exc, "sqlite_errorname", None)
    if code is None:
        return f"{type(exc).__name__}: {exc}"
    hint = " (is the disk full or the directory read-only?)" if code.startswith(DISK_ERRORS) else ""
    return f"{exc} [{code}]{hint}"


def is_data_error(exc: BaseException) -> bool:
    """True when a write failed because of the values in it (one run's data), not the database itself."""
    return isinstance(exc, DATA_ERRORS)


def _closed_by_server(connection: psycopg.Connection[Any]) -> bool:
    """True when the server has ended an idle connection (a restart, a failover), which psycopg would only learn
    from the next statement, failing it. The socket is polled, never read: a notification waiting there stays
    its listener's, and the server's hang-up is seen even behind its farewell message."""
    if connection.pgconn.transaction_status != TransactionStatus.IDLE:
        return False
    poller = select.poll()
    try:
        poller.register(connection.fileno(), PEER_CLOSED)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _without_password(url: str) -> str:
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:
        return url.split("@")[-1] if "@" in url else url
    host, port, name = parts.get("host", "localhost"), parts.get("port"), parts.get("dbname", "")
    user = f"{parts['user']}@" if parts.get("user") else ""
    return f"postgresql://{user}{host}{':' + str(port) if port else ''}/{name}"
