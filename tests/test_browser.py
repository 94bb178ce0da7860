"""The pages in a real browser: Debian's Chromium, driven by Playwright, against real servers.

Every test ends by checking the page logged no error, opened no dialog and asked nothing of any
origin but the app's own.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from browser_support import (
    CHROMIUM,
    NGINX,
    Nginx,
    TcpProxy,
    assert_picture,
    origin_of,
    read_picture,
    resume_point,
    screenshot_folder,
    start_nginx,
    text_contrast,
    watched_page,
)
from conftest import StepServer, free_port, start_server
from playwright.sync_api import Browser, Page, expect
from runs import get_run, run_to_end, start_run, wait_finished
from ui_support import HOSTILE_TEXT, listed_run_ids, ui_server_args

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium (make browser)")

NEWS = "news_source_discovery_v1"
NEWS_URL = "https://signal.example/culture/lighthouse-library-explainer"
PREFIX = "/portal/stepline"
# Seconds each demo tool call takes: long enough to see every step running, short enough to be quick.
DEMO_DELAY = "0.4"
STEPS = [f"step-{i}" for i in range(4)]
# Chromium reports a page answered with an error status (the form's 422) as a console error.
STATUS_422 = r"status of 422"
# What a cut connection rightly logs: the broken response, and htmx reporting the stream's error.
CUT_STREAM_ERRORS = (r"ERR_INCOMPLETE_CHUNKED_ENCODING", r"^error: \[object Event\]$")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StepServer]:
    """The demo and the tests' own scenarios, each demo call taking DEMO_DELAY seconds."""
    folder = tmp_path_factory.mktemp("browser")
    server = start_server(folder, *ui_server_args(folder), env={"STEPLINE_DEMO_DELAY": DEMO_DELAY})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def behind_nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    """Stepline at /portal/stepline behind nginx, embeddable by a portal on another origin."""
    if not NGINX.exists():
        pytest.skip("needs nginx (make browser)")
    folder = tmp_path_factory.mktemp("nginx")
    port, portal_port, app_port = free_port(), free_port(), free_port()
    server = start_server(
        folder,
        "--root-path", PREFIX,
        "--frame-ancestors", f"'self' http://127.0.0.1:{portal_port}",
        env={"STEPLINE_DEMO_DELAY": DEMO_DELAY},
        port=app_port,
    )
    nginx = start_nginx(folder, app_port, PREFIX, port=port, portal_port=portal_port)
    yield nginx
    nginx.stop()
    server.stop()


def step_states(page: Page) -> dict[str, list[str]]:
    return page.evaluate("window.__states")


def wait_seen(page: Page, status: str, *steps: str) -> None:
    """Until the page has shown one of `steps` in `status`, however briefly (polling could miss it)."""
    page.wait_for_function(
        "([status, steps]) => steps.some((step) => (window.__states[step] || []).includes(status))",
        arg=[status, list(steps)],
    )


def wait_running_or_ended(page: Page) -> None:
    """Until the page has shown some step running, or the run ended."""
    page.wait_for_function(
        """() => Object.values(window.__states).some((seen) => seen.includes("running"))
            || ["success", "failed", "cancelled"].includes(document.querySelector("#run-status")?.dataset.status)"""
    )


def expect_finished(page: Page, status: str = "success") -> None:
    expect(page.locator("#run-status")).to_have_attribute("data-status", status, timeout=30_000)


def expect_all_steps(page: Page, status: str = "success") -> None:
    ids = page.locator('article[id^="step-"]').evaluate_all("els => els.map(e => e.id + ':' + e.dataset.status)")
    assert ids == [f"{step}:{status}" for step in STEPS]  # every step once, in order, none missing


def run_from_home(page: Page, base: str) -> None:
    """What a newcomer does: the catalog, the scenario, its form as it comes, Run."""
    page.goto(base + "/")
    expect(page).to_have_title("Scenarios · Stepline")
    page.get_by_role("link", name="Run News Source Discovery V1").click()
    expect(page).to_have_title("News Source Discovery V1 · Stepline")
    expect(page.get_by_label("url")).to_have_value(NEWS_URL)
    page.get_by_role("button", name="Run scenario").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}(\?embed=1)?$"))


def assert_watched_live(page: Page) -> None:
    """Each step went running → success in this page, with no reload or navigation meanwhile.

    A step may have started before the page loaded; every step still waiting then must be seen
    running and then succeeding, and in a run of four slow steps the last one always is.
    """
    states = step_states(page)
    for step in STEPS:
        seen = states[step]
        assert seen[-1] == "success" and "".join(seen) in "pendingrunningsuccess", states
        if seen[0] == "pending":
            assert seen == ["pending", "running", "success"], states
    assert states[STEPS[-1]][0] == "pending", states


