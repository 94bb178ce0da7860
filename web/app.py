"""create_app(settings): routes, middleware, error handlers and the lifespan. Nothing else."""

from __future__ import annotations

import contextlib
import getpass
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from web import api, check_api, mcp_endpoint, openapi, output_api, pages, preview_api, requests_api
from web.access import Identity, IdentitySource, Role
from web.api import RequestInvalid
from web.auth import Authenticator
from web.catalog_reload import CatalogWatcher
from web.database import Location
from web.http_body import BodyLimitMiddleware, BodyTooLarge
from web.inbox import Inbox
from web.leases import Ownership
from web.mcp_config import load_config_roots, load_mcp_config
from web.mcp_pool import McpPool
from web.mcp_serving import ScenarioServer
from web.permissions import guard_routes
from web.registry import RunRegistry
from web.replicas import Replica, default_replica_id
from web.resources import STATIC
from web.runner import Runner
from web.runs import InputInvalid, RunRefused, RunService
from web.sampling_model import SamplingModel
from web.scenario_tools import RunLinks
from web.scenarios import load_catalog
from web.security import FormTokens, SecurityMiddleware
from web.settings import Settings
from web.store import RETRY_AFTER_SECONDS, RunStore, StoreError
from web.stream_budget import StreamBudget
from web.tokens import TokenBook

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()
    # Read config up front so a broken mcpServers file stops `serve` with its reason, not mid-run.
    mcp_configs = load_mcp_config(settings.mcp_config)
    store = None
    ownership = None
    if settings.history:
        location = Location.of(settings.data_dir, settings.database_url)
        if location.dialect == "postgresql":
            # On PostgreSQL every process is a replica: one or many, they share the runs (web.replicas).
            ownership = Ownership(settings.replica_id or default_replica_id(settings.port), settings.lease_seconds)
        store = RunStore(
            location,
            retention_days=settings.retention_days,
            retention_runs=settings.retention_runs,
            ownership=ownership,
        )
        # Likewise a data directory that cannot be written: refuse to start rather than lose runs.
        store.check()
    # With a history, runs outlive the process: left as they are at shutdown, resumed at start (web.resume).
    registry = RunRegistry(
        settings.run_registry_max_size, store=store, max_concurrent_runs=settings.max_concurrent_runs
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        # One catalog for the whole life of the app, brought up to date in place as its folder changes.
        catalog = load_catalog(settings.scenarios)
        # History opens first and closes last, so it records how every live run ended.
        async with (
            registry.history(),
            McpPool(
                mcp_configs,
                connect_timeout=settings.connect_timeout,
                heartbeat=settings.heartbeat,
                roots=settings.roots,
                config_roots=load_config_roots(settings.mcp_config),
            ) as pool,
            CatalogWatcher(catalog, settings.reload_seconds).running() as watcher,
        ):
            runner = Runner(
                pool,
                registry,
                call_timeout=settings.call_timeout,
                max_json_depth=settings.max_json_depth,
                max_output_bytes=settings.max_output_bytes,
                max_for_each_items=settings.max_for_each_items,
                inbox=Inbox(max_request_bytes=settings.max_output_bytes),
                wait_timeout=settings.wait_timeout,
            )
            replica = None
            if ownership is not None:
                assert store is not None
                replica = Replica(ownership, store, registry, resume=lambda: runner.resume_unfinished(catalog))
            service = RunService(catalog, registry, runner, replica)
            await runner.resume_unfinished(catalog)

            async def reload() -> None:
                """What SIGHUP asks of `stepline serve`: the scenario folder and the MCP config read again now."""
                watcher.wake()
                await pool.reload_config(settings.mcp_config)

            # The model endpoint's HTTP client, closed with the app (None: people write sampling replies).
            sampling = SamplingModel.from_settings(settings)
            mcp = ScenarioServer(
                service,
                pool,
                max_calls=settings.max_mcp_calls,
                max_json_depth=settings.max_json_depth,
                links=RunLinks(settings.public_url.rstrip("/")) if settings.public_url else None,
                local=Identity(_account(), IdentitySource.LOCAL, Role.ADMIN),
                on_shutdown=registry.stop_live,
            )
            watcher.on_change.append(mcp.tools_changed)
            mcp_sessions = mcp_endpoint.session_manager(mcp, settings)
            async with mcp_sessions.run(), (replica.running() if replica else contextlib.nullcontext()):
                app.state.mcp_sessions = mcp_sessions
                yield {
                    "replica": replica,
                    "sampling": sampling,
                    "catalog": catalog,
                    "pool": pool,
                    "runs": registry,
                    "runner": runner,
                    "run_service": service,
                    "reload": reload,
                    "mcp": mcp,
                }
                # Calls in flight answer first, leaving their runs to end below as every run does at shutdown.
                mcp.stop()
                app.state.mcp_sessions = None
            await registry.cancel_all()
            if sampling is not None:
                await sampling.aclose()

    app = Starlette(
        routes=[
            *api.routes,
            *output_api.routes,
            *check_api.routes,
            *preview_api.routes,
            *requests_api.routes,
            *mcp_endpoint.routes,
            *openapi.routes,
            *pages.routes,
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        exception_handlers={
            HTTPException: http_error,
            RequestInvalid: request_invalid,
            RunRefused: run_refused,
            StoreError: history_unwritable,
            Exception: server_error,
        },
        middleware=[
            Middleware(SecurityMiddleware, settings=settings),
            Middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, refuse=body_too_large),
        ],
        lifespan=lifespan,
    )
    guard_routes(app.routes)
    app.state.settings = settings
    tokens = TokenBook(store.location, store.fetchall) if store is not None else None
    app.state.authenticator = Authenticator(settings, tokens=tokens)
    app.state.form_tokens = FormTokens(settings.secret)
    app.state.stop_runs = registry.stop_live
    app.state.stream_budget = StreamBudget(
        max_per_run=settings.max_streams_per_run,
        max_total=settings.max_streams,
        send_timeout=settings.stream_send_timeout,
        keepalive=settings.sse_ping,
        on_shutdown=registry.stop_live,
    )
    return app


def _account() -> str:
    """The account this process runs as: who a stdio MCP client acts as."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container's)
        return "local"


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = exc.headers
    if exc.status_code == 405:
        # Starlette names the methods of the first route on the path only; GET and POST /api/runs are two.
        headers = {**(headers or {}), "Allow": allowed_methods(request)}
    if pages.wants_html(request):
        return pages.error_page(request, exc.status_code, exc.detail, headers)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


def allowed_methods(request: Request) -> str:
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route) and route.methods and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods
    return ", ".join(sorted(methods))


async def body_too_large(scope: Scope, receive: Receive, send: Send, exc: BodyTooLarge) -> None:
    response = await http_error(Request(scope, receive), HTTPException(413, str(exc)))
    await response(scope, receive, send)


async def request_invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestInvalid)
    return JSONResponse({"detail": exc.errors}, status_code=422)


async def run_refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RunRefused)
    if isinstance(exc, InputInvalid):
        return await request_invalid(request, RequestInvalid(exc.errors))
    status = api.REFUSAL_STATUS[type(exc)]
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else None
    return await http_error(request, HTTPException(status, str(exc), headers=headers))


async def history_unwritable(request: Request, exc: Exception) -> Response:
    # Starting a run that could not be recorded would risk losing it: refuse it, saying why and when to retry.
    retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    # A POST starts a run (or reruns one): it is what was refused. A read found the history unreadable.
    doing = "Run not started" if request.method == "POST" else "Run history unavailable"
    return await http_error(request, HTTPException(503, f"{doing}: {exc}", headers=retry))


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("Unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    if pages.wants_html(request):
        return pages.error_page(request, 500, "The error was logged. Try again, or go back to the scenarios.")
    return JSONResponse({"detail": "Internal server error"}, status_code=500)
