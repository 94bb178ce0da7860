"""Scenario files and the MCP config change while Stepline runs: no restart needed.

The scenario folder is watched (in-process app, real files, the tests' workflow server): a changed,
added or removed file is served within a few seconds, a broken edit keeps the last good version, and
a run in flight keeps the plan it started with. The MCP config is read again on SIGHUP (a real
`stepline serve`): only the servers whose entry changed reconnect.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import StepServer, wait_until
from inprocess import InProcessApp, in_process
from mcp_process import SERVERS, HttpMcpServer, workflow_home
from runs import get_run, run_to_end, start_run, wait_finished
from sse import read_events

from web.scenarios import load_catalog

# Generous: the machine running the tests may be busy; the watcher itself looks every second.
RELOAD_WAIT_SECONDS = 15


def v2(scenario_id: str, *steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"schema_version": "2", "scenario_id": scenario_id, "name": scenario_id, "steps": list(steps), **extra}


def step(name: str, tool: str, **fields: Any) -> dict[str, Any]:
    fields.setdefault("input", {})
    return {"name": name, "tool": tool, **fields}


def echo(scenario_id: str, name: str, text: str = "hello") -> dict[str, Any]:
    return {**v2(scenario_id, step("say", "upper", input={"text": text})), "name": name}


def write(folder: Path, scenario: dict[str, Any]) -> Path:
    path = folder / f"{scenario['scenario_id']}.json"
    path.write_text(json.dumps(scenario, indent=2), encoding="utf-8")
    return path


def names(app: InProcessApp) -> dict[str, str]:
    response = app.get("/api/scenarios")
    assert response.status_code == 200
    return {scenario["id"]: scenario["name"] for scenario in response.json()}


def wait_for_catalog(app: InProcessApp, what: str, predicate: Any) -> None:
    wait_until(lambda: predicate(names(app)), RELOAD_WAIT_SECONDS, what)


def index_text(app: InProcessApp) -> str:
    """The catalog page's text as a reader sees it: no tags, spaces collapsed."""
    response = app.get("/")
    assert response.status_code == 200
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", response.text)).split())


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessApp]:
    home = tmp_path_factory.mktemp("reload")
    folder, config = workflow_home(home, [echo("steady", "Steady")])
    with in_process(home, mcp_config=config, scenarios=folder) as started:
        started.wait_ready()
        yield started


def folder_of(app: InProcessApp) -> Path:
    return app.settings.scenarios


# --- The scenario folder is watched ---------------------------------------------------------------


def test_an_edited_file_is_served_without_a_restart(app: InProcessApp) -> None:
    write(folder_of(app), echo("edited", "Before the edit", "first"))
    wait_for_catalog(app, "the new file to be served", lambda found: "edited" in found)
    assert run_to_end(app.client, "edited")["steps"][0]["output"] == {"text": "FIRST"}

    write(folder_of(app), echo("edited", "After the edit", "second"))

    wait_for_catalog(app, "the edit to be served", lambda found: found.get("edited") == "After the edit")
    assert app.get("/api/scenarios/edited").json()["name"] == "After the edit"
    assert "After the edit" in index_text(app)
    assert run_to_end(app.client, "edited")["steps"][0]["output"] == {"text": "SECOND"}


def test_an_added_file_appears_and_a_removed_one_goes_while_its_runs_stay(app: InProcessApp) -> None:
    path = write(folder_of(app), echo("passing", "Passing through"))
    wait_for_catalog(app, "the added file to be served", lambda found: "passing" in found)
    assert "Passing through" in index_text(app)
    past = run_to_end(app.client, "passing")
    assert past["status"] == "success"

    path.unlink()

    wait_for_catalog(app, "the removed file to leave", lambda found: "passing" not in found)
    gone = app.get("/api/scenarios/passing")
    assert gone.status_code == 404 and gone.json() == {"detail": "Unknown scenario_id: passing"}
    refused = app.post("/api/runs", json={"scenario_id": "passing", "input": {}})
    assert refused.status_code == 404 and refused.json() == {"detail": "Unknown scenario_id: passing"}
    rerun = app.post(f"/api/runs/{past['run_id']}/rerun")
    assert rerun.status_code == 404
    assert rerun.json()["detail"] == f"Scenario 'passing' of run {past['run_id']} no longer exists"
    # Its past run is still there, page and snapshot.
    assert get_run(app.client, past["run_id"])["status"] == "success"
    page = app.get(f"/runs/{past['run_id']}")
    assert page.status_code == 200 and "passing" in page.text
    assert "Passing through" not in index_text(app)
    assert "steady" in names(app)


