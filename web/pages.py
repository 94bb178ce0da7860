"""The HTML pages: catalog, scenario (with its run and preview form), runs, a run watched live, tools.

Every page shows the current state without JavaScript; forms are plain POSTs answered with a 303.
The run page's live updates come from `run_stream`, the HTML sibling of the JSON event stream.

Each page shows what its asker may see (web.access): a scenario or run they may not see is the same
404 as one that does not exist; the forms and buttons to run, rerun or cancel are shown only to those
who may, and their POSTs answer 403 to anyone else.

A run waiting for a person shows each request in its step's card, with the form that answers it to those
who may run the scenario. The form posts here (`run_answer`, `run_draft`): a plain POST is answered with a
303 back to the run, or the page again with the problems (422, or 409 when the request closed meanwhile);
an htmx POST with nothing (204: the stream takes the form away) or the form alone with its problems.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from web.access import Identity, IdentitySource, Role, may_run
from web.api import require_run
from web.checks import scenario_checks
from web.events import AnswerAction
from web.form_input import add_errors, read_form
from web.forms import MISSING, RunForm, build_form
from web.graph import scenario_graph
from web.permissions import identity_of
from web.preview import Preview, RunOfAnotherScenario
from web.preview_api import preview_of, source_run
from web.registry import RunRecord
from web.request_view import RequestView, form_root, request_view, sampling_answer
from web.run_list import DEFAULT_PAGE_SIZE, RUN_STATUSES, BadCursor
from web.runs import (
    AnswerInvalid,
    InputInvalid,
    ModelFailed,
    NoSamplingModel,
    RequestClosed,
    RunAlreadyFinished,
    UnknownRequest,
    UnknownRun,
    UnknownScenario,
)
from web.scenarios import Problem, Scenario
from web.security import form_token_valid, route_path
from web.step_cards import answering, finished_parts
from web.streams import BadLastEventId, event_stream, html_frame, resume_point
from web.templating import is_embedded, page_path, templates
from web.views import parameters, plan, run_list_item, run_view

# Paths whose errors are answered in JSON: the API's clients parse `{"detail": ...}`.
JSON_PREFIXES = ("/api/", "/healthz", "/openapi.json")
EXPIRED_FORM = "This form had expired, so nothing was run. Check the values below and submit again."
EXPIRED_PAGE = "This page had expired, so nothing was done. Reload the run and try again."
EXPIRED_ANSWER = "This form had expired, so nothing was sent. Check the values below and send them again."
# The scenario form's control naming the run whose outputs a preview takes (the input's controls are `in.…`).
PREVIEW_RUN_FIELD = "outputs_from_run"
# Recent runs offered as sources of outputs for a preview.
RECENT_RUNS = 10
# Items of a for_each the page shows with their arguments; the API shows as many as asked.
PAGE_ITEMS_SHOWN = 10
# The run list's "started by" filter value that means the asker.
ME = "me"
# Each page is drawn for its asker (what they may see and do): no shared cache may hand it to someone else.
PAGE_HEADERS = {"Cache-Control": "private"}


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
    return templates.TemplateResponse(
        request, name, {**page_context(request), **context}, status_code=status_code, headers=PAGE_HEADERS
    )


def page_context(request: Request) -> dict[str, Any]:
    """What every page's frame shows: embedded or not, and who is signed in."""
    return {"embed": is_embedded(request), "signed_in": signed_in(request)}


def signed_in(request: Request) -> Identity | None:
    """The identity the page header names: none for nobody, nor for the anonymous admin of a loopback-bound
    server (the only user there is); an anonymous role someone configured is named."""
    identity = identity_of(request)
    if identity is None:
        return None
    if identity.source == IdentitySource.ANONYMOUS and request.app.state.settings.allow_anonymous is None:
        return None
    return identity


def require_scenario(request: Request, scenario_id: str) -> Scenario:
    """The scenario, if the asker may see it; else the same 404 as for a scenario that does not exist."""
    try:
        return request.state.run_service.scenario(scenario_id, identity_of(request))
    except UnknownScenario:
        raise HTTPException(404, f"There is no scenario '{scenario_id}'.") from None


def may_run_scenario(request: Request, scenario_id: str) -> bool:
    return may_run(identity_of(request), request.state.catalog.get(scenario_id))


def require_may_run(request: Request, scenario_id: str, action: str) -> None:
    """RunForbidden (403) unless the asker may run the scenario: checked before the form is read, so that they
    are told this, not that the form expired or its values do not fit."""
    request.state.run_service.require_may_run(identity_of(request), scenario_id, action)


