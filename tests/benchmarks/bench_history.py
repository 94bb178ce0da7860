"""Runs per second by where history lives: `python -m tests.benchmarks.bench_history [--seconds N]`.

The same load against three setups of real `stepline serve` processes, one after the other in one run:

- SQLite: one process, history in a data directory of a temp folder;
- PostgreSQL, 1 replica: one process with `--database URL`;
- PostgreSQL, 2 replicas: two processes on the same database, the client spreading its POSTs over
  both in turn. When the second is refused at start (a build without replicas), its line says
  "not available" with the server's message, and the benchmark goes on.

The load: 32 client tasks, each in a loop POSTing a run of a 3-step scenario of the trivial `echo`
tool (202 once the run is on disk) and reading its event stream to the end (the stream sends an event
once it is on disk, so the end is the run finished and recorded). The tool answers at once, so the
figure is bound by the history and the server's own work. Counted: runs finishing within the measured
seconds, after a warm-up. Printed per setup: runs/s, p50/p99 of POST to finished, what the history
grew by per run (the SQLite file and its WAL; `pg_database_size`) against the freshly migrated schema,
and where the CPU went in the measured seconds (the client, the Stepline processes with their MCP
servers, PostgreSQL), in % of one core: on a 2-core machine the three share 200%.

PostgreSQL runs as tests/postgres.py starts it (fsync=off, synchronous_commit=off) and SQLite as
Stepline opens it (WAL, synchronous=NORMAL): on neither side does a commit wait for the disk.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from tests.benchmarks.support import PROJECT_ROOT, Stepline, percentile, stepline, write_scenario
from tests.postgres import postgres_server

CLIENTS = 32
STEPS = 3
SCENARIO = "three_echoes"
# Long enough for the servers' first runs (imports, caches, connection pools) to be left out.
WARMUP_SECONDS = 2.0
# Longer than a keep-alive's interval on the event stream (15 s): a silent stream is a failure, not a pause.
READ_TIMEOUT_SECONDS = 60.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Load:
    """What the clients saw in the measured window, and the CPU seconds each part used in it."""

    seconds: float
    latencies: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    cpu: dict[str, float] = field(default_factory=dict)
    stuck: int = 0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds


@dataclass
class Outcome:
    label: str
    load: Load | None = None
    grown_bytes: int = 0
    stored_runs: int = 0
    unavailable: str = ""


async def one_run(client: httpx.AsyncClient) -> str | None:
    """POST a run and read its event stream to the end; None when it succeeded, else what went wrong."""
    response = await client.post("/api/runs", json={"scenario_id": SCENARIO, "input": {}})
    if response.status_code != 202:
        return f"POST answered {response.status_code}: {response.text[:120]}"
    run_id = response.json()["run_id"]
    last = ""
    async with client.stream("GET", f"/api/runs/{run_id}/events") as stream:
        if stream.status_code != 200:
            return f"event stream answered {stream.status_code}"
        async for line in stream.aiter_lines():
            if line.startswith("data:"):
                last = line
    finished = json.loads(last[5:]) if last else {}
    if finished.get("type") != "run_finished":
        return f"event stream ended at {finished.get('type') or 'nothing'}"
    return None if finished.get("status") == "success" else f"run ended {finished.get('status')}"


def cpu_seconds(roots: list[int]) -> float:
    """CPU seconds used so far by the processes `roots` and all their descendants (Linux /proc)."""
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):  # gone meanwhile
            # The command name may hold spaces or parentheses: the fields start after its last ')'.
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            parents[int(entry.name)] = int(fields[1])
            used[int(entry.name)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    tree = set(roots)
    grown = True
    while grown:  # one generation more per pass
        grown = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grown = True
    return sum(used.get(pid, 0.0) for pid in tree)


def cpu_sample(parts: dict[str, list[int]]) -> dict[str, float]:
    sample = {name: cpu_seconds(pids) for name, pids in parts.items()}
    sample["client"] = time.process_time()
    return sample


async def drive(urls: list[str], seconds: float, parts: dict[str, list[int]]) -> Load:
    """CLIENTS tasks running runs back to back, POSTs round robin over `urls`, for warm-up + `seconds`; and
    the CPU used in the measured seconds by the client and by `parts` (name: process ids, with their descendants)."""
    limits = httpx.Limits(max_connections=2 * CLIENTS, max_keepalive_connections=2 * CLIENTS)
    timeout = httpx.Timeout(READ_TIMEOUT_SECONDS)
    load = Load(seconds)
    turn = itertools.count()
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits))
            for url in urls
        ]
        start = time.perf_counter() + WARMUP_SECONDS
        end = start + seconds
        posted_at: dict[int, float] = {}  # client number: when its run in flight was posted

        async def client_task(number: int) -> None:
            while True:
                posted = posted_at[number] = time.perf_counter()
                try:
                    failure = await one_run(clients[next(turn) % len(clients)])
                except httpx.HTTPError as exc:
                    failure = f"{type(exc).__name__}: {exc}"
                finished = time.perf_counter()
                del posted_at[number]
                if not start <= finished <= end:
                    continue
                if failure is None:
                    load.latencies.append(finished - posted)
                else:
                    load.failures[failure] += 1

        tasks = [asyncio.create_task(client_task(number)) for number in range(CLIENTS)]
        await asyncio.sleep(start - time.perf_counter())
        first = cpu_sample(parts)
        await asyncio.sleep(end - time.perf_counter())
        load.cpu = {name: used - first[name] for name, used in cpu_sample(parts).items()}
        # Runs in flight at the end are left: one that has not finished in all the measured seconds is stuck.
        load.stuck = sum(posted < start for posted in posted_at.values())
        for task in tasks:
            task.cancel()
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if not isinstance(outcome, asyncio.CancelledError):
                raise RuntimeError("a client failed") from outcome
    return load


def migrate(*args: str) -> None:
    """`stepline db migrate`: the empty schema the history's growth is measured from."""
    subprocess.run([sys.executable, "-m", "web", "db", "migrate", *args], cwd=PROJECT_ROOT, check=True,
                   capture_output=True)


