"""An MCP server whose tools ask the person at the client: `python tests/servers/form_asker.py TRANSPORT [PORT]`.

`ask_form` elicits a form (a field titled with markup, an enum, a required integer) and returns what came
back; `ask_url` asks the person to visit a URL (any text: a test passes one that is not a web address);
`ask_model` sends a sampling request and returns the reply. Each returns the action and content it got,
so a test sees from the server's side what the person answered.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.types import ImageContent, SamplingMessage, TextContent
from pydantic import BaseModel, Field
from serving import serve

# A red pixel, sent beside the prompt when a test asks for a picture.
PIXEL_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
HOSTILE_TITLE = 'Copies <script>window.__pwned=5</script><img src=x onerror="window.__pwned=6">'


class Order(BaseModel):
    copies: int = Field(title=HOSTILE_TITLE, ge=1)
    colour: Literal["red", "blue"] = "blue"
    note: str = ""


def build_server() -> MCPServer:
    mcp = MCPServer("form-asker")

    @mcp.tool()
    async def ask_form(message: str, ctx: Context) -> dict[str, Any]:
        """Elicit an order from the person; return their action and values."""
        result = await ctx.elicit(message, Order)
        return {"action": result.action, "values": result.data.model_dump() if result.action == "accept" else None}

    @mcp.tool()
    async def ask_url(message: str, url: str, ctx: Context) -> dict[str, Any]:
        """Ask the person to visit `url`; return their action."""
        result = await ctx.elicit_url(message, url, "visit-1")
        return {"action": result.action}

    @mcp.tool()
    async def ask_model(prompt: str, ctx: Context, picture: bool = False) -> dict[str, Any]:
        """Ask the client for a model's reply to `prompt` (and a picture); return it."""
        # Sampling is deprecated by the newest protocol, not by the one this server speaks (legacy).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            result = await _create_message(ctx, prompt, picture)
        text = result.content.text if isinstance(result.content, TextContent) else None
        return {"text": text, "model": result.model}

    return mcp


async def _create_message(ctx: Context, prompt: str, picture: bool) -> Any:
    messages = [SamplingMessage(role="user", content=TextContent(type="text", text=prompt))]
    if picture:
        image = ImageContent(type="image", data=PIXEL_PNG, mimeType="image/png")
        messages.append(SamplingMessage(role="user", content=image))
    return await ctx.session.create_message(
        messages,
        max_tokens=50,
        system_prompt="Answer <b>briefly</b>.",
    )


if __name__ == "__main__":
    serve(build_server())