def show_run(request: Request, record: RunRecord) -> Response:
    """The run's page; a run started is on disk before this redirect, as a 202 would promise."""
    return RedirectResponse(page_path(request, "run", run_id=record.run_id), status_code=303)


async def submitted_form(request: Request) -> dict[str, list[str]]:
    """The posted controls' text values (its size bounded by the app's body limit: 413)."""
    form = await request.form()
    return {key: [v for v in form.getlist(key) if isinstance(v, str)] for key in form.keys()}


async def index(request: Request) -> Response:
    identity = identity_of(request)
    scenarios = request.state.run_service.scenarios(identity)
    context = {
        "scenarios": scenarios,
        "runnable": {s.scenario_id for s in scenarios if may_run(identity, s)},
        "problems": visible_problems(request, identity),
    }
    return render(request, "index.html", context)


def visible_problems(request: Request, identity: Identity | None) -> list[Problem]:
    """The catalog's load problems the asker may read: those of a kept version they may see; those of a file
    that did not load (whose access is unknown), for admins only."""
    catalog = request.state.catalog
    service = request.state.run_service
    visible = {f"{s.scenario_id}.json" for s in service.scenarios(identity)}
    is_admin = identity is not None and identity.has(Role.ADMIN)
    return [p for p in catalog.problems if p.file in visible or (is_admin and not p.kept)]


async def scenario_page(request: Request) -> Response:
    scenario = require_scenario(request, request.path_params["scenario_id"])
    from_run = request.query_params.get("from_run")
    source = await request.state.runs.get(from_run) if from_run else None
    notice = None
    if from_run and (source is None or source.state.scenario_id != scenario.scenario_id):
        notice = f"Run {from_run} of this scenario was not found, so the form shows the example input."
        source = None
    form = build_form(scenario.input_schema, source.state.input if source else MISSING)
    return await scenario_response(request, scenario, form, source=source, notice=notice)


@dataclass
class PreviewForm:
    """What the preview part of the scenario page shows: the run to take outputs from, and the outcome."""

    run_id: str = ""
    asked: bool = False  # the page answers a preview: its outcome, or why there is none
    result: Preview | None = None
    source: RunRecord | None = None
    error: str | None = None


async def scenario_response(
    request: Request,
    scenario: Scenario,
    form: RunForm,
    *,
    source: RunRecord | None = None,
    notice: str | None = None,
    preview: PreviewForm | None = None,
    status_code: int = 200,
) -> Response:
    recent = (await request.state.runs.page(scenario_id=scenario.scenario_id, limit=RECENT_RUNS)).runs
    context = {
        "scenario": scenario,
        "can_run": may_run_scenario(request, scenario.scenario_id),
        "form": form,
        "source": source,
        "notice": notice,
        "steps": plan(scenario),
        "graph": scenario_graph(scenario),
        "checks": await scenario_checks(scenario, request.state.pool),
        # An edited run's outputs are the likeliest ones to preview with.
        "preview": preview or PreviewForm(run_id=source.run_id if source else ""),
        "recent_runs": recent,
        # A broken edit of the file: the page serves the last good version, and says why.
        "file_problems": [p for p in request.state.catalog.problems if p.file == f"{scenario.scenario_id}.json"],
    }
    return render(request, "scenario.html", context, status_code)


async def scenario_run(request: Request) -> Response:
    scenario = require_scenario(request, request.path_params["scenario_id"])
    require_may_run(request, scenario.scenario_id, "run")
    service = request.state.run_service
    submitted = await submitted_form(request)
    run_input, form = read_form(scenario.input_schema, submitted, max_depth=request.app.state.settings.max_json_depth)
    preview = PreviewForm(run_id=_first(submitted, PREVIEW_RUN_FIELD))
    if not form_token_valid(request, submitted):
        form.errors.insert(0, EXPIRED_FORM)
        return await scenario_response(request, scenario, form, preview=preview, status_code=403)
    try:
        if not form.has_errors:
            return show_run(request, await service.start(scenario.scenario_id, run_input, by=identity_of(request)))
        # Some controls could not be read: nothing runs, but the other fields' problems show in the same round.
        service.check_input(scenario, run_input)
    except InputInvalid as exc:
        add_errors(form, exc.errors)
    return await scenario_response(request, scenario, form, preview=preview, status_code=422)


