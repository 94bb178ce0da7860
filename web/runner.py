"""Executes one scenario run — its plan, a dependency graph — recording everything as events on its RunRecord.

A step starts as soon as each step it depends on has ended success or skipped, or failed with
`on_error: "continue"`; steps whose dependencies have ended run at once, each in its own task. A step
that fails otherwise fails the run: the steps in flight are cancelled (the MCP client tells their
servers), those not started end skipped. A step that fails is data — a failed step_finished event —
never an exception that escapes.

Every way a run ends — its last step, a failure, a cancel, a shutdown, a history that refuses its data —
ends each step once, then the run once, and leaves no task behind.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from web.events import (
    TERMINAL_STEP_STATUSES,
    EventType,
    RequestKind,
    RunStatus,
    StepStatus,
    run_finished,
    run_resumed,
    run_started,
    step_finished,
)
from web.expressions import OMIT, EvaluationError
from web.inbox import DEFAULT_WAIT_SECONDS, Ask, Inbox
from web.json_limits import MESSAGE_MAX_CHARS, bounded, safe_text
from web.mcp_pool import McpPool
from web.mcp_server import describe
from web.plan import Plan, PlannedStep
from web.registry import CANCELLED, SUSPENDED, Ending, RunRecord, RunRegistry, close
from web.resume import (
    AUTO,
    NEVER,
    RerunStep,
    Restart,
    ResumedStep,
    not_resumed,
    restart_of,
    resume_question,
    scenario_changed,
)
from web.run_state import StepState, utc_now
from web.scenarios import Catalog, Scenario
from web.step_runner import RunContext, StepRun, settle
from web.tool_result import ResultReader

log = logging.getLogger(__name__)


class Runner:
    def __init__(
        self,
        pool: McpPool,
        registry: RunRegistry,
        *,
        call_timeout: float,
        max_json_depth: int,
        max_output_bytes: int,
        max_for_each_items: int,
        inbox: Inbox | None = None,
        wait_timeout: float = DEFAULT_WAIT_SECONDS,
    ) -> None:
        self.pool = pool
        self.registry = registry
        self.call_timeout = call_timeout
        self.max_for_each_items = max_for_each_items
        # The requests to people this process's runs wait on (answered through web.runs).
        self.inbox = inbox or Inbox()
        self.wait_timeout = wait_timeout
        self.reader = ResultReader(max_depth=max_json_depth, max_output_bytes=max_output_bytes)

    async def launch(
        self, scenario: Scenario, run_input: dict[str, Any], *, started_by: dict[str, str] | None = None
    ) -> RunRecord:
        """Record a queued run and start it in the background, once it is on disk: what a 202 promises.

        Raises StoreError when the history cannot be written; the run is then recorded as failed
        (not started) rather than left queued for ever.
        """
        # A replica with no room leaves the run queued in the history, for whichever replica has room first.
        owned = self.registry.has_room()
        record = self.registry.create(scenario.scenario_id, run_input, started_by=started_by, owned=owned)
        try:
            await self.registry.sync()
        except BaseException as exc:
            if not record.is_finished:
                status = RunStatus.CANCELLED if isinstance(exc, asyncio.CancelledError) else RunStatus.FAILED
                record.emit(run_finished(status=status, finished_at=utc_now(), message=f"Not started: {exc}"))
            raise
        if owned and not record.is_finished:  # a cancel may have come in while the row was being written
            self.registry.start(record, lambda r: self.run(r, scenario))
        return record

    async def run(self, record: RunRecord, scenario: Scenario) -> None:
        await _Execution(self._context(record), scenario.plan).run(scenario.scenario_id)

    async def resume_unfinished(self, catalog: Catalog) -> list[str]:
        """Go on with each run the history left unfinished (web.registry.RunRegistry.recover kept them); the ids
        of those that go on. Those that cannot (their scenario gone or changed) end, saying why."""
        resumed = []
        for record in self.registry.take_suspended():
            if record.is_finished:
                continue
            scenario = catalog.get(record.state.scenario_id)
            if record.state.started_at is not None and record.state.plan is None:
                close(record, not_resumed("it was recorded before runs recorded their plan"))
                continue
            if record.state.started_at is None:  # queued, never started: nothing ran, it starts now as it would have
                if scenario is None:
                    close(record, not_resumed(f"its scenario '{record.state.scenario_id}' is no longer served"))
                    continue
                self.registry.start(record, lambda r, s=scenario: self.run(r, s))
            else:
                why = scenario_changed(record, scenario)
                if scenario is None or why is not None:
                    close(record, not_resumed(why or "its scenario is gone"))
                    continue
                self.registry.start(record, lambda r, s=scenario: self.restart(r, s))
            resumed.append(record.run_id)
        await self.registry.sync()
        if resumed:
            log.warning("%d run(s) left unfinished by a stopped server go on here", len(resumed))
        return resumed

    async def restart(self, record: RunRecord, scenario: Scenario) -> None:
        """Go on with a run its stopped process left unfinished, as web.resume says: at once when every step to
        run again may be, after a person's Resume when one may have partly run, or not at all (never)."""
        restart = await restart_of(record, scenario.plan, self.pool.locate)
        if restart.policy == NEVER:
            never = [name for name, step in restart.rerun.items() if step.policy == NEVER]
            close(record, not_resumed(f'step \'{never[0]}\' says "resume": "never"'))
            return
        by = None
        if restart.policy != AUTO:
            try:
                answer = await self._ask_to_resume(record, scenario, restart)
            except asyncio.CancelledError:
                ending = record.stop_reason or CANCELLED
                if ending is not SUSPENDED:
                    close(record, ending)
                raise
            if not answer.accepted:
                who = (answer.by or {}).get("name", "nobody")
                close(record, _not_resumed_by(answer.action, who))
                return
            by = answer.by
            # Requests answered meanwhile (an approval waiting across the restart) are taken as answered.
            restart = await restart_of(record, scenario.plan, self.pool.locate)
        await _Execution(self._context(record), scenario.plan).resume(restart.waiting, restart.rerun, by=by)

    async def _ask_to_resume(self, record: RunRecord, scenario: Scenario, restart: Restart) -> Any:
        """A person's answer to whether steps that may have partly run run again (a durable request: asked
        again, not anew, if the server stops before anyone answers)."""
        unsafe = [name for name, step in restart.rerun.items() if step.policy != AUTO] or list(restart.rerun)
        first = min(unsafe, key=lambda name: scenario.plan.step(name).index)
        step = scenario.plan.step(first)
        ask = Ask(RequestKind.RESUME, resume_question(restart), {"steps": list(restart.rerun)}, durable=True)
        return await self.inbox.ask(
            record, step.name, step.index, ask, wait_seconds=self.wait_timeout, again=restart.asked
        )

    def _context(self, record: RunRecord) -> RunContext:
        return RunContext(
            record,
            self.pool,
            self.reader,
            call_timeout=self.call_timeout,
            max_for_each_items=self.max_for_each_items,
            inbox=self.inbox,
            wait_timeout=self.wait_timeout,
        )


