"""Replicas on one PostgreSQL, under readers and under kill -9: `python -m tests.benchmarks.bench_replicas`.

Real `stepline serve --database URL` processes on a real PostgreSQL (tests/postgres.py), side by side in one run:

1. Readers over replicas: 10,000 clients read one live run's JSON event stream while its tool reports
   progress every 0.2 s. The run is started on one replica (its owner); with 2 replicas half the readers
   are on the owner and half on the other, which follows the run over LISTEN/NOTIFY and reads its events
   from the table; then the same 10,000 readers on 1 replica. Printed per replica: readers that got every
   event in order; the delivery time of each event to each reader (its arrival minus its emission time:
   the tool's own clock in a progress message, else the event's timestamp), p50/p99/max; the spread
   between the first and the last reader to get each event; the replica's memory per reader (its RSS
   growth over its readers), once they are connected and at its peak while the run goes on.
2. Kill -9 to the run going on: a chain of short steps (`"resume": "auto"`) is started on one replica and
   the replica killed with SIGKILL while a step is in flight. Measured from the kill, on the other replica:
   the run's `run_resumed` and the re-run step's `step_started` (by their timestamps, and by when a reader
   following the run's stream there saw them), with `--lease-seconds` 10 (the default) and 2. Beside
   them the same kill on SQLite, one process restarted on its data directory (as bench_resume does), its
   reader reconnecting with Last-Event-ID. Each run must end `success`, each step finish once, seq contiguous.

Readers are raw asyncio connections in client processes, as in bench_streams. Figures vary with the
machine and what else it runs; only a broken run fails the benchmark.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

from tests.benchmarks.bench_resume import serve, wait_ready
from tests.benchmarks.bench_streams import collect, finished_run, reader_process, start_gated
from tests.benchmarks.support import (
    TRIVIAL_SERVER,
    Stepline,
    client_processes,
    median,
    percentile,
    raise_open_files,
    rss_bytes,
    stepline,
    timestamp,
    write_scenario,
)
from tests.postgres import PostgresServer, postgres_server
from tests.sse import Frame, parse_lines
from tests.sse import read_events as read_all_events

MB = 1024 * 1024
# Seconds any one phase may take before the benchmark gives up on it.
PHASE_TIMEOUT = 180
READERS, CLIENT_PROCESSES = 10_000, 4
# Progress every 0.2 s for 6 s: two steps of 3 s reporting 14 times each.
PROGRESS_STEPS, PROGRESS_MS, PROGRESS_REPORTS = 2, 3000, 14
# The run killed: a chain of steps of 250 ms, the owner killed once step KILL_AT_STEP is in flight.
CHAIN_STEPS, CHAIN_STEP_MS, KILL_AT_STEP = 10, 250, 3
LEASES = (10.0, 2.0)
ROUNDS = 2  # kills per setup: where in its lease an owner dies is chance, so one kill says little
# A replica renews its leases every third of a lease and looks for runs to claim at least this often
# (web.replicas): a killed owner's run is claimed 2/3 to 1 lease after the kill, plus up to this.
CLAIM_EVERY_SECONDS = 1.0


def prepare(home: Path) -> None:
    """The scenarios, and the mcpServers file bench_resume's `serve` reads (the benchmark server, as `stepline` has)."""
    servers = {"bench": {"command": sys.executable, "args": [str(TRIVIAL_SERVER)]}}
    (home / "mcp.json").write_text(json.dumps({"mcpServers": servers}), encoding="utf-8")
    folder = home / "scenarios"
    gate = {"name": "gate", "tool": "gate", "input": {"path": {"from": "input.path"}}}
    work = {"tool": "work", "input": {"ms": PROGRESS_MS, "reports": PROGRESS_REPORTS}}
    write_scenario(folder, "progress", [gate, *({"name": f"p{n}", **work} for n in range(PROGRESS_STEPS))])
    chain = [
        {"name": f"s{n}", "tool": "work", "input": {"ms": CHAIN_STEP_MS}, **({"needs": [f"s{n - 1}"]} if n else {})}
        for n in range(CHAIN_STEPS)
    ]
    # `work` is not annotated idempotent: the scenario says a step in flight may simply run again.
    write_scenario(folder, "chain", chain, version="2", defaults={"resume": "auto"})


