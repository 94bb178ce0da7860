"""How `stepline run` shows a run's progress: a live table on a terminal, plain lines anywhere else.

Both read the run's folded state (web.run_state) through the run page's own view of it
(web.views.run_view), so the terminal and the page tell the same story. Text that comes from tools
and servers is made printable first: it must not move the cursor, retitle the window or recolour
the terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from web.events import EventType, StepStatus
from web.run_state import RunState
from web.templating import duration, seconds_between
from web.views import StepView, run_view

# How often the live table is drawn again while nothing happens, so running steps' times move on.
REDRAW_SECONDS = 0.25
# The scenario's `output` printed at the end is cut here; --json gives it whole.
OUTPUT_SHOWN_CHARS = 4000
# C0 and C1 controls (ESC starts every terminal escape), DEL, and the bidirectional overrides that
# reorder what a line seems to say.
UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
STATUS_STYLES = {
    StepStatus.PENDING: "dim",
    StepStatus.RUNNING: "bold cyan",
    StepStatus.WAITING: "bold yellow",
    StepStatus.SUCCESS: "green",
    StepStatus.FAILED: "bold red",
    StepStatus.SKIPPED: "dim",
    StepStatus.CANCELLED: "magenta",
    "queued": "dim",
}


def printable(text: Any) -> str:
    """`text` on one line, each control character written as an escape (`\\n`, `\\x1b`)."""
    return UNPRINTABLE.sub(lambda match: match[0].encode("unicode_escape").decode("ascii"), str(text))


def use_live_display(stream: TextIO) -> bool:
    """A live table only on a terminal that can redraw it."""
    return stream.isatty() and os.environ.get("TERM", "") != "dumb"


class Progress(Protocol):
    def shown(self, state: RunState) -> contextlib.AbstractContextManager[None]: ...
    def event(self, event: dict[str, Any], state: RunState) -> None: ...
    def note(self, text: str) -> None: ...
    def reconnecting(self, reason: str) -> None: ...
    def cancelling(self, run_id: str) -> None: ...
    def summary(self, snapshot: dict[str, Any], *, with_output: bool) -> None: ...


def step_number(step: StepView) -> int:
    return step.index + 1


def elapsed(started_at: str | None, finished_at: str | None, now: datetime | None = None) -> float | None:
    """Ended: between its recorded times; going on: from its start until now."""
    if started_at is None:
        return None
    end = datetime.fromisoformat(finished_at) if finished_at else (now or datetime.now(UTC))
    return max(0.0, (end - datetime.fromisoformat(started_at)).total_seconds())


def step_seconds(step: StepView, now: datetime | None = None) -> float | None:
    return elapsed(step.state.started_at, step.state.finished_at, now) if step.state else None


def step_detail(step: StepView) -> str:
    """What is going on in the step, in a few words: items, retries, progress, or why it ended so."""
    state = step.state
    if state is None:
        if step.status != StepStatus.PENDING:
            return step.skipped_reason
        return "waits for " + ", ".join(dep.name for dep in step.depends_on) if step.depends_on else ""
    parts = []
    if state.is_for_each:
        items = f"{state.items_done}/{state.item_count} items"
        parts.append(items + (f", {state.items_failed} failed" if state.items_failed else ""))
    if step.status == StepStatus.RUNNING:
        if (retry := step.retry) is not None:
            parts.append(f"attempt {retry.attempt}/{retry.max_attempts} in {duration(retry.delay)}: {retry.message}")
        else:
            if state.attempt > 1:
                parts.append(f"attempt {state.attempt}/{state.max_attempts or step.max_attempts}")
            if not state.is_for_each and state.progress is not None:
                parts.append(f"{state.progress:g}/{state.total:g}" if state.total else f"{state.progress:g}")
            if state.progress_message:
                parts.append(state.progress_message)
    elif state.message:
        tolerated = step.status == StepStatus.FAILED and step.on_error == "continue"
        parts.append(("tolerated: " if tolerated else "") + state.message)
    return printable(" · ".join(parts))


def output_text(output: Any) -> str:
    text = json.dumps(output, indent=2, ensure_ascii=False)
    if len(text) > OUTPUT_SHOWN_CHARS:
        text = text[:OUTPUT_SHOWN_CHARS] + "\n… (cut short: --json prints it whole)"
    return "\n".join(printable(line) for line in text.splitlines())


def summary_lines(snapshot: dict[str, Any], *, with_output: bool) -> list[str]:
    seconds = seconds_between(snapshot.get("started_at"), snapshot.get("finished_at"))
    took = f" ({duration(seconds)})" if seconds is not None else ""
    lines = [f"run {snapshot['run_id']}: {snapshot['status']}{took}"]
    if snapshot.get("message"):
        lines[0] += f": {printable(snapshot['message'])}"
    if with_output and snapshot.get("output") is not None:
        lines += ["output:", output_text(snapshot["output"])]
    return lines


class PlainProgress:
    """One line per thing that happened, for logs and pipes: `step 2 fetch: success (300 ms)`."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    @contextlib.contextmanager
    def shown(self, state: RunState) -> Iterator[None]:
        self._line(f"run {state.run_id}: {printable(state.scenario_id)} started")
        yield

    def event(self, event: dict[str, Any], state: RunState) -> None:
        kind = event["type"]
        if kind not in (EventType.STEP_FINISHED, EventType.STEP_RETRYING, EventType.STEP_ITEM_FINISHED):
            return
        step = run_view(state, None, 0).step(event["index"])
        name = f"step {step_number(step)} {printable(step.name)}"
        if kind == EventType.STEP_RETRYING:
            item = f" item {event['item_index']}" if event.get("item_index") is not None else ""
            self._line(
                f"{name}{item}: retrying, attempt {event['attempt']} of {event.get('max_attempts') or '?'} "
                f"in {duration(event.get('delay_seconds') or 0)}: {printable(event.get('message') or '')}"
            )
        elif kind == EventType.STEP_ITEM_FINISHED:
            if event["status"] == StepStatus.FAILED:  # successes are counted when the step ends
                self._line(f"{name} item {event['item_index']}: failed: {printable(event.get('message') or '')}")
        else:
            seconds = step_seconds(step)
            took = f" ({duration(seconds)})" if seconds is not None else ""
            detail = step_detail(step)
            self._line(f"{name}: {step.status}{took}" + (f": {detail}" if detail else ""))

    def note(self, text: str) -> None:
        print(f"stepline run: {printable(text)}", file=sys.stderr, flush=True)

    def reconnecting(self, reason: str) -> None:
        self.note(f"event stream lost ({reason}); reconnecting")

    def cancelling(self, run_id: str) -> None:
        self.note(f"cancelling run {run_id} (Ctrl-C again to stop waiting)")

    def summary(self, snapshot: dict[str, Any], *, with_output: bool) -> None:
        for line in summary_lines(snapshot, with_output=with_output):
            self._line(line)