def test_a_broken_edit_keeps_the_last_good_version_and_shows_why(app: InProcessApp) -> None:
    path = write(folder_of(app), echo("fragile", "Fragile", "good"))
    wait_for_catalog(app, "the file to be served", lambda found: "fragile" in found)

    path.write_text('{"schema_version": "2", "scenario_id": "fragile", ', encoding="utf-8")

    wait_until(lambda: "fragile.json" in index_text(app), RELOAD_WAIT_SECONDS, "the problem to be shown")
    page = index_text(app)
    assert "1 scenario file could not be loaded" in page
    assert "fragile.json : kept the last good version" in page
    assert "invalid JSON at line 1, column 51" in page
    assert "fragile · 1 step · the last good version: its file has problems" in page
    scenario_page = app.get("/scenarios/fragile").text
    assert "This is the last good version of <code>fragile.json</code>" in scenario_page
    assert "invalid JSON at line 1, column 51" in scenario_page
    # The last good version goes on serving, runs included.
    assert names(app)["fragile"] == "Fragile"
    assert run_to_end(app.client, "fragile")["steps"][0]["output"] == {"text": "GOOD"}

    # Broken again differently: still the last good version, now with the new problem.
    broken = {**echo("fragile", "Fragile, broken"), "steps": [step("say", "upper", input={"text": "{{ input.x }"})]}
    write(folder_of(app), broken)
    wait_until(lambda: "template syntax error" in index_text(app), RELOAD_WAIT_SECONDS, "the new problem")
    assert "invalid JSON" not in index_text(app)
    assert names(app)["fragile"] == "Fragile"

    write(folder_of(app), echo("fragile", "Fragile, fixed", "fixed"))

    wait_for_catalog(app, "the fixed file to be served", lambda found: found.get("fragile") == "Fragile, fixed")
    assert "fragile.json" not in index_text(app)
    assert run_to_end(app.client, "fragile")["steps"][0]["output"] == {"text": "FIXED"}


def test_a_new_file_that_is_broken_is_left_out_and_listed(app: InProcessApp) -> None:
    # Two problems in one file: one file counted, both problems listed.
    broken = {**echo("never_good", "Never good"), "scenario_id": "other", "steps": []}
    (folder_of(app) / "never_good.json").write_text(json.dumps(broken), encoding="utf-8")
    # An editor's hidden lock file beside it is not a scenario.
    (folder_of(app) / ".#never_good.json").write_text("lock", encoding="utf-8")
    try:
        wait_until(lambda: "never_good.json" in index_text(app), RELOAD_WAIT_SECONDS, "the problem to be shown")
        page = index_text(app)
        assert "1 scenario file could not be loaded" in page
        assert "never_good.json : left out" in page
        assert "scenario_id 'other' must equal the file name 'never_good'" in page
        assert "steps: List should have at least 1 item" in page
        assert ".#never_good" not in page
        assert "never_good" not in names(app)
    finally:
        (folder_of(app) / "never_good.json").unlink()
        (folder_of(app) / ".#never_good.json").unlink()
    wait_until(lambda: "never_good.json" not in index_text(app), RELOAD_WAIT_SECONDS, "the problem to go")
    assert "could not be loaded" not in index_text(app)


def test_a_run_in_flight_keeps_the_plan_it_started_with(app: InProcessApp) -> None:
    gate = "gate-in-flight"
    held = v2(
        "held",
        # Answers once a call of the gate's group is in flight: the test opens the gate with another run.
        step("hold", "await_in_flight", input={"count": 1, "group": gate}),
        step("after", "upper", input={"text": "{{ steps.hold.output.now }} in flight"}),
    )
    write(folder_of(app), held)
    write(folder_of(app), v2("opener", step("open", "sleep", input={"seconds": 0.2, "group": gate})))
    wait_for_catalog(app, "both files to be served", lambda found: {"held", "opener"} <= set(found))
    run_id = start_run(app.client, "held")["run_id"]
    wait_until(
        lambda: get_run(app.client, run_id)["steps"][0]["status"] == "running", RELOAD_WAIT_SECONDS, "the hold"
    )

    write(folder_of(app), {**v2("held", step("other", "upper", input={"text": "new plan"})), "name": "Held, new"})
    wait_for_catalog(app, "the edit to be served", lambda found: found.get("held") == "Held, new")
    assert get_run(app.client, run_id)["status"] == "running"
    assert run_to_end(app.client, "opener")["status"] == "success"

    events = read_events(app.client, run_id)
    finished = wait_finished(app.client, run_id)
    assert finished["status"] == "success", finished
    assert [s["node_id"] for s in finished["steps"]] == ["hold", "after"]
    assert finished["steps"][1]["output"] == {"text": "1 IN FLIGHT"}
    (started,) = [e for e in events if e["type"] == "run_started"]
    assert [planned["name"] for planned in started["plan"]] == ["hold", "after"]
    # A new run follows the file as it is now.
    assert [s["node_id"] for s in run_to_end(app.client, "held")["steps"]] == ["other"]


