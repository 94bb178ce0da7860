"""One MCP tool call followed to the end of its run: progress relayed, questions passed on, cancellation obeyed.

A call is a run like any other (recorded, on /runs, watched live in the browser). The caller sees it move:
each step's start and end, and the progress its tool reports, are sent as `notifications/progress` when the
call carries a progress token. A request to a person is passed to the caller when it declared it can answer
it: over the open session, related to the call (protocol 2025), or as an input-required result whose
`request_state` names the run, the call then sent again with the answers (2026-07-28). Otherwise it waits for
a person in the run's page or the API, and the progress message says where.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata

from web import runs
from web.access import Identity
from web.events import EventType, RequestKind
from web.forwarded_requests import answer_of, answer_problems, can_answer, client_request
from web.json_limits import safe_text
from web.registry import RunRecord
from web.runs import RunService
from web.scenario_tools import RunLinks, call_result
from web.store import StoreError

log = logging.getLogger(__name__)

PROGRESS_MESSAGE_CHARS = 300
# How long a call that ends waits for the questions it withdraws to be written (each a notification).
WITHDRAW_SECONDS = 2.0
# What request_state holds between the legs of a call on protocol 2026-07-28: the run and how far it was read.
STATE_KEYS = {"run_id", "after"}


@dataclass(frozen=True)
class Caller:
    """Who called, through which client, what it can answer, and where its run can be seen."""

    identity: Identity | None
    client: str | None  # the client's own name and version
    capabilities: types.ClientCapabilities | None
    links: RunLinks | None


class BadRequestState(ValueError):
    """A request_state this server did not give, or gave for a run the caller may not see."""


def call_state(record: RunRecord, after: int) -> str:
    return json.dumps({"run_id": record.run_id, "after": after})


def read_call_state(text: str) -> tuple[str, int]:
    """(run_id, after) from a request_state; BadRequestState naming what is wrong."""
    try:
        state = json.loads(text)
    except ValueError:
        raise BadRequestState("request_state is not one this server gave: not JSON") from None
    if not isinstance(state, dict) or set(state) != STATE_KEYS:
        raise BadRequestState("request_state is not one this server gave: it names no run")
    run_id, after = state["run_id"], state["after"]
    if not isinstance(run_id, str) or not isinstance(after, int) or isinstance(after, bool) or after < 0:
        raise BadRequestState("request_state is not one this server gave: malformed")
    return run_id, after


def stopped_result(record: RunRecord) -> types.CallToolResult:
    """The answer to a call whose server stops before its run ends: the run goes on after the restart."""
    run_id = record.run_id
    text = (
        f"Stepline stopped before run {run_id} ended ({record.state.status}); the run goes on when Stepline "
        f"starts again. Read it at stepline://runs/{run_id}."
    )
    return types.CallToolResult(content=[types.TextContent(text=text)], is_error=True)


class CallFollower:
    """Follows `record` for one call (or one leg of it) and gives the call's result."""

    def __init__(
        self,
        service: RunService,
        record: RunRecord,
        ctx: ServerRequestContext[Any, Any],
        caller: Caller,
    ) -> None:
        self.service = service
        self.record = record
        self.ctx = ctx
        self.caller = caller
        # Told from the events as they are read (the record's state may be ahead of them).
        self.total: int | None = None
        self.done = 0
        self._forwards: dict[str, asyncio.Task[None]] = {}
        # Notifications sent since `done` last changed: MCP wants each one's progress above the last.
        self._told_at: tuple[int, int] | None = None

    async def follow(self, after: int = 0) -> types.CallToolResult | types.InputRequiredResult:
        """The run's result once it has ended; on 2026-07-28 an input-required result first, when the caller
        is to answer a request."""
        for event in self.record.events[:after]:  # read in an earlier leg of the call: counted, not told again
            self._count(event)
        try:
            async for event in self.record.follow(after):
                asked = await self._on(event)
                if asked is not None:
                    return asked
        finally:
            await self._withdraw()
        if not self.record.is_finished:  # left to go on after a restart: the server is stopping
            return stopped_result(self.record)
        scenario = self.service.catalog.get(self.record.state.scenario_id)
        return call_result(self.record, self.caller.links, scenario)

    async def _withdraw(self) -> None:
        """Withdraw the questions still put to the client (the SDK sends notifications/cancelled for each), and
        wait until that is written: on streamable HTTP it travels on the call's own stream, gone once it answers."""
        forwards = list(self._forwards.values())
        for task in forwards:
            task.cancel()
        if forwards:
            await asyncio.wait(forwards, timeout=WITHDRAW_SECONDS)

    async def answer(self, responses: dict[str, Any]) -> None:
        """Answers from the caller (2026-07-28's input responses, keyed by request id) given to the run.

        An answer to a request already answered (by a person in the page, say) or closed is dropped:
        the first answer stands, as in the API.
        """
        for request_id, result in responses.items():
            request = self.record.state.pending.get(request_id)
            if request is None:
                continue
            await self._give(request, result)

    async def _on(self, event: dict[str, Any]) -> types.InputRequiredResult | None:
        self._count(event)
        kind = event["type"]
        if kind in (EventType.STEP_STARTED, EventType.STEP_PROGRESS, EventType.STEP_FINISHED):
            await self._progress(_step_line(event, self.total))
        elif kind == EventType.INPUT_REQUESTED:
            return await self._asked(event)
        elif kind == EventType.INPUT_ANSWERED:
            task = self._forwards.pop(event["request_id"], None)
            if task is not None:
                task.cancel()  # answered in the page first: the client's question is withdrawn
        return None

    def _count(self, event: dict[str, Any]) -> None:
        if event["type"] == EventType.RUN_STARTED:
            self.total = len(event.get("plan") or []) or None
        elif event["type"] == EventType.STEP_FINISHED:
            self.done += 1

    async def _asked(self, event: dict[str, Any]) -> types.InputRequiredResult | None:
        request = self.record.state.pending.get(event["request_id"])
        if request is None:
            return None  # answered already
        if not can_answer(self.caller.capabilities, request):
            await self._progress(self._waiting_line(request))
            return None
        if self.ctx.session.can_send_request:
            self._forwards[request["request_id"]] = asyncio.create_task(self._forward(request))
            return None
        # No channel for a request of ours (2026-07-28): the call ends here with every open request the caller
        # can answer, and goes on when it is sent again with the answers.
        asks = {
            rid: client_request(open_request)
            for rid, open_request in self.record.state.pending.items()
            if can_answer(self.caller.capabilities, open_request)
        }
        return types.InputRequiredResult(input_requests=asks, request_state=call_state(self.record, event["seq"]))

    async def _forward(self, request: dict[str, Any]) -> None:
        """Ask the caller over the session, related to this call, and answer the run with what it says."""
        outbound = client_request(request)
        result_type = types.CreateMessageResult if request["kind"] == RequestKind.SAMPLING else types.ElicitResult
        try:
            result: Any = await self.ctx.session.send_request(
                outbound, result_type, metadata=ServerMessageMetadata(related_request_id=self.ctx.request_id)
            )
        except MCPError as exc:
            if request["kind"] != RequestKind.SAMPLING:
                await self._progress(self._waiting_line(request, f"the client could not answer: {exc.error.message}"))
                return
            result = exc.error  # the client refused to sample: the request is declined
        except Exception as exc:  # a reply that is not the result asked for, a connection gone
            await self._progress(self._waiting_line(request, f"the client could not answer: {exc}"))
            return
        await self._give(request, result)

    async def _give(self, request: dict[str, Any], result: Any) -> None:
        try:
            action, content = answer_of(request, result)
            await self.service.answer(
                self.record.run_id, request["request_id"], action, content, by=self.caller.identity
            )
        except (runs.UnknownRequest, runs.RequestClosed):
            pass  # someone answered first
        except (runs.AnswerInvalid, ValueError) as exc:
            problems = answer_problems(exc.errors) if isinstance(exc, runs.AnswerInvalid) else str(exc)
            await self._progress(self._waiting_line(request, f"the client's answer was refused: {problems}"))
        except StoreError:
            pass  # taken: the answer stands, and the history retries its writes
        except runs.RunRefused as exc:  # the history known to be failing: nothing taken, the question stays
            await self._progress(self._waiting_line(request, f"the client's answer could not be recorded: {exc}"))

    async def _progress(self, message: str) -> None:
        with contextlib.suppress(Exception):  # a caller gone does not stop the run
            await self.ctx.session.report_progress(
                self._next_progress(), self.total, safe_text(message, PROGRESS_MESSAGE_CHARS)
            )

    def _next_progress(self) -> float:
        """The steps ended; each further notification before another step ends creeps toward the next whole
        number (done + 1/2, + 2/3, …), since MCP wants the progress to grow with every notification."""
        repeats = self._told_at[1] + 1 if self._told_at is not None and self._told_at[0] == self.done else 0
        self._told_at = (self.done, repeats)
        return self.done + repeats / (repeats + 1)

    def _waiting_line(self, request: dict[str, Any], why: str | None = None) -> str:
        where = f" at {self.caller.links.page(self.record.run_id)}" if self.caller.links is not None else ""
        reason = f" ({why})" if why else ""
        return f"step {request['step_name']}: waiting for a person to answer{where}{reason}: {request['message']}"


def _step_line(event: dict[str, Any], total: int | None) -> str:
    """ "step 3/5 fetch_article: Scanning 17 articles…", from a step's event."""
    where = f"step {event['index'] + 1}/{total}" if total else f"step {event['index'] + 1}"
    head = f"{where} {event['step_name']}"
    kind = event["type"]
    if kind == EventType.STEP_STARTED:
        attempt = event.get("attempt", 1)
        return f"{head}: started" + (f" (attempt {attempt})" if attempt > 1 else "")
    if kind == EventType.STEP_FINISHED:
        return f"{head}: {event['status']}"
    if event.get("message"):
        return f"{head}: {event['message']}"
    progress, of = event.get("progress"), event.get("total")
    if progress is not None and of:
        return f"{head}: {progress:g} of {of:g}"
    return f"{head}: working"
