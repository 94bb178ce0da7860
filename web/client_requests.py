"""What Stepline answers when an MCP server asks its client: roots from the configured folders, and
elicitation and sampling put to a person (web.inbox) and the person's answer turned back into MCP.

The same requests come two ways: over an open session in the middle of a call (protocol 2025,
`ServerRequests`), or inside a call's input-required result (protocol 2026-07-28, web/input_rounds.py).
Both turn MCP into a person's request and back here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import anyio
from mcp.client.session import ClientRequestContext
from mcp_types import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequestFormParams,
    ElicitRequestParams,
    ElicitRequestURLParams,
    ElicitResult,
    ErrorData,
    ListRootsResult,
    Root,
    TextContent,
)

from web.events import AnswerAction, RequestKind
from web.inbox import Answer, Ask, UnaskableRequest

# The MCP spec's error for a sampling request its user rejected.
USER_REJECTED = -1
# Who wrote a sampling reply a person gave without naming a model.
HUMAN_MODEL = "human"


class Asker(Protocol):
    """Who a call in flight asks people through, for its step (web.step_asker.StepAsker)."""

    async def ask(self, ask: Ask) -> Answer: ...

    def expired(self, what: str) -> Exception:
        """The call's failure when nobody answered `what` in time."""
        ...


class Unsupported(Exception):
    """The server asks for something Stepline cannot do; the message names the feature and says so."""


def limitation(feature: str, why: str = "") -> str:
    """How Stepline says a feature is missing on its side (not the server's fault)."""
    return f"Stepline does not support {feature}" + (f": {why}" if why else "") + " (a limitation of Stepline)"


def roots_result(roots: Sequence[Path]) -> ListRootsResult:
    """The configured folders as MCP roots: `file://` URIs, each named after its folder."""
    return ListRootsResult(roots=[Root(uri=root.as_uri(), name=root.name or str(root)) for root in roots])


def elicitation_ask(params: ElicitRequestParams) -> Ask:
    """A person's request from an elicitation: a form from its schema, or a page to visit (URL mode)."""
    if params.task is not None:
        raise Unsupported(limitation("MCP tasks", "this elicitation request asks to run as a task"))
    if isinstance(params, ElicitRequestURLParams):
        return Ask(RequestKind.URL, params.message, {"url": params.url, "elicitation_id": params.elicitation_id})
    assert isinstance(params, ElicitRequestFormParams)
    return Ask(RequestKind.ELICITATION, params.message, {"requested_schema": params.requested_schema})


def sampling_ask(server: str, params: CreateMessageRequestParams) -> Ask:
    """A person's request from a sampling request: its messages to reply to, for a person to write or review."""
    if params.tools or params.tool_choice is not None:
        raise Unsupported(limitation("sampling with tools", "a person answers sampling requests with text"))
    if params.task is not None:
        raise Unsupported(limitation("MCP tasks", "this sampling request asks to run as a task"))
    dumped = params.model_dump(mode="json", by_alias=True, exclude_none=True)
    details: dict[str, Any] = {
        "messages": dumped["messages"],
        "system_prompt": params.system_prompt,
        "model_preferences": dumped.get("modelPreferences"),
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "stop_sequences": params.stop_sequences,
        "include_context": params.include_context,
    }
    return Ask(RequestKind.SAMPLING, f"MCP server '{server}' asks for a reply to its messages (sampling)", details)


def elicit_result(answer: Answer) -> ElicitResult:
    """The server's answer to an elicitation: accepted with the form's values (none for a URL), or not."""
    if answer.action == AnswerAction.ACCEPT:
        return ElicitResult(action="accept", content=answer.content if isinstance(answer.content, dict) else None)
    if answer.action == AnswerAction.DECLINE:
        return ElicitResult(action="decline")
    return ElicitResult(action="cancel")


def sampling_result(answer: Answer) -> CreateMessageResult | ErrorData:
    """The server's answer to a sampling request: the reply a person wrote or approved, or the spec's
    "user rejected" error."""
    if answer.action != AnswerAction.ACCEPT:
        return ErrorData(code=USER_REJECTED, message=f"User rejected sampling request ({answer.action})")
    content = answer.content or {}
    return CreateMessageResult(
        role="assistant",
        content=TextContent(text=content["text"]),
        model=content.get("model") or HUMAN_MODEL,
        # A model's draft sent as it came keeps its reason (maxTokens…); a person's own reply ended its turn.
        stop_reason=content.get("stop_reason") or "endTurn",
    )


