"""`stepline validate`: every scenario problem, and each step checked against its live tool."""

from __future__ import annotations

import sys
from typing import Any

import jsonschema
import referencing.exceptions

from web.expressions import LiteralNode
from web.mcp_config import load_mcp_config
from web.mcp_pool import McpPool, ToolLookupError
from web.mcp_server import ServerUnavailable
from web.scenarios import Catalog, Problem, Scenario, load_catalog
from web.settings import Settings


async def validate_command(settings: Settings, *, as_json: bool = False) -> int:
    catalog = load_catalog(settings.scenarios)
    problems = list(catalog.problems)
    configs = load_mcp_config(settings.mcp_config)
    async with McpPool(configs, connect_timeout=settings.connect_timeout, heartbeat=settings.heartbeat) as pool:
        problems += await tool_problems(catalog, pool)
    for problem in problems:
        print(problem)
    # A scenario that loads but calls a tool wrongly is not valid either.
    with_problems = {problem.file for problem in problems}
    valid = sum(1 for scenario_id in catalog.scenarios if f"{scenario_id}.json" not in with_problems)
    print(f"{valid} valid scenario(s), {len(problems)} problem(s)", file=sys.stderr)
    return 1 if problems else 0


async def tool_problems(catalog: Catalog, pool: McpPool) -> list[Problem]:
    """Steps whose tool does not exist, or whose literal inputs break the tool's input schema.

    A server that cannot be reached is reported once and its steps are not judged.
    """
    await pool.settle()
    problems = [
        Problem(f"mcpServers.{name}", f"server unreachable, its tools not checked: {health['error']}")
        for name, health in pool.health().items()
        if health["state"] != "ready"
    ]
    for scenario in catalog.scenarios.values():
        problems += await _scenario_tool_problems(scenario, pool)
    return problems


async def _scenario_tool_problems(scenario: Scenario, pool: McpPool) -> list[Problem]:
    file = f"{scenario.scenario_id}.json"
    problems = []
    for step in scenario.plan.steps:
        try:
            tool = await pool.locate(step.tool, step.server)
        except ServerUnavailable:
            continue
        except ToolLookupError as exc:
            problems.append(Problem(file, f"{step.label}: {exc}"))
            continue
        arguments = step.input.items
        # An argument the step never gives fails every run; one an expression may leave out is judged at run time.
        required = tool.input_schema.get("required")
        for key in required if isinstance(required, list) else []:
            if isinstance(key, str) and key not in arguments:
                problems.append(Problem(file, f"{step.label}.input: the tool requires '{key}', which is not given"))
        literals = {key: node.value for key, node in arguments.items() if isinstance(node, LiteralNode)}
        for key, message in literal_input_errors(tool.input_schema, literals):
            problems.append(Problem(file, f"{step.label}.input.{key}: {message}"))
    return problems


def literal_input_errors(schema: dict[str, Any], literals: dict[str, Any]) -> list[tuple[str, str]]:
    """Check each literal on its own: values from paths and expressions are only known at run time."""
    properties = schema.get("properties", {})
    errors = []
    for key, value in literals.items():
        if key not in properties:
            if schema.get("additionalProperties") is False:
                errors.append((key, f"the tool has no input '{key}'"))
            continue
        # Evolved from the whole schema, so a $ref resolves against it ($defs or draft-07 definitions).
        root = jsonschema.validators.validator_for(schema)(schema)
        try:
            errors.extend((key, error.message) for error in root.evolve(schema=properties[key]).iter_errors(value))
        except referencing.exceptions.Unresolvable as exc:  # the tool's own schema is broken
            errors.append((key, f"cannot be checked: the tool's input schema has a broken $ref ({exc})"))
    return errors
