"""An MCP server whose tools declare strict JSON Schemas, as written: `python tests/servers/strict.py` (stdio).

Servers built on decorators describe their arguments loosely; some real servers say
`"additionalProperties": false`, so an argument they do not declare is refused. `forecast` is such a
tool, with an output schema that is just as strict.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
from mcp.server.lowlevel.server import Server
from mcp.server.stdio import stdio_server
from mcp_types import CallToolRequestParams, CallToolResult, ListToolsResult, TextContent, Tool

FORECAST = Tool(
    name="forecast",
    description="Tomorrow's weather in a city.",
    input_schema={
        "type": "object",
        "properties": {"city": {"type": "string"}, "units": {"enum": ["metric", "imperial"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
    output_schema={
        "type": "object",
        "properties": {"city": {"type": "string"}, "high": {"type": "number"}},
        "required": ["city", "high"],
        "additionalProperties": False,
    },
)


async def list_tools(ctx: Any, params: Any) -> ListToolsResult:
    return ListToolsResult(tools=[FORECAST])


async def call_tool(ctx: Any, params: CallToolRequestParams) -> CallToolResult:
    weather = {"city": (params.arguments or {}).get("city", ""), "high": 21}
    return CallToolResult(content=[TextContent(type="text", text=json.dumps(weather))], structured_content=weather)


async def serve() -> None:
    server: Server[Any] = Server("strict", on_list_tools=list_tools, on_call_tool=call_tool)
    async with stdio_server() as (incoming, outgoing):
        await server.run(incoming, outgoing, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(serve)
