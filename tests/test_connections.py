"""Connections a real `stepline serve` must not be wedged by: idle and half-sent requests, too many
sockets, running out of file descriptors; and what it says when bound beyond the loopback."""

from __future__ import annotations

import os
import resource
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import StepServer, start_server, wait_until

HEADER_TIMEOUT = {"STEPLINE_HEADER_TIMEOUT": "1"}
# The lowered limit on open files, and more idle sockets than it allows.
DESCRIPTORS = 150
IDLE_SOCKETS = 200
# Descriptors left to a running server whose limit is then lowered.
FREE_DESCRIPTORS = 20
# Without the fixes the log grew by megabytes a second; a few warnings and access lines fit in this.
QUIET_LOG_BYTES = 20_000
HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow\r\n\r\n"


def low_descriptor_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (DESCRIPTORS, DESCRIPTORS))


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StepServer]:
    """On the loopback, with few descriptors and a 1 s header timeout."""
    server = start_server(tmp_path_factory.mktemp("small"), env=HEADER_TIMEOUT, preexec_fn=low_descriptor_limit)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def exposed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StepServer]:
    """On every address, behind a proxy on this machine, with a 1 s header timeout (only loopback traffic is sent)."""
    args = ("--host", "0.0.0.0", "--forwarded-allow-ips", "127.0.0.1", "--allow-anonymous", "admin")
    server = start_server(tmp_path_factory.mktemp("exposed"), *args, env=HEADER_TIMEOUT)
    yield server
    server.stop()


def open_idle_sockets(server: StepServer, count: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(count)]


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends before it closes the connection."""
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    sock.close()
    return received


def healthz_ok(server: StepServer) -> bool:
    try:
        return httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_idle_sockets_are_refused_past_the_cap_then_closed_and_nobody_is_locked_out(small_server: StepServer) -> None:
    server = small_server
    assert "max_connections lowered from 4000 to 50" in server.log()
    logged = server.log_path.stat().st_size

    idle = open_idle_sockets(server, IDLE_SOCKETS)
    answers = [read_until_closed(sock) for sock in idle]  # returns only because the server closes them all
    refused = [answer for answer in answers if answer]
    assert refused, "no connection past the cap was refused"
    assert all(answer.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in answer for answer in refused)
    assert b"Too many open connections" in refused[0]
    assert len(refused) < IDLE_SOCKETS  # the first ones were held, idle, until the header timeout

    wait_until(lambda: healthz_ok(server), 10, "a normal client to be served again")
    assert "Refused a connection: 50 are open" in server.log()
    assert server.log_path.stat().st_size - logged < QUIET_LOG_BYTES
    # An X-Forwarded-For from a client that is not a configured proxy is not believed, in the log either.
    assert httpx.get(f"{server.url}/healthz", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 200
    assert "203.0.113.9" not in server.log()


def test_running_out_of_descriptors_pauses_accepting_quietly_and_recovers(small_server: StepServer) -> None:
    server = small_server
    pid = server.process.pid
    limit = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    # Below what max_connections was set for at start: accept() itself now fails.
    in_use = len(os.listdir(f"/proc/{pid}/fd"))
    try:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + FREE_DESCRIPTORS, limit[1]))
    except PermissionError:
        pytest.skip("cannot lower the server's descriptor limit here")
    logged = server.log_path.stat().st_size
    try:
        idle = open_idle_sockets(server, 4 * FREE_DESCRIPTORS)
        time.sleep(1.5)  # accept() fails again and again meanwhile
        for sock in idle:
            sock.close()
        wait_until(lambda: healthz_ok(server), 20, "a normal client to be served again")
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, limit)
    log = server.log()
    assert "Cannot accept connections: Too many open files" in log
    assert "Traceback" not in log
    assert server.log_path.stat().st_size - logged < QUIET_LOG_BYTES


def test_a_slowloris_is_closed_after_the_header_timeout_however_it_trickles(exposed_server: StepServer) -> None:
    sock = socket.create_connection(("127.0.0.1", exposed_server.port), timeout=10)
    sock.setblocking(False)
    sent = 0
    answer = b""
    # A byte every 0.25 s: the head would take 15 s to arrive if every byte reset the clock.
    while sent < len(HEAD):
        try:
            sock.send(HEAD[sent : sent + 1])
        except OSError:
            break
        sent += 1
        time.sleep(0.25)
        try:
            answer += sock.recv(4096)
        except BlockingIOError:
            continue
        except OSError:
            break
        if answer:
            break
    assert sent < len(HEAD), "the server waited for the whole head"
    sock.setblocking(True)
    answer += read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout")
    assert b"took too long" in answer


def test_binding_beyond_the_loopback_warns_there_is_no_authentication(exposed_server: StepServer) -> None:
    log = exposed_server.log()
    assert "Listening on 0.0.0.0" in log and "requests that name nobody are served with the admin role" in log
    # Any host name is served there, and the configured proxy's X-Forwarded-For is believed.
    headers = {"Host": "stepline.example.com", "X-Forwarded-For": "203.0.113.9"}
    assert httpx.get(f"{exposed_server.url}/healthz", headers=headers).status_code == 200
    wait_until(lambda: "203.0.113.9:0 - " in exposed_server.log(), 5, "the access log to name the client behind it")
