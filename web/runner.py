"""Executes one scenario run step by step, recording everything as events on its RunRecord.

A step that fails is data — a failed step_finished event — never an exception that escapes.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from mcp_types import CallToolResult

from web.json_limits import MESSAGE_MAX_CHARS, Bounded, JsonProblem, bounded, check, parse, safe_text, where
from web.mcp_pool import McpPool, ToolLookupError
from web.mcp_server import ToolCallError, describe
from web.registry import CANCELLED, RunRecord, RunRegistry
from web.run_state import utc_now
from web.scenarios import MISSING, FromPath, Scenario, Step, resolve_path


class StepFailed(Exception):
    pass


def map_inputs(step: Step, context: dict[str, Any]) -> dict[str, Any]:
    """The step's tool arguments. A path that finds nothing leaves its field out, unless required."""
    arguments: dict[str, Any] = {}
    for key, binding in step.bindings.items():
        if isinstance(binding, FromPath):
            value = resolve_path(binding, context)
            if value is MISSING:
                if key in step.required_input_fields:
                    raise StepFailed(f"required input '{key}' is missing: '{binding.path}' found nothing")
                continue
            arguments[key] = value
        else:
            arguments[key] = binding.value
    return arguments


def extract_output(result: CallToolResult, *, max_depth: int) -> Any:
    """Structured content if present, else the text content parsed as JSON, else the text.

    Raises JsonProblem for what the history cannot keep: a non-finite number, a lone surrogate, nesting
    deeper than `max_depth`, in the structured content or in text that is JSON.
    """
    if result.structured_content is not None:
        check(result.structured_content, max_depth=max_depth)
        return result.structured_content
    text = result_text(result)
    if text is None:
        return None
    check(text, max_depth=max_depth)
    try:
        return parse(text, max_depth=max_depth)
    except JsonProblem as problem:
        if problem.kind == "json_invalid":
            return text
        raise


def result_text(result: CallToolResult) -> str | None:
    texts = [block.text for block in result.content if block.type == "text"]
    return "\n".join(texts) if texts else None


def finite(number: float | None) -> float | None:
    return number if number is None or math.isfinite(number) else None


