"""Stepline behind a portal that signs its users in: nginx `auth_request` to the portal's sign-in service
(tests/auth_service.py), Stepline trusting the user and groups nginx forwards, Chromium with JavaScript
on and off.

nginx reaches Stepline from 127.0.0.2, the only address Stepline trusts the identity headers from, so
that a request straight to Stepline from anywhere else (127.0.0.1 here) is seen carrying them and refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from auth_service import COOKIE, USERS, AuthService, auth_service
from browser_support import (
    CHROMIUM,
    NGINX,
    SIGNED_IN_NGINX_CONF,
    Nginx,
    Watcher,
    start_nginx,
    watched_page,
)
from conftest import StepServer, free_port, start_server
from playwright.sync_api import Browser, Page, expect
from runs import wait_finished

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and NGINX.exists()), reason="needs Debian's Chromium and nginx (make browser)"
)

NEWS = "news_source_discovery_v1"
NEWS_URL = "https://signal.example/culture/lighthouse-library-explainer"
PREFIX = "/portal/stepline"
PROXY_ADDRESS = "127.0.0.2"
# Stepline's role for each of the portal's groups (its --role-map); the portal's `contractors` get none.
GROUP_ROLES = {"ops": "operator", "viewers": "viewer"}
# Seconds each demo tool call takes: a run of four steps is seen running, and is still quick.
DEMO_DELAY = "0.5"
STEPS = [f"step-{i}" for i in range(4)]
# Chromium logs each page answered with an error status as a console error.
REFUSED_PAGE = r"status of 40[13]"
# nginx's own error page names no icon, so Chromium asks the portal for /favicon.ico, which it does not have.
NO_FAVICON = r"status of 404"


@dataclass
class Portal:
    nginx: Nginx
    stepline: StepServer
    sign_in: AuthService

    @property
    def url(self) -> str:
        return self.nginx.url

    def client(self, user: str) -> httpx.Client:
        """An API caller going through the portal, signed in as `user`."""
        return httpx.Client(base_url=self.url, cookies={COOKIE: user}, timeout=10)


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    folder = tmp_path_factory.mktemp("portal")
    port, portal_port, app_port = free_port(), free_port(), free_port()
    with auth_service(landing=PREFIX + "/") as sign_in:
        stepline = start_server(
            folder,
            "--host", "127.0.0.1",
            "--root-path", PREFIX,
            "--frame-ancestors", f"'self' http://127.0.0.1:{portal_port}",
            "--auth-header", "X-Forwarded-User",
            "--groups-header", "X-Forwarded-Groups",
            "--trusted-proxies", PROXY_ADDRESS,
            "--role-map", ",".join(f"{group}={role}" for group, role in GROUP_ROLES.items()),
            env={"STEPLINE_DEMO_DELAY": DEMO_DELAY},
            port=app_port,
        )
        try:
            nginx = start_nginx(
                folder,
                app_port,
                PREFIX,
                port=port,
                portal_port=portal_port,
                template=SIGNED_IN_NGINX_CONF,
                auth_port=sign_in.port,
                proxy_address=PROXY_ADDRESS,
            )
            yield Portal(nginx, stepline, sign_in)
            nginx.stop()
        finally:
            stepline.stop()


def signed_in(browser: Browser, portal: Portal, user: str, **options: object) -> tuple[Page, Watcher]:
    """A fresh browser that signed in at the portal as `user` and landed on Stepline's home."""
    page, watch = watched_page(browser, **options)
    page.goto(f"{portal.nginx.origin}/portal/sign-in?as={user}")
    assert page.url == portal.url + "/"
    expect(page).to_have_title("Scenarios · Stepline")
    role = GROUP_ROLES[USERS[user][0]]
    expect(page.locator("header")).to_contain_text(f"Signed in as {user} ({role})")
    return page, watch


def start_news_run(portal: Portal, user: str) -> str:
    with portal.client(user) as api:
        response = api.post("/api/runs", json={"scenario_id": NEWS, "input": {"url": NEWS_URL}})
    assert response.status_code == 202, response.text
    return response.json()["run_id"]


def step_states(page: Page) -> dict[str, list[str]]:
    return page.evaluate("window.__states")


def expect_finished(page: Page, status: str = "success") -> None:
    expect(page.locator("#run-status")).to_have_attribute("data-status", status, timeout=30_000)


def expect_all_steps(page: Page, status: str = "success") -> None:
    ids = page.locator('article[id^="step-"]').evaluate_all("els => els.map(e => e.id + ':' + e.dataset.status)")
    assert ids == [f"{step}:{status}" for step in STEPS]


def assert_watched_live(page: Page) -> None:
    """Every step the page saw waiting went running, then success, in place; the last one always did."""
    states = step_states(page)
    for step in STEPS:
        seen = states[step]
        assert seen[-1] == "success" and "".join(seen) in "pendingrunningsuccess", states
        if seen[0] == "pending":
            assert seen == ["pending", "running", "success"], states
    assert states[STEPS[-1]][0] == "pending", states