# --- The catalog itself -------------------------------------------------------------------------


def test_a_file_replaced_by_rename_is_read_again_even_with_the_same_size_and_time(tmp_path: Path) -> None:
    path = write(tmp_path, echo("swap", "Version A"))
    catalog = load_catalog(tmp_path)
    before = path.stat()
    # An editor that saves by renaming a new file over the old, keeping its time: only the inode differs.
    replacement = tmp_path / "swap.json.new"
    replacement.write_text(json.dumps(echo("swap", "Version B"), indent=2), encoding="utf-8")
    os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(replacement, path)

    changes = catalog.rescan()

    assert changes.reloaded == ["swap.json"]
    assert catalog.scenarios["swap"].name == "Version B"


def test_the_catalog_is_updated_in_place_for_everyone_holding_it(tmp_path: Path) -> None:
    write(tmp_path, echo("one", "One"))
    catalog = load_catalog(tmp_path)
    held = catalog

    write(tmp_path, echo("two", "Two"))
    (tmp_path / "one.json").unlink()
    changes = catalog.rescan()

    assert (changes.added, changes.removed) == (["two.json"], ["one.json"])
    assert list(held.scenarios) == ["two"] and list(held.raw) == ["two"]
    assert catalog.rescan().added == []  # nothing changed, nothing read


def test_with_watching_off_the_folder_is_read_again_on_request(tmp_path: Path, make_app: Any) -> None:
    folder, config = workflow_home(tmp_path, [echo("first", "First")])
    app: InProcessApp = make_app(mcp_config=config, scenarios=folder, reload_seconds=0)
    write(folder, echo("second", "Second"))
    assert "second" not in names(app)  # nothing polls the folder

    app.call(app.state["reload"]())  # what SIGHUP does

    wait_for_catalog(app, "the new file to be served", lambda found: "second" in found)


# --- /healthz counts are fresh --------------------------------------------------------------------


def test_a_server_that_is_down_shows_no_stale_tool_count(tmp_path: Path, make_app: Any) -> None:
    faults = HttpMcpServer("faults.py", "streamable-http", tmp_path).start()
    try:
        config = tmp_path / "mcp.json"
        config.write_text(json.dumps({"mcpServers": {"faults": {"url": faults.url}}}), encoding="utf-8")
        folder = tmp_path / "scenarios"
        folder.mkdir()
        app: InProcessApp = make_app(mcp_config=config, scenarios=folder, heartbeat=0.2, connect_timeout=2)
        app.wait_ready()
        ready = app.get("/healthz").json()["servers"]["faults"]
        assert ready["state"] == "ready" and ready["tools"] > 0

        faults.kill()

        wait_until(
            lambda: app.get("/healthz").json()["servers"]["faults"]["state"] != "ready",
            RELOAD_WAIT_SECONDS,
            "the server to be seen down",
        )
        down = app.get("/healthz").json()["servers"]["faults"]
        assert down["tools"] == 0 and down["error"], down
    finally:
        faults.kill()


# --- The MCP config on SIGHUP (a real `stepline serve`) -------------------------------------------


def faults_entry(**extra: Any) -> dict[str, Any]:
    return {"command": sys.executable, "args": [str(SERVERS / "faults.py"), "stdio"], **extra}


def write_config(path: Path, servers: dict[str, Any]) -> None:
    path.write_text(json.dumps({"mcpServers": servers}), encoding="utf-8")


def whoami(server: StepServer, scenario_id: str) -> dict[str, dict[str, Any]]:
    """Each step's whoami answer (pid, handshakes) from a run of `scenario_id`, by step."""
    run = run_to_end(server.url, scenario_id)
    assert run["status"] == "success", run
    return {s["node_id"]: s["output"] for s in run["steps"]}


def scenario_ids(server: StepServer) -> set[str]:
    return {s["id"] for s in httpx.get(f"{server.url}/api/scenarios", timeout=5).json()}


def alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def health(server: StepServer) -> dict[str, Any]:
    return httpx.get(f"{server.url}/healthz", timeout=5).json()["servers"]


