"""A run's request to a person, passed on to the MCP client that called the scenario, and its answer brought back.

The client is asked only what it declared it can answer: a form (elicitation, approvals too), a page to visit
(URL-mode elicitation), a model's reply (sampling). Whatever it cannot take stays for a person in the run's
page or the API, as any request does.
"""

from __future__ import annotations

from typing import Any

import mcp_types as types

from web.events import AnswerAction, RequestKind


def can_answer(capabilities: types.ClientCapabilities | None, request: dict[str, Any]) -> bool:
    """Whether a client that declared `capabilities` can be asked `request` (an input_requested event)."""
    kind = request["kind"]
    if capabilities is None or kind == RequestKind.RESUME:  # whether to run again what may have partly run: a person's
        return False
    if kind == RequestKind.SAMPLING:
        return capabilities.sampling is not None
    elicitation = capabilities.elicitation
    if elicitation is None:
        return False
    if kind == RequestKind.URL:
        return elicitation.url is not None
    # A client that declares elicitation with neither mode takes forms (the spec's compatibility rule).
    return elicitation.form is not None or elicitation.url is None


def client_request(request: dict[str, Any]) -> types.ElicitRequest | types.CreateMessageRequest:
    """The MCP request that asks the client what `request` asks a person."""
    kind = request["kind"]
    if kind == RequestKind.URL:
        return types.ElicitRequest(
            params=types.ElicitRequestURLParams(
                message=request["message"], url=request["url"], elicitation_id=request["elicitation_id"]
            )
        )
    if kind == RequestKind.SAMPLING:
        params: dict[str, Any] = {
            "messages": request["messages"],
            "maxTokens": request.get("max_tokens") or 1000,
            "systemPrompt": request.get("system_prompt"),
            "modelPreferences": request.get("model_preferences"),
            "temperature": request.get("temperature"),
            "stopSequences": request.get("stop_sequences"),
        }
        return types.CreateMessageRequest(
            params=types.CreateMessageRequestParams.model_validate({k: v for k, v in params.items() if v is not None})
        )
    schema = request.get("requested_schema") or {"type": "object", "properties": {}}
    return types.ElicitRequest(
        params=types.ElicitRequestFormParams(message=request["message"], requested_schema=schema)
    )


def answer_of(request: dict[str, Any], result: Any) -> tuple[AnswerAction, Any]:
    """The answer (action, content) the client's `result` gives `request`, for the run's inbox.

    A sampling request the client refused (an error) is declined; a result of the wrong kind is a
    ValueError naming what came back.
    """
    if request["kind"] == RequestKind.SAMPLING:
        if isinstance(result, types.ErrorData):
            return AnswerAction.DECLINE, None
        if not isinstance(result, types.CreateMessageResult) or not isinstance(result.content, types.TextContent):
            raise ValueError(f"the client answered a sampling request with {type(result).__name__}, not text")
        content = {"text": result.content.text, "model": result.model, "stop_reason": result.stop_reason}
        return AnswerAction.ACCEPT, {key: value for key, value in content.items() if value is not None}
    if not isinstance(result, types.ElicitResult):
        raise ValueError(f"the client answered an elicitation with {type(result).__name__}")
    action = AnswerAction(result.action)
    return action, (result.content or {}) if action == AnswerAction.ACCEPT else None


def answer_problems(errors: list[dict[str, Any]]) -> str:
    """What is wrong with an answer the run refused (web.runs.AnswerInvalid's errors), as the client reads it:
    "copies: 0 is less than the minimum of 1", each field named by its place in the answer."""
    problems = []
    for error in errors:
        field = [str(part) for part in error.get("loc", [])[2:]]  # past "body", "content": the answer's own
        problems.append(f"{'.'.join(field)}: {error['msg']}" if field else str(error["msg"]))
    return "; ".join(problems)
