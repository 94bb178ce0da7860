"""Event streams under load, against a real `stepline serve`: `python -m tests.benchmarks.bench_streams`.

1. Stalled readers: 1,000 clients open one live run's event stream (a run of ~1,600 events) and never
   read it. Meanwhile another user's quick run must take at most 2x its time alone, /healthz p95 at
   most 50 ms, the server grow by at most 100 MB, and that memory be there for reuse once the clients
   close (a second wave takes no more); the stalled readers are dropped after the send timeout, so
   none is still connected once the run has ended.
2. HTML viewers: 1,000 live run pages' streams (/runs/{id}/stream) on a 300-event run: the run succeeds
   at most 25 % slower than alone, and every viewer gets every fragment in order.
3. JSON readers: 10,000 clients read one run's event stream while its tool reports progress every
   0.2 s: the run succeeds and every reader gets every event. Printed: the spread between the first
   and the last reader to receive each event (p50/p99, aim p99 <= 250 ms) and the server's memory per
   reader (aim <= 20 KiB).

Readers are raw asyncio connections, many per client process (far cheaper than an HTTP library), so
the server is what is measured. Everything runs on loopback and stops by itself. Figures vary with
the machine; each is printed with its target, and only a broken run fails the benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

from tests.benchmarks.support import (
    Stepline,
    client_processes,
    median,
    open_sockets,
    percentile,
    raise_open_files,
    rss_bytes,
    stepline,
    timestamp,
    write_scenario,
)
from tests.sse import read_events

MB = 1024 * 1024
# Seconds any one phase may take before the benchmark gives up on it.
PHASE_TIMEOUT = 180
# Client connections opened at once by one process: the server's listen backlog is not flooded.
CONNECTS_AT_ONCE = 64
SEND_TIMEOUT = 10  # the server's default, said here to know how long to wait for stalled readers

STALLED_READERS = 1000
QUICK_RUNS_ALONE = 15
HTML_VIEWERS, HTML_STEPS = 1000, 60
JSON_READERS, JSON_CLIENT_PROCESSES = 10_000, 4


def gate() -> dict[str, Any]:
    return {"name": "gate", "tool": "gate", "input": {"path": {"from": "input.path"}}}


def write_scenarios(folder: Path) -> None:
    # ~1,600 events in ~11 s: 250 steps reporting progress four times, and every fifth step an echo of
    # 8 KB, so that a reader which never reads has its buffers full well before the run ends.
    long_steps: list[dict[str, Any]] = [gate()]
    for n in range(250):
        long_steps.append({"name": f"w{n}", "tool": "work", "input": {"ms": 40, "reports": 4}})
        if n % 5 == 4:
            long_steps.append({"name": f"e{n}", "tool": "echo", "input": {"text": "x" * 8192}})
    write_scenario(folder, "long", long_steps)
    write_scenario(folder, "quick", [{"name": f"s{n}", "tool": "echo", "input": {"text": "hi"}} for n in range(3)])
    # 300 events after the gate: 60 steps of 100 ms reporting progress three times.
    work = [{"name": f"w{n}", "tool": "work", "input": {"ms": 100, "reports": 3}} for n in range(HTML_STEPS)]
    write_scenario(folder, "viewed", [gate(), *work])
    # Progress every 0.2 s for 8 s.
    progress = [{"name": f"p{n}", "tool": "work", "input": {"ms": 4000, "reports": 19}} for n in range(2)]
    write_scenario(folder, "progress", [gate(), *progress])


# --- Runs and the server, seen from outside ---------------------------------------------------------------


def start_gated(server: Stepline, scenario_id: str, gate_path: Path) -> str:
    response = httpx.post(
        f"{server.url}/api/runs", json={"scenario_id": scenario_id, "input": {"path": str(gate_path)}}, timeout=10
    )
    assert response.status_code == 202, response.text
    return response.json()["run_id"]


def finished_run(server: Stepline, run_id: str, timeout: float = PHASE_TIMEOUT) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (run := httpx.get(f"{server.url}/api/runs/{run_id}", timeout=10).json())["status"] in {"queued", "running"}:
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run_id} did not finish within {timeout} s")
        time.sleep(0.05)
    return run


def work_span(run: dict[str, Any]) -> float:
    """From the first step after the gate to run_finished, by the run's own timestamps."""
    assert run["status"] == "success", run
    return timestamp(run["finished_at"]) - timestamp(run["steps"][1]["started_at"])