@pytest.fixture
def sighup_home(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "scenarios"
    folder.mkdir()
    write(folder, v2("who", step("keep", "whoami", server="keep"), step("change", "whoami", server="change")))
    write(folder, v2("who_new", step("new", "whoami", server="new")))
    write(folder, v2("who_gone", step("gone", "whoami", server="gone")))
    config = tmp_path / "mcp.json"
    write_config(config, {"keep": faults_entry(), "change": faults_entry(), "gone": faults_entry()})
    return folder, config


def test_sighup_reconnects_only_the_servers_whose_entry_changed(
    make_server: Any, sighup_home: tuple[Path, Path]
) -> None:
    folder, config = sighup_home
    server: StepServer = make_server("--scenarios", str(folder), "--mcp-config", str(config))
    before = whoami(server, "who")
    gone_pid = whoami(server, "who_gone")["gone"]["pid"]
    assert set(health(server)) == {"keep", "change", "gone"}

    write_config(config, {"keep": faults_entry(), "change": faults_entry(env={"VARIANT": "2"}), "new": faults_entry()})
    server.process.send_signal(signal.SIGHUP)

    wait_until(
        lambda: set(health(server)) == {"keep", "change", "new"}
        and all(s["state"] == "ready" for s in health(server).values()),
        RELOAD_WAIT_SECONDS,
        "the new config to be served",
    )
    after = whoami(server, "who")
    # The untouched entry kept its process and its session; the changed one has a new process.
    assert after["keep"]["pid"] == before["keep"]["pid"]
    assert after["keep"]["handshakes"] == 1
    assert after["change"]["pid"] != before["change"]["pid"]
    assert whoami(server, "who_new")["new"]["handshakes"] == 1
    # The replaced and the removed servers' processes are stopped, not left behind.
    wait_until(lambda: not alive(before["change"]["pid"]), RELOAD_WAIT_SECONDS, "the replaced process to end")
    wait_until(lambda: not alive(gone_pid), RELOAD_WAIT_SECONDS, "the removed process to end")
    wait_until(
        lambda: "MCP config reloaded: started new; reconnected change; stopped gone" in server.log(),
        RELOAD_WAIT_SECONDS,
        "the reload to be logged",
    )
    assert server.process.poll() is None


def test_a_call_in_flight_on_a_removed_server_fails_its_step_naming_the_server(
    make_app: Any, sighup_home: tuple[Path, Path]
) -> None:
    folder, config = sighup_home
    write(folder, v2("stuck", step("hang", "hang", server="gone")))
    app: InProcessApp = make_app(mcp_config=config, scenarios=folder)
    app.wait_ready()
    run_id = start_run(app.client, "stuck")["run_id"]
    wait_until(
        lambda: get_run(app.client, run_id)["steps"][0]["progress"] is not None, RELOAD_WAIT_SECONDS, "the hang"
    )
    write_config(config, {"keep": faults_entry(), "change": faults_entry()})

    app.call(app.state["reload"]())  # what SIGHUP does

    run = wait_finished(app.client, run_id)
    assert run["status"] == "failed"
    assert "MCP server 'gone'" in run["steps"][0]["message"], run
    assert set(app.get("/healthz").json()["servers"]) == {"keep", "change"}
    again = run_to_end(app.client, "stuck")
    assert again["status"] == "failed"
    assert again["steps"][0]["message"] == "unknown MCP server 'gone' (configured: keep, change)", again


def test_a_broken_config_on_sighup_keeps_the_servers_as_they_were(
    make_server: Any, sighup_home: tuple[Path, Path]
) -> None:
    folder, config = sighup_home
    server: StepServer = make_server("--scenarios", str(folder), "--mcp-config", str(config))
    before = whoami(server, "who")

    config.write_text('{"mcpServers": {"keep": ', encoding="utf-8")
    server.process.send_signal(signal.SIGHUP)

    wait_until(lambda: "MCP config not reloaded" in server.log(), RELOAD_WAIT_SECONDS, "the refusal to be logged")
    assert "invalid JSON at line 1" in server.log()
    assert set(health(server)) == {"keep", "change", "gone"}
    after = whoami(server, "who")
    assert after["keep"]["pid"] == before["keep"]["pid"]
    assert after["change"]["pid"] == before["change"]["pid"]
    assert server.process.poll() is None


def test_sighup_also_reads_the_scenario_folder_when_watching_is_off(
    make_server: Any, sighup_home: tuple[Path, Path]
) -> None:
    folder, config = sighup_home
    server: StepServer = make_server(
        "--scenarios", str(folder), "--mcp-config", str(config), env={"STEPLINE_RELOAD_SECONDS": "0"}
    )
    write(folder, v2("late", step("keep", "whoami", server="keep")))
    assert "late" not in scenario_ids(server)  # nothing polls the folder

    server.process.send_signal(signal.SIGHUP)

    wait_until(lambda: "late" in scenario_ids(server), RELOAD_WAIT_SECONDS, "the new file to be served")
    assert whoami(server, "late")["keep"]["handshakes"] == 1
