"""What the benchmarks share: a real `stepline serve` in its own process, and small statistics."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TRIVIAL_SERVER = Path(__file__).resolve().with_name("trivial_server.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Stepline:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


def write_scenario(
    folder: Path, scenario_id: str, steps: list[dict[str, Any]], *, version: str = "1", **extra: Any
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    scenario = {"schema_version": version, "scenario_id": scenario_id, "name": scenario_id, "steps": steps, **extra}
    (folder / f"{scenario_id}.json").write_text(json.dumps(scenario), encoding="utf-8")


@contextlib.contextmanager
def stepline(
    home: Path,
    scenarios: Path,
    *args: str,
    env: dict[str, str] | None = None,
    servers: dict[str, dict[str, Any]] | None = None,
) -> Iterator[Stepline]:
    """`stepline serve` with `servers` (an mcpServers dict; by default the trivial benchmark server, stdio)."""
    servers = servers or {"bench": {"command": sys.executable, "args": [str(TRIVIAL_SERVER)]}}
    config = home / "mcp.json"
    config.write_text(json.dumps({"mcpServers": servers}), encoding="utf-8")
    port = free_port()
    log = home / f"stepline-{port}.log"
    command = [
        sys.executable, "-m", "web", "serve", "--port", str(port), "--mcp-config", str(config),
        "--scenarios", str(scenarios), "--data-dir", str(home / f"data-{port}"), *args,
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT
        )
    server = Stepline(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"stepline exited:\n{log.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                health = httpx.get(f"{server.url}/healthz", timeout=1).json()
                if all(health["servers"][name]["state"] == "ready" for name in servers):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"stepline did not get ready:\n{log.read_text()}")
            time.sleep(0.05)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def timestamp(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def rss_bytes(pid: int) -> int:
    """A process's resident memory, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def open_sockets(pid: int) -> int:
    """How many sockets a process holds open, from /proc (Linux)."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            count += os.readlink(fd).startswith("socket:")
    return count


def raise_open_files(wanted: int) -> int:
    """Lift this process's (and its future children's) open-file limit towards `wanted`; the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return max(soft, target)


@contextlib.contextmanager
def client_processes(
    target: Callable[..., None], args: tuple[Any, ...], clients: int, processes: int, *, timeout: float
) -> Iterator[list[Connection]]:
    """`clients` clients spread over `processes` spawned processes, each running
    `target(*args, its_count, its_pipe)`; yields their pipes once every process has sent "ready"."""
    spawn = multiprocessing.get_context("spawn")
    pipes, children = [], []
    try:
        for n in range(processes):
            ours, theirs = spawn.Pipe()
            count = clients // processes + (1 if n < clients % processes else 0)
            child = spawn.Process(target=target, args=(*args, count, theirs), daemon=True)
            child.start()
            pipes.append(ours)
            children.append(child)
        for pipe in pipes:
            if not pipe.poll(timeout) or pipe.recv() != "ready":
                raise RuntimeError("the clients did not connect")
        yield pipes
    finally:
        for child in children:
            child.join(5)
            if child.is_alive():
                child.kill()
