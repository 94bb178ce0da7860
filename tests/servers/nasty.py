"""An MCP server for the tests whose tools answer with hostile results: `python tests/servers/nasty.py`.

Each tool returns one thing a service must not store as it came: non-finite numbers, a lone
surrogate, nesting too deep, an output or content too big, an endless error message, an answer that is not JSON at all.

Built with the SDK and served over stdio, but it writes non-finite numbers as a server using Python's
`json.dumps` would: NaN and Infinity go out as bare tokens (the SDK would send null), and the client's
parser lets them through. The SDK nulls them on the way out of a tool, so a tool marks each one as
`{"$float": "nan"}` and the writer puts the number back just before `json.dumps`.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.message import SessionMessage
from mcp.types import jsonrpc_message_adapter
from mcp_types import CallToolResult, ImageContent, ProgressNotification, ProgressNotificationParams, TextContent
from pydantic import BaseModel

# Marks the answer that the writer garbles.
GARBLE = "<garble this answer>"


def keep_non_finite(*models: type[BaseModel]) -> None:
    """Dump these models' NaN and Infinity as such (inner models first: the outer ones embed them)."""
    for model in models:
        model.model_config["ser_json_inf_nan"] = "constants"
        model.model_rebuild(force=True)


def revive_floats(value: Any) -> Any:
    """`value` with each `{"$float": text}` replaced by float(text)."""
    if isinstance(value, dict):
        if set(value) == {"$float"}:
            return float(value["$float"])
        return {key: revive_floats(item) for key, item in value.items()}
    if isinstance(value, list):
        return [revive_floats(item) for item in value]
    return value


def nested(levels: int) -> Any:
    """An object `levels` deep: {"a": {"a": ... {} ...}}."""
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def build_server() -> MCPServer:
    mcp = MCPServer("nasty")

    @mcp.tool()
    def echo(value: Any = None) -> CallToolResult:
        """Structured content {"value": value}, as given."""
        return CallToolResult(content=[TextContent(text="echoed")], structured_content={"value": value})

    @mcp.tool()
    def garbled() -> CallToolResult:
        """An answer the writer cuts short: a line that is not JSON where the call's reply belongs."""
        return CallToolResult(content=[TextContent(text=GARBLE)])

    @mcp.tool()
    def non_finite(number: str = "nan") -> CallToolResult:
        """Structured content holding float(number): NaN, Infinity or -Infinity on the wire."""
        return CallToolResult(content=[TextContent(text="a number")], structured_content={"score": {"$float": number}})

    @mcp.tool(structured_output=False)
    def surrogate_text() -> str:
        """JSON text whose string is a lone surrogate escape: valid on the wire, not once decoded."""
        return '{"name": "\\ud800"}'

    @mcp.tool()
    def deep(levels: int) -> CallToolResult:
        """Structured content nested `levels` deep."""
        return CallToolResult(content=[TextContent(text="deep")], structured_content=nested(levels))

    @mcp.tool(structured_output=False)
    def deep_text(levels: int) -> str:
        """A JSON array nested `levels` deep, as text."""
        return "[" * levels + "]" * levels

    @mcp.tool()
    def big(size: int) -> CallToolResult:
        """Structured content of about `size` bytes, and a short text."""
        return CallToolResult(content=[TextContent(text="big")], structured_content={"blob": "x" * size})

    @mcp.tool()
    def big_image(size: int) -> CallToolResult:
        """A small output and an image block of `size` bytes (base64 in the content)."""
        data = base64.b64encode(b"\x89PNG" + b"\0" * size).decode()
        return CallToolResult(
            content=[ImageContent(data=data, mime_type="image/png")], structured_content={"image": "attached"}
        )

    @mcp.tool()
    def shout(size: int) -> str:
        """Fails with an error message of `size` characters."""
        raise ToolError("E" * size)

    @mcp.tool()
    async def nan_progress(ctx: Context) -> CallToolResult:
        """Reports progress NaN of Infinity, then answers."""
        await ctx.report_progress(float("nan"), float("inf"), "counting")
        return CallToolResult(content=[TextContent(text="done")], structured_content={"done": True})

    return mcp


@contextlib.asynccontextmanager
async def python_json_stdio() -> AsyncIterator[
    tuple[MemoryObjectReceiveStream[SessionMessage | Exception], MemoryObjectSendStream[SessionMessage]]
]:
    """stdio like the SDK's, except each message is written by `json.dumps` (NaN and all)."""
    stdin = anyio.wrap_file(io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8"))
    stdout = anyio.wrap_file(io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8"))
    incoming_writer, incoming = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    outgoing, outgoing_reader = anyio.create_memory_object_stream[SessionMessage](0)

    async def read() -> None:
        async with incoming_writer:
            async for line in stdin:
                try:
                    message = jsonrpc_message_adapter.validate_json(line, by_name=False)
                except ValueError as exc:
                    await incoming_writer.send(exc)
                    continue
                await incoming_writer.send(SessionMessage(message))

    async def write() -> None:
        async with outgoing_reader:
            async for message in outgoing_reader:
                data = revive_floats(message.message.model_dump(by_alias=True, exclude_unset=True))
                line = json.dumps(data, default=str)
                if GARBLE in line:  # the answer to `garbled`: cut short, so it is not JSON at all
                    line = line[: line.index(GARBLE)]
                await stdout.write(line + "\n")
                await stdout.flush()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(read)
        tasks.start_soon(write)
        yield incoming, outgoing
        tasks.cancel_scope.cancel()


async def serve() -> None:
    keep_non_finite(ProgressNotificationParams, ProgressNotification)
    server = build_server()._lowlevel_server
    async with python_json_stdio() as (incoming, outgoing):
        await server.run(incoming, outgoing, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(serve)