def test_newcomer_runs_the_demo_from_home_and_watches_each_step(browser: Browser, live: StepServer) -> None:
    page, watch = watched_page(browser)
    run_from_home(page, live.url)
    page.evaluate("window.__stay = 'this page was never reloaded'")
    navigations = len(watch.navigations)
    expect(page.locator("#step-0 .badge")).to_contain_text(re.compile("Running|Succeeded"))
    expect_finished(page)
    expect_all_steps(page)
    # Each step the page saw start showed its progress bar (fed by step_progress), however briefly. A step
    # already running when the page was drawn may end before the stream catches up: its progress, then
    # outdated, is rightly never drawn.
    states = step_states(page)
    seen_starting = [step for step, seen in states.items() if "running" in seen and seen[0] != "running"]
    assert STEPS[-1] in seen_starting
    assert {step: True for step in seen_starting}.items() <= page.evaluate("window.__progress").items()
    assert_watched_live(page)
    expect(page.locator("#run-status .badge")).to_have_text("✓ Succeeded")
    expect(page).to_have_title("News Source Discovery V1: success · Stepline")  # the tab tells too
    expect(page.locator("#step-3 .json-block").last).to_contain_text("found")  # the result, open
    assert page.evaluate("window.__stay") == "this page was never reloaded"
    assert len(watch.navigations) == navigations
    streams = watch.stream_requests()
    assert len(streams) == 1 and resume_point(streams[0]) >= 1
    watch.assert_clean({live.url})


def test_reload_and_a_dropped_stream_recover_every_step_once(browser: Browser, live: StepServer) -> None:
    proxy = TcpProxy(live.port)
    try:
        page, watch = watched_page(browser)
        run_id = start_run(live.url, NEWS, {"url": NEWS_URL})["run_id"]
        page.goto(f"{proxy.url}/runs/{run_id}")
        # On a loaded machine a step may end before the page has drawn it running (or the run, before a reload).
        wait_running_or_ended(page)
        page.reload()
        wait_running_or_ended(page)
        page.evaluate("window.__stay = true")
        seen_before_drop = max(resume_point(r) for r in watch.stream_requests())
        # On a loaded machine the run may end while the page catches up: then no stream is left to cut.
        live_at_drop = get_run(live.url, run_id)["status"] == "running"
        assert proxy.drop() >= 1  # the page's stream (and any other connection) is cut mid-run
        expect_finished(page)
        expect_all_steps(page)
        assert page.evaluate("window.__stay") is True  # recovered in place, not by reloading
        assert [s["status"] for s in get_run(live.url, run_id)["steps"]] == ["success"] * 4
        # The stream came back from where it was, not from the start.
        streams = watch.stream_requests()
        if live_at_drop:
            assert len(streams) >= 3, [r.url for r in streams]
            assert resume_point(streams[-1]) > seen_before_drop
        watch.assert_clean({proxy.url}, allowed_errors=CUT_STREAM_ERRORS)
    finally:
        proxy.close()


def test_the_same_flow_behind_nginx_under_a_prefix(browser: Browser, behind_nginx: Nginx) -> None:
    page, watch = watched_page(browser)
    run_from_home(page, behind_nginx.url)
    assert page.url.startswith(behind_nginx.url + "/runs/")
    wait_seen(page, "running", "step-1")
    page.reload()  # mid-run, through the proxy
    page.evaluate("window.__stay = true")
    expect_finished(page)
    expect_all_steps(page)
    assert page.evaluate("window.__stay") is True
    assert all(r.url.startswith(behind_nginx.url + "/") for r in watch.requests), [r.url for r in watch.requests]
    watch.assert_clean({behind_nginx.origin})


def test_embedded_in_a_portal_on_another_origin(browser: Browser, behind_nginx: Nginx) -> None:
    page, watch = watched_page(browser)
    page.goto(behind_nginx.portal + "/")
    frame = page.frame_locator("iframe")
    expect(frame.locator("header.site-header")).to_have_count(0)  # no site chrome inside the portal
    frame.get_by_role("link", name="Run News Source Discovery V1").click()
    frame.get_by_role("button", name="Run scenario").click()  # a form POST from inside the iframe
    expect(frame.locator("#run-status")).to_have_attribute("data-status", "success", timeout=30_000)
    inner = page.frames[1]
    assert re.search(rf"{PREFIX}/runs/[0-9a-f-]{{36}}\?embed=1$", inner.url), inner.url
    states = inner.evaluate("window.__states")
    assert all(states[step][-1] == "success" for step in STEPS) and states["step-3"][0] == "pending"
    expect(frame.locator("header.site-header")).to_have_count(0)
    watch.assert_clean({behind_nginx.portal, behind_nginx.origin})


