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
    - ``STEPLINE_FRAME_ANCESTORS``: the CSP ``frame-ancestors`` sources allowed to embed the pages in
      an iframe, space-separated (``'self'``), e.g. ``'self' https://portal.example.com``.
    - ``STEPLINE_SECRET``: signs the pages' form tokens; unset, a random one per process (a form left
      open across a restart is then shown again to resubmit).
    - ``RUN_REGISTRY_MAX_SIZE`` (or ``STEPLINE_RUN_REGISTRY_MAX_SIZE``): runs kept in memory (200).
    - ``STEPLINE_DATA_DIR``: where run history is stored, an SQLite file (``./.stepline/``).
    - ``STEPLINE_RETENTION_DAYS``: finished runs older than this are pruned (30).
    - ``STEPLINE_RETENTION_RUNS``: at most this many runs are kept; the oldest finished go first (10000).
    - ``STEPLINE_HISTORY``: ``false`` keeps runs in memory only, nothing written (true).
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
    # One CSP header value: a ';', ',' or line break would smuggle in other directives or headers.
    frame_ancestors: str = Field("'self'", pattern=r"^[^;,\r\n]+$")
    secret: str | None = None
    run_registry_max_size: int = Field(
        200,
        ge=1,
        validation_alias=AliasChoices("RUN_REGISTRY_MAX_SIZE", "STEPLINE_RUN_REGISTRY_MAX_SIZE"),
    )
    data_dir: Path = Path(".stepline")
    retention_days: float = Field(30.0, gt=0)
    retention_runs: int = Field(10_000, ge=1)
    history: bool = True
