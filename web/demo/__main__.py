"""Run the demo MCP server: ``python -m web.demo`` (stdio), or over HTTP with ``--transport``."""

from __future__ import annotations

import argparse
import sys

from web.demo.server import build_server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m web.demo", description=__doc__)
    parser.add_argument("--transport", choices=["stdio", "streamable-http", "sse"], default="stdio")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP transports only (default: %(default)s)")
    parser.add_argument("--port", type=int, default=9000, help="HTTP transports only (default: %(default)s)")
    parser.add_argument(
        "--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
    )
    args = parser.parse_args(argv)
    try:
        server = build_server(log_level=args.log_level)
    except ValueError as exc:
        parser.error(str(exc))
    if args.transport == "stdio":
        server.run()
        return
    # stdout belongs to the protocol only on stdio; for HTTP say where to connect.
    path = "/mcp" if args.transport == "streamable-http" else "/sse"
    print(f"demo MCP server ({args.transport}) on http://{args.host}:{args.port}{path}", file=sys.stderr)
    server.run(args.transport, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
