"""JSON values as pages show them: a bounded tree and a bounded raw text, whatever the value's depth or size.

A run holds untrusted values up to the input and output limits (nested a few hundred levels, a few MB).
Neither view recurses per level of the value: the tree stops at a fixed display depth and the raw text
is written by an explicit stack. Both stop after a fixed amount of content, so a page carries about
100 KB per value at most, however large the value, and renders it in milliseconds; the whole value is
one link away (the run's JSON).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any

# Levels the tree draws; deeper containers are summarised (people read the raw JSON for those).
TREE_DEPTH = 8
# Keys or items drawn per object or list; the raw JSON beside the tree has the rest.
TREE_ITEMS = 100
# Rows drawn in one tree: a wide and deep value would otherwise draw TREE_ITEMS ** TREE_DEPTH rows.
TREE_ROWS = 500
# Characters of one string (or key) the tree shows, and of all its strings together.
TREE_STRING_CHARS = 1000
TREE_TEXT_CHARS = 20_000
# A string once the text budget is spent still shows its start, so the tree stays readable.
TREE_MIN_STRING_CHARS = 40
# Keys named in a container's summary line ("3 keys: a, b, c"), and the characters they take at most.
SUMMARY_KEYS = 30
SUMMARY_CHARS = 60
# Characters of raw JSON a page carries per value: enough to read, small next to a 1 MiB output.
RAW_JSON_CHARS = 32 * 1024
# Levels the raw text indents; deeper levels are written on one line (indenting 256 levels costs more
# spaces than content).
PRETTY_DEPTH = 24
INDENT = 2
# The style of each kind of scalar in the tree.
SCALAR_CLASSES = {"string": "j-str", "number": "j-num", "boolean": "j-bool", "null": "j-null"}


def _encode_scalar(value: Any) -> str:
    """A scalar (or anything else, as its text) as `json.dumps(value, ensure_ascii=False)` writes it."""
    if isinstance(value, str):
        return encode_basestring(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return json.dumps(value)
    return encode_basestring(str(value))


def _opening(value: Any) -> str | None:
    """The bracket a non-empty container opens with; None for a scalar or an empty container."""
    if isinstance(value, dict):
        return "{" if value else None
    if isinstance(value, list | tuple):
        return "[" if value else None
    return None


def _leaf(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list | tuple):
        return "[]"
    return _encode_scalar(value)


def _frame(value: Any, depth: int) -> list[Any]:
    """An open container: its entries, whether it is an object, the text before its first entry and
    before each later one, and its closing text."""
    if depth <= PRETTY_DEPTH:
        newline = "\n" + " " * (INDENT * depth)
        first, later, closing = newline, "," + newline, "\n" + " " * (INDENT * (depth - 1))
    else:
        first, later, closing = "", ", ", ""
    is_object = isinstance(value, dict)
    entries = iter(value.items()) if is_object else iter(value)
    return [entries, is_object, first, later, closing + ("}" if is_object else "]")]


def iter_json(value: Any) -> Iterator[str]:
    """`value` as indented JSON text, in pieces, with an explicit stack instead of recursion.

    Up to PRETTY_DEPTH levels the text is what `json.dumps(value, indent=2, ensure_ascii=False)` gives;
    deeper containers are written compactly on one line.
    """
    opening = _opening(value)
    if opening is None:
        yield _leaf(value)
        return
    yield opening
    stack = [_frame(value, 1)]
    while stack:
        frame = stack[-1]
        entries, is_object = frame[0], frame[1]
        for entry in entries:  # resumed where it stopped when a nested container is done
            piece = frame[2]
            frame[2] = frame[3]
            if is_object:
                key, entry = entry
                piece += encode_basestring(key if isinstance(key, str) else str(key)) + ": "
            opening = _opening(entry)
            if opening is not None:
                yield piece + opening
                stack.append(_frame(entry, len(stack) + 1))
                break
            yield piece + _leaf(entry)
        else:
            stack.pop()
            yield frame[4]


def pretty_json(value: Any) -> str:
    """The whole value as indented JSON text, at any depth."""
    return "".join(iter_json(value))


def _head(value: Any, limit: int) -> tuple[str, bool]:
    """The first `limit` characters of the value's JSON text, and whether there was more."""
    pieces: list[str] = []
    size = 0
    for piece in iter_json(value):
        if size + len(piece) > limit:
            pieces.append(piece[: limit - size])
            return "".join(pieces), True
        pieces.append(piece)
        size += len(piece)
    return "".join(pieces), False


@dataclass
class RawJson:
    """The start of a value's JSON text as a page shows it; `truncated` when the value is longer."""

    value: Any
    text: str
    truncated: bool

    @cached_property
    def total_bytes(self) -> int | None:
        """The whole value's size as compact JSON, or None when it is too deep to measure that way."""
        try:
            return len(json.dumps(self.value, ensure_ascii=False, separators=(",", ":"), default=str).encode())
        except (RecursionError, ValueError):
            return None

    @property
    def shown_kb(self) -> int:
        return max(1, round(len(self.text.encode()) / 1024))

    @property
    def total_kb(self) -> int | None:
        total = self.total_bytes
        return None if total is None else max(1, round(total / 1024))


