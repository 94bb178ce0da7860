"""Replicas for the tests: several `stepline serve --database URL` processes on one fresh PostgreSQL database.

Every replica of a test shares the scenario folder, the mcpServers file (tests/servers/counting.py over
streamable HTTP, in a process that outlives every replica) and the database; each has its own port, id
(host:port) and data directory. Leases are short (`LEASE_SECONDS`) so that a killed replica's runs are taken
over within seconds.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from conftest import StepServer, wait_until
from mcp_process import HttpMcpServer
from sse import frames, parse_lines
from test_resume import ACCESS, ACCESS_ENV, by_item

LEASE_SECONDS = 2


@dataclass
class Cluster:
    """The replicas of one test on one database."""

    make_server: Callable[..., StepServer]
    counting: HttpMcpServer
    folder: Path
    config: Path
    database_url: str
    replicas: list[StepServer] = field(default_factory=list)

    def serve(self, *more: str, lease_seconds: float = LEASE_SECONDS) -> StepServer:
        """One more replica, with `more` flags."""
        args = (
            "--scenarios", str(self.folder), "--mcp-config", str(self.config), "--database", self.database_url,
            "--lease-seconds", str(lease_seconds), *ACCESS, *more,
        )  # fmt: skip
        server = self.make_server(*args, env=ACCESS_ENV)
        self.replicas.append(server)
        return server

    def stored(self, run_id: str) -> list[dict[str, Any]]:
        """The run's events committed to the database so far, in seq order, as the streams send them."""
        with psycopg.connect(self.database_url, autocommit=True) as connection:
            rows = connection.execute(
                "SELECT seq, type, data FROM events WHERE run_id = %s ORDER BY seq", (run_id,)
            ).fetchall()
        return [{"type": kind, "run_id": run_id, "seq": seq, **json.loads(data)} for seq, kind, data in rows]

    def owner(self, run_id: str) -> str | None:
        """The replica the database says runs the run now."""
        with psycopg.connect(self.database_url, autocommit=True) as connection:
            row = connection.execute("SELECT owner FROM runs WHERE run_id = %s", (run_id,)).fetchone()
        return row[0] if row else None

    def lease_out(self, run_id: str) -> bool:
        """Whether the run's lease has run out, by the database's clock."""
        with psycopg.connect(self.database_url, autocommit=True) as connection:
            row = connection.execute("SELECT lease_until < now() FROM runs WHERE run_id = %s", (run_id,)).fetchone()
        return bool(row and row[0])

    def wait_in_call(self, run_id: str, step_name: str, item: int) -> None:
        """Until the counting server holds the step's call and its start is in the database."""

        def in_call() -> bool:
            started = any(e["type"] == "step_started" and e["step_name"] == step_name for e in self.stored(run_id))
            return started and by_item(self.counting, run_id).get(item) == 1

        wait_until(in_call, 20, f"step {step_name!r} of run {run_id} in its call")


def replica_id(server: StepServer) -> str:
    return health(server)["replica"]["id"]


def health(server: StepServer) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/healthz", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


class Follower:
    """A reader of a run's JSON event stream on one replica, in a thread: every frame as it arrives."""

    def __init__(self, server: StepServer, run_id: str) -> None:
        self.seen: list[dict[str, Any]] = []
        self.ids: list[str | None] = []
        self.status: int | None = None
        self.ended = False
        self.error: str | None = None
        self._url = f"{server.url}/api/runs/{run_id}/events"
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            with httpx.stream("GET", self._url, timeout=httpx.Timeout(10, read=60)) as response:
                self.status = response.status_code
                for frame in frames(parse_lines(response.iter_lines())):
                    self.ids.append(frame.id)
                    self.seen.append(frame.json())
        except httpx.HTTPError as exc:  # its replica went away: said by `join`
            self.error = f"{type(exc).__name__}: {exc}"
            return
        self.ended = True

    def kinds(self) -> list[str]:
        return [event["type"] for event in self.seen]

    def join(self, timeout: float = 30) -> list[dict[str, Any]]:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the stream did not end: {self.kinds()}"
        assert self.status == 200 and self.ended, f"the stream broke off ({self.error}) after {self.kinds()}"
        return self.seen
