"""Runs in memory: each RunRecord owns an append-only event list, the single source of truth.

Snapshots, pages and streams are views of that list. Subscribers read it at their own cursor and
are woken by a shared asyncio.Event that is replaced on every wake, so a stalled subscriber costs
nothing and holds no buffer of its own. An event after a quiet spell wakes them at once, and so does
the run's end; events that come quickly wake them every WAKE_INTERVAL_SECONDS, each wake finding all
that came meanwhile.

With a RunStore, memory is the live layer and the store the history: every run and event is handed
to the store as it happens, a run not held in memory (evicted, or from before a restart) is rebuilt
from its stored events, and a finished run leaves memory only once all its events are on disk. A run
whose data the store cannot hold is stopped (failed, saying why) and takes the store's repaired
version of that data, so memory shows what a restart will.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, replace
from typing import Any

from web.events import (
    TERMINAL_STEP_STATUSES,
    Actor,
    Event,
    EventType,
    RecordedEvent,
    RunStatus,
    StepStatus,
    run_finished,
    step_finished,
)
from web.run_list import DEFAULT_PAGE_SIZE, RunPage, decode_cursor, encode_cursor, summary_of
from web.run_state import RunState, utc_now
from web.store import RunRow, RunStore
from web.store_rows import STOPPED_STEP_MESSAGE, Refusal, refusal_message

log = logging.getLogger(__name__)

# How long POST /cancel waits for the run to record its ending, so the answer usually shows it.
CANCEL_WAIT_SECONDS = 2.0
# Followers (a run's streams) are woken at once by an event after a quiet spell, and at most this often
# while events come quickly: a run of fast steps costs its readers one write every few milliseconds,
# not one a step, and still looks live. The run's end wakes them at once.
WAKE_INTERVAL_SECONDS = 0.005


@dataclass(frozen=True)
class Ending:
    """How a run stopped from outside ends: its status and message, and how its running steps end.

    Steps that had not started end skipped, saying the run's message (`not_run`). `by`: who stopped it,
    for a cancel someone asked for.
    """

    status: RunStatus
    message: str
    step_message: str
    step_status: StepStatus = StepStatus.CANCELLED
    by: Actor | None = None

    @property
    def not_run(self) -> str:
        return f"Not run: {self.message}"


CANCELLED_BY_REQUEST = Ending(RunStatus.CANCELLED, "Cancelled by request", "Cancelled by request")
SHUT_DOWN = Ending(
    RunStatus.FAILED,
    "Interrupted: the server shut down while this run was in progress",
    "Interrupted: the server shut down during this step",
)
# A task cancelled by anything else (its own code, a test).
CANCELLED = Ending(RunStatus.CANCELLED, "Run cancelled", "Cancelled while running")
# A run live when its server shuts down, with a history: nothing is recorded, it goes on after the restart
# (web.resume).
SUSPENDED = Ending(RunStatus.RUNNING, "Going on after the restart", "Going on after the restart", StepStatus.RUNNING)


def history_refused(why: str) -> Ending:
    """How a run ends when the history cannot record its data; the store words its run_finished alike."""
    return Ending(RunStatus.FAILED, refusal_message(why), STOPPED_STEP_MESSAGE)


class RunRecord:
    """A run: its event list, the state folded from it, and the task executing it."""

    def __init__(
        self,
        run_id: str,
        scenario_id: str,
        run_input: dict[str, Any],
        created_at: str,
        *,
        started_by: Actor | None = None,
        sink: Callable[[dict[str, Any]], None] | None = None,
        history_writing: Callable[[], bool] | None = None,
        confirm: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        """`sink`: where its events are written (None: nowhere, or, with replicas, a run another one runs and this
        one mirrors from the history). `confirm`: with replicas, whether this one still owns it (web.leases)."""
        self.state = RunState(
            run_id=run_id, scenario_id=scenario_id, input=run_input, created_at=created_at, started_by=started_by
        )
        self.events: list[dict[str, Any]] = []
        self.task: asyncio.Task[None] | None = None
        # Set before the task is cancelled from outside: how the runner should record the ending.
        self.stop_reason: Ending | None = None
        # How many of `events` the store has committed (all of them when there is no store).
        self.saved_seq = 0
        self._sink = sink
        self._confirm = confirm
        # Streams following it: a mirrored run nobody follows need not be kept up to date in memory.
        self.followers = 0
        # Whether the history writes now (None: always); while it fails, readers get events from memory.
        self._history_writing = history_writing
        self._appended = asyncio.Event()
        self._woken_at = -WAKE_INTERVAL_SECONDS  # the event loop's time of the last wake
        self._wake_later: asyncio.TimerHandle | None = None

    @classmethod
    def restore(
        cls,
        row: RunRow,
        events: list[dict[str, Any]],
        *,
        sink: Callable[[dict[str, Any]], None] | None = None,
        history_writing: Callable[[], bool] | None = None,
        confirm: Callable[[str], Awaitable[bool]] | None = None,
    ) -> RunRecord:
        """A run rebuilt from its stored row and events: the same fold as when it ran.

        Its run_started says who started it; a run that never started has only the row's name, source unknown.
        """
        started_by = {"name": row.started_by, "source": None} if row.started_by is not None else None
        record = cls(
            row.run_id,
            row.scenario_id,
            row.input,
            row.created_at,
            started_by=started_by,
            sink=sink,
            history_writing=history_writing,
            confirm=confirm,
        )
        for event in events:
            record.events.append(event)
            record.state.apply(event)
        record.saved_seq = len(events)
        return record

    @property
    def run_id(self) -> str:
        return self.state.run_id

    @property
    def readable(self) -> int:
        """How many of `events` readers are given: with a history, those on disk, so that a reader never sees an
        event that a crash could take back (a restarted run would reuse its seq); without one, all of them."""
        if self._sink is None or (self._history_writing is not None and not self._history_writing()):
            return len(self.events)
        return min(self.saved_seq, len(self.events))

    @property
    def is_over(self) -> bool:
        """Nothing more will be read of it in this process: finished and every event readable, or left for the
        restart (suspended)."""
        return (self.is_finished and self.readable == len(self.events)) or self.is_suspended

    @property
    def is_suspended(self) -> bool:
        """Left unfinished by a server shutting down, to go on after its restart (web.resume): nothing more comes."""
        return self.stop_reason is SUSPENDED

    @property
    def is_finished(self) -> bool:
        return self.state.is_finished

    @property
    def is_mirror(self) -> bool:
        """Run by another replica: its events come from the history (`take_stored`), none are emitted here."""
        return self._sink is None and self._confirm is None and self.task is None and self._mirrored

    _mirrored = False

    async def confirm(self) -> None:
        """Return once the history says this replica still owns the run (at once without replicas). A run taken
        by another replica is cancelled meanwhile (RunRegistry), so a step never calls its tool for it."""
        if self._confirm is not None and not await self._confirm(self.run_id):
            raise asyncio.CancelledError(f"run {self.run_id} is now another replica's")

    def take_stored(self, events: list[dict[str, Any]]) -> int:
        """Append the events another replica committed (those that follow on from this copy's); how many."""
        taken = 0
        for event in events:
            if event["seq"] == len(self.events) + 1 and not self.state.is_finished:
                self.events.append(event)
                self.state.apply(event)
                taken += 1
        if taken:
            self.saved_seq = len(self.events)
            self._wake(self.state.is_finished)
        return taken

    def mirror(self) -> None:
        """From now on a copy of a run another replica runs: events it emitted but never committed are dropped
        (no reader saw them: readers get only what is on disk), and the rest come from the history."""
        del self.events[self.saved_seq :]
        self.state.refold(self.events)
        self._sink = self._confirm = None
        self.task = None
        self.stop_reason = None
        self._mirrored = True
        self._wake_now()

    def own(
        self, sink: Callable[[dict[str, Any]], None], history_writing: Callable[[], bool], confirm: Callable[..., Any]
    ) -> None:
        """This replica has claimed the run: it writes its events from now on."""
        self._sink, self._history_writing, self._confirm = sink, history_writing, confirm
        self._mirrored = False

    def emit(self, fields: Event) -> Event:
        """Append one event (made by a web.events constructor), fold it into the state and wake every subscriber."""
        state = self.state
        if state.is_finished:
            raise RuntimeError(f"run {self.run_id} has finished; no event may follow run_finished")
        # `type` first, then the run's own keys, then the event's fields.
        event = RecordedEvent(type=fields["type"], run_id=state.run_id, seq=len(self.events) + 1)
        event.update(fields)
        self._audit(event)
        self.events.append(event)
        state.apply(event)
        if self._sink is not None:
            self._sink(event)
        self._wake(state.is_finished)
        return event

    def _audit(self, event: Event) -> None:
        """Say who started the run on its run_started, and who cancelled it on its run_finished.

        The record knows both (from `create` and `cancel`), so whoever writes those events needs no notion
        of identities.
        """
        kind = event["type"]
        if kind == EventType.RUN_STARTED and event.get("started_by") is None and self.state.started_by is not None:
            event["started_by"] = self.state.started_by
        elif kind == EventType.RUN_FINISHED and event.get("cancelled_by") is None:
            stop = self.stop_reason
            # Only a cancel that took effect: a run that ended its own way meanwhile was not cancelled by anyone.
            if stop is not None and stop.by is not None and event["status"] == stop.status:
                event["cancelled_by"] = stop.by

    def amend(self, stored: list[dict[str, Any]], run_input: dict[str, Any] | None = None) -> None:
        """Take the history's version of events (and input) it had to repair, and fold the events again."""
        for event in stored:
            if 0 < event["seq"] <= len(self.events):
                self.events[event["seq"] - 1] = event
        if run_input is not None:
            self.state.input = run_input
        self.state.refold(self.events)
        self._wake(self.is_finished)

    def _wake(self, finished: bool) -> None:
        """Wake the followers: at once after a quiet spell and at the run's end, else at the next interval."""
        if self._wake_later is not None:
            if not finished:
                return  # a wake is due soon, and will find this event too
            self._wake_later.cancel()
        if not finished:
            try:
                loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:  # emitted outside the event loop, where nothing can be waiting: at once
                loop = None
            due = self._woken_at + WAKE_INTERVAL_SECONDS
            if loop is not None and loop.time() < due:
                self._wake_later = loop.call_at(due, self._wake_now)
                return
        self._wake_now()

    def _wake_now(self) -> None:
        self._wake_later = None
        with contextlib.suppress(RuntimeError):
            self._woken_at = asyncio.get_running_loop().time()
        woken, self._appended = self._appended, asyncio.Event()
        woken.set()

    async def follow(self, after: int = 0) -> AsyncIterator[dict[str, Any]]:
        """Events with seq > `after`: first those already recorded, then each as it is appended.

        Ends after run_finished. Nothing is lost or repeated, whatever is emitted meanwhile,
        because the cursor is an index into the one list.
        """
        cursor = max(after, 0)
        self.followers += 1
        try:
            while True:
                appended = self._appended
                while cursor < self.readable:
                    event = self.events[cursor]
                    cursor += 1
                    yield event
                    if event["type"] == EventType.RUN_FINISHED:
                        return
                if self.is_over:
                    return
                await appended.wait()
        finally:
            self.followers -= 1


def close(record: RunRecord, ending: Ending) -> None:
    """End a run that its runner no longer drives, the way `ending` says, from what its events show.

    Each step still running ends first, then the planned steps that never started (skipped), then the run.
    """
    now = utc_now()
    steps = record.state.steps
    for step in sorted(steps.values(), key=lambda s: s.index):
        if step.status not in TERMINAL_STEP_STATUSES:  # running, or waiting on a person
            record.emit(
                step_finished(
                    step_name=step.node_id,
                    index=step.index,
                    status=ending.step_status,
                    started_at=step.started_at,
                    finished_at=now,
                    message=ending.step_message,
                )
            )
    for index, planned in enumerate(record.state.plan or ()):
        if planned["name"] not in steps:
            record.emit(
                step_finished(
                    step_name=planned["name"],
                    index=index,
                    status=StepStatus.SKIPPED,
                    started_at=None,
                    finished_at=now,
                    message=ending.not_run,
                )
            )
    record.emit(run_finished(status=ending.status, finished_at=now, message=ending.message))


def _close_unfinished(record: RunRecord) -> None:
    # A task cancelled before it started never enters the runner (and a task that ended without
    # ending its run left it open): nothing else would write the endings its subscribers wait for.
    # A run suspended at shutdown is left as it is, on purpose, for the next start to resume.
    if not record.is_finished and record.stop_reason is not SUSPENDED:
        close(record, record.stop_reason or CANCELLED)


class RunAlreadyFinished(Exception):
    def __init__(self, record: RunRecord) -> None:
        super().__init__(f"Run {record.run_id} has already finished ({record.state.status})")
        self.record = record


class RunRegistry:
    """Runs by id, least recently used first; only finished (and, with a store, saved) runs are evicted."""

    def __init__(
        self,
        max_size: int,
        *,
        store: RunStore | None = None,
        max_concurrent_runs: int = 100,
    ) -> None:
        """With a `store`, runs outlive the process (web.resume): left as they are at shutdown, kept at start
        for the runner to resume. Without one, they end with it."""
        self.max_size = max_size
        self.store = store
        # With replicas: live runs this one runs at once; more wait in the history for any replica with room.
        self.max_concurrent_runs = max_concurrent_runs
        self._runs: OrderedDict[str, RunRecord] = OrderedDict()
        # Runs the history left unfinished, kept at start until the runner resumes or ends them (web.resume).
        self._suspended: list[RunRecord] = []
        # Runs being stopped because another replica took them.
        self._losing: set[str] = set()
        if store is not None:
            store.on_commit = self._saved
            store.on_prune = self._forget
            store.on_refuse = self._refused
            store.on_lost = self.lose

    @property
    def replicated(self) -> bool:
        """One replica of several on a shared database (web.replicas): runs are owned, claimed and mirrored."""
        return self.store is not None and self.store.ownership is not None

    def create(
        self, scenario_id: str, run_input: dict[str, Any], *, started_by: Actor | None = None, owned: bool = True
    ) -> RunRecord:
        """`started_by`: who started it (web.access.Identity.audit), None for nobody named. `owned` False (replicas
        only): queued in the history for whichever replica has room, not run here unless this one claims it."""
        record = RunRecord(
            str(uuid.uuid4()),
            scenario_id,
            run_input,
            utc_now(),
            started_by=started_by,
            **(self._writing() if owned else {}),
        )
        record._mirrored = not owned
        if self.store is not None:
            # Queued ahead of the run's first event, so the row is on disk before or with it.
            self.store.add_run(summary_of(record.state), owned=owned)
        self._runs[record.run_id] = record
        self._evict()
        return record

    def held(self, run_id: str) -> RunRecord | None:
        """The run if it is in memory (see `get`)."""
        return self._runs.get(run_id)

    async def get(self, run_id: str) -> RunRecord | None:
        """The run in memory, else rebuilt from the store (and held in memory again); StoreError."""
        record = self._runs.get(run_id)
        if record is not None:
            self._runs.move_to_end(run_id)
            return record
        if self.store is None:
            return None
        stored = await self.store.load(run_id)
        if stored is None:
            return None
        record = self._runs.get(run_id)  # read back meanwhile by another request
        if record is not None:
            return record
        record = RunRecord.restore(*stored)
        # With replicas, an unfinished run read back is another's: its copy here follows the history.
        record._mirrored = self.replicated and not record.is_finished
        self._runs[run_id] = record
        self._evict()
        return record

    def recent(self) -> list[RunRecord]:
        """Newest first, by creation time: the runs held in memory (see `page` for the history)."""
        return sorted(self._runs.values(), key=lambda r: r.state.created_at, reverse=True)

    async def page(
        self,
        *,
        scenario_id: str | None = None,
        status: str | None = None,
        started_by: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> RunPage:
        """Runs newest first, filtered (`started_by`: the starter's name), `limit` at a time; BadCursor for a
        cursor this never gave."""
        before = decode_cursor(cursor) if cursor else None
        if self.store is None:
            rows = self._page_in_memory(scenario_id, status, started_by, limit + 1, before)
        else:
            # A run in memory may have reached the status its row does not show yet.
            now_so = [rid for rid, record in self._runs.items() if status is not None and record.state.status == status]
            rows = await self.store.list_runs(
                scenario_id=scenario_id,
                status=status,
                started_by=started_by,
                limit=limit + 1,
                before=before,
                status_also=now_so,
            )
        next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
        # A live run's row trails its events by a batch; show what memory knows now.
        fresh = [summary_of(self._runs[row.run_id].state) if row.run_id in self._runs else row for row in rows[:limit]]
        return RunPage([row for row in fresh if status is None or row.status == status], next_cursor)

    def _page_in_memory(
        self,
        scenario_id: str | None,
        status: str | None,
        started_by: str | None,
        limit: int,
        before: tuple[str, str] | None,
    ) -> list[RunRow]:
        rows = sorted(
            (summary_of(record.state) for record in self._runs.values()),
            key=lambda row: (row.created_at, row.run_id),
            reverse=True,
        )
        return [
            row
            for row in rows
            if (scenario_id is None or row.scenario_id == scenario_id)
            and (status is None or row.status == status)
            and (started_by is None or row.started_by == started_by)
            and (before is None or (row.created_at, row.run_id) < before)
        ][:limit]

    def active(self) -> Iterable[RunRecord]:
        return [record for record in self._runs.values() if not record.is_finished]

    def __len__(self) -> int:
        return len(self._runs)

    def start(self, record: RunRecord, work: Callable[[RunRecord], Coroutine[Any, Any, None]]) -> None:
        record.task = asyncio.create_task(work(record), name=f"run {record.run_id}")
        record.task.add_done_callback(lambda _task: self._ended(record))

    def _ended(self, record: RunRecord) -> None:
        if record.run_id in self._losing:
            self._losing.discard(record.run_id)
            record.mirror()  # another replica runs it now: this copy follows the history
        else:
            _close_unfinished(record)

    def has_room(self) -> bool:
        """Whether a new run starts here now (always, but for a replica running as many as it may)."""
        return not self.replicated or len(self.owned_live()) < self.max_concurrent_runs

    def owned_live(self) -> list[RunRecord]:
        """The unfinished runs this process runs (or waits in), as opposed to those it only mirrors."""
        return [r for r in self._runs.values() if r.task is not None and not r.is_finished and r.stop_reason is None]

    def adopt(self, row: RunRow, events: list[dict[str, Any]]) -> RunRecord:
        """A run this replica has just claimed: kept, like the runs `recover` keeps, for the runner to go on with."""
        record = self._runs.get(row.run_id)
        if record is not None and record.task is not None and not record.is_finished:
            return record  # running here already: nothing to go on with
        if record is not None and record.task is None:
            record.take_stored(events)
            record.own(**self._writing())
        else:
            record = RunRecord.restore(row, events, **self._writing())
            self._runs[record.run_id] = record
        self._suspended.append(record)
        return record

    def _writing(self) -> dict[str, Any]:
        """How a run this process runs writes its history."""
        if self.store is None:
            return {}
        confirm = self.store.confirm if self.replicated else None
        return {"sink": self.store.add_event, "history_writing": self._history_writing, "confirm": confirm}

    def lose(self, run_ids: set[str]) -> None:
        """Runs another replica has taken (this one was frozen or cut off past their leases): stop each without
        recording anything more, and follow it from the history instead."""
        for run_id in run_ids:
            record = self._runs.get(run_id)
            if record is None or record.task is None or record.is_finished or run_id in self._losing:
                continue
            log.warning("Run %s is now run by another replica: this one stops it and follows it", run_id)
            self._losing.add(run_id)
            record.stop_reason = SUSPENDED
            record.task.cancel()

    async def sync(self) -> None:
        """Return once every run and event so far is on disk (at once without a store); StoreError."""
        if self.store is not None:
            await self.store.sync()

    async def cancel(self, run_id: str, *, cancelled_by: Actor | None = None) -> RunRecord | None:
        """Cancel a live run and wait (briefly) for it to record its ending; None when unknown.

        Raises RunAlreadyFinished. The running tool call is cancelled with the task, which makes the
        MCP client send the server its cancellation notification. Its run_finished names `cancelled_by`.
        """
        record = await self.get(run_id)
        if record is None:
            return None
        if record.is_finished:
            raise RunAlreadyFinished(record)
        # The first reason to stop wins: a second cancel, or one during a shutdown, changes nothing.
        record.stop_reason = record.stop_reason or replace(CANCELLED_BY_REQUEST, by=cancelled_by)
        if record.task is None:
            _close_unfinished(record)
            return record
        record.task.cancel()
        # asyncio.wait never cancels what it waits for, even if this request is cancelled meanwhile.
        await asyncio.wait({record.task}, timeout=CANCEL_WAIT_SECONDS)
        return record

    def stop_live(self) -> list[asyncio.Task[None]]:
        """Cancel every live run. With a store, each records nothing more and goes on after the restart
        (web.resume); without one, each records its ending (run_finished, failed: interrupted)."""
        records = [record for record in self.active() if record.task is not None]
        for record in records:
            # Only a run on disk can go on after the restart.
            record.stop_reason = record.stop_reason or (SUSPENDED if self.store is not None else SHUT_DOWN)
            assert record.task is not None
            record.task.cancel()
            if record.is_suspended:
                record._wake_now()  # its followers end: nothing more comes before the restart
        return [record.task for record in records if record.task is not None]

    async def cancel_all(self) -> None:
        """Cancel every live run and wait until each has recorded how it ended."""
        await asyncio.gather(*self.stop_live(), return_exceptions=True)

    @contextlib.asynccontextmanager
    async def history(self) -> AsyncIterator[None]:
        """Open the store and end the runs a stopped process left behind; at exit, write all and close."""
        if self.store is None:
            yield
            return
        await self.store.open()
        try:
            if not self.replicated:  # replicas claim runs instead (web.replicas)
                await self.recover()
            yield
        finally:
            await self.store.aclose()

    async def recover(self) -> list[str]:
        """Keep every stored run still queued, running or waiting (a stopped process left it unfinished,
        gracefully or not) for the runner to resume or end (`take_suspended`); their ids."""
        if self.store is None:
            return []
        kept = []
        for row, stored in await self.store.unfinished():
            record = RunRecord.restore(row, stored, **self._writing())
            self._suspended.append(record)
            self._runs[record.run_id] = record
            kept.append(row.run_id)
        if kept:
            log.warning("%d run(s) were unfinished when the server last stopped: they go on", len(kept))
        return kept

    def take_suspended(self) -> list[RunRecord]:
        """The runs `recover` kept, each once, for the runner to resume or end."""
        suspended, self._suspended = self._suspended, []
        return suspended

    def history_health(self) -> dict[str, Any] | None:
        return self.store.health() if self.store is not None else None

    def _saved(self, saved: dict[str, int]) -> None:
        for run_id, seq in saved.items():
            record = self._runs.get(run_id)
            if record is not None and seq > record.saved_seq:
                record.saved_seq = seq
                record._wake_now()  # its readers are given what is now on disk
        self._evict()

    def _history_writing(self) -> bool:
        return self.store is not None and self.store.error is None

    def _refused(self, refusals: list[Refusal]) -> None:
        for refusal in refusals:
            record = self._runs.get(refusal.run_id)
            if record is None:
                continue  # not in memory: it is read back from the history, repaired, when asked for
            record.amend(refusal.events, refusal.input)
            if record.is_finished:
                continue  # the store records its run_finished as failed, and `amend` has brought that here
            record.stop_reason = record.stop_reason or history_refused(refusal.why)
            if record.task is None:
                _close_unfinished(record)  # not started yet: its launch sees it finished and does not start it
            else:
                record.task.cancel()

    def _forget(self, run_ids: list[str]) -> None:
        # Pruned from disk, so gone from memory too: a run is listed and served alike, or not at all.
        for run_id in run_ids:
            record = self._runs.get(run_id)
            if record is not None and record.is_finished:
                del self._runs[run_id]

    def _evictable(self, record: RunRecord) -> bool:
        if record.is_mirror:  # read back from the history when asked for again
            return record.followers == 0
        # Until its last event is on disk, a finished run read back from the store would look unfinished.
        return record.is_finished and (self.store is None or record.saved_seq >= len(record.events))

    def _evict(self) -> None:
        excess = len(self._runs) - self.max_size
        if excess <= 0:
            return
        for run_id in [rid for rid, record in self._runs.items() if self._evictable(record)][:excess]:
            del self._runs[run_id]
