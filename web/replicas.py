"""Replicas: several `stepline serve` processes sharing one PostgreSQL database behind a load balancer.

Each replica has an id and owns the live runs it runs, each for a lease it renews by heartbeat (lease
times from the database's clock, so the replicas' own clocks need not agree):

- it claims runs (`FOR UPDATE SKIP LOCKED`): those queued for anyone, those a replica shutting down
  handed over, and those whose owner stopped renewing (killed, frozen, cut off), up to its
  `max_concurrent_runs`, and goes on with them as after a restart (web.resume);
- it follows the runs others own: a NOTIFY carries a run's id and seq, the events are read from the
  table and appended to the copy here, whose streams and pages then go on as for a local run;
- a command for a run another replica owns (cancel, an answer, Resume) is written to run_commands and
  announced; the owner carries it out and replies the same way. A run nobody owns any more is claimed
  first, then the command is carried out here;
- a replica that finds a run of its own claimed by another (its renewal or a write refused: web.leases)
  stops it without recording anything more, and follows it instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg

from web.database import StoreError, reason
from web.leases import EVENTS_CHANNEL, LIVE_STATUSES, RUNS_CHANNEL, Ownership
from web.registry import RunRecord, RunRegistry
from web.store import RunStore

log = logging.getLogger(__name__)

COMMANDS_CHANNEL = "stepline_commands"  # "<command_id> <run_id>": a command for the run's owner
REPLIES_CHANNEL = "stepline_replies"  # "<command_id>": its reply is in run_commands
# Claims are looked for this often even when no NOTIFY says so (a lease that ran out sends none).
CLAIM_EVERY_SECONDS = 1.0
# A listening connection lost is opened again after this long, then longer, up to the most.
LISTEN_RETRY_SECONDS, LISTEN_RETRY_MAX_SECONDS = 0.5, 5.0

Perform = Callable[[RunRecord, dict[str, Any]], Awaitable[dict[str, Any]]]
Resume = Callable[[], Awaitable[list[str]]]


class OwnerUnreachable(Exception):
    """The replica running a run did not answer a command for it in time."""


def default_replica_id(port: int | None) -> str:
    """host:port when serving (stable across restarts, so a replica restarted at once takes its own runs
    back without waiting for their leases), else host and process id."""
    return f"{socket.gethostname()}:{port}" if port else f"{socket.gethostname()}:pid{os.getpid()}"


class Replica:
    def __init__(
        self,
        ownership: Ownership,
        store: RunStore,
        registry: RunRegistry,
        *,
        resume: Resume,
    ) -> None:
        """`resume`: goes on with the runs the registry has just adopted (web.runner.Runner.resume_unfinished)."""
        self.ownership = ownership
        self.id = ownership.replica_id
        self.store = store
        self.registry = registry
        self._resume = resume
        # Carries out a command for a run this replica owns (web.runs.RunService.perform).
        self.perform: Perform | None = None
        self._claim_now = asyncio.Event()
        self._replies: dict[str, asyncio.Future[str]] = {}
        self._refreshing: dict[str, asyncio.Lock] = {}
        self._listening = False
        self.database_error: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- the replica's life ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Replica]:
        """Listen, renew leases and claim runs for as long as the block lasts."""
        await self._claim(first=True)
        loops = [
            asyncio.create_task(self._listen(), name="replica listen"),
            asyncio.create_task(self._heartbeat(), name="replica heartbeat"),
            asyncio.create_task(self._claims(), name="replica claims"),
        ]
        try:
            yield self
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)

    def health(self) -> dict[str, Any]:
        leases = sorted(record.run_id for record in self.registry.owned_live())
        return {
            "id": self.id,
            "leases": len(leases),
            "runs": leases[:100],
            "max_concurrent_runs": self.registry.max_concurrent_runs,
            "lease_seconds": self.ownership.lease_seconds,
            "listening": self._listening,
            "database": "failing" if self.database_error else "ok",
            "error": self.database_error,
        }

    # --- leases ---------------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        every = self.ownership.lease_seconds / 3
        while True:
            await asyncio.sleep(every)
            try:
                await self._renew()
            except StoreError as exc:
                self._failing(exc)

    async def _renew(self) -> None:
        """Extend every lease this replica holds; a run it holds no lease for any more is another's now."""
        live = {record.run_id for record in self.registry.owned_live()}
        rows = await self.store.fetchall(
            "UPDATE runs SET lease_until = now() + make_interval(secs => ?) WHERE owner = ? AND status IN (?, ?, ?)"
            " RETURNING run_id",
            (self.ownership.lease_seconds, self.id, *LIVE_STATUSES),
        )
        self._recovered()
        renewed = {row[0] for row in rows}
        # A run whose row has not reached the database yet is not missing from it: only those committed count.
        lost = {run_id for run_id in live - renewed if self._committed(run_id)}
        if lost:
            self.registry.lose(lost)

    def _committed(self, run_id: str) -> bool:
        record = self.registry.held(run_id)
        return record is not None and record.saved_seq > 0

    async def _claims(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._claim_now.wait(), CLAIM_EVERY_SECONDS)
            self._claim_now.clear()
            try:
                await self._claim()
                await self._catch_up()
            except StoreError as exc:
                self._failing(exc)

    async def _claim(self, *, first: bool = False, run_id: str | None = None, resume: bool = True) -> list[str]:
        """Claim runs nobody runs, as many as there is room for, and go on with them; their ids.

        `first`: at start, this replica's own runs too (left by its previous life, same id). `run_id`: that run
        alone, whatever the room (a command for a run nobody runs). `resume` False: kept but not gone on with."""
        room = 1 if run_id is not None else self.registry.max_concurrent_runs - len(self.registry.owned_live())
        if room <= 0:
            return []
        # Never a run this replica runs now: its own lease may have run out while the database was away, and
        # the heartbeat renews it; claiming it would run it twice.
        whose = "owner = ? OR owner IS NULL OR lease_until < now()" if first else (
            "owner IS NULL OR (lease_until < now() AND owner <> ?)"
        )
        which = "run_id = ? AND " if run_id is not None else ""
        params: tuple[Any, ...] = (
            self.id,
            self.ownership.lease_seconds,
            *((run_id,) if run_id is not None else ()),
            *LIVE_STATUSES,
            self.id,
            room,
        )
        rows = await self.store.fetchall(
            "UPDATE runs SET owner = ?, lease_until = now() + make_interval(secs => ?) WHERE run_id IN ("
            f" SELECT run_id FROM runs WHERE {which}status IN (?, ?, ?) AND ({whose})"
            " ORDER BY created_at LIMIT ? FOR UPDATE SKIP LOCKED) RETURNING run_id",
            params,
        )
        self._recovered()
        claimed = [row[0] for row in rows]
        for claimed_id in claimed:
            stored = await self.store.load(claimed_id)
            if stored is not None:
                self.registry.adopt(*stored)
        if claimed:
            log.warning("Replica %s claimed %d run(s): %s", self.id, len(claimed), ", ".join(claimed))
            if resume:
                await self._resume()
        return claimed

    # --- notifications --------------------------------------------------------------------------

    async def _listen(self) -> None:
        retry = LISTEN_RETRY_SECONDS
        assert self.store.location.url is not None
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.store.location.url, autocommit=True) as conn:
                    for channel in (EVENTS_CHANNEL, RUNS_CHANNEL, COMMANDS_CHANNEL, REPLIES_CHANNEL):
                        await conn.execute(f"LISTEN {channel}")
                    self._listening, retry = True, LISTEN_RETRY_SECONDS
                    # Anything announced while nobody listened is read now.
                    self._claim_now.set()
                    try:
                        await self._catch_up()
                    except StoreError as exc:
                        self._failing(exc)
                    async for note in conn.notifies():
                        self._on_note(note.channel, note.payload)
            except (psycopg.Error, OSError) as exc:
                if self._listening:
                    log.error("Replica %s stopped hearing from the database: %s", self.id, reason(exc))
                self._listening = False
                await asyncio.sleep(retry)
                retry = min(retry * 2, LISTEN_RETRY_MAX_SECONDS)

    def _on_note(self, channel: str, payload: str) -> None:
        if channel == EVENTS_CHANNEL:
            run_id, _, seq = payload.partition(" ")
            record = self.registry.held(run_id)
            if record is not None and record.is_mirror and int(seq or 0) > len(record.events):
                self._spawn(self.refresh(run_id))
        elif channel == RUNS_CHANNEL:
            self._claim_now.set()
        elif channel == COMMANDS_CHANNEL:
            command_id, _, run_id = payload.partition(" ")
            record = self.registry.held(run_id)
            if record is not None and record.task is not None and not record.is_mirror:
                self._spawn(self._carry_out(command_id, record))
        elif channel == REPLIES_CHANNEL:
            waiter = self._replies.get(payload)
            if waiter is not None and not waiter.done():
                waiter.set_result(payload)

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def refresh(self, run_id: str) -> None:
        """Bring this replica's copy of a run another owns up to date from the events table."""
        lock = self._refreshing.setdefault(run_id, asyncio.Lock())
        async with lock:
            record = self.registry.held(run_id)
            if record is None or not record.is_mirror:
                self._refreshing.pop(run_id, None)  # gone from memory, or this replica's own now
                return
            try:
                events = await self.store.events_after(run_id, len(record.events))
            except StoreError as exc:
                self._failing(exc)
                return
            record.take_stored(events)
            if record.is_finished:
                self._refreshing.pop(run_id, None)

    async def _catch_up(self) -> None:
        """Refresh the copies that trail the history. A NOTIFY reaches a copy only if it is a mirror when the note
        arrives: a run this replica lost became one after the notes of its new owner's events (it was frozen
        meanwhile, say), and a run read back from the history may miss the note of its next event."""
        behind = {record.run_id: len(record.events) for record in self.registry.recent()
                  if record.is_mirror and not record.is_finished}
        if not behind:
            return
        rows = await self.store.fetchall(
            "SELECT run_id, max(seq) FROM events WHERE run_id = ANY(?) GROUP BY run_id", (sorted(behind),)
        )
        for run_id, seq in rows:
            if seq > behind[run_id]:
                await self.refresh(run_id)

    # --- commands for a run's owner -------------------------------------------------------------

    async def command(self, record: RunRecord, command: dict[str, Any]) -> dict[str, Any] | None:
        """Have the run's owner carry out `command`; its reply. None when nobody ran the run any more and this
        replica has claimed it: the caller then carries the command out here. OwnerUnreachable, StoreError."""
        rows = await self.store.fetchall(
            "SELECT owner, lease_until < now() FROM runs WHERE run_id = ?", (record.run_id,)
        )
        if not rows or rows[0][0] is None or rows[0][1]:
            # Claimed to be cancelled: not started first (a queued run would begin, and could call a tool).
            if await self._claim(run_id=record.run_id, resume=command.get("command") != "cancel"):
                return None
        command_id = uuid.uuid4().hex
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._replies[command_id] = waiter
        rows: list[tuple[Any, ...]] = []
        try:
            await self.store.fetchall(
                "INSERT INTO run_commands (command_id, run_id, command, sent_at) VALUES (?, ?, ?, now())"
                " RETURNING command_id",
                (command_id, record.run_id, json.dumps(command)),
            )
            await self.store.fetchall("SELECT pg_notify(?, ?)", (COMMANDS_CHANNEL, f"{command_id} {record.run_id}"))
            try:
                await asyncio.wait_for(waiter, self.ownership.lease_seconds)
            except TimeoutError:
                raise OwnerUnreachable(
                    f"the replica running run {record.run_id} did not answer within {self.ownership.lease_seconds:g}s"
                ) from None
        finally:
            self._replies.pop(command_id, None)
            # Taken back whether answered or not: an owner that wakes late finds nothing left to do.
            with contextlib.suppress(StoreError):
                rows = await self.store.fetchall(
                    "DELETE FROM run_commands WHERE command_id = ? RETURNING reply", (command_id,)
                )
        await self.refresh(record.run_id)
        if not rows or not rows[0][0]:
            raise OwnerUnreachable(f"the replica running run {record.run_id} did not answer")
        return json.loads(rows[0][0])

    async def _carry_out(self, command_id: str, record: RunRecord) -> None:
        try:
            rows = await self.store.fetchall(
                "SELECT command FROM run_commands WHERE command_id = ? AND reply IS NULL", (command_id,)
            )
            if not rows or self.perform is None:
                return
            reply = await self.perform(record, json.loads(rows[0][0]))
            await self.store.fetchall(
                "UPDATE run_commands SET reply = ? WHERE command_id = ? RETURNING command_id",
                (json.dumps(reply), command_id),
            )
            await self.store.fetchall("SELECT pg_notify(?, ?)", (REPLIES_CHANNEL, command_id))
        except StoreError as exc:
            self._failing(exc)

    # --- the database's state -------------------------------------------------------------------

    def _failing(self, exc: Exception) -> None:
        if self.database_error is None:
            log.error("Replica %s cannot reach the database: %s", self.id, exc)
        self.database_error = str(exc)

    def _recovered(self) -> None:
        if self.database_error is not None:
            log.warning("Replica %s reaches the database again", self.id)
            self.database_error = None

