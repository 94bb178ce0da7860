"""A model a person may hand a server's sampling request to: an OpenAI-compatible chat completions endpoint.

The person reviews the model's reply before it goes back to the server (the MCP spec's human in the loop
for sampling); its key is read from the environment and sent only to the endpoint. Whatever goes wrong
becomes a `SamplingUnavailable` whose text says what, with the key removed from anything the endpoint
echoed back, and with no exception chained to it (an HTTP error keeps the request, headers and all).
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx2

from web.json_limits import DEFAULT_MAX_DEPTH, JsonProblem, dumps, parse
from web.settings import Settings

# A model may take a while over a long reply, but a reviewer is waiting on the page: past this they are told.
TIMEOUT_SECONDS = 120.0
# An endpoint that has not even accepted the connection by then is taken as down.
CONNECT_TIMEOUT_SECONDS = 10.0
# The largest answer read from the endpoint, as Settings.max_output_bytes bounds a tool's: more is refused.
MAX_REPLY_BYTES = 1024 * 1024
# An error answer is read this far, at most, for the endpoint's words.
MAX_ERROR_BODY_BYTES = 16 * 1024
# The endpoint's words are quoted this far: they become a one-line message.
QUOTED_CHARS = 300
# OpenAI's finish_reason in MCP's stopReason words; others are passed on as they are.
STOP_REASONS = {"stop": "endTurn", "length": "maxTokens"}
# What stands where the key was, in anything the endpoint echoed back.
KEY_REMOVED = "[key removed]"


class SamplingUnavailable(Exception):
    """The endpoint could not give a reply (unreachable, refused, garbage); the message says why, without the key."""


class SamplingModel:
    """One endpoint and its HTTP client, kept for the app's life: `await aclose()` when the app stops."""

    def __init__(
        self,
        url: str,
        *,
        model: str,
        key_env: str,
        timeout: float = TIMEOUT_SECONDS,
        max_reply_bytes: int = MAX_REPLY_BYTES,
    ) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self.key_env = key_env
        self.timeout = timeout
        self.max_reply_bytes = max_reply_bytes
        self.connect_timeout = min(timeout, CONNECT_TIMEOUT_SECONDS)
        parts = urlsplit(self.url)
        # Named in messages without any user:password the URL may carry.
        self.where = parts._replace(netloc=parts.netloc.rpartition("@")[2], query="", fragment="").geturl()
        # Redirects stay off: a key is sent to the configured endpoint only.
        self._client = httpx2.AsyncClient(
            timeout=httpx2.Timeout(timeout, connect=self.connect_timeout),
            follow_redirects=False,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> SamplingModel | None:
        """The configured endpoint; None when there is none (people write the replies)."""
        if settings.sampling_url is None:
            return None
        return cls(settings.sampling_url, model=settings.sampling_model, key_env=settings.sampling_key_env)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        """The model's reply to a pending sampling request (as the run's state shows it): a draft
        `{text, model, stop_reason}`. Raises SamplingUnavailable."""
        key = os.environ.get(self.key_env) or None
        try:
            return await self._complete(request, key)
        except SamplingUnavailable as problem:
            message = str(problem)
        # Raised outside the handler, so nothing the endpoint answered is chained to it.
        raise SamplingUnavailable(message.replace(key, KEY_REMOVED) if key else message)

    async def _complete(self, request: dict[str, Any], key: str | None) -> dict[str, Any]:
        payload = chat_request(request, self.model)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key is not None:
            if not key.isascii() or not key.isprintable() or " " in key:
                raise SamplingUnavailable(f"The key in ${self.key_env} has characters an HTTP header cannot carry")
            headers["Authorization"] = f"Bearer {key}"
        try:
            with anyio.fail_after(self.timeout):
                status, body, cut = await self._post(payload, headers)
        except httpx2.ConnectTimeout:
            failure = f"Cannot reach the model endpoint {self.where}: no connection within {self.connect_timeout:g} s"
        except (TimeoutError, httpx2.TimeoutException):
            failure = f"The model endpoint {self.where} did not answer within {self.timeout:g} s"
        except httpx2.ConnectError as error:
            failure = f"Cannot reach the model endpoint {self.where}: {error or type(error).__name__}"
        except httpx2.TransportError as error:
            failure = f"The model endpoint {self.where} broke off its answer: {error or type(error).__name__}"
        else:
            return self._reply(status, body, cut, key)
        raise SamplingUnavailable(failure)

    async def _post(self, payload: bytes, headers: dict[str, str]) -> tuple[int, bytes, bool]:
        """The answer's status and body, read at most as far as its status allows (`cut`: there was more)."""
        async with self._client.stream(
            "POST", f"{self.url}/chat/completions", content=payload, headers=headers
        ) as response:
            ok = 200 <= response.status_code < 300
            limit = self.max_reply_bytes if ok else MAX_ERROR_BODY_BYTES
            declared = response.headers.get("content-length", "")
            if ok and declared.isdigit() and int(declared) > limit:
                return response.status_code, b"", True
            body = bytearray()
            async with contextlib.aclosing(response.aiter_bytes()) as chunks:
                async for chunk in chunks:
                    body += chunk
                    if len(body) > limit:
                        return response.status_code, bytes(body[:limit]), True
            return response.status_code, bytes(body), False

    def _reply(self, status: int, body: bytes, cut: bool, key: str | None) -> dict[str, Any]:
        if not 200 <= status < 300:
            words = _error_words(body, cut, key) or "(no explanation)"
            raise SamplingUnavailable(f"The model endpoint {self.where} answered HTTP {status}: {words}")
        if cut:
            raise SamplingUnavailable(
                f"The model endpoint {self.where} answered more than {self.max_reply_bytes:,} bytes, "
                "more than a reply is read"
            )
        try:
            document = parse(body, max_depth=DEFAULT_MAX_DEPTH)
        except JsonProblem as problem:
            raise SamplingUnavailable(
                f"The model endpoint {self.where} did not answer JSON ({problem.message}): {_quote(body, key)}"
            ) from None
        return reply_of(document, self.model, self.where)


def chat_request(request: dict[str, Any], model: str) -> bytes:
    """The chat completions request for a pending sampling request: its system prompt first, then its messages."""
    messages: list[dict[str, Any]] = []
    system_prompt = request.get("system_prompt")
    if system_prompt:
        messages.append({"role": "system", "content": str(system_prompt)})
    asked = request.get("messages")
    if not isinstance(asked, list) or not asked:
        raise SamplingUnavailable("This request cannot be sent to the model: it has no messages")
    messages += [_chat_message(number, message) for number, message in enumerate(asked, 1)]
    payload: dict[str, Any] = {"model": model, "messages": messages}
    max_tokens = request.get("max_tokens")
    if max_tokens is not None:
        if type(max_tokens) is not int or max_tokens < 1:
            raise SamplingUnavailable(f"This request cannot be sent to the model: max tokens {max_tokens!r}")
        payload["max_tokens"] = max_tokens
    temperature = request.get("temperature")
    if temperature is not None:
        if type(temperature) not in (int, float) or not math.isfinite(temperature):
            raise SamplingUnavailable(f"This request cannot be sent to the model: temperature {temperature!r}")
        payload["temperature"] = temperature
    stop = request.get("stop_sequences")
    if isinstance(stop, list) and stop:
        payload["stop"] = [str(sequence) for sequence in stop]
    return dumps(payload).encode()


def _chat_message(number: int, message: Any) -> dict[str, Any]:
    role = message.get("role") if isinstance(message, dict) else None
    if role not in ("user", "assistant"):
        raise SamplingUnavailable(f"Message {number} cannot be sent to the model: its role is {role!r}")
    content = message.get("content")
    blocks = content if isinstance(content, list) else [content]
    parts: list[dict[str, Any]] = []
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image" and role == "user" and _is_image(block):
            data_url = f"data:{block['mimeType']};base64,{block['data']}"
            parts.append({"type": "image_url", "image_url": {"url": data_url}})
        elif kind == "image" and role == "user":
            raise SamplingUnavailable(f"Message {number} cannot be sent to the model: its image has no image data")
        elif kind == "image":
            raise SamplingUnavailable(
                f"Message {number} cannot be sent to the model: chat completions take images from the user only, "
                "and this one is the assistant's"
            )
        else:
            raise SamplingUnavailable(
                f"Message {number} cannot be sent to the model: it holds {kind or 'unknown'} content, "
                "which Stepline sends to no chat completions endpoint (only text and images)"
            )
    if all(part["type"] == "text" for part in parts):
        # Plain text as a string: every OpenAI-compatible server takes that, not all take a list of parts.
        return {"role": role, "content": "\n\n".join(part["text"] for part in parts)}
    return {"role": role, "content": parts}


def _is_image(block: dict[str, Any]) -> bool:
    mime_type, data = block.get("mimeType"), block.get("data")
    return isinstance(mime_type, str) and mime_type.startswith("image/") and isinstance(data, str) and bool(data)


def reply_of(document: Any, model: str, where: str) -> dict[str, Any]:
    """The draft in a chat completion: the first choice's text, the model that wrote it and why it stopped."""
    choices = document.get("choices") if isinstance(document, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices else None
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise SamplingUnavailable(f"The model endpoint {where} answered JSON without a reply (no choices[0].message)")
    text = _text_of(message.get("content"))
    if text is None:
        refusal = message.get("refusal")
        if isinstance(refusal, str) and refusal:
            raise SamplingUnavailable(f"The model declined to answer: {_shorten(refusal)}")
        raise SamplingUnavailable(f"The model endpoint {where} answered without text (no choices[0].message.content)")
    answered_by = document.get("model")
    finish_reason = choice.get("finish_reason")
    return {
        "text": text,
        "model": answered_by if isinstance(answered_by, str) and answered_by else model,
        "stop_reason": STOP_REASONS.get(finish_reason, finish_reason) if isinstance(finish_reason, str) else None,
    }


def _text_of(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        return None
    # Some servers answer a list of parts, as requests may send them.
    texts = [part.get("text") if isinstance(part, dict) and part.get("type") == "text" else None for part in content]
    return "".join(texts) if all(isinstance(text, str) for text in texts) else None


def _error_words(body: bytes, cut: bool, key: str | None) -> str:
    """What an error answer says: OpenAI's `{"error": {"message"}}` when it is that, else its text, quoted."""
    if not cut:
        with contextlib.suppress(JsonProblem):
            document = parse(body, max_depth=DEFAULT_MAX_DEPTH)
            error = document.get("error") if isinstance(document, dict) else None
            message = error.get("message") if isinstance(error, dict) else error
            if isinstance(message, str) and message.strip():
                return _shorten(message)
    return _quote(body, key, cut=cut)


def _quote(body: bytes, key: str | None, *, cut: bool = False) -> str:
    text = body.decode("utf-8", errors="replace")
    if key:
        text = text.replace(key, KEY_REMOVED)
        if cut:  # the part read may end in the first characters of the key
            text = text[: -_partial_key(text, key) or None]
    return _shorten(text)


def _partial_key(text: str, key: str) -> int:
    """How many of the key's first characters `text` ends with (0 when none)."""
    return next((size for size in range(len(key) - 1, 0, -1) if text.endswith(key[:size])), 0)


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= QUOTED_CHARS else text[: QUOTED_CHARS - 1] + "…"
