"""Shared fixtures: real Stepline servers in their own processes, on free ports."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from inprocess import InProcessApp, in_process

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The tools the bundled demo MCP server offers.
DEMO_TOOLS = {
    "fetch_article",
    "search_news_sources",
    "find_earliest_source",
    "trace_citation_chain",
    "lookup_outlet",
    "list_outlet_articles",
    "outlet_stats",
    "check_archive",
    "write_brief",
}
STARTUP_SECONDS = 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class StepServer:
    """A `stepline serve` process. `url` has no trailing slash."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    root_path: str = ""
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"server did not stop within {timeout}s:\n{self.log()}") from None
        return self.process.returncode


def start_server(
    tmp_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
    port: int | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> StepServer:
    """Start `python -m web serve` with `args`; the demo server's tools are instant unless env says otherwise.

    Unless `args` or `env` name one, the server gets its own data directory inside `tmp_path`.
    """
    port = port or free_port()
    if "--data-dir" not in args and "STEPLINE_DATA_DIR" not in (env or {}):
        args = (*args, "--data-dir", str(tmp_path / f"stepline-data-{port}"))
    log_path = tmp_path / f"stepline-{port}.log"
    full_env = {**os.environ, "STEPLINE_DEMO_DELAY": "0", **(env or {})}
    # The child keeps its own copy of the descriptor; ours is closed at once.
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "web", "serve", "--port", str(port), *args],
            cwd=PROJECT_ROOT,
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec_fn,
        )
    server = StepServer(process, port, log_path, env=full_env)

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            response = httpx.get(f"{server.url}/healthz", timeout=1)
        except httpx.HTTPError:
            return False
        servers = response.json()["servers"]
        return not wait_ready or all(s["state"] != "connecting" for s in servers.values())

    wait_until(healthy, STARTUP_SECONDS, "the server to answer /healthz")
    return server


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., StepServer]]:
    """Start servers with custom flags; each is stopped at the end of the test."""
    started: list[StepServer] = []

    def make(*args: str, env: dict[str, str] | None = None, **kwargs: object) -> StepServer:
        server = start_server(tmp_path, *args, env=env, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield make
    for server in started:
        if server.process.poll() is None:
            server.stop(signal.SIGKILL)


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StepServer]:
    """One shared server with the bundled demo MCP server and the shipped scenarios, tools instant."""
    server = start_server(tmp_path_factory.mktemp("demo"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def demo_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessApp]:
    """One shared in-process app with the bundled demo MCP server and the shipped scenarios, tools instant."""
    with in_process(tmp_path_factory.mktemp("demo-app")) as app:
        yield app


@pytest.fixture(scope="session")
def slow_demo_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessApp]:
    """A shared in-process app whose demo tools take 0.3 s each (progress every 75 ms), with keep-alive
    comments every 0.2 s: a run on it is seen running, deterministically."""
    with in_process(tmp_path_factory.mktemp("slow-demo-app"), demo_delay=0.3, sse_ping=0.2) as app:
        yield app


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., InProcessApp]]:
    """Start in-process apps with custom settings (`demo_delay=` slows the demo tools); each stops at the end."""
    with contextlib.ExitStack() as stack:

        def make(**settings: Any) -> InProcessApp:
            return stack.enter_context(in_process(tmp_path, **settings))

        yield make


@pytest.fixture(autouse=True, scope="session")
def history_outside_the_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """An app built in-process (Settings() without --data-dir) keeps its run history in a tmp dir too."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STEPLINE_DATA_DIR", str(tmp_path_factory.mktemp("history")))
        yield


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# The longest modules first: the workers are handed whole modules in this order, so the long ones
# start at once and the short ones fill in around them, instead of a long one starting last.
SLOWEST_MODULES_FIRST = (
    "test_resume_postgres.py",
    "test_browser.py",
    "test_replicas.py",
    "test_deploy.py",
    "test_mcp_command.py",
    "test_resume.py",
    "test_mcp.py",
    "test_mcp_errors.py",
    "test_history.py",
    "test_store_isolation.py",
    "test_streams.py",
    "test_stream_budgets.py",
    "test_connections.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: position for position, name in enumerate(SLOWEST_MODULES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one test module (tests/browser_support.py: Debian's, driven by Playwright)."""
    from browser_support import chromium

    with chromium() as browser:
        yield browser


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """A real PostgreSQL server (tests/postgres.py), started once per test worker when a test asks for it."""
    from postgres import postgres_server

    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def history_location(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Where a test's history is kept: an SQLite data directory, then a fresh PostgreSQL database."""
    from web.database import Location

    if request.param == "sqlite":
        return Location.of(tmp_path / "data", None)
    return Location.of(tmp_path / "data", request.getfixturevalue("postgres").fresh_database())


@pytest.fixture(scope="module")
def counting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """tests/servers/counting.py over streamable HTTP in its own process, shared by a module's tests (each run
    counts under its own key): its counts outlive any Stepline killed and started again."""
    from mcp_process import HttpMcpServer

    server = HttpMcpServer("counting.py", "streamable-http", tmp_path_factory.mktemp("counting")).start()
    yield server
    server.kill()
