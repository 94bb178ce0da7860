"""The HTML pages, served in-process: what each shows, the forms, the HTML stream, safety and embedding."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port, wait_until
from inprocess import BASE_URL, InProcessApp, in_process
from runs import get_run, run_to_end, start_run, wait_finished
from sse import Frame, frames, parse_text
from starlette.datastructures import Headers
from ui_support import (
    HOSTILE_TEXT,
    attribute,
    behind_proxy,
    form_token,
    listed_run_ids,
    ui_settings,
)

from web.security import FormTokens, is_same_site_request, origin_allowed

NEWS = "news_source_discovery_v1"
NEWS_URL = "https://signal.example/culture/lighthouse-library-explainer"
PREFIX = "/portal/stepline"
PORTAL = "https://portal.example.com"
# Seconds each demo call takes in `slow_app`: a run stays live for as long as a test needs it to.
SLOW_DELAY = 5


@pytest.fixture(scope="module")
def ui_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessApp]:
    """The demo and the tests' own scenarios (hostile text, every kind of field), tools instant."""
    folder = tmp_path_factory.mktemp("ui")
    with in_process(folder, **ui_settings(folder)) as app:
        yield app


@pytest.fixture(scope="module")
def slow_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessApp]:
    """Demo calls that take SLOW_DELAY seconds: each test cancels the runs it started."""
    with in_process(tmp_path_factory.mktemp("slow"), demo_delay=SLOW_DELAY) as app:
        yield app


@pytest.fixture(scope="module")
def proxied_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessApp]:
    """Served as a reverse proxy that strips /portal/stepline would serve it, embeddable by the portal."""
    with behind_proxy(tmp_path_factory.mktemp("proxied"), PREFIX, frame_ancestors=f"'self' {PORTAL}") as app:
        yield app


def post_form(client: httpx.Client, path: str, data: dict[str, Any], **kwargs: Any) -> httpx.Response:
    headers = {"Sec-Fetch-Site": "same-origin", **kwargs.pop("headers", {})}
    return client.post(path, data=data, headers=headers, **kwargs)


def run_form(client: httpx.Client, scenario_id: str, fields: dict[str, Any]) -> httpx.Response:
    page = client.get(f"/scenarios/{scenario_id}")
    return post_form(client, f"/scenarios/{scenario_id}", {"_csrf": form_token(page.text), **fields})


def run_id_of(response: httpx.Response) -> str:
    assert response.status_code == 303, response.text
    return response.headers["location"].rsplit("/", 1)[-1].split("?")[0]


def wait_running(client: httpx.Client, run_id: str) -> dict[str, Any]:
    """The run's snapshot once its first step is running (and so will be for SLOW_DELAY seconds)."""

    def first_step_running() -> bool:
        steps = get_run(client, run_id)["steps"]
        return bool(steps) and steps[0]["status"] == "running"

    wait_until(first_step_running, 20, f"run {run_id} to start its first step")
    return get_run(client, run_id)


def cancel(client: httpx.Client, run_id: str) -> dict[str, Any]:
    response = client.post(f"/api/runs/{run_id}/cancel")
    assert response.status_code == 202, response.text
    return wait_finished(client, run_id)


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text, of a page."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag and all(a.get(k.rstrip("_")) == v for k, v in attrs.items())]

    def urls(self) -> list[str]:
        return [value for _, a in self.tags for key, value in a.items() if key in ("href", "src", "action",
                "sse-connect") and value]


def run_rows(html: str) -> list[str]:
    """The run ids the runs page lists, in its order."""
    return re.findall(r'href="/runs/([0-9a-f-]{36})"', html)