class _Execution:
    """One run of a plan: which steps wait, run and have ended, and how the run ends."""

    def __init__(self, context: RunContext, plan: Plan) -> None:
        self.context = context
        self.record = context.record
        self.plan = plan
        # Steps not started yet, in the file's order, and how many of its dependencies each still waits for.
        self.waiting: dict[str, PlannedStep] = {step.name: step for step in plan.steps}
        self.unmet = {step.name: len(step.depends_on) for step in plan.steps}
        self.dependents: dict[str, list[str]] = {step.name: [] for step in plan.steps}
        for step in plan.steps:
            for dependency in step.depends_on:
                self.dependents[dependency].append(step.name)
        self.ready = [step for step in plan.steps if not step.depends_on]
        self.running: dict[asyncio.Task[StepStatus], StepRun] = {}
        # A step run in this task rather than its own: the only one running, so nothing waits on it.
        self.inline: StepRun | None = None
        self.tolerated: list[PlannedStep] = []
        self.failure: StepRun | None = None
        # Steps in flight when the run's last process stopped, run again now (web.resume).
        self.reruns: dict[str, RerunStep] = {}

    async def run(self, scenario_id: str) -> None:
        self.record.emit(
            run_started(
                scenario_id=scenario_id, started_at=utc_now(), plan=[step.summary() for step in self.plan.steps]
            )
        )
        await self._drive()

    async def resume(
        self, waiting: dict[str, ResumedStep], rerun: dict[str, RerunStep], *, by: dict[str, Any] | None = None
    ) -> None:
        """Go on from what the run's events say: finished steps stay as they ended, `waiting` ones wait again,
        `rerun` ones run again from the start (a for_each: its items that had not ended)."""
        record = self.record
        attempt = 1 + sum(event["type"] == EventType.RUN_RESUMED for event in record.events)
        record.emit(
            run_resumed(
                attempt=attempt, resumed_at=utc_now(), waiting_steps=list(waiting), rerun_steps=list(rerun), by=by
            )
        )
        self.reruns = rerun
        ended = {name: state for name, state in record.state.steps.items() if state.status in TERMINAL_STEP_STATUSES}
        for name in [*ended, *waiting]:
            del self.waiting[name]
        for step in self.plan.steps:  # in file order, as they would have been told
            state = ended.get(step.name)
            if state is None:
                continue
            self.context.results[step.name] = result_of(state)
            if state.status == StepStatus.FAILED and step.on_error != "continue":
                self.failure = self.failure or _ended_before(self.context, step, state)
                continue
            if state.status == StepStatus.FAILED:
                self.tolerated.append(step)
            for name in self.dependents[step.name]:
                self.unmet[name] -= 1
        self.ready = [step for step in self.waiting.values() if self.unmet[step.name] == 0]
        for name, resumed in waiting.items():
            step_run = StepRun(self.context, self.plan.step(name), resumed)
            self.running[asyncio.create_task(step_run.run(), name=f"step {name}")] = step_run
        await self._drive()

    async def _drive(self) -> None:
        record = self.record
        try:
            if self.failure is None:
                await self._schedule()
        except asyncio.CancelledError:
            ending = record.stop_reason or CANCELLED
            if ending is SUSPENDED:  # left as it is, to go on after the restart
                await settle(self.running)
                raise
            # Who cancelled says how the run ends: a user (cancelled), a shutdown (failed, interrupted)…
            await self._stop(ending.step_status, ending.step_message, ending.not_run)
            record.emit(run_finished(status=ending.status, finished_at=utc_now(), message=ending.message))
            raise
        except Exception as exc:  # a defect of ours must still end the run, and only this run
            log.exception("Run %s stopped by an unexpected error", record.run_id)
            message = f"Stopped by an internal error: {describe(exc)}"
            interrupted = await self._stop(StepStatus.FAILED, message, f"Not run: {message}")
            record.emit(run_finished(status=RunStatus.FAILED, finished_at=utc_now(), message=message))
            if interrupted:
                raise asyncio.CancelledError from None
            return
        if self.failure is not None:
            failed = self.failure
            name = failed.step.name
            interrupted = await self._stop(
                StepStatus.CANCELLED, f"Cancelled: step '{name}' failed", f"Not run: step '{name}' failed"
            )
            message = f"Step '{name}' failed: {failed.message}"
            record.emit(run_finished(status=RunStatus.FAILED, finished_at=utc_now(), message=message))
            if interrupted:  # cancelled while its steps were being stopped: the run has ended all the same
                raise asyncio.CancelledError
            return
        self._finish()

    async def _schedule(self) -> None:
        """Start each step once it may run, until every step has ended or one has failed the run."""
        while True:
            if len(self.ready) == 1 and not self.running:
                # Alone: nothing else can start before it ends, so it needs no task of its own.
                self.inline = self._step_run(self.ready.pop())
                del self.waiting[self.inline.step.name]
                status = await self.inline.run()
                step_run, self.inline = self.inline, None
                self._ended(step_run, status)
            else:
                for step in self.ready:
                    del self.waiting[step.name]
                    step_run = self._step_run(step)
                    self.running[asyncio.create_task(step_run.run(), name=f"step {step.name}")] = step_run
                self.ready = []
                if not self.running:
                    return
                done, _ = await asyncio.wait(self.running, return_when=asyncio.FIRST_COMPLETED)
                # In file order, so that which failure fails the run does not depend on timing within one wake.
                for task in sorted(done, key=lambda t: self.running[t].step.index):
                    status = task.result()  # a defect's exception leaves the step in `running`, for `_stop` to end
                    self._ended(self.running.pop(task), status)
            if self.failure is not None:
                return
            if not self.ready and not self.running:
                return

    def _step_run(self, step: PlannedStep) -> StepRun:
        return StepRun(self.context, step, rerun=self.reruns.get(step.name))

    def _ended(self, step_run: StepRun, status: StepStatus) -> None:
        step = step_run.step
        if status == StepStatus.FAILED:
            if step.on_error != "continue":
                self.failure = self.failure or step_run
                return
            self.tolerated.append(step)
        for name in self.dependents[step.name]:
            self.unmet[name] -= 1
            if self.unmet[name] == 0:
                self.ready.append(self.waiting[name])
        self.ready.sort(key=lambda s: s.index)

    async def _stop(self, status: StepStatus, message: str, not_run: str) -> bool:
        """End every step: those in flight cancelled and ended `status`, then those not started skipped (`not_run`).

        True if this task was cancelled again meanwhile (the caller re-raises once the run has ended).
        """
        interrupted = await settle(self.running)
        stopped = sorted(self.running.values(), key=lambda r: r.step.index)
        if self.inline is not None:
            stopped.insert(0, self.inline)
        for step_run in stopped:
            step_run.stop(status, message, not_run)
        self.running.clear()
        self.inline = None
        now = utc_now()
        for step in self.waiting.values():
            self.record.emit(
                step_finished(
                    step_name=step.name,
                    index=step.index,
                    status=StepStatus.SKIPPED,
                    started_at=None,
                    finished_at=now,
                    message=not_run,
                )
            )
        self.waiting.clear()
        self.ready = []
        return interrupted

    def _finish(self) -> None:
        output, message = None, ""
        if self.tolerated:
            names = ", ".join(step.name for step in sorted(self.tolerated, key=lambda step: step.index))
            message = f"Finished with {len(self.tolerated)} tolerated failure(s): {names}"
        if self.plan.output is not None:
            try:
                value = self.plan.output.evaluate(self.context.scope)
            except EvaluationError as exc:
                message = safe_text(f"The run's output could not be evaluated: {exc}", MESSAGE_MAX_CHARS)
                self.record.emit(run_finished(status=RunStatus.FAILED, finished_at=utc_now(), message=message))
                return
            kept = bounded(None if value is OMIT else value, max_bytes=self.context.reader.max_output_bytes)
            output = kept.value
            if kept.truncated:
                message = "; ".join(filter(None, [message, self.context.reader.truncation("Output", kept)]))
        self.record.emit(run_finished(status=RunStatus.SUCCESS, finished_at=utc_now(), message=message, output=output))


