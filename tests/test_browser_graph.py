"""The step graph in a real browser (Debian's Chromium, driven by Playwright) against `stepline serve`:
nodes swapped live, a click that goes to the step's card, fifty steps that scroll inside the graph,
light and dark. With STEPLINE_WRITE_SCREENSHOTS=1 it rewrites docs/screenshots/graph-*.png."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import CHROMIUM, read_picture, screenshot_folder, watched_page
from conftest import StepServer, start_server
from playwright.sync_api import Browser, Page, expect
from runs import start_run, wait_finished

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium (make browser)")

DOMAIN = "daily.example.com"
# Seconds each demo call takes: long enough to see a step running, short enough for a quick test.
DEMO_DELAY = "0.5"


def v2(scenario_id: str, name: str, steps: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"schema_version": "2", "scenario_id": scenario_id, "name": name, "steps": steps, **extra}


# Branches, items, a tolerated failure and a condition that is false: every colour the graph has.
SHOWCASE = v2(
    "graph_showcase_v2",
    "Outlet digest",
    [
        {"name": "outlet", "tool": "lookup_outlet", "input": {"domain": "{{ input.domain }}"}},
        {
            "name": "guess",
            "tool": "lookup_outlet",
            "input": {"domain": "{{ input.domain }}.invalid"},
            "on_error": "continue",
        },
        {"name": "articles", "tool": "list_outlet_articles", "input": {"domain": "{{ steps.outlet.output.domain }}"}},
        {
            "name": "sources",
            "tool": "search_news_sources",
            "for_each": "{{ steps.articles.output.articles }}",
            "max_parallel": 2,
            "input": {"url": "{{ item.url }}"},
        },
        {
            "name": "stats",
            "tool": "outlet_stats",
            "input": {"articles": "{{ steps.articles.output.articles }}", "outlet": "{{ steps.outlet.output.name }}"},
        },
        {
            "name": "chain",
            "tool": "trace_citation_chain",
            "when": "{{ input.trace }}",
            "input": {
                "from_url": "{{ steps.articles.output.articles[0].url }}",
                "to_url": "{{ steps.sources.output[0].sources[-1].url }}",
            },
        },
        {
            "name": "brief",
            "tool": "write_brief",
            "needs": ["guess", "chain", "stats"],
            "input": {
                "title": "{{ steps.outlet.output.name }}",
                "points": ["{{ steps.stats.output.summary }}", "{{ steps.sources.output | length }} stories traced"],
            },
        },
    ],
    input_schema={
        "type": "object",
        "properties": {"domain": {"type": "string"}, "trace": {"type": "boolean"}},
        "examples": [{"domain": DOMAIN, "trace": False}],
    },
)
# Forty steps side by side: wider than any window.
WIDE = v2(
    "graph_wide_v2",
    "Forty at once",
    [
        {"name": "start", "tool": "lookup_outlet", "input": {"domain": DOMAIN}},
        *(
            {"name": f"branch_{n:02d}", "tool": "lookup_outlet", "input": {"domain": DOMAIN}, "needs": ["start"]}
            for n in range(40)
        ),
        {
            "name": "join",
            "tool": "lookup_outlet",
            "input": {"domain": DOMAIN},
            "needs": [f"branch_{n:02d}" for n in range(40)],
        },
    ],
)


def fifty() -> dict[str, Any]:
    """Fifty steps: fan-outs, joins, chains and edges over many rows (pseudo-random, fixed)."""
    steps: list[dict[str, Any]] = [{"name": "s00", "tool": "lookup_outlet", "input": {"domain": DOMAIN}}]
    for n in range(1, 50):
        needs = sorted({f"s{(n * k * 7 + k) % n:02d}" for k in range(1, 2 + n % 3)})
        steps.append({"name": f"s{n:02d}", "tool": "lookup_outlet", "input": {"domain": DOMAIN}, "needs": needs})
    return v2("graph_fifty_v2", "Fifty steps", steps)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StepServer]:
    folder = tmp_path_factory.mktemp("browser-graph")
    scenarios = folder / "scenarios"
    scenarios.mkdir()
    for scenario in (SHOWCASE, WIDE, fifty()):
        (scenarios / f"{scenario['scenario_id']}.json").write_text(json.dumps(scenario))
    server = start_server(folder, "--scenarios", str(scenarios), env={"STEPLINE_DEMO_DELAY": DEMO_DELAY})
    yield server
    server.stop()


# Every status each node showed, in order, by slot id: the swaps as they came.
NODE_STATES = """
(() => {
  window.__nodes = {};
  const record = () => {
    for (const el of document.querySelectorAll(".graph-slot > a.gnode")) {
      const seen = (window.__nodes[el.parentElement.id] ||= []);
      if (seen[seen.length - 1] !== el.dataset.status) seen.push(el.dataset.status);
    }
  };
  new MutationObserver(record).observe(document, {subtree: true, childList: true});
  document.addEventListener("DOMContentLoaded", record);
})();
"""

# Pairs of node boxes, as laid out on screen, that overlap.
OVERLAPS = """
() => {
  const boxes = [...document.querySelectorAll("a.gnode")]
    .map((el) => [el.getAttribute("href"), el.getBoundingClientRect()]);
  const hit = [];
  for (const [i, [a, r]] of boxes.entries()) {
    for (const [b, s] of boxes.slice(i + 1)) {
      if (r.left < s.right && s.left < r.right && r.top < s.bottom && s.top < r.bottom) hit.push([a, b]);
    }
  }
  return [boxes.length, hit];
}
"""

# For each node: its status, the lowest WCAG contrast ratio (1 to 21) between its words and its box's
# fill, and that fill's relative luminance (0 black … 1 white). Colours are read back from a canvas:
# computed styles may give them in any CSS colour syntax.
CONTRAST = r"""
() => {
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = 1;
  const context = canvas.getContext("2d", {willReadFrequently: true});
  const linear = (c) => (c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4);
  const luminance = (colour) => {
    context.clearRect(0, 0, 1, 1);
    context.fillStyle = colour;
    context.fillRect(0, 0, 1, 1);
    const [r, g, b] = context.getImageData(0, 0, 1, 1).data;
    return 0.2126 * linear(r / 255) + 0.7152 * linear(g / 255) + 0.0722 * linear(b / 255);
  };
  const ratio = (a, b) => (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  return [...document.querySelectorAll("a.gnode")].map((node) => {
    const fill = luminance(getComputedStyle(node.querySelector(".gnode-frame")).fill);
    const words = [".gnode-name", ".gnode-status", ".gnode-detail", ".gnode-note"]
      .flatMap((selector) => [...node.querySelectorAll(selector)])
      .map((el) => ratio(luminance(getComputedStyle(el).fill), fill));
    return [node.dataset.status, Math.min(...words), fill];
  });
}
"""


def node(page: Page, index: int) -> Any:
    return page.locator(f"#graph-node-{index} > a.gnode")


def test_nodes_change_live_and_a_click_goes_to_the_steps_card(browser: Browser, server: StepServer) -> None:
    page, watch = watched_page(browser, viewport={"width": 1200, "height": 800})
    page.context.add_init_script(NODE_STATES)
    run_id = start_run(server.url, SHOWCASE["scenario_id"], {"domain": DOMAIN, "trace": False})["run_id"]
    page.goto(f"{server.url}/runs/{run_id}")
    page.evaluate("window.__stay = true")
    # The last step, which waits for all the others, is seen pending, then running, saying so.
    expect(node(page, 6)).to_have_attribute("data-status", "running", timeout=30_000)
    expect(node(page, 6)).to_contain_text("Running")
    expect(page.locator("#run-status")).to_have_attribute("data-status", "success", timeout=30_000)
    assert page.evaluate("window.__stay") is True  # every change came in live, without a reload
    seen = page.evaluate("window.__nodes")
    assert seen["graph-node-6"] == ["pending", "running", "success"], seen
    assert seen["graph-node-3"][-2:] == ["running", "success"], seen  # the items, counted as they ended
    # Each node ended as its card did, and says so in words.
    for index, status, words in [
        (0, "success", "Succeeded"),
        (1, "failed", "Failed"),
        (3, "success", "3/3 items"),
        (5, "skipped", "Not run"),
        (6, "success", "Succeeded"),
    ]:
        expect(node(page, index)).to_have_attribute("data-status", status)
        expect(node(page, index)).to_contain_text(words)
        expect(page.locator(f"#step-{index}")).to_have_attribute("data-status", status)
    expect(node(page, 5)).to_contain_text("if input.trace")

    # A click on a node brings its card, below the fold, to the top of the window.
    card = page.locator("#step-4")
    assert card.evaluate("el => el.getBoundingClientRect().top > innerHeight")
    node(page, 4).click()
    page.wait_for_function("location.hash === '#step-4'")
    expect(card).to_be_in_viewport()
    top = card.evaluate("el => el.getBoundingClientRect().top")
    assert 0 <= top < 50, top
    watch.assert_clean({server.url})


def test_a_wide_graph_scrolls_inside_its_frame_and_fifty_steps_do_not_overlap(
    browser: Browser, server: StepServer
) -> None:
    page, watch = watched_page(browser, viewport={"width": 1200, "height": 800})
    page.goto(f"{server.url}/scenarios/{WIDE['scenario_id']}")
    frame = page.locator(".graph-scroll")
    width, shown = frame.evaluate("el => [el.scrollWidth, el.clientWidth]")
    assert width > 40 * 200 and shown < 1200, (width, shown)
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    # The last branch is reached by scrolling the graph, and a click still goes to its step.
    last = node(page, 40)
    last.scroll_into_view_if_needed()
    expect(last).to_be_in_viewport()
    last.click()
    page.wait_for_function("location.hash === '#flow-branch_39'")
    expect(page.locator("#flow-branch_39")).to_be_in_viewport()

    run = wait_finished(server.url, start_run(server.url, "graph_fifty_v2")["run_id"], timeout=60)
    for path in ("/scenarios/graph_fifty_v2", f"/runs/{run['run_id']}"):
        page.goto(server.url + path)
        count, overlapping = page.evaluate(OVERLAPS)
        assert count == 50 and not overlapping, (path, overlapping)
        assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    watch.assert_clean({server.url})


@pytest.fixture(scope="module")
def showcase_run(server: StepServer) -> str:
    run_id = start_run(server.url, SHOWCASE["scenario_id"], {"domain": DOMAIN, "trace": False})["run_id"]
    assert wait_finished(server.url, run_id, timeout=60)["status"] == "success"
    return run_id


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_graph_reads_in_light_and_dark_and_its_pictures(
    browser: Browser, server: StepServer, showcase_run: str, tmp_path: Path, scheme: str
) -> None:
    folder = screenshot_folder(tmp_path)
    page, watch = watched_page(browser, viewport={"width": 1200, "height": 900}, color_scheme=scheme)
    page.goto(f"{server.url}/runs/{showcase_run}")
    nodes = page.evaluate(CONTRAST)
    assert {status for status, _, _ in nodes} == {"success", "failed", "skipped"}
    assert all(ratio >= 4.5 for _, ratio, _ in nodes), nodes  # WCAG AA, for every word of every node
    assert all((fill > 0.6) == (scheme == "light") for _, _, fill in nodes), nodes
    figure = page.locator("figure.graph")
    blank = browser.new_page()
    picture = read_picture(blank, figure.screenshot(path=folder / f"graph-run-{scheme}.png"))
    box = figure.bounding_box()
    assert box and abs(picture.width - box["width"]) <= 1 and abs(picture.height - box["height"]) <= 1
    assert picture.colours >= 8
    assert (picture.luminance > 0.5) == (scheme == "light")
    watch.assert_clean({server.url})
