"""An MCP server that asks its client for things, built with the SDK: `python tests/servers/asking.py MODE [PORT]`.

MODE is `stdio` or `streamable-http` (served at /mcp): the server speaks both protocol eras, the newest
its client asks for. `legacy-stdio` serves only the 2025 handshake era, as servers written before
protocol 2026-07-28 do (it refuses the `server/discover` probe).

Session tools (protocol 2025: the server asks in the middle of the call) answer with what they got:
`confirm` (a form), `ask_form` (a form from any schema), `write` (sampling), `visit` (a URL to visit),
`roots` (roots/list), `signed_in` (refused with -32042 until a person visited the sign-in page once),
`cancelled` (the calls the client cancelled while they waited). `roots_changes` counts the
notifications/roots/list_changed received; `add_tool` offers a new tool and says so
(notifications/tools/list_changed). `profile` asks through input-required results (protocol
2026-07-28): two rounds, the first with a form, a sampling request and a roots request, the second with
a form; `forever` asks for roots round after round. `as_task` is listed as runnable only as an MCP task.
"""

from __future__ import annotations

import json
import sys
import warnings
from typing import Any

import anyio
import mcp_types as types
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.request_state import RequestStateSecurity
from mcp.server.runner import _serve_legacy_stream
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError, UrlElicitationRequiredError
from pydantic import BaseModel
from serving import serve

# Roots and sampling over the session are what a 2025 server does; the SDK warns they are going.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)
SIGN_IN = "https://login.example.com/authorize?client=asking"
STATE_KEY = "asking-test-server-request-state-key-000000"
# What the server noticed between calls.
CANCELLED: list[str] = []
ROOTS_CHANGES: list[int] = []
SIGN_INS: list[str] = []


class Confirmation(BaseModel):
    approved: bool
    note: str = ""


NAME_FORM = {
    "type": "object",
    "properties": {"name": {"type": "string", "title": "Your name"}},
    "required": ["name"],
}
CONFIRM_FORM = {
    "type": "object",
    "properties": {"ok": {"type": "boolean", "title": "Publish it?"}},
    "required": ["ok"],
}


async def _noticed_cancel(name: str, asking: Any) -> Any:
    try:
        return await asking
    except anyio.get_cancelled_exc_class():
        CANCELLED.append(name)
        raise


