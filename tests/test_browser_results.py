"""Tool results in a real browser (Debian's Chromium, driven by Playwright) against `stepline serve`: the MCP
reference server's tiny image really drawn, audio with its player, and hostile results that run nothing,
whether the page is loaded after the run or receives the steps live over its stream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_support import CHROMIUM, assert_picture, screenshot_folder, watched_page
from conftest import StepServer, start_server
from playwright.sync_api import Browser, Locator, Page, expect
from reference_server import reference_server
from runs import start_run, wait_finished
from servers.results import PICTURE_SIDE, results_home

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium (make browser)")

# The reference server's tiny MCP logo is 20 pixels square.
TINY_IMAGE_SIDE = 20
# Seconds the live scenario waits before its results come: the page is open by then.
PAUSE = 3
# Resolves once the audio element has read its data's header, or failed to.
AUDIO_LOADED = """
(audio) => new Promise((resolve) => {
  const done = () => resolve({duration: audio.duration, error: audio.error && audio.error.message});
  if (audio.readyState >= 1 || audio.error) return done();
  audio.addEventListener("loadedmetadata", done, {once: true});
  audio.addEventListener("error", done, {once: true});
  audio.load();
})
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StepServer]:
    folder = tmp_path_factory.mktemp("browser-results")
    scenarios, config = results_home(folder, reference_server())
    server = start_server(folder, "--scenarios", str(scenarios), "--mcp-config", str(config))
    yield server
    server.stop()


def card(page: Page, name: str) -> Locator:
    """A step's card, by the step's name."""
    return page.locator("article.step").filter(has=page.locator("h2.step-name", has_text=name))


def test_images_and_audio_are_drawn_and_nothing_hostile_runs(browser: Browser, server: StepServer) -> None:
    page, watch = watched_page(browser)
    run = wait_finished(server.url, start_run(server.url, "every_kind")["run_id"], timeout=30)
    assert run["status"] == "success", run
    page.goto(f"{server.url}/runs/{run['run_id']}")
    tiny = card(page, "tiny_image").locator("img.block-picture")
    expect(tiny).to_be_visible()
    # Decoded and drawn: an image the browser could not use has no natural width.
    assert tiny.evaluate("img => img.complete && img.naturalWidth") == TINY_IMAGE_SIDE
    picture = card(page, "picture").locator("img.block-picture")
    assert picture.evaluate("img => img.complete && img.naturalWidth") == PICTURE_SIDE
    audio = card(page, "sound").locator("audio.block-player")
    expect(audio).to_be_visible()
    assert audio.evaluate("audio => audio.controls") is True
    loaded = audio.evaluate(AUDIO_LOADED)
    assert loaded["error"] is None and 0.25 < loaded["duration"] < 0.35, loaded
    watch.assert_clean({server.url})


def test_hostile_results_arriving_live_run_nothing(browser: Browser, server: StepServer) -> None:
    page, watch = watched_page(browser)
    run_id = start_run(server.url, "live", {"seconds": PAUSE})["run_id"]
    page.goto(f"{server.url}/runs/{run_id}")
    page.evaluate("window.__stay = true")
    expect(page.locator("#run-status")).to_have_attribute("data-status", "success", timeout=30_000)
    assert page.evaluate("window.__stay") is True  # the results came in over the stream, not by a reload
    assert page.evaluate("window.__states['step-1']")[:1] == ["pending"]
    tiny = card(page, "tiny_image").locator("img.block-picture")
    expect(tiny).to_be_visible()
    assert tiny.evaluate("img => img.complete && img.naturalWidth") == TINY_IMAGE_SIDE
    expect(card(page, "sound").locator("audio[controls]")).to_have_count(1)
    hostile = card(page, "hostile_media")
    expect(hostile.locator(".block-note")).to_have_count(8)
    assert hostile.locator("img, audio, svg, iframe, object, embed").count() == 0
    expect(card(page, "links").locator("code", has_text="javascript:")).to_have_count(2)
    # Clicking what looks most like a link goes nowhere: it is text.
    card(page, "links").locator("code", has_text="javascript:window").click()
    assert page.evaluate("window.__pwned") is None
    watch.assert_clean({server.url})


def test_the_readme_picture_of_results(browser: Browser, server: StepServer, tmp_path: Path) -> None:
    folder = screenshot_folder(tmp_path)
    page, watch = watched_page(browser, viewport={"width": 1100, "height": 900})
    run = wait_finished(server.url, start_run(server.url, "showcase")["run_id"], timeout=30)
    assert run["status"] == "success", run
    page.goto(f"{server.url}/runs/{run['run_id']}")
    expect(card(page, "tiny_image").locator("img.block-picture")).to_be_visible()
    blank = browser.new_page()
    assert_picture(blank, page, page.screenshot(path=folder / "results.png", full_page=True))
    watch.assert_clean({server.url})
