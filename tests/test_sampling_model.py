"""A sampling request sent to an OpenAI-compatible endpoint for a person to review: what is sent, what comes
back, and what the reviewer is told when the endpoint fails, never with the key in it.

The endpoint is tests/servers/chat_model.py, a real HTTP server on a loopback port.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from conftest import free_port
from servers.chat_model import MODEL, ChatModel, chat_model

from web.sampling_model import (
    MAX_ERROR_BODY_BYTES,
    MAX_REPLY_BYTES,
    QUOTED_CHARS,
    SamplingModel,
    SamplingUnavailable,
)
from web.settings import Settings

pytestmark = pytest.mark.anyio

KEY_ENV = "CHAT_MODEL_TEST_KEY"
KEY = "sk-test-4f9c2a7e81d3b605"
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


def request(**changes: Any) -> dict[str, Any]:
    """A pending sampling request as the run's state shows it."""
    return {
        "request_id": "r1",
        "kind": "sampling",
        "message": "Summarise",
        "messages": [{"role": "user", "content": {"type": "text", "text": "Hello"}}],
        "system_prompt": None,
        "model_preferences": None,
        "max_tokens": 100,
        "temperature": None,
        "stop_sequences": None,
        "include_context": None,
        **changes,
    }


@pytest.fixture(scope="module")
def server() -> Iterator[ChatModel]:
    with chat_model() as model:
        yield model


@pytest.fixture
def endpoint(server: ChatModel) -> ChatModel:
    """The endpoint answering replies again, with nothing received yet."""
    server.answer, server.finish_reason, server.status, server.padding = "reply", "stop", 401, 0
    server.words = "Incorrect API key provided:"
    server.received.clear()
    return server


@pytest.fixture
async def sampling(endpoint: ChatModel, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SamplingModel]:
    monkeypatch.setenv(KEY_ENV, KEY)
    model = SamplingModel(endpoint.url, model=MODEL, key_env=KEY_ENV, timeout=5)
    yield model
    await model.aclose()


async def failure(sampling: SamplingModel, pending: dict[str, Any] | None = None) -> SamplingUnavailable:
    with pytest.raises(SamplingUnavailable) as caught:
        await sampling.complete(pending or request())
    return caught.value


def assert_no_key(problem: SamplingUnavailable) -> None:
    """Neither its text nor anything a log or a traceback would print of it holds the key."""
    printed = "".join(traceback.format_exception(problem))
    assert KEY not in printed and KEY[:12] not in printed
    assert problem.__cause__ is None and problem.__context__ is None


async def test_text_and_an_image_go_to_the_model_after_the_system_prompt_and_its_reply_is_the_draft(
    sampling: SamplingModel, endpoint: ChatModel
) -> None:
    pending = request(
        system_prompt="You are terse.",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image", "data": PIXEL, "mimeType": "image/png"},
                ],
            },
            {"role": "assistant", "content": {"type": "text", "text": "A pixel."}},
            {"role": "user", "content": [{"type": "text", "text": "Which"}, {"type": "text", "text": "colour?"}]},
        ],
        max_tokens=64,
        temperature=0.2,
        stop_sequences=["END"],
        model_preferences={"hints": [{"name": "claude-3-sonnet"}]},
    )
    draft = await sampling.complete(pending)
    assert draft == {
        "text": "You said: Which\n\ncolour? (max 64, system: You are terse.)",
        "model": f"{MODEL}-0601",
        "stop_reason": "endTurn",
    }
    [received] = endpoint.received
    assert received.headers["authorization"] == f"Bearer {KEY}"
    assert received.headers["content-type"] == "application/json"
    assert received.body == {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
                ],
            },
            {"role": "assistant", "content": "A pixel."},
            {"role": "user", "content": "Which\n\ncolour?"},
        ],
        "max_tokens": 64,
        "temperature": 0.2,
        "stop": ["END"],
    }