def expect_no_run_controls(page: Page) -> None:
    """Nothing a viewer may not use: no run form's Run button, no Run again, Edit input and run or Cancel run."""
    for name in ("Run scenario", "Run again", "Cancel run"):
        expect(page.get_by_role("button", name=name)).to_have_count(0)
    expect(page.get_by_role("link", name="Edit input and run")).to_have_count(0)


def test_an_operator_runs_a_scenario_and_watches_it_live(browser: Browser, portal: Portal) -> None:
    page, watch = signed_in(browser, portal, "olga")
    page.get_by_role("link", name="Run News Source Discovery V1").click()
    expect(page.get_by_label("url")).to_have_value(NEWS_URL)
    page.get_by_role("button", name="Run scenario").click()
    page.wait_for_url(re.compile(rf"{re.escape(portal.url)}/runs/[0-9a-f-]{{36}}$"))
    page.evaluate("window.__stay = true")
    expect(page.get_by_role("button", name="Cancel run")).to_be_visible()  # the operator may cancel it
    expect(page.locator("#run-status")).to_contain_text("Started by olga (portal)")
    expect_finished(page)
    expect_all_steps(page)
    assert_watched_live(page)
    assert page.evaluate("window.__stay") is True  # streamed in through nginx, never reloaded
    streams = watch.stream_requests()
    assert streams and all(r.url.startswith(portal.url + "/runs/") for r in streams)
    expect(page.get_by_role("button", name="Run again")).to_be_visible()  # kept through the stream's swaps
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    watch.assert_clean({portal.nginx.origin})


def test_an_operator_without_javascript_runs_and_reruns(browser: Browser, portal: Portal) -> None:
    page, watch = signed_in(browser, portal, "olga", java_script_enabled=False)
    page.get_by_role("link", name="Run News Source Discovery V1").click()
    page.get_by_role("button", name="Run scenario").click()
    page.wait_for_url(re.compile(rf"{re.escape(portal.url)}/runs/[0-9a-f-]{{36}}$"))
    first = page.url
    expect_finished(page)  # the page reloads itself, through nginx, until the run is over
    expect_all_steps(page)
    page.get_by_role("button", name="Run again").click()  # a form POST through the portal
    page.wait_for_url(re.compile(rf"{re.escape(portal.url)}/runs/[0-9a-f-]{{36}}$"))
    assert page.url != first
    expect_finished(page)
    assert not watch.stream_requests()
    watch.assert_clean({portal.nginx.origin})


def test_a_viewer_watches_an_operators_run_live_with_no_controls(browser: Browser, portal: Portal) -> None:
    page, watch = signed_in(browser, portal, "vera")
    run_id = start_news_run(portal, "olga")
    page.goto(f"{portal.url}/runs/{run_id}")
    expect(page.locator("#run-status")).to_have_attribute("data-status", "running")
    expect(page.locator("#run-status")).to_contain_text("Started by olga (portal)")
    expect_no_run_controls(page)  # not even Cancel while it runs
    expect_finished(page)
    expect_all_steps(page)
    assert_watched_live(page)
    assert watch.stream_requests(), "the viewer's page streamed nothing"
    expect_no_run_controls(page)  # nor Run again once it is over
    watch.assert_clean({portal.nginx.origin})


@pytest.mark.parametrize("javascript", [True, False], ids=["javascript", "no-javascript"])
def test_a_viewer_sees_the_scenario_and_runs_but_cannot_run(browser: Browser, portal: Portal, javascript: bool) -> None:
    run_id = start_news_run(portal, "olga")
    with portal.client("vera") as api:
        wait_finished(api, run_id)
    page, watch = signed_in(browser, portal, "vera", java_script_enabled=javascript)
    page.goto(f"{portal.url}/scenarios/{NEWS}")
    expect(page.locator("h1")).to_have_text("News Source Discovery V1")
    expect_no_run_controls(page)
    expect(page.get_by_role("note")).to_contain_text("You may preview what each step would receive, but not run")
    expect(page.get_by_role("button", name="Preview")).to_be_visible()
    page.goto(f"{portal.url}/runs")
    expect(page.locator(f'a[href$="/runs/{run_id}"]').first).to_be_visible()
    page.goto(f"{portal.url}/runs/{run_id}")
    expect_finished(page)
    expect_all_steps(page)
    expect_no_run_controls(page)
    # What the page does not offer is refused anyway, as a page for the browser and JSON for the API.
    refused = page.request.post(f"{portal.url}/runs/{run_id}/again", headers={"Accept": "text/html"})
    assert refused.status == 403 and "needs the operator role" in refused.text(), refused.text()
    api = page.request.post(f"{portal.url}/api/runs", data={"scenario_id": NEWS, "input": {"url": NEWS_URL}})
    assert api.status == 403
    assert api.json()["detail"] == "Refused: this needs the operator role; yours is viewer"
    watch.assert_clean({portal.nginx.origin})


