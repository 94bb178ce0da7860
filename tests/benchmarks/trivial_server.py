"""The MCP server the benchmarks drive, over stdio: `python tests/benchmarks/trivial_server.py`.

- `echo(text)` answers at once: what is left of a step's time is overhead.
- `gate(path)` waits until `path` exists, so a benchmark can hold a run until its clients are ready.
- `work(ms, reports)` sleeps `ms` milliseconds, reporting progress `reports` times along the way, each
  with the wall-clock time it was sent as its message, so a client can tell how late it arrives.
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio
from mcp.server.mcpserver import Context, MCPServer

mcp = MCPServer("bench")


@mcp.tool()
def echo(text: str) -> str:
    """Returns `text`."""
    return text


@mcp.tool()
async def gate(path: str) -> str:
    """Returns once `path` exists (at most a minute)."""
    with anyio.fail_after(60):
        while not Path(path).exists():
            await anyio.sleep(0.01)
    return "open"


@mcp.tool()
async def work(ms: float, ctx: Context, reports: int = 1) -> str:
    """Sleeps `ms` milliseconds, reporting progress `reports` times, each stamped with the time (a float)."""
    pause = ms / 1000 / (reports + 1)
    for done in range(1, reports + 1):
        await anyio.sleep(pause)
        await ctx.report_progress(done, reports + 1, repr(time.time()))
    await anyio.sleep(pause)
    return "done"


if __name__ == "__main__":
    mcp.run()
