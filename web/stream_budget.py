"""What open event streams may cost: how many at once, how long one may leave a frame unsent.

Every open stream holds a place: at most `max_per_run` on one run and `max_total` in the process.
Past either a new stream is refused (StreamsFull: the HTTP layer answers 503 with Retry-After)
until one ends. A stream that ends, is left or is dropped gives its place back at once.

The streams of one run share a RunFeed: it wakes them a moment after the run appends an event (so
the run's own next step goes first) and at each keep-alive interval, and hands out their turns to
write a few at a time, so that thousands of readers never hold the event loop for long. A run costs
one timer and a task or two whatever the number of its readers.

A stream whose client has not taken a frame within `send_timeout` is dropped: one sweeper for the
whole process looks at when each stream's pending write started, so a write costs no timer.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from sse_starlette.sse import AppStatus

from web.free_memory import release_free_memory
from web.registry import RunRecord

# What a refused client is told to wait: places free up as readers leave and runs end, any moment.
RETRY_AFTER_SECONDS = 5
# How long one turn of the event loop should take while streams write (see RunFeed): the longest
# wait for everything else (a run's MCP reply, another user's request) while thousands write.
SLICE_SECONDS = 0.0005
MIN_TURNS_PER_SLICE, MAX_TURNS_PER_SLICE = 1, 256
# How often the sweeper looks for stalled writes and for the server stopping, at most.
SWEEP_SECONDS = 0.5
# After this many streams were open at once and all have closed, freed memory goes back to the system.
CROWD_STREAMS = 100


class StreamsFull(Exception):
    """No place for another stream: `str(exc)` says which limit, `retry_after` when to try again."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.retry_after = RETRY_AFTER_SECONDS


class StreamPlace:
    """One open stream's place: its run's feed, and when its pending write started."""

    __slots__ = ("_budget", "feed", "writing_since", "dropped", "_on_drop", "closed")

    def __init__(self, budget: StreamBudget, feed: RunFeed) -> None:
        self._budget = budget
        self.feed = feed
        self.writing_since: float | None = None  # time.monotonic() while a write waits for the client
        self.dropped = False
        self._on_drop: Callable[[], None] | None = None
        self.closed = False

    def on_drop(self, callback: Callable[[], None] | None) -> None:
        """What stops the stream when its client is dropped for not reading (None: nothing to stop)."""
        self._on_drop = callback

    def drop(self) -> None:
        if self.closed or self.dropped:
            return
        self.dropped = True
        if self._on_drop is not None:
            self._on_drop()

    def close(self) -> None:
        """Give the place back (once, whichever way the stream ended)."""
        if not self.closed:
            self.closed = True
            self._budget._release(self)


