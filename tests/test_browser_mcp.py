"""An MCP call watched live in a real browser: the SDK's client calls a scenario tool on a real `stepline serve`
(`/mcp`, streamable HTTP) from a thread of its own, while Chromium opens `/runs` and the run's page.

The run is listed, its steps go from running to succeeded in the page without a reload, the header names the
caller and the MCP client it called through, and the call's result then reaches the client. An approval step
reached through a client that cannot answer questions waits in the page: a person answers it there, and the
call completes with the run's output. A client's name is untrusted text, shown escaped.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from browser_support import CHROMIUM, assert_picture, screenshot_folder, watched_page
from conftest import StepServer, start_server, wait_until
from mcp.client import Client
from mcp_process import workflow_home
from playwright.sync_api import Browser, expect

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium (make browser)")

# Long enough for the page to be open before the second step starts, so that step is seen running live.
GATHER_SECONDS = 6
SCENARIOS = [
    {
        "schema_version": "2",
        "scenario_id": "digest",
        "name": "Morning digest",
        "description": "Gather the night's wires, then write the digest.",
        "input_schema": {"type": "object", "required": ["desk"], "properties": {"desk": {"type": "string"}}},
        "steps": [
            {"name": "gather", "tool": "progress_for", "input": {"seconds": GATHER_SECONDS, "every": 1}},
            {
                "name": "write",
                "tool": "sleep",
                "input": {"seconds": 2, "label": "digest for {{ input.desk }}"},
                "needs": ["gather"],
            },
        ],
        "output": {"digest": "{{ steps.write.output }}", "ticks": "{{ steps.gather.output.notifications }}"},
    },
    {
        "schema_version": "2",
        "scenario_id": "poster",
        "name": "Print a poster",
        "steps": [
            {"name": "prepare", "tool": "echo", "input": {"value": "layout"}},
            {
                "name": "approve",
                "type": "approval",
                "message": "Print the poster?",
                "schema": {
                    "type": "object",
                    "properties": {"copies": {"type": "integer", "minimum": 1, "title": "Copies"}},
                    "required": ["copies"],
                },
                "needs": ["prepare"],
            },
            {"name": "print", "tool": "echo", "input": {"value": "{{ steps.approve.output.values.copies }} copies"}},
        ],
        "output": {"printed": "{{ steps.print.output.value }}"},
    },
]
CALL_SECONDS = 90


class BackgroundCall:
    """One `tools/call` by the SDK's client, in a thread with its own event loop, while the test drives the
    browser: the progress messages it was sent, then its result."""

    def __init__(self, url: str, tool: str, arguments: dict[str, Any], client: types.Implementation, mode: str):
        self.url, self.tool, self.arguments, self.client, self.mode = url, tool, arguments, client, mode
        self.progress: list[str] = []
        self._result: types.CallToolResult | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"MCP call of {tool}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = anyio.run(self._call)
        except BaseException as exc:  # handed to the test in result()
            self._error = exc

    async def _call(self) -> types.CallToolResult:
        # No elicitation callback: the client declares no capability to answer questions.
        async with Client(self.url, mode=self.mode, client_info=self.client) as client:
            return await client.call_tool(self.tool, self.arguments, progress_callback=self._on_progress)

    async def _on_progress(self, progress: float, total: float | None, message: str | None) -> None:
        self.progress.append(message or "")

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def result(self) -> types.CallToolResult:
        self._thread.join(CALL_SECONDS)
        assert not self._thread.is_alive(), f"the MCP call of {self.tool} did not end in {CALL_SECONDS}s"
        self.raise_if_failed()
        assert self._result is not None
        return self._result


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StepServer]:
    home = tmp_path_factory.mktemp("browser-mcp")
    folder, config = workflow_home(home, SCENARIOS)
    stepline = start_server(home, "--scenarios", str(folder), "--mcp-config", str(config))
    yield stepline
    stepline.stop()


def api(server: StepServer, path: str) -> Any:
    response = httpx.get(f"{server.url}/api{path}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def run_of_call(server: StepServer, call: BackgroundCall, status: str) -> dict[str, Any]:
    """The snapshot of the call's run (the only run of its scenario) once it is `status`."""
    snapshot: dict[str, Any] = {}

    def reached() -> bool:
        call.raise_if_failed()  # the call ended before its run got there
        runs = api(server, f"/runs?scenario_id={call.tool}")["runs"]
        if not runs:
            return False
        snapshot.update(api(server, f"/runs/{runs[0]['run_id']}"))
        return snapshot["status"] == status

    wait_until(reached, 30, f"the run of the MCP call of {call.tool} to be {status}")
    return snapshot


