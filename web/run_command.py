"""`stepline run SCENARIO`: (being written)."""

from __future__ import annotations

import argparse

from web.settings import Settings


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    raise NotImplementedError
