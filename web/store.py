"""Run history: an SQLite file under the data directory or a PostgreSQL database, written by one thread in batches.

The event loop only puts writes on a queue. A writer thread commits what gathered over a few
milliseconds in one transaction (group commit), so a run never waits for the disk and fifty
concurrent runs cost about as many commits as one. Whoever must know a write is on disk (the 202 of
POST /api/runs) awaits `sync()`, which has it committed at once.

A write the disk refuses (full, read-only, I/O error) is kept and retried, logged at ERROR and
reported by `health()`: a full disk delays history, it does not silently drop it. A write that fails
because of one run's data is that run's problem alone (see store_rows): the value is stored repaired,
the run is refused through `on_refuse`, and every other run's writes go on.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from web.database import DB_NAME, Database, Location, StoreError, is_data_error, reason
from web.events import TERMINAL_RUN_STATUSES, EventType
from web.history_reads import HistoryReader, open_reader
from web.leases import Ownership
from web.store_rows import Refusal, Row, encode_event, encode_run, loads

log = logging.getLogger(__name__)

__all__ = ["DB_NAME", "RETRY_AFTER_SECONDS", "RunRow", "RunStore", "StoreError"]

LOCK_NAME = "stepline.lock"
# Caps one transaction, so a backlog is written in steps that each hold the write lock briefly.
BATCH_MAX = 2000
# After the first write of a quiet spell the writer waits this long for company: one commit then
# carries a run's events of that moment, not one commit (and one thread wake-up) per event. It bounds
# how far the disk may trail memory; `sync()` cuts the wait short for whoever needs the disk now.
COALESCE_SECONDS = 0.025
# Retry a failed write soon (a full disk may be cleared), without spinning on one that stays broken.
RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS = 0.5, 10.0
# What a refused new run is told to wait: by then the writer has retried at least once.
RETRY_AFTER_SECONDS = int(RETRY_MAX_SECONDS)
# Prune shortly after start, then now and then: retention is about days, not seconds.
PRUNE_FIRST_SECONDS, PRUNE_EVERY_SECONDS = 1.0, 600.0
# Runs deleted per transaction, so pruning a large backlog never stalls the writes of live runs.
PRUNE_CHUNK = 500
# PostgreSQL: while idle, the writer looks this often whether its connection is still there, so that health and
# new runs learn the database has gone (or come back) without waiting for a write to fail (or succeed).
IDLE_CHECK_SECONDS = 1.0
# Long enough to write a shutdown's last events; bounded so a broken disk cannot hang the exit.
CLOSE_TIMEOUT_SECONDS = 15.0


@dataclass(frozen=True)
class RunRow:
    """A run as the runs table holds it: everything but its steps."""

    run_id: str
    scenario_id: str
    status: str
    message: str
    input: dict[str, Any]
    created_at: str
    started_at: str | None
    finished_at: str | None
    # Who started it (their name; see the run's run_started for the source); None for nobody named.
    started_by: str | None = None


StoredRun = tuple[RunRow, list[dict[str, Any]]]
CommitListener = Callable[[dict[str, int]], None]
RefusalListener = Callable[[list[Refusal]], None]
LossListener = Callable[[set[str]], None]


class RunStore:
    """The history. `check()` and `open()` raise StoreError; writes never block the caller."""

    def __init__(
        self,
        location: Location | Path,
        *,
        retention_days: float,
        retention_runs: int,
        ownership: Ownership | None = None,
    ) -> None:
        """`ownership`: this process is one replica of several on a PostgreSQL database (web.leases)."""
        if isinstance(location, Path):
            location = Location.of(location, None)
        self.location = location
        # How clients see it (health, 503 messages): the directory as configured, or the URL without password.
        self.shown_dir = location.shown
        self.retention = timedelta(days=retention_days)
        self.retention_runs = retention_runs
        # Called on the event loop after each commit with {run_id: highest seq now on disk}.
        self.on_commit: CommitListener | None = None
        # Called on the event loop with the ids of runs pruned past retention.
        self.on_prune: Callable[[list[str]], None] | None = None
        # Called on the event loop, before the commit of the writes concerned, with runs refused for their data.
        self.on_refuse: RefusalListener | None = None
        # Called on the event loop with the runs another replica has taken from this one (web.leases).
        self.on_lost: LossListener | None = None
        self.ownership = ownership
        self.error: str | None = None
        self.batches = 0
        self.events_written = 0
        self._queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._closing = threading.Event()
        self._urgent = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock_fd: int | None = None
        self._writer: Database | None = None
        self._reader: HistoryReader | None = None
        # Refused runs (writer thread only) whose run_finished is not yet on disk: it is stored as failed.
        self._refused: dict[str, str] = {}
        # Runs (writer thread only) the batch being written found taken by another replica.
        self._lost: set[str] = set()
        # The batch is written again after its connection failed: rows already there are taken as written.
        self._replaying = False
        # Why the database did not answer the writer's last look while idle (PostgreSQL), until it does.
        self._unreachable: str | None = None

    # --- opening and closing --------------------------------------------------------------------

    def check(self) -> None:
        """Try everything `open` will need and undo it: a bad data directory or database is reported at start."""
        lock_fd = self._take_directory() if self.location.dialect == "sqlite" else None
        try:
            Database.open(self.location).close()
        finally:
            if lock_fd is not None:
                os.close(lock_fd)

    async def open(self) -> None:
        """Take the directory or database, bring its schema up to date and start the writer thread."""
        if self.location.dialect == "sqlite":
            self._lock_fd = self._take_directory()
        try:
            self._writer = await asyncio.to_thread(Database.open, self.location, check_same_thread=False)
            self._reader = await open_reader(self.location)
        except BaseException:
            await self._release()
            raise
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._closing.clear()
        self._thread = threading.Thread(target=self._write_loop, name="stepline-history-writer", daemon=True)
        self._thread.start()

    async def aclose(self) -> None:
        """Write what is queued, stop the writer and close; the event loop goes on while the last batch is written."""
        await asyncio.to_thread(self._stop_writer)
        await self._release()

    def _stop_writer(self) -> None:
        if self._thread is not None:
            self._queue.put(("stop", None))
            self._closing.set()
            self._urgent.set()
            self._thread.join(CLOSE_TIMEOUT_SECONDS)
            if self._thread.is_alive():
                # Leave its connection to it: closing a connection in use from another thread is unsafe.
                log.error("Run history writer did not finish within %gs; unwritten events are lost",
                          CLOSE_TIMEOUT_SECONDS)
                self._writer = None
            self._thread = None
        if self.ownership is not None and self._writer is not None:
            self._release_runs(self._writer)

    def _release_runs(self, database: Database) -> None:
        """Hand this replica's live runs to the others now, rather than when their leases run out."""
        assert self.ownership is not None
        try:
            if database.broken:
                database.reconnect()
            released = self.ownership.release(database)
        except Exception as exc:  # the database is gone: the leases run out instead, and the runs are taken then
            log.error("Could not hand this replica's runs over (%s); others take them when their leases end",
                      reason(exc))
            return
        if released:
            log.warning("Handed %d live run(s) over to the other replicas", len(released))

    def _take_directory(self) -> int:
        assert self.location.data_dir is not None
        directory = self.location.data_dir.absolute()
        if directory.exists() and not directory.is_dir():
            raise StoreError(f"data directory {directory} is not a directory")
        try:
            directory.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot use data directory {directory}: {exc.strerror or exc}") from None
        try:
            # Two servers on one file would each take the other's live runs for interrupted ones.
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock_fd)
            raise StoreError(f"data directory {directory} is in use by another Stepline process") from None
        return lock_fd

    async def _release(self) -> None:
        if self._reader is not None:
            await self._reader.close()
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- writing (from the event loop) ----------------------------------------------------------

    def add_run(self, row: RunRow, *, owned: bool = True) -> None:
        """`owned` False (replicas only): the run is queued for whichever replica has room to claim it."""
        self._queue.put(("run", row, owned))

    def add_event(self, event: dict[str, Any]) -> None:
        self._queue.put(("event", event))
        if event["type"] == EventType.RUN_FINISHED:
            # A run's end is written at once: the next request (a new run's sync, a read of the run once it
            # has left memory) then finds nothing of it still waiting.
            self._urgent.set()

    async def sync(self) -> None:
        """Return once everything added before this call is committed; StoreError if it cannot be."""
        if self.error is not None:
            raise self._unwritable(self.error)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put(("sync", future))
        self._urgent.set()
        await future

    async def confirm(self, run_id: str) -> bool:
        """Whether this replica still owns the run, once everything added before is committed: asked before a
        step calls its tool, so a replica that lost the run calls nothing more of it. True without replicas."""
        if self.ownership is None:
            return True
        # While the database is away this waits: the run pauses before its next call, and goes on once it is back.
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.put(("confirm", (run_id, future)))
        self._urgent.set()
        return await future

    def health(self) -> dict[str, Any]:
        error = self.error or self._unreachable
        return {"state": "failing" if error else "ok", "path": self.location.shown_file, "error": error}

    def _unwritable(self, error: str) -> StoreError:
        return StoreError(f"run history in {self.shown_dir} cannot be written: {error}")

    # --- reading (web.history_reads: indexed and small; never waits for the writer) ----------------

    async def load(self, run_id: str) -> StoredRun | None:
        rows = await self._reads().fetchall(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            return None
        return _run_row(rows[0]), await self.events_after(run_id)

    async def unfinished(self) -> list[StoredRun]:
        """Runs the history says are queued, running or waiting: at start, those a stopped process left behind."""
        rows = await self._reads().fetchall(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE status IN ('queued', 'running', 'waiting') ORDER BY created_at"
        )
        return [(_run_row(row), await self.events_after(row[0])) for row in rows]

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Any other read (`?` placeholders): API tokens, for one."""
        return await self._reads().fetchall(sql, params)

    async def list_runs(
        self,
        *,
        scenario_id: str | None,
        status: str | None,
        limit: int,
        before: tuple[str, str] | None,
        started_by: str | None = None,
        status_also: Sequence[str] = (),
    ) -> list[RunRow]:
        """Newest first; `before` is the (created_at, run_id) the previous page ended with.

        `status_also`: runs that have `status` now though their row may not say so yet (it trails memory by a
        batch); they are listed whatever their row's status, for the caller to check.
        """
        where, params = [], []
        if scenario_id is not None:
            where.append("scenario_id = ?")
            params.append(scenario_id)
        if status is not None:
            also = list(status_also)
            where.append(f"(status = ? OR run_id IN ({', '.join('?' * len(also))}))" if also else "status = ?")
            params.extend([status, *also])
        if started_by is not None:
            where.append("started_by = ?")
            params.append(started_by)
        if before is not None:
            where.append("(created_at, run_id) < (?, ?)")
            params.extend(before)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._reads().fetchall(
            f"SELECT {RUN_COLUMNS} FROM runs {clause} ORDER BY created_at DESC, run_id DESC LIMIT ?",
            (*params, limit),
        )
        return [_run_row(row) for row in rows]

    async def events_after(self, run_id: str, after: int = 0) -> list[dict[str, Any]]:
        """The run's stored events with seq > `after`, in order."""
        rows = await self._reads().fetchall(
            "SELECT seq, type, data FROM events WHERE run_id = ? AND seq > ? ORDER BY seq", (run_id, after)
        )
        # Same key order as RunRecord.emit builds, so a replayed event serialises identically.
        return [{"type": kind, "run_id": run_id, "seq": seq, **loads(data)} for seq, kind, data in rows]

    def _reads(self) -> HistoryReader:
        if self._reader is None:
            raise StoreError(f"run history in {self.shown_dir} is not open")
        return self._reader

    # --- the writer thread ----------------------------------------------------------------------

    def _write_loop(self) -> None:
        assert self._writer is not None
        pending: list[tuple[str, Any]] = []
        stopping = False
        retry = RETRY_FIRST_SECONDS
        next_prune = time.monotonic() + PRUNE_FIRST_SECONDS
        while True:
            if not pending:
                if stopping:
                    return
                wait = max(0.0, next_prune - time.monotonic())
                if self._writer.dialect == "postgresql":
                    wait = min(wait, IDLE_CHECK_SECONDS)
                try:
                    pending.append(self._queue.get(timeout=wait))
                except queue.Empty:
                    self._check_connection(self._writer)
                else:
                    self._urgent.wait(COALESCE_SECONDS)
            # Cleared before gathering: a sync queued after this point sets it again for the next round.
            self._urgent.clear()
            stopping = self._gather(pending) or stopping
            if pending:
                try:
                    if self._writer.broken:
                        self._writer.reconnect()
                    self._write(self._writer, pending)
                except Exception as exc:  # any failure keeps the batch: retried, never dropped in silence
                    # The connection may have gone after the database committed the batch but before it said so:
                    # written again, what is already there is taken as written.
                    self._replaying = not is_data_error(exc)
                    final = stopping or self._closing.is_set()
                    self._write_failed(exc, pending, final)
                    if final:
                        return
                    self._closing.wait(retry)
                    retry = min(retry * 2, RETRY_MAX_SECONDS)
                    continue
                if self.error is not None:
                    log.warning("Run history in %s is being written again", self.shown_dir)
                    self.error = None
                self._unreachable = None
                self._replaying = False
                pending = []
                retry = RETRY_FIRST_SECONDS
            if time.monotonic() >= next_prune and not stopping:
                next_prune = time.monotonic() + (0 if self._prune_chunk(self._writer) else PRUNE_EVERY_SECONDS)

    def _check_connection(self, database: Database) -> None:
        """Idle on PostgreSQL: reconnect a connection the server closed, and say whether the database answers.

        What it finds shows in `health` only: a new run is refused for a write that failed, never for this
        look having failed a moment before the database came back."""
        try:
            if database.broken:
                database.reconnect()
            if self.error is not None or self._unreachable is not None:
                database.execute("SELECT 1")
        except Exception as exc:  # the database's own errors, whichever: it is away
            if self._unreachable is None and self.error is None:
                log.error("Run history in %s cannot be reached: %s", self.shown_dir, reason(exc))
            self._unreachable = reason(exc)
            return
        if self.error is not None or self._unreachable is not None:
            log.warning("Run history in %s can be reached again", self.shown_dir)
        self.error = self._unreachable = None

    def _gather(self, pending: list[tuple[str, Any]]) -> bool:
        """Take what else is queued (up to a batch); True when the stop marker was among it."""
        stop = False
        while len(pending) < BATCH_MAX:
            try:
                op = self._queue.get_nowait()
            except queue.Empty:
                break
            if op[0] == "stop":
                stop = True
            else:
                pending.append(op)
        if pending and pending[0][0] == "stop":
            pending.pop(0)
            stop = True
        return stop

    def _write(self, connection: Database, pending: list[tuple[str, Any]]) -> None:
        """Commit `pending`. Raises only when the file or disk fails, with `pending` left as what did not land."""
        waiters = [op[1] for op in pending if op[0] == "sync"]
        confirms = [op[1] for op in pending if op[0] == "confirm"]
        refusals: dict[str, Refusal] = {}
        rows = [row for op in pending if op[0] not in WAITS and (row := self._encode(op, refusals)) is not None]
        # Before the commit and the waiters it wakes: a POST waiting for its row learns first that it was refused.
        self._report(refusals)
        self._lost = set()
        try:
            self._commit(connection, rows, confirming={run_id for run_id, _ in confirms})
        except Exception as exc:
            if not is_data_error(exc):
                raise
            self._commit_each_run(connection, rows, pending, exc)
        for row in rows:
            if row.finished is not None:
                self._refused.pop(row.run_id, None)
        landed = [row for row in rows if row.run_id not in self._lost]
        if self._lost:
            self._to_loop(self._report_lost, set(self._lost))
        self._to_loop(self._settle, _highest_seq(landed), waiters, None)
        self._to_loop(self._settle_confirms, confirms, set(self._lost))

    def _encode(self, op: tuple[str, Any], refusals: dict[str, Refusal]) -> Row | None:
        """`op` as SQL parameters; a run whose data cannot be stored as given is refused, its data repaired."""
        run_id = op[1].run_id if op[0] == "run" else op[1]["run_id"]
        try:
            if op[0] == "run":
                row = encode_run(op, refusals)
            else:
                row = encode_event(op, self._refused.get(run_id), refusals)
        except Exception as exc:  # repairing guarantees storable data; should it not, lose one write, not the batch
            log.error("Run %s: a write could not be encoded and is left out of its history: %s", run_id, reason(exc))
            refusals.setdefault(run_id, Refusal(run_id, f"a write could not be encoded ({reason(exc)})"))
            row = None
        if run_id in refusals and run_id not in self._refused:
            self._refuse(run_id, refusals[run_id].why)
        return row

    def _refuse(self, run_id: str, why: str) -> None:
        log.error("Run %s: its history in %s could not be recorded as given: %s", run_id, self.shown_dir, why)
        self._refused[run_id] = why

    def _commit(self, connection: Database, rows: list[Row], *, confirming: set[str] = frozenset()) -> None:
        """Commit `rows`; with replicas, only those of runs this replica still owns (the others join `_lost`)."""
        if not rows and not confirming:
            return
        again = " ON CONFLICT DO NOTHING" if self._replaying else ""
        with connection.transaction():
            if self.ownership is not None:
                new = {row.run_id for row in rows if row.run is not None}
                lost = self.ownership.fence(connection, ({row.run_id for row in rows} | confirming) - new)
                if lost:
                    self._lost |= lost
                    rows = [row for row in rows if row.run_id not in lost]
                self.ownership.insert_runs(
                    connection, [(row.run, row.op[2]) for row in rows if row.run is not None], again=self._replaying
                )
            else:
                connection.executemany(
                    "INSERT INTO runs (run_id, scenario_id, status, message, input, created_at, started_by)"
                    f" VALUES (?, ?, ?, ?, ?, ?, ?){again}",
                    [row.run for row in rows if row.run is not None],
                )
            events = [row.event for row in rows if row.event is not None]
            connection.executemany(f"INSERT INTO events (run_id, seq, type, data) VALUES (?, ?, ?, ?){again}", events)
            connection.executemany(
                "UPDATE runs SET status = 'running', started_at = ? WHERE run_id = ?",
                [row.started for row in rows if row.started is not None],
            )
            connection.executemany(
                "UPDATE runs SET status = ? WHERE run_id = ? AND status IN ('running', 'waiting')",
                [row.status for row in rows if row.status is not None],
            )
            connection.executemany(
                "UPDATE runs SET status = ?, message = ?, finished_at = ? WHERE run_id = ?",
                [row.finished for row in rows if row.finished is not None],
            )
            if self.ownership is not None:
                self.ownership.announce(connection, _highest_seq(rows))
        self.batches += 1
        self.events_written += len(events)

    def _commit_each_run(
        self, connection: Database, rows: list[Row], pending: list[tuple[str, Any]], exc: Exception
    ) -> None:
        """After a batch failed on some run's data: each run in its own transaction, so the others land."""
        log.warning("Run history in %s: a batch failed (%s); writing it run by run", self.shown_dir, reason(exc))
        by_run: dict[str, list[Row]] = {}
        for row in rows:
            by_run.setdefault(row.run_id, []).append(row)
        landed: list[Row] = []
        try:
            for run_id, run_rows in by_run.items():
                try:
                    self._commit(connection, run_rows)
                except Exception as run_exc:
                    if not is_data_error(run_exc):
                        raise
                    self._commit_each_write(connection, run_id, run_rows, run_exc)
                landed.extend(run_rows)
        except Exception:
            # The disk failed midway: what landed is done; the rest stays pending and is retried.
            done = {id(row.op) for row in landed}
            pending[:] = [op for op in pending if id(op) not in done]
            self._to_loop(self._settle, _highest_seq(landed), [], None)
            raise

    def _commit_each_write(self, connection: Database, run_id: str, rows: list[Row], exc: Exception) -> None:
        """One run's writes, one transaction each: a write the file refuses is left out, and the run refused."""
        if run_id not in self._refused:
            self._refuse(run_id, f"the history file refused one of its writes ({reason(exc)})")
        refusals = {run_id: Refusal(run_id, self._refused[run_id])}
        for row in rows:
            # Encoded again now that the run is refused: its run_finished is stored as failed.
            again = self._encode(row.op, refusals)
            try:
                self._commit(connection, [again] if again is not None else [])
            except Exception as write_exc:
                if not is_data_error(write_exc):
                    raise
                log.error("Run %s: event %d is left out of its history: %s", run_id, row.seq, reason(write_exc))
        self._report(refusals)

    def _report(self, refusals: dict[str, Refusal]) -> None:
        if refusals and self.on_refuse is not None:
            self._to_loop(self.on_refuse, list(refusals.values()))

    def _write_failed(self, exc: Exception, pending: list[tuple[str, Any]], final: bool) -> None:
        why = reason(exc)
        waiters = [op[1] for op in pending if op[0] == "sync"]
        # A step waiting to know its run is still this replica's waits on: the answer comes once the database does.
        pending[:] = [op for op in pending if op[0] != "sync"]
        held = sum(1 for op in pending if op[0] == "event")
        if final:
            held += self._queue.qsize()
            log.error("Run history in %s could not be written at shutdown: %s; %d writes are lost", self.shown_dir,
                      why, held)
        elif self.error is None:
            log.error("Run history in %s cannot be written: %s; %d events held in memory and retried",
                      self.shown_dir, why, held)
        self.error = why
        self._to_loop(self._settle, {}, waiters, why)

    def _prune_chunk(self, connection: Database) -> bool:
        """Delete one chunk of finished runs past retention; True when more may remain."""
        cutoff = (datetime.now(UTC) - self.retention).isoformat(timespec="milliseconds")
        try:
            boundary = connection.execute(
                "SELECT created_at, run_id FROM runs ORDER BY created_at DESC, run_id DESC LIMIT 1 OFFSET ?",
                (self.retention_runs - 1,),
            ).fetchone()
            keep_from = max((cutoff, ""), tuple(boundary) if boundary else ("", ""))
            with connection.transaction():
                doomed = [
                    row[0]
                    for row in connection.execute(
                        "SELECT run_id FROM runs WHERE (created_at, run_id) < (?, ?) AND status IN (?, ?, ?) LIMIT ?",
                        (*keep_from, *sorted(status.value for status in TERMINAL_RUN_STATUSES), PRUNE_CHUNK),
                    )
                ]
                connection.executemany("DELETE FROM events WHERE run_id = ?", [(r,) for r in doomed])
                connection.executemany("DELETE FROM runs WHERE run_id = ?", [(r,) for r in doomed])
        except Exception as exc:  # the database's own errors, whichever it is: pruning waits for the next round
            log.error("Pruning run history in %s failed: %s", self.shown_dir, reason(exc))
            return False
        if doomed:
            log.info("Pruned %d run(s) past retention from %s", len(doomed), self.location.shown_file)
            if self.on_prune is not None:
                self._to_loop(self.on_prune, doomed)
        return len(doomed) == PRUNE_CHUNK

    def _to_loop(self, callback: Callable[..., None], *args: Any) -> None:
        if self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            pass  # the loop has closed: nobody is waiting any more

    def _report_lost(self, lost: set[str]) -> None:
        if self.on_lost is not None:
            self.on_lost(lost)

    def _settle_confirms(self, confirms: list[tuple[str, asyncio.Future[bool]]], lost: set[str]) -> None:
        for run_id, future in confirms:
            if not future.done():
                future.set_result(run_id not in lost)

    def _settle(self, saved: dict[str, int], waiters: list[asyncio.Future[None]], error: str | None) -> None:
        for waiter in waiters:
            if waiter.done():
                continue
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(self._unwritable(error))
        if saved and self.on_commit is not None:
            self.on_commit(saved)


# Queued beside the writes, but not writes themselves: someone waiting for the writes before them.
WAITS = ("sync", "confirm")
RUN_COLUMNS = "run_id, scenario_id, status, message, input, created_at, started_at, finished_at, started_by"


def _run_row(row: tuple[Any, ...]) -> RunRow:
    run_id, scenario_id, status, message, run_input, created_at, started_at, finished_at, started_by = row
    return RunRow(
        run_id, scenario_id, status, message, loads(run_input), created_at, started_at, finished_at, started_by
    )


def _highest_seq(rows: list[Row]) -> dict[str, int]:
    saved: dict[str, int] = {}
    for row in rows:
        if row.seq > saved.get(row.run_id, 0):
            saved[row.run_id] = row.seq
    return saved
