"""`stepline run SCENARIO` as a user types it: a real `python -m web run` process, in this process's app
with the demo or the workflow MCP server, or against a real `stepline serve` (--server); the live
display and Ctrl-C in a real pseudo-terminal.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import PROJECT_ROOT, StepServer, free_port, wait_until
from inprocess import in_process
from mcp_process import workflow_home
from runs import get_run, run_to_end

NEWS = "news_source_discovery_v1"
STORY = "story_origin_check_v2"
BRIEF = "outlet_brief_approval_v2"
KNOWN_ARTICLE = "https://signal.example/culture/lighthouse-library-explainer"
RUN_SECONDS = 90
# Terminal escapes a hostile tool may put in its text: retitle the window, clear the screen.
HOSTILE = "\x1b]0;pwned\x07\x1b[2J wiped"
HOSTILE_SHOWN = "\\x1b]0;pwned\\x07\\x1b[2J wiped"
# rich's own escapes (colours, cursor moves), removed to read the screen's text.
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
FIRST_LINE = re.compile(r"^run (\S+): (\S+) started$", re.MULTILINE)


def v2(scenario_id: str, *steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"schema_version": "2", "scenario_id": scenario_id, "name": scenario_id, "steps": list(steps), **extra}


def step(name: str, tool: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "tool": tool, "input": {}, **fields}


def schema(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties}


SCENARIOS = [
    v2(
        "echoed",
        step("echo", "echo", input={"value": "{{ input.value }}", "note": "{{ input.note }}"}),
        input_schema=schema(value={}, note={}),
        output={"value": "{{ steps.echo.output.value }}", "note": "{{ steps.echo.output.note }}"},
    ),
    v2(
        "hostile",
        step("refuse", "fail", input={"message": HOSTILE}),
    ),
    # A first step, a nap of `seconds`, a last step: long enough to be interrupted, or cut off mid-way.
    v2(
        "nap",
        step("first", "echo", input={"value": 1}),
        step(
            "nap",
            "sleep",
            input={"seconds": "{{ input.seconds }}", "label": "nap", "group": "{{ run.id }}"},
            needs=["first"],
        ),
        step("last", "echo", input={"value": 2}, needs=["nap"]),
        input_schema={"type": "object", "required": ["seconds"], "properties": {"seconds": {"type": "number"}}},
    ),
    # Everything the live table shows: items done, a retry waiting, a tolerated failure, a long step.
    v2(
        "busy",
        step(
            "items",
            "sleep",
            for_each="{{ [0.3, 0.3, 0.3] }}",
            max_parallel=1,
            input={"seconds": "{{ item }}", "label": "item"},
        ),
        step(
            "retried",
            "flaky",
            input={"key": "{{ run.id }}", "failures": 1},
            retry={"max_attempts": 3, "backoff_seconds": 1},
        ),
        step("refuse", "fail", input={"message": HOSTILE}, on_error="continue"),
        step(
            "nap",
            "sleep",
            input={"seconds": 60, "label": "nap", "group": "{{ run.id }}"},
            needs=["items", "retried", "refuse"],
        ),
    ),
    v2(
        "cancelled_calls",
        step("ask", "cancellations", input={"group": "{{ input.group }}"}),
        input_schema={"type": "object", "required": ["group"], "properties": {"group": {"type": "string"}}},
    ),
]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(scenario folder, mcpServers file) with the workflow server."""
    return workflow_home(tmp_path_factory.mktemp("run-command"), SCENARIOS)


