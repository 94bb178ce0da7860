"""The step graph on the scenario and run pages, and its nodes on the run page's live stream.

One app in-process with `tests/servers/workflow.py`. Pages are read as a browser gets them: each
node's box (its foreignObject), its slot, its link and the words it shows; each edge's path. Chromium
checks what only a browser can (live swaps, clicks, scrolling): tests/test_browser_graph.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from inprocess import InProcessApp, in_process
from mcp_process import workflow_home
from runs import get_run, run_to_end, start_run, wait_finished
from sse import Frame, frames, parse_text

from web import events
from web.events import RunStatus, StepStatus

STARTED = "2026-04-24T09:00:00.000+00:00"
LATER = "2026-04-24T09:00:05.000+00:00"
HOSTILE = "<img src=x onerror=alert(1)>"
LONG_NAME = "collect_every_article_the_outlet_published_this_year_and_more"
ITEMS = 1000


def v2(scenario_id: str, *steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"schema_version": "2", "scenario_id": scenario_id, "name": scenario_id, "steps": list(steps), **extra}


def echo(name: str, *needs: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "tool": "echo", "input": fields.pop("input", {"value": name}), "needs": list(needs), **fields}


# Two steps side by side, a for_each, a condition, a tolerated failure, and an edge over two rows.
SHAPES = v2(
    "shapes_v2",
    echo("outlet"),
    echo("articles", "outlet"),
    echo("stats", "outlet"),
    echo("each", "articles", for_each="{{ [1, 2, 3] }}", input={"value": "{{ item }}"}),
    echo("maybe", "stats", when="{{ input.go }}"),
    {
        "name": "broken",
        "tool": "fail",
        "input": {"message": "the tool refused"},
        "needs": ["stats"],
        "on_error": "continue",
    },
    echo("last", "outlet", "each", "maybe", "broken"),
    input_schema={"type": "object", "properties": {"go": {"type": "boolean", "default": False}}},
)
SHAPE_EDGES = {
    ("outlet", "articles"),
    ("outlet", "stats"),
    ("articles", "each"),
    ("stats", "maybe"),
    ("stats", "broken"),
    ("outlet", "last"),
    ("each", "last"),
    ("maybe", "last"),
    ("broken", "last"),
}
SLOW = v2(
    "slow_v2",
    {"name": "first", "tool": "sleep", "input": {"seconds": 0.6}},
    {"name": "second", "tool": "sleep", "input": {"seconds": 0.2}, "needs": ["first"]},
    {"name": "third", "tool": "echo", "input": {"value": 3}, "needs": ["first"]},
)
MANY = v2(
    "many_items_v2",
    echo("items", for_each=f"{{{{ range({ITEMS}) | list }}}}", max_parallel=32, input={"value": "{{ item }}"}),
    echo("after", "items"),
)
HOSTILE_FLOW = v2(
    "hostile_graph_v2",
    echo("guarded", when=f"{{{{ input.text == '{HOSTILE}' }}}}"),
    echo("plain", "guarded", input={"value": "x"}),
    input_schema={"type": "object", "properties": {"text": {"type": "string"}}},
)
LONG = v2("long_name_v2", echo(LONG_NAME), echo("short", LONG_NAME))


def fifty_steps() -> dict[str, Any]:
    """Fifty steps in the shapes real workflows take: fan-outs, joins, chains, and edges over many rows."""
    steps = [echo("s00")]
    for n in range(1, 50):
        # Each waits for one to three earlier steps, some of them far back (pseudo-random, fixed).
        needs = sorted({f"s{(n * k * 7 + k) % n:02d}" for k in range(1, 2 + n % 3)})
        steps.append(echo(f"s{n:02d}", *needs))
    return v2("fifty_v2", *steps)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessApp]:
    home = tmp_path_factory.mktemp("graph")
    folder, config = workflow_home(home, [SHAPES, SLOW, MANY, HOSTILE_FLOW, LONG, fifty_steps()])
    with in_process(home, scenarios=folder, mcp_config=config) as app:
        app.wait_ready()
        yield app


# --- Reading the graph as a browser gets it --------------------------------------------------------


@dataclass
class Node:
    index: int
    x: float
    y: float
    width: float
    height: float
    slot: dict[str, str | None]
    link: dict[str, str | None]
    texts: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.texts[0]

    @property
    def status(self) -> str | None:
        return self.link["data-status"]

    @property
    def words(self) -> str:
        return " ".join(self.texts)


@dataclass
class Edge:
    source: int
    target: int
    path: str


class GraphPage(HTMLParser):
    """The graph of a page: its canvas, each node (box, slot, link, words) and each edge."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.canvas: dict[str, str | None] = {}
        self.nodes: list[Node] = []
        self.edges: list[Edge] = []
        self._box: dict[str, str | None] | None = None
        self._slot: dict[str, str | None] = {}
        self._in_text = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        classes = (found.get("class") or "").split()
        if tag == "svg" and "graph-canvas" in classes:
            self.canvas = found
        elif tag == "path" and "graph-edge" in classes:
            self.edges.append(Edge(int(found["data-from"] or 0), int(found["data-to"] or 0), found["d"] or ""))
        elif tag == "foreignobject":
            self._box = found
        elif tag == "div" and "graph-slot" in classes:
            self._slot = found
        elif tag == "a" and "gnode" in classes and self._box is not None:
            box = self._box
            index = int((self._slot["id"] or "").removeprefix("graph-node-"))
            self.nodes.append(
                Node(
                    index,
                    float(box["x"] or 0),
                    float(box["y"] or 0),
                    float(box["width"] or 0),
                    float(box["height"] or 0),
                    self._slot,
                    found,
                )
            )
        elif tag == "text" and self.nodes:
            self._in_text = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "text":
            self._in_text = False
        elif tag == "foreignobject":
            self._box = None

    def handle_data(self, data: str) -> None:
        if self._in_text and self._box is not None:
            node = self.nodes[-1]
            if node.texts and not data.startswith(" · "):
                node.texts.append(data)
            elif node.texts:
                node.texts[-1] += data
            else:
                node.texts.append(data)

    def by_name(self) -> dict[str, Node]:
        return {node.name: node for node in self.nodes}

    def named_edges(self) -> set[tuple[str, str]]:
        names = {node.index: node.name for node in self.nodes}
        return {(names[edge.source], names[edge.target]) for edge in self.edges}