class Flight:
    """One call in flight on a connection: who may be asked for it, and its deadline, stopped while they are."""

    def __init__(self, asker: Asker | None) -> None:
        self.asker = asker
        # The call's own deadline (web.mcp_server sets it as the call starts).
        self.deadline: anyio.CancelScope | None = None
        self._paused = 0
        self._left = 0.0
        # Set when the call must stop for a reason of ours (nobody answered in time): raised instead of a timeout.
        self.failure: Exception | None = None
        # The people's requests under way for it, stopped when the call ends.
        self.asking: set[anyio.CancelScope] = set()

    def pause(self) -> None:
        if self._paused == 0 and self.deadline is not None:
            self._left = max(self.deadline.deadline - anyio.current_time(), 0.0)
            self.deadline.deadline = math.inf
        self._paused += 1

    def resume(self) -> None:
        self._paused -= 1
        if self._paused == 0 and self.deadline is not None:
            self.deadline.deadline = anyio.current_time() + self._left

    def fail(self, failure: Exception) -> None:
        self.failure = failure
        if self.deadline is not None:
            self.deadline.cancel()


class ServerRequests:
    """What one session answers its server (the ClientSession callbacks), for the calls in flight on it.

    The session does not say which call a server's request belongs to, so a request is put to a person only
    while exactly one call that may ask is in flight; otherwise the server is told why Stepline cannot answer.
    While the person is asked, the call's deadline stops; an answer that did not come in time stops the call.
    """

    def __init__(self, server: str, roots: Callable[[], list[Path]]) -> None:
        self.server = server
        self.roots = roots
        self.flights: set[Flight] = set()

    def take_off(self, asker: Asker | None) -> Flight:
        flight = Flight(asker)
        self.flights.add(flight)
        return flight

    def land(self, flight: Flight) -> None:
        self.flights.discard(flight)
        for scope in flight.asking:
            scope.cancel()

    async def list_roots(self, context: ClientRequestContext) -> ListRootsResult:
        return roots_result(self.roots())

    async def elicit(self, context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult | ErrorData:
        asked = await self._ask_person("elicitation request", lambda: elicitation_ask(params))
        return asked if isinstance(asked, ErrorData) else elicit_result(asked)

    async def sample(
        self, context: ClientRequestContext, params: CreateMessageRequestParams
    ) -> CreateMessageResult | ErrorData:
        asked = await self._ask_person("sampling request", lambda: sampling_ask(self.server, params))
        return asked if isinstance(asked, ErrorData) else sampling_result(asked)

    async def _ask_person(self, what: str, make: Callable[[], Ask]) -> Answer | ErrorData:
        flights = [flight for flight in self.flights if flight.asker is not None]
        if len(flights) != 1:
            return ErrorData(code=INVALID_REQUEST, message=self._no_flight(what, len(flights)))
        [flight] = flights
        asker = flight.asker
        assert asker is not None
        try:
            ask = make()
        except Unsupported as exc:
            return ErrorData(code=INVALID_REQUEST, message=str(exc))
        cancelled = Answer("", AnswerAction.CANCEL)
        flight.pause()
        try:
            with anyio.CancelScope() as scope:
                flight.asking.add(scope)
                try:
                    answer = await asker.ask(ask)
                except UnaskableRequest as exc:
                    unaskable = f"Stepline cannot show this {what} to a person: {exc}"
                    return ErrorData(code=INVALID_PARAMS, message=unaskable)
                finally:
                    flight.asking.discard(scope)
            if scope.cancelled_caught:  # the call ended meanwhile (stopped, or answered without it)
                return cancelled
        finally:
            flight.resume()
        if answer.action == AnswerAction.EXPIRED:
            flight.fail(asker.expired(f"the {what} of MCP server '{self.server}'"))
            return cancelled
        return answer

    def _no_flight(self, what: str, flights: int) -> str:
        if flights == 0:
            return (
                f"Stepline cannot answer this {what}: no call that may ask a person is in flight on "
                f"'{self.server}' (Stepline asks people only during a step's tool call)"
            )
        return (
            f"Stepline cannot tell which of the {flights} calls in flight on '{self.server}' asked: the {what} "
            "does not say which call it belongs to (a limitation of Stepline); run these calls one at a time "
            "to have a person answer"
        )
