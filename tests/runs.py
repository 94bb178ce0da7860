"""Starting runs and waiting for them over the JSON API, as a client would.

`target` is an httpx client (an in-process app's `client`, or one with a server's base_url) or a
server's base URL.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

TERMINAL = {"success", "failed", "cancelled"}
Target = httpx.Client | str


def _request(target: Target, method: str, path: str, **kwargs: Any) -> httpx.Response:
    if isinstance(target, httpx.Client):
        return target.request(method, path, **kwargs)
    return httpx.request(method, f"{target}{path}", timeout=10, **kwargs)


def start_run(target: Target, scenario_id: str, run_input: dict[str, Any] | None = None) -> dict[str, Any]:
    response = _request(target, "POST", "/api/runs", json={"scenario_id": scenario_id, "input": run_input or {}})
    assert response.status_code == 202, response.text
    return response.json()


def get_run(target: Target, run_id: str) -> dict[str, Any]:
    response = _request(target, "GET", f"/api/runs/{run_id}")
    assert response.status_code == 200, response.text
    return response.json()


def wait_finished(target: Target, run_id: str, timeout: float = 20) -> dict[str, Any]:
    """The run's snapshot once it has ended."""
    deadline = time.monotonic() + timeout
    while True:
        run = get_run(target, run_id)
        if run["status"] in TERMINAL:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {run['status']} after {timeout}s: {run}")
        time.sleep(0.02)


def run_to_end(target: Target, scenario_id: str, run_input: dict[str, Any] | None = None) -> dict[str, Any]:
    return wait_finished(target, start_run(target, scenario_id, run_input)["run_id"])