def refusal(error: RuntimeError) -> str:
    """The message a `stepline serve` that would not start gave (its `stepline: ...` line), else the error."""
    said = [line for line in str(error).splitlines() if line.startswith("stepline: ")]
    return said[-1].removeprefix("stepline: ") if said else str(error).strip().splitlines()[-1]


@contextlib.contextmanager
def replicas(home: Path, scenarios: Path, count: int, *args: str) -> Iterator[tuple[list[Stepline], str]]:
    """Up to `count` servers with `args`; the ones that started, and why the next one did not ('' if all did)."""
    with contextlib.ExitStack() as stack:
        started: list[Stepline] = []
        refused = ""
        for _ in range(count):
            try:
                started.append(stack.enter_context(stepline(home, scenarios, *args)))
            except RuntimeError as exc:
                if not started:
                    raise
                refused = refusal(exc)
                break
        yield started, refused


def sqlite_size(data_dir: Path) -> int:
    return sum(path.stat().st_size for path in data_dir.glob("stepline.db*"))


def sqlite_runs(data_dir: Path) -> int:
    with contextlib.closing(sqlite3.connect(data_dir / "stepline.db")) as connection:
        return connection.execute("SELECT COUNT(*) FROM runs").fetchone()[0]


def postgres_size(url: str) -> tuple[int, int]:
    """(pg_database_size, runs) of the database at `url`."""
    with psycopg.connect(url) as connection:
        size = connection.execute("SELECT pg_database_size(current_database())").fetchone()
        runs = connection.execute("SELECT COUNT(*) FROM runs").fetchone()
    assert size is not None and runs is not None
    return size[0], runs[0]


@dataclass
class Setup:
    label: str
    servers: int
    args: tuple[str, ...]
    # (bytes, runs) of the history, read while no server holds it open
    size: Callable[[], tuple[int, int]]
    # the database server's own processes (PostgreSQL's postmaster), for its CPU; none for SQLite
    database_pids: list[int] = field(default_factory=list)


