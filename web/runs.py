"""The run service: start, rerun and cancel runs and answer their requests, for the API and the pages alike.

The one place a run input is completed with its scenario's `input_schema` defaults and checked against
it, and a run is launched; and the one place each scenario's permissions are judged for whoever asks
(`by`, which every caller must pass: an Identity, or None for the service's own callers, not judged).
A scenario or run its asker may not see is unknown to them (UnknownScenario, UnknownRun); one they may
see but not run is RunForbidden.
It speaks in domain errors (each a RunRefused); the HTTP layer decides how each is answered.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from web import inbox, registry
from web.access import Identity, Role, may_run, may_view
from web.events import AnswerAction, EventType, RequestKind
from web.forms import with_defaults
from web.inbox import Inbox
from web.registry import RunRecord, RunRegistry
from web.replicas import OwnerUnreachable, Replica
from web.run_list import MAX_PAGE_SIZE, RunPage, encode_cursor
from web.runner import Runner
from web.sampling_model import SamplingModel, SamplingUnavailable
from web.scenarios import Catalog, Scenario
from web.store import RunRow


class RunRefused(Exception):
    """What was asked of a run cannot be done; the message says why, the same for every caller."""


class UnknownScenario(RunRefused):
    def __init__(self, scenario_id: str) -> None:
        super().__init__(f"Unknown scenario_id: {scenario_id}")
        self.scenario_id = scenario_id


class UnknownRun(RunRefused):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"Unknown run_id: {run_id}")
        self.run_id = run_id


class ScenarioGone(RunRefused):
    """A run's scenario is no longer in the catalog, so it cannot be run again."""

    def __init__(self, record: RunRecord) -> None:
        super().__init__(f"Scenario '{record.state.scenario_id}' of run {record.run_id} no longer exists")
        self.record = record


class RunForbidden(RunRefused):
    """Its asker may see the scenario but not run it (nor start, rerun or cancel its runs)."""

    def __init__(self, scenario_id: str, action: str, by: Identity) -> None:
        why = (
            f"this needs the {Role.OPERATOR.value} role; yours is {by.role.value}"
            if not by.has(Role.OPERATOR)
            else "its run list names neither you nor your groups"
        )
        super().__init__(f"Refused: you may not {action} scenario '{scenario_id}' ({why})")
        self.scenario_id = scenario_id


class InputInvalid(RunRefused):
    """The input does not match the scenario's input_schema: `errors` are `{loc, msg, type}` entries."""

    def __init__(self, scenario: Scenario, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(error["msg"] for error in errors))
        self.scenario = scenario
        self.errors = errors


class RunAlreadyFinished(RunRefused):
    def __init__(self, record: RunRecord) -> None:
        super().__init__(f"Run {record.run_id} has already finished ({record.state.status})")
        self.record = record


class UnknownRequest(RunRefused):
    """The run has no such request (404)."""


class RequestClosed(RunRefused):
    """The request was answered already, or its step or run has ended (409); the message says which and who."""


class AnswerInvalid(RunRefused):
    """The answer's content does not fit what was asked (422): `errors` are `{loc, msg, type}` entries, each
    `loc` starting with "body", "content"."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(error["msg"] for error in errors))
        self.errors = errors


class HistoryFailing(RunRefused):
    """The run history cannot be written (503): nothing was taken that it could not keep; try again later."""

    def __init__(self, health: dict[str, Any]) -> None:
        super().__init__(f"Not answered: run history {health['path']} cannot be written: {health['error']}")


class NoSamplingModel(RunRefused):
    """No model endpoint is configured to draft a sampling reply (409): a person writes it."""

    def __init__(self) -> None:
        super().__init__(
            "No model endpoint is configured: start Stepline with --sampling-url (STEPLINE_SAMPLING_URL) to have a "
            "model draft the reply, or write it yourself"
        )


class ReplicaUnreachable(RunRefused):
    """The replica running the run did not answer a command for it (503): try again; if it is gone, its lease
    runs out and another replica takes the run."""


class ModelFailed(RunRefused):
    """The model endpoint gave no reply (502); the message says why, without its key."""


@dataclass(frozen=True)
class Answered:
    """A request's answer, once it is on disk: what was answered, by whom and when, and the run's status then."""

    run_id: str
    request_id: str
    action: AnswerAction
    content: Any
    answered_by: dict[str, Any] | None
    answered_at: str
    status: str


@dataclass(frozen=True)
class Resumed:
    """A run's Resume after a restart, once on disk: the steps it runs again, who resumed it and when, and the
    run's status then."""

    run_id: str
    request_id: str
    steps: list[str]
    resumed_by: dict[str, Any] | None
    resumed_at: str
    status: str


