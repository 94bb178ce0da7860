"""The pages, for each role and each scenario's access lists: what is listed, what is 404, which forms and
buttons are shown, and the 403 page for what a user may see but not do.

The app listens on 0.0.0.0 behind the portal's proxy (this machine), which names the user and their groups on
every request: `readers=viewer,ops=operator,admins=admin`. Scenarios (the shipped ones, copied):
- news: no access lists (every role as it allows);
- outlet: seen by readers and ops, run by the `release` group only;
- origin: seen by `auditors` only (and admins, who may do anything).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import wait_until
from inprocess import InProcessApp, in_process
from runs import TERMINAL
from sse import frames, parse_text
from ui_support import HOSTILE_TEXT, form_token

from web.resources import SCENARIOS

NEWS = "news_source_discovery_v1"
OUTLET = "outlet_profile_v1"
ORIGIN = "story_origin_check_v2"
INPUTS = {
    NEWS: {"url": "https://signal.example/culture/lighthouse-library-explainer"},
    OUTLET: {"domain": "signal.example"},
    ORIGIN: {"url": "https://signal.example/culture/lighthouse-library-explainer"},
}
ACCESS = {OUTLET: {"view": ["readers", "ops"], "run": ["release"]}, ORIGIN: {"view": ["auditors"]}}
BEHIND_THE_PORTAL = {
    "auth_header": "X-Forwarded-User",
    "groups_header": "X-Forwarded-Groups",
    "trusted_proxies": "127.0.0.1",
    "role_map": "readers=viewer,ops=operator,admins=admin",
    "host": "0.0.0.0",
    "allowed_hosts": "*",
}
VIEWER = {"X-Forwarded-User": "rita", "X-Forwarded-Groups": "readers"}
AUDITOR = {"X-Forwarded-User": "aude", "X-Forwarded-Groups": "readers,auditors"}
OPERATOR = {"X-Forwarded-User": "oscar", "X-Forwarded-Groups": "ops"}
RELEASER = {"X-Forwarded-User": "rel", "X-Forwarded-Groups": "ops, release"}
ADMIN = {"X-Forwarded-User": "ada", "X-Forwarded-Groups": "admins"}
# A form posted from the page itself, as a browser sends it.
SAME_SITE = {"Sec-Fetch-Site": "same-origin"}
# Seconds each demo call takes in the live-run test: the run is still going while its pages are read.
SLOW_DELAY = 5


def scenario_folder(home: Path) -> Path:
    """The shipped scenarios, with the access lists of ACCESS."""
    folder = home / "scenarios"
    folder.mkdir()
    for path in SCENARIOS.glob("*.json"):
        scenario = json.loads(path.read_text(encoding="utf-8"))
        if scenario["scenario_id"] in ACCESS:
            scenario["access"] = ACCESS[scenario["scenario_id"]]
        (folder / path.name).write_text(json.dumps(scenario), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessApp]:
    home = tmp_path_factory.mktemp("access-pages")
    with in_process(home, scenarios=scenario_folder(home), **BEHIND_THE_PORTAL) as app:
        yield app


@pytest.fixture(scope="module")
def finished_runs(portal: InProcessApp) -> dict[str, str]:
    """A finished run of each scenario, started by the admin: {scenario_id: run_id}."""
    return {scenario_id: run_to_end(portal, scenario_id, ADMIN) for scenario_id in INPUTS}


def start(app: InProcessApp, scenario_id: str, headers: dict[str, str]) -> str:
    response = app.post("/api/runs", json={"scenario_id": scenario_id, "input": INPUTS[scenario_id]}, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()["run_id"]


def status_of(app: InProcessApp, run_id: str) -> str:
    return app.get(f"/api/runs/{run_id}", headers=ADMIN).json()["status"]


def run_to_end(app: InProcessApp, scenario_id: str, headers: dict[str, str]) -> str:
    run_id = start(app, scenario_id, headers)
    wait_until(lambda: status_of(app, run_id) in TERMINAL, 30, f"run {run_id} to end")
    return run_id


def all_run_ids(app: InProcessApp) -> set[str]:
    response = app.get("/api/runs", params={"limit": 200}, headers=ADMIN)
    assert response.status_code == 200, response.text
    return {run["run_id"] for run in response.json()["runs"]}


def page(app: InProcessApp, path: str, headers: dict[str, str], status: int = 200, **kwargs: Any) -> str:
    response = app.get(path, headers=headers, **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    return response.text


def text_of(html: str) -> str:
    """What a reader sees: the page's text without its tags, spaces collapsed."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def buttons(html: str) -> list[str]:
    return [text_of(label) for label in re.findall(r"<button[^>]*>(.*?)</button>", html, re.S)]


