"""Strict JSON for everything the service takes in and keeps.

Python's `json` is lenient where the run history cannot be: it reads NaN and Infinity (and 1e999 as
infinity), decodes `"\\ud800"` into a lone surrogate that UTF-8 cannot encode, and recurses once per
nesting level. A value is kept only if it is strict JSON: finite numbers, valid Unicode, nested at most
`max_depth` levels (a scalar is 0 levels deep, `[]` one, `{"a": []}` two). Depth is measured without
recursion: on the raw text before it is parsed, and by an explicit stack on values already parsed.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

# Settings.max_json_depth's default, for callers that are not given one.
DEFAULT_MAX_DEPTH = 64
# What a cut-down value keeps of its JSON text, so its page still shows what it began with.
PREVIEW_BYTES = 4096
# A message (a tool's error text) long enough for a traceback, short enough for every list and page.
MESSAGE_MAX_CHARS = 4000

LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# A string (an unterminated one runs to the end) or a bracket: brackets inside strings do not nest.
_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)


class JsonProblem(ValueError):
    """Why a document or value is not strict JSON: `loc` is a position in the text or a path to the value."""

    def __init__(self, kind: str, message: str, loc: list[str | int]) -> None:
        super().__init__(message)
        self.kind = kind  # json_invalid | json_too_deep | json_non_finite | json_lone_surrogate | json_type
        self.message = message
        self.loc = loc


# --- Documents: text → value ---------------------------------------------------------------------


def parse(document: bytes | str, *, max_depth: int) -> Any:
    """The value of a strict JSON document; JsonProblem says what is wrong and where."""
    if isinstance(document, bytes):
        try:
            document = document.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonProblem("json_invalid", f"Not UTF-8: byte {exc.start} cannot be decoded", [exc.start]) from None
    try:
        value = json.loads(document)
    except json.JSONDecodeError as exc:
        raise JsonProblem("json_invalid", f"JSON decode error: {exc.msg}", [exc.pos]) from None
    except RecursionError:
        # The decoder gave up hundreds of levels down; find where the limit was passed.
        raise _too_deep_in_text(document, max_depth) from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise JsonProblem("json_invalid", f"JSON decode error: {exc}", [0]) from None
    try:
        check(value, max_depth=max_depth)
    except JsonProblem as problem:
        if problem.kind == "json_too_deep":
            raise _too_deep_in_text(document, max_depth) from None  # a position says more than 65 keys
        raise
    return value


def _too_deep_in_text(text: str, max_depth: int) -> JsonProblem:
    depth = 0
    for token in _STRING_OR_BRACKET.finditer(text):
        char = text[token.start()]
        if char in "[{":
            depth += 1
            if depth > max_depth:
                position = token.start()
                line = text.count("\n", 0, position) + 1
                column = position - text.rfind("\n", 0, position)
                message = f"JSON nested deeper than {max_depth} levels (line {line}, column {column})"
                return JsonProblem("json_too_deep", message, [position])
        elif char in "]}":
            depth -= 1
    return JsonProblem("json_too_deep", f"JSON nested deeper than {max_depth} levels", [0])


# --- Values: what may be kept --------------------------------------------------------------------

Link = tuple["Link | None", str | int] | None


def check(value: Any, *, max_depth: int) -> None:
    """Raise JsonProblem unless `value` is strict JSON no deeper than `max_depth`; `loc` is its path.

    An explicit stack of containers, each with a link to its parent: no recursion, and a path is
    only spelled out for the value that fails.
    """
    if not isinstance(value, dict | list):
        _check_scalar(value, None)
        return
    if max_depth < 1:
        raise JsonProblem("json_too_deep", f"nested deeper than {max_depth} levels", [])
    stack: list[tuple[Any, int, Link]] = [(value, 1, None)]
    while stack:
        container, depth, link = stack.pop()
        is_dict = isinstance(container, dict)
        for key, child in container.items() if is_dict else enumerate(container):
            if is_dict:
                if not isinstance(key, str):
                    raise JsonProblem("json_type", f"a key of type {type(key).__name__}, not text", _path(link))
                if LONE_SURROGATE.search(key):
                    _check_scalar(key, (link, safe_text(key)))
            if isinstance(child, dict | list):
                if depth >= max_depth:
                    raise JsonProblem("json_too_deep", f"nested deeper than {max_depth} levels", _path((link, key)))
                if child:  # an empty one has nothing more to check
                    stack.append((child, depth + 1, (link, key)))
            elif type(child) is str:
                if LONE_SURROGATE.search(child):
                    _check_scalar(child, (link, key))
            elif not (child is None or type(child) is int or type(child) is bool):
                _check_scalar(child, (link, key))


def _check_scalar(value: Any, link: Link) -> None:
    if isinstance(value, str):
        found = LONE_SURROGATE.search(value)
        if found:
            escaped = f"\\u{ord(found.group()):04x}"
            raise JsonProblem("json_lone_surrogate", f"a lone surrogate ({escaped}) is not valid Unicode", _path(link))
    elif isinstance(value, float) and not isinstance(value, bool):
        if not math.isfinite(value):
            name = "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
            raise JsonProblem("json_non_finite", f"{name} is not valid JSON: numbers must be finite", _path(link))
    elif not (value is None or isinstance(value, bool | int)):
        raise JsonProblem("json_type", f"a {type(value).__name__} is not a JSON value", _path(link))


def _path(link: Link) -> list[str | int]:
    path: list[str | int] = []
    while link is not None:
        link, key = link
        path.append(key)
    return path[::-1]


def where(path: list[str | int]) -> str:
    """A path as people read it (`sources.0.url`), as scenario bindings write it."""
    return ".".join(str(part) for part in path) if path else "the top level"


def dumps(value: Any) -> str:
    """Compact JSON text of a checked value, as it is measured and stored."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def json_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


@dataclass(frozen=True)
class Bounded:
    """A value as kept: itself, or, when its JSON was larger than allowed, a marker with a preview."""

    value: Any
    size: int
    truncated: bool


def bounded(value: Any, *, max_bytes: int) -> Bounded:
    """`value`, or `{"truncated": true, "bytes": N, "preview": "<its JSON's first bytes>"}` if larger."""
    text = dumps(value)
    size = json_size(text)
    if size <= max_bytes:
        return Bounded(value, size, False)
    keep = min(PREVIEW_BYTES, max_bytes)
    preview = text[:keep].encode("utf-8")[:keep].decode("utf-8", "ignore")
    return Bounded({"truncated": True, "bytes": size, "preview": preview}, size, True)


def safe_text(text: str, max_chars: int | None = None) -> str:
    """Text fit to store and show: each lone surrogate replaced by U+FFFD, cut at `max_chars`."""
    text = LONE_SURROGATE.sub("\ufffd", text)
    if max_chars is not None and len(text) > max_chars:
        text = f"{text[:max_chars]}… ({len(text) - max_chars:,} more characters)"
    return text


def has_lone_surrogate(text: str) -> bool:
    return LONE_SURROGATE.search(text) is not None
