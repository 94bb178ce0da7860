"""Per-step overhead with run history on and off: `python -m tests.benchmarks.bench_store [--runs N]`.

A 20-step scenario of a trivial `echo` tool runs through a real `stepline serve`, and the same 20
calls go straight to the same MCP server on one ClientSession. Their ratio is what Stepline adds per
step; the target is at most 1.25x with history on. Runs alternate between a server writing history
and one started with --no-history, and the direct calls, so drift in the machine's load falls on all
alike. Afterwards the history file's size is divided by the events it holds: bytes per event.

Two figures per configuration:

- run span: the run's own time (run_started to run_finished as the server stamped them, to the
  millisecond, so averaged over the runs) while no client follows it: the runner's overhead. The
  paired median compares each run with the direct calls made just before it, which damps a noisy
  machine's drift;
- end to end: POST to the last event read from the run's event stream, as a watching client sees
  it (the stream's per-event work shares the CPU with the run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from mcp import ClientSession, StdioServerParameters, stdio_client

from tests.conftest import StepServer, start_server

STEPS = 20
# Warm-up runs are left out: first calls pay for imports, caches and the JIT-less interpreter's warm-up.
WARMUP = 5
ECHO_SERVER = '''
from mcp.server.mcpserver import MCPServer

server = MCPServer("echo")


@server.tool()
def echo(text: str) -> str:
    """Return `text`."""
    return text


server.run()
'''


def write_fixture(root: Path) -> tuple[Path, Path, dict[str, str]]:
    """The echo server, its mcpServers config and a folder with the 20-step scenario."""
    script = root / "echo_server.py"
    script.write_text(ECHO_SERVER)
    config = root / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"echo": {"command": sys.executable, "args": [str(script)]}}}))
    scenarios = root / "scenarios"
    scenarios.mkdir()
    scenario = {
        "schema_version": "1",
        "scenario_id": "echo20",
        "name": "Twenty echoes",
        "input_schema": {"type": "object", "properties": {"text": {"type": "string"}}},
        "steps": [{"name": f"echo_{n}", "tool": "echo", "input": {"text": f"step {n}"}} for n in range(STEPS)],
    }
    (scenarios / "echo20.json").write_text(json.dumps(scenario))
    return script, config, {"--mcp-config": str(config), "--scenarios": str(scenarios)}


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


async def streamed_run(client: httpx.AsyncClient) -> float:
    """Seconds from the POST to the run's last event, read live from its event stream."""
    began = time.perf_counter()
    response = await client.post("/api/runs", json={"scenario_id": "echo20", "input": {}})
    response.raise_for_status()
    last: dict[str, Any] = {}
    async with client.stream("GET", f"/api/runs/{response.json()['run_id']}/events") as stream:
        async for line in stream.aiter_lines():
            if line.startswith("data:"):
                last = json.loads(line[5:])
    elapsed = time.perf_counter() - began
    assert last.get("status") == "success", last
    return elapsed


async def quiet_run(client: httpx.AsyncClient, expected: float) -> float:
    """The span of a run nobody follows; polled only once it should be over, to stay out of its way."""
    response = await client.post("/api/runs", json={"scenario_id": "echo20", "input": {}})
    response.raise_for_status()
    run_id = response.json()["run_id"]
    await asyncio.sleep(expected * 2)
    while True:
        run = (await client.get(f"/api/runs/{run_id}")).json()
        if run["status"] != "running" and run["status"] != "queued":
            assert run["status"] == "success", run
            return seconds_between(run["started_at"], run["finished_at"])
        await asyncio.sleep(expected / 4)


async def direct_calls(session: ClientSession) -> float:
    began = time.perf_counter()
    for n in range(STEPS):
        result = await session.call_tool("echo", {"text": f"step {n}"})
        assert not result.is_error
    return time.perf_counter() - began


def bytes_per_event(data_dir: Path) -> tuple[int, int, int]:
    """(file bytes, events, JSON payload bytes) of a stopped server's history file."""
    path = data_dir / "stepline.db"
    with contextlib.closing(sqlite3.connect(path)) as connection:
        events = connection.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        payload = connection.execute("SELECT SUM(LENGTH(data)) FROM events").fetchone()[0] or 0
    size = sum(p.stat().st_size for p in data_dir.glob("stepline.db*"))
    return size, events, payload


async def measure(runs: int, with_history: StepServer, without: StepServer, script: Path) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    params = StdioServerParameters(command=sys.executable, args=[str(script)])
    async with (
        httpx.AsyncClient(base_url=with_history.url, timeout=60) as on_client,
        httpx.AsyncClient(base_url=without.url, timeout=60) as off_client,
        stdio_client(params) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        for n in range(WARMUP + runs):
            direct = await direct_calls(session)
            figures = {
                "direct": direct,
                "on": await quiet_run(on_client, direct),
                "off": await quiet_run(off_client, direct),
                "on_e2e": await streamed_run(on_client),
                "off_e2e": await streamed_run(off_client),
            }
            if n >= WARMUP:
                for name, value in figures.items():
                    results.setdefault(name, []).append(value)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60, help="measured runs per configuration (default 60)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stepline-bench-") as tmp:
        root = Path(tmp)
        script, _, flags = write_fixture(root)
        sources = [item for pair in flags.items() for item in pair]
        data_dir = root / "data"
        with_history = start_server(root, *sources, "--data-dir", str(data_dir))
        without = start_server(root, *sources, "--no-history")
        try:
            results = asyncio.run(measure(args.runs, with_history, without, script))
        finally:
            with_history.stop()
            without.stop()
        size, events, payload = bytes_per_event(data_dir)

    direct = statistics.median(results["direct"])
    print(f"{args.runs} runs of {STEPS} steps per figure ({WARMUP} warm-up runs left out)")
    print(f"  direct MCP calls, {STEPS} on one session (median): {direct * 1000:7.2f} ms")
    for label, key in (("history on ", "on"), ("history off", "off")):
        span, e2e = statistics.mean(results[key]), statistics.median(results[f"{key}_e2e"])
        # Each run against the direct calls made just before it, under the same load.
        paired = statistics.median(s / d for s, d in zip(results[key], results["direct"], strict=True))
        print(
            f"  {label}: run span (mean) {span * 1000:6.2f} ms = {span / direct:4.2f}x, paired median "
            f"{paired:4.2f}x (+{(span - direct) / STEPS * 1e6:4.0f} us/step);  end to end, streamed (median) "
            f"{e2e * 1000:6.2f} ms = {e2e / direct:4.2f}x"
        )
    print(f"  history file: {size} bytes for {events} events = {size / events:.0f} bytes/event "
          f"(event JSON alone: {payload / events:.0f} bytes/event)")


if __name__ == "__main__":
    main()
