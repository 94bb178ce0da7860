"""The scenario page: its run form with a Preview beside Run, and what a preview shows, served in-process."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
from inprocess import InProcessApp, in_process
from mcp_process import workflow_home
from runs import run_to_end
from ui_support import HOSTILE_TEXT, listed_run_ids, ui_settings

NEWS = "news_source_discovery_v1"
ORIGIN = "story_origin_check_v2"
OUTLET = "outlet_story_origins_v2"
LATER_REPORT = "https://signal.example/culture/lighthouse-library-explainer"
FIRST_REPORT = "https://notes.example.net/2024/03/05/lighthouse-cottage-reading-room"
# A workflow whose steps fail in every way a preview can tell, on the tests' workflow server.
FAILING = {
    "schema_version": "2",
    "scenario_id": "failing",
    "name": "Failing <b>steps</b>",
    "input_schema": {
        "type": "object",
        "properties": {"people": {"type": "array", "default": [{"name": "<i>Ann</i>"}, {}]}, "flag": {"default": 0}},
    },
    "steps": [
        {"name": "greet", "tool": "echo", "for_each": "{{ input.people }}", "input": {"value": "hi {{ item.name }}"}},
        {"name": "shout", "tool": "upper", "input": {"text": "{{ input.nope }}"}},
        {"name": "maybe", "tool": "echo", "when": "{{ input.flag }}", "input": {}},
    ],
}


class Tags(HTMLParser):
    """Every start tag of a page with its attributes."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())]


@pytest.fixture(scope="module")
def ui_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessApp]:
    """The demo and the tests' own scenarios (hostile text, every kind of field), tools instant."""
    folder = tmp_path_factory.mktemp("scenario-page")
    with in_process(folder, **ui_settings(folder)) as app:
        yield app


@pytest.fixture(scope="module")
def workflow_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessApp]:
    home = tmp_path_factory.mktemp("scenario-page-workflow")
    folder, config = workflow_home(home, [FAILING])
    with in_process(home, mcp_config=config, scenarios=folder) as app:
        app.wait_ready()
        yield app


def post_preview(client: httpx.Client, scenario_id: str, fields: dict[str, Any]) -> httpx.Response:
    # A preview changes nothing: it needs no form token, only a same-site post.
    return client.post(f"/scenarios/{scenario_id}/preview", data=fields, headers={"Sec-Fetch-Site": "same-origin"})


def preview_section(html: str) -> str:
    match = re.search(r'<section class="card preview-section" id="preview".*?</section>', html, re.S)
    assert match, "the page shows no preview"
    return match.group(0)


def preview_steps(html: str) -> dict[str, str]:
    """Each previewed step's card (its HTML), by step name."""
    cards = re.findall(
        r'<li class="preview-step (.*?)</li>\s*(?=<li class="preview-step|</ol>\s*</section>)',
        preview_section(html),
        re.S,
    )
    return {re.search(r'<a href="#flow-([^"]+)">', card).group(1): card for card in cards}  # type: ignore[union-attr]


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", "", html))).strip()


# --- The form ------------------------------------------------------------------------------------------


def test_the_form_offers_a_preview_beside_run_and_recent_runs_to_take_outputs_from(ui_app: InProcessApp) -> None:
    run = run_to_end(ui_app.client, ORIGIN, {"url": LATER_REPORT})

    page = ui_app.get(f"/scenarios/{ORIGIN}")

    assert page.status_code == 200
    tags = Tags(page.text)
    (form,) = tags.find("form", method="post")  # one form: Run and Preview send the same fields
    assert form["action"] == f"/scenarios/{ORIGIN}"
    (preview_button,) = [a for t, a in tags.tags if t == "button" and a.get("formaction")]
    assert preview_button["formaction"] == f"/scenarios/{ORIGIN}/preview#preview"
    (run_field,) = tags.find("input", name="outputs_from_run")
    assert run_field["value"] == "" and run_field["list"] == "recent-runs"
    assert run["run_id"] in [a["value"] for a in tags.find("option")]
    assert 'id="preview"' not in page.text  # nothing previewed yet


def test_editing_a_runs_input_offers_its_outputs_for_the_preview(ui_app: InProcessApp) -> None:
    run = run_to_end(ui_app.client, ORIGIN, {"url": LATER_REPORT})

    page = ui_app.get(f"/scenarios/{ORIGIN}", params={"from_run": run["run_id"]})

    (run_field,) = Tags(page.text).find("input", name="outputs_from_run")
    assert run_field["value"] == run["run_id"]


# --- What a preview shows ------------------------------------------------------------------------------


def test_a_preview_shows_each_steps_arguments_from_a_runs_outputs(ui_app: InProcessApp) -> None:
    run = run_to_end(ui_app.client, ORIGIN, {"url": LATER_REPORT})
    before = listed_run_ids(ui_app.client)

    page = post_preview(ui_app.client, ORIGIN, {"in.url": LATER_REPORT, "outputs_from_run": run["run_id"]})

    assert page.status_code == 200
    section = preview_section(page.text)
    assert "No tool was called." in text_of(section)
    assert f'href="/runs/{run["run_id"]}"' in section  # where the outputs come from
    steps = preview_steps(page.text)
    assert list(steps) == ["article", "related", "archive", "earliest", "trace", "first_outlet"]
    trace = text_of(steps["trace"])
    assert "Would run" in trace and "true" in trace
    assert LATER_REPORT in trace and FIRST_REPORT in trace  # from_url and to_url, resolved
    # The form is shown as it was sent.
    tags = Tags(page.text)
    assert tags.find("input", name="in.url")[0]["value"] == LATER_REPORT
    assert tags.find("input", name="outputs_from_run")[0]["value"] == run["run_id"]
    assert listed_run_ids(ui_app.client) == before  # nothing ran


