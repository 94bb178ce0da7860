"""The HTTP response of an event stream: one per reader, kept lean, dropped when its reader stalls.

Frames come from the run's event list (rendered once for all readers, see web.streams); wake-ups,
turns to write and keep-alive beats from the run's feed; a reader whose write has waited longer
than the send timeout is dropped by the budget's sweeper (web.stream_budget).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from sse_starlette import ServerSentEvent
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from web.events import EventType
from web.registry import RunRecord
from web.stream_budget import StreamPlace

try:  # how many bytes the kernel still holds for the client: Unix only
    import fcntl
    import termios

    UNSENT_IOCTL: int | None = termios.TIOCOUTQ
except (ImportError, AttributeError):
    UNSENT_IOCTL = None

FrameRenderer = Callable[[dict[str, Any]], bytes]

# A stream ends with its run: the connection closes with it rather than idling as a keep-alive.
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "close"}
RAW_STREAM_HEADERS = [
    *((name.lower().encode(), value.encode()) for name, value in STREAM_HEADERS.items()),
    (b"content-type", b"text/event-stream; charset=utf-8"),
]
KEEPALIVE = ServerSentEvent(comment="ping").encode()

# Events already recorded go out together, up to these bounds per write (a long replay is chunked),
# and a write stops gathering after this much work so the run and other streams get their turn.
MAX_EVENTS_PER_WRITE = 64
MAX_BYTES_PER_WRITE = 64 * 1024
GATHER_SECONDS = 0.005
# What may wait for one reader before a write waits for it (and the send timeout starts): in the
# kernel, a fixed buffer instead of one that grows to megabytes for a reader who never reads (ample
# for events: 256 KiB a round trip); in the process, a write or so, not the 64 KiB asyncio allows.
KERNEL_BUFFER_BYTES = 128 * 1024  # Linux doubles it for its own bookkeeping
PROCESS_BUFFER_BYTES = 16 * 1024
# How often a finished stream looks whether its client has taken the last frames: soon at first (a
# reader that keeps up has them within a round trip, and waits for the stream's end), then seldom.
DELIVERY_CHECK_FIRST_SECONDS, DELIVERY_CHECK_MAX_SECONDS = 0.001, 0.05


class EventStream(Response):
    """The events of `record` after `after` as SSE frames, live until run_finished, then the end.

    Besides the server's own task for the request, one task per reader: it notices the client
    leaving. The response ends once the client has taken every frame, so a reader that stops at
    the end is dropped like any other instead of being left holding the server's buffers.
    """

    media_type = "text/event-stream"

    def __init__(self, record: RunRecord, render: FrameRenderer, after: int, place: StreamPlace) -> None:
        self.record = record
        self.render = render
        self.after = after
        self.place = place
        self.status_code = 200
        self.background = None
        self.raw_headers = list(RAW_STREAM_HEADERS)  # a list of its own: middleware may add to it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        connection = ClientConnection(receive)
        connection.limit_buffers(kernel=KERNEL_BUFFER_BYTES, process=PROCESS_BUFFER_BYTES)
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            if scope["method"] == "HEAD" or await self._stream(receive, send, connection):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            elif self.place.dropped:
                await connection.reset()
        finally:
            self.place.close()

    async def _stream(self, receive: Receive, send: Send, connection: ClientConnection) -> bool:
        """Send every event and see it taken: True; False if the client left or was dropped first."""
        # A deadline moved by hand: the client's leaving, or its drop, ends the stream as a timeout would.
        ending = asyncio.timeout(None)
        can_stop = True

        def stop(_: object = None) -> None:
            nonlocal can_stop
            if can_stop:
                can_stop = False
                ending.reschedule(-1)

        listener = asyncio.create_task(_until_disconnect(receive))
        listener.add_done_callback(stop)
        self.place.on_drop(stop)
        try:
            async with ending:
                await self._send_events(send)
                # Ending costs more than writing: every other reader gets the last frames first.
                await self.place.feed.next_turn()
                await self._delivered(connection)
                can_stop = False  # what is over cannot be stopped: a drop from now on does nothing
            return True
        except TimeoutError:
            if not ending.expired():
                raise
            return False
        finally:
            can_stop = False
            self.place.on_drop(None)
            listener.remove_done_callback(stop)
            listener.cancel()

    async def _send_events(self, send: Send) -> None:
        record, feed = self.record, self.place.feed
        cursor = self.after
        beats = feed.beats
        while cursor < record.readable or not record.is_over:
            if cursor < record.readable:
                cursor = await self._send_from(send, cursor)
                if record.events[cursor - 1]["type"] == EventType.RUN_FINISHED:
                    return
                if cursor < record.readable:
                    await feed.next_turn()  # more to send: the other streams, and the run, get their turn first
                continue
            await feed.next_change()
            if feed.beats != beats and cursor >= record.readable:
                await self._write(send, KEEPALIVE)
            beats = feed.beats

    async def _send_from(self, send: Send, cursor: int) -> int:
        """Write the recorded events from `cursor` (as many as one write takes); the cursor after them."""
        events, readable = self.record.events, self.record.readable
        started = time.perf_counter()
        frames: list[bytes] = []
        size = 0
        while cursor < readable and len(frames) < MAX_EVENTS_PER_WRITE and size < MAX_BYTES_PER_WRITE:
            event = events[cursor]
            cursor += 1
            frames.append(self.render(event))
            size += len(frames[-1])
            if event["type"] == EventType.RUN_FINISHED or time.perf_counter() - started > GATHER_SECONDS:
                break
        await self._write(send, frames[0] if len(frames) == 1 else b"".join(frames))
        return cursor

    async def _write(self, send: Send, body: bytes) -> None:
        self.place.writing_since = time.monotonic()
        await send({"type": "http.response.body", "body": body, "more_body": True})
        self.place.writing_since = None

    async def _delivered(self, connection: ClientConnection) -> None:
        """Return once the client has taken every byte sent (the sweeper drops it if it never does)."""
        self.place.writing_since = time.monotonic()
        pause = DELIVERY_CHECK_FIRST_SECONDS
        while connection.unsent():
            await asyncio.sleep(pause)
            pause = min(pause * 2, DELIVERY_CHECK_MAX_SECONDS)
        self.place.writing_since = None


async def _until_disconnect(receive: Receive) -> None:
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    except Exception:  # a receive that fails has lost its client all the same
        return


class ClientConnection:
    """What ASGI does not tell a stream about its client's connection: what is still on its way, and
    how to cut it off.

    ASGI can only end a response, after which a server closes the connection gracefully, once it has
    sent what it holds: for a client that never reads, never. uvicorn's `receive` is a method of its
    request cycle, which holds the connection's transport; under another server this knows nothing
    (nothing unsent) and cuts nothing (the server closes the connection its own way).
    """

    __slots__ = ("_transport",)

    def __init__(self, receive: Receive) -> None:
        transport = getattr(getattr(receive, "__self__", None), "transport", None)
        self._transport = transport if isinstance(transport, asyncio.WriteTransport) else None

    def limit_buffers(self, *, kernel: int, process: int) -> None:
        """Make writes wait once the kernel holds `kernel` bytes the client has not taken, and the
        server `process` more."""
        if self._transport is None:
            return
        sock = self._transport.get_extra_info("socket")
        if sock is not None and sock.fileno() >= 0:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, kernel)
        self._transport.set_write_buffer_limits(high=process)

    def unsent(self) -> int:
        """Bytes written but not yet taken by the client: in the server's buffer, then the kernel's."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return 0
        queued = 0
        sock = transport.get_extra_info("socket")
        if UNSENT_IOCTL is not None and sock is not None and sock.fileno() >= 0:
            with contextlib.suppress(OSError):
                queued = struct.unpack("i", fcntl.ioctl(sock.fileno(), UNSENT_IOCTL, b"\0\0\0\0"))[0]
        return transport.get_write_buffer_size() + queued

    async def reset(self) -> None:
        """Cut the connection now, unsent bytes and all: a reset, so the kernel lets go of them too."""
        transport = self._transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.fileno() >= 0:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        await asyncio.sleep(0)  # the server hears of the lost connection before the response returns