def raw_json(value: Any, limit: int = RAW_JSON_CHARS, *, in_bytes: bool = False) -> RawJson:
    """The start of the value's JSON text: `limit` characters, or with `in_bytes` that many bytes of UTF-8."""
    text, truncated = _head(value, limit)
    if in_bytes and not text.isascii():
        encoded = text.encode()
        if len(encoded) > limit:
            text, truncated = encoded[:limit].decode("utf-8", "ignore"), True
    return RawJson(value, text, truncated)


def json_is_short(value: Any, limit: int) -> bool:
    """Whether the value's indented JSON text is shorter than `limit` characters (read no further)."""
    return not _head(value, limit - 1)[1]


@dataclass
class JsonTree:
    """One value of the tree. `kind` is object, array, string, number, boolean or null.

    A container lists its drawn `entries` (key or index, subtree); `hidden` counts those left out, and
    `collapsed` marks one nested deeper than the tree draws (it shows only its summary).
    """

    kind: str
    depth: int
    text: str = ""  # a scalar as shown
    cut_chars: int = 0  # characters of a string not shown
    length: int = 0  # keys or items of a container
    keys: list[str] = field(default_factory=list)  # the first few keys, for the summary line
    entries: list[tuple[str | int, JsonTree]] = field(default_factory=list)
    hidden: int = 0
    collapsed: bool = False

    @property
    def is_container(self) -> bool:
        return self.kind in ("object", "array")

    @property
    def opens(self) -> bool:
        """Drawn as a node that opens to show its entries (not empty, not past the tree's depth)."""
        return self.is_container and bool(self.length) and not self.collapsed

    @property
    def bracket(self) -> str:
        return "{…}" if self.kind == "object" else "[…]"

    @property
    def summary(self) -> str:
        """A container in a few words: `3 keys: a, b, c` (the names cut short at a word) or `7 items`."""
        if self.kind == "object":
            return f"{self.length} {'key' if self.length == 1 else 'keys'}: {_shorten(', '.join(self.keys))}"
        return f"{self.length} {'item' if self.length == 1 else 'items'}"

    @property
    def css(self) -> str:
        return SCALAR_CLASSES.get(self.kind, "j-empty")


@dataclass
class _Budget:
    rows: int = TREE_ROWS
    text: int = TREE_TEXT_CHARS

    def take_text(self, text: str) -> tuple[str, int]:
        allowed = max(TREE_MIN_STRING_CHARS, min(TREE_STRING_CHARS, self.text))
        shown = text[:allowed]
        self.text -= len(shown)
        return shown, len(text) - len(shown)


def json_tree(value: Any) -> JsonTree:
    """The value as the page's tree draws it: at most TREE_DEPTH levels and TREE_ROWS rows."""
    return _tree(value, 0, _Budget())


def _tree(value: Any, depth: int, budget: _Budget) -> JsonTree:
    # Recursion is bounded by TREE_DEPTH, not by the value.
    if isinstance(value, dict):
        node = JsonTree("object", depth, length=len(value), keys=_first_keys(value))
        items: Iterator[tuple[Any, Any]] = iter(value.items())
    elif isinstance(value, list | tuple):
        node = JsonTree("array", depth, length=len(value))
        items = iter(enumerate(value))
    elif value is None:
        return JsonTree("null", depth, text="null")
    elif isinstance(value, bool):
        return JsonTree("boolean", depth, text="true" if value else "false")
    elif isinstance(value, int | float):
        return JsonTree("number", depth, text=_encode_scalar(value))
    else:
        text, cut = budget.take_text(value if isinstance(value, str) else str(value))
        return JsonTree("string", depth, text=text, cut_chars=cut)
    if depth >= TREE_DEPTH:
        node.collapsed = bool(node.length)
        return node
    for key, item in items:
        if len(node.entries) >= TREE_ITEMS or budget.rows <= 0:
            break
        budget.rows -= 1
        label = key if isinstance(key, int) else budget.take_text(str(key))[0]
        node.entries.append((label, _tree(item, depth + 1, budget)))
    node.hidden = node.length - len(node.entries)
    return node


def _shorten(text: str) -> str:
    """As Jinja's `truncate(SUMMARY_CHARS)`: whole words, "..." after, a few characters of leeway."""
    if len(text) <= SUMMARY_CHARS + 5:
        return text
    return text[: SUMMARY_CHARS - 3].rsplit(" ", 1)[0] + "..."


def _first_keys(value: dict[Any, Any]) -> list[str]:
    keys = []
    for key in value:
        if len(keys) == SUMMARY_KEYS:
            break
        keys.append(str(key)[:TREE_MIN_STRING_CHARS])
    return keys