class RunFeed:
    """Turns to write for the streams of one run, handed out a few at a time.

    A stream that has caught up waits for the next change (a new event or a keep-alive beat); one
    that has more to send waits for its next turn. Turns go out a slice at a time, one slice per
    turn of the event loop, each slice sized to keep that turn short: with thousands of readers,
    all behind, the runs' own I/O (MCP replies, heartbeats, other users' requests) is still served
    within about SLICE_SECONDS.
    """

    def __init__(self, record: RunRecord, keepalive: float) -> None:
        self.record = record
        self.keepalive = keepalive
        self.places: set[StreamPlace] = set()
        self.beats = 0  # keep-alive intervals passed: a stream with nothing to send then sends a comment
        self._waiting: list[asyncio.Future[None]] = []  # streams that have caught up
        self._turns: deque[asyncio.Future[None]] = deque()  # streams with something to write
        self._round: asyncio.Task[None] | None = None  # handing out turns while there are any
        self._watcher = asyncio.create_task(self._watch(record.readable), name=f"stream feed {record.run_id}")

    def next_change(self) -> asyncio.Future[None]:
        """Done at the next change: a new event, or the next keep-alive beat."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        return waiter

    def next_turn(self) -> asyncio.Future[None]:
        """Done at this stream's next turn to write."""
        waiter = asyncio.get_running_loop().create_future()
        self._turns.append(waiter)
        self._hand_out_turns()
        return waiter

    def close(self) -> None:
        self._watcher.cancel()
        if self._round is not None:
            self._round.cancel()

    async def _watch(self, seen: int) -> None:
        # `seen` is counted when the feed is made, with its first stream: an event appended before this
        # task first runs still wakes that stream.
        record = self.record
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + self.keepalive
        while seen < record.readable or not record.is_over:
            if seen >= record.readable:
                events = record.follow(seen)
                try:
                    async with asyncio.timeout_at(next_beat):
                        await anext(events, None)
                except TimeoutError:
                    self.beats += 1
                    next_beat = loop.time() + self.keepalive
                finally:
                    await events.aclose()
                # The run's task appended and carries on: let it reach its next await (its next MCP
                # request) before the readers are woken.
                await asyncio.sleep(0)
            seen = record.readable
            self._turns.extend(self._waiting)
            self._waiting.clear()
            self._hand_out_turns()

    def _hand_out_turns(self) -> None:
        if self._round is None:
            self._round = asyncio.create_task(self._hand_out(), name=f"stream turns {self.record.run_id}")

    async def _hand_out(self) -> None:
        # Streams given a turn run before this task goes on (the loop is first in, first out): each
        # that still has more to send has asked for its next turn by then, and gets it in this round.
        loop = asyncio.get_running_loop()
        size = MIN_TURNS_PER_SLICE
        try:
            while self._turns:
                started = loop.time()
                for _ in range(min(size, len(self._turns))):
                    waiter = self._turns.popleft()
                    if not waiter.done():  # a stream that ended while waiting left its waiter cancelled
                        waiter.set_result(None)
                await asyncio.sleep(0)
                # Size the next slice by how long this turn of the loop took, everything in it included.
                if loop.time() - started > SLICE_SECONDS:
                    size = max(MIN_TURNS_PER_SLICE, size // 2)
                else:
                    size = min(MAX_TURNS_PER_SLICE, size * 2)
        finally:
            self._round = None


class StreamBudget:
    """Open streams, counted per run and in all, with the places' feeds and the stalled-write sweeper.

    `on_shutdown` is called once when the server starts stopping with streams open, so that live
    runs end (each stream then sends its run_finished and closes) instead of being cut off.
    """

    def __init__(
        self,
        *,
        max_per_run: int,
        max_total: int,
        send_timeout: float,
        keepalive: float,
        on_shutdown: Callable[[], object],
    ) -> None:
        self.max_per_run = max_per_run
        self.max_total = max_total
        self.send_timeout = send_timeout
        self.keepalive = keepalive
        self._on_shutdown = on_shutdown
        self._feeds: dict[str, RunFeed] = {}
        self._open = 0
        self._sweeper: asyncio.Task[None] | None = None
        self._shutdown_seen = False

    def open(self, record: RunRecord) -> StreamPlace:
        """A place for one more stream on `record`; StreamsFull when a limit is reached."""
        feed = self._feeds.get(record.run_id)
        if self._open >= self.max_total:
            raise StreamsFull(
                f"The server has {self._open} event streams open, the most it allows (max_streams); "
                f"try again in {RETRY_AFTER_SECONDS} seconds."
            )
        if feed is not None and len(feed.places) >= self.max_per_run:
            raise StreamsFull(
                f"Run {record.run_id} has {len(feed.places)} event streams open, the most one run allows "
                f"(max_streams_per_run); try again in {RETRY_AFTER_SECONDS} seconds."
            )
        if feed is None:
            feed = self._feeds[record.run_id] = RunFeed(record, self.keepalive)
        place = StreamPlace(self, feed)
        feed.places.add(place)
        self._open += 1
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep(), name="stream sweeper")
        return place

    def _release(self, place: StreamPlace) -> None:
        feed = place.feed
        feed.places.discard(place)
        self._open -= 1
        if not feed.places and self._feeds.get(feed.record.run_id) is feed:
            del self._feeds[feed.record.run_id]
            feed.close()

    async def _sweep(self) -> None:
        crowd = 0
        try:
            while self._open:
                crowd = max(crowd, self._open)
                await asyncio.sleep(min(SWEEP_SECONDS, self.send_timeout / 4))
                if AppStatus.should_exit and not self._shutdown_seen:
                    self._shutdown_seen = True
                    self._on_shutdown()
                stalled_before = time.monotonic() - self.send_timeout
                for feed in list(self._feeds.values()):
                    for place in list(feed.places):
                        since = place.writing_since
                        if since is not None and since < stalled_before:
                            place.drop()
        finally:
            self._sweeper = None
        if crowd >= CROWD_STREAMS:
            release_free_memory()  # the last stream has closed: give back what the crowd held
