from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Stepline's configuration: command-line flags first, then these environment variables.

    - ``STEPLINE_HOST`` / ``STEPLINE_PORT``: where ``stepline serve`` listens (127.0.0.1:8000).
    - ``STEPLINE_SCENARIOS``: the folder of scenario files (the shipped ``scenarios/``).
    - ``STEPLINE_MCP_CONFIG``: an ``mcpServers`` JSON file (none: the bundled demo server alone).
    - ``STEPLINE_ROOT_PATH``: the path prefix a reverse proxy strips, e.g. ``/portal/stepline``.
    - ``STEPLINE_CALL_TIMEOUT``: seconds one tool call may take before its step fails (60).
    - ``STEPLINE_CONNECT_TIMEOUT``: seconds a step waits for its server to connect (10).
    - ``STEPLINE_HEARTBEAT``: seconds between pings that notice an idle server has died (5).
    - ``STEPLINE_SSE_PING``: seconds between keep-alive comments on event streams (15).
    - ``RUN_REGISTRY_MAX_SIZE`` (or ``STEPLINE_RUN_REGISTRY_MAX_SIZE``): runs kept in memory (200).
    """

    model_config = SettingsConfigDict(env_prefix="STEPLINE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    scenarios: Path = PROJECT_ROOT / "scenarios"
    mcp_config: Path | None = None
    root_path: str = ""
    call_timeout: float = Field(60.0, gt=0)
    connect_timeout: float = Field(10.0, gt=0)
    heartbeat: float = Field(5.0, gt=0)
    sse_ping: float = Field(15.0, gt=0)
    run_registry_max_size: int = Field(
        200,
        ge=1,
        validation_alias=AliasChoices("RUN_REGISTRY_MAX_SIZE", "STEPLINE_RUN_REGISTRY_MAX_SIZE"),
    )