def links(html: str) -> list[str]:
    return [text_of(label) for label in re.findall(r"<a [^>]*>(.*?)</a>", html, re.S)]


def catalog_cards(html: str) -> dict[str, str]:
    """{scenario_id: the card's action}, for each card of the catalog."""
    cards = re.findall(r'<li class="card scenario-card">(.*?)</li>\s*(?=<li class="card|</ul>)', html, re.S)
    shown = {}
    for card in cards:
        (scenario_id,) = re.findall(r"<code>([\w.-]+)</code>", card)[:1]
        (action,) = re.findall(r'<p class="card-actions"><a [^>]*>(.*?)</a>', card, re.S)
        shown[scenario_id] = text_of(re.sub(r'<span class="visually-hidden">.*?</span>', "", action))
    return shown


def post_form(
    app: InProcessApp, path: str, headers: dict[str, str], data: dict[str, str] | None = None
) -> httpx.Response:
    return app.post(path, data=data or {}, headers={**SAME_SITE, **headers, "Accept": "text/html"})


# --- The catalog -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        (VIEWER, {NEWS: "View →", OUTLET: "View →"}),
        (AUDITOR, {NEWS: "View →", OUTLET: "View →", ORIGIN: "View →"}),
        (OPERATOR, {NEWS: "Run →", OUTLET: "View →"}),
        (RELEASER, {NEWS: "Run →", OUTLET: "Run →"}),
        (ADMIN, {NEWS: "Run →", OUTLET: "Run →", ORIGIN: "Run →"}),
    ],
    ids=["viewer", "viewer in the view list", "operator", "operator in the run list", "admin"],
)
def test_the_catalog_lists_what_each_user_may_see_offering_to_run_only_what_they_may_run(
    portal: InProcessApp, who: dict[str, str], expected: dict[str, str]
) -> None:
    cards = catalog_cards(page(portal, "/", who))

    assert {scenario_id: cards[scenario_id] for scenario_id in INPUTS if scenario_id in cards} == expected
    if ORIGIN not in expected:
        assert ORIGIN not in page(portal, "/", who)  # not even its name


def test_files_that_did_not_load_are_told_to_admins_only(make_app: Callable[..., InProcessApp], tmp_path: Path) -> None:
    folder = scenario_folder(tmp_path)
    (folder / "secret_plan_v1.json").write_text('{"schema_version": "1", "scenario_id": ', encoding="utf-8")
    app = make_app(scenarios=folder, **BEHIND_THE_PORTAL)

    assert "secret_plan_v1.json" in text_of(page(app, "/", ADMIN))
    for who in (VIEWER, OPERATOR):
        html = page(app, "/", who)
        assert "could not be loaded" not in html and "secret_plan" not in html


# --- A scenario's page -------------------------------------------------------------------------


@pytest.mark.parametrize("who", [VIEWER, OPERATOR, RELEASER], ids=["viewer", "operator", "operator in run list"])
def test_a_scenario_a_user_may_not_see_is_the_same_404_page_as_one_that_does_not_exist(
    portal: InProcessApp, who: dict[str, str]
) -> None:
    hidden = page(portal, f"/scenarios/{ORIGIN}", who, status=404)
    missing = page(portal, "/scenarios/no_such_scenario", who, status=404)

    assert f"There is no scenario '{ORIGIN}'." in text_of(hidden)
    assert text_of(hidden).replace(ORIGIN, "X") == text_of(missing).replace("no_such_scenario", "X")
    assert "Story Origin Check" not in hidden


@pytest.mark.parametrize(
    ("who", "scenario_id"),
    [(VIEWER, NEWS), (VIEWER, OUTLET), (OPERATOR, OUTLET)],
    ids=["viewer", "viewer, listed to view", "operator, not in the run list"],
)
def test_a_user_who_may_not_run_a_scenario_gets_the_preview_but_no_run_button(
    portal: InProcessApp, who: dict[str, str], scenario_id: str
) -> None:
    html = page(portal, f"/scenarios/{scenario_id}", who)

    assert buttons(html) == ["Preview"]
    assert "Preview it" in text_of(html)
    assert "You may preview what each step would receive, but not run this scenario." in text_of(html)
    # Enter in a field previews too.
    assert re.search(rf'<form method="post" action="/scenarios/{scenario_id}/preview#preview"', html)