class Runner:
    def __init__(
        self,
        pool: McpPool,
        registry: RunRegistry,
        *,
        call_timeout: float,
        max_json_depth: int,
        max_output_bytes: int,
    ) -> None:
        self.pool = pool
        self.registry = registry
        self.call_timeout = call_timeout
        self.max_json_depth = max_json_depth
        self.max_output_bytes = max_output_bytes

    async def launch(self, scenario: Scenario, run_input: dict[str, Any]) -> RunRecord:
        """Record a queued run and start it in the background, once it is on disk: what a 202 promises.

        Raises StoreError when the history cannot be written; the run is then recorded as failed
        (not started) rather than left queued for ever.
        """
        record = self.registry.create(scenario.scenario_id, run_input)
        try:
            await self.registry.sync()
        except BaseException as exc:
            if not record.is_finished:
                status = "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"
                record.emit("run_finished", status=status, finished_at=utc_now(), message=f"Not started: {exc}")
            raise
        if not record.is_finished:  # a cancel may have come in while the row was being written
            self.registry.start(record, lambda r: self.run(r, scenario))
        return record

    async def run(self, record: RunRecord, scenario: Scenario) -> None:
        record.emit("run_started", scenario_id=scenario.scenario_id, started_at=utc_now())
        context: dict[str, Any] = {"input": record.state.input, "steps": {}}
        current: tuple[int, Step, str] | None = None
        try:
            for index, step in enumerate(scenario.steps):
                started_at = utc_now()
                current = (index, step, started_at)
                status, message, output, content = await self._run_step(record, index, step, started_at, context)
                # A tool's or server's words are kept whatever they hold: valid Unicode, a bounded length.
                message = safe_text(message, MESSAGE_MAX_CHARS)
                current = None
                record.emit(
                    "step_finished",
                    step_name=step.name,
                    index=index,
                    status=status,
                    started_at=started_at,
                    finished_at=utc_now(),
                    message=message,
                    output=output,
                    content=content,
                )
                if status != "success":
                    record.emit(
                        "run_finished",
                        status="failed",
                        finished_at=utc_now(),
                        message=f"Step '{step.name}' failed: {message}",
                    )
                    return
                context["steps"][step.name] = {"output": output}
        except asyncio.CancelledError:
            # Who cancelled says how the run ends: a user (cancelled) or a shutdown (failed, interrupted).
            ending = record.stop_reason or CANCELLED
            if current is not None:
                index, step, started_at = current
                record.emit(
                    "step_finished",
                    step_name=step.name,
                    index=index,
                    status="cancelled",
                    started_at=started_at,
                    finished_at=utc_now(),
                    message=ending.step_message,
                    output=None,
                )
            record.emit("run_finished", status=ending.status, finished_at=utc_now(), message=ending.message)
            raise
        record.emit("run_finished", status="success", finished_at=utc_now(), message="")

    async def _run_step(
        self, record: RunRecord, index: int, step: Step, started_at: str, context: dict[str, Any]
    ) -> tuple[str, str, Any, Any]:
        """(status, message, output, raw content) of one step; emits step_started and progress."""
        try:
            arguments = map_inputs(step, context)
        except StepFailed as exc:
            record.emit("step_started", step_name=step.name, index=index, started_at=started_at, input=None)
            return "failed", str(exc), None, None
        record.emit("step_started", step_name=step.name, index=index, started_at=started_at, input=arguments)

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            # A notification may trail the result; it must not follow the step's end.
            if record.state.steps[step.name].status == "running" and not record.is_finished:
                record.emit(
                    "step_progress",
                    step_name=step.name,
                    index=index,
                    progress=finite(progress),
                    total=finite(total),
                    message=safe_text(message, MESSAGE_MAX_CHARS) if message is not None else None,
                )

        try:
            tool = await self.pool.locate(step.tool, step.server)
            result = await self.pool.call(
                tool.server, step.tool, arguments, timeout=self.call_timeout, on_progress=on_progress
            )
        except (ToolCallError, ToolLookupError) as exc:
            return "failed", str(exc), None, None
        except Exception as exc:  # a server may answer anything; the run must still end cleanly
            return "failed", f"'{step.tool}' failed: {describe(exc)}", None, None
        return self._outcome(step.tool, result)

    def _outcome(self, tool: str, result: CallToolResult) -> tuple[str, str, Any, Any]:
        """(status, message, output, content) of a result, as the history may keep them.

        Only strict JSON is kept, each of output and content at most `max_output_bytes` as JSON; a
        larger one is kept truncated (see `bounded`) and the step says so.
        """
        try:
            content = [block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in result.content]
            check(content, max_depth=self.max_json_depth)
        except JsonProblem as problem:
            return "failed", self._refusal(tool, "content", problem), None, None
        except Exception as exc:  # a block the SDK parsed but cannot write back out
            return "failed", f"'{tool}' returned content that cannot be kept: {describe(exc)}", None, None
        kept_content = bounded(content, max_bytes=self.max_output_bytes)
        if result.is_error:
            return "failed", result_text(result) or f"'{tool}' reported an error", None, kept_content.value
        try:
            output = extract_output(result, max_depth=self.max_json_depth)
        except JsonProblem as problem:
            return "failed", self._refusal(tool, "output", problem), None, kept_content.value
        kept_output = bounded(output, max_bytes=self.max_output_bytes)
        notes = [
            self._truncation(what, kept)
            for what, kept in (("Output", kept_output), ("Raw content", kept_content))
            if kept.truncated
        ]
        return "success", "; ".join(notes), kept_output.value, kept_content.value

    def _refusal(self, tool: str, what: str, problem: JsonProblem) -> str:
        if problem.kind == "json_too_deep":
            return f"'{tool}' returned {what} nested deeper than {self.max_json_depth} levels"
        at = f", at {where(problem.loc)}" if problem.loc else ""
        return f"'{tool}' returned {what} that cannot be stored ({problem.message}{at})"

    def _truncation(self, what: str, kept: Bounded) -> str:
        return (
            f"{what} truncated: {kept.size:,} bytes as JSON, more than the {self.max_output_bytes:,} kept "
            '(it is stored as {"truncated": true, "bytes": ..., "preview": ...})'
        )