def test_a_preview_without_a_run_says_what_each_step_waits_for(ui_app: InProcessApp) -> None:
    page = post_preview(ui_app.client, ORIGIN, {"in.url": FIRST_REPORT})

    assert page.status_code == 200
    steps = preview_steps(page.text)
    assert "Would run" in text_of(steps["article"]) and FIRST_REPORT in steps["article"]
    trace = text_of(steps["trace"])
    assert "Waits for outputs" in trace
    assert "not known yet" in trace
    assert "Needs steps.article and steps.earliest, which have no output yet, to decide its condition." in trace
    assert "take them from an earlier run" in text_of(preview_section(page.text))


def test_a_false_condition_and_for_each_items_are_shown(ui_app: InProcessApp) -> None:
    origin = run_to_end(ui_app.client, ORIGIN, {"url": FIRST_REPORT})
    page = post_preview(ui_app.client, ORIGIN, {"in.url": FIRST_REPORT, "outputs_from_run": origin["run_id"]})
    trace = text_of(preview_steps(page.text)["trace"])
    assert "Would be skipped" in trace and "false" in trace

    outlet = run_to_end(ui_app.client, OUTLET, {"domain": "daily.example.com"})
    page = post_preview(ui_app.client, OUTLET, {"in.domain": "daily.example.com", "outputs_from_run": outlet["run_id"]})
    related = text_of(preview_steps(page.text)["related"])
    assert "For each item of {{ steps.articles.output.articles }}: 3 items" in related
    assert "Item 0" in related and "Item 2" in related


def test_results_and_input_are_escaped_in_the_preview(ui_app: InProcessApp) -> None:
    run = run_to_end(ui_app.client, "hostile_v1", {"text": HOSTILE_TEXT})

    page = post_preview(ui_app.client, "hostile_v1", {"in.text": HOSTILE_TEXT, "outputs_from_run": run["run_id"]})

    assert page.status_code == 200
    assert "<img" not in page.text and "<script>window" not in page.text and "<i>key" not in page.text
    section = preview_section(page.text)
    assert "&lt;img src=x onerror=" in section  # the run's output, shown as text
    assert "&lt;i&gt;key&lt;/i&gt;" in section
    for tag, attrs in Tags(page.text).tags:
        assert tag not in ("script", "style") or attrs.get("src"), tag
        assert not any(name.startswith("on") or name == "style" for name in attrs), (tag, attrs)


def test_each_steps_error_is_shown_on_its_card(workflow_app: InProcessApp) -> None:
    page = post_preview(workflow_app.client, "failing", {})

    assert page.status_code == 200
    steps = preview_steps(page.text)
    greet = text_of(steps["greet"])
    assert "Would fail" in greet and "1 of 2 items would fail; item 1:" in greet
    assert "hi <i>Ann</i>" in greet and "&lt;i&gt;Ann&lt;/i&gt;" in steps["greet"]  # an item's value, escaped
    shout = text_of(steps["shout"])
    assert "Would fail" in shout and "required argument 'text' is missing: {{ input.nope }} is undefined" in shout
    maybe = text_of(steps["maybe"])
    assert "Would be skipped" in maybe and "Runs if {{ input.flag }}: false (0)" in maybe
    assert "<b>steps" not in page.text and "<i>Ann" not in page.text


# --- When there is no preview ----------------------------------------------------------------------------


def test_input_that_would_not_run_is_marked_and_nothing_is_previewed(ui_app: InProcessApp) -> None:
    page = post_preview(ui_app.client, "forms_v1", {"in.title": "Not Lower", "in.count": "12", "in.color": '"red"'})

    assert page.status_code == 422
    assert "Nothing was previewed." in page.text
    error = re.search(r'id="f-in\.count-error">(.*?)</ul>', page.text, re.S)
    assert error and "12 is greater than the maximum of 10" in error.group(1)
    assert Tags(page.text).find("input", name="in.title")[0]["value"] == "Not Lower"
    assert "fix them to see the preview" in text_of(preview_section(page.text))
    assert 'class="preview-steps"' not in page.text


@pytest.mark.parametrize("which", ["unknown", "another scenario's"])
def test_a_run_that_cannot_give_outputs_is_marked_beside_its_field(ui_app: InProcessApp, which: str) -> None:
    run_id = "no-such-run" if which == "unknown" else run_to_end(ui_app.client, NEWS, {"url": LATER_REPORT})["run_id"]

    page = post_preview(ui_app.client, ORIGIN, {"in.url": LATER_REPORT, "outputs_from_run": run_id})

    assert page.status_code == 422
    error = re.search(r'id="preview-run-error">(.*?)</ul>', page.text, re.S)
    assert error
    expected = (
        f"Unknown run_id: {run_id}."
        if which == "unknown"
        else f"Run {run_id} is a run of scenario '{NEWS}', not of '{ORIGIN}'"
    )
    assert expected in unescape(error.group(1))
    assert Tags(page.text).find("input", name="outputs_from_run")[0]["value"] == run_id
    assert 'class="preview-steps"' not in page.text


def test_an_unknown_scenario_is_a_404_page(ui_app: InProcessApp) -> None:
    page = post_preview(ui_app.client, "nowhere_v1", {})
    assert page.status_code == 404 and "There is no scenario" in unescape(page.text)
    assert page.headers["content-type"].startswith("text/html")