def html_frames(app: InProcessApp, run_id: str, **params: str) -> list[Frame]:
    response = app.get(f"/runs/{run_id}/stream", params=params)
    assert response.status_code == 200, response.text
    return list(frames(parse_text(response.text)))


def node_from_frame(frame: Frame) -> Node:
    """A `node-<index>` frame's node, read as the slot it is swapped into."""
    index = frame.event.removeprefix("node-")
    html = f'<foreignObject x="0" y="0" width="1" height="1"><div class="graph-slot" id="graph-node-{index}">'
    (node,) = GraphPage(html + frame.data + "</div></foreignObject>").nodes
    return node


# --- The scenario page ------------------------------------------------------------------------------


def test_the_scenario_page_draws_steps_in_rows_with_an_arrow_for_each_dependency(app: InProcessApp) -> None:
    page = app.get("/scenarios/shapes_v2")
    assert page.status_code == 200
    graph = GraphPage(page.text)
    nodes = graph.by_name()
    assert list(nodes) == ["outlet", "articles", "stats", "each", "maybe", "broken", "last"]
    # A row per stage: steps that can run at once side by side, each below what it waits for.
    rows = {name: node.y for name, node in nodes.items()}
    assert rows["articles"] == rows["stats"] and nodes["articles"].x != nodes["stats"].x
    assert rows["outlet"] < rows["stats"] < rows["each"] == rows["maybe"] == rows["broken"] < rows["last"]
    assert graph.named_edges() == SHAPE_EDGES
    # Each node links to its step's place on the page, and says how the step runs.
    assert all(node.link["href"] == f"#flow-{name}" for name, node in nodes.items())
    assert all(f'id="flow-{name}"' in page.text for name in nodes)
    assert "for each item" in nodes["each"].words and "if input.go" in nodes["maybe"].words
    assert nodes["broken"].texts[1] == "fail"  # the tool it calls
    # No run: no status, and nothing listens for one.
    assert {node.status for node in graph.nodes} == {"planned"}
    assert not any(node.slot.get("sse-swap") for node in graph.nodes)
    assert "7 steps in 4 stages, one row each" in page.text