def timed_alone(server: Stepline, scenario_id: str, home: Path, repeats: int = 3) -> float:
    open_gate = home / "open"
    open_gate.touch()
    spans = [work_span(finished_run(server, start_gated(server, scenario_id, open_gate))) for _ in range(repeats)]
    return median(spans)


def request_bytes(port: int, path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n".encode()


def quick_run_seconds(server: Stepline, port: int) -> float:
    """POST the quick scenario and read its event stream to run_finished, as its user would wait for it."""
    started = time.perf_counter()
    response = httpx.post(f"{server.url}/api/runs", json={"scenario_id": "quick", "input": {}}, timeout=30)
    run_id = response.json()["run_id"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request_bytes(port, f"/api/runs/{run_id}/events"))
        seen = b""
        while b"event: run_finished" not in seen:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError(f"quick run {run_id}: the stream ended without run_finished")
            seen = seen[-64:] + chunk
    elapsed = time.perf_counter() - started
    status = httpx.get(f"{server.url}/api/runs/{run_id}", timeout=10).json()["status"]
    assert status == "success", status
    return elapsed


class Sampler:
    """Samples the server's memory, and /healthz's latency, in a thread until stopped."""

    def __init__(self, server: Stepline, *, health: bool) -> None:
        self.server = server
        self.health = health
        self.rss: list[int] = []
        self.kernel_tcp: list[int] = []
        self.health_ms: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with httpx.Client(base_url=self.server.url, timeout=30) as client:
            while not self._stop.wait(0.05):
                self.rss.append(rss_bytes(self.server.process.pid))
                self.kernel_tcp.append(kernel_tcp_bytes())
                if self.health:
                    started = time.perf_counter()
                    assert client.get("/healthz").status_code == 200
                    self.health_ms.append((time.perf_counter() - started) * 1000)


def kernel_tcp_bytes() -> int:
    """The memory all TCP sockets of the machine hold in the kernel (Linux's /proc/net/sockstat)."""
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            fields = line.split()
            return int(fields[fields.index("mem") + 1]) * 4096
    return 0


def healthz_ms(server: Stepline, count: int = 40) -> list[float]:
    times = []
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for _ in range(count):
            started = time.perf_counter()
            client.get("/healthz")
            times.append((time.perf_counter() - started) * 1000)
            time.sleep(0.02)
    return times


# --- 1. Readers that never read ------------------------------------------------------------------------------


@contextlib.contextmanager
def stalled_readers(port: int, path: str, count: int) -> Iterator[list[socket.socket]]:
    """`count` connections that ask for the stream and then never read a byte."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(request_bytes(port, path))
            sockets.append(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class StalledWave:
    """What one long run with stalled readers did: to the run, other users, memory and connections."""

    long_run: float
    quick_runs: list[float]
    health_ms: list[float]
    rss: list[int]
    kernel_tcp: list[int]
    held_after_end: int  # connections the server still held, of any kind
    reset: int  # stalled readers whose connection the server reset
    kernel_after_end: int


def stalled_wave(server: Stepline, home: Path, name: str, *, measure: bool) -> StalledWave:
    """One long run with STALLED_READERS on its stream; with `measure`, quick runs meanwhile."""
    port = int(server.url.rsplit(":", 1)[1])
    pid = server.process.pid
    sockets_before = open_sockets(pid)
    gate_path = home / f"gate-{name}"
    run_id = start_gated(server, "long", gate_path)
    quick_runs: list[float] = []
    with stalled_readers(port, f"/api/runs/{run_id}/events", STALLED_READERS) as sockets:
        deadline = time.monotonic() + 30
        while open_sockets(pid) < sockets_before + STALLED_READERS and time.monotonic() < deadline:
            time.sleep(0.1)
        with Sampler(server, health=measure) as sampler:
            gate_path.touch()
            while httpx.get(f"{server.url}/api/runs/{run_id}", timeout=30).json()["status"] == "running":
                if measure:
                    quick_runs.append(quick_run_seconds(server, port))
                else:
                    time.sleep(0.1)
            long_run = work_span(finished_run(server, run_id))
            # Every stalled reader is dropped within the send timeout (and a sweep) of its last write.
            time.sleep(SEND_TIMEOUT + 2)
        held = open_sockets(pid) - sockets_before
        reset = sum(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNRESET for sock in sockets)
        kernel = kernel_tcp_bytes()
    return StalledWave(long_run, quick_runs, sampler.health_ms, sampler.rss, sampler.kernel_tcp, held, reset, kernel)


def never_reading(server: Stepline, home: Path) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    pid = server.process.pid
    quick_run_seconds(server, port)  # warm-up
    alone = median([quick_run_seconds(server, port) for _ in range(QUICK_RUNS_ALONE)])
    health_alone = healthz_ms(server)
    # The same long run without readers: what the run alone costs another user.
    open_gate = home / "open"
    open_gate.touch()
    run_id = start_gated(server, "long", open_gate)
    beside_run = []
    while httpx.get(f"{server.url}/api/runs/{run_id}", timeout=30).json()["status"] == "running":
        beside_run.append(quick_run_seconds(server, port))
    long_alone = work_span(finished_run(server, run_id))
    time.sleep(1)
    rss_before = rss_bytes(pid)
    first = stalled_wave(server, home, "first", measure=True)
    time.sleep(2)
    rss_after_first = rss_bytes(pid)
    # What the first wave's readers cost stays with the allocator for reuse: a second wave takes it
    # again rather than more.
    second = stalled_wave(server, home, "second", measure=False)
    time.sleep(2)
    rss_after_second = rss_bytes(pid)

    loaded = first.quick_runs
    print(f"1. readers that never read: {STALLED_READERS} on one live run of ~1,600 events")
    print(f"   the long run itself: {long_alone:.1f} s alone, {first.long_run:.1f} s with them "
          f"({(first.long_run / long_alone - 1) * 100:+.0f} %)")
    print(f"   another user's quick run (3 steps, POST to run_finished): {alone * 1000:.0f} ms alone, "
          f"{median(beside_run) * 1000:.0f} ms beside the long run without readers, "
          f"{median(loaded) * 1000:.0f} ms with them (median of {len(loaded)}, max {max(loaded) * 1000:.0f} ms): "
          f"{median(loaded) / alone:.2f}x alone (target <= 2x)")
    print(f"   /healthz p95: {percentile(health_alone, 95):.1f} ms alone, "
          f"{percentile(first.health_ms, 95):.1f} ms meanwhile (target <= 50 ms)")
    print(f"   server memory: {rss_before / MB:.0f} MB before, peak {max(first.rss) / MB:.0f} MB "
          f"(+{(max(first.rss) - rss_before) / MB:.0f} MB, target <= +100 MB), "
          f"{rss_after_first / MB:.0f} MB after the clients closed; after a second wave of as many: "
          f"peak {max(second.rss) / MB:.0f} MB, {rss_after_second / MB:.0f} MB after "
          f"({(rss_after_second - rss_after_first) / MB:+.0f} MB over the first)")
    print(f"   kernel TCP memory (whole machine): peak {max(first.kernel_tcp) / MB:.0f} MB, "
          f"{first.kernel_after_end / MB:.0f} MB once the stalled readers were dropped")
    print(f"   {SEND_TIMEOUT + 2} s after the run ended: {first.reset} of {STALLED_READERS} stalled readers dropped "
          f"(their connections reset), then {second.reset}; connections the server still held: "
          f"{first.held_after_end}, then {second.held_after_end} (target 0)")


# --- Reading clients, in their own processes ------------------------------------------------------------------


@dataclass
class Tally:
    """What one client process's readers received: per seq, the first and last time, and by how many."""

    readers: int
    first: dict[int, float] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)
    count: dict[int, int] = field(default_factory=dict)
    started: int = 0  # readers that received their first frame
    ended: int = 0
    complete: int = 0  # readers that received every event, in order, through the run's last
    refused: int = 0  # connections the server refused or closed before a frame

    def saw(self, seq: int, now: float) -> None:
        self.first.setdefault(seq, now)
        self.last[seq] = now
        self.count[seq] = self.count.get(seq, 0) + 1


