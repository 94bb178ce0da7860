"""Core benchmarks of a real `stepline serve`: `python -m tests.benchmarks.bench_core`.

1. Per-step cost: a 20-step scenario of a trivial tool, POST to run_finished, against the same 20
   calls made directly on one MCP session (target: at most 1.25x).
2. SSE fan-out: 1,000 subscribers to one run, each receiving every event; emit-to-receive latency
   (target p99 < 250 ms) and the run's duration with and without them (target: at most 10% slower).
3. Throughput: 50 runs of a 3-step scenario submitted at once; runs completed per second.

Figures vary with the machine; this prints them and never fails on them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client._probe import negotiate_auto

from tests.benchmarks.support import (
    TRIVIAL_SERVER,
    Stepline,
    client_processes,
    median,
    percentile,
    stepline,
    timestamp,
    write_scenario,
)

STEPS = 20
WARMUP, REPEATS, ROUNDS = 3, 10, 3
SUBSCRIBERS, CLIENT_PROCESSES = 1000, 2
# (label, steps, milliseconds per step, progress reports per step): paced like the demo server's tools,
# then four times denser in events, where the fan-out's CPU cost shows.
FAN_OUT_RUNS = [("demo-paced", 10, 1000, 4), ("dense", 20, 100, 1)]
BURST, BURST_STEPS = 50, 3


def echo_chain(steps: int) -> list[dict[str, Any]]:
    """`steps` echo calls, each passing on the previous one's output, as a real scenario would."""
    chain = [{"name": "s0", "tool": "echo", "input": {"text": "hello"}}]
    for n in range(1, steps):
        chain.append({"name": f"s{n}", "tool": "echo", "input": {"text": {"from": f"steps.s{n - 1}.output.result"}}})
    return chain


def write_scenarios(folder: Path) -> None:
    write_scenario(folder, "echo20", echo_chain(STEPS))
    write_scenario(folder, "echo3", echo_chain(BURST_STEPS))
    gate = {"name": "gate", "tool": "gate", "input": {"path": {"from": "input.path"}}}
    for label, steps, ms, reports in FAN_OUT_RUNS:
        work = [{"name": f"w{n}", "tool": "work", "input": {"ms": ms, "reports": reports}} for n in range(steps)]
        write_scenario(folder, f"fanout-{label}", [gate, *work])


# --- 1. Per-step cost ---------------------------------------------------------------------------------


async def follow_to_end(port: int, run_id: str) -> None:
    """Read a run's event stream over a raw connection until run_finished: a client with few layers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /api/runs/{run_id}/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    seen = b""
    while b"event: run_finished" not in seen:
        chunk = await reader.read(65536)
        if not chunk:
            raise RuntimeError(f"run {run_id}: the stream ended without run_finished")
        seen = seen[-64:] + chunk
    writer.close()


async def stepline_runs(server: Stepline) -> tuple[list[float], list[float]]:
    """POST to run_finished as a client sees it, and the run's own span by its timestamps."""
    times, spans = [], []
    port = int(server.url.rsplit(":", 1)[1])
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        for rep in range(WARMUP + REPEATS):
            started = time.perf_counter()
            response = await client.post("/api/runs", json={"scenario_id": "echo20", "input": {}})
            await follow_to_end(port, response.json()["run_id"])
            if rep >= WARMUP:
                times.append(time.perf_counter() - started)
                run = (await client.get(f"/api/runs/{response.json()['run_id']}")).json()
                assert run["status"] == "success", run
                spans.append(timestamp(run["finished_at"]) - timestamp(run["started_at"]))
    return times, spans


async def direct_calls(newest_protocol: bool = False) -> list[float]:
    """The same calls on one SDK session: on the 2025-11-25 protocol (the fastest), or on the newest one the
    server speaks, as Stepline negotiates it (it needs 2026-07-28 for input-required results)."""
    params = StdioServerParameters(command=sys.executable, args=[str(TRIVIAL_SERVER)])
    times = []
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        if newest_protocol:
            await negotiate_auto(session)
        else:
            await session.initialize()
        await session.list_tools()
        for rep in range(WARMUP + REPEATS):
            started = time.perf_counter()
            text = "hello"
            for _ in range(STEPS):
                result = await session.call_tool("echo", {"text": text})
                text = (result.structured_content or {})["result"]
            if rep >= WARMUP:
                times.append(time.perf_counter() - started)
    return times


