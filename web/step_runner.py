"""One step of a run: its condition, its for_each, its arguments, its attempts with their timeouts, and the call.

A step records itself: its step_started, step_progress, step_retrying and step_item_finished events, and
its step_finished when it ends by itself (success, failed, skipped). A step stopped from outside — its
task cancelled — records nothing more and re-raises; whoever stopped it ends it (`StepRun.stop`), so that
a run's endings are written in one place and in one order.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from web.approval import answer_of, approval_ask, approval_message, approval_outcome
from web.events import (
    STRUCTURED_IS_OUTPUT,
    EventType,
    RequestKind,
    StepStatus,
    step_finished,
    step_item_finished,
    step_progress,
    step_retrying,
    step_started,
)
from web.expressions import OMIT, EvaluationError, Node
from web.inbox import Inbox, UnaskableRequest
from web.input_rounds import call_answering
from web.json_limits import MESSAGE_MAX_CHARS, bounded, safe_text
from web.mcp_pool import McpPool, ToolInfo, ToolLookupError
from web.mcp_server import PersonDeclined, ServerUnavailable, ToolCallError, WaitExpired, describe
from web.plan import PlannedStep
from web.registry import RunRecord
from web.resume import RerunStep, ResumedStep, step_events
from web.run_state import utc_now
from web.step_asker import StepAsker
from web.step_inputs import StepInputError, for_each_items, missing_required, required_arguments
from web.tool_result import ResultReader, ToolOutcome


class RunContext:
    """What the steps of one run share: its record, the servers, the tools located so far, the results so far."""

    def __init__(
        self,
        record: RunRecord,
        pool: McpPool,
        reader: ResultReader,
        *,
        call_timeout: float,
        max_for_each_items: int,
        inbox: Inbox,
        wait_timeout: float,
    ) -> None:
        self.record = record
        self.pool = pool
        self.reader = reader
        self.call_timeout = call_timeout
        self.max_for_each_items = max_for_each_items
        # Where a step asks people, and how long a request waits unless the step says (wait_timeout_seconds).
        self.inbox = inbox
        self.wait_timeout = wait_timeout
        # `steps` in expressions: each step that has ended, by name.
        self.results: dict[str, dict[str, Any]] = {}
        self.scope: dict[str, Any] = {"input": record.state.input, "steps": self.results, "run": {"id": record.run_id}}
        # A run calls the same tools again and again: find each once.
        self._tools: dict[tuple[str, str | None], ToolInfo] = {}

    async def locate(self, tool: str, server: str | None) -> ToolInfo:
        key = (tool, server)
        info = self._tools.get(key)
        if info is None:
            info = self._tools[key] = await self.pool.locate(tool, server)
        return info


class StepRun:
    """One planned step of one run, from its condition to its step_finished.

    `resumed`: a step that was waiting on people when the process stopped, going on from where it was.
    """

    def __init__(
        self,
        context: RunContext,
        step: PlannedStep,
        resumed: ResumedStep | None = None,
        *,
        rerun: RerunStep | None = None,
    ) -> None:
        self.context = context
        self.step = step
        self.resumed = resumed
        # A for_each step in flight when the run's last process stopped: its items that ended are kept.
        self.ended_items = rerun.ended_items if rerun is not None and step.for_each is not None else None
        self.started_at: str | None = resumed.started_at if resumed is not None else None
        if self.ended_items is not None and rerun is not None:
            self.started_at = rerun.started_at
        self.status: StepStatus | None = None  # set once step_finished is recorded
        self.message = ""

    async def run(self) -> StepStatus:
        """Run the step to its end and record it; CancelledError (nothing recorded) when stopped from outside."""
        if self.resumed is not None:
            outcome = await self._go_on(self.resumed)
            return self._finish(StepStatus.SUCCESS if outcome.ok else StepStatus.FAILED, outcome.message, outcome)
        step = self.step
        scope = self.context.scope
        try:
            if step.when is not None and not self._condition_holds(step.when, scope):
                return self._finish(StepStatus.SKIPPED, f"Condition is false: {step.when.describe()}")
            if step.for_each is not None:
                return await self._run_for_each(step.for_each, scope)
            if step.is_approval:
                message = approval_message(step, scope)
            else:
                arguments, omitted = evaluate_input(step, scope)
        except StepInputError as failure:
            self._start(None)
            return self._finish(StepStatus.FAILED, str(failure))
        if step.is_approval:
            self._start(None)
            outcome = await self._approve(message, None)
        else:
            outcome, _ = await self._attempts(arguments, omitted, None)
        return self._finish(StepStatus.SUCCESS if outcome.ok else StepStatus.FAILED, outcome.message, outcome)

    async def _go_on(self, resumed: ResumedStep) -> ToolOutcome:
        """A resumed step's outcome: its approval's answer (waited on again), or its call gone on with."""
        if self.step.is_approval:
            if resumed.answered is not None:
                return approval_outcome(answer_of(resumed.answered), self._wait_seconds())
            request = resumed.pending[0]
            return await self._approve(request["message"], None, again=request)
        outcome, _ = await self._attempts(
            resumed.arguments or {}, {}, None, first_attempt=resumed.attempt, resume_events=resumed.events
        )
        return outcome

    def stop(self, status: StepStatus, message: str, not_run: str) -> None:
        """End a step stopped from outside: `status` if it had started, else skipped with `not_run`. Once only."""
        if self.status is not None:
            return
        if self.started_at is None:
            self._finish(StepStatus.SKIPPED, not_run)
        else:
            self._finish(status, message)

    # --- recording ---------------------------------------------------------------------------------

    def _start(self, arguments: dict[str, Any] | None, attempt: int = 1, item_count: int | None = None) -> None:
        now = utc_now()
        self.started_at = self.started_at or now
        self.context.record.emit(
            step_started(
                step_name=self.step.name,
                index=self.step.index,
                started_at=now,
                input=arguments,
                attempt=attempt,
                item_count=item_count,
            )
        )

    def _finish(self, status: StepStatus, message: str, outcome: ToolOutcome | None = None) -> StepStatus:
        """Record the step's end: `outcome` is its result (none for a step that called nothing)."""
        # A tool's or server's words are kept whatever they hold: valid Unicode, a bounded length.
        self.status, self.message = status, safe_text(message, MESSAGE_MAX_CHARS)
        outcome = outcome or ToolOutcome(status == StepStatus.SUCCESS, message)
        # What the steps after it read: `steps.<name>.output`, `.status`, `.text`, `.content`, `.structured`.
        self.context.results[self.step.name] = {
            "output": outcome.value if status == StepStatus.SUCCESS else None,
            "status": status.value,
            "text": outcome.text,
            "content": outcome.blocks,
            "structured": outcome.structured,
        }
        self.context.record.emit(
            step_finished(
                step_name=self.step.name,
                index=self.step.index,
                status=status,
                started_at=self.started_at,
                finished_at=utc_now(),
                message=self.message,
                output=outcome.output,
                content=outcome.content,
                structured=self._recorded_structured(outcome),
            )
        )
        return status

    def _recorded_structured(self, outcome: ToolOutcome) -> Any:
        """What step_finished says of the structured content, so that a run resumed later reads it alike."""
        structured = outcome.structured
        if structured is None:
            return None
        if structured is outcome.value:
            return STRUCTURED_IS_OUTPUT
        return bounded(structured, max_bytes=self.context.reader.max_output_bytes).value

    # --- condition and for_each ----------------------------------------------------------------------

    @staticmethod
    def _condition_holds(when: Node, scope: Mapping[str, Any]) -> bool:
        try:
            value = when.evaluate(scope)
        except EvaluationError as exc:
            raise StepInputError(str(exc)) from None
        return value is not OMIT and bool(value)

    async def _run_for_each(self, for_each: Node, scope: Mapping[str, Any]) -> StepStatus:
        items = for_each_items(self.step, for_each, scope, self.context.max_for_each_items)
        count = len(items)
        values: list[Any] = [None] * count
        outputs: list[Any] = [None] * count
        failures: dict[int, str] = {}
        ended = self.ended_items
        if ended is None:
            self._start(None, item_count=count)
            ended = {}
        for index, item in ended.items():  # ended before a restart: kept, not called again
            if index >= count:
                continue
            if item["status"] == StepStatus.SUCCESS:
                values[index] = outputs[index] = item.get("output")
            else:
                failures[index] = item.get("message") or "failed"
        asked, answered = self._approvals_before() if self.ended_items is not None else ({}, {})

        async def run_item(index: int) -> None:
            item_scope = {**scope, "item": items[index], "item_index": index}
            arguments: dict[str, Any] | None = None
            attempt = 1
            try:
                if self.step.is_approval:
                    message = approval_message(self.step, item_scope)
                else:
                    arguments, omitted = evaluate_input(self.step, item_scope)
            except StepInputError as failure:
                outcome = ToolOutcome(False, str(failure))
            else:
                if self.step.is_approval and index in answered:
                    outcome = approval_outcome(answer_of(answered[index]), self._wait_seconds())
                elif self.step.is_approval:
                    outcome = await self._approve(message, index, again=asked.get(index))
                else:
                    outcome, attempt = await self._attempts(arguments, omitted, index)
            message = safe_text(outcome.message, MESSAGE_MAX_CHARS)
            if outcome.ok:
                values[index], outputs[index] = outcome.value, outcome.output
            else:
                failures[index] = message
            self.context.record.emit(
                step_item_finished(
                    step_name=self.step.name,
                    index=self.step.index,
                    item_index=index,
                    status=StepStatus.SUCCESS if outcome.ok else StepStatus.FAILED,
                    message=message,
                    output=outcome.output,
                    input=arguments,
                    attempt=attempt,
                )
            )

        await _each(self.step.name, [i for i in range(count) if i not in ended], run_item, self.step.max_parallel)
        kept = bounded(outputs, max_bytes=self.context.reader.max_output_bytes)
        notes = [self.context.reader.truncation("Output", kept)] if kept.truncated else []
        status = StepStatus.SUCCESS
        if failures:
            first = min(failures)
            notes.insert(0, f"{len(failures)} of {count} items failed; item {first}: {failures[first]}")
            status = StepStatus.FAILED
        # The step's output is its items' outputs; their content stays with each item's call.
        return self._finish(status, "; ".join(notes), ToolOutcome(not failures, "", kept.value, value=values))

    # --- approval ------------------------------------------------------------------------------------

    def _approvals_before(self) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
        """A for_each approval's items asked before a restart, by item: the requests still open (waited on
        again, not asked anew), and the answers recorded that the item had not acted on."""
        if not self.step.is_approval:
            return {}, {}
        record, name = self.context.record, self.step.name
        asked = {
            request["item_index"]: request
            for request in record.state.pending.values()
            if request["step_name"] == name and request["kind"] == RequestKind.APPROVAL
        }
        events = step_events(record.events, name)
        requested = {
            event["request_id"]: event["item_index"]
            for event in events
            if event["type"] == EventType.INPUT_REQUESTED and event.get("kind") == RequestKind.APPROVAL
        }
        answered = {
            requested[event["request_id"]]: event
            for event in events
            if event["type"] == EventType.INPUT_ANSWERED and event["request_id"] in requested
        }
        return asked, answered

    def _wait_seconds(self) -> float:
        return self.step.wait_timeout_seconds or self.context.wait_timeout

    async def _approve(self, message: str, item_index: int | None, again: dict[str, Any] | None = None) -> ToolOutcome:
        """Ask a person to approve (or wait again on the request `again`), and what their answer makes of it."""
        context = self.context
        wait_seconds = self._wait_seconds()
        try:
            answer = await context.inbox.ask(
                context.record,
                self.step.name,
                self.step.index,
                approval_ask(self.step, message, item_index),
                wait_seconds=wait_seconds,
                again=again,
            )
        except UnaskableRequest as exc:
            return ToolOutcome(False, f"The approval cannot be shown: {exc}")
        return approval_outcome(answer, wait_seconds)

    # --- attempts ------------------------------------------------------------------------------------

    async def _attempts(
        self,
        arguments: dict[str, Any],
        omitted: dict[str, Node],
        item_index: int | None,
        *,
        first_attempt: int = 1,
        resume_events: list[dict[str, Any]] | None = None,
    ) -> tuple[ToolOutcome, int]:
        """Call the tool until it succeeds, fails for good, or `retry.max_attempts` are spent: (outcome, attempt).

        `resume_events`: the first attempt is one recorded before a restart, gone on with (web.resume).
        """
        retry = self.step.retry
        attempt = first_attempt
        while True:
            if item_index is None and resume_events is None:
                self._start(arguments, attempt)
            outcome = await self._attempt(arguments, omitted, item_index, resume_events)
            resume_events = None
            if outcome.ok or not outcome.retryable or attempt >= retry.max_attempts:
                return outcome, attempt
            delay = retry.delay(attempt)
            attempt += 1
            self.context.record.emit(
                step_retrying(
                    step_name=self.step.name,
                    index=self.step.index,
                    attempt=attempt,
                    max_attempts=retry.max_attempts,
                    message=safe_text(outcome.message, MESSAGE_MAX_CHARS),
                    delay_seconds=delay,
                    retry_at=(datetime.now(UTC) + timedelta(seconds=delay)).isoformat(timespec="milliseconds"),
                    item_index=item_index,
                )
            )
            await asyncio.sleep(delay)  # a cancel ends the step here, at once

    async def _attempt(
        self,
        arguments: dict[str, Any],
        omitted: dict[str, Node],
        item_index: int | None,
        resume_events: list[dict[str, Any]] | None = None,
    ) -> ToolOutcome:
        """One call, within the step's cap and idle timeout, with what people answer during it; a whole step's
        (not an item's) progress reported as step_progress events."""
        step = self.step
        report = item_index is None
        try:
            tool = await self.context.locate(step.tool, step.server)
        except ServerUnavailable as exc:
            return ToolOutcome(False, str(exc), retryable=True)
        except ToolLookupError as exc:
            return ToolOutcome(False, str(exc))
        missing = missing_required(required_arguments(step, tool.input_schema), omitted) if omitted else None
        if missing:
            return ToolOutcome(False, missing)

        record = self.context.record
        live = True  # progress may trail the result, or come after a timeout: it must not follow the attempt
        idle: asyncio.Timeout | None = None
        loop = asyncio.get_running_loop()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            if not live:
                return
            if idle is not None and not idle.expired() and not asking:
                idle.reschedule(loop.time() + idle_seconds)
            if report:
                record.emit(
                    step_progress(
                        step_name=step.name,
                        index=step.index,
                        progress=_finite(progress),
                        total=_finite(total),
                        message=safe_text(message, MESSAGE_MAX_CHARS) if message is not None else None,
                    )
                )

        asking = 0  # requests to people under way in this call: the idle clock stops while there is one

        def on_wait(waiting: bool) -> None:
            nonlocal asking
            asking += 1 if waiting else -1
            if idle is None or idle.expired():
                return
            # Silence while a person answers is not a stalled tool; the clock starts afresh with the answer.
            idle.reschedule(None if asking > 0 else loop.time() + idle_seconds)

        timeout = step.timeout_seconds or self.context.call_timeout
        idle_seconds = step.idle_timeout_seconds
        context = self.context
        asker = StepAsker(
            context.inbox,
            record,
            step.name,
            step.index,
            item_index=item_index,
            wait_seconds=self._wait_seconds(),
            on_wait=on_wait,
        )

        async def call() -> Any:
            # With replicas: only while the run is still this one's (a replica frozen past its lease and woken
            # again must not call a tool that the replica now running the run calls too).
            await record.confirm()
            return await call_answering(
                context.pool,
                tool.server,
                step.tool,
                arguments,
                timeout=timeout,
                on_progress=on_progress,
                asker=asker,
                resume_events=resume_events,
            )

        try:
            if idle_seconds is None:
                result = await call()
            else:
                try:
                    async with asyncio.timeout(idle_seconds) as idle:
                        result = await call()
                except TimeoutError:
                    if not idle.expired():
                        raise
                    silence = f"'{step.tool}' sent no progress for {idle_seconds:g}s (idle_timeout_seconds)"
                    return ToolOutcome(False, silence, retryable=True)
        except (WaitExpired, PersonDeclined) as exc:  # another attempt would ask people again, in vain
            return ToolOutcome(False, str(exc))
        except ToolCallError as exc:  # the server is down or lost, the call timed out, or the server answered an error
            return ToolOutcome(False, str(exc), retryable=True)
        except Exception as exc:  # a server may answer anything; the run must still end cleanly
            return ToolOutcome(False, f"'{step.tool}' failed: {describe(exc)}")
        finally:
            live = False
        return self.context.reader.outcome(step.tool, result)


