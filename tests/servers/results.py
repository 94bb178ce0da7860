"""An MCP server whose tools answer with every kind of content block, and hostile ones:
`python tests/servers/results.py TRANSPORT [PORT]`.

The well-behaved tools give what a run page must show: a real PNG and a real WAV made here, resource
links, embedded text and blob resources, annotations, structured content beside its text, JSON text,
a result made of one link only. The hostile ones give what it must not run or break on: SVG with
script, `javascript:` and `data:` links, base64 that is not, MIME types that lie, markup everywhere,
and data larger than a page should carry.
"""

from __future__ import annotations

import base64
import io
import json
import math
import struct
import sys
import wave
import zlib
from pathlib import Path
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp_types import (
    Annotations,
    AudioContent,
    BlobResourceContents,
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
    TextResourceContents,
)

# What a careless or hostile tool might put anywhere in its answers.
MARKUP = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
SVG_WITH_SCRIPT = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40" onload="window.__pwned=3">'
    "<script>window.__pwned=4; alert(1)</script><rect width='40' height='40' fill='red'/></svg>"
)
HTML_PAGE = "<html><body><script>window.__pwned=5; alert(2)</script>not an image</body></html>"
JAVASCRIPT_URI = "javascript:window.__pwned=6;alert(3)"
DATA_URI = "data:text/html;base64," + base64.b64encode(HTML_PAGE.encode()).decode()
PICTURE_SIDE = 48


