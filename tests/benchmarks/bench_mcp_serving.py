"""Scenarios served as MCP tools, on a real `stepline serve`: `python -m tests.benchmarks.bench_mcp_serving`.

The scenario is one step, the MCP reference server's `echo` (npm, stdio), with a declared output.

1. Latency per call, alternated in rounds so that drift in the machine's load falls on every side alike:
   - MCP: `tools/call` over `/mcp` with the SDK's client, one session reused, on the 2026-07-28 protocol
     (the client's default) and on the 2025 handshake (`mode="legacy"`); the call answers when the run ends.
   - API: `POST /api/runs`, then `/api/runs/{id}/events` read until `run_finished`, one httpx client reused.
   p50 and p99 of each, and what MCP adds to (or saves on) the API at p50.
2. Throughput: 50 MCP callers at once, each its own session calling in a loop; calls per second, and the
   CPU each call costs Stepline and the callers (one process here: past a point, the callers are the limit).
   The same with 50 API callers, each its own httpx client, for comparison.
3. The npm MCP Inspector's own load test (`--cli --load`, tests/inspector): another client's view, its
   50 calls in flight on one session.

Figures vary with the machine; this prints them and never fails on them.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from mcp import Client

from tests.benchmarks.support import Stepline, median, percentile, stepline, write_scenario
from tests.reference_server import reference_server

SCENARIO = "echo_once"
ARGUMENTS = {"message": "hello"}
WARMUP, ROUNDS, PER_ROUND = 10, 10, 20
CALLERS, CALLS_PER_CALLER = 50, 20
# (label, SDK client mode): the client's default negotiates 2026-07-28 (`server/discover`); legacy is the
# 2025 `initialize` handshake.
ERAS = [("2026-07-28", "auto"), ("2025 handshake", "legacy")]
# The same two, in the Inspector's words (its ad-hoc default is legacy).
INSPECTOR_ERAS = [("2026-07-28", "modern"), ("2025 handshake", "legacy")]
INSPECTOR = Path(__file__).resolve().parents[1] / "inspector/node_modules/.bin/mcp-inspector"


def write_scenarios(folder: Path) -> None:
    write_scenario(
        folder,
        SCENARIO,
        [{"name": "echo", "tool": "echo", "server": "reference", "input": {"message": "{{ input.message }}"}}],
        version="2",
        input_schema={"type": "object", "required": ["message"], "properties": {"message": {"type": "string"}}},
        output={"echo": "{{ steps.echo.output }}"},
    )


def expect_echo(output: object, where: str) -> None:
    if output != {"echo": "Echo: hello"}:
        raise RuntimeError(f"{where}: the run's output is {output!r}")


# --- 1. Latency per call --------------------------------------------------------------------------------


async def mcp_calls(client: Client, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        result = await client.call_tool(SCENARIO, ARGUMENTS)
        times.append(time.perf_counter() - started)
        if result.is_error:
            raise RuntimeError(f"MCP call failed: {result.content!r}")
        expect_echo(result.structured_content, "MCP call")
    return times


async def api_run(client: httpx.AsyncClient) -> None:
    """POST the run and read its event stream until `run_finished`, which carries the run's output."""
    response = await client.post("/api/runs", json={"scenario_id": SCENARIO, "input": ARGUMENTS})
    if response.status_code != 202:
        raise RuntimeError(f"POST /api/runs: {response.status_code} {response.text}")
    run_id = response.json()["run_id"]
    async with client.stream("GET", f"/api/runs/{run_id}/events") as events:
        finished = False
        async for line in events.aiter_lines():
            if line == "event: run_finished":
                finished = True
            elif finished and line.startswith("data: "):
                expect_echo(json.loads(line.removeprefix("data: "))["output"], f"API run {run_id}")
                return
    raise RuntimeError(f"run {run_id}: the stream ended without run_finished")


async def api_calls(client: httpx.AsyncClient, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        await api_run(client)
        times.append(time.perf_counter() - started)
    return times


async def latencies(server: Stepline) -> dict[str, list[float]]:
    sides: dict[str, Callable[[int], Awaitable[list[float]]]] = {}
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=60) as api,
        Client(f"{server.url}/mcp", mode=ERAS[0][1]) as modern,
        Client(f"{server.url}/mcp", mode=ERAS[1][1]) as legacy,
    ):
        sides[f"MCP {ERAS[0][0]}"] = lambda count: mcp_calls(modern, count)
        sides[f"MCP {ERAS[1][0]}"] = lambda count: mcp_calls(legacy, count)
        sides["API POST + events"] = lambda count: api_calls(api, count)
        for call in sides.values():
            await call(WARMUP)
        times: dict[str, list[float]] = {label: [] for label in sides}
        for _ in range(ROUNDS):
            for label, call in sides.items():
                times[label] += await call(PER_ROUND)
    return times


