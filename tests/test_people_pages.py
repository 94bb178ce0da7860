"""Requests to people on the run page: what is asked, the forms that answer it, and who may use them.

One in-process app behind the portal's proxy (viewers read, operators run), with the tests' workflow
server and a server whose tools elicit a form, a URL visit and a model's reply (tests/servers/form_asker.py).
Runs wait on approval steps and on those tools; the test answers through the page's forms, as a browser
without JavaScript posts them (and as htmx does, with its header), and checks what a person sees.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until
from inprocess import InProcessApp, in_process
from mcp_process import asking_home
from servers.chat_model import MODEL, ChatModel, chat_model
from ui_support import HOSTILE_TEXT, form_token

from web.request_view import request_view

HOSTILE_TITLE = 'Copies <script>window.__pwned=5</script><img src=x onerror="window.__pwned=6">'
ORDER = {
    "type": "object",
    "properties": {
        "copies": {"type": "integer", "minimum": 1, "title": HOSTILE_TITLE},
        "colour": {"enum": ["red", "blue"], "default": "blue"},
        "note": {"type": "string"},
    },
    "required": ["copies"],
}
SECRET = {"type": "object", "properties": {"password": {"type": "string"}}}
BEHIND_THE_PORTAL = {
    "auth_header": "X-Forwarded-User",
    "groups_header": "X-Forwarded-Groups",
    "trusted_proxies": "127.0.0.1",
    "role_map": "readers=viewer,ops=operator",
    "host": "0.0.0.0",
    "allowed_hosts": "*",
}
VIEWER = {"X-Forwarded-User": "rita", "X-Forwarded-Groups": "readers"}
OPERATOR = {"X-Forwarded-User": "oscar", "X-Forwarded-Groups": "ops"}
HTMX = {**OPERATOR, "HX-Request": "true"}
TERMINAL = {"success", "failed", "cancelled"}
KEY_ENV = "STEPLINE_PEOPLE_PAGES_KEY"
KEY = "sk-people-pages-0123456789"


def v2(scenario_id: str, *steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"schema_version": "2", "scenario_id": scenario_id, "name": scenario_id, "steps": list(steps), **extra}


def approval(name: str, message: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "type": "approval", "message": message, **fields}


TITLE_INPUT = {"type": "object", "properties": {"title": {"type": "string"}}}
SCENARIOS = [
    v2(
        "ship",
        approval("approve", "Print {{ input.title }}?", schema=ORDER),
        {"name": "print", "tool": "echo", "input": {"value": "{{ steps.approve.output.values.copies }} copies"}},
        input_schema=TITLE_INPUT,
    ),
    v2("plain", approval("approve", "Go on?")),
    v2("quick", approval("approve", "Go on?", wait_timeout_seconds=0.3)),
    v2(
        "each",
        approval("approve", "Publish {{ item }}?", for_each="{{ input.items }}", max_parallel=2),
        input_schema={"type": "object", "properties": {"items": {"type": "array"}}},
    ),
    v2("secret", approval("approve", "Sign in, please", schema=SECRET)),
    v2(
        "elicit",
        {"name": "order", "tool": "ask_form", "server": "asker", "input": {"message": "{{ input.title }}"}},
        input_schema=TITLE_INPUT,
    ),
    v2(
        "visit",
        {
            "name": "visit",
            "tool": "ask_url",
            "server": "asker",
            "input": {"message": "Sign in", "url": "{{ input.url }}"},
        },
        input_schema={"type": "object", "properties": {"url": {"type": "string"}}},
    ),
    v2(
        "sample",
        {"name": "write", "tool": "ask_model", "server": "asker", "input": {"prompt": "{{ input.title }}"}},
        input_schema=TITLE_INPUT,
    ),
    v2(
        "picture",
        {
            "name": "write",
            "tool": "ask_model",
            "server": "asker",
            "input": {"prompt": "What is this?", "picture": True},
        },
    ),
]


@contextmanager
def people_app(home: Path, **settings: Any) -> Iterator[InProcessApp]:
    folder, config = asking_home(home, SCENARIOS)
    with in_process(home, scenarios=folder, mcp_config=config, **BEHIND_THE_PORTAL, **settings) as app:
        app.wait_ready()
        yield app


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessApp]:
    with people_app(tmp_path_factory.mktemp("people-pages")) as app:
        yield app


@pytest.fixture(scope="module")
def endpoint() -> Iterator[ChatModel]:
    with chat_model() as model:
        yield model


@pytest.fixture(scope="module")
def modelled(tmp_path_factory: pytest.TempPathFactory, endpoint: ChatModel) -> Iterator[InProcessApp]:
    """The app with a model endpoint to draft sampling replies, its key in the environment."""
    os.environ[KEY_ENV] = KEY
    try:
        home = tmp_path_factory.mktemp("people-pages-model")
        with people_app(home, sampling_url=endpoint.url, sampling_model=MODEL, sampling_key_env=KEY_ENV) as app:
            yield app
    finally:
        del os.environ[KEY_ENV]


def start(app: InProcessApp, scenario_id: str, run_input: dict[str, Any] | None = None) -> str:
    response = app.post("/api/runs", json={"scenario_id": scenario_id, "input": run_input or {}}, headers=OPERATOR)
    assert response.status_code == 202, response.text
    return response.json()["run_id"]


def snapshot(app: InProcessApp, run_id: str) -> dict[str, Any]:
    response = app.get(f"/api/runs/{run_id}", headers=OPERATOR)
    assert response.status_code == 200, response.text
    return response.json()


def waiting(app: InProcessApp, scenario_id: str, run_input: dict[str, Any] | None = None) -> tuple[str, str]:
    """A new run of the scenario once it waits for a person: (run_id, request_id)."""
    run_id = start(app, scenario_id, run_input)
    wait_until(lambda: snapshot(app, run_id)["status"] in {"waiting", *TERMINAL}, 20, f"run {run_id} to wait")
    run = snapshot(app, run_id)
    assert run["status"] == "waiting", run
    return run_id, _request_ids(app, run_id)[0]


def _request_ids(app: InProcessApp, run_id: str) -> list[str]:
    return [request.group(1) for request in re.finditer(r'id="request-([0-9a-f]{32})"', page(app, run_id))]


def finished(app: InProcessApp, run_id: str) -> dict[str, Any]:
    wait_until(lambda: snapshot(app, run_id)["status"] in TERMINAL, 20, f"run {run_id} to end")
    return snapshot(app, run_id)


def page(app: InProcessApp, run_id: str, headers: dict[str, str] = OPERATOR) -> str:
    response = app.get(f"/runs/{run_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.text


def text_of(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def title_of(html: str) -> str:
    match = re.search(r"<title>(.*?)</title>", html, re.S)
    assert match
    return unescape(match.group(1))


def answer(
    app: InProcessApp, run_id: str, request_id: str, fields: dict[str, str], headers: dict[str, str] = OPERATOR
) -> Any:
    token = form_token(page(app, run_id))
    return app.post(
        f"/runs/{run_id}/requests/{request_id}",
        data={"_csrf": token, **fields},
        headers={**headers, "Sec-Fetch-Site": "same-origin"},
    )


def control(request_id: str, name: str) -> str:
    return f"r-{request_id}.{name}"


def card_of(html: str, step_index: int) -> str:
    match = re.search(rf'<article id="step-{step_index}".*?</article>', html, re.S)
    assert match, f"no card for step {step_index}"
    return match.group(0)


def test_an_approval_shows_its_message_and_form_escaped_and_the_title_says_it_waits(app: InProcessApp) -> None:
    run_id, request_id = waiting(app, "ship", {"title": HOSTILE_TEXT})
    html = page(app, run_id)
    assert title_of(html).startswith("Waiting for input — ship: waiting")
    # Nothing the server or the run's input said is markup: the page holds it as text.
    assert "<script>window.__pwned" not in html and "<img src=x" not in html
    card = card_of(html, 0)
    assert f"Print {HOSTILE_TEXT}?" in text_of(card)
    assert HOSTILE_TITLE in text_of(card)
    assert f'action="/runs/{run_id}/requests/{request_id}"' in card
    assert re.findall(r"<button[^>]*>(.*?)</button>", card) == ["Approve", "Reject", "Dismiss"]
    # The enum's default is chosen, the required integer is required of the browser too.
    colour = rf'<select id="f-r-{request_id}.colour"[^>]*>.*?<option value="&#34;blue&#34;" selected>'
    assert re.search(colour, card, re.S)
    assert re.search(rf'<input type="number" id="f-r-{request_id}.copies"[^>]* required', card)
    # At the top: what is asked, one link away from its form.
    top = re.search(r'<section class="run-waiting".*?</section>', html, re.S)
    assert top and f'href="#request-{request_id}"' in top.group(0)
    assert "Waiting for input approve : approval — Print" in text_of(top.group(0))
    badge = '<span class="badge status-waiting"><span class="badge-icon" aria-hidden="true">‖</span> Waiting for input'
    assert badge in html
    # A page that may be answering does not reload itself under the person typing.
    assert 'http-equiv="refresh"' not in html


def test_answering_an_approval_runs_the_rest_and_the_card_says_who_answered(app: InProcessApp) -> None:
    run_id, request_id = waiting(app, "ship", {"title": "the poster"})
    response = answer(app, run_id, request_id, {"action": "accept", control(request_id, "copies"): "3"})
    assert response.status_code == 303
    assert response.headers["location"] == f"/runs/{run_id}"
    run = finished(app, run_id)
    assert run["status"] == "success"
    assert run["steps"][1]["output"] == {"value": "3 copies", "note": "(not given)"}
    card = card_of(page(app, run_id), 0)
    assert re.search(r"Answered \(accept\) by oscar \(portal\) at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", text_of(card))
    assert "<form" not in card


def test_a_form_with_problems_comes_back_with_the_values_and_each_problem_beside_its_field(app: InProcessApp) -> None:
    run_id, request_id = waiting(app, "ship", {"title": "the poster"})
    # Unreadable: the form's own check.
    fields = {"action": "accept", control(request_id, "copies"): "three", control(request_id, "note"): "by <b>noon</b>"}
    response = answer(app, run_id, request_id, fields)
    assert response.status_code == 422
    card = card_of(response.text, 0)
    assert "Enter a whole number." in text_of(card)
    assert 'value="three"' in card and 'value="by &lt;b&gt;noon&lt;/b&gt;"' in card
    # Readable but not what the schema asks: the answer's check, placed beside the field.
    response = answer(app, run_id, request_id, {"action": "accept", control(request_id, "copies"): "0"})
    assert response.status_code == 422
    errors = re.search(rf'<ul class="field-errors" id="f-r-{request_id}.copies-error">(.*?)</ul>', response.text, re.S)
    assert errors and "0 is less than the minimum of 1" in text_of(errors.group(1))
    assert snapshot(app, run_id)["status"] == "waiting"
    # Declining needs no valid form.
    response = answer(app, run_id, request_id, {"action": "decline", control(request_id, "copies"): "zero"})
    assert response.status_code == 303
    run = finished(app, run_id)
    assert run["status"] == "failed"
    assert run["steps"][0]["message"] == "Declined by oscar"


def test_a_request_answered_already_says_by_whom_and_an_expired_form_keeps_the_values(app: InProcessApp) -> None:
    run_id, request_id = waiting(app, "plain")
    token = form_token(page(app, run_id))
    response = app.post(
        f"/runs/{run_id}/requests/{request_id}",
        data={"_csrf": "1.forged", "action": "accept", control(request_id, "comment"): "fine by me"},
        headers={**OPERATOR, "Sec-Fetch-Site": "same-origin"},
    )
    assert response.status_code == 403
    assert "This form had expired, so nothing was sent" in text_of(response.text)
    assert "fine by me" in response.text
    assert snapshot(app, run_id)["status"] == "waiting"
    sent = {"_csrf": token, "action": "accept", control(request_id, "comment"): "fine"}
    path = f"/runs/{run_id}/requests/{request_id}"
    assert app.post(path, data=sent, headers={**OPERATOR, "Sec-Fetch-Site": "same-origin"}).status_code == 303
    again = app.post(path, data=sent, headers={**OPERATOR, "Sec-Fetch-Site": "same-origin"})
    assert again.status_code in (409, 303)  # the run may have ended already: both say it is closed
    if again.status_code == 409:
        assert "answered already (accept by oscar)" in text_of(again.text) or "has ended" in text_of(again.text)
    assert finished(app, run_id)["steps"][0]["output"]["values"] == {"comment": "fine"}
    assert app.post(
        f"/runs/{run_id}/requests/{'0' * 32}", data=sent, headers={**OPERATOR, "Sec-Fetch-Site": "same-origin"}
    ).status_code in (404, 409)


def test_a_viewer_sees_what_is_asked_but_no_form_and_may_not_answer(app: InProcessApp) -> None:
    run_id, request_id = waiting(app, "ship", {"title": "the poster"})
    html = page(app, run_id, VIEWER)
    card = card_of(html, 0)
    assert "Print the poster?" in text_of(card)
    assert "<form" not in card and "<button" not in card
    assert "Only people who may run this scenario can answer." in text_of(card)
    # Nobody answering here: the page without JavaScript keeps reloading to follow the run.
    assert 'http-equiv="refresh"' in html
    response = answer(app, run_id, request_id, {"action": "accept", control(request_id, "copies"): "2"}, VIEWER)
    assert response.status_code == 403
    assert snapshot(app, run_id)["status"] == "waiting"
    assert answer(app, run_id, request_id, {"action": "cancel"}).status_code == 303
    assert finished(app, run_id)["steps"][0]["message"] == "Dismissed by oscar"


def test_htmx_gets_the_form_alone_with_its_problems_and_nothing_once_answered(app: InProcessApp) -> None:
    run_id, request_id = waiting(app, "ship", {"title": "the poster"})
    response = answer(app, run_id, request_id, {"action": "accept", control(request_id, "copies"): "-1"}, HTMX)
    assert response.status_code == 422
    assert response.text.lstrip().startswith(f'<form id="request-{request_id}-form"')
    assert "<html" not in response.text and "hx-preserve" not in response.text
    assert "-1 is less than the minimum of 1" in text_of(response.text)
    assert response.headers["vary"] == "HX-Request"
    response = answer(app, run_id, request_id, {"action": "accept", control(request_id, "copies"): "1"}, HTMX)
    assert response.status_code == 204
    assert finished(app, run_id)["status"] == "success"


def test_a_form_asking_for_a_secret_is_shown_with_a_warning(app: InProcessApp) -> None:
    run_id, request_id = waiting(app, "secret")
    card = text_of(card_of(page(app, run_id), 0))
    assert "Careful: the server asks for something that looks secret ( password )" in card
    assert "MCP forbids asking for passwords" in card
    answer(app, run_id, request_id, {"action": "decline"})
    finished(app, run_id)


def test_the_runs_list_filters_and_marks_waiting_runs(app: InProcessApp) -> None:
    run_id, request_id = waiting(app, "plain")

    def listed(status: str | None) -> str:
        response = app.get("/runs", params={"status": status} if status else {}, headers=VIEWER)
        assert response.status_code == 200
        return response.text

    # The list is read from the history, written a moment after the run's events.
    wait_until(lambda: run_id[:8] in listed("waiting"), 10, "the waiting run in the list")
    html = listed("waiting")
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", re.search(r"<tbody>(.*?)</tbody>", html, re.S).group(1), re.S)
    assert rows and all("Waiting for input" in text_of(row) for row in rows)
    marked = rf'<tr class="run-waiting-row">\s*<td><span class="badge status-waiting">.*?{run_id[:8]}'
    assert re.search(marked, html, re.S)
    everything = listed(None)
    assert 'href="/runs?status=waiting">Waiting for input</a>' in everything
    assert '<option value="waiting">waiting for input</option>' in everything
    answer(app, run_id, request_id, {"action": "accept"})
    finished(app, run_id)
    wait_until(lambda: run_id[:8] not in listed("waiting"), 10, "the run to leave the waiting list")


def test_an_elicitation_is_a_form_from_the_servers_schema_and_its_values_go_back(app: InProcessApp) -> None:
    run_id, request_id = waiting(app, "elicit", {"title": f"Order for {HOSTILE_TEXT}"})
    html = page(app, run_id)
    assert "<script>window.__pwned" not in html and "<img src=x" not in html
    card = card_of(html, 0)
    assert f"Order for {HOSTILE_TEXT}" in text_of(card)
    assert HOSTILE_TITLE in text_of(card)
    assert re.findall(r"<button[^>]*>(.*?)</button>", card) == ["Accept", "Decline", "Cancel"]
    response = answer(app, run_id, request_id, {"action": "accept", control(request_id, "copies"): "x"})
    assert response.status_code == 422 and "Enter a whole number." in text_of(card_of(response.text, 0))
    fields = {"action": "accept", control(request_id, "copies"): "4", control(request_id, "colour"): '"red"'}
    assert answer(app, run_id, request_id, fields).status_code == 303
    run = finished(app, run_id)
    assert run["status"] == "success", run
    assert run["steps"][0]["output"] == {"action": "accept", "values": {"copies": 4, "colour": "red", "note": ""}}


@pytest.mark.parametrize(
    ("url", "linked"),
    [("https://login.example.com/authorize?state=1", True), ("javascript:alert(1)", False)],
)
def test_a_url_to_visit_is_shown_whole_with_its_host_emphasised_and_opens_nothing(
    app: InProcessApp, url: str, linked: bool
) -> None:
    run_id, request_id = waiting(app, "visit", {"url": url})
    card = card_of(page(app, run_id), 0)
    if linked:
        link = re.search(r'<a href="([^"]+)" rel="noopener noreferrer" target="_blank">(.*?)</a>', card)
        assert link and unescape(link.group(1)) == url
        assert link.group(2) == 'https://<strong class="request-host">login.example.com</strong>/authorize?state=1'
    else:
        assert "javascript:" not in " ".join(re.findall(r'href="([^"]*)"', card))
        assert "This is not a web address (http or https), so it is not a link." in text_of(card)
        assert url in text_of(card)
    assert "<iframe" not in card and "http-equiv" not in card
    assert re.findall(r"<button[^>]*>(.*?)</button>", card) == ["I have done it", "Decline", "Cancel"]
    assert answer(app, run_id, request_id, {"action": "accept"}).status_code == 303
    assert finished(app, run_id)["steps"][0]["output"] == {"action": "accept"}


def test_a_sampling_request_shows_the_conversation_and_sends_the_reply_written(app: InProcessApp) -> None:
    run_id, request_id = waiting(app, "sample", {"title": f"Summarise {HOSTILE_TEXT}"})
    html = page(app, run_id)
    assert "<script>window.__pwned" not in html
    card = card_of(html, 0)
    assert f"Summarise {HOSTILE_TEXT}" in text_of(card)
    assert "Answer <b>briefly</b>." in text_of(card)  # the system prompt, as text
    assert "Max tokens 50" in text_of(card)
    # No model endpoint is configured: the person writes the reply.
    assert "Ask the model" not in card
    assert re.findall(r"<button[^>]*>(.*?)</button>", card) == ["Send", "Decline"]
    response = answer(app, run_id, request_id, {"action": "accept", "reply": ""})
    assert response.status_code == 422
    assert "Write the reply (or ask the model for one) before sending it." in text_of(response.text)
    assert answer(app, run_id, request_id, {"action": "accept", "reply": "It is short."}).status_code == 303
    run = finished(app, run_id)
    assert run["steps"][0]["output"]["text"] == "It is short."


def test_a_page_without_the_right_role_cannot_post_answers(app: InProcessApp) -> None:
    response = app.post(f"/runs/{'1' * 32}/requests/{'2' * 32}", data={"action": "accept"}, headers=VIEWER)
    assert response.status_code == 403


def test_schema_forms_of_two_requests_have_their_own_control_names() -> None:
    first = request_view({"request_id": "a" * 32, "kind": "approval", "message": "m", "requested_schema": ORDER})
    second = request_view({"request_id": "b" * 32, "kind": "approval", "message": "m", "requested_schema": ORDER})
    assert first.form is not None and second.form is not None
    names = {f.id for f in first.form.root.walk()} & {f.id for f in second.form.root.walk()}
    assert names == set()


def draft(app: InProcessApp, run_id: str, request_id: str, fields: dict[str, str]) -> Any:
    token = form_token(page(app, run_id))
    return app.post(
        f"/runs/{run_id}/requests/{request_id}/draft",
        data={"_csrf": token, **fields},
        headers={**OPERATOR, "Sec-Fetch-Site": "same-origin"},
    )


def test_the_model_drafts_a_reply_the_person_reviews_before_it_is_sent(
    modelled: InProcessApp, endpoint: ChatModel
) -> None:
    endpoint.answer = "reply"
    run_id, request_id = waiting(modelled, "sample", {"title": "Summarise the report"})
    card = card_of(page(modelled, run_id), 0)
    assert re.findall(r"<button[^>]*>(.*?)</button>", card) == ["Send", "Decline", "Ask the model"]
    response = draft(modelled, run_id, request_id, {"reply": "my own start"})
    assert response.status_code == 303
    card = card_of(page(modelled, run_id), 0)
    # The endpoint names the model that answered (a dated version of the one asked for).
    note = r"The reply below was written by the model (\S+) ?: review it before you send it."
    written_by = re.search(note, text_of(card))
    assert written_by and written_by.group(1).startswith(MODEL)
    reply = re.search(r'<textarea id="[^"]*-reply" name="reply"[^>]*>(.*?)</textarea>', card, re.S)
    assert reply
    drafted = unescape(reply.group(1))
    assert drafted == "You said: Summarise the report (max 50, system: Answer <b>briefly</b>.)"
    assert snapshot(modelled, run_id)["status"] == "waiting"  # a draft is not an answer
    fields = {"action": "accept", "reply": drafted, "reply_model": written_by.group(1)}
    assert answer(modelled, run_id, request_id, fields).status_code == 303
    output = finished(modelled, run_id)["steps"][0]["output"]
    assert output == {"text": drafted, "model": written_by.group(1)}


def test_a_model_that_fails_is_named_beside_the_reply_without_its_key(
    modelled: InProcessApp, endpoint: ChatModel
) -> None:
    endpoint.answer = "refuse"
    try:
        run_id, request_id = waiting(modelled, "sample", {"title": "Summarise the report"})
        response = draft(modelled, run_id, request_id, {"reply": "what I wrote"})
        assert response.status_code == 502
        card = card_of(response.text, 0)
        problem = re.search(r'<p class="request-problem" role="alert">(.*?)</p>', card, re.S)
        assert problem and "401" in problem.group(1)
        assert KEY not in response.text
        assert ">what I wrote</textarea>" in card
    finally:
        endpoint.answer = "reply"
    assert answer(modelled, run_id, request_id, {"action": "decline"}).status_code == 303
    assert finished(modelled, run_id)["status"] == "failed"


def test_an_approval_step_is_drawn_as_asking_a_person_on_the_scenario_and_run_pages(app: InProcessApp) -> None:
    response = app.get("/scenarios/ship", headers=VIEWER)
    assert response.status_code == 200
    flow = text_of(response.text)
    assert "asks a person to approve" in flow and "calls None" not in flow
    node = re.search(r'<a class="gnode[^"]*" href="#flow-approve".*?</a>', response.text, re.S)
    assert node and "approval by a person" in text_of(node.group(0))
    run_id, request_id = waiting(app, "plain")
    card = text_of(card_of(page(app, run_id), 0))
    assert "asks a person to approve" in card
    answer(app, run_id, request_id, {"action": "cancel"})
    finished(app, run_id)


def test_the_items_of_a_for_each_approval_each_have_their_own_form(app: InProcessApp) -> None:
    run_id = start(app, "each", {"items": ["north", "south"]})
    wait_until(lambda: len(_request_ids(app, run_id)) == 2, 20, "both items to ask")
    card = card_of(page(app, run_id), 0)
    first, second = _request_ids(app, run_id)
    text = text_of(card)
    assert "Publish north?" in text and "Publish south?" in text
    assert "item 0" in text and "item 1" in text
    ids = re.findall(r' id="([^"]+)"', card)
    assert len(ids) == len(set(ids))
    assert answer(app, run_id, first, {"action": "accept", control(first, "comment"): "north ok"}).status_code == 303
    card = card_of(page(app, run_id), 0)
    assert f'id="request-{first}"' not in card and f'id="request-{second}"' in card
    assert "Answered (accept) by oscar" in text_of(card)
    assert answer(app, run_id, second, {"action": "accept"}).status_code == 303
    assert finished(app, run_id)["status"] == "success"


def test_a_picture_in_a_sampling_request_is_drawn_like_a_tools_image(app: InProcessApp) -> None:
    run_id, request_id = waiting(app, "picture")
    card = card_of(page(app, run_id), 0)
    assert "What is this?" in text_of(card)
    assert re.search(r'<img class="block-picture" src="data:image/png;base64,iVBORw0KGgo[^"]*" alt="Image', card)
    assert answer(app, run_id, request_id, {"action": "decline"}).status_code == 303
    assert finished(app, run_id)["status"] == "failed"


def test_a_request_nobody_answered_in_time_says_so_in_its_card(app: InProcessApp) -> None:
    run = finished(app, start(app, "quick"))
    assert run["status"] == "failed"
    card = text_of(card_of(page(app, run["run_id"]), 0))
    assert re.search(r"Nobody answered in time \(expired\) at \d{4}-\d\d-\d\d", card)
    assert "Waiting for input" not in card
