"""The one Jinja environment: every page and fragment is rendered through it."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from jinja2 import pass_context
from jinja2.runtime import Context
from starlette.requests import Request
from starlette.templating import Jinja2Templates

from web.events import RunStatus, StepStatus
from web.json_display import json_is_short, json_tree, pretty_json, raw_json
from web.resources import TEMPLATES
from web.result_view import Limits, ResultView, byte_size, result_view
from web.security import TOKEN_FIELD, form_token

templates = Jinja2Templates(directory=TEMPLATES)
# Templates are files of the package, never edited under a running server: not checked for changes at each use.
templates.env.auto_reload = False


def path_for(request: Request, name: str, /, **path_params: Any) -> str:
    """A route's path with the proxy's prefix, never host-qualified.

    Behind a reverse proxy the Host header names the upstream, so an absolute URL built from it
    would send the browser around the proxy; a path from the root is right on both sides of it.
    """
    return request.scope.get("root_path", "") + _route_path(request.app, name, path_params)


# Paths found by route name, per app: finding one tries every route in turn, and a page names the same
# few routes dozens of times. Bounded: the paths of the runs viewed lately.
ROUTE_PATHS_KEPT = 4096


def _route_path(app: Any, name: str, path_params: dict[str, Any]) -> str:
    paths: dict[tuple[Any, ...], str] | None = getattr(app.state, "route_paths", None)
    if paths is None or len(paths) >= ROUTE_PATHS_KEPT:
        paths = app.state.route_paths = {}
    key = (name, *path_params.items())
    path = paths.get(key)
    if path is None:
        path = paths[key] = str(app.url_path_for(name, **path_params))
    return path


def is_embedded(request: Request) -> bool:
    return request.query_params.get("embed") == "1"


def page_path(request: Request, name: str, /, query: dict[str, Any] | None = None, **path_params: Any) -> str:
    """A page's path that keeps an embedded view embedded (`?embed=1` travels with every link)."""
    params = {key: value for key, value in (query or {}).items() if value is not None}
    if is_embedded(request):
        params["embed"] = "1"
    path = path_for(request, name, **path_params)
    return f"{path}?{urlencode(params)}" if params else path


@pass_context
def _url_for(context: Context, name: str, /, **path_params: Any) -> str:
    return path_for(context["request"], name, **path_params)


@pass_context
def _link(context: Context, name: str, /, query: dict[str, Any] | None = None, **path_params: Any) -> str:
    return page_path(context["request"], name, query, **path_params)


def seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {rest} s"


def clock(stamp: str | None) -> str:
    """An event time as people read it: date and time to the second, in UTC like the events."""
    if not stamp:
        return ""
    moment = datetime.fromisoformat(stamp)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + (" UTC" if moment.utcoffset() is not None else "")


def time_of_day(stamp: str | None) -> str:
    """An event time within the day, to the second: enough beside a date already shown."""
    if not stamp:
        return ""
    moment = datetime.fromisoformat(stamp)
    return moment.strftime("%H:%M:%S") + (" UTC" if moment.utcoffset() is not None else "")


def seconds(value: float) -> str:
    """A setting in seconds as written: `30 s`, `0.5 s`."""
    return f"{value:g} s"


def counted(number: int, noun: str) -> str:
    """`1 item`, `3 items`, `1,000 items`."""
    return f"{number:,} {noun if number == 1 else noun + 's'}"


templates.env.globals["url_for"] = _url_for
templates.env.globals["link"] = _link
# Plain strs and data, never markup: autoescaping applies to every piece of a value a page shows.
templates.env.filters["pretty_json"] = pretty_json
templates.env.filters["raw_json"] = raw_json
templates.env.filters["json_tree"] = json_tree
templates.env.tests["short_json"] = json_is_short
templates.env.filters["duration"] = duration
templates.env.filters["clock"] = clock
templates.env.filters["time_of_day"] = time_of_day
templates.env.filters["counted"] = counted
templates.env.filters["seconds"] = seconds
# The one vocabulary of statuses, for the labels and the choices pages make on them.
templates.env.globals["RunStatus"] = RunStatus
templates.env.globals["StepStatus"] = StepStatus


@pass_context
def _form_token(context: Context) -> str:
    return form_token(context["request"])


templates.env.globals["form_token"] = _form_token
templates.env.globals["form_token_field"] = TOKEN_FIELD


@pass_context
def _step_result(context: Context, step: Any) -> ResultView:
    """A run page step's (web.views.StepView) tool result, within the page limits the settings give."""
    settings = context["request"].app.state.settings
    return result_view(step.state, Limits(settings.page_output_bytes, settings.max_inline_image_bytes))


templates.env.globals["step_result"] = _step_result
templates.env.filters["byte_size"] = byte_size