class RunService:
    """Runs of the catalog's scenarios, launched by the runner and kept by the registry."""

    def __init__(self, catalog: Catalog, runs: RunRegistry, runner: Runner, replica: Replica | None = None) -> None:
        """`replica`: this process is one of several sharing the history; a command for a run another one runs
        is carried out by that one (web.replicas)."""
        self.catalog = catalog
        self.runs = runs
        self.runner = runner
        self.replica = replica
        if replica is not None:
            replica.perform = self.perform

    def scenario(self, scenario_id: str, by: Identity | None) -> Scenario:
        """The scenario, if `by` may see it (UnknownScenario otherwise, as if it did not exist)."""
        scenario = self.catalog.get(scenario_id)
        if scenario is None or (by is not None and not may_view(by, scenario)):
            raise UnknownScenario(scenario_id)
        return scenario

    def scenarios(self, by: Identity | None) -> list[Scenario]:
        """The catalog's scenarios `by` may see, in id order."""
        return [s for s in self.catalog.scenarios.values() if by is None or may_view(by, s)]

    async def run(self, run_id: str, by: Identity | None) -> RunRecord:
        """The run, if `by` may see its scenario (UnknownRun otherwise, as if it did not exist); StoreError."""
        record = await self.runs.get(run_id)
        if record is None or not self._may_view_runs_of(by, record.state.scenario_id):
            raise UnknownRun(run_id)
        if self.replica is not None and record.is_mirror and not record.is_finished:
            # Another replica runs it: its copy here is brought up to what the history holds now (a NOTIFY may
            # still be on its way), so that a snapshot never shows less than a stream has already sent.
            await self.replica.refresh(run_id)
        return record

    async def runs_page(self, by: Identity | None, *, limit: int, cursor: str | None = None, **filters: Any) -> RunPage:
        """The run list's page (filtered as RunRegistry.page is) of the runs `by` may see; BadCursor.

        The history is read a page at a time until `limit` visible runs are found or it ends, so a page is
        full whatever share of the runs is hidden; the cursor is that of the last run shown.
        """
        scenario_id = filters.get("scenario_id")
        if scenario_id is not None and not self._may_view_runs_of(by, scenario_id):
            return RunPage([], None)
        shown: list[RunRow] = []
        batch = limit
        while True:
            page = await self.runs.page(limit=batch, cursor=cursor, **filters)
            shown.extend(row for row in page.runs if self._may_view_runs_of(by, row.scenario_id))
            if len(shown) >= limit or page.next_cursor is None:
                break
            # Hidden runs are skipped by the largest page the history serves.
            cursor, batch = page.next_cursor, MAX_PAGE_SIZE
        more = len(shown) > limit or page.next_cursor is not None
        shown = shown[:limit]
        return RunPage(shown, encode_cursor(shown[-1]) if more and shown else None)

    def _may_view_runs_of(self, by: Identity | None, scenario_id: str) -> bool:
        # The runs of a scenario gone from the catalog are an admin's to see (web.access.may_view).
        return by is None or may_view(by, self.catalog.get(scenario_id))

    def require_may_run(self, by: Identity | None, scenario_id: str, action: str) -> None:
        """RunForbidden (403) unless `by` may run the scenario (`action`: "run", "cancel runs of")."""
        if by is not None and not may_run(by, self.catalog.get(scenario_id)):
            raise RunForbidden(scenario_id, action, by)

    def check_input(self, scenario: Scenario, run_input: Any) -> Any:
        """`run_input` completed with the input_schema's defaults, as a run gets it; InputInvalid, with
        every problem, unless that matches the input_schema."""
        completed = with_defaults(scenario.input_schema, run_input)
        errors = scenario.input_errors(completed)
        if errors:
            raise InputInvalid(scenario, errors)
        return completed

    async def start(
        self, scenario_id: str, run_input: dict[str, Any], *, by: Identity | None, client: str | None = None
    ) -> RunRecord:
        """A new run, recorded (StoreError when the history cannot be written) and started; `by` who asked,
        `client` the MCP client they called through."""
        scenario = self.scenario(scenario_id, by)
        self.require_may_run(by, scenario_id, "run")
        started_by = _audit(by)
        if started_by is not None and client is not None:
            started_by["client"] = client
        return await self.runner.launch(scenario, self.check_input(scenario, run_input), started_by=started_by)

    async def rerun(self, run_id: str, *, by: Identity | None) -> RunRecord:
        """A new run of a run's scenario with its input, completed and checked against the scenario as it is now."""
        source = await self.run(run_id, by)
        scenario = self.catalog.get(source.state.scenario_id)
        if scenario is None:
            raise ScenarioGone(source)
        self.require_may_run(by, scenario.scenario_id, "run")
        return await self.runner.launch(scenario, self.check_input(scenario, source.state.input), started_by=_audit(by))

    async def cancel(self, run_id: str, *, by: Identity | None) -> RunRecord:
        """Cancel a queued or running run; it has usually recorded its ending when this returns."""
        record = await self.run(run_id, by)
        self.require_may_run(by, record.state.scenario_id, "cancel runs of")
        if await self._by_owner(record, {"command": "cancel", "by": _audit(by)}) is not None:
            return record
        try:
            await self.runs.cancel(run_id, cancelled_by=_audit(by))
        except registry.RunAlreadyFinished:
            raise RunAlreadyFinished(record) from None
        return record

    async def _by_owner(self, record: RunRecord, command: dict[str, Any]) -> dict[str, Any] | None:
        """With replicas, a command for a run another replica runs, carried out there: its result, or the
        refusal it met raised here. None when the run is this replica's (now, if nobody ran it any more)."""
        if self.replica is None or not record.is_mirror or record.is_finished:
            return None
        try:
            reply = await self.replica.command(record, command)
        except OwnerUnreachable as exc:
            raise ReplicaUnreachable(f"Not done: {exc}; try again") from None
        if reply is None:
            return None
        if "error" in reply:
            raise _refusal(reply, record)
        return reply["ok"]

    async def perform(self, record: RunRecord, command: dict[str, Any]) -> dict[str, Any]:
        """Carry out a command another replica passed on for a run this one runs: `{"ok": result}`, or
        `{"error": name, ...}` for the refusal it met."""
        by = command.get("by")
        try:
            if command["command"] == "cancel":
                await self.runs.cancel(record.run_id, cancelled_by=by)
                return {"ok": {}}
            answered = await self._answer(
                record, command["request_id"], AnswerAction(command["action"]), command.get("content"), by
            )
            return {"ok": {**asdict(answered), "action": answered.action.value}}
        except registry.RunAlreadyFinished:
            return {"error": "RunAlreadyFinished"}
        except AnswerInvalid as exc:
            return {"error": "AnswerInvalid", "errors": exc.errors}
        except RunRefused as exc:
            return {"error": type(exc).__name__, "message": str(exc)}

    async def answer(
        self, run_id: str, request_id: str, action: AnswerAction, content: Any, *, by: Identity | None
    ) -> Answered:
        """Answer a request of a run, for whoever may run its scenario, and return once the answer is on disk.

        Raises UnknownRun, RunForbidden, UnknownRequest, RequestClosed, AnswerInvalid; HistoryFailing when the
        history is known to be failing (nothing is taken); StoreError when it fails once the answer is taken
        (the answer stands and goes on to the step; its writes are held in memory and retried).
        """
        record = await self.run(run_id, by)
        self.require_may_run(by, record.state.scenario_id, "answer requests in runs of")
        self._require_history()
        command = {"command": "answer", "request_id": request_id, "action": action.value, "content": content}
        done = await self._by_owner(record, {**command, "by": _audit(by)})
        if done is not None:
            return Answered(**{**done, "action": AnswerAction(done["action"])})
        return await self._answer(record, request_id, action, content, _audit(by))

    async def _answer(
        self, record: RunRecord, request_id: str, action: AnswerAction, content: Any, by: dict[str, Any] | None
    ) -> Answered:
        try:
            answer = self.runner.inbox.answer(record, request_id, action, content, by=by)
        except inbox.RequestNotFound as exc:
            raise UnknownRequest(str(exc)) from None
        except inbox.RequestClosed as exc:
            raise RequestClosed(str(exc)) from None
        except inbox.AnswerInvalid as exc:
            raise AnswerInvalid(exc.problems) from None
        answered = _answered_event(record, request_id)
        await self.runs.sync()
        return Answered(
            run_id=record.run_id,
            request_id=request_id,
            action=answer.action,
            content=answer.content,
            answered_by=answer.by,
            answered_at=answered["answered_at"],
            status=record.state.status,
        )

    async def resume_run(self, run_id: str, *, by: Identity | None) -> Resumed:
        """Accept the run's open Resume request (web.resume): the steps that may have partly run before a restart
        run again. RequestClosed when the run waits for no Resume; otherwise raises as `answer` does."""
        record = await self.run(run_id, by)
        self.require_may_run(by, record.state.scenario_id, "resume runs of")
        request = next((r for r in record.state.pending.values() if r["kind"] == RequestKind.RESUME), None)
        if request is None:
            raise RequestClosed(f"Run {run_id} is not waiting for a Resume (it is {record.state.status})")
        answered = await self.answer(run_id, request["request_id"], AnswerAction.ACCEPT, None, by=by)
        return Resumed(
            run_id=answered.run_id,
            request_id=answered.request_id,
            steps=request.get("steps") or [],
            resumed_by=answered.answered_by,
            resumed_at=answered.answered_at,
            status=answered.status,
        )

    async def draft(
        self, run_id: str, request_id: str, *, model: SamplingModel | None, by: Identity | None
    ) -> dict[str, Any]:
        """Have `model` draft the reply to a sampling request, record it for the reviewer and return it once on
        disk: `{text, model, stop_reason}`. Not an answer: the person still accepts, edits or declines it.

        Raises UnknownRun, RunForbidden, UnknownRequest, RequestClosed (also: not a sampling request),
        NoSamplingModel, ModelFailed; HistoryFailing, StoreError as `answer` does.
        """
        record = await self.run(run_id, by)
        self.require_may_run(by, record.state.scenario_id, "answer requests in runs of")
        request = _open_request(record, request_id)
        if record.is_mirror and not record.is_finished:
            raise ReplicaUnreachable("Not drafted: another replica runs this run, and only it may draft its replies")
        if request["kind"] != RequestKind.SAMPLING:
            raise RequestClosed(f"Request {request_id} asks for {request['kind']}, not a model's reply: only a "
                                "sampling request can be drafted")
        if model is None:
            raise NoSamplingModel()
        self._require_history()
        try:
            draft = await model.complete(request)
        except SamplingUnavailable as exc:
            raise ModelFailed(str(exc)) from None
        # The request may have been answered, or its step ended, while the model wrote.
        try:
            self.runner.inbox.draft(record, request_id, draft, by=_audit(by))
        except inbox.RequestClosed as exc:
            raise RequestClosed(str(exc)) from None
        await self.runs.sync()
        return draft

    def _require_history(self) -> None:
        """HistoryFailing when the history is known to be failing: nothing is taken that it could not keep."""
        health = self.runs.history_health()
        if health is not None and health["state"] == "failing":
            raise HistoryFailing(health)


