"""An MCP server that fails in the ways a client must tell apart: `python tests/servers/faults.py TRANSPORT [PORT]`.

TRANSPORT is `stdio` or `streamable-http` (served at /mcp). It answers JSON-RPC errors with any
code, hangs one call while still answering everything else, freezes whole (its event loop
blocked: nothing is read or answered), or naps; `whoami` tells which process and how many
handshakes it has seen, so a test can tell a kept session from a reconnection. With
FAULTS_EXIT_DELAY=S it lingers S seconds after its client has gone before it exits.
"""

from __future__ import annotations

import os
import time
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPError
from serving import serve

# Handshakes this process has answered (one per session a client opened), and `hang` calls the
# client cancelled (notifications/cancelled).
handshakes = 0
cancelled = 0


async def count_handshakes(ctx: Any, call_next: Any) -> Any:
    global handshakes
    if ctx.method in ("initialize", "server/discover"):
        handshakes += 1
    return await call_next(ctx)


def build_server() -> MCPServer:
    mcp = MCPServer("faults")
    mcp.middleware.append(count_handshakes)

    @mcp.tool()
    def whoami(ctx: Context) -> dict[str, Any]:
        """This process's id, its counts, and the Authorization header the client sent (HTTP only)."""
        authorization = (ctx.headers or {}).get("authorization")
        return {"pid": os.getpid(), "handshakes": handshakes, "cancelled": cancelled, "authorization": authorization}

    @mcp.tool()
    def answer_error(code: int, message: str) -> str:
        """Answer the call with a JSON-RPC error: `code` and `message`, as given."""
        raise MCPError(code=code, message=message)

    @mcp.tool()
    async def nap(seconds: float, ctx: Context) -> dict[str, int]:
        """Sleep without blocking anything else, having said so first."""
        await ctx.report_progress(0, 1, f"napping {seconds:g}s")
        await anyio.sleep(seconds)
        return {"pid": os.getpid()}

    @mcp.tool()
    async def hang(ctx: Context) -> str:
        """Never answer this call; the rest of the server goes on answering."""
        global cancelled
        await ctx.report_progress(0, 1, "hanging")
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled += 1
            raise
        return "unreachable"

    @mcp.tool()
    async def freeze(seconds: float) -> str:
        """Block the whole server for `seconds`: a process that is alive and answers nothing."""
        time.sleep(seconds)
        return "thawed"

    return mcp


if __name__ == "__main__":
    serve(build_server())
    # A server that takes its time to exit once its client has gone (stdio: stdin closed).
    time.sleep(float(os.environ.get("FAULTS_EXIT_DELAY", "0")))