def stream_frames(client: httpx.Client, path: str, **kwargs: Any) -> list[Frame]:
    """Every frame of an HTML stream but the graph's nodes (tests/test_graph.py), read until the server ends
    it (when its run has ended)."""
    response = client.get(path, **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return [frame for frame in frames(parse_text(response.text)) if not frame.event.startswith("node-")]


# --- What each page shows ----------------------------------------------------------------------


def test_catalog_lists_each_scenario_with_its_steps_and_a_way_to_run_it(demo_app: InProcessApp) -> None:
    page = demo_app.get("/")
    assert page.status_code == 200
    assert "<title>Scenarios · Stepline</title>" in page.text
    assert "News Source Discovery V1" in page.text and "Outlet Profile V1" in page.text
    assert "4 steps" in page.text and "3 steps" in page.text
    assert 'href="/scenarios/news_source_discovery_v1#run"' in page.text


def test_scenario_page_draws_the_flow_and_a_prefilled_form(demo_app: InProcessApp) -> None:
    page = demo_app.get(f"/scenarios/{NEWS}")
    assert page.status_code == 200
    html = Elements(page.text)
    flow = [a["id"] for t, a in html.tags if t == "li" and (a.get("id") or "").startswith("flow-")]
    assert flow == ["flow-fetch_article", "flow-search_news_sources", "flow-pick_earliest", "flow-trace_citations"]
    assert "find_earliest_source" in page.text and "steps.search_news_sources.output.sources" in page.text
    assert 'href="#flow-fetch_article"' in page.text  # an input from an earlier step links to it
    (url_input,) = html.find("input", name="in.url")
    assert url_input["type"] == "url" and "required" in url_input
    assert url_input["value"] == NEWS_URL  # the schema's first example
    (form,) = html.find("form", method="post")
    assert form["action"] == f"/scenarios/{NEWS}"


def test_submitting_the_form_runs_the_scenario_and_redirects_to_the_run(demo_app: InProcessApp) -> None:
    response = run_form(demo_app.client, NEWS, {"in.url": NEWS_URL})
    run_id = run_id_of(response)
    assert response.headers["location"] == f"/runs/{run_id}"
    run = wait_finished(demo_app.client, run_id)
    assert run["status"] == "success" and run["input"] == {"url": NEWS_URL}


def test_invalid_input_is_shown_again_with_errors_beside_fields(ui_app: InProcessApp) -> None:
    before, rows_before = listed_run_ids(ui_app.client), run_rows(ui_app.get("/runs").text)
    response = run_form(
        ui_app.client, "forms_v1",
        {"in.title": "Not Lower", "in.count": "12", "in.color": '"red"', "in.extra": "{oops", "in.tags": "a\nb\nc\nd"},
    )
    assert response.status_code == 422
    html = Elements(response.text)
    assert html.find("input", name="in.title")[0]["value"] == "Not Lower"  # what was typed is kept
    assert html.find("input", name="in.count")[0]["value"] == "12"
    assert "{oops" in response.text and "a\nb\nc\nd" in response.text
    for field, message in [
        ("in.title", "does not match"),
        ("in.count", "12 is greater than the maximum of 10"),
        ("in.extra", "Not valid JSON"),
        ("in.tags", "is too long"),
    ]:
        error = re.search(rf'id="f-{re.escape(field)}-error">(.*?)</ul>', response.text, re.S)
        assert error and message in error.group(1), field
    assert 'aria-invalid="true"' in response.text and 'role="alert"' in response.text
    # Nothing ran: no run was added, to the API's list or to the runs page.
    assert listed_run_ids(ui_app.client) == before
    assert run_rows(ui_app.get("/runs").text) == rows_before


def test_run_page_of_a_finished_run_is_complete_and_has_no_stream(demo_app: InProcessApp) -> None:
    run = run_to_end(demo_app.client, NEWS, {"url": NEWS_URL})
    page = demo_app.get(f"/runs/{run['run_id']}")
    assert page.status_code == 200
    assert "sse-connect" not in page.text and "htmx-2.0.11.min.js" not in page.text
    html = Elements(page.text)
    steps = [a for t, a in html.tags if t == "article"]
    assert [a["id"] for a in steps] == ["step-0", "step-1", "step-2", "step-3"]
    assert {a["data-status"] for a in steps} == {"success"}
    assert html.find("header", id="run-status")[0]["data-status"] == "success"
    assert "Succeeded" in page.text and "Lighthouse" in page.text  # outputs are on the page
    assert "<title>News Source Discovery V1: success · Stepline</title>" in page.text


def test_live_run_page_streams_from_where_it_was_drawn(slow_app: InProcessApp) -> None:
    run_id = start_run(slow_app.client, NEWS, {"url": NEWS_URL})["run_id"]
    wait_running(slow_app.client, run_id)
    page = slow_app.get(f"/runs/{run_id}")
    html = Elements(page.text)
    (section,) = html.find("section", id="run")
    stream = section["sse-connect"] or ""
    seen = int(stream.rsplit("last_event_id=", 1)[1])
    assert stream.startswith(f"/runs/{run_id}/stream?") and seen >= 2
    assert section["sse-close"] == "run-finished" and section["hx-ext"] == "sse"
    slots = [a["sse-swap"] for t, a in html.tags if t == "li" and a.get("sse-swap")]
    assert slots == ["step-0", "step-1", "step-2", "step-3"]
    assert html.find("div", class_="run-status-slot")[0]["sse-swap"] == "run-status,run-finished"
    assert '<meta http-equiv="refresh" content="2">' in page.text  # inside <noscript>: no-JS users reload
    # The stream carries on from exactly there (read whole once the run has ended).
    cancel(slow_app.client, run_id)
    sent = stream_frames(slow_app.client, stream)
    assert sent[0].id == str(seen + 1)
    assert sent[-1].event == "run-finished" and 'data-status="cancelled"' in sent[-1].data


def test_failed_run_shows_the_message_and_the_steps_that_did_not_run(demo_app: InProcessApp) -> None:
    run = run_to_end(demo_app.client, "outlet_profile_v1", {"domain": "nowhere.example.com"})
    page = demo_app.get(f"/runs/{run['run_id']}").text
    statuses = re.findall(r'<article id="step-(\d)" class="[^"]*" data-status="(\w+)"', page)
    assert statuses == [("0", "failed"), ("1", "skipped"), ("2", "skipped")]
    assert "Unknown outlet: nowhere.example.com" in page and "Not run" in page


def test_runs_page_lists_recent_runs_newest_first(demo_app: InProcessApp) -> None:
    older = run_to_end(demo_app.client, "outlet_profile_v1", {"domain": "nowhere.example.com"})["run_id"]
    newer = run_to_end(demo_app.client, NEWS, {"url": NEWS_URL})["run_id"]
    page = demo_app.get("/runs").text
    rows = run_rows(page)
    assert rows[:2] == [newer, older]
    assert "Failed" in page and "Succeeded" in page


def test_runs_page_filters_by_scenario_and_status_without_javascript(demo_app: InProcessApp) -> None:
    failed = run_to_end(demo_app.client, "outlet_profile_v1", {"domain": "nowhere.example.com"})["run_id"]
    succeeded = run_to_end(demo_app.client, NEWS, {"url": NEWS_URL})["run_id"]
    page = demo_app.get("/runs", params={"scenario_id": "outlet_profile_v1", "status": "failed"})
    assert page.status_code == 200
    assert f"/runs/{failed}" in page.text and f"/runs/{succeeded}" not in page.text
    html = Elements(page.text)
    (form,) = html.find("form", class_="filters")
    assert form["method"] == "get" and form["action"] == "/runs"
    assert ("option", {"value": "failed", "selected": None}) in html.tags  # the filter shown stays chosen
    # The form submitted as it is ("any" left empty) lists everything.
    everything = demo_app.get("/runs", params={"scenario_id": "", "status": ""}).text
    assert f"/runs/{failed}" in everything and f"/runs/{succeeded}" in everything


def test_runs_page_refuses_an_unknown_status_or_cursor_with_a_page(demo_app: InProcessApp) -> None:
    bad_status = demo_app.get("/runs", params={"status": "exploded"})
    assert bad_status.status_code == 422 and "There is no run status" in bad_status.text
    bad_cursor = demo_app.get("/runs", params={"cursor": "not-a-cursor"})
    assert bad_cursor.status_code == 422 and "start again from the newest" in bad_cursor.text


def test_runs_page_pages_through_the_history(make_app: Any) -> None:
    app: InProcessApp = make_app()
    run_ids = [run_to_end(app.client, NEWS, {"url": NEWS_URL})["run_id"] for _ in range(52)]
    first = app.get("/runs", params={"scenario_id": NEWS}).text
    older = re.search(r'href="(/runs\?[^"]*cursor=[^"]+)"', first)
    assert older, "a link to older runs"
    second = app.get(older.group(1).replace("&amp;", "&")).text
    assert run_rows(first) + run_rows(second) == list(reversed(run_ids))  # newest first, each exactly once
    assert "Older runs" not in second and "Newest" in second


def test_cancel_button_stops_a_live_run(slow_app: InProcessApp) -> None:
    run_id = start_run(slow_app.client, NEWS, {"url": NEWS_URL})["run_id"]
    wait_running(slow_app.client, run_id)
    page = slow_app.get(f"/runs/{run_id}")
    (cancel_form,) = Elements(page.text).find("form", action=f"/runs/{run_id}/cancel")
    response = post_form(slow_app.client, cancel_form["action"] or "", {"_csrf": form_token(page.text)})
    assert response.status_code == 303 and response.headers["location"] == f"/runs/{run_id}"
    run = wait_finished(slow_app.client, run_id)
    assert run["status"] == "cancelled"
    assert [step["status"] for step in run["steps"]] == ["cancelled", "skipped", "skipped", "skipped"]
    after = slow_app.get(f"/runs/{run_id}").text
    assert f"/runs/{run_id}/cancel" not in after  # a finished run offers no Cancel


def test_cancel_without_a_valid_token_does_nothing(slow_app: InProcessApp) -> None:
    run_id = start_run(slow_app.client, NEWS, {"url": NEWS_URL})["run_id"]
    wait_running(slow_app.client, run_id)
    response = post_form(slow_app.client, f"/runs/{run_id}/cancel", {"_csrf": "forged"})
    assert response.status_code == 403
    # A cancel that went through would have ended the run before answering.
    run = get_run(slow_app.client, run_id)
    assert (run["status"], [step["status"] for step in run["steps"]]) == ("running", ["running"])
    assert cancel(slow_app.client, run_id)["status"] == "cancelled"


def test_tools_page_groups_tools_by_server_with_health(demo_app: InProcessApp) -> None:
    demo_app.wait_ready()
    page = demo_app.get("/tools")
    assert page.status_code == 200
    assert "demo" in page.text and "Connected" in page.text
    for tool in ("fetch_article", "search_news_sources", "find_earliest_source", "trace_citation_chain"):
        assert f'id="tool-demo-{tool}"' in page.text
    assert "Article url, e.g." in page.text  # parameter descriptions, readable
    assert "Input schema" in page.text


def test_tools_page_tells_which_server_is_down(make_app: Any, tmp_path: Path) -> None:
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"gone": {"type": "http", "url": f"http://127.0.0.1:{free_port()}/mcp"}}}))
    app: InProcessApp = make_app(mcp_config=config, connect_timeout=1)
    app.wait_ready()
    page = app.get("/tools").text
    assert "gone" in page and "Down" in page and "No tools known while the server is not connected" in page


