"""Streamable HTTP: the HTTP client under an MCP session, and the server's HTTP error answers in its own words.

When a server answers a request's POST with an HTTP error status, the SDK passes on the body only if it
is a JSON-RPC error naming the request; anything else (a plain-text body, a JSON-RPC error without an
id, a proxy's page) becomes a stand-in such as "Server returned an error response". `HttpRefusals`
reads each such answer as it arrives and puts the server's status and text back into the error the
session raises, as an `HttpRefusal` in its `data`. It also tells which refusals mean the server no
longer knows the session (it restarted), so the call can be tried again on a new one.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx2
from mcp.client.streamable_http import MCP_SESSION_ID, streamable_http_client
from mcp.shared.message import SessionMessage
from mcp_types import ErrorData, JSONRPCError, RequestId

from web.mcp_config import HttpServer

log = logging.getLogger(__name__)

# The MCP SDK's own HTTP client settings: 30 s to connect, send or get a pooled connection, 5 min
# between bytes read (a server may hold a response stream open through a long call). Redirects stay
# off: the SDK follows those that keep to the server's origin itself.
HTTP_TIMEOUT = httpx2.Timeout(30.0, read=300.0)
# An error body is read this far, at most, for the server's words (a JSON body the SDK reads whole anyway).
MAX_ERROR_BODY_BYTES = 16 * 1024
# The server's text is kept to this many characters: it becomes a step's one-line message.
MAX_ERROR_TEXT = 300
# Refusals waiting for their error to pass: more would mean errors that never came, so the oldest go.
MAX_PENDING = 256


@dataclass(frozen=True)
class HttpRefusal:
    """A request the server refused with an HTTP error status, as the server put it."""

    status: int
    text: str
    # The JSON-RPC error code the server's body gave, if it gave one.
    code: int | None
    # Whether the refusal says the session the request named is unknown to the server (a restart):
    # 404 to a request that named a session (the MCP specification's answer), or a 400 that speaks of
    # the session (what several servers answer instead).
    session_unknown: bool

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.text}"


class HttpRefusals:
    """One connection's refused requests, from the HTTP response to the JSON-RPC error the session sees."""

    def __init__(self) -> None:
        self._pending: dict[RequestId, HttpRefusal] = {}

    async def on_response(self, response: httpx2.Response) -> None:
        """An httpx2 response hook: note a refused request's status and text, keyed by its JSON-RPC id."""
        request = response.request
        if response.status_code < 400 or request.method != "POST":
            return
        try:
            request_id = json.loads(request.content).get("id")
        except (ValueError, AttributeError, httpx2.RequestNotRead):
            return
        if request_id is None:  # a notification: there is no call to tell
            return
        try:
            code, text = _server_words(response, await _read_body(response))
        except Exception as exc:  # the body broke off: the status is still the server's answer
            log.debug("Could not read an error body: %r", exc)
            code, text = None, ""
        text = text or response.reason_phrase or "no reason given"
        named_session = MCP_SESSION_ID in request.headers
        unknown = named_session and (
            response.status_code == 404 or (response.status_code == 400 and "session" in text.lower())
        )
        if len(self._pending) >= MAX_PENDING:
            self._pending.pop(next(iter(self._pending)))
        self._pending[request_id] = HttpRefusal(response.status_code, text, code, unknown)

    def explain(self, item: Any) -> None:
        """Give the error the session is about to see for a refused request the server's status and words."""
        if not isinstance(item, SessionMessage) or not isinstance(item.message, JSONRPCError):
            return
        refusal = self._pending.pop(item.message.id, None) if item.message.id is not None else None
        if refusal is not None:
            item.message.error = ErrorData(code=item.message.error.code, message=str(refusal), data=refusal)


def refusal_of(error: ErrorData) -> HttpRefusal | None:
    return error.data if isinstance(error.data, HttpRefusal) else None


async def _read_body(response: httpx2.Response) -> bytes:
    if _is_json(response):
        return await response.aread()  # the SDK reads it next, from what is kept here
    body = b""
    async with contextlib.aclosing(response.aiter_bytes()) as parts:
        async for part in parts:
            body += part
            if len(body) >= MAX_ERROR_BODY_BYTES:
                break
    return body[:MAX_ERROR_BODY_BYTES]


def _is_json(response: httpx2.Response) -> bool:
    media_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def _server_words(response: httpx2.Response, body: bytes) -> tuple[int | None, str]:
    """The JSON-RPC code (if any) and the text of an error body, on one bounded line."""
    code, text = None, ""
    if _is_json(response):
        with contextlib.suppress(ValueError):
            code, text = _json_words(json.loads(body))
    elif response.headers.get("content-type", "").lower().startswith("text/plain"):
        text = body.decode(response.encoding or "utf-8", errors="replace")
    # Other bodies (a proxy's HTML page) say no more than the status's reason phrase.
    text = " ".join(text.split())
    if len(text) > MAX_ERROR_TEXT:
        text = text[: MAX_ERROR_TEXT - 1] + "…"
    return code, text


def _json_words(document: Any) -> tuple[int | None, str]:
    if not isinstance(document, dict):
        return None, ""
    error = document.get("error")
    if isinstance(error, dict):  # JSON-RPC, with or without the request's id
        code = error.get("code")
        message = error.get("message")
        return (code if isinstance(code, int) and not isinstance(code, bool) else None), (
            message if isinstance(message, str) else ""
        )
    for key in ("error_description", "message", "detail", "error"):  # what other HTTP services answer (OAuth too)
        if isinstance(document.get(key), str):
            return None, document[key]
    return None, ""


@contextlib.asynccontextmanager
async def streamable_http(config: HttpServer, refusals: HttpRefusals) -> AsyncIterator[Any]:
    """The SDK's streamable HTTP transport, over a client that notes each refused request in `refusals`."""
    async with (
        httpx2.AsyncClient(
            headers=config.headers or None, timeout=HTTP_TIMEOUT, event_hooks={"response": [refusals.on_response]}
        ) as http,
        streamable_http_client(config.url, http_client=http) as streams,
    ):
        yield streams
