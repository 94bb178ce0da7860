"""Runs and events as the history stores them: strict JSON in valid UTF-8, or one run's bad data repaired.

Every write is encoded before its transaction, so a value the file cannot hold (a lone surrogate,
NaN or Infinity, an object JSON has no form for, nesting deeper than the encoder goes) is found up
front and belongs to one run. That run is refused: it ends failed, saying what could not be
recorded, and the value is stored repaired (a lone surrogate as U+FFFD, NaN and Infinity as null,
any other non-JSON value as its text, nesting past REPAIR_MAX_DEPTH as null), so its history stays
whole, seq after seq, and reads back the same after a restart. Other runs' writes never wait on it.

A NUL character is valid text and JSON keeps it (escaped), so events hold it as given; PostgreSQL's text
columns cannot, so the run's own plain-text columns (its message, scenario, starter) hold U+FFFD in its
place, on either database, and the run is not refused for it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from web.events import EventType, RecordedEvent, RunStatus
from web.json_limits import dumps as strict_dumps

# Stored as columns; the rest of an event is its JSON `data`.
EVENT_KEYS = frozenset({"type", "run_id", "seq"})
# Deeper than any input the settings let through (max_json_depth is at most 200) and inside the JSON
# encoder's recursion limit; a value nested further is cut off there (null) when repaired.
REPAIR_MAX_DEPTH = 400
# What encoding raises for a value the history cannot hold (UnicodeEncodeError is a ValueError).
UNSTORABLE = (ValueError, TypeError, RecursionError)
STOPPED_STEP_MESSAGE = "Stopped: the run's history could not be recorded"
# How event fields are named in a refusal's message.
FIELD_NAMES = {
    "input": "input",
    "output": "output",
    "content": "raw content",
    "message": "message",
    "progress": "progress",
    "total": "progress total",
    "plan": "plan",
}


@dataclass
class Row:
    """The SQL parameters of one queued write, encoded before its transaction."""

    op: tuple[str, Any]
    run_id: str
    seq: int = 0  # 0 for the run's own row
    run: tuple[str, str, str, str, str, str, str | None] | None = None
    event: tuple[str, int, str, str] | None = None
    started: tuple[str, str] | None = None
    finished: tuple[str, str, str, str] | None = None
    status: tuple[str, str] | None = None  # waiting for a person, or running again


@dataclass
class Refusal:
    """A run whose data the history could not hold as given: why, and what it stored instead."""

    run_id: str
    why: str
    # The stored version of each event that had to be repaired (or, for run_finished, failed).
    events: list[dict[str, Any]] = field(default_factory=list)
    # The run's input as stored, when it had to be repaired.
    input: dict[str, Any] | None = None


def refusal_message(why: str) -> str:
    return f"History could not be recorded: {why}. The run was stopped; its history keeps that value repaired."


def dumps(value: Any) -> str:
    """Strict JSON that SQLite can store as UTF-8 text; raises one of UNSTORABLE otherwise."""
    text = strict_dumps(value)
    if not text.isascii():
        text.encode("utf-8")  # a lone surrogate fails here, before the transaction, not inside it
    return text


# What a recorded event's JSON is until it is made (None is a result: an event the history must repair).
NOT_MADE = object()


def event_json(event: dict[str, Any]) -> str | None:
    """The whole event as the history encodes it (strict JSON, valid UTF-8), which the JSON stream sends too.

    Made once per recorded event, by whichever needs it first; None when the event holds a value the
    history must repair (a stream then encodes it leniently, the history as `encode_event` says).
    """
    made = getattr(event, "json_text", NOT_MADE)
    if made is not NOT_MADE:
        return made
    try:
        text: str | None = dumps(event)
    except UNSTORABLE:
        text = None
    if isinstance(event, RecordedEvent):
        event.json_text = text
    return text


def _fields_json(event: dict[str, Any]) -> str | None:
    """The event's fields as stored (`data`): its JSON without the keys stored as columns, which come first."""
    text = event_json(event)
    if text is None:
        return None
    head = f'{{"type":"{event["type"]}","run_id":"{event["run_id"]}","seq":{event["seq"]}'
    if not text.startswith(head):  # keys in another order, or ones that JSON escapes: encoded on their own
        return None
    return "{" + text[len(head) + 1 :] if len(text) > len(head) + 1 else "{}"


def loads(text: str) -> Any:
    # Files written before storage was strict may hold NaN or Infinity: read them as null.
    return json.loads(text, parse_constant=lambda _constant: None)


def encode_run(op: tuple[str, Any], refusals: dict[str, Refusal]) -> Row:
    """The runs-table row of a new run; a run whose input cannot be stored is refused, its input repaired."""
    run = op[1]
    try:
        input_text = dumps(run.input)
    except UNSTORABLE as exc:
        repaired = repair(run.input)
        input_text = dumps(repaired)
        refusal = refusals.setdefault(run.run_id, Refusal(run.run_id, f"the run's input contains {_what(exc)}"))
        refusal.input = repaired
    started_by = column_text(run.started_by) if run.started_by is not None else None
    params = (run.run_id, column_text(run.scenario_id), run.status, column_text(run.message), input_text,
              run.created_at, started_by)
    return Row(op, run.run_id, run=params)


