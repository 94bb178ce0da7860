"""Workflow benchmarks of a real `stepline serve` against the MCP reference server:
`python -m tests.benchmarks.bench_workflow`.

1. Per-step cost: a 100-step chained scenario of the reference server's `echo` (npm, stdio), history
   on, against the same 100 calls made directly on one SDK session; median of alternated runs
   (target: at most 1.25x). Run once with v1 `{"from"}` bindings and once with v2 expressions.
2. Parallel steps: 10 independent steps of a 0.5 s tool; the run's span (target: at most 0.65 s).
3. for_each: 1,000 items of the reference `echo` at max_parallel 16, items per second against the
   same calls made directly with the same concurrency (target: at most 1.3x slower).

Figures vary with the machine; this prints them and never fails on them.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from mcp import ClientSession, StdioServerParameters, stdio_client

from tests.benchmarks.support import (
    TRIVIAL_SERVER,
    Stepline,
    median,
    stepline,
    timestamp,
    write_scenario,
)
from tests.reference_server import reference_server

CHAIN_STEPS = 100
WARMUP, REPEATS, ROUNDS = 2, 5, 3
# Even, so that each chained scenario goes first after the direct calls as often as the other.
CHAIN_ROUNDS = 4
PARALLEL_STEPS, PARALLEL_MS = 10, 500
ITEMS, MAX_PARALLEL = 1000, 16


def chain(steps: int, *, expressions: bool) -> list[dict[str, Any]]:
    """`steps` echo calls, each sending on the previous one's text, as a real scenario would."""
    calls = [{"name": "s0", "tool": "echo", "server": "reference", "input": {"message": "hi"}}]
    for n in range(1, steps):
        message: Any = f"{{{{ steps.s{n - 1}.output }}}}" if expressions else {"from": f"steps.s{n - 1}.output"}
        calls.append({"name": f"s{n}", "tool": "echo", "server": "reference", "input": {"message": message}})
    return calls


def write_scenarios(folder: Path) -> None:
    write_scenario(folder, "chain_v1", chain(CHAIN_STEPS, expressions=False))
    write_scenario(folder, "chain_v2", chain(CHAIN_STEPS, expressions=True), version="2")
    write_scenario(
        folder,
        "parallel",
        [{"name": f"w{n}", "tool": "work", "input": {"ms": PARALLEL_MS, "reports": 0}} for n in range(PARALLEL_STEPS)],
        version="2",
    )
    write_scenario(
        folder,
        "fan_out",
        [
            {
                "name": "each",
                "tool": "echo",
                "server": "reference",
                "for_each": f"{{{{ range({ITEMS}) | list }}}}",
                "max_parallel": MAX_PARALLEL,
                "input": {"message": "item {{ item }}"},
            }
        ],
        version="2",
    )


async def run_to_end(client: httpx.AsyncClient, scenario_id: str) -> tuple[float, float]:
    """(POST to the run's end as a client sees it, the run's own span by its timestamps)."""
    started = time.perf_counter()
    response = await client.post("/api/runs", json={"scenario_id": scenario_id, "input": {}})
    run_id = response.json()["run_id"]
    async with client.stream("GET", f"/api/runs/{run_id}/events") as stream:
        async for line in stream.aiter_lines():
            if line == "event: run_finished":
                break
    elapsed = time.perf_counter() - started
    run = (await client.get(f"/api/runs/{run_id}")).json()
    if run["status"] != "success":
        raise RuntimeError(f"{scenario_id} ended {run['status']}: {run['message']}")
    return elapsed, timestamp(run["finished_at"]) - timestamp(run["started_at"])


async def stepline_runs(server: Stepline, scenario_id: str, repeats: int) -> tuple[list[float], list[float]]:
    ends, spans = [], []
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        for rep in range(WARMUP + repeats):
            end, span = await run_to_end(client, scenario_id)
            if rep >= WARMUP:
                ends.append(end)
                spans.append(span)
    return ends, spans


def reference_session() -> Any:
    config = reference_server()
    return stdio_client(StdioServerParameters(command=config["command"], args=config["args"]))