def test_everything_works_with_javascript_disabled(browser: Browser, live: StepServer) -> None:
    page, watch = watched_page(browser, java_script_enabled=False)
    run_from_home(page, live.url)
    run_url = page.url
    expect(page.locator("#run-status")).to_be_visible()
    # Without JavaScript the page reloads itself until the run is over, then stops.
    expect_finished(page)
    expect_all_steps(page)
    assert page.url == run_url
    page.get_by_role("button", name="Run again").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}$"))
    assert page.url != run_url
    expect_finished(page)
    assert not watch.stream_requests()
    watch.assert_clean({live.url})


def forms_runs(server: StepServer) -> list[str]:
    """The runs of forms_v1 the server lists, newest first."""
    with httpx.Client(base_url=server.url, timeout=10) as api:
        return listed_run_ids(api, scenario_id="forms_v1")


def test_invalid_input_is_shown_beside_each_field_with_the_values_kept(browser: Browser, live: StepServer) -> None:
    page, watch = watched_page(browser)
    runs_before = forms_runs(live)
    page.goto(live.url + "/scenarios/forms_v1")
    # The browser itself insists on what it can check: a required field left empty is not sent.
    page.get_by_label("title").fill("")
    page.get_by_role("button", name="Run scenario").click()
    assert page.get_by_label("title").evaluate("el => el.validity.valueMissing")
    assert page.url == live.url + "/scenarios/forms_v1"
    assert forms_runs(live) == runs_before
    # What only the server can judge comes back beside each field.
    page.get_by_label("title").fill("Not Lower")
    page.get_by_label("tags").fill("a\nb\nc\nd")
    page.get_by_label("extra").fill("{oops")
    page.get_by_label("By place").check()
    page.get_by_label("city").last.fill("Oslo")
    page.get_by_role("button", name="Run scenario").click()
    expect(page.locator("#form-errors")).to_contain_text("The scenario did not run")
    expect(page.locator("#f-in\\.title-error")).to_contain_text("does not match")
    expect(page.locator("#f-in\\.tags-error")).to_contain_text("is too long")
    expect(page.locator("#f-in\\.extra-error")).to_contain_text("Not valid JSON")
    assert forms_runs(live) == runs_before  # refused: nothing ran
    expect(page.get_by_label("title")).to_have_value("Not Lower")
    expect(page.get_by_label("tags")).to_have_value("a\nb\nc\nd")
    expect(page.get_by_label("extra")).to_have_value("{oops")
    expect(page.get_by_label("By place")).to_be_checked()
    expect(page.get_by_label("city").last).to_have_value("Oslo")
    # Fixed, it runs.
    page.get_by_label("title").fill("now lower")
    page.get_by_label("tags").fill("a\nb")
    page.get_by_label("extra").fill('{"note": "fine"}')
    page.get_by_role("button", name="Run scenario").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}$"))
    expect_finished(page)
    run = wait_finished(live.url, page.url.rsplit("/", 1)[-1])
    assert run["input"]["target"] == {"city": "Oslo"} and run["input"]["extra"] == {"note": "fine"}
    assert forms_runs(live) == [run["run_id"], *runs_before]  # this one run, no other
    watch.assert_clean({live.url}, allowed_errors=(STATUS_422,))


def test_hostile_markup_is_shown_as_text_and_never_runs(browser: Browser, live: StepServer) -> None:
    page, watch = watched_page(browser)
    page.goto(live.url + "/scenarios/hostile_v1")
    expect(page.locator("h1")).to_have_text("Hostile <script>window.__pwned=3</script> scenario")
    expect(page.get_by_label("text")).to_have_value(HOSTILE_TEXT)
    page.get_by_label("fail").check()
    page.get_by_role("button", name="Run scenario").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}$"))
    wait_seen(page, "running", "step-0")  # so its fragments stream in
    expect_finished(page, "failed")
    # Seen live, pending then failed: a step that fails at once may be sent in one write with its start.
    states = step_states(page)["step-1"]
    assert (states[0], states[-1]) == ("pending", "failed") and set(states) <= {"pending", "running", "failed"}
    expect(page.locator("#step-2")).to_have_attribute("data-status", "skipped")
    main = page.locator("main")
    expect(main).to_contain_text('<img src=x onerror="window.__pwned=1">')  # the tool's output, as text
    expect(page.locator("#step-1 .step-message")).to_contain_text("Refused <img src=x")
    assert main.locator("img, script, b, i, u").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert not any(urlpath.endswith("/x") for urlpath in (r.url for r in watch.requests))
    watch.assert_clean({live.url})


