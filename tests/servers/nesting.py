"""An MCP server whose answers are as deep or as large as asked: `python tests/servers/nesting.py`.

For the pages' rendering limits: a structured result nested any number of levels, an echo of a
(deep) argument, and a large result. Speaks stdio.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer


def nested(levels: int, kind: str = "object") -> Any:
    value: Any = "the bottom"
    for level in range(levels):
        value = {f"level_{levels - level}": value} if kind == "object" else [value]
    return value


def build_server() -> MCPServer:
    mcp = MCPServer("nesting")

    @mcp.tool()
    def nest(levels: int, kind: str = "object") -> dict[str, Any]:
        """A result nested `levels` objects deep (the result itself is the first), or objects holding lists."""
        return nested(levels) if kind == "object" else {"lists": nested(levels - 1, kind)}

    @mcp.tool()
    def echo(payload: Any = None) -> dict[str, Any]:
        """The payload as given, under `payload`."""
        return {"payload": payload}

    @mcp.tool()
    def big(items: int, chars: int) -> dict[str, Any]:
        """`items` strings of `chars` characters each: a large result that is not deep."""
        return {"items": [f"{index:06d} " + "x" * (chars - 7) for index in range(items)]}

    return mcp


if __name__ == "__main__":
    build_server().run()
