"""A TCP relay in front of PostgreSQL that can cut a connection just as its commit succeeds.

The one fault a real server cannot be made to cause on cue: a transaction committed by the server whose
client never hears so (the connection lost between the server's COMMIT and its reply). Armed, the relay
drops the next connection that commits a write of run events, instead of passing the server's
"COMMIT" reply on; every other byte in both directions is passed through as it is.
Clients must connect with `sslmode=disable` (`url()` says so), so that the server's messages can be read.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator

# What a client's write of run events contains (web.store), and the server's reply to a COMMIT.
EVENTS_WRITE = b"INSERT INTO events"
COMMIT_DONE = b"C" + struct.pack("!i", 4 + len(b"COMMIT\0")) + b"COMMIT\0"


class CommitCutter:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.cuts = 0
        self._armed = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, database: str, user: str) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}?sslmode=disable&gssencmode=disable"

    def arm(self) -> None:
        """Cut the next connection whose commit of run events succeeds."""
        self._armed.set()

    def close(self) -> None:
        self._closing = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            writing = threading.Event()  # this connection has sent a write of events not yet committed
            threading.Thread(target=self._upstream, args=(client, server, writing), daemon=True).start()
            threading.Thread(target=self._downstream, args=(server, client, writing), daemon=True).start()

    def _upstream(self, client: socket.socket, server: socket.socket, writing: threading.Event) -> None:
        """The client's messages, watched for a write of events: its text, or a prepared statement of it."""
        prepared: set[bytes] = set()  # names of the statements that write events
        with contextlib.suppress(OSError):
            for kind, message in _messages(client, startup=True):
                if kind == b"P":  # Parse: statement name, query
                    name, query = message[5:].split(b"\0", 2)[:2]
                    if EVENTS_WRITE in query:
                        prepared.add(name)
                        writing.set()
                elif kind == b"B" and message[5:].split(b"\0", 2)[1] in prepared:  # Bind: portal, statement
                    writing.set()
                elif kind == b"Q" and EVENTS_WRITE in message:
                    writing.set()
                server.sendall(message)
        _close(client, server)

    def _downstream(self, server: socket.socket, client: socket.socket, writing: threading.Event) -> None:
        """The server's messages, passed on whole, one by one, so a COMMIT reply can be held back."""
        with contextlib.suppress(OSError):
            for _, message in _messages(server):
                if message == COMMIT_DONE and writing.is_set():
                    writing.clear()
                    if self._armed.is_set():
                        self._armed.clear()
                        self.cuts += 1
                        break  # committed on the server; the client only sees its connection drop
                client.sendall(message)
        _close(client, server)


def _messages(sock: socket.socket, *, startup: bool = False) -> Iterator[tuple[bytes, bytes]]:
    """(type, whole message) as they come; a client's first message (`startup`) has no type."""
    buffer = b""
    while data := sock.recv(65536):
        buffer += data
        while len(buffer) >= 5:
            offset = 0 if startup else 1
            length = struct.unpack("!i", buffer[offset : offset + 4])[0]
            if len(buffer) < offset + length:
                break
            yield (b"" if startup else buffer[:1]), buffer[: offset + length]
            buffer = buffer[offset + length :]
            startup = False


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
