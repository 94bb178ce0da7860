"""The bundled offline demo MCP server (``python -m web.demo``)."""
