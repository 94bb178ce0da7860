"""The dependency graph of a scenario or a run, laid out for an SVG drawing (templates/_graph.html).

The layout (web.graph_layout) depends on the plan alone; what each node says (its status, items
done, condition) is its face, drawn alone by templates/_graph_node.html. The run page's stream sends a
step's face as event `node-<index>` beside its card, so nodes change live while the layout stays.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, ClassVar

from web.events import StepStatus
from web.graph_layout import NODE_HEIGHT, NODE_WIDTH, Edge, Shape, layout
from web.templating import duration

if TYPE_CHECKING:
    from web.plan import PlannedStep
    from web.scenarios import Scenario
    from web.views import RunView, StepView

# The text inside a box, in pixels: its left inset, and the sizes the stylesheet gives each line.
TEXT_LEFT = 14
TEXT_ROOM = NODE_WIDTH - TEXT_LEFT - 8
NAME_PX = 13  # monospace, bold
DETAIL_PX = 11.5
# What a node says an approval step does, where a tool step names its tool.
APPROVAL_DETAIL = "approval by a person"
# A tooltip shows this much of a step's message: the card below has it whole.
TOOLTIP_MESSAGE_CHARS = 300
# `{{ expr }}` alone: a condition shown as `if expr`.
WHOLE_EXPRESSION = re.compile(r"^\{\{\s*(.*?)\s*\}\}$", re.S)
# Average advance of proportional-font characters, in ems (DejaVu Sans and its like, rounded up).
NARROW, WIDE = set("fijlrtI.,:;'|!()[]{} "), set("mwMW@%")
ELLIPSIS = "…"


@dataclass(slots=True)
class NodeFace:
    """What one node shows, fitted to its box: enough to draw it alone."""

    index: int
    name: str
    href: str
    status: str | None  # None: a scenario's node, which has no run
    title: str  # the name, cut to fit
    detail: str  # items, condition or tool, cut to fit
    summary: str  # the same, whole
    note: str  # after the status (a run) or in its place (a scenario)
    tooltip: str
    width: ClassVar[int] = NODE_WIDTH
    height: ClassVar[int] = NODE_HEIGHT


@dataclass(slots=True)
class PlacedNode:
    face: NodeFace
    x: float
    y: float


@dataclass(frozen=True)
class Graph:
    width: float
    height: float
    stages: int  # one row each
    nodes: list[PlacedNode]
    # Between planned steps, whose places in the plan are their indexes.
    edges: tuple[Edge, ...]
    live: bool  # each node a slot the run's stream swaps


def scenario_graph(scenario: Scenario) -> Graph | None:
    steps = scenario.plan.steps
    if not steps:
        return None
    shape: Shape = tuple((step.name, step.depends_on) for step in steps)
    return _graph(shape, [planned_node(step) for step in steps], live=False)


def run_graph(view: RunView) -> Graph | None:
    """The graph of the plan a run follows (its recorded plan, else its scenario's), as it stands."""
    if not view.steps:
        return None
    shape: Shape = tuple((step.name, tuple(dep.name for dep in step.depends_on)) for step in view.steps)
    return _graph(shape, [step_node(step) for step in view.steps], live=not view.state.is_finished)


def _graph(shape: Shape, faces: list[NodeFace], *, live: bool) -> Graph:
    drawn = layout(shape)
    nodes = [PlacedNode(face, box.x, box.y) for face, box in zip(faces, drawn.boxes, strict=True)]
    return Graph(drawn.width, drawn.height, drawn.rows, nodes, drawn.edges, live)


def planned_node(step: PlannedStep) -> NodeFace:
    """A scenario's step: what it calls, and whether it runs per item or on a condition."""
    when = step.when.describe() if step.when is not None else None
    marks = ["for each item" if step.for_each is not None else "", _condition(when)]
    note = " · ".join(mark for mark in marks if mark)
    tooltip = _lines(
        step.name,
        _calls(step.tool, step.server),
        "for each item" if step.for_each is not None else "",
        f"runs if {when}" if when else "",
    )
    return NodeFace(
        index=step.index,
        name=step.name,
        href=f"#flow-{step.name}",
        status=None,
        title=fit(step.name, TEXT_ROOM, NAME_PX, mono=True),
        detail=fit(step.tool or APPROVAL_DETAIL, TEXT_ROOM, DETAIL_PX),
        summary=" · ".join(part for part in (_calls(step.tool, step.server), note) if part),
        note=fit(note, TEXT_ROOM, DETAIL_PX),
        tooltip=tooltip,
    )


def step_node(step: StepView) -> NodeFace:
    """A run's step as it stands: items done of all, its condition, and what follows its status."""
    state = step.state
    items = ""
    if step.for_each:
        if state is not None and state.item_count is not None:
            failed = f", {state.items_failed} failed" if state.items_failed else ""
            items = f"{state.items_done}/{state.item_count} items{failed}"
        else:
            items = "for each item"
    detail = " · ".join(mark for mark in (items, _condition(step.when)) if mark)
    message = (state.message if state else "") or step.skipped_reason
    if len(message) > TOOLTIP_MESSAGE_CHARS:
        message = message[:TOOLTIP_MESSAGE_CHARS] + ELLIPSIS
    tooltip = _lines(
        step.name, _calls(step.tool, step.server), items, f"runs if {step.when}" if step.when else "", message
    )
    return NodeFace(
        index=step.index,
        name=step.name,
        href=f"#step-{step.index}",
        status=step.status,
        title=fit(step.name, TEXT_ROOM, NAME_PX, mono=True),
        detail=fit(detail or step.tool or APPROVAL_DETAIL, TEXT_ROOM, DETAIL_PX),
        summary=detail or step.tool or APPROVAL_DETAIL,
        note=_status_note(step),
        tooltip=tooltip,
    )


def _status_note(step: StepView) -> str:
    """What follows the status: the try under way or awaited, the progress, or how long the step took."""
    state = step.state
    if state is None:
        return ""
    if step.status == StepStatus.RUNNING:
        if step.retry is not None:
            return f"retry {step.retry.attempt}/{step.retry.max_attempts}"
        if step.percent is not None and not state.is_for_each:
            return f"{step.percent}%"
        return f"attempt {state.attempt}" if state.attempt > 1 else ""
    return duration(step.seconds)


def _condition(source: str | None) -> str:
    if not source:
        return ""
    whole = WHOLE_EXPRESSION.match(source)
    return "if " + (whole.group(1) if whole and "{{" not in whole.group(1) else source)


def _calls(tool: str | None, server: str | None) -> str:
    if tool is None:  # an approval step calls nothing
        return "asks a person to approve"
    return f"calls {tool} on {server}" if server else f"calls {tool}"


def _lines(*parts: str) -> str:
    return "\n".join(part for part in parts if part)


@lru_cache(maxsize=4096)  # the same names and tools on every page of a scenario's runs
def fit(text: str, room: float, size: float, *, mono: bool = False) -> str:
    """`text`, cut with an ellipsis where it would pass `room` pixels at `size` (estimated, on the wide side)."""
    text = " ".join(text.split())  # one line: SVG text does not wrap
    limit = room / size
    used = 0.0
    for position, char in enumerate(text):
        used += _advance(char, mono)
        if used > limit:
            keep = text[:position]
            while keep and sum(_advance(c, mono) for c in keep) + _advance(ELLIPSIS, mono) > limit:
                keep = keep[:-1]
            return keep.rstrip() + ELLIPSIS
    return text


def _advance(char: str, mono: bool) -> float:
    if unicodedata.east_asian_width(char) in ("W", "F"):
        return 1.2  # a CJK glyph, whatever the font
    if unicodedata.combining(char):
        return 0.0
    if mono:
        return 0.62
    if char in NARROW:
        return 0.36
    if char in WIDE:
        return 0.95
    return 0.72 if char.isupper() or char.isdigit() else 0.62