FINAL_FRAMES = (b"\nevent: run_finished", b"\nevent: run-finished")


class Reader(asyncio.Protocol):
    """One stream reader: notes each frame's seq as it arrives, scanning the raw bytes for `id:` lines.

    Its tally is a Tally, or any record with the same counters and a `saw(seq, now)` (bench_replicas)."""

    def __init__(self, request: bytes, tally: Any, progress: asyncio.Event) -> None:
        self.request = request
        self.tally = tally
        self.progress = progress
        self.tail = b""
        self.expected = 1
        self.in_order = True
        self.finished = False
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buffer = self.tail + data
        position = 0
        while (start := buffer.find(b"\nid: ", position)) >= 0 and (end := buffer.find(b"\r", start + 5)) >= 0:
            seq = int(buffer[start + 5 : end])
            self.in_order = self.in_order and seq == self.expected
            self.expected = seq + 1
            if seq == 1:
                self.tally.started += 1
                self.progress.set()
            self.tally.saw(seq, now)
            position = end
        if any(final in buffer for final in FINAL_FRAMES):
            self.finished = True
        self.tail = buffer[max(position, len(buffer) - 24) :]

    def connection_lost(self, exc: Exception | None) -> None:
        self.tally.ended += 1
        if self.expected == 1:
            self.tally.refused += 1
        elif self.in_order and self.finished:
            self.tally.complete += 1
        self.progress.set()
        self.done.set_result(None)