def latency(server: Stepline) -> None:
    times = asyncio.run(latencies(server))
    api = median(times["API POST + events"])
    print(f"1. latency per call, one-step scenario (reference echo, stdio), {ROUNDS * PER_ROUND} calls each")
    print(f"   {'':<22} {'p50':>9} {'p99':>9}   {'vs API at p50':>13}")
    for label, values in times.items():
        added = "" if label.startswith("API") else f"{(median(values) - api) * 1000:+10.2f} ms"
        print(f"   {label:<22} {ms(median(values))} {ms(percentile(values, 99))}   {added:>13}")


# --- 2. Throughput ------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far (user + system), from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Burst:
    per_second: float
    stepline_cpu: float  # seconds of `stepline serve`'s CPU per call
    client_cpu: float  # seconds of the callers' CPU (this process) per call


async def mcp_caller(url: str, mode: str, start: asyncio.Barrier) -> None:
    async with Client(url, mode=mode) as client:
        await start.wait()
        await mcp_calls(client, CALLS_PER_CALLER)


async def api_caller(url: str, start: asyncio.Barrier) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        await start.wait()
        await api_calls(client, CALLS_PER_CALLER)


async def concurrent_calls(server: Stepline, caller: Callable[[asyncio.Barrier], Awaitable[None]]) -> Burst:
    """CALLERS callers calling at once; the clock starts once every one is connected."""
    start = asyncio.Barrier(CALLERS + 1)
    callers = [asyncio.ensure_future(caller(start)) for _ in range(CALLERS)]
    await asyncio.wait_for(start.wait(), 60)
    began, ours, stepline_cpu = time.perf_counter(), time.process_time(), cpu_seconds(server.process.pid)
    await asyncio.gather(*callers)
    calls = CALLERS * CALLS_PER_CALLER
    return Burst(
        calls / (time.perf_counter() - began),
        (cpu_seconds(server.process.pid) - stepline_cpu) / calls,
        (time.process_time() - ours) / calls,
    )


def throughput(server: Stepline) -> None:
    url = server.url
    sides: dict[str, Callable[[asyncio.Barrier], Awaitable[None]]] = {
        f"MCP {label}": functools.partial(mcp_caller, f"{url}/mcp", mode) for label, mode in ERAS
    }
    sides["API POST + events"] = functools.partial(api_caller, url)
    print(f"2. throughput, {CALLERS} callers at once (a session or client each), {CALLS_PER_CALLER} calls each")
    print(f"   {'':<22} {'calls/s':>8}   {'CPU per call: stepline':>22} {'callers':>9}")
    for label, caller in sides.items():
        burst = asyncio.run(concurrent_calls(server, caller))
        print(f"   {label:<22} {burst.per_second:8.1f}   {ms(burst.stepline_cpu):>22} {ms(burst.client_cpu):>9}")


def inspector_load(server: Stepline, home: Path) -> None:
    if not INSPECTOR.exists():
        raise RuntimeError(f"{INSPECTOR} is missing: `make bench` installs it with npm")
    calls = CALLERS * CALLS_PER_CALLER
    print(f"3. the MCP Inspector's load test: one session, {CALLERS} calls in flight, {calls} calls")
    print(f"   {'':<22} {'calls/s':>8}   {'p50':>9} {'p99':>9}")
    env = {**os.environ, "HOME": str(home), "MCP_CATALOG_PATH": str(home / "inspector-catalog.json")}
    for label, era in INSPECTOR_ERAS:
        command = [
            str(INSPECTOR), "--cli", f"{server.url}/mcp", "--protocol-era", era, "--format", "json",
            "--method", "tools/call", "--tool-name", SCENARIO, "--tool-args-json", json.dumps(ARGUMENTS),
            "--load", "--load-concurrency", str(CALLERS), "--load-requests", str(calls),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"the Inspector's load test failed ({done.returncode}):\n{done.stderr}")
        load = json.loads(done.stdout)["result"]
        if load["ok"] != calls:
            raise RuntimeError(f"the Inspector's load test: {load['ok']} of {calls} calls ok: {load['errorMessages']}")
        latency_ms = load["latencyMs"]
        print(f"   MCP {label:<18} {load['throughput']:8.1f}   {latency_ms['p50']:6.2f} ms {latency_ms['p99']:6.2f} ms")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:6.2f} ms"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        write_scenarios(home / "scenarios")
        with stepline(home, home / "scenarios", servers={"reference": reference_server()}) as server:
            latency(server)
            throughput(server)
            inspector_load(server, home)


if __name__ == "__main__":
    main()