async def scenario_preview(request: Request) -> Response:
    """The scenario page again, the form as it was sent, with what each step would receive (no tool is called)."""
    scenario = require_scenario(request, request.path_params["scenario_id"])
    service = request.state.run_service
    submitted = await submitted_form(request)
    run_input, form = read_form(scenario.input_schema, submitted, max_depth=request.app.state.settings.max_json_depth)
    preview = PreviewForm(run_id=_first(submitted, PREVIEW_RUN_FIELD), asked=True)
    try:
        run_input = service.check_input(scenario, run_input)
    except InputInvalid as exc:
        add_errors(form, exc.errors)
    if form.has_errors:
        return await scenario_response(request, scenario, form, preview=preview, status_code=422)
    try:
        preview.source = await source_run(service, scenario, preview.run_id or None, identity_of(request))
    except (UnknownRun, RunOfAnotherScenario) as exc:
        preview.error = _sentence(str(exc))
        return await scenario_response(request, scenario, form, preview=preview, status_code=422)
    preview.result = preview_of(request, scenario, run_input, preview.source, PAGE_ITEMS_SHOWN)
    return await scenario_response(request, scenario, form, preview=preview)


def _first(submitted: dict[str, list[str]], name: str) -> str:
    values = submitted.get(name) or [""]
    return values[0].strip()


def _sentence(text: str) -> str:
    return text if text.endswith(".") else f"{text}."


async def runs_page(request: Request) -> Response:
    """The runs of the scenarios the asker may see, newest first; `started_by=me` (or a name): whose runs."""
    catalog = request.state.catalog
    service = request.state.run_service
    identity = identity_of(request)
    # Empty form fields mean "any", so the filter form can be submitted as it is.
    scenario_id = request.query_params.get("scenario_id") or None
    status = request.query_params.get("status") or None
    started_by = request.query_params.get("started_by") or None
    cursor = request.query_params.get("cursor") or None
    if status is not None and status not in RUN_STATUSES:
        raise HTTPException(422, f"There is no run status '{status}'; choose one of {', '.join(RUN_STATUSES)}.")
    starter = identity.name if started_by == ME and identity is not None else started_by
    try:
        page = await service.runs_page(
            identity,
            scenario_id=scenario_id,
            status=status,
            started_by=starter,
            limit=DEFAULT_PAGE_SIZE,
            cursor=cursor,
        )
    except BadCursor:
        raise HTTPException(422, "This link to older runs is not valid; start again from the newest.") from None
    filters = {"scenario_id": scenario_id, "status": status, "started_by": started_by}
    context = {
        "runs": [run_list_item(row, catalog.get(row.scenario_id)) for row in page.runs],
        "filters": filters,
        "me": ME,
        # Named users only: on a loopback-bound server with no sign-in, every run is the anonymous admin's.
        "my_name": named.name if (named := signed_in(request)) is not None else None,
        "scenarios": service.scenarios(identity),
        "statuses": RUN_STATUSES,
        "older": page_path(request, "runs", query={**filters, "cursor": page.next_cursor})
        if page.next_cursor
        else None,
        "newest": page_path(request, "runs", query=filters) if cursor else None,
    }
    return render(request, "runs.html", context)


async def run_page(request: Request) -> Response:
    return run_response(request, await require_run(request))


def run_response(
    request: Request,
    record: RunRecord,
    *,
    sent: RequestView | None = None,
    notice: str | None = None,
    status_code: int = 200,
) -> Response:
    """The run's page; `sent`: a request's form as it was posted, shown in its card with its problems."""
    scenario = request.state.catalog.get(record.state.scenario_id)
    # State and seq are read together, with no await between: the stream resumes exactly here.
    view = run_view(record.state, scenario, len(record.events))
    if sent is not None:
        for step in view.steps:
            step.requests = [sent if req.request_id == sent.request_id else req for req in step.requests]
    can_run = may_run_scenario(request, record.state.scenario_id)
    context = {
        "run": view,
        "graph_drawn": finished_parts.graph(request, view),
        "card": functools.partial(finished_parts.card, request, view, can_answer=can_run),
        "live": not record.is_finished,
        "can_run": can_run,
        "notice": notice,
    }
    return render(request, "run.html", context, status_code)


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def answer_problem(request: Request, record: RunRecord, sent: RequestView, status_code: int) -> Response:
    """A request's form again, as it was sent, with what kept it from being answered: the form alone to htmx
    (which swaps it in place of the one sent), else the whole run page."""
    headers = {**PAGE_HEADERS, "Vary": "HX-Request"}
    if is_htmx(request):
        context = {**page_context(request), "req": sent, "run": run_view(record.state, None, len(record.events))}
        context.update(answering(request, can_answer=True))
        return templates.TemplateResponse(request, "_request.html", context, status_code=status_code, headers=headers)
    pending = sent.request_id in record.state.pending
    response = run_response(
        request, record, sent=sent, notice=None if pending else sent.problem, status_code=status_code
    )
    response.headers["Vary"] = "HX-Request"
    return response