def build_server() -> MCPServer:
    # A key of its own, not one per process: a request_state it sealed still opens after it restarts.
    mcp = MCPServer("asking", request_state_security=RequestStateSecurity(keys=[STATE_KEY]))

    @mcp.tool()
    async def confirm(question: str, ctx: Context) -> dict[str, Any]:
        """Asks a person to confirm, with a note."""
        result = await _noticed_cancel("confirm", ctx.elicit(question, Confirmation))
        data = result.data.model_dump() if result.action == "accept" else None
        return {"action": result.action, "content": data}

    @mcp.tool()
    async def ask_form(message: str, schema: dict[str, Any], ctx: Context) -> dict[str, Any]:
        """Asks with the schema given, as it is."""
        session = ctx.request_context.session
        try:
            result = await session.elicit_form(message, schema, related_request_id=ctx.request_id)
        except MCPError as exc:
            return {"error": exc.error.message, "code": exc.error.code}
        return {"action": result.action, "content": result.content}

    @mcp.tool()
    async def write(prompt: str, ctx: Context) -> dict[str, Any]:
        """Asks the client's model (sampling) to answer `prompt`."""
        session = ctx.request_context.session
        try:
            result = await session.create_message(
                messages=[types.SamplingMessage(role="user", content=types.TextContent(text=prompt))],
                max_tokens=60,
                system_prompt="Answer in one line.",
                related_request_id=ctx.request_id,
            )
        except MCPError as exc:
            return {"error": exc.error.message, "code": exc.error.code}
        text = result.content.text if isinstance(result.content, types.TextContent) else None
        return {"role": result.role, "text": text, "model": result.model, "stop_reason": result.stop_reason}

    @mcp.tool()
    async def visit(url: str, ctx: Context) -> dict[str, Any]:
        """Asks a person to visit `url` (URL mode elicitation)."""
        result = await ctx.elicit_url("Sign in to continue", url, "visit-1")
        return {"action": result.action}

    @mcp.tool()
    async def signed_in(ctx: Context) -> str:
        """Refused (-32042) until the client has been told to visit the sign-in page once."""
        if not SIGN_INS:
            SIGN_INS.append("asked")
            raise UrlElicitationRequiredError(
                [types.ElicitRequestURLParams(message="Sign in to the archive", url=SIGN_IN, elicitation_id="s1")]
            )
        return "signed in"

    @mcp.tool()
    async def roots(ctx: Context) -> list[dict[str, Any]]:
        """The client's roots."""
        listed = await ctx.request_context.session.list_roots()
        return [{"uri": str(root.uri), "name": root.name} for root in listed.roots]

    @mcp.tool()
    async def cancelled() -> list[str]:
        """The calls cancelled by the client while they waited."""
        return CANCELLED

    @mcp.tool()
    async def roots_changes() -> int:
        """How many times the client said its roots changed."""
        return len(ROOTS_CHANGES)

    @mcp.tool()
    async def add_tool(name: str, ctx: Context) -> str:
        """Offers one more tool, `name`, and tells the client its tool list changed."""

        def late() -> str:
            return f"{name} answers"

        mcp.add_tool(late, name=name, description="Added after the handshake")
        await ctx.request_context.session.send_tool_list_changed()
        return "added"

    @mcp.tool()
    async def as_task() -> str:
        """Listed as runnable only as a task."""
        return "ran without a task"

    @mcp.tool()
    async def profile(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
        """Two input-required rounds; answers with everything it received."""
        responses = ctx.input_responses or {}
        state = json.loads(ctx.request_state) if ctx.request_state else {"round": 0}
        if state["round"] == 0:
            return types.InputRequiredResult(
                input_requests={
                    "name": types.ElicitRequest(
                        params=types.ElicitRequestFormParams(message="Who is this for?", requested_schema=NAME_FORM)
                    ),
                    "motto": types.CreateMessageRequest(
                        params=types.CreateMessageRequestParams(
                            messages=[
                                types.SamplingMessage(role="user", content=types.TextContent(text="Write a motto"))
                            ],
                            max_tokens=30,
                        )
                    ),
                    "where": types.ListRootsRequest(),
                },
                request_state=json.dumps({"round": 1}),
            )
        if state["round"] == 1:
            name, motto, where = responses["name"], responses["motto"], responses["where"]
            received = {
                "name": name.model_dump(mode="json", exclude_none=True),
                "motto": motto.model_dump(mode="json", by_alias=True, exclude_none=True),
                "roots": [str(root.uri) for root in where.roots],
            }
            return types.InputRequiredResult(
                input_requests={
                    "confirm": types.ElicitRequest(
                        params=types.ElicitRequestFormParams(
                            message="Publish the profile?", requested_schema=CONFIRM_FORM
                        )
                    )
                },
                request_state=json.dumps({"round": 2, "received": received}),
            )
        received = {**state["received"], "confirm": responses["confirm"].model_dump(mode="json", exclude_none=True)}
        return types.CallToolResult(content=[types.TextContent(text=json.dumps(received))], structured_content=received)

    @mcp.tool()
    async def forever(ctx: Context) -> types.InputRequiredResult:
        """Asks for the client's roots again after every answer, without end."""
        asked = json.loads(ctx.request_state)["asked"] if ctx.request_state else 0
        return types.InputRequiredResult(
            input_requests={"where": types.ListRootsRequest()}, request_state=json.dumps({"asked": asked + 1})
        )

    async def roots_changed(ctx: Any, params: Any) -> None:
        ROOTS_CHANGES.append(1)

    lowlevel = mcp._lowlevel_server
    lowlevel.add_notification_handler("notifications/roots/list_changed", types.NotificationParams, roots_changed)
    original_list = mcp.list_tools

    async def list_tools() -> list[types.Tool]:
        tools = await original_list()
        for tool in tools:
            if tool.name == "as_task":
                tool.execution = types.ToolExecution(task_support="required")
        return tools

    mcp.list_tools = list_tools  # type: ignore[method-assign]
    return mcp


async def serve_legacy_stdio(mcp: MCPServer) -> None:
    """Serve the 2025 handshake era only, as a server written before 2026-07-28 does."""
    lowlevel = mcp._lowlevel_server
    async with stdio_server() as (read, write), lowlevel.lifespan(lowlevel) as state:
        await _serve_legacy_stream(
            lowlevel,
            read,
            write,
            lifespan_state=state,
            session_id=None,
            init_options=lowlevel.create_initialization_options(),
            raise_exceptions=False,
        )


if __name__ == "__main__":
    if sys.argv[1:] == ["legacy-stdio"]:
        anyio.run(serve_legacy_stdio, build_server())
    else:
        serve(build_server())
