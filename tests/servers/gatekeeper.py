"""An MCP server behind a gate that refuses requests the ways real deployments do:
`python tests/servers/gatekeeper.py streamable-http PORT` (served at /mcp).

The gate stands in for what happens around a server: a restart that forgets every session (answered
as the MCP reference server answers, 400 "Bad Request: No valid session ID provided" as a JSON-RPC
error without an id, or as the specification says, 404), a gateway that refuses tool calls with a
plain-text page, a server that forgets each session as soon as it is made. The tools switch these on;
`GET /stats` tells what the gate saw: handshakes (sessions opened) and refused requests by method.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# What the MCP reference server (`@modelcontextprotocol/server-everything`) answers a request that
# names a session it does not know: HTTP 400, and a JSON-RPC error without the request's id.
REFERENCE_REFUSAL = (
    400,
    "application/json",
    {"jsonrpc": "2.0", "error": {"code": -32000, "message": "Bad Request: No valid session ID provided"}},
)
# What the specification asks for, here with a plain-text body.
SPEC_REFUSAL = (404, "text/plain", "Session not found: it ended when the server restarted")


@dataclass
class Gate:
    handshakes: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    seen: set[str] = field(default_factory=set)
    forgotten: set[str] = field(default_factory=set)
    refusal: tuple[int, str, Any] = REFERENCE_REFUSAL
    forget_at_once: bool = False
    # Tool calls refused whatever the session: (status, content type, body).
    blocked_calls: tuple[int, str, Any] | None = None


gate = Gate()


class GateMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "GET" and scope["path"] == "/stats":
            stats = {"handshakes": gate.handshakes, "refused": dict(gate.refused), "pid": os.getpid()}
            await answer(send, 200, "application/json", stats)
            return
        body = await read_body(receive)
        method = request_method(body)
        session = dict(scope["headers"]).get(b"mcp-session-id", b"").decode()
        if session and (session in gate.forgotten or gate.forget_at_once):
            gate.refused[method] += 1
            await answer(send, *gate.refusal)
            return
        if method == "tools/call" and gate.blocked_calls is not None:
            gate.refused[method] += 1
            await answer(send, *gate.blocked_calls)
            return
        if session:
            gate.seen.add(session)
        elif method == "initialize":
            gate.handshakes += 1
        await self.app(scope, replay(body, receive), send)


async def read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


def replay(body: bytes, receive: Receive) -> Receive:
    """The body read already, then whatever comes next (the client's disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


def request_method(body: bytes) -> str:
    try:
        method = json.loads(body).get("method")
    except (ValueError, AttributeError):
        return "-"
    return method if isinstance(method, str) else "-"


async def answer(send: Send, status: int, content_type: str, body: Any) -> None:
    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def build_server() -> MCPServer:
    mcp = MCPServer("gatekeeper")

    @mcp.tool()
    def whoami() -> dict[str, Any]:
        """This process's id and the sessions opened so far."""
        return {"pid": os.getpid(), "handshakes": gate.handshakes}

    @mcp.tool()
    def forget_sessions(spec: bool = False) -> dict[str, int]:
        """Forget every session opened so far, as a restart does: answered as the reference server
        answers (400), or with `spec` as the specification says (404)."""
        gate.forgotten |= gate.seen
        gate.refusal = SPEC_REFUSAL if spec else REFERENCE_REFUSAL
        return {"forgotten": len(gate.forgotten)}

    @mcp.tool()
    def forget_at_once() -> dict[str, bool]:
        """From now on, forget each session as soon as it is made: every request that names one is refused."""
        gate.forget_at_once = True
        return {"forgetting": True}

    @mcp.tool()
    def block_calls(status: int, text: str, json_rpc: bool = False) -> dict[str, bool]:
        """From now on, refuse every tool call with `status` and `text`, as a gateway would: plain text, or
        with `json_rpc` a JSON-RPC error without the request's id (code -32000)."""
        error = {"jsonrpc": "2.0", "error": {"code": -32000, "message": text}}
        gate.blocked_calls = (status, "application/json", error) if json_rpc else (status, "text/plain", text)
        return {"blocking": True}

    return mcp


if __name__ == "__main__":
    transport, port = sys.argv[1:3]
    if transport != "streamable-http":
        raise SystemExit("gatekeeper serves streamable-http only")
    app = GateMiddleware(build_server().streamable_http_app())
    uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning")