@pytest.mark.parametrize(("who", "scenario_id"), [(OPERATOR, NEWS), (RELEASER, OUTLET), (ADMIN, ORIGIN)])
def test_a_user_who_may_run_a_scenario_gets_the_run_form(
    portal: InProcessApp, who: dict[str, str], scenario_id: str
) -> None:
    html = page(portal, f"/scenarios/{scenario_id}", who)

    assert buttons(html) == ["Run scenario", "Preview"]
    assert "Run it" in text_of(html) and "but not run this scenario" not in text_of(html)


def test_a_viewer_previews_a_scenario_with_the_form(portal: InProcessApp) -> None:
    form = page(portal, f"/scenarios/{NEWS}", VIEWER)

    response = post_form(
        portal, f"/scenarios/{NEWS}/preview", VIEWER, {"_csrf": form_token(form), "in.url": INPUTS[NEWS]["url"]}
    )

    assert response.status_code == 200, response.text
    assert 'class="preview-steps"' in response.text
    assert buttons(response.text) == ["Preview"]


def test_a_scenario_a_user_may_not_see_cannot_be_previewed(portal: InProcessApp) -> None:
    response = post_form(portal, f"/scenarios/{ORIGIN}/preview", VIEWER, {"in.url": INPUTS[ORIGIN]["url"]})

    assert response.status_code == 404
    assert f"There is no scenario '{ORIGIN}'." in text_of(response.text)


@pytest.mark.parametrize(
    ("who", "scenario_id", "status", "message"),
    [
        (VIEWER, NEWS, 403, "Refused: this needs the operator role; yours is viewer"),
        (OPERATOR, OUTLET, 403, f"Refused: you may not run scenario '{OUTLET}'"),
        (OPERATOR, ORIGIN, 404, f"There is no scenario '{ORIGIN}'."),
    ],
    ids=["viewer", "operator not in the run list", "operator who may not see it"],
)
def test_posting_the_run_form_without_the_right_answers_a_page_and_starts_nothing(
    portal: InProcessApp, who: dict[str, str], scenario_id: str, status: int, message: str
) -> None:
    token = form_token(page(portal, f"/scenarios/{NEWS}", ADMIN))
    before = all_run_ids(portal)

    response = post_form(portal, f"/scenarios/{scenario_id}", who, {"_csrf": token, **prefixed(INPUTS[scenario_id])})

    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    assert message in text_of(response.text)
    assert all_run_ids(portal) == before


def prefixed(run_input: dict[str, str]) -> dict[str, str]:
    """The run form's controls for `run_input` (the input's fields are named `in.…`)."""
    return {f"in.{key}": value for key, value in run_input.items()}


def test_a_user_in_the_run_list_runs_the_scenario_from_its_page(portal: InProcessApp) -> None:
    form = page(portal, f"/scenarios/{OUTLET}", RELEASER)

    response = post_form(
        portal, f"/scenarios/{OUTLET}", RELEASER, {"_csrf": form_token(form), **prefixed(INPUTS[OUTLET])}
    )

    assert response.status_code == 303, response.text
    run_id = response.headers["location"].rsplit("/", 1)[-1]
    assert portal.get(f"/api/runs/{run_id}", headers=RELEASER).json()["scenario_id"] == OUTLET


def test_the_portals_iframe_runs_a_scenario_with_the_form_token_and_no_cookie(portal: InProcessApp) -> None:
    form = portal.get(f"/scenarios/{NEWS}", params={"embed": "1"}, headers=OPERATOR)
    assert form.status_code == 200 and buttons(form.text) == ["Run scenario", "Preview"]

    response = post_form(
        portal, f"/scenarios/{NEWS}?embed=1", OPERATOR, {"_csrf": form_token(form.text), **prefixed(INPUTS[NEWS])}
    )

    assert response.status_code == 303, response.text
    assert response.headers["location"].endswith("?embed=1")
    assert "set-cookie" not in form.headers and "set-cookie" not in response.headers
    viewer = portal.get(f"/scenarios/{NEWS}", params={"embed": "1"}, headers=VIEWER)
    assert buttons(viewer.text) == ["Preview"]


# --- A run's page ------------------------------------------------------------------------------


RUN_CONTROLS = ["Run again", "Edit input and run"]


