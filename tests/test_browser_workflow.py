"""A workflow watched in a real browser (Debian's Chromium, driven by Playwright) against `stepline serve`:
steps running at once, items arriving, a skipped step and the run's output, all swapped in live."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_support import CHROMIUM, assert_picture, screenshot_folder, watched_page
from conftest import PROJECT_ROOT, StepServer, start_server
from playwright.sync_api import Browser, expect
from runs import start_run

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium (make browser)")

DOMAIN = "daily.example.com"
# The shipped workflow the README pictures.
SHIPPED_FLOW = "outlet_story_origins_v2"
# Seconds each demo call takes: the two branches overlap for a visible while.
DEMO_DELAY = "0.6"
FLOW = {
    "schema_version": "2",
    "scenario_id": "browser_flow_v2",
    "name": "Branches in the browser",
    "input_schema": {"type": "object", "properties": {"domain": {"type": "string"}}, "examples": [{"domain": DOMAIN}]},
    "steps": [
        {"name": "outlet", "tool": "lookup_outlet", "input": {"domain": "{{ input.domain }}"}},
        {"name": "articles", "tool": "list_outlet_articles", "input": {"domain": "{{ steps.outlet.output.domain }}"}},
        {"name": "sources", "tool": "search_news_sources", "for_each": "{{ steps.articles.output.articles }}",
         "max_parallel": 2, "input": {"url": "{{ item.url }}"}},
        {"name": "stats", "tool": "outlet_stats",
         "input": {"articles": "{{ steps.articles.output.articles }}", "outlet": "{{ steps.outlet.output.name }}"}},
        {"name": "chain", "tool": "trace_citation_chain", "when": "{{ input.domain == 'nowhere' }}",
         "input": {"from_url": "{{ input.domain }}", "to_url": "{{ input.domain }}"}},
    ],
    "output": {"outlet": "{{ steps.outlet.output.name }}", "stories": "{{ steps.sources.output | length }}"},
}
# Counts the steps shown running at once, the most there ever were.
MOST_RUNNING = """
(() => {
  window.__mostRunning = 0;
  new MutationObserver(() => {
    const running = document.querySelectorAll('article[id^="step-"][data-status="running"]').length;
    window.__mostRunning = Math.max(window.__mostRunning, running);
  }).observe(document, {subtree: true, childList: true, attributes: true, attributeFilter: ["data-status"]});
})();
"""


@pytest.fixture(scope="module")
def flow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StepServer]:
    folder = tmp_path_factory.mktemp("browser-flow")
    scenarios = folder / "scenarios"
    scenarios.mkdir()
    (scenarios / "browser_flow_v2.json").write_text(json.dumps(FLOW))
    shutil.copy(PROJECT_ROOT / "scenarios" / f"{SHIPPED_FLOW}.json", scenarios)
    server = start_server(folder, "--scenarios", str(scenarios), env={"STEPLINE_DEMO_DELAY": DEMO_DELAY})
    yield server
    server.stop()


def test_a_workflow_is_watched_live_branches_items_skips_and_output(browser: Browser, flow_server: StepServer) -> None:
    page, watch = watched_page(browser)
    page.context.add_init_script(MOST_RUNNING)
    run_id = start_run(flow_server.url, "browser_flow_v2", {"domain": DOMAIN})["run_id"]
    page.goto(f"{flow_server.url}/runs/{run_id}")
    page.evaluate("window.__stay = true")
    expect(page.locator("#run-status")).to_have_attribute("data-status", "success", timeout=30_000)
    assert page.evaluate("window.__stay") is True  # all of it came in live, without a reload
    # The for_each step and the statistics ran side by side, and the page showed both running.
    assert page.evaluate("window.__mostRunning") >= 2
    states = page.evaluate("window.__states")
    assert states["step-2"][-1] == "success" and "running" in states["step-2"]
    expect(page.locator("#step-2 .item")).to_have_count(3)
    expect(page.locator("#step-2 .step-items-count")).to_have_text("3 of 3 items ran.")
    page.locator("#step-2 .item summary").first.click()
    expect(page.locator("#step-2 .item .item-data").first).to_contain_text("daily.example.com")
    # The condition was false: the step says so, as soon as the run knew.
    expect(page.locator("#step-4")).to_have_attribute("data-status", "skipped")
    expect(page.locator("#step-4 .step-message")).to_have_text("Condition is false: {{ input.domain == 'nowhere' }}")
    # The run's output, at the top.
    expect(page.locator("#run-status .run-output")).to_contain_text("Harbor Daily")
    watch.assert_clean({flow_server.url})


def test_without_javascript_a_reload_shows_the_same_truth_on_a_phone(browser: Browser, flow_server: StepServer) -> None:
    page, watch = watched_page(browser, java_script_enabled=False, viewport={"width": 390, "height": 844})
    run_id = start_run(flow_server.url, "browser_flow_v2", {"domain": DOMAIN})["run_id"]
    page.goto(f"{flow_server.url}/runs/{run_id}")
    # The page reloads itself until the run is over.
    expect(page.locator("#run-status")).to_have_attribute("data-status", "success", timeout=30_000)
    statuses = page.locator('article[id^="step-"]').evaluate_all("els => els.map(e => e.dataset.status)")
    assert statuses == ["success", "success", "success", "success", "skipped"]
    expect(page.locator("#step-2 .item")).to_have_count(3)
    expect(page.locator("#run-status .run-output")).to_contain_text("Harbor Daily")
    assert not watch.stream_requests()
    for path in (f"/runs/{run_id}", "/scenarios/browser_flow_v2"):
        page.goto(flow_server.url + path)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, (path, overflow)  # stages side by side fold into one column
    watch.assert_clean({flow_server.url})


def test_workflow_screenshots_for_the_readme(browser: Browser, flow_server: StepServer, tmp_path: Path) -> None:
    """A shipped workflow's scenario page (its stages) and a finished run (its output at the top)."""
    folder = screenshot_folder(tmp_path)
    page, watch = watched_page(browser, viewport={"width": 1200, "height": 900}, color_scheme="light")
    page.goto(f"{flow_server.url}/scenarios/{SHIPPED_FLOW}")
    expect(page.get_by_text("2 steps at once")).to_be_visible()
    blank = browser.new_page()
    assert_picture(blank, page, page.screenshot(path=folder / "workflow-scenario.png", full_page=True))

    page.get_by_role("button", name="Run scenario").click()
    expect(page.locator("#run-status")).to_have_attribute("data-status", "success", timeout=30_000)
    expect(page.locator("#run-status .run-output")).to_contain_text("Harbor Daily")
    assert_picture(blank, page, page.screenshot(path=folder / "workflow-run.png", full_page=True))
    watch.assert_clean({flow_server.url})
