"""What a user of the wheel gets: `pip install .` into a fresh venv, then `stepline serve` elsewhere.

Run by `make wheel-check` (and CI). The server is started from an empty directory with nothing of this
checkout on its path, so every template, asset and scenario must come from the installed package.
It then fetches every page and every asset those pages reference, and runs each shipped scenario.
Exits 1 naming what failed.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urljoin

import httpx

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_SCENARIOS = [
    "news_source_discovery_v1",
    "outlet_brief_approval_v2",
    "outlet_profile_v1",
    "outlet_story_origins_v2",
    "story_origin_check_v2",
]
ASSET = re.compile(r'(?:src|href)="([^"]*/static/[^"]+)"')


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="stepline-wheel-") as tmp:
        root = Path(tmp)
        venv = root / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", PROJECT_ROOT],
            check=True,
        )
        elsewhere = root / "elsewhere"
        elsewhere.mkdir()
        env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
        # Slow enough that a run's page is fetched while it is live (with its htmx stream).
        env["STEPLINE_DEMO_DELAY"] = "0.2"
        port = _free_port()
        server = subprocess.Popen(
            [venv / "bin" / "stepline", "serve", "--port", str(port), "--data-dir", str(root / "data")],
            cwd=elsewhere,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            problems = check(f"http://127.0.0.1:{port}", server)
        finally:
            server.terminate()
            output = server.communicate(timeout=15)[0].decode(errors="replace")
        if problems:
            print("wheel check FAILED:\n- " + "\n- ".join(problems) + "\n--- server log ---\n" + output)
            return 1
        return 0


def check(base: str, server: subprocess.Popen[bytes]) -> list[str]:
    with httpx.Client(base_url=base, timeout=20) as client:
        _wait_ready(client, server)
        problems: list[str] = []
        location = client.get("/healthz").json()
        scenarios = {s["id"]: s for s in client.get("/api/scenarios").json()}
        if sorted(scenarios) != SHIPPED_SCENARIOS:
            problems.append(f"the installed package ships scenarios {sorted(scenarios)}, expected {SHIPPED_SCENARIOS}")
        pages = ["/", "/runs", "/tools", "/docs", *(f"/scenarios/{s}" for s in scenarios)]
        assets: set[str] = set()
        for scenario_id, scenario in scenarios.items():
            run_input = scenario["input_schema"]["examples"][0]
            run = client.post("/api/runs", json={"scenario_id": scenario_id, "input": run_input})
            if run.status_code != 202:
                problems.append(f"POST /api/runs for {scenario_id}: {run.status_code} {run.text[:200]}")
                continue
            run_id = run.json()["run_id"]
            live = client.get(f"/runs/{run_id}")  # still running: the page that follows the stream
            assets.update(urljoin("/", path) for path in ASSET.findall(live.text))
            status = _wait_finished(client, run_id)
            if status != "success":
                problems.append(f"the {scenario_id} run ended {status}")
            pages.append(f"/runs/{run_id}")
        for page in pages:
            response = client.get(page)
            if response.status_code != 200:
                problems.append(f"GET {page}: {response.status_code}")
                continue
            assets.update(urljoin(page, path) for path in ASSET.findall(response.text))
        for path in ["/openapi.json", "/api/tools", *sorted(assets)]:
            response = client.get(path)
            if response.status_code != 200 or not response.content:
                problems.append(f"GET {path}: {response.status_code}")
        tools = _mcp_tools(client)
        if tools != SHIPPED_SCENARIOS:
            problems.append(f"/mcp lists the tools {tools}, expected the shipped scenarios")
        if not any("htmx" in asset for asset in assets):
            problems.append(f"the pages reference no htmx script (assets: {sorted(assets)})")
        print(
            f"wheel check: served {len(pages)} pages and {len(assets)} assets, ran {len(scenarios)} scenarios "
            f"from an installed wheel (history {location['history']['state']})"
        )
        return problems


def _mcp_tools(client: httpx.Client) -> list[str]:
    """The tools /mcp lists to a client on the 2025 handshake (each answer comes as one SSE message)."""
    headers = {"Accept": "application/json, text/event-stream"}
    hello = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "wheel-check", "version": "1"}}
    opened = client.post(
        "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello}, headers=headers
    )
    session = {**headers, "Mcp-Session-Id": opened.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
    client.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)
    listed = client.post("/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=session)
    [data] = [line.removeprefix("data: ") for line in listed.text.splitlines() if line.startswith("data: ")]
    return sorted(tool["name"] for tool in json.loads(data)["result"]["tools"])


def _wait_ready(client: httpx.Client, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"stepline serve exited with {server.returncode}")
        try:
            servers = client.get("/healthz").json()["servers"]
            if all(s["state"] == "ready" for s in servers.values()):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("stepline serve did not become ready within 30 s")


def _wait_finished(client: httpx.Client, run_id: str) -> str:
    """The run's final status; an approval it waits for is given, with the form's defaults."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        run = client.get(f"/api/runs/{run_id}").json()
        if run["status"] in {"success", "failed", "cancelled"}:
            return run["status"]
        for request in run.get("pending_requests", []):
            defaults = {
                name: field["default"]
                for name, field in request["requested_schema"].get("properties", {}).items()
                if "default" in field
            }
            answer = {"action": "accept", "content": defaults}
            client.post(f"/api/runs/{run_id}/requests/{request['request_id']}", json=answer)
        time.sleep(0.05)
    return "unfinished after 30 s"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