async def direct_chain(repeats: int) -> list[float]:
    times = []
    async with reference_session() as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        await session.list_tools()
        for rep in range(WARMUP + repeats):
            started = time.perf_counter()
            message = "hi"
            for _ in range(CHAIN_STEPS):
                result = await session.call_tool("echo", {"message": message})
                message = result.content[0].text
            if rep >= WARMUP:
                times.append(time.perf_counter() - started)
    return times


async def direct_fan_out(repeats: int) -> list[float]:
    times = []
    async with reference_session() as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        await session.list_tools()
        limit = asyncio.Semaphore(MAX_PARALLEL)

        async def one(n: int) -> str:
            async with limit:
                result = await session.call_tool("echo", {"message": f"item {n}"})
                return result.content[0].text

        for rep in range(WARMUP + repeats):
            started = time.perf_counter()
            await asyncio.gather(*(one(n) for n in range(ITEMS)))
            if rep >= WARMUP:
                times.append(time.perf_counter() - started)
    return times


def per_step(server: Stepline) -> None:
    print(f"1. per-step cost, {CHAIN_STEPS}-step chain of the reference server's echo (stdio), history on")
    results: dict[str, list[float]] = {"chain_v1": [], "chain_v1 span": [], "chain_v2": [], "chain_v2 span": []}
    direct: list[float] = []
    # Alternated, so that drift in the machine's load falls on all alike; the two scenarios take turns going
    # first after the direct calls, which the first to follow them measures slower whichever it is.
    for round_index in range(CHAIN_ROUNDS):
        for scenario_id in ("chain_v1", "chain_v2")[:: 1 if round_index % 2 == 0 else -1]:
            ends, spans = asyncio.run(stepline_runs(server, scenario_id, REPEATS))
            results[scenario_id] += ends
            results[f"{scenario_id} span"] += spans
        direct += asyncio.run(direct_chain(REPEATS))
    raw = median(direct)
    print(f"   direct on one SDK session:  {raw * 1000:7.1f} ms ({raw / CHAIN_STEPS * 1000:.3f} ms/call)")
    for scenario_id, label in (("chain_v1", 'v1 {"from"} bindings'), ("chain_v2", "v2 expressions")):
        end, span = median(results[scenario_id]), median(results[f"{scenario_id} span"])
        print(
            f"   stepline, {label:20}: {end * 1000:7.1f} ms POST to run_finished, {span * 1000:7.1f} ms run span "
            f"({span / CHAIN_STEPS * 1000:.3f} ms/step); ratio {end / raw:.2f}x end to end, "
            f"{span / raw:.2f}x run span (target <= 1.25x)"
        )


def parallel(server: Stepline) -> None:
    ends, spans = asyncio.run(stepline_runs(server, "parallel", REPEATS))
    print(f"2. {PARALLEL_STEPS} independent steps of a {PARALLEL_MS} ms tool (median of {len(spans)})")
    print(f"   run span {median(spans):.3f} s, POST to run_finished {median(ends):.3f} s (target <= 0.65 s)")


def fan_out(server: Stepline) -> None:
    through: list[float] = []
    spans: list[float] = []
    direct: list[float] = []
    for _ in range(ROUNDS):
        ends, run_spans = asyncio.run(stepline_runs(server, "fan_out", 1))
        through += ends
        spans += run_spans
        direct += asyncio.run(direct_fan_out(1))
    end, span, raw = median(through), median(spans), median(direct)
    print(f"3. for_each over {ITEMS} items of the reference echo, max_parallel {MAX_PARALLEL} (median of {ROUNDS})")
    print(f"   direct, {MAX_PARALLEL} calls at a time on one SDK session: {ITEMS / raw:7.0f} items/s ({raw:.3f} s)")
    print(f"   stepline run span:                       {ITEMS / span:7.0f} items/s ({span:.3f} s)")
    print(f"   stepline POST to run_finished:           {ITEMS / end:7.0f} items/s ({end:.3f} s)")
    print(f"   ratio: {span / raw:.2f}x run span, {end / raw:.2f}x end to end (target <= 1.3x)")


def main() -> None:
    servers = {"reference": reference_server(), "bench": {"command": sys.executable, "args": [str(TRIVIAL_SERVER)]}}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        write_scenarios(home / "scenarios")
        with stepline(home, home / "scenarios", servers=servers) as server:
            per_step(server)
            parallel(server)
            fan_out(server)


if __name__ == "__main__":
    main()
