"""Stepline: run multi-step MCP tool scenarios and watch them live."""