def measure(setup: Setup, home: Path, scenarios: Path, seconds: float) -> Outcome:
    """One setup loaded for `seconds`; the history's growth is read once its servers have stopped."""
    before, _ = setup.size()
    outcome = Outcome(setup.label)
    with replicas(home, scenarios, setup.servers, *setup.args) as (servers, refused):
        if refused:
            return Outcome(setup.label, unavailable=refused)
        parts = {"stepline": [server.process.pid for server in servers]}
        if setup.database_pids:
            parts["database"] = setup.database_pids
        outcome.load = asyncio.run(drive([server.url for server in servers], seconds, parts))
    after, outcome.stored_runs = setup.size()
    outcome.grown_bytes = after - before
    return outcome


def report(outcome: Outcome) -> str:
    if outcome.load is None:
        return f"  {outcome.label:<24} not available ({outcome.unavailable})"
    load = outcome.load
    if not load.latencies:
        latency = f"{'-':>7} {'-':>7}"
    else:
        latency = f"{percentile(load.latencies, 50) * 1000:7.1f} {percentile(load.latencies, 99) * 1000:7.1f}"
    per_run = outcome.grown_bytes / outcome.stored_runs if outcome.stored_runs else float("nan")
    cpu = " / ".join(
        f"{load.cpu[part] / load.seconds * 100:3.0f}" if part in load.cpu else "  -"
        for part in ("client", "stepline", "database")
    )
    line = (f"  {outcome.label:<24} {load.rate:7.1f} {latency} {len(load.latencies):6d} "
            f"{sum(load.failures.values()):6d} {per_run:9.0f}   {cpu}")
    for failure, times in load.failures.most_common(3):
        line += f"\n      {times} x {failure}"
    if load.stuck:
        line += f"\n      {load.stuck} runs posted before the measured seconds had still not finished at their end"
    return line


def postmaster_pid(data: Path) -> int:
    """The PostgreSQL server's main process: the first line of its data folder's postmaster.pid."""
    return int((data / "postmaster.pid").read_text().split()[0])


def run_all(seconds: float) -> list[Outcome]:
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="stepline-bench-") as tmp, postgres_server() as postgres:
        home = Path(tmp)
        scenarios = home / "scenarios"
        steps = [{"name": f"echo_{n}", "tool": "echo", "input": {"text": f"step {n}"}} for n in range(STEPS)]
        write_scenario(scenarios, SCENARIO, steps)

        data_dir = home / "sqlite"
        migrate("--data-dir", str(data_dir))
        sqlite = Setup("SQLite, 1 process", 1, ("--data-dir", str(data_dir)),
                       lambda: (sqlite_size(data_dir), sqlite_runs(data_dir)))
        outcomes.append(measure(sqlite, home, scenarios, seconds))
        for count, label in ((1, "PostgreSQL, 1 replica"), (2, "PostgreSQL, 2 replicas")):
            url = postgres.fresh_database()  # each setup on its own: its growth is its own
            migrate("--database", url)
            setup = Setup(label, count, ("--database", url), lambda url=url: postgres_size(url),
                          [postmaster_pid(postgres.data)])
            outcomes.append(measure(setup, home, scenarios, seconds))
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per setup (default 10)")
    args = parser.parse_args()
    if args.seconds <= 0:
        parser.error("--seconds must be more than 0")
    load_before = os.getloadavg()[0]
    outcomes = run_all(args.seconds)
    print(f"{CLIENTS} clients, each POSTing a {STEPS}-step run of a trivial tool and reading its event stream to "
          f"the end, back to back;\n{args.seconds:g} s measured per setup after {WARMUP_SECONDS:g} s of warm-up "
          f"(load average before: {load_before:.1f} on {os.cpu_count()} cores)")
    print("PostgreSQL: fsync=off, synchronous_commit=off; SQLite: WAL, synchronous=NORMAL (fsync only at "
          "checkpoints):\nfsync off on both sides, no commit waits for the disk")
    print(f"  {'':<24} {'runs/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'runs':>6} {'failed':>6} {'bytes/run':>9}   "
          "CPU %: client / stepline / database")
    for outcome in outcomes:
        print(report(outcome))
    print("  p50/p99: POST to the run finished and recorded. bytes/run: the history's growth over the migrated empty "
          "schema\n  (SQLite file + WAL, or pg_database_size) by all runs stored, warm-up included. CPU: % of one core "
          "in the\n  measured seconds; stepline counts its MCP server processes too (SQLite's work is in stepline's).")


if __name__ == "__main__":
    main()