def answered(request: Request, record: RunRecord) -> Response:
    """Done: htmx is told nothing (the run's stream takes the form away), a plain form goes back to the run."""
    if is_htmx(request):
        return Response(status_code=204, headers={**PAGE_HEADERS, "Vary": "HX-Request"})
    response = show_run(request, record)
    response.headers["Vary"] = "HX-Request"
    return response


ANSWER_ACTIONS = (AnswerAction.ACCEPT, AnswerAction.DECLINE, AnswerAction.CANCEL)


async def run_answer(request: Request) -> Response:
    """A person's answer to a request, from its form: accept (with the form's values), decline or cancel."""
    record = await require_run(request)
    request_id = request.path_params["request_id"]
    service = request.state.run_service
    by = identity_of(request)
    require_may_run(request, record.state.scenario_id, "answer requests in runs of")
    submitted = await submitted_form(request)
    pending = record.state.pending.get(request_id)
    if pending is None:
        if not form_token_valid(request, submitted):
            raise HTTPException(403, EXPIRED_PAGE)
        # Not open: the service refuses any answer before recording it, saying why (no such request, answered
        # already and by whom, its run or step ended).
        sent = RequestView(request_id=request_id, kind="", step_name="", message="", created_at=None, expires_at=None)
        try:
            await service.answer(record.run_id, request_id, AnswerAction.CANCEL, None, by=by)
        except UnknownRequest as exc:
            raise HTTPException(404, _sentence(str(exc))) from None
        except RequestClosed as exc:
            sent.problem = _sentence(str(exc))
            return answer_problem(request, record, sent, 409)
        return answered(request, record)
    sent = request_view(pending)
    action = _first(submitted, "action")
    content = None
    if action == AnswerAction.ACCEPT:
        content = _accepted_content(request, sent, submitted)
    if not form_token_valid(request, submitted):
        sent.problem = EXPIRED_ANSWER
        return answer_problem(request, record, sent, 403)
    if action not in ANSWER_ACTIONS:
        sent.problem = f"Choose one of the buttons ({', '.join(label for _, label in sent.actions)})."
        return answer_problem(request, record, sent, 422)
    if sent.form is not None and sent.form.has_errors and action == AnswerAction.ACCEPT:
        return answer_problem(request, record, sent, 422)
    try:
        await service.answer(record.run_id, request_id, AnswerAction(action), content, by=by)
    except AnswerInvalid as exc:
        if sent.form is not None:
            add_errors(sent.form, exc.errors, "content")
        else:
            sent.reply_errors = [_reply_error(error) for error in exc.errors]
        return answer_problem(request, record, sent, 422)
    except RequestClosed as exc:
        sent.problem = _sentence(str(exc))
        return answer_problem(request, record, sent, 409)
    return answered(request, record)


def _accepted_content(request: Request, sent: RequestView, submitted: dict[str, list[str]]) -> Any:
    """What an acceptance sends: the form's values (its unreadable controls marked on `sent.form`), the reply
    written or reviewed, or nothing (a visited URL)."""
    if sent.form is not None:
        max_depth = request.app.state.settings.max_json_depth
        content, sent.form = read_form(
            sent.form_schema, submitted, max_depth=max_depth, root_name=form_root(sent.request_id)
        )
        return content
    if sent.kind == "sampling":
        return sampling_answer(sent, submitted)
    return None


def _reply_error(error: dict[str, Any]) -> str:
    if error.get("loc", [])[-1:] == ["text"] or error.get("type") == "jsonschema.minLength":
        return "Write the reply (or ask the model for one) before sending it."
    return _sentence(str(error.get("msg", "Invalid reply")))


async def run_draft(request: Request) -> Response:
    """Ask the configured model for a sampling request's reply; the person reviews it before it is sent."""
    record = await require_run(request)
    request_id = request.path_params["request_id"]
    require_may_run(request, record.state.scenario_id, "answer requests in runs of")
    submitted = await submitted_form(request)
    pending = record.state.pending.get(request_id)
    sent = request_view(pending) if pending is not None else None
    if sent is not None:
        sampling_answer(sent, submitted)  # what the person had written stays in the box
        if not form_token_valid(request, submitted):
            sent.problem = EXPIRED_ANSWER
            return answer_problem(request, record, sent, 403)
    elif not form_token_valid(request, submitted):
        raise HTTPException(403, EXPIRED_PAGE)
    service = request.state.run_service
    try:
        await service.draft(record.run_id, request_id, model=request.state.sampling, by=identity_of(request))
    except UnknownRequest as exc:
        raise HTTPException(404, _sentence(str(exc))) from None
    except (RequestClosed, NoSamplingModel, ModelFailed) as exc:
        if sent is None:
            raise HTTPException(409, _sentence(str(exc))) from None
        sent.problem = _sentence(str(exc))
        return answer_problem(request, record, sent, 502 if isinstance(exc, ModelFailed) else 409)
    return answered(request, record)


