"""A step's tool result as the run page draws it: each content block checked, and cut to the page's limits.

Everything in a result comes from an MCP server, so nothing in it is trusted. Text is escaped by the
templates and cut to `page_output_bytes`. An image is drawn inline only as a `data:` URL of a raster type
(never SVG, which may carry script) whose base64 decodes to at most `max_inline_image_bytes` bytes that
begin the way that type begins; audio likewise. A resource link is a link only for http and https. What is
not drawn says why, and where the whole is.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from web.run_state import StepState

# Blocks one step draws: a result of ten thousand links stays a page; the run's JSON has them all.
BLOCKS_SHOWN = 100
# Characters of a name, title, description, URI or MIME type shown: a megabyte data: URI stays a line.
WORDS_CHARS = 1000
# The longest URI made a link: longer ones are shown as text, cut like any other.
LINK_CHARS = 8192
# Audience entries shown: the specification knows two.
AUDIENCE_SHOWN = 5


def _png(data: bytes) -> bool:
    return data.startswith(b"\x89PNG\r\n\x1a\n")


def _jpeg(data: bytes) -> bool:
    return data.startswith(b"\xff\xd8\xff")


def _gif(data: bytes) -> bool:
    return data[:6] in (b"GIF87a", b"GIF89a")


def _riff(kind: bytes) -> Any:
    return lambda data: data[:4] == b"RIFF" and data[8:12] == kind


def _mpeg(data: bytes) -> bool:
    return data.startswith(b"ID3") or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0)


def _mp4(data: bytes) -> bool:
    return data[4:8] == b"ftyp"


# The types drawn inline, by the names tools give them, each as (the type written in the data: URL, a test
# of the decoded bytes). A browser draws these without running anything; bytes that are not what the type
# says are not drawn at all.
IMAGE_TYPES: dict[str, tuple[str, Any]] = {
    "image/png": ("image/png", _png),
    "image/jpeg": ("image/jpeg", _jpeg),
    "image/jpg": ("image/jpeg", _jpeg),
    "image/gif": ("image/gif", _gif),
    "image/webp": ("image/webp", _riff(b"WEBP")),
}
AUDIO_TYPES: dict[str, tuple[str, Any]] = {
    "audio/wav": ("audio/wav", _riff(b"WAVE")),
    "audio/wave": ("audio/wav", _riff(b"WAVE")),
    "audio/x-wav": ("audio/wav", _riff(b"WAVE")),
    "audio/vnd.wave": ("audio/wav", _riff(b"WAVE")),
    "audio/mpeg": ("audio/mpeg", _mpeg),
    "audio/mp3": ("audio/mpeg", _mpeg),
    "audio/ogg": ("audio/ogg", lambda data: data.startswith(b"OggS")),
    "audio/opus": ("audio/ogg", lambda data: data.startswith(b"OggS")),
    "audio/webm": ("audio/webm", lambda data: data.startswith(b"\x1a\x45\xdf\xa3")),
    "audio/flac": ("audio/flac", lambda data: data.startswith(b"fLaC")),
    "audio/x-flac": ("audio/flac", lambda data: data.startswith(b"fLaC")),
    "audio/mp4": ("audio/mp4", _mp4),
    "audio/aac": ("audio/aac", lambda data: len(data) > 1 and data[0] == 0xFF and data[1] & 0xF6 == 0xF0),
}
DRAWN = {"image": IMAGE_TYPES, "audio": AUDIO_TYPES}
NAMES = {"image": "PNG, JPEG, GIF and WebP images", "audio": "WAV, MP3, Ogg, WebM, FLAC, MP4 and AAC audio"}
DOWNLOAD_TYPE = "application/octet-stream"
# What a download's file may be called: the tool's name for it, reduced to these characters.
UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
WHITE_SPACE = re.compile(r"\s")
UNSAFE_URI_CHARS = re.compile(r"[\s\x00-\x1f\x7f]")
# Text that may be JSON (see web.tool_result): other text is never parsed to be compared with the output.
JSON_STARTS = frozenset('{["-0123456789tfn')
# Results whose JSON text was compared with their output, kept so that a page drawn again does not parse
# a megabyte again: (content, output, the answer) by the content's identity.
_SAME_AS_OUTPUT: OrderedDict[int, tuple[Any, Any, bool]] = OrderedDict()
SAME_AS_OUTPUT_KEPT = 32


@dataclass(frozen=True)
class Limits:
    """What one step may put in a page: bytes of text (shared by its blocks) and bytes of each data: URL."""

    text_bytes: int
    inline_bytes: int


@dataclass(frozen=True)
class Annotations:
    audience: tuple[str, ...] = ()
    priority: str | None = None
    last_modified: str | None = None

    def __bool__(self) -> bool:
        return bool(self.audience or self.priority is not None or self.last_modified)


@dataclass
class Block:
    """One content block as drawn. `kind`: text, image, audio, resource_link, resource, or other."""

    kind: str
    annotations: Annotations = field(default_factory=Annotations)
    text: str | None = None  # text, or an embedded text resource, as shown
    more_bytes: int = 0  # of that text, not shown
    mime: str | None = None  # as the tool gave it: shown as text, never put in a URL
    src: str | None = None  # a data: URL of checked bytes, drawn inline
    download: str | None = None  # a data: URL offered as a download
    filename: str | None = None
    size: int | None = None  # bytes: decoded data, or a link's announced size
    note: str = ""  # why something is not drawn or not offered
    uri: str | None = None
    href: str | None = None  # the URI when it is a web address a link may lead to
    name: str | None = None
    title: str | None = None
    description: str | None = None
    value: Any = None  # a block of a kind this page does not know, drawn as JSON


@dataclass
class ResultView:
    """A step's result: its blocks, and whether the output is drawn beside them (it is not when it is
    their text or the blocks themselves)."""

    limits: Limits
    blocks: list[Block]
    hidden_blocks: int = 0
    show_output: bool = True
    text_is_output: bool = False  # the whole text is the step's output (one link away)
    dropped: dict[str, Any] | None = None  # content too large to keep: its truncation marker
    empty: bool = False  # the tool answered with no blocks at all


def result_view(state: StepState, limits: Limits) -> ResultView:
    content, output = state.content, state.output
    if content is None:
        return ResultView(limits, [])
    if not isinstance(content, list):
        # Kept as {"truncated": true, "bytes": ..., "preview": ...}: there are no blocks to draw.
        dropped = content if isinstance(content, dict) else {"preview": str(content)}
        # A result with no text has its blocks as output: cut down alike, and shown once.
        return ResultView(limits, [], show_output=output is not None and output != content, dropped=dropped)
    if not content:
        return ResultView(limits, [], show_output=output is not None, empty=True)
    texts = [block["text"] for block in content if _is_text(block)]
    text = "\n".join(texts) if texts else None
    text_is_output = text is not None and isinstance(output, str) and output == text
    text_in_output = not text_is_output and text is not None and _same_as_output(content, text, output)
    # A failed call's text is its message, shown above the blocks already.
    text_in_message = state.message != "" and text == state.message
    show_output = not (
        text_is_output
        or output is None
        or (isinstance(output, list) and output == content)  # a result with no text: its blocks are its output
    )
    budget = _Budget(limits.text_bytes)
    blocks: list[Block] = []
    for block in content[:BLOCKS_SHOWN]:
        if _is_text(block):
            notes = _annotations(block)
            if text_in_output or text_in_message:
                if notes:  # the text is drawn above; what the tool said of it is drawn here
                    where = "the output shown above" if text_in_output else "the message above"
                    blocks.append(Block("text", notes, note=f"Its text is {where}."))
                continue
            shown, more = budget.take(block["text"])
            blocks.append(Block("text", notes, text=shown if shown or not more else None, more_bytes=more))
        else:
            blocks.append(_block(block, budget, limits))
    return ResultView(limits, blocks, max(0, len(content) - BLOCKS_SHOWN), show_output, text_is_output)


def _is_text(block: Any) -> bool:
    return isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str)


def _same_as_output(content: list[Any], text: str, output: Any) -> bool:
    """Whether `text` is JSON whose value is the output (the output was read from it, or the tool sent its
    structured content as text too, as the MCP specification advises)."""
    if output is None or isinstance(output, str) or text.lstrip(" \t\n\r")[:1] not in JSON_STARTS:
        return False
    kept = _SAME_AS_OUTPUT.get(id(content))
    if kept is not None and kept[0] is content and kept[1] is output:
        _SAME_AS_OUTPUT.move_to_end(id(content))
        return kept[2]
    try:
        same = bool(json.loads(text) == output)
    except (ValueError, RecursionError):
        same = False
    _SAME_AS_OUTPUT[id(content)] = (content, output, same)
    while len(_SAME_AS_OUTPUT) > SAME_AS_OUTPUT_KEPT:
        _SAME_AS_OUTPUT.popitem(last=False)
    return same


@dataclass
class _Budget:
    """The bytes of text a step still may show."""

    left: int

    def take(self, text: str) -> tuple[str, int]:
        """The start of `text` that fits, cut at a character, and how many bytes are left out."""
        if len(text) <= self.left and (text.isascii() or len(text.encode()) <= self.left):
            self.left -= len(text) if text.isascii() else len(text.encode())
            return text, 0
        shown = text[: self.left].encode()[: self.left].decode("utf-8", "ignore")
        shown_bytes = len(shown.encode())
        self.left -= shown_bytes
        total = len(text) if text.isascii() else len(text.encode())
        return shown, total - shown_bytes


def _annotations(block: dict[str, Any]) -> Annotations:
    notes = block.get("annotations")
    if not isinstance(notes, dict):
        return Annotations()
    audience = notes.get("audience")
    audience = tuple(str(_text(who)) for who in audience[:AUDIENCE_SHOWN]) if isinstance(audience, list) else ()
    priority = notes.get("priority")
    return Annotations(
        audience,
        f"{priority:g}" if isinstance(priority, int | float) and not isinstance(priority, bool) else _text(priority),
        _text(notes.get("lastModified")),
    )


def _block(block: Any, budget: _Budget, limits: Limits) -> Block:
    kind = block.get("type") if isinstance(block, dict) else None
    if kind in DRAWN:
        return _media(kind, block, limits)
    if kind == "resource_link":
        uri = block.get("uri")
        size = block.get("size")
        return Block(
            "resource_link",
            _annotations(block),
            mime=_text(block.get("mimeType")),
            uri=_text(uri),
            href=web_address(uri),
            name=_text(block.get("name")),
            title=_text(block.get("title")),
            description=_text(block.get("description")),
            size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        )
    if kind == "resource" and isinstance(block.get("resource"), dict):
        return _resource(block, budget, limits)
    return Block("other", _annotations(block) if isinstance(block, dict) else Annotations(), value=block)


def _text(value: Any) -> str | None:
    """A value the tool named something with, as shown: text, at most WORDS_CHARS characters of it."""
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= WORDS_CHARS else f"{text[:WORDS_CHARS]}… ({len(text) - WORDS_CHARS:,} more characters)"


def web_address(uri: Any) -> str | None:
    """`uri` when a link may lead to it: an http or https URL with a host, written without white space or
    control characters (which browsers drop, so " javascript:" must not pass as a relative path), and no
    longer than LINK_CHARS."""
    if (
        not isinstance(uri, str)
        or len(uri) > LINK_CHARS
        or not uri[:8].lower().startswith(("http://", "https://"))
        or UNSAFE_URI_CHARS.search(uri)
    ):
        return None
    parts = urlsplit(uri)
    return uri if parts.scheme.lower() in ("http", "https") and parts.netloc else None


def _media(kind: str, block: dict[str, Any], limits: Limits) -> Block:
    mime = _text(block.get("mimeType"))
    drawn = DRAWN[kind].get((mime or "").split(";")[0].strip().lower())
    view = Block(kind, _annotations(block), mime=mime, filename=_file_name(None, kind, drawn[0] if drawn else None))
    data, size, problem = decode(block.get("data"), limits.inline_bytes)
    view.size = size
    if problem:
        view.note = f"Not shown: {problem}."
    elif drawn is None:
        why = "SVG can carry script" if "svg" in (mime or "").lower() else f"{mime or 'no type'} is not one of them"
        view.note = f"Not shown: only {NAMES[kind]} are shown here; {why}."
        view.download = _data_url(DOWNLOAD_TYPE, data)
    elif not drawn[1](base64.b64decode(data[:64])):
        view.note = f"Not shown: its bytes are not {drawn[0]} data, whatever its type says."
        view.download = _data_url(DOWNLOAD_TYPE, data)
    else:
        view.src = _data_url(drawn[0], data)
    return view


def _resource(block: dict[str, Any], budget: _Budget, limits: Limits) -> Block:
    resource = block["resource"]
    uri = resource.get("uri")
    view = Block(
        "resource", _annotations(block), mime=_text(resource.get("mimeType")), uri=_text(uri), href=web_address(uri)
    )
    if isinstance(resource.get("text"), str):
        shown, view.more_bytes = budget.take(resource["text"])
        view.text = shown if shown or not view.more_bytes else None
    elif "blob" in resource:
        data, view.size, problem = decode(resource.get("blob"), limits.inline_bytes)
        view.filename = _file_name(view.uri, "resource", None)
        if problem:
            view.note = f"No download: {problem}."
        else:
            view.download = _data_url(DOWNLOAD_TYPE, data)
    return view


def decode(data: Any, limit: int) -> tuple[str, int | None, str]:
    """(the base64 text fit for a data: URL, the decoded size, why it cannot be offered or "").

    Data larger than `limit` once decoded is not decoded at all: its size is reckoned from its length.
    """
    if not isinstance(data, str):
        return "", None, "it carries no data"
    compact = "".join(data.split()) if WHITE_SPACE.search(data) else data  # line-wrapped base64 is base64
    compact += "=" * (-len(compact) % 4)  # as browsers do, padding may be left off
    estimated = max(0, len(compact) // 4 * 3 - (2 - len(compact[-2:].rstrip("="))))
    if estimated > limit:
        return "", estimated, f"{byte_size(estimated)}, more than the {byte_size(limit)} a page carries"
    try:
        size = len(base64.b64decode(compact, validate=True))
    except (binascii.Error, ValueError):
        return "", None, "its data is not valid base64"
    return compact, size, ""


def _data_url(mime: str, data: str) -> str:
    return f"data:{mime};base64,{data}"


def _file_name(uri: str | None, kind: str, mime: str | None) -> str:
    """A name for a download: the last part of the resource's URI, else the kind and the type's extension."""
    last = (urlsplit(uri).path if uri else "").rstrip("/").rsplit("/", 1)[-1]
    name = UNSAFE_FILE_CHARS.sub("_", last).strip("._")[:80]
    if name:
        return name
    extension = mime.split("/")[1] if mime else "bin"
    return f"{kind}.{extension}"


def byte_size(size: int) -> str:
    """A size as people read it: `512 bytes`, `12 KB`, `2.2 MB`."""
    if size < 1024:
        return "1 byte" if size == 1 else f"{size:,} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:,.0f} KB"
    return f"{size / (1024 * 1024):,.1f} MB"
