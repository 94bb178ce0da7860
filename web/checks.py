"""(being written) Each scenario's steps checked against the live tools."""

from __future__ import annotations

from typing import Any


async def scenario_checks(scenario: Any, pool: Any) -> list[Any]:
    return []
