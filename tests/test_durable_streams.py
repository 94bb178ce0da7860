"""With a history, a live reader is never sent an event that is not on disk yet.

Otherwise a crash could take back what a reader saw: the restarted run would give those seq numbers to other
events, and a reader reconnecting with Last-Event-ID would miss them. A real `stepline serve` runs a step that
reports progress quickly; the JSON event stream is read as it comes, and each event received is looked up in
the history's file at that moment.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx
from conftest import StepServer
from mcp_process import workflow_home
from runs import start_run

CHATTY = {
    "schema_version": "2",
    "scenario_id": "chatty",
    "name": "Chatty",
    "steps": [
        {"name": "talk", "tool": "progress_for", "input": {"seconds": 1.5, "every": 0.005}},
        {"name": "again", "tool": "progress_for", "input": {"seconds": 0.5, "every": 0.005}},
    ],
}


def on_disk(data: Path, run_id: str) -> int:
    """The run's last seq committed to the history."""
    uri = f"file:{data / 'stepline.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as db:
        [(last,)] = db.execute("SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id = ?", (run_id,))
        return int(last)


def test_a_live_reader_is_sent_only_events_already_on_disk(
    make_server: Callable[..., StepServer], tmp_path: Path
) -> None:
    folder, config = workflow_home(tmp_path, [CHATTY])
    data = tmp_path / "data"
    server = make_server("--scenarios", str(folder), "--mcp-config", str(config), "--data-dir", str(data))
    run_id = start_run(server.url, "chatty")["run_id"]

    received = []
    ahead = []
    with httpx.stream("GET", f"{server.url}/api/runs/{run_id}/events", timeout=30) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line.removeprefix("data: "))
            received.append(event["seq"])
            if event["seq"] > on_disk(data, run_id):
                ahead.append(event["seq"])
            if event["type"] == "run_finished":
                break

    assert received == list(range(1, len(received) + 1))
    assert len(received) > 100  # enough progress events to have caught one sent before its commit
    assert ahead == []
