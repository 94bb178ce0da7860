"""`stepline validate`: every problem of every scenario file, each step checked against its live tool.

One line per problem on stdout, `file: message` for an error and `file: warning: message` for a
warning; the counts on stderr. `--json` prints one document instead (ValidationReport). Exit status 1
when any error was found (a server that cannot be reached is one), else 0: warnings do not fail.

The MCP servers' own stderr (banners, logs) never reaches the report: it is kept aside, and shown on
stderr, each line prefixed, only when a server run as a process could not be reached.
"""

from __future__ import annotations

import json
import sys
import tempfile
from typing import IO

from pydantic import BaseModel, Field

from web.checks import CatalogChecks, Check, ScenarioChecks, catalog_checks
from web.mcp_config import StdioServer, load_config_roots, load_mcp_config
from web.mcp_pool import McpPool
from web.scenarios import Catalog, load_catalog
from web.settings import Settings

# The end of what the servers wrote to stderr, shown when one fails: where the reason usually is.
MAX_STDERR_LINES = 40
STDERR_PREFIX = "mcp stderr | "


class ValidationCounts(BaseModel):
    files: int
    valid: int = Field(description="Files without errors (with warnings or not).")
    invalid: int
    errors: int = Field(description="Errors of all files, and servers that could not be reached.")
    warnings: int


class ServerProblem(BaseModel):
    server: str
    message: str


class ValidationReport(BaseModel):
    valid: bool = Field(description="No errors anywhere: the exit status is 0.")
    counts: ValidationCounts
    servers: list[ServerProblem]
    files: list[ScenarioChecks]


async def validate_command(settings: Settings, *, as_json: bool = False) -> int:
    catalog = load_catalog(settings.scenarios)
    configs = load_mcp_config(settings.mcp_config)
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as errlog:
        pool = McpPool(
            configs,
            connect_timeout=settings.connect_timeout,
            heartbeat=settings.heartbeat,
            errlog=errlog,
            roots=settings.roots,
            config_roots=load_config_roots(settings.mcp_config),
        )
        async with pool:
            found = await catalog_checks(catalog, pool)
        report = validation_report(catalog, found)
        if as_json:
            print(json.dumps(report.model_dump(mode="json"), indent=2, ensure_ascii=False))
        else:
            print_report(found)
        counts = report.counts
        print(
            f"{counts.valid} valid scenario(s), {counts.errors} problem(s), {counts.warnings} warning(s) "
            f"in {counts.files} file(s)",
            file=sys.stderr,
        )
        processes_down = [name for name in found.servers if isinstance(pool.servers[name].config, StdioServer)]
        if processes_down:
            show_server_stderr(errlog, processes_down)
    return 0 if report.valid else 1


def validation_report(catalog: Catalog, found: CatalogChecks) -> ValidationReport:
    files = [
        ScenarioChecks.of(file, checks, scenario_id=file[: -len(".json")] if _loaded(catalog, file) else None)
        for file, checks in found.files.items()
    ]
    errors = sum(f.errors for f in files) + len(found.servers)
    valid = sum(f.valid for f in files)
    counts = ValidationCounts(
        files=len(files),
        valid=valid,
        invalid=len(files) - valid,
        errors=errors,
        warnings=sum(f.warnings for f in files),
    )
    servers = [ServerProblem(server=name, message=check.message) for name, check in found.servers.items()]
    return ValidationReport(valid=errors == 0, counts=counts, servers=servers, files=files)


def _loaded(catalog: Catalog, file: str) -> bool:
    return file.endswith(".json") and file[: -len(".json")] in catalog.scenarios


def print_report(found: CatalogChecks) -> None:
    for check in found.servers.values():
        print(check)
    for checks in found.files.values():
        for check in checks:
            print(_line(check))


def _line(check: Check) -> str:
    return str(check) if check.severity == "error" else f"{check.file}: warning: {check.message}"


def show_server_stderr(errlog: IO[str], failed: list[str]) -> None:
    errlog.seek(0)
    lines = errlog.read().splitlines()
    names = ", ".join(f"'{name}'" for name in failed)
    if not lines:
        return
    shown = lines[-MAX_STDERR_LINES:]
    cut = f" (its last {len(shown)} lines)" if len(shown) < len(lines) else ""
    print(f"MCP server(s) {names} could not be reached; what the servers wrote to stderr{cut}:", file=sys.stderr)
    for line in shown:
        print(f"{STDERR_PREFIX}{line}", file=sys.stderr)
