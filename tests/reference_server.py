"""The MCP reference server from npm, `@modelcontextprotocol/server-everything`, at the version
tests/reference/package-lock.json pins (`make test` and `make bench` install it with npm)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

REFERENCE_SERVER = (
    Path(__file__).resolve().parent / "reference/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
)


def reference_server() -> dict[str, Any]:
    """Its mcpServers entry (stdio). Among its tools: `echo(message)` answers "Echo: <message>";
    `get-tiny-image`, `get-resource-links`, `get-resource-reference`, `get-annotated-message` and
    `get-structured-content` answer with each kind of content block."""
    if not REFERENCE_SERVER.exists():
        raise RuntimeError(f"{REFERENCE_SERVER} is missing: `make test` installs it with npm")
    return {"command": "node", "args": [str(REFERENCE_SERVER), "stdio"]}
