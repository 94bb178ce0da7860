"""The `mcpServers` JSON config that MCP clients share: stdio, streamable HTTP and legacy SSE.

Besides what other clients read, each server may say which protocol era to speak (`"protocol"`), and a
top-level `"roots"` list names folders offered to servers that ask for roots.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from web.resources import IMPORT_ROOT
from web.scenarios import format_validation_error

log = logging.getLogger(__name__)

VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# How a session opens: "auto" asks for the newest protocol (server/discover) and falls back to the
# initialize handshake; "legacy" goes straight to the handshake, for a server that misreads the probe.
Protocol = Literal["auto", "legacy"]
# The demo server reads these; the SDK hands a stdio child only a minimal environment.
DEMO_PASSTHROUGH_ENV = ("STEPLINE_DEMO_DELAY",)


class StdioServer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["stdio"] = "stdio"
    command: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    protocol: Protocol = "auto"

    @property
    def transport(self) -> str:
        return "stdio"


class HttpServer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["http", "streamable-http", "streamableHttp", "sse"] = "http"
    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = Field(default_factory=dict)
    protocol: Protocol = "auto"

    @property
    def transport(self) -> str:
        return "sse" if self.type == "sse" else "streamable-http"


ServerConfig = StdioServer | HttpServer


class McpConfigError(Exception):
    pass


def default_servers() -> dict[str, ServerConfig]:
    """The bundled offline demo server, run with this very interpreter."""
    env = {name: os.environ[name] for name in DEMO_PASSTHROUGH_ENV if name in os.environ}
    return {"demo": StdioServer(command=sys.executable, args=["-m", "web.demo"], env=env, cwd=str(IMPORT_ROOT))}


def _document(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise McpConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise McpConfigError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


def load_config_roots(path: Path | None) -> list[Path]:
    """The folders the config file's top-level `"roots"` list names, absolute (relative ones are read from
    the file's folder); none without a file or a list."""
    if path is None:
        return []
    document = _document(path)
    roots = document.get("roots", []) if isinstance(document, dict) else []
    if not isinstance(roots, list) or not all(isinstance(root, str) and root for root in roots):
        raise McpConfigError(f'{path}: roots: expected a list of folder paths, e.g. ["/srv/reports"]')
    return [(path.parent / Path(root).expanduser()).resolve() for root in roots]


def load_mcp_config(path: Path | None, environ: dict[str, str] | None = None) -> dict[str, ServerConfig]:
    if path is None:
        return default_servers()
    environ = dict(os.environ) if environ is None else environ
    document = _document(path)
    load_config_roots(path)  # a broken roots list is the file's problem too, found when it is read
    servers = document.get("mcpServers") if isinstance(document, dict) else None
    if not isinstance(servers, dict) or not servers:
        raise McpConfigError(f'{path}: expected an object {{"mcpServers": {{"name": {{…}}}}}}')
    configs: dict[str, ServerConfig] = {}
    for name, entry in servers.items():
        where = f"{path}: mcpServers.{name}"
        if not isinstance(entry, dict):
            raise McpConfigError(f"{where}: must be an object")
        if entry.get("disabled") is True:
            continue
        if "command" in entry:
            model: type[StdioServer] | type[HttpServer] = StdioServer
        elif "url" in entry:
            model = HttpServer
        else:
            raise McpConfigError(f"{where}: needs 'command' (stdio) or 'url' (HTTP)")
        # Files copied from other MCP clients carry their own keys (autoApprove, timeout, …).
        ignored = sorted(set(entry) - set(model.model_fields) - {"disabled"})
        if ignored:
            log.warning("%s: ignoring %s, which Stepline does not use", where, ", ".join(ignored))
        entry = _expand({key: value for key, value in entry.items() if key in model.model_fields}, environ, where)
        try:
            config: ServerConfig = model.model_validate(entry)
        except ValidationError as exc:
            raise McpConfigError(f"{where}: {format_validation_error(exc)}") from None
        if isinstance(config, StdioServer) and config.cwd is not None:
            config.cwd = str((path.parent / config.cwd).resolve())
        configs[name] = config
    if not configs:
        raise McpConfigError(f"{path}: every server in mcpServers is disabled")
    return configs


def _expand(value: Any, environ: dict[str, str], where: str) -> Any:
    if isinstance(value, str):

        def lookup(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in environ:
                raise McpConfigError(f"{where}: environment variable {name} is not set")
            return environ[name]

        return VARIABLE.sub(lookup, value)
    if isinstance(value, list):
        return [_expand(item, environ, where) for item in value]
    if isinstance(value, dict):
        return {key: _expand(item, environ, f"{where}.{key}") for key, item in value.items()}
    return value