async def read_streams(kind: type[Any], port: int, path: str, count: int, conn: Connection) -> Any:
    """`count` readers of `path`, tallied in a `kind` (Tally here)."""
    loop = asyncio.get_running_loop()
    tally = kind(count)
    progress = asyncio.Event()
    request = request_bytes(port, path)
    readers: list[Reader] = []
    at_once = asyncio.Semaphore(CONNECTS_AT_ONCE)

    async def connect() -> None:
        async with at_once:
            for attempt in range(5):
                try:
                    _, reader = await loop.create_connection(
                        lambda: Reader(request, tally, progress), "127.0.0.1", port
                    )
                    readers.append(reader)
                    return
                except OSError:
                    await asyncio.sleep(0.2 * (attempt + 1))
            tally.refused += 1
            tally.ended += 1

    await asyncio.gather(*(connect() for _ in range(count)))
    deadline = loop.time() + PHASE_TIMEOUT
    while tally.started + tally.ended < count and loop.time() < deadline:
        progress.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(progress.wait(), 1)
    conn.send("ready")
    while tally.ended < count and loop.time() < deadline:
        progress.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(progress.wait(), 1)
    return tally


def reader_process(kind: type[Any], port: int, path: str, count: int, conn: Connection) -> None:
    raise_open_files(count + 100)
    conn.send(dataclasses.asdict(asyncio.run(read_streams(kind, port, path, count, conn))))


def collect(pipes: list[Connection], kind: type[Any] = Tally) -> list[Any]:
    tallies = []
    for pipe in pipes:
        if not pipe.poll(PHASE_TIMEOUT):
            raise RuntimeError("a client process did not report")
        tallies.append(kind(**pipe.recv()))
    return tallies


def spreads(tallies: list[Tally], from_seq: int) -> dict[int, float]:
    """Per event from `from_seq` on: seconds between its first and its last receipt, over all readers."""
    seqs = set().union(*(t.first for t in tallies))
    return {
        seq: max(t.last[seq] for t in tallies if seq in t.last) - min(t.first[seq] for t in tallies if seq in t.first)
        for seq in sorted(seqs)
        if seq >= from_seq
    }


def slowest(server: Stepline, run_id: str, lag: dict[int, float], count: int = 3) -> str:
    """The events whose readers were spread the most, by type: where the time goes."""
    events = read_events(server.url, run_id)
    worst = sorted(lag, key=lambda seq: lag[seq], reverse=True)[:count]
    return ", ".join(f"{events[seq - 1]['type']} (seq {seq}) {lag[seq] * 1000:.0f} ms" for seq in worst)


# --- 2. HTML viewers ------------------------------------------------------------------------------------------------


def html_viewers(server: Stepline, home: Path) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    alone = timed_alone(server, "viewed", home)
    gate_path = home / "gate-viewed"
    run_id = start_gated(server, "viewed", gate_path)
    with client_processes(reader_process, (Tally, port, f"/runs/{run_id}/stream?last_event_id=0"), HTML_VIEWERS, 2,
                          timeout=PHASE_TIMEOUT) as pipes:
        gate_path.touch()
        tallies = collect(pipes)
    run = finished_run(server, run_id)
    crowded = work_span(run)
    complete = sum(t.complete for t in tallies)
    refused = sum(t.refused for t in tallies)
    lag = list(spreads(tallies, from_seq=3).values())
    print(f"2. HTML viewers: {HTML_VIEWERS} live run pages' streams on a run of {HTML_STEPS} steps (~300 events)")
    print(f"   the run: {run['status']}; {alone:.2f} s alone, {crowded:.2f} s watched "
          f"({(crowded / alone - 1) * 100:+.1f} %, target <= +25 %)")
    print(f"   viewers that got every fragment in order: {complete}/{HTML_VIEWERS} (refused: {refused})")
    print(f"   first-to-last viewer spread per event: p50 {median(lag) * 1000:.0f} ms, "
          f"p99 {percentile(lag, 99) * 1000:.0f} ms")


