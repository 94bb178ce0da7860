"""A run page's render time with its step graph: `python -m tests.benchmarks.bench_pages [--requests N]`.

The page of a finished run of fifty steps (fan-outs, joins, edges over many rows), one of whose
outputs is 1 MiB of text, fetched whole over httpx's ASGITransport from the app in this process
(its lifespan, history and MCP server real; no socket, so the figure is the app's own work):
p50/p99 and the page's size. Then the graph's own share: drawing it (`run_graph` and `_graph.html`)
for that run, and laying out the fifty steps once, as a plan's first page does (later pages reuse it).

The page is measured as first drawn after the run finished, and as viewed again (a finished run's graph
and step cards are drawn once and kept). Target: p99 ≤ 10 ms for the page. Figures vary with the machine; this
prints them and never fails on them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.benchmarks.support import median, percentile
from tests.inprocess import InProcessApp, in_process
from tests.mcp_process import workflow_home
from tests.runs import run_to_end
from web.graph import run_graph
from web.graph_layout import layout
from web.step_cards import finished_parts
from web.templating import templates
from web.views import run_view

WARMUP = 20
STEPS = 50
BIG_OUTPUT_BYTES = 1024 * 1024
# One line of the workflow server's `lines_text` ("  line 12345  \n" and the newline joining it): 16 bytes.
LINE_BYTES = 16


def fifty_steps() -> dict[str, Any]:
    """Fifty steps; the tenth answers 1 MiB of text. Each waits for one to three earlier ones, some far back."""
    steps: list[dict[str, Any]] = [{"name": "s00", "tool": "echo", "input": {"value": 0}}]
    for n in range(1, STEPS):
        needs = sorted({f"s{(n * k * 7 + k) % n:02d}" for k in range(1, 2 + n % 3)})
        step: dict[str, Any] = {"name": f"s{n:02d}", "tool": "echo", "input": {"value": n}, "needs": needs}
        if n == 10:
            step.update(tool="lines_text", input={"n": BIG_OUTPUT_BYTES // LINE_BYTES})
        steps.append(step)
    return {"schema_version": "2", "scenario_id": "fifty_v2", "name": "Fifty steps", "steps": steps}


def timed(call: Any, count: int) -> list[float]:
    """Milliseconds per call, after a warm-up."""
    times = []
    for n in range(WARMUP + count):
        started = time.perf_counter()
        call()
        if n >= WARMUP:
            times.append((time.perf_counter() - started) * 1000)
    return times


def report(label: str, values: list[float], extra: str = "") -> None:
    print(
        f"  {label:<44} p50 {median(values):7.2f} ms   p99 {percentile(values, 99):7.2f} ms   "
        f"max {max(values):7.2f} ms   (n={len(values)}){extra}"
    )


def measure(app: InProcessApp, requests: int) -> None:
    run = run_to_end(app.client, "fifty_v2")
    assert run["status"] == "success", run
    big = len(next(step for step in run["steps"] if step["node_id"] == "s10")["output"].encode())
    path = f"/runs/{run['run_id']}"
    page = app.get(path)
    assert page.status_code == 200 and page.text.count('class="graph-slot"') == STEPS, page.status_code

    def fetch() -> None:
        response = app.get(path)
        assert response.status_code == 200

    def fetch_first() -> None:
        finished_parts.clear()  # as if no one had viewed the run since it finished
        fetch()

    print(f"A finished run of {STEPS} steps, one output {big / 1024:.0f} KiB ({requests} requests, after {WARMUP}):")
    size = f"   {len(page.content) / 1024:.0f} KiB"
    report("run page, first view  GET /runs/<run>", timed(fetch_first, requests), size)
    report("run page, viewed again", timed(fetch, requests), size)

    record = app.state["runs"].get(run["run_id"])
    scenario = app.state["catalog"].get("fifty_v2")
    graph_template = templates.get_template("_graph.html")

    def draw() -> None:
        graph_template.render(graph=run_graph(run_view(record.state, scenario, len(record.events))))

    report("its graph (run_graph + _graph.html)", timed(draw, requests))
    shape = tuple((step.name, step.depends_on) for step in scenario.plan.steps)
    report("laying out 50 steps, uncached", timed(lambda: layout.__wrapped__(shape), max(20, requests // 10)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="GETs of the page (default 300)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        folder, config = workflow_home(home, [fifty_steps()])
        with in_process(home, scenarios=folder, mcp_config=config, max_output_bytes=2 * BIG_OUTPUT_BYTES) as app:
            app.wait_ready()
            measure(app, args.requests)


if __name__ == "__main__":
    main()