def per_step(server: Stepline) -> None:
    # Alternated, so that drift in the machine's load falls on both alike.
    through: list[float] = []
    spans: list[float] = []
    direct: list[float] = []
    newest: list[float] = []
    for _ in range(ROUNDS):
        times, run_spans = asyncio.run(stepline_runs(server))
        through += times
        spans += run_spans
        direct += asyncio.run(direct_calls())
        newest += asyncio.run(direct_calls(newest_protocol=True))
    e2e, span, raw, same = median(through), median(spans), median(direct), median(newest)
    print(f"1. per-step cost, {STEPS}-step scenario of a trivial tool (median of {len(through)})")
    print(f"   stepline serve, POST to run_finished read: {e2e * 1000:6.1f} ms ({e2e / STEPS * 1000:.2f} ms/step)")
    print(f"   ... of which the run itself (timestamps):  {span * 1000:6.1f} ms")
    print(f"   direct on one MCP session:                 {raw * 1000:6.1f} ms ({raw / STEPS * 1000:.2f} ms/step)")
    print(f"   ... on the newest protocol, as Stepline:   {same * 1000:6.1f} ms ({same / STEPS * 1000:.2f} ms/step)")
    print(f"   ratio: {e2e / raw:.2f}x end to end, {span / raw:.2f}x run span (target <= 1.25x)")
    print(f"   ratio to the same protocol: {e2e / same:.2f}x end to end, {span / same:.2f}x run span")


# --- 2. SSE fan-out ---------------------------------------------------------------------------------


def event_time(event: dict[str, Any]) -> float:
    """When the event was emitted: its own timestamp, or the tool's stamp for progress."""
    kind = event["type"]
    if kind == "step_progress":
        return float(event["message"])
    return timestamp(event["started_at"] if kind in {"run_started", "step_started"} else event["finished_at"])


async def subscribe_many(port: int, run_id: str, count: int, conn: Connection) -> dict[str, Any]:
    """`count` raw HTTP/1.1 subscribers: few layers, so the client is not what is measured."""
    request = (
        f"GET /api/runs/{run_id}/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    times: dict[int, float] = {}
    samples: list[tuple[float, float]] = []
    complete = 0
    ready = 0

    async def one() -> None:
        nonlocal complete, ready
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await reader.readuntil(b"\r\n\r\n")
        buffer, seqs, finished = b"", [], False
        while not finished:
            size = int((await reader.readline()).strip(), 16)
            if size == 0:
                break
            chunk = await reader.readexactly(size + 2)
            received = time.time()
            buffer += chunk[:-2]
            while (end := buffer.find(b"\r\n\r\n")) >= 0:
                frame, buffer = buffer[:end], buffer[end + 4 :]
                if not frame.startswith(b"id: "):
                    continue  # a keep-alive comment
                # "id: <seq>", "event: <type>", "data: <json>": the JSON is parsed once per event, not per copy.
                id_line, event_line, data_line = frame.split(b"\r\n", 2)
                seq = int(id_line[4:])
                seqs.append(seq)
                if seq not in times:
                    times[seq] = event_time(json.loads(data_line[6:]))
                samples.append((times[seq], received - times[seq]))
                if len(seqs) == 1:
                    ready += 1
                    if ready == count:
                        conn.send("ready")
                finished = event_line == b"event: run_finished"
        writer.close()
        if finished and seqs == list(range(1, len(seqs) + 1)):
            complete += 1

    await asyncio.gather(*(one() for _ in range(count)))
    return {"complete": complete, "events": len(times), "samples": samples}


def subscriber_process(port: int, run_id: str, count: int, conn: Connection) -> None:
    conn.send(asyncio.run(subscribe_many(port, run_id, count, conn)))


def run_duration(server: Stepline, run_id: str) -> float:
    """From the first measured step's start to run_finished, by the run's own timestamps."""
    deadline = time.monotonic() + 120
    while (run := httpx.get(f"{server.url}/api/runs/{run_id}").json())["status"] in {"queued", "running"}:
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run_id} did not finish")
        time.sleep(0.05)
    assert run["status"] == "success", run
    return timestamp(run["finished_at"]) - timestamp(run["steps"][1]["started_at"])