# --- 3. JSON readers -----------------------------------------------------------------------------------------------


def json_readers(server: Stepline, home: Path, processes: int) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    pid = server.process.pid
    alone = timed_alone(server, "progress", home, repeats=1)
    gate_path = home / "gate-progress"
    run_id = start_gated(server, "progress", gate_path)
    time.sleep(1)
    rss_before = rss_bytes(pid)
    with client_processes(reader_process, (Tally, port, f"/api/runs/{run_id}/events"), JSON_READERS, processes,
                          timeout=PHASE_TIMEOUT) as pipes:
        time.sleep(1)
        rss_reading = rss_bytes(pid)
        with Sampler(server, health=False) as sampler:
            gate_path.touch()
            tallies = collect(pipes)
    run = finished_run(server, run_id)
    crowded = work_span(run) if run["status"] == "success" else float("nan")
    complete = sum(t.complete for t in tallies)
    refused = sum(t.refused for t in tallies)
    by_seq = spreads(tallies, from_seq=3)
    lag = list(by_seq.values())
    per_reader = (rss_reading - rss_before) / JSON_READERS
    peak_per_reader = (max(sampler.rss) - rss_before) / JSON_READERS
    print(f"3. JSON readers: {JSON_READERS} on one run's event stream, progress every 0.2 s "
          f"({processes} client processes)")
    print(f"   the run: {run['status']}; {alone:.2f} s alone, {crowded:.2f} s read "
          f"({(crowded / alone - 1) * 100:+.1f} %)")
    print(f"   readers that got every event in order: {complete}/{JSON_READERS} (refused: {refused})")
    print(f"   first-to-last reader spread over {len(lag)} events: p50 {median(lag) * 1000:.0f} ms, "
          f"p99 {percentile(lag, 99) * 1000:.0f} ms, max {max(lag) * 1000:.0f} ms (aim: p99 <= 250 ms)")
    print(f"   the most spread: {slowest(server, run_id, by_seq)}")
    print(f"   server memory per reader: {per_reader / 1024:.1f} KiB connected and waiting, "
          f"{peak_per_reader / 1024:.1f} KiB at the peak while the run went on (aim <= 20 KiB)")
    print(f"   server memory: {rss_before / MB:.0f} MB before, {rss_reading / MB:.0f} MB with the readers, "
          f"peak {max(sampler.rss) / MB:.0f} MB")
    if statistics.mean(t.complete / t.readers for t in tallies) < 1:
        print("   (a reader missing events: see the server's log)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", type=int, choices=[1, 2, 3], help="run one benchmark")
    parser.add_argument("--json-processes", type=int, default=JSON_CLIENT_PROCESSES,
                        help="client processes the 10,000 JSON readers share")
    args = parser.parse_args()
    raise_open_files(JSON_READERS + 2000)
    env = {
        # Room for every reader of benchmark 3, and its own connections, within the server's limits.
        "STEPLINE_MAX_STREAMS_PER_RUN": str(JSON_READERS + 100),
        "STEPLINE_MAX_STREAMS": str(JSON_READERS + 100),
        "STEPLINE_MAX_CONNECTIONS": str(JSON_READERS + 500),
        "STEPLINE_STREAM_SEND_TIMEOUT": str(SEND_TIMEOUT),
    }
    with tempfile.TemporaryDirectory(prefix="stepline-bench-") as tmp:
        home = Path(tmp)
        write_scenarios(home / "scenarios")
        for number, bench in [(1, never_reading), (2, html_viewers), (3, json_readers)]:
            if args.only not in (None, number):
                continue
            # A server of its own for each: one benchmark's leftovers cannot weigh on the next.
            with stepline(home, home / "scenarios", env=env) as server:
                if number == 3:
                    json_readers(server, home, args.json_processes)
                else:
                    bench(server, home)


if __name__ == "__main__":
    main()