def encode_event(op: tuple[str, Any], refused: str | None, refusals: dict[str, Refusal]) -> Row:
    """An event's row. `refused` says why its run was refused earlier: its run_finished is then stored failed."""
    event: dict[str, Any] = op[1]
    run_id, kind = event["run_id"], event["type"]
    fields_text = _fields_json(event) if refused is None else None
    if fields_text is not None:  # the usual case: the event as it was encoded once, for the streams too
        return _event_row(op, event, fields_text, event)
    data = {key: value for key, value in event.items() if key not in EVENT_KEYS}
    changed = False
    try:
        data_text = dumps(data)
    except UNSTORABLE:
        data, why = _repair_fields(event, data)
        refused = refused or why
        refusals.setdefault(run_id, Refusal(run_id, refused))
        changed = True
    if kind == EventType.RUN_FINISHED and refused is not None:
        finished = _finished_as_refused(data, refused)
        if finished is not data:
            data, changed = finished, True
            refusals.setdefault(run_id, Refusal(run_id, refused))
    if changed:
        data_text = dumps(data)
        refusals[run_id].events.append({"type": kind, "run_id": run_id, "seq": event["seq"], **data})
    return _event_row(op, event, data_text, data)


def _event_row(op: tuple[str, Any], event: dict[str, Any], fields_text: str, fields: dict[str, Any]) -> Row:
    """The row of `event` stored as `fields_text`; a run's start and end also update its run row, from `fields`."""
    run_id, seq, kind = event["run_id"], event["seq"], event["type"]
    row = Row(op, run_id, seq, event=(run_id, seq, kind, fields_text))
    if kind == EventType.RUN_STARTED:
        row.started = (fields["started_at"], run_id)
    elif kind == EventType.RUN_FINISHED:
        message = fields.get("message", "")
        row.finished = (fields["status"], column_text(message) if isinstance(message, str) else message,
                        fields["finished_at"], run_id)
    elif kind in (EventType.INPUT_REQUESTED, EventType.INPUT_ANSWERED) and fields.get("run_status"):
        row.status = (fields["run_status"], run_id)
    return row


def repair(value: Any, depth: int = 0, path: frozenset[int] = frozenset()) -> Any:
    """`value` with everything strict JSON in UTF-8 cannot hold replaced (see the module's docstring)."""
    if isinstance(value, str):
        return text(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict | list | tuple):
        # A value that contains itself is cut where it comes round again.
        if depth >= REPAIR_MAX_DEPTH or id(value) in path:
            return None
        inner = path | {id(value)}
        if isinstance(value, dict):
            return {text(key if isinstance(key, str) else str(key)): repair(item, depth + 1, inner)
                    for key, item in value.items()}
        return [repair(item, depth + 1, inner) for item in value]
    return text(str(value))


def text(value: str) -> str:
    """`value` with each lone surrogate replaced by U+FFFD (a surrogate pair becomes its character)."""
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


def column_text(value: str) -> str:
    """`value` as a plain-text column holds it: repaired as `text` does, and NUL (which PostgreSQL's text
    refuses) as U+FFFD on either database, so both read back the same."""
    return text(value).replace("\x00", "\ufffd")


def _repair_fields(event: dict[str, Any], data: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """`data` with each field that cannot be stored repaired, and why (naming the first such field)."""
    repaired, why = {}, None
    for key, value in data.items():
        try:
            dumps(value)
        except UNSTORABLE as exc:
            why = why or f"{_where(event, key)} contains {_what(exc)}"
            value = repair(value)
        repaired[key] = value
    return repaired, why or f"its {event['type']} event could not be encoded"


def _finished_as_refused(data: dict[str, Any], why: str) -> dict[str, Any]:
    """A refused run's run_finished as stored: failed, saying why; `data` itself when it says so already."""
    refusal = refusal_message(why)
    message = data.get("message")
    message = message if isinstance(message, str) else ""
    if data.get("status") == RunStatus.FAILED and refusal in message:
        return data
    if data.get("status") == RunStatus.FAILED and message:
        # It failed for its own reason first: keep that, and add why its history is incomplete.
        refusal = f"{message.rstrip('.')}. {refusal}"
    return {**data, "status": RunStatus.FAILED.value, "message": refusal}


def _where(event: dict[str, Any], key: str) -> str:
    name = FIELD_NAMES.get(key, f"field '{text(key)}'")
    step = event.get("step_name")
    if not isinstance(step, str):
        return f"the run's {name}"
    owner = f"step '{text(step)}'"
    if isinstance(event.get("item_index"), int):
        owner = f"item {event['item_index']} of {owner}"
    return f"the {name} of {owner}"


def _what(exc: BaseException) -> str:
    if isinstance(exc, UnicodeEncodeError):
        sample = exc.object[exc.start : min(exc.end, exc.start + 4)]
        return f"text that is not valid Unicode ({ascii(sample)[1:-1]})"
    if isinstance(exc, RecursionError):
        return "values nested too deeply to store"
    if isinstance(exc, ValueError) and "Circular" in str(exc):
        return "a value that contains itself"
    if isinstance(exc, ValueError):
        return "a number JSON cannot hold (NaN or Infinity)"
    return f"a value JSON cannot hold ({exc})"