def test_run_again_starts_a_new_run_with_the_same_input(demo_app: InProcessApp) -> None:
    first = run_to_end(demo_app.client, NEWS, {"url": NEWS_URL})["run_id"]
    page = demo_app.get(f"/runs/{first}")
    (again,) = Elements(page.text).find("form", action=f"/runs/{first}/again")
    response = post_form(demo_app.client, again["action"] or "", {"_csrf": form_token(page.text)})
    second = run_id_of(response)
    assert second != first
    assert wait_finished(demo_app.client, second)["input"] == {"url": NEWS_URL}


def test_edit_and_run_prefills_the_form_with_a_runs_input(demo_app: InProcessApp) -> None:
    other = "https://signal.example/science/millbrook-otters-water-quality"
    run_id = run_to_end(demo_app.client, NEWS, {"url": other})["run_id"]
    run_page = demo_app.get(f"/runs/{run_id}").text
    assert f"/scenarios/{NEWS}?from_run={run_id}#run" in run_page
    form = demo_app.get(f"/scenarios/{NEWS}", params={"from_run": run_id}).text
    assert Elements(form).find("input", name="in.url")[0]["value"] == other
    assert f"/runs/{run_id}" in form
    unknown = demo_app.get(f"/scenarios/{NEWS}", params={"from_run": "nope"}).text
    assert "was not found" in unknown and NEWS_URL in unknown