def _open_request(record: RunRecord, request_id: str) -> dict[str, Any]:
    """The request while it is open; UnknownRequest or RequestClosed (saying why) otherwise."""
    try:
        # The inbox's own judgement of an open request, asked before the model is (it may take minutes).
        return Inbox.open_request(record, request_id)
    except inbox.RequestNotFound as exc:
        raise UnknownRequest(str(exc)) from None
    except inbox.RequestClosed as exc:
        raise RequestClosed(str(exc)) from None


def _answered_event(record: RunRecord, request_id: str) -> dict[str, Any]:
    return next(
        event
        for event in reversed(record.events)
        if event["type"] == EventType.INPUT_ANSWERED and event["request_id"] == request_id
    )


# Refusals another replica may reply with that say all in their message.
PLAIN_REFUSALS: dict[str, type[RunRefused]] = {
    cls.__name__: cls for cls in (UnknownRequest, RequestClosed, ReplicaUnreachable)
}


def _refusal(reply: dict[str, Any], record: RunRecord) -> RunRefused:
    """The refusal another replica met carrying out a command, as raised there."""
    name = reply["error"]
    if name == "RunAlreadyFinished":
        return RunAlreadyFinished(record)
    if name == "AnswerInvalid":
        return AnswerInvalid(reply["errors"])
    # Any other (the history failing there, say) is, from here, the owner failing to do it.
    return PLAIN_REFUSALS.get(name, ReplicaUnreachable)(reply.get("message") or name)


def _audit(identity: Identity | None) -> dict[str, str] | None:
    return identity.audit() if identity is not None else None