def stepline(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float = RUN_SECONDS
) -> subprocess.CompletedProcess[str]:
    """`python -m web ARGS`, as a user runs it from the project folder, its output captured (no terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "web", *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, "STEPLINE_DEMO_DELAY": "0", **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_in(home: tuple[Path, Path], *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    folder, config = home
    return stepline("run", *args, "--scenarios", str(folder), "--mcp-config", str(config), **kwargs)


def run_id_of(output: str) -> str:
    match = FIRST_LINE.search(output)
    assert match, output
    return match[1]


# --- In this process, with the demo server ---


def test_a_run_prints_a_line_per_step_and_its_output_and_exits_0() -> None:
    done = stepline("run", STORY, "-i", f"url={KNOWN_ARTICLE}")

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    run_id = run_id_of(done.stdout)
    assert lines[0] == f"run {run_id}: {STORY} started"
    assert re.search(r"^step 1 article: success \(\d+(\.\d)? m?s\)$", done.stdout, re.MULTILINE), done.stdout
    # A tolerated failure says so, with the tool's message.
    assert re.search(
        r"^step 3 archive: failed \(.+\): tolerated: Error executing tool check_archive: No archived copy",
        done.stdout,
        re.MULTILINE,
    ), done.stdout
    assert sorted(line.split(":")[0] for line in lines if line.startswith("step ")) == [
        f"step {n} {name}"
        for n, name in enumerate(["article", "related", "archive", "earliest", "trace", "first_outlet"], start=1)
    ]
    assert re.search(
        rf"^run {run_id}: success \(.+\): Finished with 1 tolerated failure\(s\): archive$", done.stdout, re.MULTILINE
    ), done.stdout
    # The scenario's output closes it, as JSON.
    output = json.loads(done.stdout[done.stdout.index("output:\n") + len("output:\n") :])
    assert output["first_report"] == "https://notes.example.net/2024/03/05/lighthouse-cottage-reading-room"


def test_json_prints_the_final_snapshot_alone_on_stdout() -> None:
    done = stepline("run", STORY, "--json", "--input", json.dumps({"url": KNOWN_ARTICLE}))

    assert done.returncode == 0, done.stderr
    snapshot = json.loads(done.stdout)
    assert snapshot["status"] == "success" and snapshot["scenario_id"] == STORY
    assert snapshot["input"] == {"url": KNOWN_ARTICLE}
    assert {s["node_id"]: s["status"] for s in snapshot["steps"]}["archive"] == "failed"
    assert snapshot["output"]["is_first_report"] is False
    # Progress went to stderr meanwhile.
    assert f"run {snapshot['run_id']}: success" in done.stderr


def test_a_failed_run_exits_1_naming_the_step_and_why() -> None:
    done = stepline("run", NEWS, "-i", "url=https://nowhere.example/x")

    assert done.returncode == 1, done.stderr
    assert "step 1 fetch_article: failed" in done.stdout
    assert "Unknown article: https://nowhere.example/x is not in the demo corpus" in done.stdout
    assert "step 2 search_news_sources: skipped: Not run: step 'fetch_article' failed" in done.stdout
    assert re.search(r"^run \S+: failed \(.+\): Step 'fetch_article' failed", done.stdout, re.MULTILINE)


def test_input_the_scenario_refuses_exits_2_naming_each_field() -> None:
    done = stepline("run", NEWS, "-i", "url=5", "-i", "extra=yes")

    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"stepline run: the input is not accepted by scenario '{NEWS}':",
        "  input.extra: Additional properties are not allowed ('extra' was unexpected)",
        "  input.url: 5 is not of type 'string'",
    ]
    missing = stepline("run", NEWS)
    assert missing.returncode == 2
    assert "  input.url: 'url' is a required property" in missing.stderr


def test_an_unknown_scenario_exits_2_listing_those_there_are() -> None:
    done = stepline("run", "no_such_scenario")

    assert done.returncode == 2
    assert done.stderr.strip() == (
        "stepline run: Unknown scenario_id: no_such_scenario. Scenarios: news_source_discovery_v1, "
        "outlet_brief_approval_v2, outlet_profile_v1, outlet_story_origins_v2, story_origin_check_v2"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "{url"], "--input is not JSON: Expecting property name enclosed in double quotes"),
        (["--input", "[1, 2]"], "--input must be a JSON object (field names and values), not an array"),
        (["--input", '{"url": NaN}'], "--input is not JSON: NaN is not JSON"),
        (["-i", "url"], "-i url: write it as KEY=VALUE"),
        (["--input", "{}", "--input-file", "in.json"], "give the input with --input or with --input-file, not both"),
        (["--input-file", "/no/such/file.json"], "cannot read --input-file /no/such/file.json: No such file"),
        (["--server", "http://127.0.0.1:1", "--scenarios", "."], "--scenarios: only for a run in this process"),
        (["--server", "127.0.0.1:8000"], "--server 127.0.0.1:8000: give Stepline's address as a URL"),
    ],
)
def test_unreadable_command_line_input_exits_2_saying_what_is_wrong(args: list[str], message: str) -> None:
    done = stepline("run", NEWS, *args)

    assert done.returncode == 2
    assert done.stderr.startswith(f"stepline run: {message}"), done.stderr


# --- In this process, with the workflow server ---


def test_pairs_are_read_as_json_when_they_parse_and_go_over_the_input(home: tuple[Path, Path], tmp_path: Path) -> None:
    done = run_in(
        home,
        "echoed",
        "--json",
        "--input",
        '{"value": "from --input", "note": "kept"}',
        "-i",
        'value=[1, {"a": true}]',
        "-i",
        "value=plain text",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["output"] == {"value": "plain text", "note": "kept"}

    typed = run_in(home, "echoed", "--json", "-i", 'value={"a": [1, null]}', "-i", "note=3.5")
    assert json.loads(typed.stdout)["output"] == {"value": {"a": [1, None]}, "note": 3.5}

    from_file = tmp_path / "input.json"
    from_file.write_text('{"value": "from a file", "note": false}', encoding="utf-8")
    filed = run_in(home, "echoed", "--json", "--input-file", str(from_file), "-i", "note=true")
    assert json.loads(filed.stdout)["output"] == {"value": "from a file", "note": True}

    piped = run_in(home, "echoed", "--json", "--input-file", "-", stdin='{"value": "from stdin"}')
    assert json.loads(piped.stdout)["output"]["value"] == "from stdin"


def test_terminal_escapes_in_a_tools_text_are_shown_not_obeyed(home: tuple[Path, Path]) -> None:
    done = run_in(home, "hostile")

    assert done.returncode == 1
    assert "\x1b" not in done.stdout + done.stderr
    assert "step 1 refuse: failed" in done.stdout
    assert HOSTILE_SHOWN in done.stdout


def test_a_run_in_this_process_is_recorded_only_with_data_dir(home: tuple[Path, Path], tmp_path: Path) -> None:
    data_dir = tmp_path / "history"
    recorded = run_in(home, "nap", "-i", "seconds=0", "--data-dir", str(data_dir))
    assert recorded.returncode == 0, recorded.stderr
    # The data directory configured for `serve` is not written to without --data-dir.
    not_recorded = run_in(home, "nap", "-i", "seconds=0", env={"STEPLINE_DATA_DIR": str(data_dir)})
    assert not_recorded.returncode == 0, not_recorded.stderr

    folder, config = home
    with in_process(tmp_path, data_dir=data_dir, scenarios=folder, mcp_config=config) as app:
        assert get_run(app.client, run_id_of(recorded.stdout))["status"] == "success"
        assert app.get(f"/api/runs/{run_id_of(not_recorded.stdout)}").status_code == 404


# --- Against a running Stepline (--server) ---


def test_server_runs_on_a_running_stepline_and_exits_as_in_process(make_server: Callable[..., StepServer]) -> None:
    server = make_server()

    done = stepline("run", STORY, "--server", server.url, "-i", f"url={KNOWN_ARTICLE}")
    assert done.returncode == 0, done.stderr
    run_id = run_id_of(done.stdout)
    assert "step 6 first_outlet: success" in done.stdout
    # The run is the server's: its history has it.
    assert get_run(server.url, run_id)["status"] == "success"

    failed = stepline("run", NEWS, "--server", server.url, "-i", "url=https://nowhere.example/x")
    assert failed.returncode == 1
    assert get_run(server.url, run_id_of(failed.stdout))["status"] == "failed"

    unknown = stepline("run", "no_such_scenario", "--server", server.url)
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("stepline run: Unknown scenario_id: no_such_scenario. Scenarios: ")

    refused = stepline("run", NEWS, "--server", server.url + "/", "-i", "url=5")
    assert refused.returncode == 2
    assert "  input.url: 5 is not of type 'string'" in refused.stderr


def test_an_unreachable_server_exits_2() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = stepline("run", NEWS, "--server", url, "-i", "url=https://nowhere.example/x")

    assert done.returncode == 2
    assert done.stderr.startswith(f"stepline run: cannot reach Stepline at {url}: "), done.stderr


def test_ctrl_c_cancels_the_run_on_the_server_and_exits_1(
    make_server: Callable[..., StepServer], home: tuple[Path, Path]
) -> None:
    folder, config = home
    server = make_server("--scenarios", str(folder), "--mcp-config", str(config))
    process = subprocess.Popen(
        [sys.executable, "-m", "web", "run", "nap", "--server", server.url, "-i", "seconds=60"],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        run_id = run_id_of(process.stdout.readline())
        wait_until(lambda: _step_status(server.url, run_id, "nap") == "running", 20, "the nap to start")
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 1, stderr
    assert f"stepline run: cancelling run {run_id}" in stderr
    assert "step 2 nap: cancelled" in stdout
    assert re.search(rf"^run {run_id}: cancelled \(.+\): Cancelled by request$", stdout, re.MULTILINE), stdout
    assert get_run(server.url, run_id)["status"] == "cancelled"
    # The MCP server was told to stop the call.
    wait_until(lambda: _cancelled_labels(server.url, run_id) == ["nap"], 10, "the server to see the nap cancelled")


def test_a_run_waiting_for_a_person_says_where_to_answer_and_goes_on_once_answered(
    make_server: Callable[..., StepServer],
) -> None:
    server = make_server()
    process = subprocess.Popen(
        [sys.executable, "-m", "web", "run", BRIEF, "--server", server.url, "-i", "domain=daily.example.com"],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        run_id = run_id_of(process.stdout.readline())
        note = process.stderr.readline()
        assert note.startswith("stepline run: step 'approve' waits for an approval: Write a brief on "), note
        assert note.rstrip().endswith(f"; answer it at {server.url}/runs/{run_id}")
        [request] = get_run(server.url, run_id)["pending_requests"]
        answered = httpx.post(
            f"{server.url}/api/runs/{run_id}/requests/{request['request_id']}",
            json={"action": "accept", "content": {"headline": "Seen on the terminal"}},
        )
        assert answered.status_code == 200, answered.text
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert "step 4 approve: success" in stdout and "step 5 brief: success" in stdout
    assert "Seen on the terminal" in stdout


def test_in_this_process_a_run_waiting_for_a_person_says_nobody_here_can_answer() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "web", "run", BRIEF, "-i", "domain=daily.example.com"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "STEPLINE_DEMO_DELAY": "0"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        note = process.stderr.readline()
        assert "waits for an approval" in note and "nobody can answer it in this process" in note, note
        process.send_signal(signal.SIGINT)
        stdout, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 1
    assert "step 4 approve: cancelled" in stdout


def _cancelled_labels(url: str, group: str) -> list[str]:
    asked = run_to_end(url, "cancelled_calls", {"group": group})
    return [call["label"] for call in asked["steps"][0]["output"]["cancelled"]]


def _step_status(url: str, run_id: str, name: str) -> str | None:
    steps = {s["node_id"]: s["status"] for s in get_run(url, run_id)["steps"]}
    return steps.get(name)


class CuttingProxy:
    """Passes TCP through to `upstream`, but cuts the first event stream once it has carried a step's end:
    a connection dropped mid-run, as a restarted proxy or a network blip drops it."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests: list[bytes] = []
        self.cut = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            streaming = threading.Event()
            threading.Thread(target=self._to_upstream, args=(client, upstream, streaming), daemon=True).start()
            threading.Thread(target=self._to_client, args=(upstream, client, streaming), daemon=True).start()

    def _to_upstream(self, client: socket.socket, upstream: socket.socket, streaming: threading.Event) -> None:
        while data := _recv(client):
            self.requests.append(data)
            if b"/events" in data and not self.cut.is_set():
                streaming.set()
            if not _send(upstream, data):
                break
        _close(client, upstream)

    def _to_client(self, upstream: socket.socket, client: socket.socket, streaming: threading.Event) -> None:
        seen = b""
        while data := _recv(upstream):
            if not _send(client, data):
                break
            seen += data
            if streaming.is_set() and b"event: step_finished" in seen and not self.cut.is_set():
                self.cut.set()
                break
        _close(client, upstream)

    def close(self) -> None:
        self.listener.close()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _send(sock: socket.socket, data: bytes) -> bool:
    """Whether `data` went out: the other direction may have closed both sockets meanwhile."""
    try:
        sock.sendall(data)
    except OSError:
        return False
    return True


