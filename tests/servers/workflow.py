"""An MCP server for the workflow tests: `python tests/servers/workflow.py TRANSPORT [PORT]`.

It proves from its own side what a workflow did: how many calls were in flight at once (`sleep`
counts them per `group`, `in_flight` tells), which calls the client cancelled (`cancellations`), how
often a key was tried (`flaky`), whether progress came (`progress_for`) or not (`silent`). A test
passes `group: "{{ run.id }}"` so that runs sharing the server never count each other's calls.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from serving import serve

# What `echo` reports for an argument the client left out (a null would be indistinguishable).
NOT_GIVEN = "(not given)"
# `await_in_flight` gives up after this long: a test that waits for calls that never come fails, not hangs.
AWAIT_LIMIT_SECONDS = 10.0


@dataclass
class Group:
    """The calls of one group: in flight now, the most seen at once, and each cancelled one."""

    now: int = 0
    max: int = 0
    cancelled: list[dict[str, Any]] = field(default_factory=list)
    changed: anyio.Event = field(default_factory=anyio.Event)

    def wake(self) -> None:
        woken, self.changed = self.changed, anyio.Event()
        woken.set()


groups: defaultdict[str, Group] = defaultdict(Group)
# `flaky` calls seen per key.
tries: defaultdict[str, int] = defaultdict(int)


@asynccontextmanager
async def watched(ctx: Context, tool: str, label: str, group: str) -> AsyncIterator[None]:
    """Count the call in flight in its group while it runs; note it when the client cancels it."""
    counts = groups[group]
    counts.now += 1
    counts.max = max(counts.max, counts.now)
    counts.wake()
    try:
        yield
    except anyio.get_cancelled_exc_class():
        # The SDK cancels a tool's task when notifications/cancelled names its request.
        counts.cancelled.append({"request_id": ctx.request_id, "tool": tool, "label": label})
        raise
    finally:
        counts.now -= 1
        counts.wake()


def build_server() -> MCPServer:
    mcp = MCPServer("workflow")

    @mcp.tool(structured_output=False)
    async def sleep(seconds: float, ctx: Context, label: str = "", group: str = "") -> str:
        """Sleep `seconds`, then return `label` as text; counted in flight in `group` meanwhile."""
        async with watched(ctx, "sleep", label, group):
            await anyio.sleep(seconds)
        return label

    @mcp.tool()
    def in_flight(group: str = "") -> dict[str, int]:
        """The group's calls in flight now, and the most there ever were at once."""
        return {"now": groups[group].now, "max": groups[group].max}

    @mcp.tool()
    async def await_in_flight(count: int, group: str = "") -> dict[str, int]:
        """Answer once `count` calls of the group are in flight at once (or fail after a while)."""
        counts = groups[group]
        with anyio.move_on_after(AWAIT_LIMIT_SECONDS):
            while counts.now < count:
                await counts.changed.wait()
            return {"now": counts.now}
        raise ToolError(f"only {counts.now} of {count} calls in flight after {AWAIT_LIMIT_SECONDS:g}s")

    @mcp.tool()
    def reset(group: str = "") -> dict[str, bool]:
        """Forget the group's counts and cancellations."""
        groups.pop(group, None)
        return {"reset": True}

    @mcp.tool()
    def cancellations(group: str = "") -> dict[str, list[dict[str, Any]]]:
        """The group's calls the client cancelled: request id, tool and label of each."""
        return {"cancelled": list(groups[group].cancelled)}

    @mcp.tool()
    def flaky(key: str, failures: int, how: str = "tool_error") -> dict[str, Any]:
        """Fail the first `failures` calls for `key`, then succeed with the attempt number.

        `how`: "tool_error" answers an isError result; "jsonrpc" a JSON-RPC error.
        """
        tries[key] += 1
        attempt = tries[key]
        if attempt <= failures:
            message = f"flaky '{key}' failed attempt {attempt} of {failures} planned failures"
            if how == "jsonrpc":
                raise MCPError(code=-32000, message=message)
            raise ToolError(message)
        return {"key": key, "attempt": attempt}

    @mcp.tool()
    async def progress_for(seconds: float, every: float, ctx: Context, group: str = "") -> dict[str, int]:
        """Report progress every `every` seconds, answering after `seconds`."""
        sent = 0
        async with watched(ctx, "progress_for", "", group):
            with anyio.move_on_after(seconds):
                while True:
                    await anyio.sleep(every)
                    sent += 1
                    await ctx.report_progress(sent, None, f"tick {sent}")
        return {"notifications": sent}

    @mcp.tool()
    async def silent(seconds: float, ctx: Context, group: str = "") -> dict[str, float]:
        """Sleep `seconds` without a word of progress."""
        async with watched(ctx, "silent", "", group):
            await anyio.sleep(seconds)
        return {"slept": seconds}

    @mcp.tool()
    def echo(value: Any = None, note: Any = NOT_GIVEN) -> dict[str, Any]:
        """The arguments as they arrived; `note` says "(not given)" when it was left out."""
        return {"value": value, "note": note}

    @mcp.tool()
    def upper(text: str) -> dict[str, str]:
        """`text` in capitals; `text` is required by the input schema."""
        return {"text": text.upper()}

    @mcp.tool()
    def judge(value: Any, reject: Any = None) -> dict[str, Any]:
        """Accept `value`, unless it equals `reject` (an isError result naming it)."""
        if value == reject:
            raise ToolError(f"rejected {value!r}")
        return {"accepted": value}

    @mcp.tool(structured_output=False)
    def lines_text(n: int) -> str:
        """`n` lines of text, padded with blanks and empty lines as a shell tool's output would be."""
        return "\n".join(f"  line {number}  \n" for number in range(1, n + 1))

    @mcp.tool()
    def fail(message: str = "the tool refused") -> str:
        """Always an isError result with `message` as its text."""
        raise ToolError(message)

    return mcp


if __name__ == "__main__":
    serve(build_server())
