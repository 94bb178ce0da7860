"""Starting runs and waiting for them over the JSON API, as a client would."""

from __future__ import annotations

import time
from typing import Any

import httpx

TERMINAL = {"success", "failed", "cancelled"}


def start_run(base_url: str, scenario_id: str, run_input: dict[str, Any] | None = None) -> dict[str, Any]:
    response = httpx.post(
        f"{base_url}/api/runs", json={"scenario_id": scenario_id, "input": run_input or {}}, timeout=10
    )
    assert response.status_code == 202, response.text
    return response.json()


def get_run(base_url: str, run_id: str) -> dict[str, Any]:
    response = httpx.get(f"{base_url}/api/runs/{run_id}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def wait_finished(base_url: str, run_id: str, timeout: float = 20) -> dict[str, Any]:
    """The run's snapshot once it has ended."""
    deadline = time.monotonic() + timeout
    while True:
        run = get_run(base_url, run_id)
        if run["status"] in TERMINAL:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {run['status']} after {timeout}s: {run}")
        time.sleep(0.02)


def run_to_end(base_url: str, scenario_id: str, run_input: dict[str, Any] | None = None) -> dict[str, Any]:
    return wait_finished(base_url, start_run(base_url, scenario_id, run_input)["run_id"])
