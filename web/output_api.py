"""(being written)"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from starlette.routing import Route

routes: list[Route] = []
PATHS: dict[str, dict[str, Any]] = {}
MODELS: list[type[BaseModel]] = []