async def run_again(request: Request) -> Response:
    record = await require_run(request)
    require_may_run(request, record.state.scenario_id, "run")
    if not form_token_valid(request, await submitted_form(request)):
        raise HTTPException(403, EXPIRED_PAGE)
    try:
        return show_run(request, await request.state.run_service.rerun(record.run_id, by=identity_of(request)))
    except InputInvalid as exc:
        # The scenario changed since: offer this run's input in the form, with what no longer fits.
        form = build_form(exc.scenario.input_schema, record.state.input)
        add_errors(form, exc.errors)
        notice = "This run's input no longer fits the scenario. Correct it below to run again."
        return await scenario_response(request, exc.scenario, form, source=record, notice=notice, status_code=422)


async def run_cancel(request: Request) -> Response:
    record = await require_run(request)
    require_may_run(request, record.state.scenario_id, "cancel runs of")
    if not form_token_valid(request, await submitted_form(request)):
        raise HTTPException(403, EXPIRED_PAGE)
    # A run that ended meanwhile needs nothing more: its page tells how it ended.
    with contextlib.suppress(RunAlreadyFinished):
        await request.state.run_service.cancel(record.run_id, by=identity_of(request))
    return show_run(request, record)


async def run_stream(request: Request) -> Response:
    record = await require_run(request)
    try:
        after = resume_point(request)
    except BadLastEventId as exc:
        raise HTTPException(422, str(exc)) from None
    if record.is_finished:
        # A page that asks after the end still gets the last frame, run-finished, which tells it to
        # close; an empty stream would only make its EventSource reconnect again and again.
        after = min(after, len(record.events) - 1)
    scenario = request.state.catalog.get(record.state.scenario_id)
    can_answer = may_run_scenario(request, record.state.scenario_id)
    return event_stream(request, record, html_frame(request, record, scenario, can_answer=can_answer), after=after)


async def tools_page(request: Request) -> Response:
    pool = request.state.pool
    await pool.settle()
    tools = pool.known_tools()
    servers = [
        {"name": name, "health": health, "tools": [t for t in tools if t.server == name]}
        for name, health in pool.health().items()
    ]
    return render(request, "tools.html", {"servers": servers, "parameters": parameters})


def wants_html(request: Request) -> bool:
    path = route_path(request.scope)
    return not path.startswith(JSON_PREFIXES) and path != "/api"


ERROR_TITLES = {
    401: "Sign-in required",
    403: "Not allowed",
    404: "Page not found",
    405: "Not possible here",
    413: "Too much was sent",
    422: "Something in the request is wrong",
    503: "Busy right now",
    500: "Something went wrong",
}


def error_page(
    request: Request, status_code: int, detail: str | None, headers: dict[str, str] | None = None
) -> Response:
    title = ERROR_TITLES.get(status_code, "Something went wrong")
    context = {**page_context(request), "status_code": status_code, "title": title, "detail": detail}
    return templates.TemplateResponse(
        request, "error.html", context, status_code=status_code, headers={**PAGE_HEADERS, **(headers or {})}
    )


routes = [
    Route("/", index, methods=["GET"], name="index"),
    Route("/scenarios/{scenario_id}", scenario_page, methods=["GET"], name="scenario"),
    Route("/scenarios/{scenario_id}", scenario_run, methods=["POST"], name="scenario_run"),
    Route("/scenarios/{scenario_id}/preview", scenario_preview, methods=["POST"], name="scenario_preview"),
    Route("/runs", runs_page, methods=["GET"], name="runs"),
    Route("/runs/{run_id}", run_page, methods=["GET"], name="run"),
    Route("/runs/{run_id}/again", run_again, methods=["POST"], name="run_again"),
    Route("/runs/{run_id}/cancel", run_cancel, methods=["POST"], name="run_cancel"),
    Route("/runs/{run_id}/stream", run_stream, methods=["GET"], name="run_stream"),
    Route("/runs/{run_id}/requests/{request_id}", run_answer, methods=["POST"], name="run_answer"),
    Route("/runs/{run_id}/requests/{request_id}/draft", run_draft, methods=["POST"], name="run_draft"),
    Route("/tools", tools_page, methods=["GET"], name="tools"),
]