def test_fifty_steps_are_drawn_with_no_box_over_another_and_no_edge_through_a_box(app: InProcessApp) -> None:
    scenario = fifty_steps()
    for path in ("/scenarios/fifty_v2", f"/runs/{run_to_end(app.client, 'fifty_v2')['run_id']}"):
        graph = GraphPage(app.get(path).text)
        assert len(graph.nodes) == 50
        assert len(graph.edges) == sum(len(step["needs"]) for step in scenario["steps"])
        boxes = graph.nodes
        for a in boxes:
            for b in boxes:
                if a is not b:
                    side_by_side = a.x + a.width <= b.x or b.x + b.width <= a.x
                    assert side_by_side or a.y + a.height <= b.y or b.y + b.height <= a.y, (path, a.name, b.name)
        width, height = float(graph.canvas["width"] or 0), float(graph.canvas["height"] or 0)
        assert all(n.x >= 0 and n.y >= 0 and n.x + n.width <= width and n.y + n.height <= height for n in boxes)
        by_index = {node.index: node for node in boxes}
        for edge in graph.edges:
            source, target = by_index[edge.source], by_index[edge.target]
            points = path_points(edge.path)
            # From the bottom of the step waited for to the top of the step that waits, always downwards.
            (x0, y0), (x1, y1) = points[0], points[-1]
            assert y0 == source.y + source.height and source.x < x0 < source.x + source.width, (path, edge)
            assert y1 == target.y and target.x < x1 < target.x + target.width, (path, edge)
            for (ax, ay), (bx, by) in zip(points, points[1:], strict=False):
                assert by > ay, (path, edge)
                # Straight down (through a row it crosses) or across a gap between rows: never over a box.
                for box in boxes:
                    crosses_rows = box.y < by and ay < box.y + box.height
                    if ax == bx and crosses_rows:
                        assert not box.x - 1 <= ax <= box.x + box.width + 1, (path, edge, box.name)
                    else:
                        assert not crosses_rows, (path, edge, "a curve crosses a row", box.name)


def path_points(d: str) -> list[tuple[float, float]]:
    """The ends of each piece of an edge's path (M, then C and V pieces)."""
    points: list[tuple[float, float]] = []
    for command, numbers in re.findall(r"([MCV])([^MCV]*)", d):
        values = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", numbers)]
        if command == "V":
            points.append((points[-1][0], values[0]))
        else:
            points.append((values[-2], values[-1]))
    return points


def test_a_long_name_is_cut_to_fit_its_box_and_whole_in_its_tooltip(app: InProcessApp) -> None:
    graph = GraphPage(app.get("/scenarios/long_name_v2").text)
    node = graph.nodes[0]
    assert node.name.endswith("…") and LONG_NAME.startswith(node.name[:-1]) and len(node.name) < 30
    assert (node.link["title"] or "").startswith(LONG_NAME + "\n")
    assert LONG_NAME in (node.link["aria-label"] or "")


# --- The run page -------------------------------------------------------------------------------------


def test_a_finished_runs_graph_says_each_status_in_words_and_links_to_the_cards(app: InProcessApp) -> None:
    run = run_to_end(app.client, "shapes_v2", {"go": False})
    assert run["status"] == "success", run
    page = app.get(f"/runs/{run['run_id']}").text
    graph = GraphPage(page)
    nodes = graph.by_name()
    assert {name: node.status for name, node in nodes.items()} == {
        "outlet": "success",
        "articles": "success",
        "stats": "success",
        "each": "success",
        "maybe": "skipped",
        "broken": "failed",
        "last": "success",
    }
    # Colour is never alone: each node says its status.
    assert "✓ Succeeded" in nodes["outlet"].words and "✕ Failed" in nodes["broken"].words
    assert "– Not run" in nodes["maybe"].words and "if input.go" in nodes["maybe"].words
    assert "3/3 items" in nodes["each"].words
    # The reason is in the node's tooltip; the node leads to the step's card.
    assert "the tool refused" in (nodes["broken"].link["title"] or "")
    assert "Condition is false" in (nodes["maybe"].link["title"] or "")
    for node in graph.nodes:
        assert node.link["href"] == f"#step-{node.index}" and f'<article id="step-{node.index}"' in page
    assert graph.named_edges() == SHAPE_EDGES
    # Over: nothing listens for changes.
    assert "sse-connect" not in page and not any(node.slot.get("sse-swap") for node in graph.nodes)


def test_a_live_run_page_has_a_slot_per_node_and_the_stream_sends_each_nodes_change_with_its_card(
    app: InProcessApp,
) -> None:
    run_id = start_run(app.client, "slow_v2")["run_id"]
    wait_until_running(app, run_id)
    page = app.get(f"/runs/{run_id}").text
    graph = GraphPage(page)
    assert [node.slot["sse-swap"] for node in graph.nodes] == ["node-0", "node-1", "node-2"]
    assert all(node.slot["hx-swap"] == "innerHTML settle:0ms" for node in graph.nodes)
    assert graph.by_name()["first"].status == "running" and graph.by_name()["third"].status == "pending"
    seen = re.search(r"last_event_id=(\d+)", page)
    assert seen
    assert wait_finished(app.client, run_id)["status"] == "success"
    # The page's stream, from where the page was drawn: each step's node comes just before its card,
    # with no id of its own, so a stream resumed after the card's id has both.
    sent = html_frames(app, run_id, last_event_id=seen.group(1))
    for position, frame in enumerate(sent):
        if frame.event.startswith("node-"):
            card = sent[position + 1]
            assert frame.id is None and card.id is not None
            assert card.event == frame.event.replace("node-", "step-")
            assert f'data-status="{node_from_frame(frame).status}"' in card.data
    finals = {node.index: node for node in map(node_from_frame, (f for f in sent if f.event.startswith("node-")))}
    assert {index: node.status for index, node in finals.items()} == {0: "success", 1: "success", 2: "success"}
    assert "✓ Succeeded" in finals[0].words
    # The page drawn afresh shows the same.
    assert {n.index: n.status for n in GraphPage(app.get(f"/runs/{run_id}").text).nodes} == {
        i: n.status for i, n in finals.items()
    }


