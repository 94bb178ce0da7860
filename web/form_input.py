"""Run forms sent back: the posted controls read into the JSON input, and errors placed by field.

The same `Field` tree that drew the form (`web.forms.describe`) reads it: each control's text is
kept, so a form with problems is shown again exactly as it was sent, each problem beside its field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from web.forms import MISSING, ROOT, Field, RunForm, describe
from web.json_limits import DEFAULT_MAX_DEPTH, JsonProblem, has_lone_surrogate, parse, safe_text, where

# Control name → the values posted under it (a form's FormData, as lists).
Submitted = Mapping[str, Sequence[str]]
INTEGER_TEXT = re.compile(r"^[+-]?\d+$")
NOT_UNICODE = "This field holds characters that are not valid Unicode (lone surrogates); retype it."

# --- Submitted controls → JSON -------------------------------------------------------------------


def read_form(
    schema: dict[str, Any], submitted: Submitted, *, max_depth: int = DEFAULT_MAX_DEPTH, root_name: str = ROOT
) -> tuple[dict[str, Any], RunForm]:
    """The input the form describes and the form as sent, each unreadable control marked.

    With marks (`form.has_errors`) the input lacks those controls' values; it can still be
    validated to find the other fields' problems in the same round. JSON boxes are read as strict
    JSON no deeper than `max_depth`, as the API reads a body.
    """
    root = describe(schema, root_name)
    # A multipart form may declare a charset that decodes into lone surrogates: such text is shown
    # back with U+FFFD in their place, and marked, never kept.
    garbled = {name for name, values in submitted.items() if any(has_lone_surrogate(v) for v in values)}
    if garbled:
        submitted = {name: [safe_text(v) for v in values] for name, values in submitted.items()}
    value = _read(root, submitted, max_depth)
    for made in root.walk():
        if made.name in garbled:
            made.errors.append(NOT_UNICODE)
    form = RunForm(root)
    if root.kind == "json" and not root.value.strip():
        root.errors.clear()  # an empty box is the empty input, as an API caller would send {}
        value = {}
    if not isinstance(value, dict):
        if not root.errors:
            root.errors.append("The input must be a JSON object.")
        value = {}
    return value, form


def _first(submitted: Submitted, name: str) -> str:
    values = submitted.get(name) or [""]
    return values[0].replace("\r\n", "\n")


def _read(made: Field, submitted: Submitted, max_depth: int) -> Any:
    if made.kind == "group":
        out = {}
        for key, child in zip(made.keys, made.children, strict=True):
            value = _read(child, submitted, max_depth)
            if value is not MISSING:
                out[key] = value
        return _unless_untouched(made, out)
    if made.kind == "choice":
        raw = _first(submitted, f"{made.name}~choice")
        made.chosen = int(raw) if raw.isdigit() and int(raw) < len(made.children) else 0
        for index, alternative in enumerate(made.children):
            if index != made.chosen:
                _show(alternative, submitted, max_depth)
        return _unless_untouched(made, _read(made.children[made.chosen], submitted, max_depth))
    if made.kind == "checkbox":
        made.checked = bool(submitted.get(made.name))
        if made.checked:
            return True
        # An untouched optional box means "not set"; it only says false when false differs from the default.
        return False if made.required or made.schema.get("default") is True else MISSING
    if made.kind in ("select", "checkboxes"):
        return _read_options(made, submitted)
    made.value = _first(submitted, made.name)
    text = made.value if made.kind in ("json", "lines") or made.multiline else made.value.strip()
    if not text.strip():
        return _empty(made)
    if made.kind == "text":
        return text
    if made.kind == "number":
        return _number(made, text, made.schema.get("type", "number"))
    if made.kind == "lines":
        items = [line.strip() for line in text.split("\n") if line.strip()]
        if made.item_type == "string":
            return items
        numbers = [_number(made, item, made.item_type, f"Line {i + 1}: ") for i, item in enumerate(items)]
        return [n for n in numbers if n is not MISSING]
    try:
        return parse(text, max_depth=max_depth)
    except JsonProblem as problem:
        made.errors.append(_json_error(text, problem))
        return MISSING


def _json_error(text: str, problem: JsonProblem) -> str:
    if problem.kind == "json_invalid":
        position = problem.loc[0] if problem.loc and isinstance(problem.loc[0], int) else 0
        line = text.count("\n", 0, position) + 1
        column = position - text.rfind("\n", 0, position)
        reason = problem.message.removeprefix("JSON decode error: ")
        return f"Not valid JSON: {reason} (line {line}, column {column})."
    message = problem.message[0].upper() + problem.message[1:]
    return f"{message}." if problem.kind == "json_too_deep" else f"{message}, at {where(problem.loc)}."


def _unless_untouched(made: Field, value: Any) -> Any:
    """An optional group (or choice) left wholly blank is absent, whatever its own fields require."""
    if made.required or not _blank(made):
        return value
    for each in made.walk():
        each.errors.clear()
    return _empty(made)


def _blank(made: Field) -> bool:
    if made.kind == "choice":
        return _blank(made.children[made.chosen])
    if made.kind == "group":
        return all(_blank(child) for child in made.children)
    if made.kind == "checkbox":
        return not made.checked
    if made.kind in ("select", "checkboxes"):
        return not any(option.selected for option in made.options)
    return not made.value.strip()


def _show(made: Field, submitted: Submitted, max_depth: int) -> None:
    """Keep what was typed in an alternative that was not chosen, without judging it."""
    _read(made, submitted, max_depth)
    for each in made.walk():
        each.errors.clear()


def _read_options(made: Field, submitted: Submitted) -> Any:
    known = {option.value for option in made.options}
    sent = [v for v in submitted.get(made.name, []) if v]
    for option in made.options:
        option.selected = option.value in sent
    if any(v not in known for v in sent):
        made.errors.append("Choose one of the options.")
        return MISSING
    if made.kind == "checkboxes":
        return [json.loads(v) for v in sent] if sent or made.required else MISSING
    return json.loads(sent[0]) if sent else _empty(made)


def _number(made: Field, text: str, kind: str, line: str = "") -> Any:
    try:
        # More digits than Python converts (4300) is a ValueError too: no number anyone types.
        number: float = int(text) if INTEGER_TEXT.match(text) else float(text)
    except ValueError:
        number = math.nan
    if isinstance(number, int):
        return number
    if not math.isfinite(number) or (kind == "integer" and not number.is_integer()):
        made.errors.append(line + ("Enter a whole number." if kind == "integer" else "Enter a number."))
        return MISSING
    return int(number) if kind == "integer" else number


def _empty(made: Field) -> Any:
    """What a control left blank means: null where allowed, else absent (the default, if it has one),
    else a missing answer."""
    if made.nullable:
        return None if made.required else MISSING
    if "default" in made.schema:
        return MISSING  # the run gets the default, as an API caller who leaves it out does
    if made.required and made.kind not in ("group", "lines", "checkboxes"):
        made.errors.append("This field is required.")
    if made.kind == "group":
        return {} if made.required else MISSING
    if made.kind in ("lines", "checkboxes") and made.required:
        return []
    return MISSING


# --- Validation errors → the fields they concern -------------------------------------------------


def add_errors(form: RunForm, errors: list[dict[str, Any]], body_key: str = "input") -> None:
    """Place each `{loc: ["body", <body_key>, ...], msg}` beside its field; the rest above the form.

    A field that could not be read keeps its own message: its value was left out of what was
    validated, so the schema's complaint about it would only mislead.
    """
    unreadable = {id(f) for f in form.root.walk() if f.errors}
    for error in errors:
        loc = list(error.get("loc", []))
        path = loc[2:] if loc[:2] == ["body", body_key] else loc
        message = _friendly(error)
        target, rest = _locate(form.root, path)
        if id(target) in unreadable:
            continue
        if rest:
            where = ".".join(str(p) for p in rest)
            one_item = len(rest) == 1 and isinstance(rest[0], int)
            message = f"Item {rest[0] + 1}: {message}" if one_item else f"At {where}: {message}"
        if target is form.root and form.root.kind == "group":
            form.errors.append(f"{'.'.join(str(p) for p in path)}: {message}" if path else message)
        else:
            target.errors.append(message)


def _locate(made: Field, path: list[Any]) -> tuple[Field, list[Any]]:
    if made.kind == "choice":
        return _locate(made.children[made.chosen], path)
    if made.kind == "group" and path and path[0] in made.keys:
        return _locate(made.children[made.keys.index(path[0])], path[1:])
    return made, path


def _friendly(error: dict[str, Any]) -> str:
    if error.get("type") == "jsonschema.required":
        return "This field is required."
    return str(error.get("msg", "Invalid value."))
