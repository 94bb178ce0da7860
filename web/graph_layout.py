"""A layered drawing of a dependency graph: where each step's box goes and the path of each edge.

Steps are ranked by depth (a step one row below the deepest step it waits for), so the steps of a
row can run at once. An edge that skips rows runs through a narrow lane reserved in each row it
crosses, shared by every edge leaving the same step, so no edge passes through a box. Rows are
ordered to cross few edges (barycentre sweeps), then each box is placed as near the mean of its
neighbours as the row's order and spacing allow (an isotonic regression per row). Between two rows an
edge is one curve inside the gap: it can cross other edges, never a box.

Pure data in, pure data out, and cached by the graph's shape: every page of a scenario's runs reuses it.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass
from functools import lru_cache

NODE_WIDTH = 200
NODE_HEIGHT = 64
NODE_GAP = 24  # between two boxes of a row
LANE_WIDTH = 10  # the room an edge crossing a row takes
LANE_GAP = 8  # between a lane and its neighbours
ROW_GAP = 44  # between rows: where edges bend
MARGIN = 12
# Each sweep reorders every row twice (down, then up) and places every box twice: enough to settle,
# cheap at a few hundred steps.
ORDER_SWEEPS = 6
PLACE_SWEEPS = 4
# Edges that meet at one box spread over this share of its side, so each can be followed.
PORT_SPREAD = 0.6
PORT_STEP = 14

Shape = tuple[tuple[str, tuple[str, ...]], ...]  # each step's name and the names it waits for


@dataclass(frozen=True)
class Box:
    x: float  # left
    y: float  # top


@dataclass(frozen=True)
class Edge:
    source: int  # the step waited for (its place in the shape)
    target: int  # the step that waits
    points: tuple[tuple[float, float], ...]  # from the source's bottom to the target's top, lanes between
    path: str  # SVG path data through the points


def _path(points: list[tuple[float, float]]) -> str:
    """Straight down each lane, a curve across each gap between rows."""
    x, y = points[0]
    parts = [f"M{x:.1f},{y:.1f}"]
    # Gap, lane, gap, lane… gap: the points are the ends of each.
    for number, ((x1, y1), (x2, y2)) in enumerate(zip(points, points[1:], strict=False)):
        if number % 2:
            parts.append(f"V{y2:.1f}")
        else:
            middle = (y1 + y2) / 2
            parts.append(f"C{x1:.1f},{middle:.1f} {x2:.1f},{middle:.1f} {x2:.1f},{y2:.1f}")
    return "".join(parts)


@dataclass(frozen=True)
class Layout:
    boxes: tuple[Box, ...]  # in the shape's order
    edges: tuple[Edge, ...]
    width: float
    height: float
    rows: int


@lru_cache(maxsize=256)
def layout(shape: Shape) -> Layout:
    count = len(shape)
    first = {}
    for position, (name, _) in enumerate(shape):
        first.setdefault(name, position)
    # Unknown names and the step itself are left out: a recorded plan is drawn whatever it holds.
    deps = [
        sorted({first[name] for name in needs if name in first and first[name] != position})
        for position, (_, needs) in enumerate(shape)
    ]
    rank = _ranks(deps)
    # Only edges going down are drawn (all of them, in any plan that compiled).
    edges = [(dep, step) for step in range(count) for dep in deps[step] if rank[dep] < rank[step]]
    graph = _LayeredGraph(rank, edges)
    graph.order()
    graph.place()
    return graph.result()


def _ranks(deps: list[list[int]]) -> list[int]:
    """Each step's row: one below the lowest step it waits for (Kahn's order, so no recursion)."""
    count = len(deps)
    waiting = [len(d) for d in deps]
    dependents: list[list[int]] = [[] for _ in range(count)]
    for step, needs in enumerate(deps):
        for dep in needs:
            dependents[dep].append(step)
    rank = [-1] * count
    ready = deque(step for step in range(count) if not waiting[step])
    placed = 0
    while placed < count:
        if not ready:  # a cycle (no compiled plan has one): start at its first step
            ready.append(next(step for step in range(count) if rank[step] < 0))
        step = ready.popleft()
        if rank[step] >= 0:
            continue
        rank[step] = 1 + max((rank[dep] for dep in deps[step] if rank[dep] >= 0), default=-1)
        placed += 1
        for later in dependents[step]:
            waiting[later] -= 1
            if waiting[later] == 0 and rank[later] < 0:
                ready.append(later)
    return rank


class _LayeredGraph:
    """Steps and lanes (an edge's place in a row it crosses) in rows, linked row to row."""

    def __init__(self, rank: list[int], edges: list[tuple[int, int]]) -> None:
        self.count = len(rank)
        self.row_of = list(rank)
        self.width = [float(NODE_WIDTH)] * self.count
        self.below: list[set[int]] = [set() for _ in range(self.count)]
        self.above: list[set[int]] = [set() for _ in range(self.count)]
        self.lanes: dict[tuple[int, int], int] = {}  # (source step, row) → lane
        self.routes: list[tuple[int, int, list[int]]] = []  # source, target, the items it passes
        for source, target in edges:
            items = [source]
            for row in range(rank[source] + 1, rank[target]):
                items.append(self._lane(source, row))
            items.append(target)
            for upper, lower in zip(items, items[1:], strict=False):
                self.below[upper].add(lower)
                self.above[lower].add(upper)
            self.routes.append((source, target, items))
        rows = max(self.row_of, default=-1) + 1
        self.rows: list[list[int]] = [[] for _ in range(rows)]
        # First order: the file's, each lane beside the step it leaves from.
        anchor = [float(item) for item in range(self.count)] + [
            source + 0.5 for (source, _row) in sorted(self.lanes, key=self.lanes.__getitem__)
        ]
        for item in sorted(range(len(self.row_of)), key=anchor.__getitem__):
            self.rows[self.row_of[item]].append(item)
        self.x = [0.0] * len(self.row_of)

    def _lane(self, source: int, row: int) -> int:
        lane = self.lanes.get((source, row))
        if lane is None:
            lane = self.lanes[(source, row)] = len(self.row_of)
            self.row_of.append(row)
            self.width.append(float(LANE_WIDTH))
            self.below.append(set())
            self.above.append(set())
        return lane

    # --- the order within rows -------------------------------------------------------------------

    def order(self) -> None:
        best, fewest = [list(row) for row in self.rows], self._crossings()
        for _ in range(ORDER_SWEEPS):
            for number in range(1, len(self.rows)):
                self._reorder(number, self.above)
            for number in range(len(self.rows) - 2, -1, -1):
                self._reorder(number, self.below)
            crossings = self._crossings()
            if crossings < fewest:
                best, fewest = [list(row) for row in self.rows], crossings
            if not fewest:
                break
        self.rows = best

    def _reorder(self, number: int, neighbours: list[set[int]]) -> None:
        """Sort a row by the mean place of each item's neighbours in the next row; items with none stay put."""
        row = self.rows[number]
        other = self.rows[number - 1] if neighbours is self.above else self.rows[number + 1]
        place = {item: position for position, item in enumerate(other)}
        keys = {}
        for position, item in enumerate(row):
            linked = [place[n] for n in neighbours[item]]
            keys[item] = sum(linked) / len(linked) if linked else position * len(other) / max(1, len(row))
        row.sort(key=keys.__getitem__)  # stable: ties keep their order

    def _crossings(self) -> int:
        total = 0
        for upper, lower in zip(self.rows, self.rows[1:], strict=False):
            place = {item: position for position, item in enumerate(lower)}
            ends = sorted((position, place[n]) for position, item in enumerate(upper) for n in self.below[item])
            seen: list[int] = []
            for _, end in ends:  # inversions: edges that start left and end right of a later one
                total += len(seen) - bisect.bisect_right(seen, end)
                bisect.insort(seen, end)
        return total

    # --- x positions -----------------------------------------------------------------------------

    def place(self) -> None:
        for row in self.rows:
            x = 0.0
            for position, item in enumerate(row):
                if position:
                    x += self._spacing(row[position - 1], item)
                self.x[item] = x
        for _ in range(PLACE_SWEEPS):
            for row in self.rows[1:]:
                self._place_row(row, self.above)
            for row in reversed(self.rows[:-1]):
                self._place_row(row, self.below)
        for row in self.rows:  # last, both neighbours: a box sits between what it waits for and what waits
            self._place_row(row, None)

    def _spacing(self, left: int, right: int) -> float:
        gap = NODE_GAP if left < self.count and right < self.count else LANE_GAP
        return (self.width[left] + self.width[right]) / 2 + gap

    def _place_row(self, row: list[int], neighbours: list[set[int]] | None) -> None:
        if not row:
            return
        wanted = []
        for item in row:
            linked = (self.above[item] | self.below[item]) if neighbours is None else neighbours[item]
            wanted.append(sum(self.x[n] for n in linked) / len(linked) if linked else self.x[item])
        offsets = [0.0]
        for left, right in zip(row, row[1:], strict=False):
            offsets.append(offsets[-1] + self._spacing(left, right))
        fitted = _nondecreasing([want - offset for want, offset in zip(wanted, offsets, strict=True)])
        for item, value, offset in zip(row, fitted, offsets, strict=True):
            self.x[item] = value + offset

    # --- the result ----------------------------------------------------------------------------------

    def result(self) -> Layout:
        left = min((self.x[i] - self.width[i] / 2 for i in range(len(self.x))), default=0.0)
        shift = MARGIN - left
        centre = [float(round(x + shift)) for x in self.x]  # whole pixels: crisp lines
        top = [MARGIN + row * (NODE_HEIGHT + ROW_GAP) for row in range(len(self.rows))]
        boxes = tuple(Box(centre[i] - NODE_WIDTH / 2, top[self.row_of[i]]) for i in range(self.count))
        outgoing = self._ports(self.below, centre)
        incoming = self._ports(self.above, centre)
        edges = []
        for source, target, items in self.routes:
            points = [(centre[source] + outgoing[source][items[1]], top[self.row_of[source]] + NODE_HEIGHT)]
            for lane in items[1:-1]:
                row_top = top[self.row_of[lane]]
                points += [(centre[lane], row_top), (centre[lane], row_top + NODE_HEIGHT)]
            points.append((centre[target] + incoming[target][items[-2]], top[self.row_of[target]]))
            edges.append(Edge(source, target, tuple(points), _path(points)))
        width = max((centre[i] + self.width[i] / 2 for i in range(len(centre))), default=0.0) + MARGIN
        height = (top[-1] + NODE_HEIGHT + MARGIN) if top else 2 * MARGIN
        return Layout(boxes, tuple(edges), round(width), round(height), len(self.rows))

    def _ports(self, neighbours: list[set[int]], centre: list[float]) -> list[dict[int, float]]:
        """Where on a box's side each of its edges meets it, left to right as their other ends lie."""
        ports: list[dict[int, float]] = []
        for item in range(len(centre)):
            ends = sorted(neighbours[item], key=centre.__getitem__)
            step = min(PORT_STEP, PORT_SPREAD * self.width[item] / max(1, len(ends) - 1)) if item < self.count else 0
            ports.append({end: (k - (len(ends) - 1) / 2) * step for k, end in enumerate(ends)})
        return ports


def _nondecreasing(values: list[float]) -> list[float]:
    """The non-decreasing sequence nearest `values` in least squares (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [mean, size]
    for value in values:
        blocks.append([value, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            mean, size = blocks.pop()
            blocks[-1][0] = (blocks[-1][0] * blocks[-1][1] + mean * size) / (blocks[-1][1] + size)
            blocks[-1][1] += size
    fitted: list[float] = []
    for mean, size in blocks:
        fitted += [mean] * int(size)
    return fitted
