"""A person answering in a real browser: Chromium on a real `stepline serve`, with JavaScript on and off.

The server sits behind what a portal would send (a trusted proxy's user and group headers, sent here by
the browser's context and the test's client): operators may answer, viewers only watch. A run waits on
an approval step after a first step that takes a moment, so the page is open before anything is asked:
the form arrives live (or with the next reload, without JavaScript), the person fills it in and sends
it, and the step and the run finish. A URL to visit is shown as a link that opens nothing by itself.
The run page's HTML stream is also read over a socket, as the browser reads it, for each kind of viewer.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from browser_support import Watcher, watched_page
from conftest import StepServer, start_server, wait_until
from mcp_process import asking_home
from playwright.sync_api import Browser, Page, expect
from runs import wait_finished
from sse import Frame, parse_lines

OPERATOR = {"X-Forwarded-User": "oscar", "X-Forwarded-Groups": "ops"}
VIEWER = {"X-Forwarded-User": "rita", "X-Forwarded-Groups": "readers"}
ORDER = {
    "type": "object",
    "properties": {
        "copies": {"type": "integer", "minimum": 1, "title": "Copies"},
        # Checked by the server only: the form gives the browser no pattern to check.
        "code": {"type": "string", "pattern": "^[A-Z]{3}$", "title": "Shop code"},
    },
    "required": ["copies", "code"],
}
SCENARIOS = [
    {
        "schema_version": "2",
        "scenario_id": "ship",
        "name": "Ship",
        "steps": [
            {"name": "prepare", "tool": "sleep", "input": {"seconds": 4, "label": "ready"}},
            {
                "name": "approve",
                "type": "approval",
                "message": "Print the poster?",
                "schema": ORDER,
                "needs": ["prepare"],
            },
            {"name": "print", "tool": "echo", "input": {"value": "{{ steps.approve.output.values.copies }} copies"}},
        ],
    },
    {
        "schema_version": "2",
        "scenario_id": "visit",
        "name": "Visit",
        "steps": [
            {
                "name": "visit",
                "tool": "ask_url",
                "server": "asker",
                "input": {"message": "Sign in to the printer", "url": "https://login.example.com/authorize?state=1"},
            },
        ],
    },
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StepServer]:
    home = tmp_path_factory.mktemp("people-browser")
    folder, config = asking_home(home, SCENARIOS)
    stepline = start_server(
        home,
        "--scenarios",
        str(folder),
        "--mcp-config",
        str(config),
        "--auth-header",
        "X-Forwarded-User",
        "--groups-header",
        "X-Forwarded-Groups",
        "--trusted-proxies",
        "127.0.0.1",
        "--role-map",
        "readers=viewer,ops=operator",
    )
    yield stepline
    stepline.stop()


def start(server: StepServer, scenario_id: str) -> str:
    response = httpx.post(
        f"{server.url}/api/runs", json={"scenario_id": scenario_id, "input": {}}, headers=OPERATOR, timeout=10
    )
    assert response.status_code == 202, response.text
    return response.json()["run_id"]


def finished(server: StepServer, run_id: str) -> dict[str, Any]:
    with httpx.Client(base_url=server.url, headers=OPERATOR, timeout=10) as client:
        return wait_finished(client, run_id, timeout=30)


def open_run(browser: Browser, server: StepServer, run_id: str, **options: Any) -> tuple[Page, Watcher]:
    page, watch = watched_page(browser, extra_http_headers=OPERATOR, **options)
    page.goto(f"{server.url}/runs/{run_id}")
    return page, watch


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_a_person_answers_an_approval_in_the_page(browser: Browser, server: StepServer, javascript: bool) -> None:
    run_id = start(server, "ship")
    page, watch = open_run(browser, server, run_id, java_script_enabled=javascript)
    # Opened while the first step runs: nothing is asked yet.
    assert page.locator(".request").count() == 0
    assert page.locator("#step-0").get_attribute("data-status") == "running"
    # The form comes by itself: swapped in live, or with the page's next reload.
    form = page.locator("#step-1 form.request-form")
    expect(form).to_be_visible(timeout=20_000)
    expect(page.locator("#step-1")).to_have_attribute("data-status", "waiting")
    expect(page.locator("#run-status")).to_have_attribute("data-status", "waiting")
    expect(page).to_have_title(re.compile(r"^Waiting for input — Ship: waiting"))
    expect(page.locator(".run-waiting")).to_contain_text("Print the poster?")
    expect(page.locator("#step-1 .request-message")).to_have_text("Print the poster?")
    # A value the schema refuses: the form comes back with the values and the problem beside the field.
    form.get_by_label("Copies").fill("2")
    form.get_by_label("Shop code").fill("abc")
    form.get_by_role("button", name="Approve").click()
    problem = page.locator("#step-1 .field-errors")
    expect(problem).to_contain_text("'abc' does not match '^[A-Z]{3}$'")
    expect(page.locator("#run-status")).to_have_attribute("data-status", "waiting")
    form = page.locator("#step-1 form.request-form")
    expect(form.get_by_label("Copies")).to_have_value("2")
    form.get_by_label("Shop code").fill("ABC")
    form.get_by_role("button", name="Approve").click()
    expect(page.locator("#run-status")).to_have_attribute("data-status", "success", timeout=30_000)
    expect(page.locator("#step-1")).to_have_attribute("data-status", "success")
    expect(page.locator("#step-1 .step-answers")).to_contain_text("Answered (accept) by oscar")
    assert page.locator("form.request-form").count() == 0
    run = finished(server, run_id)
    assert run["steps"][2]["output"]["value"] == "2 copies"
    if javascript:
        # Everything came in place: the page was never loaded again, and nothing went wrong in it.
        assert watch.navigations == [f"{server.url}/runs/{run_id}"]
        # Chromium logs the 422 whose form htmx swapped in.
        watch.assert_clean({server.url}, allowed_errors=(r"status of 422 \(Unprocessable",))
    else:
        # Each answer was a plain POST and a 303 back to the run (or the page again, with the problem).
        assert len(watch.navigations) > 2
    page.context.close()


def test_a_url_to_visit_opens_nothing_by_itself(browser: Browser, server: StepServer) -> None:
    run_id = start(server, "visit")
    page, watch = open_run(browser, server, run_id)
    link = page.locator("#step-0 .request-url a")
    expect(link).to_be_visible(timeout=20_000)
    expect(link).to_have_attribute("href", "https://login.example.com/authorize?state=1")
    expect(link).to_have_attribute("target", "_blank")
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    expect(page.locator("#step-0 .request-host")).to_have_text("login.example.com")
    # Waiting for the person: no other tab, no frame, no request to the URL's site.
    page.wait_for_timeout(1000)
    assert len(page.context.pages) == 1
    assert page.locator("iframe").count() == 0
    page.locator("#step-0 form.request-form").get_by_role("button", name="I have done it").click()
    expect(page.locator("#run-status")).to_have_attribute("data-status", "success", timeout=30_000)
    assert len(page.context.pages) == 1
    assert finished(server, run_id)["steps"][0]["output"] == {"action": "accept"}
    watch.assert_clean({server.url})
    page.context.close()


def read_stream(server: StepServer, run_id: str, headers: dict[str, str], into: list[tuple[str, str]]) -> None:
    """The run page's stream, each frame kept as it arrives, until the run finishes."""
    with httpx.stream("GET", f"{server.url}/runs/{run_id}/stream", headers=headers, timeout=30) as response:
        assert response.status_code == 200
        for item in parse_lines(response.iter_lines()):
            if isinstance(item, Frame):
                into.append((item.event or "", item.data))
                if item.event == "run-finished":
                    return