@pytest.mark.parametrize(
    ("who", "scenario_id", "controls"),
    [
        (VIEWER, NEWS, []),
        (VIEWER, OUTLET, []),
        (OPERATOR, OUTLET, []),
        (OPERATOR, NEWS, RUN_CONTROLS),
        (RELEASER, OUTLET, RUN_CONTROLS),
        (ADMIN, ORIGIN, RUN_CONTROLS),
    ],
    ids=["viewer", "viewer, listed to view", "operator not in the run list", "operator", "run list", "admin"],
)
def test_a_finished_runs_page_offers_to_run_it_again_only_to_who_may_run_its_scenario(
    portal: InProcessApp, finished_runs: dict[str, str], who: dict[str, str], scenario_id: str, controls: list[str]
) -> None:
    html = page(portal, f"/runs/{finished_runs[scenario_id]}", who)

    assert [label for label in buttons(html) + links(html) if label in RUN_CONTROLS] == controls
    assert "JSON" in links(html)  # what a viewer may read stays


@pytest.mark.parametrize("path", ["/runs/{run_id}", "/runs/{run_id}/stream"])
def test_a_run_of_a_scenario_a_user_may_not_see_is_the_same_404_as_a_run_that_does_not_exist(
    portal: InProcessApp, finished_runs: dict[str, str], path: str
) -> None:
    run_id = finished_runs[ORIGIN]
    other = "00000000-0000-4000-8000-000000000000"

    hidden = portal.get(path.format(run_id=run_id), headers=OPERATOR)
    missing = portal.get(path.format(run_id=other), headers=OPERATOR)

    assert hidden.status_code == missing.status_code == 404
    assert f"Unknown run_id: {run_id}" in text_of(hidden.text)
    assert text_of(hidden.text).replace(run_id, "X") == text_of(missing.text).replace(other, "X")
    assert portal.get(path.format(run_id=run_id), headers=AUDITOR).status_code == 200


@pytest.mark.parametrize(
    ("who", "scenario_id", "action", "status", "message"),
    [
        (VIEWER, NEWS, "again", 403, "Refused: this needs the operator role; yours is viewer"),
        (VIEWER, NEWS, "cancel", 403, "Refused: this needs the operator role; yours is viewer"),
        (OPERATOR, OUTLET, "again", 403, f"Refused: you may not run scenario '{OUTLET}'"),
        (OPERATOR, OUTLET, "cancel", 403, f"Refused: you may not cancel runs of scenario '{OUTLET}'"),
        (OPERATOR, ORIGIN, "again", 404, "Unknown run_id: "),
        (OPERATOR, ORIGIN, "cancel", 404, "Unknown run_id: "),
    ],
)
def test_run_again_and_cancel_without_the_right_answer_a_page_and_change_nothing(
    portal: InProcessApp,
    finished_runs: dict[str, str],
    who: dict[str, str],
    scenario_id: str,
    action: str,
    status: int,
    message: str,
) -> None:
    run_id = finished_runs[scenario_id]
    token = form_token(page(portal, f"/scenarios/{NEWS}", ADMIN))
    before = all_run_ids(portal)

    response = post_form(portal, f"/runs/{run_id}/{action}", who, {"_csrf": token})

    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    assert message in text_of(response.text)
    assert all_run_ids(portal) == before


def test_run_again_from_the_page_for_a_user_in_the_run_list(
    portal: InProcessApp, finished_runs: dict[str, str]
) -> None:
    html = page(portal, f"/runs/{finished_runs[OUTLET]}", RELEASER)

    response = post_form(portal, f"/runs/{finished_runs[OUTLET]}/again", RELEASER, {"_csrf": form_token(html)})

    assert response.status_code == 303, response.text
    assert response.headers["location"].rsplit("/", 1)[-1] not in finished_runs.values()


def test_a_live_runs_page_shows_cancel_to_who_may_run_it_and_its_stream_to_everyone_alike(
    make_app: Callable[..., InProcessApp], tmp_path: Path
) -> None:
    app = make_app(scenarios=scenario_folder(tmp_path), demo_delay=SLOW_DELAY, **BEHIND_THE_PORTAL)
    run_id = start(app, NEWS, ADMIN)

    viewer_page = page(app, f"/runs/{run_id}", VIEWER)
    operator_page = page(app, f"/runs/{run_id}", OPERATOR)

    assert "Cancel run" not in buttons(viewer_page) and "Cancel run" in buttons(operator_page)
    assert 'sse-connect="' in viewer_page  # the viewer watches it live all the same
    response = post_form(app, f"/runs/{run_id}/cancel", OPERATOR, {"_csrf": form_token(operator_page)})
    assert response.status_code == 303, response.text
    wait_until(lambda: status_of(app, run_id) == "cancelled", 20, f"run {run_id} to be cancelled")
    # The stream's fragments are drawn once for every viewer: they hold no control, only the places the page's own
    # controls keep (hx-preserve).
    for who in (VIEWER, OPERATOR):
        stream = app.get(f"/runs/{run_id}/stream", headers=who)
        assert stream.status_code == 200
        (status,) = [frame.data for frame in frames(parse_text(stream.text)) if frame.event == "run-finished"]
        assert "<form" not in status and "Run again" not in status
        assert '<span id="run-again" hidden hx-preserve></span>' in status


