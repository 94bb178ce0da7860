"""`stepline serve | validate`: the command line (also `python -m web`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

import jsonschema
import referencing.exceptions

from web.expressions import LiteralNode
from web.hosts import HostPolicy
from web.mcp_config import McpConfigError, load_mcp_config
from web.mcp_pool import McpPool, ToolLookupError
from web.mcp_server import ServerUnavailable
from web.scenarios import Catalog, Problem, Scenario, load_catalog
from web.settings import Settings
from web.store import StoreError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stepline", description="Run multi-step MCP tool scenarios.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the web UI and JSON API")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000)")
    serve.add_argument("--root-path", help="path prefix a reverse proxy strips, e.g. /portal/stepline")
    serve.add_argument(
        "--frame-ancestors",
        help="CSP frame-ancestors: who may embed the pages in an iframe (default 'self'), "
        "e.g. \"'self' https://portal.example.com\"",
    )
    serve.add_argument("--data-dir", type=Path, help="where run history is stored (default ./.stepline/)")
    serve.add_argument("--retention-days", type=float, help="prune finished runs older than this (default 30)")
    serve.add_argument("--retention-runs", type=int, help="keep at most this many runs (default 10000)")
    serve.add_argument(
        "--no-history", dest="history", action="store_const", const=False, help="keep runs in memory only"
    )
    serve.add_argument(
        "--allowed-hosts",
        help="Host header values served, comma-separated: names or addresses, with a port or not, "
        "*.example.com for its subdomains, * for any (default: 127.0.0.1, localhost and [::1] when --host "
        "is a loopback address, else any); others get 400",
    )
    serve.add_argument(
        "--forwarded-allow-ips",
        help="reverse proxies (addresses or networks, comma-separated, * for any) whose X-Forwarded-Host, "
        "-Proto and -For headers are believed (default: none, the headers are ignored)",
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        help="open HTTP connections served at once, event streams included; more are refused with 503 "
        "(default 4000, lowered to what the open-files limit allows)",
    )
    serve.add_argument(
        "--header-timeout",
        type=float,
        help="seconds a connection may take to send a request's headers, or sit idle between requests (default 10)",
    )
    _add_sources(serve)

    validate = commands.add_parser("validate", help="check every scenario (and its tools, when servers answer)")
    _add_sources(validate)

    args = parser.parse_args(argv)
    flags = {key: value for key, value in vars(args).items() if key != "command" and value is not None}
    try:
        settings = Settings(**flags)
        if args.command == "serve":
            HostPolicy.from_settings(settings)  # a wrong host or proxy entry stops here, named
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=logging.INFO if args.command == "serve" else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command == "validate":
        # It prints each scenario problem itself; the loader's log would say them all twice.
        logging.getLogger("web.scenarios").setLevel(logging.ERROR)
    # The MCP HTTP transports log every request, heartbeat pings included: noise, not news.
    for noisy in ("httpx", "httpx2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if args.command == "serve":
            return serve_command(settings)
        return asyncio.run(validate_command(settings))
    except (McpConfigError, StoreError) as exc:
        print(f"stepline: {exc}", file=sys.stderr)
        return 2


def _add_sources(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenarios", type=Path, help="folder of scenario files (default: the shipped scenarios/)")
    parser.add_argument("--mcp-config", type=Path, help="mcpServers JSON file (default: the bundled demo server)")


def serve_command(settings: Settings) -> int:
    from web.server import serve

    return 0 if serve(settings) else 3


async def validate_command(settings: Settings) -> int:
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
