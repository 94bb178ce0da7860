"""What the HTTP layer takes as a request body: JSON only as JSON, and never more than a limit."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

JSON_MEDIA_TYPE = re.compile(r"^application/(?:[\w.+-]+\+)?json$")


def is_json_media_type(content_type: str | None) -> bool:
    """`application/json` or `application/<anything>+json`, with or without parameters."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return JSON_MEDIA_TYPE.match(media_type) is not None


def declared_charset(content_type: str | None) -> str | None:
    for parameter in (content_type or "").split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None



class BodyTooLarge(Exception):
    def __init__(self, limit: int, length: int | None = None) -> None:
        size = f"{length:,} bytes" if length is not None else "more bytes than that"
        super().__init__(f"Request body too large: the limit is {limit:,} bytes, and this one has {size}.")


Refuse = Callable[[Scope, Receive, Send, BodyTooLarge], Awaitable[None]]


class BodyLimitMiddleware:
    """Answers with `refuse` (a 413) when a request body is larger than `max_bytes`.

    A declared Content-Length is judged before anything is read. A body without one (chunked) is
    counted as the app reads it, and reading stops at the first chunk past the limit.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, refuse: Refuse) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length, chunked = _declared_body(scope)
        if length is not None and length > self.max_bytes:
            await self.refuse(scope, receive, send, BodyTooLarge(self.max_bytes, length))
            return
        if length is None and not chunked:
            # No body (a GET, an event stream): nothing to count, and no wrapper on every frame sent.
            await self.app(scope, receive, send)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge as exc:
            if started:
                raise
            await self.refuse(scope, receive, send, exc)


def _declared_body(scope: Scope) -> tuple[int | None, bool]:
    """The Content-Length, if any, and whether the body comes chunked (HTTP/1.1's only other way)."""
    length, chunked = None, False
    for name, value in scope["headers"]:
        if name == b"content-length":
            # Not digits: the server refuses such a request; count the body like a chunked one.
            length = int(value) if value.isdigit() else None
            chunked = chunked or length is None
        elif name == b"transfer-encoding":
            chunked = True
    return length, chunked