def wait_until_running(app: InProcessApp, run_id: str) -> None:
    async def first_started() -> None:
        async for event in app.state["runs"].held(run_id).follow():
            if event["type"] == events.EventType.STEP_STARTED:
                return

    app.call(first_started(), timeout=20)


def test_a_stream_behind_a_thousand_items_draws_their_node_once(app: InProcessApp) -> None:
    run = run_to_end(app.client, "many_items_v2")
    assert run["status"] == "success", run
    sent = html_frames(app, run["run_id"])
    assert len(sent) > ITEMS  # an event (an id at least) for each item
    nodes = [frame for frame in sent if frame.event == "node-0"]
    assert len(nodes) == 1 and f"{ITEMS}/{ITEMS} items" in node_from_frame(nodes[0]).words
    # Every step's node once, like its card.
    assert sorted(f.event for f in sent if f.event.startswith("node-")) == ["node-0", "node-1"]
    assert sorted(f.event for f in sent if f.event.startswith("step-")) == ["step-0", "step-1"]


def test_a_run_from_before_plans_sweeps_the_nodes_of_steps_that_never_ran(app: InProcessApp) -> None:
    registry = app.state["runs"]

    async def record_old_run() -> str:
        # Runs recorded before plans were: no plan, and no events for the steps that never ran.
        record = registry.create("shapes_v2", {})
        record.emit({"type": "run_started", "scenario_id": "shapes_v2", "started_at": STARTED})
        record.emit(events.step_started(step_name="outlet", index=0, started_at=STARTED, input={}))
        record.emit(
            events.step_finished(
                step_name="outlet",
                index=0,
                status=StepStatus.FAILED,
                started_at=STARTED,
                finished_at=LATER,
                message="Unknown outlet",
            )
        )
        record.emit(events.run_finished(status=RunStatus.FAILED, finished_at=LATER, message="Step 'outlet' failed"))
        await registry.sync()
        return record.run_id

    run_id = app.call(record_old_run())
    graph = GraphPage(app.get(f"/runs/{run_id}").text)
    assert [node.status for node in graph.nodes] == ["failed"] + ["skipped"] * 6
    last = html_frames(app, run_id)[-1]
    assert last.event == "run-finished"
    oob = r'<div id="graph-node-(\d)" hx-swap-oob="innerHTML"><a class="gnode status-skipped"'
    swept = re.findall(oob, last.data)
    assert swept == [str(i) for i in range(1, 7)]
    assert get_run(app.client, run_id)["status"] == "failed"


def test_hostile_text_in_a_condition_is_only_text_in_the_graph(app: InProcessApp) -> None:
    run = run_to_end(app.client, "hostile_graph_v2", {"text": "no"})
    assert run["status"] == "success", run
    pages = [app.get(path).text for path in ("/scenarios/hostile_graph_v2", f"/runs/{run['run_id']}")]
    pages += [frame.data for frame in html_frames(app, run["run_id"]) if frame.event.startswith("node-")]
    assert len(pages) == 4
    for html in pages:
        assert "<img" not in html
    for html in pages[:3]:  # whole in each tooltip (and on the scenario page's list of steps)
        assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_steps_of_a_run_that_its_scenario_no_longer_has_keep_their_nodes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    folder, config = workflow_home(home, [SHAPES])
    settings = {"scenarios": folder, "mcp_config": config, "data_dir": tmp_path / "data"}
    with in_process(tmp_path, **settings) as app:
        run_id = run_to_end(app.client, "shapes_v2", {"go": True})["run_id"]
    (folder / "shapes_v2.json").unlink()
    with in_process(tmp_path, **settings) as app:
        graph = GraphPage(app.get(f"/runs/{run_id}").text)
    # The plan the run recorded, drawn whatever the folder holds now.
    assert list(graph.by_name()) == [step["name"] for step in SHAPES["steps"]]
    assert graph.named_edges() == SHAPE_EDGES
    assert graph.by_name()["maybe"].status == "success"
