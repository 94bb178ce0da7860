"""The one Jinja environment: every page and fragment is rendered through it."""

from __future__ import annotations

from starlette.templating import Jinja2Templates

from web.settings import PROJECT_ROOT

templates = Jinja2Templates(directory=PROJECT_ROOT / "templates")