async def test_without_a_key_in_the_environment_no_authorization_is_sent(
    sampling: SamplingModel, endpoint: ChatModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV)
    draft = await sampling.complete(request(system_prompt=None))
    assert draft["text"] == "You said: Hello (max 100, system: None)"
    [received] = endpoint.received
    assert "authorization" not in received.headers
    assert [message["role"] for message in received.body["messages"]] == ["user"]
    assert "temperature" not in received.body and "stop" not in received.body


@pytest.mark.parametrize(
    ("finish_reason", "stop_reason"),
    [("stop", "endTurn"), ("length", "maxTokens"), ("content_filter", "content_filter"), (None, None)],
)
async def test_why_the_model_stopped_is_said_in_mcp_words(
    sampling: SamplingModel, endpoint: ChatModel, finish_reason: str | None, stop_reason: str | None
) -> None:
    endpoint.finish_reason = finish_reason
    assert (await sampling.complete(request()))["stop_reason"] == stop_reason


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (
            {"type": "audio", "data": "UklGRg==", "mimeType": "audio/wav"},
            "Message 1 cannot be sent to the model: it holds audio content",
        ),
        (
            [{"type": "text", "text": "hi"}, {"type": "tool_use", "id": "t", "name": "x", "input": {}}],
            "it holds tool_use content",
        ),
        ({"type": "image", "data": "", "mimeType": "image/png"}, "its image has no image data"),
    ],
)
async def test_content_a_chat_endpoint_cannot_take_is_named_and_nothing_is_sent(
    sampling: SamplingModel, endpoint: ChatModel, content: Any, said: str
) -> None:
    problem = await failure(sampling, request(messages=[{"role": "user", "content": content}]))
    assert said in str(problem)
    assert endpoint.received == []


async def test_an_image_from_the_assistant_is_refused_before_sending(
    sampling: SamplingModel, endpoint: ChatModel
) -> None:
    image = {"type": "image", "data": PIXEL, "mimeType": "image/png"}
    messages = [{"role": "user", "content": {"type": "text", "text": "Draw"}}, {"role": "assistant", "content": image}]
    problem = await failure(sampling, request(messages=messages))
    assert "Message 2 cannot be sent to the model: chat completions take images from the user only" in str(problem)
    assert endpoint.received == []


async def test_an_endpoint_nobody_listens_on_is_unreachable_and_named_without_the_password_in_its_url() -> None:
    port = free_port()
    sampling = SamplingModel(f"http://stepline:hunter2@127.0.0.1:{port}/v1", model=MODEL, key_env=KEY_ENV)
    try:
        problem = await failure(sampling)
    finally:
        await sampling.aclose()
    assert str(problem).startswith(f"Cannot reach the model endpoint http://127.0.0.1:{port}/v1: ")
    assert "hunter2" not in str(problem)


async def test_a_key_no_header_can_carry_is_refused_without_being_quoted(
    sampling: SamplingModel, endpoint: ChatModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, f"{KEY}\r\nX-Injected: yes")
    problem = await failure(sampling)
    assert str(problem) == f"The key in ${KEY_ENV} has characters an HTTP header cannot carry"
    assert endpoint.received == []


@pytest.mark.parametrize("answer", ["silent", "endless"])
async def test_an_endpoint_that_does_not_finish_its_answer_in_time_is_given_up_on(
    endpoint: ChatModel, answer: str
) -> None:
    endpoint.answer = answer  # type: ignore[assignment]
    sampling = SamplingModel(endpoint.url, model=MODEL, key_env=KEY_ENV, timeout=0.5)
    try:
        problem = await failure(sampling)
    finally:
        await sampling.aclose()
    assert str(problem) == f"The model endpoint {endpoint.url} did not answer within 0.5 s"


