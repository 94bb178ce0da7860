"""The UI's speed, against a real `stepline serve`: `python -m tests.benchmarks.bench_ui [--requests N] [--runs N]`.

1. Page render time: p50/p99 of GET for the catalog, a scenario page and a finished run's page (and
   the runs and tools pages), over HTTP on one keep-alive connection, body read in full.
2. Emit-to-browser latency of a step fragment: a run watched in Chromium, its events' own times
   (`started_at` of step_started, `finished_at` of step_finished, stamped by the server as it emits
   them) against the moment the page's DOM received the swapped fragment (a MutationObserver reading
   `performance.timeOrigin + performance.now()`; same machine, same clock).

Figures vary with the machine; this prints them and never fails on them.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests.benchmarks.support import median, percentile, timestamp
from tests.browser_support import chromium, watched_page
from tests.conftest import StepServer, start_server
from tests.runs import run_to_end, start_run
from tests.sse import read_events

NEWS = "news_source_discovery_v1"
NEWS_URL = "https://signal.example/culture/lighthouse-library-explainer"
WARMUP = 20
# Seconds per demo tool call while a browser watches: each step's events come spread out, as in use.
WATCHED_DELAY = "0.2"


def render_times(base: str, path: str, requests: int) -> list[float]:
    """Milliseconds per GET of `path`, after a warm-up."""
    times = []
    with httpx.Client(base_url=base, timeout=10) as client:
        for n in range(WARMUP + requests):
            started = time.perf_counter()
            response = client.get(path)
            response.read()
            elapsed = (time.perf_counter() - started) * 1000
            assert response.status_code == 200, (path, response.status_code)
            if n >= WARMUP:
                times.append(elapsed)
    return times


def fragment_latencies(server: StepServer, runs: int) -> list[float]:
    """Milliseconds from each step event's emission to its fragment in Chromium's DOM."""
    samples: list[float] = []
    with chromium() as browser:
        page, _ = watched_page(browser)
        for _ in range(runs):
            run_id = start_run(server.url, NEWS, {"url": NEWS_URL})["run_id"]
            page.goto(f"{server.url}/runs/{run_id}")
            drawn_at = int(re.search(r"last_event_id=(\d+)", page.locator("#run").get_attribute("sse-connect") or "")
                           .group(1))  # type: ignore[union-attr]
            page.locator('#run-status[data-status="success"]').wait_for(timeout=30_000)
            swaps: list[dict[str, Any]] = page.evaluate("window.__swaps")
            for event in read_events(server.url, run_id):
                if event["seq"] <= drawn_at or event["type"] not in ("step_started", "step_finished"):
                    continue  # already on the page when it loaded: nothing was swapped for it
                status, emitted = (
                    ("running", event["started_at"]) if event["type"] == "step_started"
                    else (event["status"], event["finished_at"])
                )
                arrived = next(s["at"] for s in swaps if s["id"] == f"step-{event['index']}" and s["status"] == status)
                samples.append(arrived - timestamp(emitted) * 1000)
    return samples


def report(label: str, values: list[float]) -> None:
    print(
        f"  {label:<34} p50 {median(values):7.2f} ms   p99 {percentile(values, 99):7.2f} ms   "
        f"max {max(values):7.2f} ms   (n={len(values)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="GETs per page (default 300)")
    parser.add_argument("--runs", type=int, default=12, help="runs watched in the browser (default 12)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp), env={"STEPLINE_DEMO_DELAY": WATCHED_DELAY})
        try:
            run_id = run_to_end(server.url, NEWS, {"url": NEWS_URL})["run_id"]
            print(f"Page render time over HTTP ({args.requests} requests each, after {WARMUP} to warm up):")
            for label, path in [
                ("catalog  /", "/"),
                (f"scenario /scenarios/{NEWS[:12]}…", f"/scenarios/{NEWS}"),
                ("run      /runs/<finished run>", f"/runs/{run_id}"),
                ("runs     /runs", "/runs"),
                ("tools    /tools", "/tools"),
            ]:
                report(label, render_times(server.url, path, args.requests))
            print(f"\nEmit-to-browser latency of a step fragment ({args.runs} runs watched in Chromium):")
            report("step event → swapped into the DOM", fragment_latencies(server, args.runs))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
