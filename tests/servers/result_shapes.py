"""An MCP server whose tools answer with every kind of content block: `python tests/servers/result_shapes.py TRANSPORT`.

Text of any size, JSON text written in each style tools use, images (a real PNG, a big one, an SVG with a
script, base64 that is not, a PNG announced as HTML), audio, resource links (one to `javascript:`), embedded
text and binary resources, annotations and `_meta`, a result with no content at all, an error with details,
and `blocks`, which answers whatever blocks it is given.
"""

from __future__ import annotations

import base64
import io
import json
import wave
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp_types import (
    Annotations,
    AudioContent,
    BlobResourceContents,
    CallToolResult,
    ContentBlock,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
    TextResourceContents,
)
from pydantic import TypeAdapter

# A 1×1 PNG.
PIXEL_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
SVG_WITH_SCRIPT = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10" onload="alert(1)">'
    "<script>alert(2)</script><rect width='10' height='10'/></svg>"
)
# What `json_text` writes out, in each style: non-ASCII text and a float included.
JSON_VALUE = {"city": "Zürich", "temperature": 21.5, "tags": ["lake", "☀"], "nested": {"ok": True, "none": None}}
JSON_STYLES: dict[str, dict[str, Any]] = {
    "indent2": {"indent": 2, "ensure_ascii": False},
    "indent2_ascii": {"indent": 2},
    "compact": {"separators": (",", ":"), "ensure_ascii": False},
    "spaced": {"ensure_ascii": False},
    "spaced_ascii": {},
    # JSON, but spaced as no serialiser writes it: its text cannot be made again from the value.
    "odd": {"indent": 3, "separators": (" ,", " : ")},
}
# A line of prose, repeated to any size.
PROSE_LINE = "The harbour bridge closes for repairs on Monday; ferries run every twenty minutes instead.\n"
BLOCKS = TypeAdapter(list[ContentBlock])


def json_text(style: str) -> str:
    return json.dumps(JSON_VALUE, **JSON_STYLES[style])


def prose_of(size: int) -> str:
    return (PROSE_LINE * (size // len(PROSE_LINE) + 1))[:size]


def wav_base64() -> str:
    """A tenth of a second of silence, as a WAV file."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as sound:
        sound.setnchannels(1)
        sound.setsampwidth(1)
        sound.setframerate(8000)
        sound.writeframes(bytes([128]) * 800)
    return base64.b64encode(buffer.getvalue()).decode()


def image_block(kind: str, size: int) -> ImageContent:
    if kind == "png":
        return ImageContent(data=PIXEL_PNG, mime_type="image/png")
    if kind == "big":  # a PNG's signature and header, padded to `size` bytes
        raw = base64.b64decode(PIXEL_PNG)
        return ImageContent(data=base64.b64encode(raw + bytes(max(0, size - len(raw)))).decode(), mime_type="image/png")
    if kind == "svg_script":
        return ImageContent(data=base64.b64encode(SVG_WITH_SCRIPT.encode()).decode(), mime_type="image/svg+xml")
    if kind == "bad_base64":
        return ImageContent(data="this is not base64!!", mime_type="image/png")
    if kind == "wrong_mime":
        return ImageContent(data=PIXEL_PNG, mime_type="text/html")
    raise ValueError(f"unknown image kind {kind!r}")


def build_server() -> MCPServer:
    mcp = MCPServer("result_shapes")

    @mcp.tool(structured_output=False)
    def prose(size: int) -> str:
        """`size` characters of plain prose (ASCII), in lines."""
        return prose_of(size)

    @mcp.tool(structured_output=False)
    def json_styled(style: str) -> str:
        """The same JSON value as text written in `style` (indent2, indent2_ascii, compact, spaced, spaced_ascii,
        odd)."""
        return json_text(style)

    @mcp.tool()
    def image(kind: str = "png", size: int = 0) -> CallToolResult:
        """An image block alone: png, big (`size` bytes), svg_script, bad_base64 or wrong_mime."""
        return CallToolResult(content=[image_block(kind, size)])

    @mcp.tool()
    def audio() -> CallToolResult:
        """A caption and a short WAV."""
        return CallToolResult(
            content=[TextContent(text="A tenth of a second of silence"), AudioContent(data=wav_base64(),
                                                                                      mime_type="audio/wav")]
        )

    @mcp.tool()
    def links() -> CallToolResult:
        """Resource links only, no text: one of them to a `javascript:` URI."""
        return CallToolResult(
            content=[
                ResourceLink(uri="file:///srv/reports/harbour.pdf", name="harbour.pdf", title="Harbour report",
                             description="The engineers' report", mime_type="application/pdf", size=48213),
                ResourceLink(uri="javascript:alert(1)", name="click me", mime_type="text/html"),
            ]
        )

    @mcp.tool()
    def embedded() -> CallToolResult:
        """An embedded text resource and an embedded binary one, no text block."""
        return CallToolResult(
            content=[
                EmbeddedResource(resource=TextResourceContents(uri="memo://notes/1", mime_type="text/markdown",
                                                               text="# Notes\n\n- <b>bold</b> & more")),
                EmbeddedResource(resource=BlobResourceContents(uri="memo://files/2", mime_type="application/pdf",
                                                               blob=base64.b64encode(b"%PDF-1.4 tiny").decode())),
            ]
        )

    @mcp.tool()
    def annotated() -> CallToolResult:
        """A text block and an image, each with annotations and _meta."""
        return CallToolResult(
            content=[
                TextContent(text="For people", annotations=Annotations(audience=["user"], priority=0.9,
                                                                        last_modified="2026-04-24T09:00:00Z"),
                            _meta={"source": "shapes"}),
                ImageContent(data=PIXEL_PNG, mime_type="image/png",
                             annotations=Annotations(audience=["assistant"], priority=0.2)),
            ]
        )

    @mcp.tool()
    def weather(city: str = "Zürich") -> dict[str, Any]:
        """Structured content (and, as the SDK writes it, the same as indented JSON text)."""
        return {**JSON_VALUE, "city": city}

    @mcp.tool()
    def summary_and_data() -> CallToolResult:
        """Structured content beside a text that is not it."""
        return CallToolResult(content=[TextContent(text="3 sources found")], structured_content={"count": 3})

    @mcp.tool()
    def nothing() -> CallToolResult:
        """A result with no content at all."""
        return CallToolResult(content=[])

    @mcp.tool()
    def refuse() -> CallToolResult:
        """An error result with its text, an image and structured details."""
        return CallToolResult(
            content=[TextContent(text="Quota exceeded"), ImageContent(data=PIXEL_PNG, mime_type="image/png")],
            structured_content={"code": 429},
            is_error=True,
        )

    @mcp.tool()
    def blocks(content: list[dict[str, Any]]) -> CallToolResult:
        """Answer `content` as the result's blocks (MCP's JSON form: type, text, data, mimeType…)."""
        return CallToolResult(content=BLOCKS.validate_python(content))

    return mcp


if __name__ == "__main__":
    from serving import serve  # beside this file when it runs as a script

    serve(build_server())