def _close(*socks: socket.socket) -> None:
    for sock in socks:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()


def test_a_dropped_event_stream_is_resumed_after_the_last_event_seen(
    make_server: Callable[..., StepServer], home: tuple[Path, Path]
) -> None:
    folder, config = home
    server = make_server("--scenarios", str(folder), "--mcp-config", str(config))
    proxy = CuttingProxy(server.port)
    try:
        done = stepline("run", "nap", "--server", f"http://127.0.0.1:{proxy.port}", "-i", "seconds=2")
    finally:
        proxy.close()

    told = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}\nrequests: {proxy.requests}"
    assert proxy.cut.is_set(), told
    assert done.returncode == 0, told
    assert "stepline run: event stream lost" in done.stderr, told
    resumed = [request for request in proxy.requests if b"/events" in request and b"last-event-id:" in request.lower()]
    assert resumed and re.search(rb"(?i)last-event-id: [1-9]\d*\r\n", resumed[0]), told
    # Each step told once: nothing lost, nothing repeated.
    step_lines = [line for line in done.stdout.splitlines() if line.startswith("step ")]
    assert [line.split(":")[0] for line in step_lines] == ["step 1 first", "step 2 nap", "step 3 last"], told
    assert all(": success (" in line for line in step_lines), told


# --- In a real terminal ---