# --- The HTML stream ---------------------------------------------------------------------------


def test_html_stream_sends_one_fragment_per_event_keyed_by_step(demo_app: InProcessApp) -> None:
    run = run_to_end(demo_app.client, NEWS, {"url": NEWS_URL})
    sent = stream_frames(demo_app.client, f"/runs/{run['run_id']}/stream")
    assert [f.id for f in sent] == [str(i) for i in range(1, len(sent) + 1)]
    assert sent[0].event == "run-status" and sent[-1].event == "run-finished"
    step_frames = [f for f in sent if f.event.startswith("step-")]
    assert {f.event for f in step_frames} == {"step-0", "step-1", "step-2", "step-3"}
    for frame in step_frames:
        # One root element per step, whose id is the one its slot holds.
        assert frame.data.startswith(f'<article id="{frame.event}"'), frame.data[:80]
        assert frame.data.rstrip().endswith("</article>")
    assert 'data-status="success"' in sent[-1].data and run["status"] == "success"


def test_html_stream_resumes_after_the_last_event_seen(demo_app: InProcessApp) -> None:
    run_id = run_to_end(demo_app.client, NEWS, {"url": NEWS_URL})["run_id"]
    path = f"/runs/{run_id}/stream"
    whole = stream_frames(demo_app.client, path)
    assert len(whole) > 9
    resumed_by_header = stream_frames(demo_app.client, path, headers={"Last-Event-ID": "5"})
    assert [f.id for f in resumed_by_header] == [f.id for f in whole[5:]]
    assert [f.id for f in stream_frames(demo_app.client, path, params={"last_event_id": "7"})] == [
        f.id for f in whole[7:]
    ]
    # The header wins: it is what the browser sends when it reconnects by itself.
    resumed = stream_frames(demo_app.client, path, params={"last_event_id": "2"}, headers={"Last-Event-ID": "9"})
    assert [f.id for f in resumed] == [f.id for f in whole[9:]]
    # Asked after its end, a finished run's stream still ends with run-finished, so the page closes it.
    late = stream_frames(demo_app.client, path, params={"last_event_id": whole[-1].id})
    assert [(f.id, f.event) for f in late] == [(whole[-1].id, "run-finished")]
    bad = demo_app.get(path, params={"last_event_id": "soon"})
    assert bad.status_code == 422 and "text/html" in bad.headers["content-type"]