class LiveProgress:
    """A table of the run's steps redrawn in place: status, time, items, retries, progress messages."""

    def __init__(self, stream: TextIO) -> None:
        self.console = Console(file=stream, highlight=False)
        self.errors = Console(stderr=True, highlight=False)
        self.state: RunState | None = None
        self.live: Live | None = None

    @contextlib.contextmanager
    def shown(self, state: RunState) -> Iterator[None]:
        self.state = state
        live = Live(self._render(), console=self.console, auto_refresh=False, transient=False)
        with live, _logs_through_live():
            self.live = live
            redraw = asyncio.get_running_loop().create_task(self._redraw_now_and_then())
            try:
                yield
            finally:
                redraw.cancel()
                live.update(self._render(), refresh=True)
                self.live = None

    async def _redraw_now_and_then(self) -> None:
        while True:
            await asyncio.sleep(REDRAW_SECONDS)
            self._redraw()

    def _redraw(self) -> None:
        if self.live is not None:
            self.live.update(self._render(), refresh=True)

    def _render(self) -> Group:
        state = self.state
        assert state is not None
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, expand=False)
        table.add_column("#", justify="right", style="dim")
        table.add_column("step", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("time", justify="right", no_wrap=True)
        table.add_column("detail", overflow="ellipsis", no_wrap=True, max_width=80)
        now = datetime.now(UTC)
        for step in run_view(state, None, 0).steps:
            table.add_row(
                str(step_number(step)),
                Text(printable(step.name)),
                Text(step.status, style=STATUS_STYLES.get(step.status, "")),
                duration(step_seconds(step, now)),
                Text(step_detail(step)),
            )
        took = duration(elapsed(state.started_at, state.finished_at, now))
        heading = Text.assemble(
            ("run ", "dim"),
            state.run_id,
            "  ",
            (printable(state.scenario_id), "bold"),
            "  ",
            (state.status, STATUS_STYLES.get(state.status, "")),
            "  ",
            (took, "dim"),
        )
        return Group(heading, table)

    def event(self, event: dict[str, Any], state: RunState) -> None:
        self._redraw()

    def note(self, text: str) -> None:
        line = Text(f"stepline run: {printable(text)}", style="yellow")
        # On the terminal the table is drawn on, above the table: written anywhere else it would be drawn over.
        if self.live is not None and self.errors.is_terminal:
            self.live.console.print(line)
        else:
            self.errors.print(line)

    def reconnecting(self, reason: str) -> None:
        self.note(f"event stream lost ({reason}); reconnecting")

    def cancelling(self, run_id: str) -> None:
        self.note(f"cancelling run {run_id} (Ctrl-C again to stop waiting)")
        self._redraw()

    def summary(self, snapshot: dict[str, Any], *, with_output: bool) -> None:
        first, *rest = summary_lines(snapshot, with_output=with_output)
        self.console.print(Text(first, style=STATUS_STYLES.get(snapshot["status"], "")))
        for line in rest:
            self.console.print(Text(line))


@contextlib.contextmanager
def _logs_through_live() -> Iterator[None]:
    """Log records written above the live table (Live redirects sys.stderr), not through it."""
    handlers = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.__stderr__, sys.__stdout__)
    ]
    previous = [(handler, handler.setStream(sys.stderr)) for handler in handlers]
    try:
        yield
    finally:
        for handler, stream in previous:
            if stream is not None:
                handler.setStream(stream)
