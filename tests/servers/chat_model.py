"""An OpenAI-compatible chat completions endpoint, as a sampling model: `with chat_model() as model: model.url`.

A Starlette app served by uvicorn on a free loopback port, in a thread: `POST /v1/chat/completions`
answers with a reply naming what it was asked, and `GET /v1/models` lists the one model it serves. It
keeps every completion request it received (`model.received`: headers and JSON body), and answers the
ways endpoints fail when a test sets `model.answer`: an error that quotes the Authorization header back
(as some gateways do) in JSON or in plain text, an HTML page, JSON without a reply, a body larger than
asked, NaN, no answer, or an answer that never ends. `python tests/servers/chat_model.py PORT` serves it alone.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

MODEL = "test-chat-1"
Answer = Literal[
    "reply", "refuse", "refuse_text", "html", "no_choices", "huge", "huge_unannounced", "nan", "silent", "endless"
]
# How long `silent` and `endless` go on when nobody hangs up: far past any client's timeout in the tests.
STALL_SECONDS = 60.0


@dataclass
class Received:
    headers: dict[str, str]
    body: Any


@dataclass
class ChatModel:
    url: str = ""  # the base URL a client is configured with, ending in /v1
    answer: Answer = "reply"
    finish_reason: str | None = "stop"
    status: int = 401  # what `refuse` and `refuse_text` answer
    words: str = "Incorrect API key provided:"  # what `refuse` says before the header it quotes
    padding: int = 0  # spaces `refuse_text` sends before its words
    huge_bytes: int = 2 * 1024 * 1024  # how much `huge` and `huge_unannounced` send
    received: list[Received] = field(default_factory=list)


def build_app(model: ChatModel) -> Starlette:
    async def completions(request: Request) -> Response:
        body = await request.json()
        model.received.append(Received(dict(request.headers), body))
        return await _answer(model, request, body)

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "tests"}]})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
        ]
    )


async def _answer(model: ChatModel, request: Request, body: Any) -> Response:
    if model.answer == "reply":
        return JSONResponse(_completion(body, model.finish_reason))
    if model.answer == "refuse":
        authorization = request.headers.get("authorization", "(none)")
        error = {"message": f"{model.words} {authorization}", "type": "invalid_request_error"}
        return JSONResponse({"error": error}, status_code=model.status)
    if model.answer == "refuse_text":
        authorization = request.headers.get("authorization", "(none)")
        return PlainTextResponse(f"{' ' * model.padding}Unauthorized. You sent: {authorization}", model.status)
    if model.answer == "html":
        return HTMLResponse("<html><body><h1>Welcome to nginx!</h1></body></html>")
    if model.answer == "no_choices":
        return JSONResponse({"id": "chatcmpl-1", "object": "chat.completion", "model": MODEL, "choices": []})
    if model.answer == "huge":
        return JSONResponse(_completion(body, "stop", text="x" * model.huge_bytes))
    if model.answer == "huge_unannounced":  # no Content-Length: the client must count
        return StreamingResponse(_chunks(model.huge_bytes), media_type="application/json")
    if model.answer == "nan":
        text = json.dumps(_completion(body, "stop")).replace('"total_tokens": 3', '"total_tokens": NaN')
        return Response(text, media_type="application/json")
    if model.answer == "silent":
        await asyncio.sleep(STALL_SECONDS)
        return JSONResponse(_completion(body, "stop"))
    # endless: headers at once, then a byte now and then, so no single read ever waits long.
    return StreamingResponse(_drip(), media_type="application/json")


def _completion(body: Any, finish_reason: str | None, text: str | None = None) -> dict[str, Any]:
    """A reply that says what it was asked: the last message's text, the max tokens and the system prompt."""
    messages = body.get("messages", [])
    system = next((m["content"] for m in messages if m.get("role") == "system"), None)
    last = messages[-1]["content"] if messages else ""
    if isinstance(last, list):
        last = " ".join(part.get("text", f"<{part.get('type')}>") for part in last)
    reply = text if text is not None else f"You said: {last} (max {body.get('max_tokens')}, system: {system})"
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": f"{body.get('model')}-0601",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }


async def _chunks(size: int) -> AsyncIterator[bytes]:
    yield b'{"choices": [{"message": {"role": "assistant", "content": "'
    for _ in range(size // 65536):
        yield b"y" * 65536
    yield b'"}, "finish_reason": "stop"}]}'


async def _drip() -> AsyncIterator[bytes]:
    yield b'{"choices": ['
    for _ in range(int(STALL_SECONDS / 0.1)):
        await asyncio.sleep(0.1)
        yield b" "


@contextmanager
def chat_model() -> Iterator[ChatModel]:
    """The endpoint on a free loopback port, in a thread, until the block ends."""
    model = ChatModel()
    listener = socket.create_server(("127.0.0.1", 0))
    model.url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    config = uvicorn.Config(
        build_app(model), log_level="warning", lifespan="off", ws="none", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the chat model endpoint did not start")
            threading.Event().wait(0.01)
        yield model
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()


if __name__ == "__main__":
    uvicorn.run(build_app(ChatModel()), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