def png(side: int = PICTURE_SIDE) -> bytes:
    """A real PNG, `side` pixels square: a colour gradient, so a screenshot shows it is drawn."""
    rows = b"".join(
        b"\0" + b"".join(bytes((40 + 4 * x, 90 + 3 * y, 200 - 2 * x)) for x in range(side)) for y in range(side)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def wav(seconds: float = 0.3, rate: int = 8000) -> bytes:
    """A real WAV: a 440 Hz tone."""
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * n / rate))) for n in range(int(seconds * rate))
    )
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def build_server() -> MCPServer:
    mcp = MCPServer("results")

    @mcp.tool()
    def picture() -> CallToolResult:
        """A caption, a PNG for the user, and a closing line."""
        return CallToolResult(
            content=[
                TextContent(text="Here is the picture:"),
                ImageContent(
                    data=b64(png()),
                    mime_type="image/png",
                    annotations=Annotations(audience=["user"], priority=0.9),
                ),
                TextContent(text="It is a gradient."),
            ]
        )

    @mcp.tool()
    def sound() -> CallToolResult:
        """A short WAV tone."""
        tone = AudioContent(data=b64(wav()), mime_type="audio/wav")
        return CallToolResult(content=[TextContent(text="A tone:"), tone])

    @mcp.tool()
    def links() -> CallToolResult:
        """Resource links: web ones, and ones whose URIs must never become links."""
        return CallToolResult(
            content=[
                ResourceLink(
                    name="report",
                    title=f"Quarterly {MARKUP} report",
                    uri="https://example.com/report.pdf",
                    mime_type="application/pdf",
                    description=f"The report {MARKUP}",
                    size=12345,
                ),
                ResourceLink(name="plain-http", uri="http://example.com/data.csv", mime_type="text/csv"),
                ResourceLink(name="script-link", uri=JAVASCRIPT_URI, mime_type="text/html"),
                ResourceLink(name="spaced-script-link", uri=" \tJaVaScRiPt:alert(4)"),
                ResourceLink(name="data-link", uri=DATA_URI, mime_type="text/html"),
                ResourceLink(name="local-file", uri="file:///etc/passwd", mime_type="text/plain"),
                ResourceLink(name=MARKUP, uri=f"demo://resource/{MARKUP}"),
            ]
        )

    @mcp.tool()
    def only_link() -> CallToolResult:
        """A result made of one resource link and nothing else."""
        return CallToolResult(content=[ResourceLink(name="the-only-one", uri="https://example.com/only")])

    @mcp.tool()
    def embedded(blob_bytes: int = 64) -> CallToolResult:
        """An embedded text resource (markup in it) and a blob resource of `blob_bytes` bytes."""
        return CallToolResult(
            content=[
                EmbeddedResource(
                    resource=TextResourceContents(
                        uri="demo://notes/today.txt", mime_type="text/plain", text=f"Notes of the day\n{MARKUP}"
                    )
                ),
                EmbeddedResource(
                    resource=BlobResourceContents(
                        uri="demo://files/archive.bin", mime_type="application/zip", blob=b64(bytes(blob_bytes))
                    ),
                    annotations=Annotations(audience=["assistant"], priority=0.2),
                ),
            ]
        )

    @mcp.tool()
    def annotated() -> CallToolResult:
        """Text annotated for both audiences, with a priority and a date."""
        return CallToolResult(
            content=[
                TextContent(
                    text="Operation completed",
                    annotations=Annotations(
                        audience=["user", "assistant"], priority=0.7, last_modified="2025-01-12T15:00:58Z"
                    ),
                )
            ]
        )

    @mcp.tool()
    def structured() -> CallToolResult:
        """Structured content beside prose that says something else."""
        return CallToolResult(
            content=[TextContent(text="The forecast is sunny.")],
            structured_content={"temperature": 22.5, "conditions": "sunny"},
        )

    @mcp.tool(structured_output=False)
    def json_text() -> str:
        """JSON as text: the step's output is that JSON parsed."""
        return '{"answer": 42, "unit": "widgets"}'

    @mcp.tool()
    def markup_text() -> CallToolResult:
        """Prose full of markup."""
        return CallToolResult(content=[TextContent(text=f"Careful: {MARKUP}")])

    @mcp.tool()
    def big_text(size: int) -> CallToolResult:
        """Prose of `size` characters: lines of words, ending in a marker."""
        line = "The quick brown fox jumps over the lazy dog. " * 2 + "\n"
        text = (line * (size // len(line) + 1))[: size - len("THE END")] + "THE END"
        return CallToolResult(content=[TextContent(text=text)])

    @mcp.tool()
    def hostile_media() -> CallToolResult:
        """Images and audio that must not be drawn, each with the reason a page should give."""
        return CallToolResult(
            content=[
                ImageContent(data=b64(SVG_WITH_SCRIPT.encode()), mime_type="image/svg+xml"),
                ImageContent(data="this is not base64 at all!", mime_type="image/png"),
                ImageContent(data=b64(HTML_PAGE.encode()), mime_type="image/png"),
                ImageContent(data=b64(HTML_PAGE.encode()), mime_type="text/html"),
                ImageContent(data=b64(png()), mime_type='image/png" onerror="window.__pwned=7'),
                AudioContent(data=b64(HTML_PAGE.encode()), mime_type="audio/wav"),
                AudioContent(data=b64(wav()), mime_type="text/html"),
                EmbeddedResource(
                    resource=BlobResourceContents(
                        uri=f"demo://{MARKUP}/page.html", mime_type="text/html", blob="%%% not base64 %%%"
                    )
                ),
            ]
        )

    @mcp.tool()
    def huge_link(size: int = 200_000) -> CallToolResult:
        """A resource link whose data: URI, https URI, name and MIME type are each `size` characters long."""
        return CallToolResult(
            content=[
                ResourceLink(name="n" * size, uri=DATA_URI + "A" * size, mime_type="text/" + "x" * size),
                ResourceLink(name="long-but-fine", uri="https://example.com/?q=" + "q" * size),
            ]
        )

    @mcp.tool()
    def big_image(size: int) -> CallToolResult:
        """A PNG padded to `size` bytes: more than a page should carry inline."""
        picture = png()
        return CallToolResult(
            content=[ImageContent(data=b64(picture + bytes(max(0, size - len(picture)))), mime_type="image/png")]
        )

    @mcp.tool()
    def big_blob(size: int) -> CallToolResult:
        """A blob resource of `size` bytes."""
        return CallToolResult(
            content=[
                EmbeddedResource(resource=BlobResourceContents(uri="demo://files/huge.bin", blob=b64(bytes(size))))
            ]
        )

    @mcp.tool()
    def failing_with_picture() -> CallToolResult:
        """An error result that carries a picture besides its message."""
        return CallToolResult(
            is_error=True,
            content=[TextContent(text="The camera jammed"), ImageContent(data=b64(png()), mime_type="image/png")],
        )

    @mcp.tool()
    def big_structured(size: int) -> CallToolResult:
        """Structured content of `size` two-byte characters, beside a short text."""
        return CallToolResult(content=[TextContent(text="A long word.")], structured_content={"word": "é" * size})

    @mcp.tool()
    def nothing() -> CallToolResult:
        """A result with no content at all."""
        return CallToolResult(content=[])

    @mcp.tool()
    async def pause(seconds: float) -> str:
        """Wait, so that a page is open before the steps after this one end."""
        await anyio.sleep(seconds)
        return f"Waited {seconds} s"

    @mcp.tool()
    def many_blocks(count: int) -> CallToolResult:
        """`count` short text blocks."""
        return CallToolResult(content=[TextContent(text=f"block {n}") for n in range(count)])

    return mcp


def step(name: str, tool: str, server: str = "results", **fields: Any) -> dict[str, Any]:
    return {"name": name, "tool": tool, "server": server, "input": {}, **fields}


def scenario(scenario_id: str, *steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"schema_version": "2", "scenario_id": scenario_id, "name": scenario_id, "steps": list(steps), **extra}


SIZE_INPUT = {"type": "object", "properties": {"size": {"type": "integer"}}}
SCENARIOS = [
    # Every kind of block, from this server and from the MCP reference server.
    scenario(
        "every_kind",
        step("tiny_image", "get-tiny-image", "everything"),
        step("picture", "picture"),
        step("sound", "sound"),
        step("links", "links"),
        step("embedded", "embedded"),
        step("annotated", "annotated"),
        step("structured", "structured"),
        step("json_text", "json_text"),
        step("only_link", "only_link"),
        step("markup_text", "markup_text"),
        step("nothing", "nothing"),
        step("reference_links", "get-resource-links", "everything", input={"count": 2}),
        step("reference_resource", "get-resource-reference", "everything", input={"resourceType": "Text"}),
        step(
            "reference_annotated",
            "get-annotated-message",
            "everything",
            input={"messageType": "success", "includeImage": True},
        ),
        step("reference_structured", "get-structured-content", "everything", input={"location": "New York"}),
    ),
    scenario("hostile", step("hostile_media", "hostile_media"), step("links", "links"), step("huge_link", "huge_link")),
    # What the README's picture shows.
    scenario(
        "showcase",
        step("tiny_image", "get-tiny-image", "everything"),
        step("picture", "picture"),
        step("sound", "sound"),
        step("reference_links", "get-resource-links", "everything", input={"count": 2}),
        step("embedded", "embedded"),
        step("annotated", "annotated"),
        step("structured", "structured"),
    ),
    # Results that arrive while a page watches: each after the pause.
    scenario(
        "live",
        step("pause", "pause", input={"seconds": "{{ input.seconds }}"}),
        step("tiny_image", "get-tiny-image", "everything", needs=["pause"]),
        step("sound", "sound", needs=["pause"]),
        step("hostile_media", "hostile_media", needs=["pause"]),
        step("links", "links", needs=["pause"]),
        input_schema={"type": "object", "properties": {"seconds": {"type": "number"}}},
    ),
    scenario("big_text", step("big_text", "big_text", input={"size": "{{ input.size }}"}), input_schema=SIZE_INPUT),
    scenario(
        "big_structured",
        step("big_structured", "big_structured", input={"size": "{{ input.size }}"}),
        input_schema=SIZE_INPUT,
    ),
    scenario("big_image", step("big_image", "big_image", input={"size": "{{ input.size }}"}), input_schema=SIZE_INPUT),
    scenario("big_blob", step("big_blob", "big_blob", input={"size": "{{ input.size }}"}), input_schema=SIZE_INPUT),
    scenario(
        "many_blocks", step("many_blocks", "many_blocks", input={"count": "{{ input.size }}"}), input_schema=SIZE_INPUT
    ),
    scenario("failing", step("failing", "failing_with_picture")),
]


def results_home(home: Path, reference: dict[str, Any]) -> tuple[Path, Path]:
    """(scenario folder, mcpServers file) in `home`: SCENARIOS, this server over stdio as `results` and
    `reference` (the MCP reference server's entry) as `everything`."""
    folder = home / "scenarios"
    folder.mkdir(parents=True)
    for each in SCENARIOS:
        (folder / f"{each['scenario_id']}.json").write_text(json.dumps(each, indent=2), encoding="utf-8")
    config = home / "mcp.json"
    servers = {"results": {"command": sys.executable, "args": [__file__, "stdio"]}, "everything": reference}
    config.write_text(json.dumps({"mcpServers": servers}), encoding="utf-8")
    return folder, config


if __name__ == "__main__":
    from serving import serve

    serve(build_server())
