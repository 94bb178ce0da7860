"""`stepline serve | validate | run | token | mcp`: the command line (also `python -m web`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from web.access import Role
from web.db_command import add_database_option, add_db_parser, db_command
from web.hosts import HostPolicy
from web.mcp_config import McpConfigError
from web.settings import Settings
from web.store import StoreError
from web.token_command import add_token_commands, token_command


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
    add_database_option(serve)
    serve.add_argument(
        "--max-concurrent-runs",
        type=int,
        metavar="N",
        help="with --database: live runs this replica runs at once; more wait in the database for a replica "
        "with room (default 100)",
    )
    serve.add_argument("--replica-id", metavar="ID", help="with --database: this replica's id (default host:port)")
    serve.add_argument(
        "--lease-seconds",
        type=float,
        metavar="SECONDS",
        help="with --database: how long a run stays a stopped replica's before another takes it (default 10)",
    )
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
    serve.add_argument(
        "--auth-header",
        help="the header the portal's proxy names the signed-in user in, e.g. X-Forwarded-User; believed only "
        "from --trusted-proxies (default: none)",
    )
    serve.add_argument(
        "--groups-header",
        help="the header the proxy lists the user's groups in (comma-separated), e.g. X-Forwarded-Groups",
    )
    serve.add_argument(
        "--trusted-proxies",
        help="addresses or networks (comma-separated, * for any) whose --auth-header is believed; "
        "from anywhere else it is refused with 403",
    )
    serve.add_argument(
        "--role-map",
        help="groups to roles, e.g. readers=viewer,ops=operator,admins=admin (*=viewer: any proxy user); "
        "a proxy user in no mapped group is refused",
    )
    serve.add_argument(
        "--allow-anonymous",
        metavar="ROLE",
        choices=[role.value for role in Role],
        help="the role of requests that name nobody: viewer, operator or admin (default: refused, except on a "
        "loopback address, where they are admin)",
    )
    _add_roots(serve)
    serve.add_argument(
        "--sampling-url",
        metavar="URL",
        help="an OpenAI-compatible endpoint (…/v1) a person may send a server's sampling request to, reviewing "
        "the reply before it goes back; its key is read from --sampling-key-env",
    )
    serve.add_argument("--sampling-model", metavar="MODEL", help="the model asked at --sampling-url (gpt-4o-mini)")
    serve.add_argument(
        "--sampling-key-env",
        metavar="VAR",
        help="the environment variable holding the sampling endpoint's API key (STEPLINE_SAMPLING_API_KEY)",
    )
    serve.add_argument(
        "--wait-timeout",
        type=float,
        metavar="SECONDS",
        help="how long a request waits for a person unless its step says (default 86400, a day)",
    )
    _add_sources(serve)

    validate = commands.add_parser("validate", help="check every scenario (and its tools, when servers answer)")
    validate.add_argument("--json", action="store_true", help="print the report as one JSON document")
    _add_sources(validate)

    run = commands.add_parser(
        "run",
        help="run a scenario and show its progress",
        description="Run a scenario and show its progress: in this process, with the configured scenarios and MCP "
        "servers, or on a running Stepline (--server). A run in this process is not recorded in the run history "
        "unless --data-dir is given. Ctrl-C cancels the run and waits for it to end; a second Ctrl-C stops waiting.",
        epilog="Exit status: 0 the run succeeded; 1 it failed or was cancelled; 2 it could not start "
        "(bad input, unknown scenario, server unreachable).",
    )
    run.add_argument("scenario", metavar="SCENARIO", help="the scenario's id")
    run.add_argument("--input", dest="input_json", metavar="JSON", help="the run input, a JSON object")
    run.add_argument("--input-file", type=Path, metavar="FILE", help="a file holding the run input (JSON); - for stdin")
    run.add_argument(
        "-i",
        dest="input_pairs",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one input field (repeatable); VALUE is read as JSON when it parses, else as text",
    )
    run.add_argument("--server", metavar="URL", help="run on a Stepline server at URL instead of in this process")
    run.add_argument(
        "--json", action="store_true", help="print the run's final snapshot as JSON on stdout (progress goes to stderr)"
    )
    run.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="record the run in the history in this folder (default: not recorded; a running `stepline serve` "
        "holds its own data directory, use --server to run there)",
    )
    _add_sources(run)
    add_token_commands(commands)
    add_db_parser(commands)

    mcp = commands.add_parser(
        "mcp",
        help="serve the scenarios as MCP tools over stdio",
        description="Serve every scenario as an MCP tool over stdio, for an MCP client that starts its servers "
        'as commands ({"command": "stepline", "args": ["mcp", ...]}). In this process, recording the runs '
        "in the data directory's history, or with --server on a running Stepline, relaying the client's messages "
        "to its /mcp endpoint. The session ends when the client closes stdin; runs still in flight then end as "
        "they do when `stepline serve` stops.",
        epilog="Exit status: 0 the client closed the session; 1 the --server could not be reached or refused the "
        "token; 2 bad options, or a data directory in use by another Stepline process.",
    )
    mcp.add_argument(
        "--server",
        metavar="URL",
        help="relay to the Stepline at URL (its root, e.g. http://127.0.0.1:8000) instead of running one here",
    )
    mcp.add_argument(
        "--token-env",
        metavar="VAR",
        help="with --server: the environment variable holding the API token sent as 'Authorization: Bearer' "
        "(default STEPLINE_TOKEN; unset: no token, as a loopback server allows)",
    )
    mcp.add_argument("--data-dir", type=Path, metavar="DIR", help="where run history is stored (default ./.stepline/)")
    add_database_option(mcp)
    _add_roots(mcp)
    mcp.add_argument(
        "--wait-timeout",
        type=float,
        metavar="SECONDS",
        help="how long a request waits for a person unless its step says (default 86400, a day)",
    )
    mcp.add_argument(
        "--call-timeout",
        type=float,
        metavar="SECONDS",
        help="seconds one tool call may take before its step fails (default 60)",
    )
    mcp.add_argument(
        "--public-url",
        metavar="URL",
        help="where people reach this data directory's pages (a `stepline serve` on it), for the links to each "
        "run's page and snapshot in tool results (default: results link only to stepline://runs/{id})",
    )
    _add_sources(mcp)

    args = parser.parse_args(argv)
    flags = {key: value for key, value in vars(args).items() if key in Settings.model_fields and value is not None}
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
        if args.command == "validate":
            from web.validate_command import validate_command

            return asyncio.run(validate_command(settings, as_json=args.json))
        if args.command == "token":
            return token_command(args, settings)
        if args.command == "db":
            return db_command(args, settings)
        if args.command == "mcp":
            from web.mcp_command import mcp_command

            return mcp_command(args, settings)
        from web.run_command import run_command

        return run_command(args, settings)
    except (McpConfigError, StoreError) as exc:
        print(f"stepline: {exc}", file=sys.stderr)
        return 2


def _add_roots(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        dest="roots",
        metavar="DIR",
        type=Path,
        action="append",
        help="a folder offered to MCP servers that ask for roots (repeatable)",
    )


def _add_sources(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenarios", type=Path, help="folder of scenario files (default: the shipped scenarios/)")
    parser.add_argument("--mcp-config", type=Path, help="mcpServers JSON file (default: the bundled demo server)")


def serve_command(settings: Settings) -> int:
    from web.server import ServeRefused, serve

    try:
        return 0 if serve(settings) else 3
    except ServeRefused as exc:
        print(f"stepline: {exc}", file=sys.stderr)
        return 2