def result_of(state: StepState) -> dict[str, Any]:
    """What the steps after an ended step read of it (`steps.<name>…`), from its recorded state."""
    content = state.content if isinstance(state.content, list) else None
    return {
        "output": state.output if state.status == StepStatus.SUCCESS else None,
        "status": state.status,
        "text": _text_of(content),
        "content": content,
        "structured": state.structured,
    }


def _not_resumed_by(action: str, who: str) -> Ending:
    """How a run ends whose Resume a person declined (or let expire)."""
    said = "expired: nobody answered" if action == "expired" else f"declined by {who}"
    message = f"Not resumed after a server restart ({said})"
    return Ending(RunStatus.FAILED, message, message, StepStatus.FAILED)


def _ended_before(context: RunContext, step: PlannedStep, state: StepState) -> StepRun:
    """A step that ended before the restart, as the run's failure names it."""
    step_run = StepRun(context, step)
    step_run.status, step_run.message, step_run.started_at = StepStatus(state.status), state.message, state.started_at
    return step_run


def _text_of(content: list[dict[str, Any]] | None) -> str | None:
    """The result's text blocks joined, as `steps.<name>.text` reads them while the run is live."""
    texts = [block["text"] for block in content or () if block.get("type") == "text" and "text" in block]
    return "\n".join(texts) if texts else None
