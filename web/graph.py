"""(being written) The dependency graph of a scenario or a run, laid out for an SVG drawing."""

from __future__ import annotations

from typing import Any


def scenario_graph(scenario: Any) -> Any:
    return None


def run_graph(view: Any) -> Any:
    return None