def evaluate_input(step: PlannedStep, scope: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Node]]:
    """The step's tool arguments, and the node of each argument left out because it was undefined."""
    arguments: dict[str, Any] = {}
    omitted: dict[str, Node] = {}
    try:
        for key, node in step.input.items.items():
            value = node.evaluate(scope)
            if value is OMIT:
                omitted[key] = node
            else:
                arguments[key] = value
    except EvaluationError as exc:
        raise StepInputError(str(exc)) from None
    return arguments, omitted


async def _each(name: str, indexes: Sequence[int], work: Any, parallel: int) -> None:
    """`await work(i)` for each index, at most `parallel` at once; workers pull the next index as they free up."""
    pending: Iterator[int] = iter(indexes)

    async def worker() -> None:
        for index in pending:
            await work(index)

    count = min(parallel, len(indexes))
    if count <= 1:
        await worker()
        return
    workers = [asyncio.create_task(worker(), name=f"step {name} items") for _ in range(count)]
    try:
        # Unlike gather, wait cancels nothing by itself: `settle` cancels each worker once.
        done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
    except asyncio.CancelledError:
        await settle(workers)
        raise
    failed = [task for task in done if not task.cancelled() and task.exception() is not None]
    if failed:  # a defect of ours: stop the other items, and let the step's owner end it
        await settle(workers)
        raise failed[0].exception()  # type: ignore[misc]


async def settle(tasks: Collection[asyncio.Task[Any]]) -> bool:
    """Cancel `tasks` and wait until each has ended; True if this task was itself cancelled meanwhile.

    The caller records the endings and then re-raises that cancellation: nothing is left running behind it.
    """
    for task in tasks:
        # Once only: a second cancel would cut short the notifications/cancelled the MCP client is sending.
        if not task.cancelling():
            task.cancel()
    pending = {task for task in tasks if not task.done()}
    interrupted = False
    while pending:
        try:
            _, pending = await asyncio.wait(pending)
        except asyncio.CancelledError:
            interrupted = True
    return interrupted


def _finite(number: float | None) -> float | None:
    return number if number is None or math.isfinite(number) else None
