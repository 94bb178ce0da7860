"""An MCP server that counts the calls it receives: `python tests/servers/counting.py TRANSPORT [PORT]`.

Served over streamable HTTP in a process of its own, its counts outlive a Stepline killed and started
again: they prove from the server's side which steps, and which items of a for_each, a resumed run called
again. A call is counted when it arrives, and counted answered when it returns.

`step` is annotated idempotent (calling it again is harmless), `charge` carries no annotations (a tool
that must not be called twice unasked). Each holds for `seconds` only the first time its key and item are
called, so that a test can stop Stepline during that call while the call made again after the restart
answers at once.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import anyio
import mcp_types as types
from mcp.server.mcpserver import MCPServer
from serving import serve

# Per key: the calls received by item, and those that returned.
received: defaultdict[str, Counter[int]] = defaultdict(Counter)
answered: defaultdict[str, Counter[int]] = defaultdict(Counter)


async def counted(key: str, item: int, seconds: float) -> None:
    received[key][item] += 1
    if received[key][item] == 1:
        await anyio.sleep(seconds)
    answered[key][item] += 1


def build_server() -> MCPServer:
    mcp = MCPServer("counting")

    @mcp.tool(annotations=types.ToolAnnotations(idempotent_hint=True))
    async def step(key: str, item: int = 0, seconds: float = 0) -> dict[str, str | int]:
        """Count the call under `key` and `item`, wait `seconds` (the first call only), then answer both."""
        await counted(key, item, seconds)
        return {"key": key, "item": item}

    @mcp.tool()
    async def charge(key: str, seconds: float = 0) -> dict[str, str | int]:
        """Charge `key` once more: count the call, wait `seconds` (the first call only), answer the charges."""
        await counted(key, 0, seconds)
        return {"key": key, "charges": received[key][0]}

    @mcp.tool(annotations=types.ToolAnnotations(read_only_hint=True))
    def calls(key: str) -> dict[str, object]:
        """The calls received under `key`: by item, in all, and by item those that returned."""
        return {
            "by_item": {str(item): count for item, count in sorted(received[key].items())},
            "total": sum(received[key].values()),
            "answered": {str(item): count for item, count in sorted(answered[key].items())},
        }

    return mcp


if __name__ == "__main__":
    serve(build_server())