def replica_health(server: Stepline) -> dict[str, Any]:
    return httpx.get(f"{server.url}/healthz", timeout=10).json()["replica"]


def owner_of(servers: list[Stepline], run_id: str) -> Stepline:
    """The replica holding the run's lease, by the replicas' own /healthz."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for server in servers:
            if run_id in replica_health(server)["runs"]:
                return server
        time.sleep(0.05)
    raise RuntimeError(f"no replica says it owns run {run_id}")


def emitted_at(event: dict[str, Any]) -> float | None:
    """When an event was emitted: a progress message holds the tool's clock, other events their own timestamps."""
    if event["type"] == "step_progress":
        return float(event["message"])
    for key in ("finished_at", "resumed_at", "started_at"):
        if event.get(key):
            return timestamp(event[key])
    return None


# --- 1. Readers, in their own processes ------------------------------------------------------------------------


@dataclass
class Arrivals:
    """What one client process's readers received: every arrival time of every event, by seq."""

    readers: int
    times: dict[int, list[float]] = field(default_factory=dict)
    started: int = 0  # readers that received their first frame
    ended: int = 0
    complete: int = 0  # readers that received every event, in order, through the run's last
    refused: int = 0  # connections the server refused or closed before a frame

    def saw(self, seq: int, now: float) -> None:
        self.times.setdefault(seq, []).append(now)


class MemorySampler:
    """Samples processes' resident memory in a thread until stopped: the peak of each."""

    def __init__(self, pids: list[int]) -> None:
        self.peak = {pid: rss_bytes(pid) for pid in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for pid in self.peak:
                self.peak[pid] = max(self.peak[pid], rss_bytes(pid))


@dataclass
class ReplicaReaders:
    """One replica's share of the readers, and what it cost that replica."""

    role: str  # "owner" or "follower"
    readers: int
    arrivals: list[Arrivals]
    rss_before: int
    rss_reading: int
    rss_peak: int


@dataclass
class ReadersOutcome:
    label: str
    run_status: str
    replicas: list[ReplicaReaders]
    emitted: dict[int, float]  # seq: emission time, for the events emitted once every reader was connected

    def delivery(self, replica: ReplicaReaders) -> list[float]:
        return [
            arrival - self.emitted[seq]
            for arrivals in replica.arrivals
            for seq, times in arrivals.times.items()
            if seq in self.emitted
            for arrival in times
        ]

    def spread(self) -> list[float]:
        """Per event: seconds between the first and the last reader to get it, over every replica's readers."""
        first: dict[int, float] = {}
        last: dict[int, float] = {}
        for replica in self.replicas:
            for arrivals in replica.arrivals:
                for seq, times in arrivals.times.items():
                    if seq in self.emitted:
                        first[seq] = min(first.get(seq, times[0]), *times)
                        last[seq] = max(last.get(seq, times[0]), *times)
        return [last[seq] - first[seq] for seq in first]


@contextlib.contextmanager
def readers_on(servers: list[Stepline], path: str, readers: int) -> Iterator[list[list[Connection]]]:
    """`readers` spread evenly over `servers` (CLIENT_PROCESSES client processes in all); each server's pipes."""
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(
                client_processes(
                    reader_process,
                    (Arrivals, int(server.url.rsplit(":", 1)[1]), path),
                    readers // len(servers),
                    CLIENT_PROCESSES // len(servers),
                    timeout=PHASE_TIMEOUT,
                )
            )
            for server in servers
        ]


