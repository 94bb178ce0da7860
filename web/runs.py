"""The run service: start, rerun and cancel runs, for the API and the pages alike.

The one place a run input is completed with its scenario's `input_schema` defaults and checked against
it, and a run is launched.
It speaks in domain errors (each a RunRefused); the HTTP layer decides how each is answered.
"""

from __future__ import annotations

from typing import Any

from web import registry
from web.access import Identity
from web.forms import with_defaults
from web.registry import RunRecord, RunRegistry
from web.runner import Runner
from web.scenarios import Catalog, Scenario


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


class RunService:
    """Runs of the catalog's scenarios, launched by the runner and kept by the registry."""

    def __init__(self, catalog: Catalog, runs: RunRegistry, runner: Runner) -> None:
        self.catalog = catalog
        self.runs = runs
        self.runner = runner

    def scenario(self, scenario_id: str) -> Scenario:
        scenario = self.catalog.get(scenario_id)
        if scenario is None:
            raise UnknownScenario(scenario_id)
        return scenario

    def run(self, run_id: str) -> RunRecord:
        record = self.runs.get(run_id)
        if record is None:
            raise UnknownRun(run_id)
        return record

    def check_input(self, scenario: Scenario, run_input: Any) -> Any:
        """`run_input` completed with the input_schema's defaults, as a run gets it; InputInvalid, with
        every problem, unless that matches the input_schema."""
        completed = with_defaults(scenario.input_schema, run_input)
        errors = scenario.input_errors(completed)
        if errors:
            raise InputInvalid(scenario, errors)
        return completed

    async def start(self, scenario_id: str, run_input: dict[str, Any], *, by: Identity | None = None) -> RunRecord:
        """A new run, recorded (StoreError when the history cannot be written) and started; `by` who asked."""
        scenario = self.scenario(scenario_id)
        return await self.runner.launch(scenario, self.check_input(scenario, run_input), started_by=_audit(by))

    async def rerun(self, run_id: str, *, by: Identity | None = None) -> RunRecord:
        """A new run of a run's scenario with its input, completed and checked against the scenario as it is now."""
        source = self.run(run_id)
        scenario = self.catalog.get(source.state.scenario_id)
        if scenario is None:
            raise ScenarioGone(source)
        return await self.runner.launch(scenario, self.check_input(scenario, source.state.input), started_by=_audit(by))

    async def cancel(self, run_id: str, *, by: Identity | None = None) -> RunRecord:
        """Cancel a queued or running run; it has usually recorded its ending when this returns."""
        record = self.run(run_id)
        try:
            await self.runs.cancel(run_id, cancelled_by=_audit(by))
        except registry.RunAlreadyFinished:
            raise RunAlreadyFinished(record) from None
        return record


def _audit(identity: Identity | None) -> dict[str, str] | None:
    return identity.audit() if identity is not None else None
