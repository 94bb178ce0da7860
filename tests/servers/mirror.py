"""An MCP server for the UI tests that hands back what it is given: `python tests/servers/mirror.py`.

Whatever a user typed comes back in the tool's output, its progress messages and its errors, with
some markup of the server's own added, so the pages can be checked for showing it all as text.
Speaks stdio.
"""

from __future__ import annotations

from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

# Seconds a mirror call takes: long enough for a watching page to get its fragments live.
PAUSE = 0.3
# What a careless or hostile tool might put in its answers.
MARKUP = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script><b>bold?</b>'


def build_server() -> MCPServer:
    mcp = MCPServer("mirror")

    @mcp.tool()
    async def mirror(ctx: Context, text: str = "", payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """Return the text and payload as given, with markup of the tool's own."""
        await ctx.report_progress(1, 2, f"Reading {text}")
        await anyio.sleep(PAUSE)
        await ctx.report_progress(2, 2, MARKUP)
        return {"text": text, "payload": payload or {}, "markup": MARKUP}

    @mcp.tool()
    def refuse(text: str = "", really: bool = False) -> dict[str, Any]:
        """Fail with the text in the error message when `really` is true."""
        if really:
            raise ToolError(f"Refused {text} {MARKUP}")
        return {"accepted": text}

    return mcp


if __name__ == "__main__":
    build_server().run()
