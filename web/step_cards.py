"""The step cards of a run page. A finished run's cards never change, and its page is mostly cards:
each is drawn once and kept (bounded in bytes), so viewing that page again costs little."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from markupsafe import Markup
from starlette.requests import Request

from web.templating import is_embedded, templates
from web.views import RunView, StepView

CARD_BYTES_KEPT = 32 * 1024 * 1024


class CardCache:
    """Drawn cards by (run, step, the request's prefix and mode), oldest dropped first past `max_bytes`.

    Each entry holds the scenario it was drawn with: a scenario file reloaded since may describe the
    steps differently, and its cards are drawn again.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._cards: OrderedDict[tuple[Any, ...], tuple[object, Markup]] = OrderedDict()
        self._bytes = 0

    def card(self, request: Request, run: RunView, step: StepView) -> Markup:
        if not run.state.is_finished:
            return _draw(request, run, step)
        key = (run.state.run_id, step.index, request.scope.get("root_path", ""), is_embedded(request))
        entry = self._cards.get(key)
        if entry is not None and entry[0] is run.scenario:
            self._cards.move_to_end(key)
            return entry[1]
        html = _draw(request, run, step)
        self._put(key, run.scenario, html)
        return html

    def clear(self) -> None:
        self._cards.clear()
        self._bytes = 0

    def _put(self, key: tuple[Any, ...], scenario: object, html: Markup) -> None:
        if (old := self._cards.pop(key, None)) is not None:
            self._bytes -= len(old[1])
        self._cards[key] = (scenario, html)
        self._bytes += len(html)
        while self._bytes > self.max_bytes and self._cards:
            self._bytes -= len(self._cards.popitem(last=False)[1][1])


def _draw(request: Request, run: RunView, step: StepView) -> Markup:
    return Markup(templates.get_template("_step.html").render({"request": request, "run": run, "step": step}))


cards = CardCache(CARD_BYTES_KEPT)