def readers_over(servers: list[Stepline], home: Path, label: str, readers: int) -> ReadersOutcome:
    """The progress run started on the first of `servers`, `readers` reading it spread over all of them."""
    gate_path = home / f"gate-{label}"
    run_id = start_gated(servers[0], "progress", gate_path)
    owner = owner_of(servers, run_id)
    for server in servers:  # every replica holds the run before its readers come
        assert httpx.get(f"{server.url}/api/runs/{run_id}", timeout=10).status_code == 200
    time.sleep(1)
    pids = [server.process.pid for server in servers]
    before = [rss_bytes(pid) for pid in pids]
    with readers_on(servers, f"/api/runs/{run_id}/events", readers) as pipes:
        time.sleep(1)
        reading = [rss_bytes(pid) for pid in pids]
        with MemorySampler(pids) as sampler:
            opened = time.time()
            gate_path.touch()
            arrivals = [collect(server_pipes, Arrivals) for server_pipes in pipes]
    run = finished_run(owner, run_id)
    events = read_all_events(owner.url, run_id, timeout=60)
    emitted = {event["seq"]: at for event in events if (at := emitted_at(event)) is not None and at >= opened}
    shares = [
        ReplicaReaders("owner" if server is owner else "follower", readers // len(servers), arrivals[n],
                       before[n], reading[n], sampler.peak[pids[n]])
        for n, server in enumerate(servers)
    ]
    return ReadersOutcome(label, run["status"], shares, emitted)


def report_readers(outcomes: list[ReadersOutcome], readers: int) -> None:
    print(f"1. {readers:,} readers of one run's JSON event stream, progress every 0.2 s for "
          f"{PROGRESS_STEPS * PROGRESS_MS / 1000:g} s; PostgreSQL")
    print(f"   {'':<22} {'readers':>7} {'every event':>11}  {'delivery ms p50 / p99 / max':>27}  "
          f"{'KiB/reader waiting / peak':>25}  RSS MB before / with readers / peak")
    for outcome in outcomes:
        for n, replica in enumerate(outcome.replicas):
            complete = sum(a.complete for a in replica.arrivals)
            refused = sum(a.refused for a in replica.arrivals)
            lag = outcome.delivery(replica)
            label = outcome.label if n == 0 else ""
            delivery = (f"{percentile(lag, 50) * 1000:7.0f} / {percentile(lag, 99) * 1000:5.0f} / "
                        f"{max(lag) * 1000:5.0f}") if lag else f"{'-':>27}"
            waiting = (replica.rss_reading - replica.rss_before) / replica.readers / 1024
            peak = (replica.rss_peak - replica.rss_before) / replica.readers / 1024
            line = (f"   {label:<13} {replica.role:<8} {replica.readers:7d} {complete:5d}/{replica.readers:<5d}  "
                    f"{delivery:>27}  {waiting:13.1f} / {peak:5.1f}     "
                    f"{replica.rss_before / MB:5.0f} / {replica.rss_reading / MB:5.0f} / {replica.rss_peak / MB:5.0f}")
            if refused:
                line += f"  ({refused} refused)"
            print(line)
        spread = outcome.spread()
        note = "" if outcome.run_status == "success" else f"; the run ended {outcome.run_status}"
        if spread:
            print(f"   {'':<22} first-to-last reader spread over {len(spread)} events: p50 "
                  f"{median(spread) * 1000:.0f} ms, p99 {percentile(spread, 99) * 1000:.0f} ms, "
                  f"max {max(spread) * 1000:.0f} ms{note}")
    print("   delivery: an event's arrival at a reader minus its emission (a progress message's own clock, else the "
          "event's\n   timestamp); the follower's readers get an event once it is committed, NOTIFYed and read back "
          "from the table.")


def readers_benchmark(postgres: PostgresServer, home: Path, readers: int, env: dict[str, str]) -> None:
    outcomes, unmeasured = [], []
    for count, label in ((2, "2 replicas"), (1, "1 replica")):
        url = postgres.fresh_database()
        with contextlib.ExitStack() as stack:
            servers = [stack.enter_context(stepline(home, home / "scenarios", "--database", url, env=env))
                       for _ in range(count)]
            try:
                outcomes.append(readers_over(servers, home, label, readers))
            except RuntimeError as exc:  # the machine could not take this many readers on this setup
                unmeasured.append(f"   {label}: not measured, the machine could not take it: {exc}")
    report_readers(outcomes, readers)
    for line in unmeasured:
        print(line)


# --- 2. Kill -9 to the run going on ---------------------------------------------------------------------------------