def test_steps_that_never_ran_are_sent_skipped_with_their_reason(demo_app: InProcessApp) -> None:
    run = run_to_end(demo_app.client, "outlet_profile_v1", {"domain": "nowhere.example.com"})
    sent = stream_frames(demo_app.client, f"/runs/{run['run_id']}/stream")
    last = sent[-1]
    assert last.event == "run-finished"
    assert '<header id="run-status"' in last.data and 'data-status="failed"' in last.data
    # Each has a skipped event, and so a fragment, of its own (runs recorded before that are swept out
    # of band by run-finished: tests/test_pages_workflow.py).
    skipped = {f.event: f.data for f in sent if 'data-status="skipped"' in f.data}
    assert list(skipped) == ["step-1", "step-2"]
    assert all("Not run: step &#39;lookup_outlet&#39; failed" in html for html in skipped.values())
    assert "hx-swap-oob" not in last.data


def test_html_stream_headers_let_a_proxy_pass_events_at_once(demo_app: InProcessApp) -> None:
    run_id = run_to_end(demo_app.client, NEWS, {"url": NEWS_URL})["run_id"]
    response = demo_app.get(f"/runs/{run_id}/stream", headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-cache" and response.headers["x-accel-buffering"] == "no"
    assert "content-encoding" not in response.headers


# --- Errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nothing-here", "/runs/no-such-run", "/scenarios/no-such-scenario"])
def test_unknown_pages_are_friendly_html(demo_app: InProcessApp, path: str) -> None:
    response = demo_app.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "Page not found" in response.text and 'href="/"' in response.text


@pytest.mark.parametrize("path", ["/api/runs/no-such-run", "/api/nothing-here", "/api/scenarios/nope"])
def test_errors_under_api_stay_json(demo_app: InProcessApp, path: str) -> None:
    response = demo_app.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert "detail" in response.json()


def test_wrong_method_on_a_page_is_html(demo_app: InProcessApp) -> None:
    response = demo_app.client.delete("/runs", headers={"Sec-Fetch-Site": "same-origin"})
    assert response.status_code == 405 and "text/html" in response.headers["content-type"]


# --- Safety ------------------------------------------------------------------------------------


def test_pages_send_a_strict_content_security_policy(demo_app: InProcessApp) -> None:
    headers = demo_app.get("/").headers
    policy = dict(part.strip().split(" ", 1) for part in headers["content-security-policy"].split(";"))
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["default-src"] == "'none'" and policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'self'" and policy["form-action"] == "'self'"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "same-origin"
    assert headers["x-frame-options"] == "SAMEORIGIN"


def test_no_page_has_inline_script_or_style(ui_app: InProcessApp) -> None:
    run = run_to_end(ui_app.client, "hostile_v1", {"text": HOSTILE_TEXT})
    for path in ["/", f"/scenarios/{NEWS}", "/scenarios/forms_v1", "/runs", f"/runs/{run['run_id']}", "/tools",
                 "/nothing"]:
        html = Elements(ui_app.get(path).text)
        for tag, attrs in html.tags:
            assert tag != "script" or attrs.get("src"), (path, attrs)
            assert tag != "style", path
            assert not any(name.startswith("on") or name == "style" for name in attrs), (path, tag, attrs)


def test_hostile_text_is_escaped_everywhere(ui_app: InProcessApp) -> None:
    run = run_to_end(ui_app.client, "hostile_v1", {"text": HOSTILE_TEXT, "fail": True})
    assert run["status"] == "failed"
    pages = [ui_app.get(path).text for path in (f"/runs/{run['run_id']}", "/scenarios/hostile_v1", "/", "/runs")]
    pages += [f.data for f in stream_frames(ui_app.client, f"/runs/{run['run_id']}/stream")]
    for html in pages:
        assert "<img" not in html and "<script>window" not in html and "<b>" not in html and "<i>key" not in html
    run_page = pages[0]
    assert "&lt;img src=x onerror=&#34;window.__pwned=1&#34;&gt;" in run_page  # shown, as text
    assert "Hostile &lt;script&gt;window.__pwned=3&lt;/script&gt; scenario" in run_page
    assert "Refused &lt;img" in run_page  # the tool's error message


def test_form_post_without_a_valid_token_runs_nothing_and_keeps_the_values(demo_app: InProcessApp) -> None:
    before = listed_run_ids(demo_app.client)
    for token in (None, "", "123.abc", FormTokens("another secret").issue()):
        data = {"in.url": "https://signal.example/x"} | ({"_csrf": token} if token is not None else {})
        response = post_form(demo_app.client, f"/scenarios/{NEWS}", data)
        assert response.status_code == 403
        assert "This form had expired" in response.text
        assert 'value="https://signal.example/x"' in response.text
        fresh = form_token(response.text)
    assert listed_run_ids(demo_app.client) == before
    # The page shown again carries a fresh token: submitting it works.
    retried = post_form(demo_app.client, f"/scenarios/{NEWS}", {"_csrf": fresh, "in.url": NEWS_URL})
    assert wait_finished(demo_app.client, run_id_of(retried))["status"] == "success"


def test_cross_site_form_posts_are_refused(demo_app: InProcessApp) -> None:
    page = demo_app.get(f"/scenarios/{NEWS}")
    data = {"_csrf": form_token(page.text), "in.url": NEWS_URL}
    path = f"/scenarios/{NEWS}"
    before = listed_run_ids(demo_app.client)
    refused = [
        {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "same-site", "Origin": "https://sibling.example"},
        {"Origin": "https://evil.example"},  # an older browser: no fetch metadata, but Origin
        {"Origin": "null"},
    ]
    for headers in refused:
        response = demo_app.post(path, data=data, headers=headers)
        assert response.status_code == 403, headers
        assert "another site" in response.text
    # The JSON API is a state change too: a cross-site page cannot start runs through it.
    api = demo_app.post("/api/runs", json={"scenario_id": NEWS, "input": {"url": NEWS_URL}},
                        headers={"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"})
    assert api.status_code == 403
    assert listed_run_ids(demo_app.client) == before
    # A client without browser headers (curl, scripts) and the page itself are let through.
    assert demo_app.post(path, data=data).status_code == 303
    assert demo_app.post(path, data=data, headers={"Origin": BASE_URL}).status_code == 303


def test_origin_rules() -> None:
    sources = ["'self'", "https://portal.example.com", "http://*.corp.example:8080", "intranet.example"]
    assert origin_allowed("https://portal.example.com", sources)
    assert origin_allowed("https://portal.example.com:443", sources)
    assert not origin_allowed("http://portal.example.com", sources)
    assert origin_allowed("http://a.corp.example:8080", sources)
    assert not origin_allowed("http://corp.example:8080", sources)
    assert origin_allowed("https://intranet.example", sources)
    assert not origin_allowed("null", sources)
    same = Headers({"sec-fetch-site": "same-origin"})
    assert is_same_site_request(same, [])
    assert is_same_site_request(Headers({"sec-fetch-site": "cross-site", "origin": PORTAL}), [PORTAL])


def test_form_tokens_expire_and_are_bound_to_the_secret() -> None:
    tokens = FormTokens("s3cret")
    token = tokens.issue(now=1_000_000)
    assert tokens.verify(token, now=1_000_000 + 3600)
    assert not tokens.verify(token, now=1_000_000 + 3 * 86400)
    assert not tokens.verify(token, now=1_000_000 - 3600)
    assert not FormTokens("other").verify(token, now=1_000_000)
    assert FormTokens(None).verify(FormTokens(None).issue()) is False  # random secrets differ


# --- Embedding ---------------------------------------------------------------------------------


def test_every_url_carries_the_proxy_prefix(proxied_app: InProcessApp) -> None:
    run_id = run_to_end(proxied_app.client, NEWS, {"url": NEWS_URL})["run_id"]
    for path in ["/", f"/scenarios/{NEWS}", "/runs", f"/runs/{run_id}", "/tools", "/nothing", "/docs"]:
        html = Elements(proxied_app.get(path).text)
        urls = [u for u in html.urls() if not u.startswith(("#", "http://", "https://"))]
        assert urls, path
        assert all(u.startswith(PREFIX + "/") for u in urls), (path, [u for u in urls if not u.startswith(PREFIX)])


def test_form_redirects_and_live_streams_carry_the_prefix(tmp_path: Path) -> None:
    with behind_proxy(tmp_path, PREFIX, demo_delay=SLOW_DELAY) as app:
        page = app.get(f"/scenarios/{NEWS}")
        response = post_form(app.client, f"/scenarios/{NEWS}", {"_csrf": form_token(page.text), "in.url": NEWS_URL})
        assert response.status_code == 303
        location = response.headers["location"]
        assert location.startswith(f"{PREFIX}/runs/")
        run_path = location.removeprefix(PREFIX)
        run_id = run_path.rsplit("/", 1)[-1]
        wait_running(app.client, run_id)
        run_page = app.get(run_path).text
        stream = attribute(run_page, "sse-connect")  # the run is live: its page streams
        assert stream.startswith(f"{PREFIX}{run_path}/stream?")
        cancel(app.client, run_id)
        frame = stream_frames(app.client, stream.removeprefix(PREFIX))[-1]
        assert f'href="{PREFIX}/api/runs/' in frame.data  # links inside streamed fragments too


def test_embed_view_drops_the_chrome_and_keeps_itself_in_links(demo_app: InProcessApp) -> None:
    full = demo_app.get("/").text
    embedded = demo_app.get("/", params={"embed": "1"}).text
    assert 'class="site-header"' in full and 'class="site-header"' not in embedded
    assert "site-footer" not in embedded
    assert f'href="/scenarios/{NEWS}?embed=1#run"' in embedded
    form_page = demo_app.get(f"/scenarios/{NEWS}", params={"embed": "1"}).text
    (form,) = Elements(form_page).find("form", method="post")
    assert form["action"] == f"/scenarios/{NEWS}?embed=1"
    response = post_form(demo_app.client, form["action"] or "", {"_csrf": form_token(form_page), "in.url": NEWS_URL})
    assert response.headers["location"].endswith("?embed=1")
    run_page = demo_app.get(response.headers["location"]).text
    assert "site-header" not in run_page
    assert "?embed=1" in attribute(run_page, "action")


def test_frame_ancestors_are_configurable_and_the_portal_may_post(proxied_app: InProcessApp) -> None:
    response = proxied_app.get("/")
    assert f"frame-ancestors 'self' {PORTAL}" in response.headers["content-security-policy"]
    assert "x-frame-options" not in response.headers  # it cannot express "self and the portal"
    page = proxied_app.get(f"/scenarios/{NEWS}")
    data = {"_csrf": form_token(page.text), "in.url": NEWS_URL}
    path = f"/scenarios/{NEWS}"
    portal = proxied_app.post(path, data=data, headers={"Sec-Fetch-Site": "cross-site", "Origin": PORTAL})
    assert portal.status_code == 303
    evil = proxied_app.post(path, data=data, headers={"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"})
    assert evil.status_code == 403


def test_server_errors_are_a_friendly_page_and_stay_json_under_api(tmp_path: Path, monkeypatch: Any) -> None:
    from starlette.testclient import TestClient

    from web import api, pages
    from web.app import create_app
    from web.settings import Settings

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(pages, "render", broken)
    monkeypatch.setattr(api, "ScenarioSummary", broken)
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"gone": {"type": "http", "url": "http://127.0.0.1:9/mcp"}}}))
    app = create_app(Settings(mcp_config=config, connect_timeout=0.5, data_dir=tmp_path / "data"))
    # The test client, unlike the in-process app's, can hand back a 500 instead of raising the bug.
    with TestClient(app, base_url=BASE_URL, raise_server_exceptions=False) as client:
        page = client.get("/")
        assert page.status_code == 500 and "text/html" in page.headers["content-type"]
        assert "Something went wrong" in page.text and "a bug" not in page.text
        api_error = client.get("/api/scenarios")
        assert api_error.status_code == 500 and api_error.json() == {"detail": "Internal server error"}

