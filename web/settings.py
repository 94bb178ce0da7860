from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from web.access import Role
from web.resources import SCENARIOS


class Settings(BaseSettings):
    """Stepline's configuration: command-line flags first, then these environment variables.

    - ``STEPLINE_HOST`` / ``STEPLINE_PORT``: where ``stepline serve`` listens (127.0.0.1:8000).
    - ``STEPLINE_SCENARIOS``: the folder of scenario files (the shipped ``scenarios/``).
    - ``STEPLINE_MCP_CONFIG``: an ``mcpServers`` JSON file (none: the bundled demo server alone).
    - ``STEPLINE_ROOT_PATH``: the path prefix a reverse proxy strips, e.g. ``/portal/stepline``.
    - ``STEPLINE_CALL_TIMEOUT``: seconds one tool call may take before its step fails (60).
    - ``STEPLINE_CONNECT_TIMEOUT``: seconds a step waits for its server to connect (10).
    - ``STEPLINE_HEARTBEAT``: seconds of silence before a server is pinged; three heartbeats of silence
      and it is shown not responding (5).
    - ``STEPLINE_SSE_PING``: seconds between keep-alive comments on event streams (15).
    - ``STEPLINE_FRAME_ANCESTORS``: the CSP ``frame-ancestors`` sources allowed to embed the pages in
      an iframe, space-separated (``'self'``), e.g. ``'self' https://portal.example.com``.
    - ``STEPLINE_SECRET``: signs the pages' form tokens; unset, a random one per process (a form left
      open across a restart is then shown again to resubmit).
    - ``RUN_REGISTRY_MAX_SIZE`` (or ``STEPLINE_RUN_REGISTRY_MAX_SIZE``): runs kept in memory (200).
    - ``STEPLINE_DATA_DIR``: where run history is stored, an SQLite file (``./.stepline/``).
    - ``STEPLINE_DATABASE_URL``: a ``postgresql://`` URL: run history is kept in that PostgreSQL database
      instead of the data directory (``--database``).
    - ``STEPLINE_RETENTION_DAYS``: finished runs older than this are pruned (30).
    - ``STEPLINE_RETENTION_RUNS``: at most this many runs are kept; the oldest finished go first (10000).
    - ``STEPLINE_RELOAD_SECONDS``: how often the scenario folder is checked for changed, added or removed
      files (1); ``0`` turns the check off.
    - ``STEPLINE_HISTORY``: ``false`` keeps runs in memory only, nothing written (true).

    Replicas on one PostgreSQL database (``STEPLINE_DATABASE_URL``; see docs/deploy.md):

    - ``STEPLINE_REPLICA_ID``: this replica's id, unique among them (host:port of ``serve``).
    - ``STEPLINE_LEASE_SECONDS``: how long a replica's claim on a run lasts unless renewed; a replica
      killed or cut off has its runs taken by another this long after its last renewal (10).
    - ``STEPLINE_MAX_CONCURRENT_RUNS``: live runs one replica runs at once; more are queued in the
      database for any replica with room (100).

    People answering servers (see the README's "Human in the loop"):

    - ``STEPLINE_ROOTS``: folders offered to MCP servers that ask for roots, a JSON list (``--root DIR``,
      repeatable); a ``roots`` list in the MCP config file adds to them.
    - ``STEPLINE_WAIT_TIMEOUT``: seconds a request waits for a person unless its step sets
      ``wait_timeout_seconds`` (86400, a day); then its step fails, saying nobody answered.
    - ``STEPLINE_SAMPLING_URL``: an OpenAI-compatible endpoint (``…/v1``) a person may send a server's
      sampling request to, and review the model's reply before it goes back (none: people write replies).
    - ``STEPLINE_SAMPLING_MODEL``: the model asked there (``gpt-4o-mini``); a server's model hints are
      shown to the reviewer, not used to pick one.
    - ``STEPLINE_SAMPLING_KEY_ENV``: the environment variable holding the endpoint's API key
      (``STEPLINE_SAMPLING_API_KEY``); the key is sent only to the endpoint, never shown or logged.

    Agents and MCP clients (see the README's "Scenarios as MCP tools"):

    - ``STEPLINE_MAX_MCP_CALLS``: MCP tool calls (each a run) in flight at once over ``/mcp`` and
      ``stepline mcp`` (200); past it a call is answered with a tool error saying Stepline is busy.
    - ``STEPLINE_PUBLIC_URL``: the absolute URL clients reach Stepline at, e.g.
      ``https://portal.example.com/stepline``, for the links in tool results when no HTTP request says it
      (``stepline mcp`` over stdio); none: such results link only to ``stepline://runs/{id}``.

    Access (see the README's "Access control"):

    - ``STEPLINE_AUTH_HEADER``: the header the portal's proxy names the user in, e.g. ``X-Forwarded-User``;
      believed only from ``STEPLINE_TRUSTED_PROXIES`` (addresses or networks, comma-separated).
    - ``STEPLINE_GROUPS_HEADER``: the header the proxy lists the user's groups in (comma-separated).
    - ``STEPLINE_ROLE_MAP``: groups to roles, e.g. ``readers=viewer,ops=operator,admins=admin``;
      ``*=viewer`` gives every proxy user a role. A proxy user whose groups map to no role is refused.
    - ``STEPLINE_ALLOW_ANONYMOUS``: the role of requests that name nobody (none: they are refused,
      except on a loopback-bound server, where they are admin as before access control).

    Limits (each answered with its own status; see the README's "Limits"):

    - ``STEPLINE_MAX_BODY_BYTES``: the largest request body read, JSON or form (1 MiB); larger: 413.
    - ``STEPLINE_MAX_JSON_DEPTH``: how deeply a JSON document received may nest (64): an API body or a
      form's JSON box deeper is refused 422; a tool result deeper fails its step. At most 200.
    - ``STEPLINE_MAX_OUTPUT_BYTES``: the largest tool result a step keeps, as JSON (1 MiB); larger
      outputs are stored truncated and marked so. A server's request to a person (a form, a sampling
      conversation) larger than this is refused to the server, saying so.
    - ``STEPLINE_PAGE_OUTPUT_BYTES``: how much of a step's output or text a run page shows (64 KiB); the
      whole is at ``GET /api/runs/{id}/steps/{name}/output``.
    - ``STEPLINE_MAX_INLINE_IMAGE_BYTES``: the largest image a run page shows inline (512 KiB); a larger
      one is offered as a download.
    - ``STEPLINE_MAX_FOR_EACH_ITEMS``: the most items a ``for_each`` step may call its tool for (1000);
      a list longer fails the step, saying so.
    - ``STEPLINE_MAX_STREAMS_PER_RUN`` / ``STEPLINE_MAX_STREAMS``: open event streams allowed on one
      run (2000) and in the whole process (3000, below the connection cap); past either: 503 with ``Retry-After``.
    - ``STEPLINE_STREAM_SEND_TIMEOUT``: seconds a stream waits for a client to take a frame before it
      drops that client (10); the client resumes with ``Last-Event-ID``.
    - ``STEPLINE_MAX_CONNECTIONS``: open HTTP connections served at once (4000); more are closed at once.
    - ``STEPLINE_HEADER_TIMEOUT``: seconds a connection may take to send a request's headers, and
      may sit idle between requests (10).
    - ``STEPLINE_ALLOWED_HOSTS``: ``Host`` header values served, comma-separated (``*`` for any).
      Default: the loopback names when bound to a loopback address, else any.
    - ``STEPLINE_FORWARDED_ALLOW_IPS``: addresses of reverse proxies whose ``X-Forwarded-*`` headers
      are believed, comma-separated (none: such headers are ignored).
    """

    model_config = SettingsConfigDict(env_prefix="STEPLINE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    scenarios: Path = SCENARIOS
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
    database_url: str | None = None
    retention_days: float = Field(30.0, gt=0)
    retention_runs: int = Field(10_000, ge=1)
    history: bool = True
    replica_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.:@-]{1,100}$")
    lease_seconds: float = Field(10.0, ge=1, le=3600)
    max_concurrent_runs: int = Field(100, ge=1)
    reload_seconds: float = Field(1.0, ge=0)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    # At most 200: the MCP SDK reads no message nested deeper than about 200 levels; pydantic serialises 255.
    max_json_depth: int = Field(64, ge=2, le=200)
    max_output_bytes: int = Field(1024 * 1024, ge=1024)
    max_for_each_items: int = Field(1000, ge=1)
    page_output_bytes: int = Field(64 * 1024, ge=1024)
    max_inline_image_bytes: int = Field(512 * 1024, ge=0)
    max_streams_per_run: int = Field(2000, ge=1)
    max_streams: int = Field(3000, ge=1)
    stream_send_timeout: float = Field(10.0, gt=0)
    max_connections: int = Field(4000, ge=1)
    header_timeout: float = Field(10.0, gt=0)
    auth_header: str | None = Field(None, pattern=r"^[A-Za-z0-9-]+$")
    groups_header: str | None = Field(None, pattern=r"^[A-Za-z0-9-]+$")
    trusted_proxies: str = ""
    role_map: str = ""
    allow_anonymous: Role | None = None
    roots: list[Path] = Field(default_factory=list)
    wait_timeout: float = Field(24 * 60 * 60.0, gt=0)
    sampling_url: str | None = Field(None, pattern=r"^https?://")
    sampling_model: str = "gpt-4o-mini"
    sampling_key_env: str = Field("STEPLINE_SAMPLING_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    max_mcp_calls: int = Field(200, ge=1)
    public_url: str | None = Field(None, pattern=r"^https?://[^\s]+$")
    allowed_hosts: str | None = None
    forwarded_allow_ips: str = ""