class Follower:
    """Reads a run's event stream in a thread as a browser's EventSource would: reconnecting with Last-Event-ID
    to the last of `urls` whenever the stream breaks, and noting when each event arrived."""

    def __init__(self, urls: list[str], run_id: str) -> None:
        self.urls = urls
        self.run_id = run_id
        self.events: list[dict[str, Any]] = []
        self.arrived: dict[int, float] = {}
        self.finished = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Follower:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def seen(self, kind: str, **fields: Any) -> dict[str, Any] | None:
        return next((e for e in self.events if e["type"] == kind and fields.items() <= e.items()), None)

    def _run(self) -> None:
        while not self._stop.is_set() and not self.finished.is_set():
            headers = {"Last-Event-ID": str(len(self.events))} if self.events else {}
            try:
                with httpx.stream("GET", f"{self.urls[-1]}/api/runs/{self.run_id}/events", headers=headers,
                                  timeout=httpx.Timeout(5, read=30)) as response:
                    for frame in parse_lines(response.iter_lines()):
                        if not isinstance(frame, Frame):
                            continue
                        event = frame.json()
                        if event["seq"] == len(self.events) + 1:
                            self.arrived[event["seq"]] = time.time()
                            self.events.append(event)
                        if event["type"] == "run_finished":
                            self.finished.set()
                            return
            except httpx.HTTPError:
                pass
            self._stop.wait(0.02)  # the server is gone or not up yet: try again, as EventSource does


def wait_for(check: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.005)
    return found


@dataclass
class Takeover:
    label: str
    resumed: float = float("nan")  # from the kill to run_resumed's resumed_at
    restarted: float = float("nan")  # to the re-run step's started_at
    seen_resumed: float = float("nan")  # to a reader on the surviving server getting run_resumed
    seen_restarted: float = float("nan")
    rerun: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def kill_in_flight(process: subprocess.Popen[bytes], follower: Follower) -> tuple[float, str]:
    """SIGKILL `process` once step KILL_AT_STEP is in flight; the time of the kill and that step's name."""
    step = f"s{KILL_AT_STEP}"
    wait_for(lambda: follower.seen("step_started", step_name=step), f"{step} to start")
    time.sleep(CHAIN_STEP_MS / 1000 / 3)
    killed = time.time()
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return killed, step


def measure_takeover(label: str, follower: Follower, killed: float, in_flight: str) -> Takeover:
    outcome = Takeover(label)
    if not follower.finished.wait(PHASE_TIMEOUT):
        outcome.problems.append("the run did not finish")
        return outcome
    events = follower.events
    resumed = next((e for e in events if e["type"] == "run_resumed"), None)
    if resumed is None:
        outcome.problems.append("no run_resumed")
        return outcome
    restarted = next(e for e in events[resumed["seq"] :] if e["type"] == "step_started")
    outcome.resumed = timestamp(resumed["resumed_at"]) - killed
    outcome.restarted = timestamp(restarted["started_at"]) - killed
    outcome.seen_resumed = follower.arrived[resumed["seq"]] - killed
    outcome.seen_restarted = follower.arrived[restarted["seq"]] - killed
    outcome.rerun = resumed["rerun_steps"]
    finished = [e["step_name"] for e in events if e["type"] == "step_finished"]
    if [e["seq"] for e in events] != list(range(1, len(events) + 1)):
        outcome.problems.append("seq is not contiguous")
    if events[-1].get("status") != "success":
        outcome.problems.append(f"the run ended {events[-1].get('status')}")
    if sorted(finished) != sorted(f"s{n}" for n in range(CHAIN_STEPS)):
        outcome.problems.append(f"steps finished: {finished}")
    if outcome.rerun != [in_flight] or restarted["step_name"] != in_flight:
        outcome.problems.append(
            f"re-run {outcome.rerun}, first started {restarted['step_name']}, in flight {in_flight}"
        )
    return outcome


def replica_takeover(postgres: PostgresServer, home: Path, lease: float) -> Takeover:
    url = postgres.fresh_database()
    args = ("--database", url, "--lease-seconds", f"{lease:g}")
    with stepline(home, home / "scenarios", *args) as first, stepline(home, home / "scenarios", *args) as second:
        run_id = httpx.post(f"{first.url}/api/runs", json={"scenario_id": "chain", "input": {}}, timeout=10).json()
        owner = owner_of([first, second], run_id["run_id"])
        other = second if owner is first else first
        with Follower([other.url], run_id["run_id"]) as follower:
            killed, in_flight = kill_in_flight(owner.process, follower)
            return measure_takeover(f"PostgreSQL, 2 replicas, lease {lease:g} s", follower, killed, in_flight)