# --- The run list ------------------------------------------------------------------------------


def listed(html: str) -> list[str]:
    return re.findall(r'href="/runs/([0-9a-f-]{36})"', html)


def test_the_run_list_shows_only_runs_of_scenarios_the_user_may_see(
    portal: InProcessApp, finished_runs: dict[str, str]
) -> None:
    hidden = finished_runs[ORIGIN]

    for who in (VIEWER, OPERATOR):
        html = page(portal, "/runs", who, params={"started_by": "ada"})
        assert set(listed(html)) >= {finished_runs[NEWS], finished_runs[OUTLET]} and hidden not in listed(html)
        assert f'<option value="{ORIGIN}"' not in html  # nor the scenario among the filter's choices
        assert listed(page(portal, "/runs", who, params={"scenario_id": ORIGIN})) == []
    assert hidden in listed(page(portal, "/runs", AUDITOR, params={"started_by": "ada"}))


def test_my_runs_lists_the_runs_the_user_started(portal: InProcessApp, finished_runs: dict[str, str]) -> None:
    # A user of their own: the module's other tests start runs as the other users.
    mona = {"X-Forwarded-User": "mona", "X-Forwarded-Groups": "ops"}
    mine = run_to_end(portal, NEWS, mona)

    html = page(portal, "/runs", mona)
    assert 'href="/runs?started_by=me">My runs</a>' in html
    assert "Me (mona)" in text_of(html)

    my_runs = page(portal, "/runs", mona, params={"started_by": "me"})
    assert listed(my_runs) == [mine]
    assert re.search(r'<option value="me" selected>Me \(mona\)</option>', my_runs)
    # Anyone's runs by name, as the run list's "By" column names them.
    by_mona = page(portal, "/runs", VIEWER, params={"started_by": "mona"})
    assert listed(by_mona) == [mine] and "mona" in text_of(by_mona)
    assert finished_runs[NEWS] not in listed(by_mona)


# --- Who is signed in --------------------------------------------------------------------------


def test_the_header_says_who_is_signed_in_and_with_which_role(portal: InProcessApp) -> None:
    assert "Signed in as rita (viewer)" in text_of(page(portal, "/", VIEWER))
    assert "Signed in as oscar (operator)" in text_of(page(portal, "/tools", OPERATOR))
    # Error pages too, once the user is known.
    refused = post_form(portal, f"/scenarios/{NEWS}", VIEWER, {})
    assert refused.status_code == 403 and "Signed in as rita (viewer)" in text_of(refused.text)


def test_pages_drawn_for_a_user_are_never_kept_by_a_shared_cache(
    portal: InProcessApp, finished_runs: dict[str, str]
) -> None:
    for path in ["/", f"/scenarios/{NEWS}", "/runs", f"/runs/{finished_runs[NEWS]}", f"/scenarios/{ORIGIN}"]:
        assert portal.get(path, headers=VIEWER).headers["cache-control"] == "private", path


def test_a_user_name_is_text_in_the_header_never_markup(portal: InProcessApp) -> None:
    html = page(portal, "/", {"X-Forwarded-User": HOSTILE_TEXT, "X-Forwarded-Groups": "readers"})

    assert HOSTILE_TEXT not in html and "<script>" not in html
    assert f"Signed in as {HOSTILE_TEXT} (viewer)" in text_of(html)


def test_the_only_user_of_a_loopback_server_is_not_named(demo_app: InProcessApp) -> None:
    html = demo_app.get("/").text

    assert 'class="signed-in' not in html and "Signed in" not in html


def test_anonymous_visitors_allowed_by_configuration_are_told_so(make_app: Callable[..., InProcessApp]) -> None:
    app = make_app(**BEHIND_THE_PORTAL, allow_anonymous="viewer")

    assert "Not signed in (viewer)" in text_of(page(app, "/", {}))


def test_nobody_signed_in_gets_a_sign_in_page_without_links_that_would_refuse_them_too(portal: InProcessApp) -> None:
    response = portal.get("/runs", headers={"Accept": "text/html"})

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="stepline"'
    assert "Sign-in required" in text_of(response.text)
    assert "See the scenarios" not in response.text and "Signed in" not in response.text
