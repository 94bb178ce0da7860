"""The run list: newest first, filtered, a page at a time, with opaque cursors."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from web.events import RunStatus
from web.run_state import RunState
from web.store import RunRow

# The filter's choices, in the order a run goes through them.
RUN_STATUSES = tuple(status.value for status in RunStatus)
# The longest cursor accepted: ours are about 100 characters.
CURSOR_MAX_CHARS = 256
# A page of the run list: enough for a screen, small enough to read from disk at once.
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 200


class BadCursor(ValueError):
    pass


@dataclass(frozen=True)
class RunPage:
    """One page of the run list, newest first; `next_cursor` fetches the next (None: this is the last)."""

    runs: list[RunRow]
    next_cursor: str | None


def summary_of(state: RunState) -> RunRow:
    return RunRow(
        run_id=state.run_id,
        scenario_id=state.scenario_id,
        status=state.status,
        message=state.message,
        input=state.input,
        created_at=state.created_at,
        started_at=state.started_at,
        finished_at=state.finished_at,
        started_by=state.started_by["name"] if state.started_by is not None else None,
    )


def encode_cursor(row: RunRow) -> str:
    # Opaque to clients; a position in the (created_at, run_id) order, so pages never overlap or skip.
    raw = json.dumps([row.created_at, row.run_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    # Ours are about 100 characters; a long one is not ours, and its JSON could nest deep enough to
    # exhaust the decoder's recursion.
    if len(cursor) > CURSOR_MAX_CHARS:
        raise BadCursor("not a cursor this API returned (use next_cursor as given)")
    try:
        position = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        raise BadCursor("not a cursor this API returned (use next_cursor as given)") from None
    if not (isinstance(position, list) and len(position) == 2 and all(isinstance(p, str) for p in position)):
        raise BadCursor("not a cursor this API returned (use next_cursor as given)")
    return position[0], position[1]