def text_of(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_the_stream_swaps_the_form_in_and_out_for_each_kind_of_viewer(server: StepServer) -> None:
    run_id = start(server, "ship")
    seen: dict[str, list[tuple[str, str]]] = {"operator": [], "viewer": []}
    readers = [
        threading.Thread(target=read_stream, args=(server, run_id, headers, seen[who]), daemon=True)
        for who, headers in (("operator", OPERATOR), ("viewer", VIEWER))
    ]
    for reader in readers:
        reader.start()

    def asked(who: str) -> str | None:
        return next((data for name, data in seen[who] if name == "step-1" and "request-" in data), None)

    for who in seen:
        wait_until(lambda who=who: asked(who) is not None, 20, f"the {who}'s card with the request")
    operator_card, viewer_card = asked("operator"), asked("viewer")
    assert operator_card and viewer_card
    assert "<form" in operator_card and 'hx-preserve="true"' in operator_card
    assert "<form" not in viewer_card and "Only people who may run this scenario can answer." in viewer_card
    for who in seen:
        names = [name for name, _ in seen[who]]
        at = next(i for i, (name, data) in enumerate(seen[who]) if name == "step-1" and "request-" in data)
        # Before the card: the run's header (its status, the tab's title, the list) and the graph's node.
        assert names[at - 2 : at] == ["run-status", "node-1"], names
        assert "Waiting for input — Ship: waiting" in seen[who][at - 2][1]
        assert "Waiting for input" in text_of(seen[who][at - 1][1])
    token = re.search(r'name="_csrf" value="([^"]+)"', operator_card)
    request_id = re.search(r'id="request-([0-9a-f]{32})"', operator_card)
    assert token and request_id
    response = httpx.post(
        f"{server.url}/runs/{run_id}/requests/{request_id.group(1)}",
        data={
            "_csrf": token.group(1),
            "action": "accept",
            f"r-{request_id.group(1)}.copies": "1",
            f"r-{request_id.group(1)}.code": "XYZ",
        },
        headers={**OPERATOR, "Sec-Fetch-Site": "same-origin", "HX-Request": "true"},
        timeout=10,
    )
    assert response.status_code == 204, response.text
    for reader in readers:
        reader.join(30)
    for who in seen:
        last_card = [data for name, data in seen[who] if name == "step-1"][-1]
        assert "<form" not in last_card and "Answered (accept) by oscar" in text_of(last_card)
        headers = [data for name, data in seen[who] if name == "run-status"]
        assert "Waiting for input" not in headers[-1]
    assert finished(server, run_id)["status"] == "success"