def test_pages_are_usable_on_a_phone_and_in_dark_mode(browser: Browser, live: StepServer) -> None:
    page, watch = watched_page(
        browser, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True, color_scheme="dark"
    )
    hostile = run_to_end(live.url, "hostile_v1", {"text": HOSTILE_TEXT * 3})["run_id"]  # long, unbroken text
    news = run_to_end(live.url, NEWS, {"url": NEWS_URL})["run_id"]
    blank = browser.new_page()
    for path in ["/", f"/scenarios/{NEWS}", "/scenarios/forms_v1", "/runs", "/tools", f"/runs/{hostile}",
                 f"/runs/{news}"]:
        page.goto(live.url + path)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, (path, overflow)
        # Dark as the phone asked, and the text readable on it (WCAG AA: 4.5:1).
        seen = read_picture(blank, page.screenshot())
        assert seen.luminance < 0.2, (path, seen)
        assert text_contrast(page) >= 4.5, path
    # The same page in light mode is light: the dark one followed the phone's setting.
    light, light_watch = watched_page(browser, viewport={"width": 390, "height": 844}, color_scheme="light")
    light.goto(f"{live.url}/runs/{news}")
    assert read_picture(blank, light.screenshot()).luminance > 0.6
    assert text_contrast(light) >= 4.5
    watch.assert_clean({live.url})
    light_watch.assert_clean({live.url})


def test_keyboard_reaches_the_form_and_runs_it(browser: Browser, live: StepServer) -> None:
    page, watch = watched_page(browser)
    page.goto(f"{live.url}/scenarios/{NEWS}")
    page.keyboard.press("Tab")
    expect(page.locator(":focus")).to_have_text("Skip to content")
    page.keyboard.press("Enter")
    for _ in range(20):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.name") == "in.url":
            break
    page.keyboard.press("Enter")  # submits the form
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}$"))
    expect_finished(page)
    assert origin_of(page.url) == live.url
    watch.assert_clean({live.url})


def test_api_docs_work_under_the_same_policy(browser: Browser, live: StepServer) -> None:
    page, watch = watched_page(browser)
    page.goto(live.url + "/docs")
    page.locator(".opblock-summary").first.click()
    expect(page.locator(".opblock-body").first).to_be_visible()
    watch.assert_clean({live.url})


def test_screenshots_for_the_readme(browser: Browser, live: StepServer, tmp_path: Path) -> None:
    """The scenario page and a finished run with its result open.

    Written to docs/screenshots/ (for the README) with STEPLINE_WRITE_SCREENSHOTS=1, else to a
    temporary folder, so that running the tests leaves the tree as it was.
    """
    folder = screenshot_folder(tmp_path)
    page, watch = watched_page(browser, viewport={"width": 1200, "height": 900}, color_scheme="light")
    page.goto(f"{live.url}/scenarios/{NEWS}")
    # What the first picture shows: the flow of four steps and the form, filled in with the example.
    expect(page.locator('li[id^="flow-"]')).to_have_count(4)
    expect(page.get_by_label("url")).to_have_value(NEWS_URL)
    blank = browser.new_page()
    assert_picture(blank, page, page.screenshot(path=folder / "scenario.png", full_page=True))

    page.get_by_role("button", name="Run scenario").click()
    expect_finished(page)
    expect_all_steps(page)
    sources = page.locator("#step-1 .json-block").last
    sources.locator("summary").first.click()
    chain = page.locator("#step-3 .j-list .j-node").first
    was_open = chain.evaluate("el => el.open")
    chain.locator("> summary").click()
    # What the second picture shows: a finished run, the sources found opened, a link of the chain toggled.
    assert sources.evaluate("el => el.open") is True
    assert chain.evaluate("el => el.open") is not was_open
    expect(page.locator("#run-status .badge")).to_have_text("✓ Succeeded")
    expect(page.locator("#step-3 .json-block").last).to_contain_text("found")
    assert_picture(blank, page, page.screenshot(path=folder / "run.png", full_page=True))

    # The third: a run waiting for a person's approval, its form open in its step and named at the top.
    waiting = start_run(live.url, "outlet_brief_approval_v2", {"domain": "daily.example.com"})["run_id"]
    page.goto(f"{live.url}/runs/{waiting}")
    expect(page.locator("#run-status .badge")).to_have_text("‖ Waiting for input", timeout=20_000)
    expect(page.get_by_role("button", name="Approve")).to_be_visible()
    assert_picture(blank, page, page.screenshot(path=folder / "run-waiting.png", full_page=True))
    watch.assert_clean({live.url})