def run_id_of(result: types.CallToolResult) -> str:
    links = [str(block.uri) for block in result.content if isinstance(block, types.ResourceLink)]
    [uri] = [link for link in links if link.startswith("stepline://runs/")]
    return uri.removeprefix("stepline://runs/")


def test_an_mcp_call_is_listed_and_watched_live_and_its_result_reaches_the_client(
    browser: Browser, server: StepServer, tmp_path: Path
) -> None:
    client = types.Implementation(name="moonbeam-desk", version="4.2")
    call = BackgroundCall(f"{server.url}/mcp", "digest", {"desk": "culture"}, client, mode="auto")
    run = run_of_call(server, call, "running")
    run_id = run["run_id"]
    page, watch = watched_page(browser, viewport={"width": 1200, "height": 900}, color_scheme="light")

    # Listed on /runs while it runs, like any run.
    page.goto(f"{server.url}/runs")
    row = page.locator("tbody tr", has=page.locator(f'a[href$="/runs/{run_id}"]'))
    expect(row).to_contain_text("Morning digest")
    expect(row).to_contain_text(run_id[:8])
    row.get_by_role("link", name="Morning digest").click()
    expect(page).to_have_url(f"{server.url}/runs/{run_id}")
    page.evaluate("window.__stay = true")
    # Who started it, and through which client.
    started_by = page.locator("#run-status .run-meta div", has_text="Started by").locator("dd")
    expect(started_by).to_have_text("anonymous via MCP client moonbeam-desk 4.2")

    expect(page.locator("#run-status")).to_have_attribute("data-status", "success", timeout=60_000)
    # All of it came in live: the page was not loaded again, and the second step was seen running, then done.
    assert page.evaluate("window.__stay") is True
    states = page.evaluate("window.__states")
    assert states["step-0"][-1] == "success", states
    assert states["step-1"][-2:] == ["running", "success"], states
    expect(page.locator("#run-status .run-output")).to_contain_text("digest for culture")

    # Then the call's result reaches the client: the run's output, and the progress it was told on the way.
    result = call.result()
    assert not result.is_error, result.content
    assert run_id_of(result) == run_id
    assert result.structured_content == api(server, f"/runs/{run_id}")["output"]
    assert result.structured_content["digest"] == "digest for culture"
    assert result.structured_content["ticks"] >= 1
    assert "step 1/2 gather: started" in call.progress
    assert "step 1/2 gather: tick 1" in call.progress
    assert call.progress[-1] == "step 2/2 write: success", call.progress
    blank = browser.new_page()
    assert_picture(blank, page, page.screenshot(path=screenshot_folder(tmp_path) / "run-mcp.png", full_page=True))
    watch.assert_clean({server.url})


def test_an_approval_reached_through_a_client_that_cannot_answer_is_answered_in_the_page(
    browser: Browser, server: StepServer
) -> None:
    client = types.Implementation(name="<b>x</b>", version="0.1")
    call = BackgroundCall(f"{server.url}/mcp", "poster", {}, client, mode="legacy")
    run_id = run_of_call(server, call, "waiting")["run_id"]
    page, watch = watched_page(browser)
    page.goto(f"{server.url}/runs/{run_id}")

    # The client's name is shown as the text it is, never as markup.
    started_by = page.locator("#run-status .run-meta div", has_text="Started by").locator("dd")
    expect(started_by).to_have_text("anonymous via MCP client <b>x</b> 0.1")
    assert page.locator("#run-status b").count() == 0
    assert "via MCP client &lt;b&gt;x&lt;/b&gt; 0.1" in httpx.get(f"{server.url}/runs/{run_id}", timeout=10).text

    # The question waits in the page for a person, who answers it there.
    expect(page.locator(".run-waiting")).to_contain_text("Print the poster?")
    form = page.locator("#step-1 form.request-form")
    form.get_by_label("Copies").fill("2")
    form.get_by_role("button", name="Approve").click()
    expect(page.locator("#run-status")).to_have_attribute("data-status", "success", timeout=30_000)
    expect(page.locator("#step-1 .step-answers")).to_contain_text("Answered (accept) by anonymous")

    # The call then completes with the run's output; on the way it told the client where a person answers.
    result = call.result()
    assert not result.is_error, result.content
    assert run_id_of(result) == run_id
    assert result.structured_content == {"printed": "2 copies"}
    waiting = f"step approve: waiting for a person to answer at {server.url}/runs/{run_id}: Print the poster?"
    assert waiting in call.progress, call.progress
    watch.assert_clean({server.url})