def start_fanout_run(server: Stepline, label: str, gate: Path) -> str:
    response = httpx.post(
        f"{server.url}/api/runs", json={"scenario_id": f"fanout-{label}", "input": {"path": str(gate)}}
    )
    return response.json()["run_id"]


def fan_out(server: Stepline, home: Path, label: str, steps: int, ms: int, reports: int, clients: int) -> None:
    open_gate = home / "open"
    open_gate.touch()
    alone = median([run_duration(server, start_fanout_run(server, label, open_gate)) for _ in range(3)])

    gate = home / f"gate-{label}"
    run_id = start_fanout_run(server, label, gate)
    port = int(server.url.rsplit(":", 1)[1])
    with client_processes(subscriber_process, (port, run_id), SUBSCRIBERS, clients, timeout=120) as pipes:
        opened = time.time()
        gate.touch()
        results = [pipe.recv() for pipe in pipes]
    crowded = run_duration(server, run_id)

    latencies = [latency for result in results for emitted, latency in result["samples"] if emitted >= opened]
    complete = sum(result["complete"] for result in results)
    events = max(result["events"] for result in results)
    print(f"2. SSE fan-out ({label}): {SUBSCRIBERS} subscribers to one run of {steps} steps of {ms} ms, "
          f"{reports} progress report(s) each ({clients} client process(es))")
    print(f"   subscribers that received every event ({events}) in order: {complete}/{SUBSCRIBERS}")
    print(f"   emit-to-receive over {len(latencies)} deliveries: p50 {percentile(latencies, 50) * 1000:.1f} ms, "
          f"p99 {percentile(latencies, 99) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms (target p99 < 250 ms)")
    print(f"   run duration: {alone * 1000:.0f} ms alone, {crowded * 1000:.0f} ms with {SUBSCRIBERS} subscribers "
          f"({(crowded / alone - 1) * 100:+.1f}%, target <= +10%)")


# --- 3. Throughput ------------------------------------------------------------------------------------


async def burst(server: Stepline) -> float:
    limits = httpx.Limits(max_connections=2 * BURST, max_keepalive_connections=2 * BURST)
    async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as client:
        started = time.perf_counter()
        responses = await asyncio.gather(
            *(client.post("/api/runs", json={"scenario_id": "echo3", "input": {}}) for _ in range(BURST))
        )
        run_ids = [response.json()["run_id"] for response in responses]
        port = int(server.url.rsplit(":", 1)[1])
        await asyncio.gather(*(follow_to_end(port, run_id) for run_id in run_ids))
        elapsed = time.perf_counter() - started
        statuses = {(await client.get(f"/api/runs/{run_id}")).json()["status"] for run_id in run_ids}
        assert statuses == {"success"}, statuses
    return BURST / elapsed


def throughput(server: Stepline) -> None:
    rates = [asyncio.run(burst(server)) for _ in range(3)]
    print(f"3. throughput: {BURST} runs of a {BURST_STEPS}-step trivial scenario submitted at once")
    print(f"   {median(rates):.0f} runs/s completed (median of 3; {min(rates):.0f}-{max(rates):.0f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["per-step", "fan-out", "throughput"], help="run one benchmark")
    parser.add_argument("--no-history", action="store_true", help="serve with --no-history (runs in memory only)")
    parser.add_argument(
        "--client-processes", type=int, default=CLIENT_PROCESSES, help="processes the fan-out subscribers share"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stepline-bench-") as tmp:
        home = Path(tmp)
        write_scenarios(home / "scenarios")
        flags = ["--no-history"] if args.no_history else []
        with stepline(home, home / "scenarios", *flags) as server:
            print(f"stepline serve ({'history off' if args.no_history else 'history on, the default'}), "
                  f"{multiprocessing.cpu_count()} CPUs")
            if args.only in (None, "per-step"):
                per_step(server)
            if args.only in (None, "fan-out"):
                for fan_out_run in FAN_OUT_RUNS:
                    fan_out(server, home, *fan_out_run, args.client_processes)
            if args.only in (None, "throughput"):
                throughput(server)


if __name__ == "__main__":
    main()
