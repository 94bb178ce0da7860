"""The parts of a run page that a finished run never changes: its graph and its step cards. The page of
a finished run is mostly these; each is drawn once and kept (bounded in bytes), so viewing it again costs little."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from markupsafe import Markup
from starlette.requests import Request

from web.graph import run_graph
from web.templating import is_embedded, templates
from web.views import RunView, StepView

DRAWN_BYTES_KEPT = 32 * 1024 * 1024


class FinishedRunParts:
    """Drawn parts by (run, part, the request's prefix and mode), oldest dropped first past `max_bytes`.

    Each entry holds the scenario it was drawn with: a scenario file reloaded since may describe the
    steps differently, and its parts are drawn again. A live run's parts are drawn every time.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._parts: OrderedDict[tuple[Any, ...], tuple[object, Markup]] = OrderedDict()
        self._bytes = 0

    def card(self, request: Request, run: RunView, step: StepView, *, can_answer: bool = False) -> Markup:
        """The step's card; `can_answer`: with the forms that answer its requests (a finished run has none)."""
        context = {"request": request, "run": run, "step": step, **answering(request, can_answer)}
        return self._part(request, run, step.index, lambda: _render("_step.html", context))

    def graph(self, request: Request, run: RunView) -> Markup:
        context = {"request": request, "run": run, "graph": run_graph(run)}
        return self._part(request, run, "graph", lambda: _render("_graph.html", context))

    def clear(self) -> None:
        self._parts.clear()
        self._bytes = 0

    def _part(self, request: Request, run: RunView, part: object, draw: Callable[[], Markup]) -> Markup:
        if not run.state.is_finished:
            return draw()
        key = (run.state.run_id, part, request.scope.get("root_path", ""), is_embedded(request))
        entry = self._parts.get(key)
        if entry is not None and entry[0] is run.scenario:
            self._parts.move_to_end(key)
            return entry[1]
        html = draw()
        if (old := self._parts.pop(key, None)) is not None:
            self._bytes -= len(old[1])
        self._parts[key] = (run.scenario, html)
        self._bytes += len(html)
        while self._bytes > self.max_bytes and self._parts:
            self._bytes -= len(self._parts.popitem(last=False)[1][1])
        return html


def answering(request: Request, can_answer: bool) -> dict[str, bool]:
    """What a card's requests offer its reader: the forms, and asking the configured model for a reply."""
    return {"can_answer": can_answer, "can_sample": getattr(request.state, "sampling", None) is not None}


def _render(template: str, context: dict[str, Any]) -> Markup:
    return Markup(templates.get_template(template).render(context))


finished_parts = FinishedRunParts(DRAWN_BYTES_KEPT)
