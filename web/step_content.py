"""A step's content as its step_finished event records it: what the output already holds is not written twice.

A tool's output is usually its text: the text itself, or that text parsed as JSON. Recording both the output and
the block that holds the same text would store and stream each result twice, so a text block whose text the
output reproduces byte for byte is recorded as a reference to it:

    {"type": "text", "text_from": "output"}                                 the text is the output (a string)
    {"type": "text", "text_from": "output", "json": "indent2"}              json.dumps(output, indent=2)
    {"type": "text", "text_from": "output", "json": "compact", "ascii": true}

and the content of a result made only of other blocks, whose output is that very list, as `{"from": "output"}`.
The block's other keys (annotations, _meta) stay. Only a reproduction checked here is ever recorded, so the fold
(`full_content`) gives back exactly the blocks the tool sent.
"""

from __future__ import annotations

import json
from typing import Any

TEXT_FROM = "text_from"
# A result whose output is its list of content blocks (it has no text): its content is the output.
CONTENT_FROM_OUTPUT = {"from": "output"}
# The keys of a text block that may be recorded as a reference (MCP's, as the SDK dumps them).
TEXT_BLOCK_KEYS = frozenset({"type", "text", "annotations", "_meta"})
# How JSON output is written out as text, by name: json.dumps's keyword arguments for each.
JSON_STYLES: dict[str, dict[str, Any]] = {
    "indent2": {"indent": 2},  # the MCP Python SDK's, and JSON.stringify(value, null, 2)'s
    "compact": {"separators": (",", ":")},  # JSON.stringify(value)'s
    "spaced": {},  # json.dumps's default
}


def recorded_content(output: Any, content: Any) -> Any:
    """`content` as step_finished records it, each block the output reproduces replaced by a reference."""
    if not isinstance(content, list) or not content:
        return content
    if isinstance(output, list) and (output is content or output == content):
        return dict(CONTENT_FROM_OUTPUT)
    written: dict[tuple[str, bool], str] = {}  # output as each style writes it, made once
    recorded = content
    for position, block in enumerate(content):
        if not (isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str)):
            continue
        if not block.keys() <= TEXT_BLOCK_KEYS:  # a key of its own could be mistaken for a hint
            continue
        hint = _reproduction(output, block["text"], written)
        if hint is None:
            continue
        if recorded is content:
            recorded = list(content)
        recorded[position] = _reference(block, hint)
    return recorded


def full_content(output: Any, recorded: Any) -> Any:
    """The content blocks as the tool sent them, from step_finished's `output` and `content` (either form)."""
    if recorded == CONTENT_FROM_OUTPUT:
        return output
    if not isinstance(recorded, list):
        return recorded
    if not any(isinstance(block, dict) and TEXT_FROM in block for block in recorded):
        return recorded  # recorded whole (and every event recorded before references were)
    written: dict[tuple[str, bool], str] = {}
    return [_restored(output, block, written) if isinstance(block, dict) and TEXT_FROM in block else block
            for block in recorded]


def _reproduction(output: Any, text: str, written: dict[tuple[str, bool], str]) -> dict[str, Any] | None:
    """How the output writes out as exactly `text`: {} (it is that text), a JSON style, or None (it does not)."""
    if isinstance(output, str) and output == text:
        return {}
    if not (output is None or isinstance(output, dict | list | str | int | float)) or not text:
        return None
    # The first characters tell which styles can match: only those are written out.
    if isinstance(output, str) and text[:1] != '"':
        return None
    if isinstance(output, dict | list) and output:
        if text[:1] != ("{" if isinstance(output, dict) else "["):
            return None
        styles = ["indent2"] if text[1:2] == "\n" else ["compact", "spaced"]
    else:
        styles = ["compact"]  # a scalar or an empty container is written alike in every style
    try:
        for style in styles:
            if _written(output, style, False, written) == text:
                return {"json": style}
            # A tool that escapes every non-ASCII character (\u00e9) writes ASCII only.
            if text.isascii() and not _written(output, style, False, written).isascii():
                if _written(output, style, True, written) == text:
                    return {"json": style, "ascii": True}
    except (ValueError, TypeError):  # not JSON the history keeps: the block stays whole
        return None
    return None


def _written(output: Any, style: str, ascii: bool, written: dict[tuple[str, bool], str]) -> str:
    key = (style, ascii)
    if key not in written:
        written[key] = json.dumps(output, ensure_ascii=ascii, allow_nan=False, **JSON_STYLES[style])
    return written[key]


def _restored(output: Any, block: dict[str, Any], written: dict[tuple[str, bool], str]) -> dict[str, Any]:
    style = block.get("json")
    if style is None and isinstance(output, str):
        text = output
    else:
        style = style if style in JSON_STYLES else "compact"
        text = _written(output, style, bool(block.get("ascii")), written)
    restored: dict[str, Any] = {}
    for key, value in block.items():
        if key == TEXT_FROM:
            restored["text"] = text
        elif key not in ("json", "ascii"):
            restored[key] = value
    return restored


def _reference(block: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    """The block with its text replaced, in place, by a reference to the output and how to write it out."""
    reference: dict[str, Any] = {}
    for key, value in block.items():
        if key == "text":
            reference[TEXT_FROM] = "output"
            reference.update(hint)
        else:
            reference[key] = value
    return reference
