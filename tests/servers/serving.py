"""How the tests' MCP servers are started: `python tests/servers/<name>.py TRANSPORT [PORT]`.

TRANSPORT is `stdio`, `streamable-http` (served at /mcp) or `sse` (served at /sse).
"""

from __future__ import annotations

import sys

from mcp.server.mcpserver import MCPServer


def serve(server: MCPServer, argv: list[str] | None = None) -> None:
    transport, *rest = argv if argv is not None else sys.argv[1:]
    if transport == "stdio":
        server.run()
    elif transport in ("streamable-http", "sse"):
        server.run(transport, host="127.0.0.1", port=int(rest[0]))
    else:
        raise SystemExit(f"unknown transport {transport!r}")