def sqlite_restart(home: Path) -> Takeover:
    """As bench_resume: one process on a data directory, killed, and a new one started on it; the reader
    reconnects to the new one as soon as it listens."""
    first, url = serve(home)
    try:
        wait_ready(url, first)
        run_id = httpx.post(f"{url}/api/runs", json={"scenario_id": "chain", "input": {}}, timeout=10).json()["run_id"]
        urls = [url]
        with Follower(urls, run_id) as follower:
            killed, in_flight = kill_in_flight(first, follower)
            second, url = serve(home)
            urls.append(url)
            try:
                return measure_takeover("SQLite, 1 process restarted", follower, killed, in_flight)
            finally:
                second.terminate()
                second.wait(15)
    finally:
        first.kill()
        first.wait()


def report_takeovers(outcomes: list[list[Takeover]]) -> None:
    rounds = len(outcomes[0])
    print(f"2. kill -9 of the owner while a step is in flight (a chain of {CHAIN_STEPS} steps of {CHAIN_STEP_MS} ms, "
          f'"resume": "auto"), from the kill{f", medians of {rounds} rounds" if rounds > 1 else ""}:')
    print(f"   {'':<34} {'run_resumed':>11} {'step_started':>12}   seen by a reader: run_resumed / step_started"
          f"{'   run_resumed per round' if rounds > 1 else ''}")
    for takeovers in outcomes:
        def ms(name: str, takeovers: list[Takeover] = takeovers) -> str:
            return f"{median([getattr(t, name) for t in takeovers]) * 1000:,.0f} ms"

        each = " / ".join(f"{t.resumed * 1000:,.0f}" for t in takeovers) + " ms" if rounds > 1 else ""
        print(f"   {takeovers[0].label:<34} {ms('resumed'):>11} {ms('restarted'):>12}   "
              f"{ms('seen_resumed'):>16} / {ms('seen_restarted'):<10}{each:>25}".rstrip())
        for takeover in takeovers:
            for problem in takeover.problems:
                print(f"      broken: {problem}")
    print(f"   a lease is renewed every third of it, so a killed owner's run is claimed 2/3 to 1 lease after the kill, "
          f"plus up to\n   {CLAIM_EVERY_SECONDS:g} s until the other replica next looks for runs to claim; the reader "
          "on SQLite reconnects to the new process.\n   checks: every run ended success, each step finished once, "
          "seq contiguous, only the step in flight re-run.")


def takeover_benchmark(postgres: PostgresServer, home: Path, rounds: int) -> None:
    outcomes = [[replica_takeover(postgres, home, lease) for _ in range(rounds)] for lease in LEASES]
    outcomes.append([sqlite_restart(home) for _ in range(rounds)])
    report_takeovers(outcomes)
    if any(t.problems for takeovers in outcomes for t in takeovers):
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", type=int, choices=[1, 2], help="run one benchmark")
    parser.add_argument("--readers", type=int, default=READERS, help=f"readers in benchmark 1 (default {READERS})")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"kills per setup in benchmark 2 (default {ROUNDS})")
    args = parser.parse_args()
    if args.readers < CLIENT_PROCESSES or args.rounds < 1:
        parser.error(f"--readers must be at least {CLIENT_PROCESSES} and --rounds at least 1")
    raise_open_files(args.readers + 2000)
    env = {
        # Room for every reader on one replica, and its own connections, within the server's limits.
        "STEPLINE_MAX_STREAMS_PER_RUN": str(args.readers + 100),
        "STEPLINE_MAX_STREAMS": str(args.readers + 100),
        "STEPLINE_MAX_CONNECTIONS": str(args.readers + 500),
    }
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="stepline-bench-") as tmp, postgres_server() as postgres:
        home = Path(tmp)
        prepare(home)
        print(f"(load average before: {load:.1f} on {os.cpu_count()} cores)")
        if args.only in (None, 1):
            readers_benchmark(postgres, home, args.readers, env)
        if args.only is None:
            print()
        if args.only in (None, 2):
            takeover_benchmark(postgres, home, args.rounds)


if __name__ == "__main__":
    main()