class Terminal:
    """A process on its own pseudo-terminal (as its controlling terminal), its output collected."""

    def __init__(self, args: list[str], rows: int = 30, columns: int = 140) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.master = master
        self.output = b""
        self.process = subprocess.Popen(
            args,
            cwd=PROJECT_ROOT,
            env={
                **os.environ,
                "TERM": "xterm-256color",
                "STEPLINE_DEMO_DELAY": "0",
                "COLUMNS": str(columns),
                "LINES": str(rows),
            },
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            preexec_fn=_take_terminal,
        )
        os.close(slave)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if not ready:
                if self.process.poll() is not None:
                    return
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:  # the other side has closed
                return
            if not data:
                return
            self.output += data

    @property
    def text(self) -> str:
        """What was written, without rich's colours and cursor moves."""
        return ANSI.sub("", self.output.decode(errors="replace"))

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)


def _take_terminal() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@pytest.fixture
def terminal() -> Iterator[Callable[[list[str]], Terminal]]:
    opened: list[Terminal] = []

    def open_terminal(args: list[str]) -> Terminal:
        opened.append(Terminal(args))
        return opened[-1]

    yield open_terminal
    for term in opened:
        term.close()


def test_a_terminal_shows_a_live_table_and_ctrl_c_cancels_the_run(
    terminal: Callable[[list[str]], Terminal], home: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, config = home
    data_dir = tmp_path / "history"
    term = terminal(
        [
            sys.executable,
            "-m",
            "web",
            "run",
            "busy",
            "--scenarios",
            str(folder),
            "--mcp-config",
            str(config),
            "--data-dir",
            str(data_dir),
        ]
    )

    # While it runs: for_each items counted, the retry waiting, the refused step tolerated.
    wait_until(lambda: re.search(r"items\s+running\s+\S+ m?s\s+[12]/3 items", term.text), 30, "items counted")
    wait_until(
        lambda: re.search(r"retried\s+running\s+.*attempt 2/3 in 1\.0 s: .*flaky", term.text), 30, "the retry shown"
    )
    wait_until(lambda: re.search(r"nap\s+running", term.text), 30, "the long step to run")
    assert re.search(r"refuse\s+failed\s+\S+ m?s\s+tolerated: .*" + re.escape(HOSTILE_SHOWN), term.text), term.text
    assert b"\x1b]0;pwned" not in term.output and b"\x1b[2J" not in term.output
    # Drawn in place, not appended: the cursor goes back up over the table.
    assert re.search(rb"\x1b\[\d*A", term.output)

    term.type(b"\x03")
    assert term.wait(30) == 1, term.text
    text = term.text
    run_id = re.search(r"run (\S+)\s+busy", text)[1]  # type: ignore[index]
    assert f"stepline run: cancelling run {run_id} (Ctrl-C again to stop waiting)" in text
    assert re.search(r"nap\s+cancelled\s+\S+ m?s\s+Cancelled by request", text), text
    assert f"run {run_id}: cancelled" in text
    # Really cancelled, and recorded so.
    with in_process(tmp_path, data_dir=data_dir, scenarios=folder, mcp_config=config) as app:
        recorded = get_run(app.client, run_id)
    assert recorded["status"] == "cancelled"
    assert {s["node_id"]: s["status"] for s in recorded["steps"]}["nap"] == "cancelled"
