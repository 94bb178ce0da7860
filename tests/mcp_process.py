"""The tests' own MCP servers (`tests/servers/*.py`) served over HTTP in a process of their own."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import free_port, wait_until

SERVERS = Path(__file__).resolve().parent / "servers"
STARTUP_SECONDS = 15


def workflow_home(home: Path, scenarios: Iterable[dict[str, Any]]) -> tuple[Path, Path]:
    """(scenario folder, mcpServers file) in `home`: each scenario as its file, and the tests' workflow
    server (tests/servers/workflow.py) over stdio as server `workflow`."""
    folder = home / "scenarios"
    folder.mkdir()
    for scenario in scenarios:
        (folder / f"{scenario['scenario_id']}.json").write_text(json.dumps(scenario, indent=2), encoding="utf-8")
    config = home / "mcp.json"
    server = {"command": sys.executable, "args": [str(SERVERS / "workflow.py"), "stdio"]}
    config.write_text(json.dumps({"mcpServers": {"workflow": server}}), encoding="utf-8")
    return folder, config


def asking_home(home: Path, scenarios: Iterable[dict[str, Any]]) -> tuple[Path, Path]:
    """`workflow_home`, plus tests/servers/form_asker.py over stdio as server `asker`: a server that asks its
    client mid-call, over the 2025 protocol's open session."""
    folder, config = workflow_home(home, scenarios)
    servers = json.loads(config.read_text(encoding="utf-8"))
    servers["mcpServers"]["asker"] = {
        "command": sys.executable,
        "args": [str(SERVERS / "form_asker.py"), "stdio"],
        "protocol": "legacy",
    }
    config.write_text(json.dumps(servers), encoding="utf-8")
    return folder, config


@dataclass
class HttpMcpServer:
    """`tests/servers/<script>` over `transport` on a fixed port, so it can be killed and started again."""

    script: str
    transport: str  # streamable-http | sse
    log_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        path = "/sse" if self.transport == "sse" else "/mcp"
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> HttpMcpServer:
        with (self.log_dir / f"{Path(self.script).stem}-{self.port}.log").open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(SERVERS / self.script), self.transport, str(self.port)], stdout=log, stderr=log
            )
        wait_until(self._listening, STARTUP_SECONDS, f"{self.script} on port {self.port}")
        return self

    def _listening(self) -> bool:
        assert self.process is not None and self.process.poll() is None, f"{self.script} exited"
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