async def test_a_refusal_says_its_status_and_the_endpoints_words_without_the_key_it_echoed(
    sampling: SamplingModel, endpoint: ChatModel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    endpoint.answer = "refuse"
    problem = await failure(sampling)
    assert str(problem) == (
        f"The model endpoint {endpoint.url} answered HTTP 401: Incorrect API key provided: Bearer [key removed]"
    )
    assert endpoint.received[0].headers["authorization"] == f"Bearer {KEY}"  # it was sent, and echoed
    assert_no_key(problem)
    assert KEY not in caplog.text


async def test_a_long_explanation_is_quoted_only_so_far(sampling: SamplingModel, endpoint: ChatModel) -> None:
    endpoint.answer, endpoint.status, endpoint.words = "refuse", 429, "Rate limit reached. " * 100
    problem = await failure(sampling)
    prefix = f"The model endpoint {endpoint.url} answered HTTP 429: "
    assert str(problem).startswith(prefix + "Rate limit reached. Rate limit reached.")
    assert str(problem).endswith("…") and len(str(problem)) == len(prefix) + QUOTED_CHARS


async def test_a_plain_text_refusal_is_quoted_without_the_key(sampling: SamplingModel, endpoint: ChatModel) -> None:
    endpoint.answer, endpoint.status = "refuse_text", 403
    problem = await failure(sampling)
    assert (
        str(problem)
        == f"The model endpoint {endpoint.url} answered HTTP 403: Unauthorized. You sent: Bearer [key removed]"
    )
    assert_no_key(problem)


async def test_a_long_refusal_is_read_and_quoted_only_so_far_not_even_a_key_cut_in_half(
    sampling: SamplingModel, endpoint: ChatModel
) -> None:
    # Spaces, so that the part read ends eight characters into the echoed key.
    endpoint.answer, endpoint.status = "refuse_text", 500
    endpoint.padding = MAX_ERROR_BODY_BYTES - len("Unauthorized. You sent: Bearer ") - 8
    problem = await failure(sampling)
    assert str(problem) == f"The model endpoint {endpoint.url} answered HTTP 500: Unauthorized. You sent: Bearer"
    assert KEY[:8] not in str(problem)
    assert_no_key(problem)


async def test_a_page_that_is_not_json_is_quoted(sampling: SamplingModel, endpoint: ChatModel) -> None:
    endpoint.answer = "html"
    problem = await failure(sampling)
    assert str(problem).startswith(f"The model endpoint {endpoint.url} did not answer JSON (JSON decode error")
    assert "<h1>Welcome to nginx!</h1>" in str(problem)


async def test_json_without_a_reply_says_what_is_missing(sampling: SamplingModel, endpoint: ChatModel) -> None:
    endpoint.answer = "no_choices"
    problem = await failure(sampling)
    assert str(problem) == f"The model endpoint {endpoint.url} answered JSON without a reply (no choices[0].message)"


async def test_nan_is_not_json(sampling: SamplingModel, endpoint: ChatModel) -> None:
    endpoint.answer = "nan"
    problem = await failure(sampling)
    assert "did not answer JSON (NaN is not valid JSON: numbers must be finite)" in str(problem)


@pytest.mark.parametrize("answer", ["huge", "huge_unannounced"])
async def test_an_answer_larger_than_a_reply_is_read_no_further(
    sampling: SamplingModel, endpoint: ChatModel, answer: str
) -> None:
    endpoint.answer = answer  # type: ignore[assignment]
    problem = await failure(sampling)
    assert str(problem) == (
        f"The model endpoint {endpoint.url} answered more than {MAX_REPLY_BYTES:,} bytes, more than a reply is read"
    )


async def test_a_request_with_a_temperature_that_is_not_a_number_is_not_sent(
    sampling: SamplingModel, endpoint: ChatModel
) -> None:
    problem = await failure(sampling, request(temperature=float("nan")))
    assert str(problem) == "This request cannot be sent to the model: temperature nan"
    assert endpoint.received == []


async def test_the_model_is_configured_only_with_an_endpoint() -> None:
    assert SamplingModel.from_settings(Settings()) is None
    settings = Settings(sampling_url="http://127.0.0.1:9/v1/", sampling_model="m", sampling_key_env="K")
    model = SamplingModel.from_settings(settings)
    assert model is not None and (model.url, model.model, model.key_env) == ("http://127.0.0.1:9/v1", "m", "K")
    await model.aclose()
