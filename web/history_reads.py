"""Reading the history from the event loop: SQLite on one read-only connection, PostgreSQL through a pool.

SQLite's reads are indexed, small and never wait for the writer (WAL), so they run on the loop as they
are. PostgreSQL's cross a network: they are awaited on a pool of connections, and a connection the
server dropped (a restart, a failover) is replaced and the read tried once more before it fails.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Protocol

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from web.database import CONNECT_TIMEOUT_SECONDS, Location, StoreError, connect_sqlite, reason

# Connections a PostgreSQL reader keeps at most: reads are short, so a few serve many requests.
POOL_MAX_SIZE = 8


class HistoryReader(Protocol):
    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    async def close(self) -> None: ...


class SqliteReader:
    def __init__(self, location: Location) -> None:
        self.location = location
        self._connection = connect_sqlite(location.path)
        self._connection.execute("PRAGMA query_only = 1")

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._connection.execute(sql, as_stored(params)).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"run history in {self.location.shown} cannot be read: {reason(exc)}") from None

    async def close(self) -> None:
        self._connection.close()


class PostgresReader:
    def __init__(self, location: Location) -> None:
        self.location = location
        assert location.url is not None
        self._pool = AsyncConnectionPool(
            location.url,
            min_size=1,
            max_size=POOL_MAX_SIZE,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_SECONDS},
            timeout=CONNECT_TIMEOUT_SECONDS,
            open=False,
        )

    async def open(self) -> None:
        try:
            await self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
        except PoolTimeout:
            await self._pool.close()
            raise StoreError(f"cannot read run history {self.location.shown}: no connection within "
                             f"{CONNECT_TIMEOUT_SECONDS}s") from None

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        query = sql.replace("?", "%s")
        for attempt in (1, 2):
            try:
                async with self._pool.connection() as connection:
                    cursor = await connection.execute(query, as_stored(params))
                    return await cursor.fetchall()
            except PoolTimeout as exc:
                # Checked first (it is an OperationalError too): no connection came in time, and a second wait
                # as long would only double how long the answer takes.
                raise self._unreadable(exc) from None
            except psycopg.OperationalError as exc:
                if attempt == 2:
                    raise self._unreadable(exc) from None
                # A restart of the server closes every pooled connection, not just this one: have the pool test
                # its idle ones and replace the dead, so the second try gets a live connection.
                await self._pool.check()
            except psycopg.Error as exc:
                raise self._unreadable(exc) from None
        raise AssertionError("unreachable")

    def _unreadable(self, exc: BaseException) -> StoreError:
        why = reason(exc) if isinstance(exc, psycopg.Error) else f"no free connection within {CONNECT_TIMEOUT_SECONDS}s"
        return StoreError(f"run history in {self.location.shown} cannot be read: {why}")

    async def close(self) -> None:
        await self._pool.close()


def as_stored(params: Sequence[Any]) -> Sequence[Any]:
    """`params` as the text columns hold them: NUL is stored as U+FFFD (web.store_rows.column_text), so a run id or
    filter with a NUL finds what was written with one, on either database, instead of PostgreSQL refusing it."""
    if not any(isinstance(param, str) and "\x00" in param for param in params):
        return params
    return [param.replace("\x00", "\ufffd") if isinstance(param, str) else param for param in params]


async def open_reader(location: Location) -> HistoryReader:
    if location.dialect == "sqlite":
        try:
            return SqliteReader(location)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read run history {location.shown_file}: {reason(exc)}") from None
    reader = PostgresReader(location)
    await reader.open()
    return reader
