"""A small MCP server for the tests, built with the SDK: `python tests/servers/toolbox.py TRANSPORT [PORT]`.

TRANSPORT is `stdio`, `streamable-http` (served at /mcp) or `sse` (served at /sse). Each tool
exercises one way a real server answers: structured content, plain or JSON text, an error,
a slow call, progress notifications, or structured content that breaks its own output schema.
"""

from __future__ import annotations

from typing import Annotated

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel
from serving import serve


class Echoed(BaseModel):
    text: str
    items: list[str]


class Count(BaseModel):
    count: int


def build_server() -> MCPServer:
    mcp = MCPServer("toolbox")

    @mcp.tool()
    def echo(text: str = "", items: list[str] | None = None) -> Echoed:
        """Structured content: the text and the items, as given."""
        return Echoed(text=text, items=items or [])

    @mcp.tool(structured_output=False)
    def plain_text(text: str = "not JSON at all") -> str:
        """Text content only, returned as given."""
        return text

    @mcp.tool(structured_output=False)
    def json_text() -> str:
        """Text content only, holding a JSON document."""
        return '{"answer": 42, "words": ["a", "b"]}'

    @mcp.tool()
    def fail(message: str = "the tool refused") -> str:
        """Always an isError result with `message` as its text."""
        raise ToolError(message)

    @mcp.tool()
    async def slow(seconds: float, ctx: Context) -> Count:
        """Sleeps, telling the client about it first."""
        await ctx.report_progress(0, 1, f"sleeping {seconds:g}s")
        await anyio.sleep(seconds)
        return Count(count=1)

    @mcp.tool()
    async def progress(steps: int, ctx: Context, pause: float = 0.05) -> Count:
        """Reports `steps` progress notifications, `pause` seconds apart."""
        for done in range(1, steps + 1):
            await ctx.report_progress(done, steps, f"step {done} of {steps}")
            await anyio.sleep(pause)
        return Count(count=steps)

    @mcp.tool(structured_output=False)
    def authorization(ctx: Context) -> str:
        """The Authorization header the client sent (HTTP transports only)."""
        headers = ctx.headers or {}
        return headers.get("authorization", "")

    @mcp.tool()
    def both() -> Annotated[CallToolResult, Count]:
        """Structured content and a different text: the structured content is the output."""
        return CallToolResult(content=[TextContent(text="three things")], structured_content={"count": 3})

    @mcp.tool()
    def broken_structure() -> Annotated[CallToolResult, Count]:
        """Declares {count: int} but answers {count: "many"} (see below)."""
        return CallToolResult(content=[TextContent(text="many")], structured_content={"count": "many"})

    # The SDK refuses to send content that breaks the declared schema; a buggy server elsewhere
    # would not. Keep advertising the schema but stop checking it here, as such a server does.
    tool = mcp._tool_manager.get_tool("broken_structure")
    assert tool is not None
    tool.fn_metadata.output_model = None
    return mcp


if __name__ == "__main__":
    serve(build_server())
