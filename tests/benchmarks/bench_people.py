"""What a person in the loop costs, on a real `stepline serve`: `python -m tests.benchmarks.bench_people`.

1. One elicitation's round trip against the MCP reference server's `trigger-elicitation-request` (npm,
   stdio): from the request reaching the person to the tool's result. Through Stepline, the person is an
   API client that reads the run's JSON event stream and POSTs its answer as soon as `input_requested`
   arrives; the round trip ends when `step_finished` (the tool's result) arrives on the same stream.
   Directly, an SDK client answers in its elicitation callback; the round trip ends when `call_tool`
   returns. Both in one run, alternated; p50 and p99 over each side's calls.
2. An approval step: from the answer's POST to `run_finished` read on the stream.

Figures vary with the machine; this prints them and never fails on them.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from mcp import ClientSession, StdioServerParameters, stdio_client, types
from mcp.client.session import ClientRequestContext

from tests.benchmarks.support import Stepline, median, percentile, stepline, write_scenario
from tests.reference_server import reference_server
from tests.sse import Frame, aparse_lines

WARMUP, ROUNDS, PER_ROUND = 3, 5, 10
APPROVALS = 30
# The one field the reference server's form requires.
ANSWER = {"name": "Ada Lovelace"}


def write_scenarios(folder: Path) -> None:
    write_scenario(
        folder, "elicit", [{"name": "ask", "tool": "trigger-elicitation-request", "server": "reference"}], version="2"
    )
    write_scenario(folder, "approve", [{"type": "approval", "name": "approve", "message": "Go on?"}], version="2")


async def frames_of(client: httpx.AsyncClient, run_id: str) -> Any:
    async with client.stream("GET", f"/api/runs/{run_id}/events") as response:
        if response.status_code != 200:
            raise RuntimeError(f"stream of {run_id}: {response.status_code} {await response.aread()!r}")
        async for item in aparse_lines(response.aiter_lines()):
            if isinstance(item, Frame):
                yield item


async def answer(client: httpx.AsyncClient, run_id: str, request_id: str, content: dict[str, Any]) -> None:
    response = await client.post(
        f"/api/runs/{run_id}/requests/{request_id}", json={"action": "accept", "content": content}
    )
    if response.status_code != 200:
        raise RuntimeError(f"answer to {request_id}: {response.status_code} {response.text}")


async def stepline_elicitation(client: httpx.AsyncClient) -> tuple[float, float]:
    """(seconds from `input_requested` read off the stream to `step_finished` read off it, of which the
    answer's POST)."""
    run_id = (await client.post("/api/runs", json={"scenario_id": "elicit", "input": {}})).json()["run_id"]
    asked = posted = finished = 0.0
    async for frame in frames_of(client, run_id):
        if frame.event == "input_requested":
            asked = time.perf_counter()
            await answer(client, run_id, frame.json()["request_id"], ANSWER)
            posted = time.perf_counter()
        elif frame.event == "step_finished":
            finished = time.perf_counter()
            step = frame.json()
            if step["status"] != "success" or "Ada Lovelace" not in str(step["output"]):
                raise RuntimeError(f"the step ended {step['status']}: {step['message']} {step['output']!r}")
    if not asked or not finished:
        raise RuntimeError(f"run {run_id} ended without asking or finishing its step")
    return finished - asked, posted - asked


async def stepline_elicitations(server: Stepline, count: int) -> list[tuple[float, float]]:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        return [await stepline_elicitation(client) for _ in range(count)]


async def direct_elicitations(count: int) -> list[float]:
    """Seconds from the SDK client's elicitation callback being called to `call_tool` returning."""
    asked: list[float] = []

    async def elicit(context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(time.perf_counter())
        return types.ElicitResult(action="accept", content=ANSWER)

    config = reference_server()
    times = []
    params = StdioServerParameters(command=config["command"], args=config["args"])
    async with (
        stdio_client(params) as (read, write),
        ClientSession(read, write, elicitation_callback=elicit) as session,
    ):
        await session.initialize()
        await session.list_tools()
        # Stepline's session is long-lived and warm: so is this one before it is timed.
        await session.call_tool("trigger-elicitation-request", {})
        for _ in range(count):
            result = await session.call_tool("trigger-elicitation-request", {})
            done = time.perf_counter()
            if result.is_error or "Ada Lovelace" not in str(result.content):
                raise RuntimeError(f"the direct call failed: {result.content!r}")
            times.append(done - asked[-1])
    return times


def elicitation(server: Stepline) -> None:
    asyncio.run(stepline_elicitations(server, WARMUP))
    asyncio.run(direct_elicitations(WARMUP))
    rounds: list[tuple[float, float]] = []
    direct: list[float] = []
    # Alternated, so that drift in the machine's load falls on both alike.
    for _ in range(ROUNDS):
        rounds += asyncio.run(stepline_elicitations(server, PER_ROUND))
        direct += asyncio.run(direct_elicitations(PER_ROUND))
    through = [trip for trip, _ in rounds]
    posts = [post for _, post in rounds]
    print(f"1. one elicitation's round trip, reference trigger-elicitation-request (stdio), {len(direct)} each")
    print(f"   direct, the SDK callback answers:       p50 {ms(median(direct))}  p99 {ms(percentile(direct, 99))}")
    print(
        f"   stepline, an API client answers:        p50 {ms(median(through))}  p99 {ms(percentile(through, 99))}"
        f"  ({median(through) / median(direct):.1f}x at p50)"
    )
    print(f"     of which the answer's POST (on disk): p50 {ms(median(posts))}  p99 {ms(percentile(posts, 99))}")


async def approval_round(client: httpx.AsyncClient) -> tuple[float, float]:
    """(answer POST's own time, answer POST sent to `run_finished` read)."""
    run_id = (await client.post("/api/runs", json={"scenario_id": "approve", "input": {}})).json()["run_id"]
    sent = posted = 0.0
    async for frame in frames_of(client, run_id):
        if frame.event == "input_requested":
            sent = time.perf_counter()
            await answer(client, run_id, frame.json()["request_id"], {"comment": "fine"})
            posted = time.perf_counter()
        elif frame.event == "run_finished":
            if frame.json()["status"] != "success":
                raise RuntimeError(f"approval run ended {frame.json()['status']}: {frame.json()['message']}")
            return posted - sent, time.perf_counter() - sent
    raise RuntimeError(f"run {run_id}'s stream ended without run_finished")


async def approvals(server: Stepline, count: int) -> list[tuple[float, float]]:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        return [await approval_round(client) for _ in range(count)]


def approval(server: Stepline) -> None:
    rounds = asyncio.run(approvals(server, WARMUP + APPROVALS))[WARMUP:]
    posts = [post for post, _ in rounds]
    ends = [end for _, end in rounds]
    print(f"2. an approval step: its answer to the run's end ({APPROVALS} runs, history on)")
    print(f"   the answer's POST (on disk):            p50 {ms(median(posts))}  p99 {ms(percentile(posts, 99))}")
    print(f"   the answer's POST to run_finished read: p50 {ms(median(ends))}  p99 {ms(percentile(ends, 99))}")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:6.1f} ms"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        write_scenarios(home / "scenarios")
        with stepline(home, home / "scenarios", servers={"reference": reference_server()}) as server:
            elicitation(server)
            approval(server)


if __name__ == "__main__":
    main()
