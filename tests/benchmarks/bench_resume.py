"""How soon a run goes on after its process is killed: `python -m tests.benchmarks.bench_resume`.

A real `stepline serve` (SQLite history) runs a for_each of 200 items over the benchmark server's `work`
(20 ms each, 4 at a time); midway it is killed with SIGKILL, and a new `stepline serve` is started on the same
data directory. Measured from the kill: the new process answering /healthz, the run's `run_resumed` event, and
the first item after it ending. Each item's result must be recorded exactly once, with seq contiguous.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests.benchmarks.support import PROJECT_ROOT, TRIVIAL_SERVER, free_port, median, timestamp, write_scenario

ITEMS = 200
ITEM_MS = 20
KILL_AFTER_ITEMS = 100
ROUNDS = 3


def serve(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [
        sys.executable, "-m", "web", "serve", "--port", str(port), "--mcp-config", str(home / "mcp.json"),
        "--scenarios", str(home / "scenarios"), "--data-dir", str(home / "data"),
    ]  # fmt: skip
    log = (home / f"stepline-{port}.log").open("wb")
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}"


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("stepline exited")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.01)
    raise RuntimeError("stepline did not get ready")


def ended_items(url: str, run_id: str) -> tuple[int, str]:
    """How many of the run's items have ended, and the run's status."""
    snapshot = httpx.get(f"{url}/api/runs/{run_id}", timeout=10).json()
    step = snapshot["steps"][0]
    return (step.get("items_done") or 0) + (step.get("items_failed") or 0), snapshot["status"]


def events(url: str, run_id: str) -> list[dict[str, Any]]:
    frames = httpx.get(f"{url}/api/runs/{run_id}/events", timeout=60).text
    return [json.loads(line[6:]) for line in frames.splitlines() if line.startswith("data: ")]


def one_round(home: Path) -> dict[str, float]:
    first, url = serve(home)
    wait_ready(url, first)
    run = httpx.post(
        f"{url}/api/runs", json={"scenario_id": "items", "input": {"items": list(range(ITEMS))}}, timeout=10
    ).json()
    run_id = run["run_id"]
    while ended_items(url, run_id)[0] < KILL_AFTER_ITEMS:  # until half the items have ended
        time.sleep(0.005)
    killed = time.time()
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    second, url = serve(home)
    try:
        wait_ready(url, second)
        ready = time.time()
        before, _ = ended_items(url, run_id)  # what the killed process had recorded
        first_item = None
        while True:
            count, status = ended_items(url, run_id)
            if first_item is None and count > before:
                first_item = time.time()
            if status in ("success", "failed"):
                break
            time.sleep(0.005)
        recorded = events(url, run_id)
    finally:
        second.terminate()
        second.wait(15)
    seqs = [event["seq"] for event in recorded]
    assert seqs == list(range(1, len(seqs) + 1)), "seq is not contiguous across the restart"
    resumed_at = next(i for i, event in enumerate(recorded) if event["type"] == "run_resumed")
    items = [e["item_index"] for e in recorded if e["type"] == "step_item_finished"]
    assert recorded[-1]["status"] == "success" and sorted(set(items)) == list(range(ITEMS))
    return {
        "ready": ready - killed,
        "resumed": timestamp(recorded[resumed_at]["resumed_at"]) - killed,
        "first_item": (first_item or float("nan")) - killed,
        "twice": len(items) - len(set(items)),
    }


def main() -> None:
    results = []
    for _ in range(ROUNDS):
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            servers = {"bench": {"command": sys.executable, "args": [str(TRIVIAL_SERVER)]}}
            (home / "mcp.json").write_text(json.dumps({"mcpServers": servers}), encoding="utf-8")
            step = {
                "name": "each",
                "tool": "work",
                "for_each": "{{ input.items }}",
                "max_parallel": 4,
                "input": {"ms": ITEM_MS},
            }
            write_scenario(home / "scenarios", "items", [step], version="2", defaults={"resume": "auto"})
            results.append(one_round(home))
    print(f"kill -9 midway through a for_each of {ITEMS} items ({ITEM_MS} ms each, 4 at a time), SQLite, one process:")
    print(f"  medians of {ROUNDS} rounds, from the kill:")
    print(f"    new process answering /healthz      {median([r['ready'] for r in results]) * 1000:8.0f} ms")
    print(f"    run_resumed recorded                 {median([r['resumed'] for r in results]) * 1000:8.0f} ms")
    first = [r["first_item"] for r in results if r["first_item"] == r["first_item"]]
    if first:
        print(f"    first item after the resume ended    {median(first) * 1000:8.0f} ms")
    print(f"  items recorded twice: {[r['twice'] for r in results]} (each item's result is recorded once; the tests")
    print("  count the calls themselves: only those in flight at the kill, at most 4, are made twice)")


if __name__ == "__main__":
    main()