def test_identity_headers_a_client_sends_are_replaced_by_the_portals(browser: Browser, portal: Portal) -> None:
    forged = {"X-Forwarded-User": "olga", "X-Forwarded-Groups": "ops,admins"}
    page, watch = signed_in(browser, portal, "vera", extra_http_headers=forged)
    page.goto(f"{portal.url}/scenarios/{NEWS}")
    expect_no_run_controls(page)  # still the viewer the portal signed in
    api = page.request.post(f"{portal.url}/api/runs", data={"scenario_id": NEWS, "input": {"url": NEWS_URL}})
    assert api.status == 403
    assert api.json()["detail"] == "Refused: this needs the operator role; yours is viewer"
    watch.assert_clean({portal.nginx.origin})


@pytest.mark.parametrize("javascript", [True, False], ids=["javascript", "no-javascript"])
def test_a_visitor_not_signed_in_gets_the_portals_401(browser: Browser, portal: Portal, javascript: bool) -> None:
    run_id = start_news_run(portal, "olga")
    forged = {"X-Forwarded-User": "olga", "X-Forwarded-Groups": "ops"}
    page, watch = watched_page(browser, java_script_enabled=javascript, extra_http_headers=forged)
    checks = len(portal.sign_in.checks)
    for path in ("/", f"/scenarios/{NEWS}", f"/runs/{run_id}", f"/runs/{run_id}/stream", "/api/scenarios"):
        response = page.goto(portal.url + path)
        assert response is not None and response.status == 401, path
        expect(page.locator("body")).to_contain_text("401 Authorization Required")  # nginx's page, not Stepline's
    posted = page.request.post(f"{portal.url}/api/runs", data={"scenario_id": NEWS, "input": {"url": NEWS_URL}})
    assert posted.status == 401
    # Each was asked of the sign-in service, which found no one, whatever the headers said.
    assert portal.sign_in.checks[checks:] == [None] * 6
    watch.assert_clean({portal.nginx.origin}, allowed_errors=(REFUSED_PAGE, NO_FAVICON))


def test_a_portal_user_in_no_mapped_group_is_refused_by_stepline(browser: Browser, portal: Portal) -> None:
    page, watch = watched_page(browser)
    response = page.goto(f"{portal.nginx.origin}/portal/sign-in?as=mallory")
    assert response is not None and response.status == 403
    expect(page.locator("main")).to_contain_text("Refused: your account has no role in Stepline")
    watch.assert_clean({portal.nginx.origin}, allowed_errors=(REFUSED_PAGE,))


def test_the_identity_header_straight_to_stepline_is_refused(portal: Portal) -> None:
    """Only nginx's address is trusted: the same headers from another address are refused, not believed."""
    forged = {"X-Forwarded-User": "olga", "X-Forwarded-Groups": "ops"}
    with httpx.Client(base_url=portal.stepline.url, headers=forged, timeout=10) as direct:
        posted = direct.post("/api/runs", json={"scenario_id": NEWS, "input": {"url": NEWS_URL}})
        page = direct.get("/", headers={"Accept": "text/html"})
    assert posted.status_code == 403
    assert posted.json()["detail"] == "Refused: the identity header is accepted only from the configured proxies"
    assert page.status_code == 403 and "accepted only from the configured proxies" in page.text
    assert "Refused" in portal.stepline.log() and "not a trusted proxy" in portal.stepline.log()


def test_around_the_portal_with_no_identity_is_nobody(portal: Portal) -> None:
    """With the portal's header configured, a request that names nobody is not the loopback's anonymous admin."""
    with httpx.Client(base_url=portal.stepline.url, timeout=10) as direct:
        posted = direct.post("/api/runs", json={"scenario_id": NEWS, "input": {"url": NEWS_URL}})
        runs = direct.get("/api/runs")
    assert posted.status_code == runs.status_code == 401
    assert posted.headers["WWW-Authenticate"] == 'Bearer realm="stepline"'
    assert posted.json()["detail"].startswith("Sign-in required")


def test_sessions_in_the_portal_iframe_run_scenarios(browser: Browser, portal: Portal) -> None:
    """The portal on another origin of the same site embeds Stepline: the sign-in cookie and the form token carry
    a run started inside the iframe."""
    page, watch = signed_in(browser, portal, "olga")
    page.goto(portal.nginx.portal + "/")
    frame = page.frame_locator("iframe")
    frame.get_by_role("link", name="Run News Source Discovery V1").click()
    frame.get_by_role("button", name="Run scenario").click()
    expect(frame.locator("#run-status")).to_have_attribute("data-status", "success", timeout=30_000)
    inner = page.frames[1]
    assert re.search(rf"{PREFIX}/runs/[0-9a-f-]{{36}}\?embed=1$", inner.url), inner.url
    assert all(seen[-1] == "success" for seen in inner.evaluate("window.__states").values())
    watch.assert_clean({portal.nginx.portal, portal.nginx.origin})
