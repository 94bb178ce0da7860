"""What the page and browser tests share: scenario folders, MCP configs, apps behind a proxy and reading pages.

`ui_fixtures(folder)` writes a scenario folder (the shipped scenarios plus two of the tests' own:
`hostile_v1`, whose text is markup throughout, and `forms_v1`, whose input uses every kind of
field) and an mcpServers file with the demo server and `tests/servers/mirror.py`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from html import unescape
from pathlib import Path
from typing import Any

import httpx
from inprocess import InProcessApp
from starlette.types import Receive, Scope, Send

from web.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIRROR_SERVER = PROJECT_ROOT / "tests" / "servers" / "mirror.py"
HOSTILE_TEXT = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'

HOSTILE_SCENARIO: dict[str, Any] = {
    "schema_version": "1",
    "scenario_id": "hostile_v1",
    "name": "Hostile <script>window.__pwned=3</script> scenario",
    "description": 'Markup everywhere: <img src=x onerror="window.__pwned=4">',
    "input_schema": {
        "type": "object",
        "required": ["text"],
        "properties": {
            "text": {"type": "string", "description": "Say <b>anything</b>"},
            "fail": {"type": "boolean", "default": False, "description": "Make the second step fail"},
        },
        "examples": [{"text": HOSTILE_TEXT}],
    },
    "steps": [
        {
            "name": "mirror",
            "tool": "mirror",
            "input": {"text": {"from": "input.text"}, "payload": {"value": {"<i>key</i>": "<u>value</u>"}}},
        },
        {"name": "refuse", "tool": "refuse", "input": {"text": {"from": "steps.mirror.output.text"},
                                                         "really": {"from": "input.fail"}}},
        {"name": "after", "tool": "mirror", "input": {"text": "after"}},
    ],
}

FORMS_SCENARIO: dict[str, Any] = {
    "schema_version": "1",
    "scenario_id": "forms_v1",
    "name": "Every kind of field",
    "description": "An input schema that uses every kind of form field.",
    "input_schema": {
        "type": "object",
        "required": ["title", "count", "color"],
        "$defs": {
            "Place": {
                "type": "object",
                "required": ["city"],
                "properties": {"city": {"type": "string"}, "zip": {"type": ["string", "null"]}},
            }
        },
        "properties": {
            "title": {"type": "string", "pattern": "^[a-z ]+$", "description": "Lower-case words only"},
            "site": {"type": "string", "format": "uri"},
            "email": {"type": "string", "format": "email"},
            "day": {"type": "string", "format": "date"},
            "count": {"type": "integer", "minimum": 1, "maximum": 10, "default": 2},
            "ratio": {"type": "number"},
            "urgent": {"type": "boolean"},
            "color": {"enum": ["red", "green", "blue"]},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
            "sizes": {"type": "array", "items": {"enum": ["S", "M", "L"]}},
            "place": {"$ref": "#/$defs/Place"},
            "target": {
                "oneOf": [{"type": "string", "title": "By name"}, {"$ref": "#/$defs/Place", "title": "By place"}]
            },
            "limit": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            "extra": {"type": "object", "description": "Anything else, as JSON"},
        },
        "examples": [{"title": "hello world", "count": 2, "color": "green", "tags": ["a", "b"]}],
    },
    "steps": [
        {"name": "mirror", "tool": "mirror", "input": {"text": {"from": "input.title"}, "payload": {"from": "input"}}}
    ],
}


def ui_fixtures(folder: Path) -> tuple[Path, Path]:
    """(scenario folder, mcpServers file) for a server that runs the demo and the tests' scenarios."""
    scenarios = folder / "scenarios"
    scenarios.mkdir(parents=True, exist_ok=True)
    for path in (PROJECT_ROOT / "scenarios").glob("*.json"):
        shutil.copy(path, scenarios / path.name)
    for scenario in (HOSTILE_SCENARIO, FORMS_SCENARIO):
        (scenarios / f"{scenario['scenario_id']}.json").write_text(json.dumps(scenario, indent=2))
    return scenarios, demo_and_mirror_config(folder)


def demo_and_mirror_config(folder: Path) -> Path:
    """An mcpServers file in `folder`: the demo server (paced by STEPLINE_DEMO_DELAY) and the tests' mirror server."""
    config = folder / "mcp.json"
    servers = {
        "demo": {"command": sys.executable, "args": ["-m", "web.demo"], "cwd": str(PROJECT_ROOT),
                 "env": {"STEPLINE_DEMO_DELAY": "${STEPLINE_DEMO_DELAY}"}},
        "mirror": {"command": sys.executable, "args": [str(MIRROR_SERVER)]},
    }
    config.write_text(json.dumps({"mcpServers": servers}))
    return config


def ui_server_args(folder: Path) -> tuple[str, ...]:
    scenarios, config = ui_fixtures(folder)
    return ("--scenarios", str(scenarios), "--mcp-config", str(config))


def ui_settings(folder: Path) -> dict[str, Path]:
    """The settings of an in-process app that runs the demo and the tests' scenarios."""
    scenarios, config = ui_fixtures(folder)
    return {"scenarios": scenarios, "mcp_config": config}


class BehindProxy:
    """What `stepline serve --root-path PREFIX` does to each request: uvicorn puts the prefix in
    `root_path` and in front of the path, as a proxy that strips the prefix expects."""

    def __init__(self, app: Any, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "root_path": self.prefix, "path": self.prefix + scope["path"],
                     "raw_path": self.prefix.encode() + scope.get("raw_path", scope["path"].encode())}
        await self.app(scope, receive, send)

    def __getattr__(self, name: str) -> Any:
        # The lifespan and shutdown reach the app's router and state through the wrapper.
        return getattr(self.app, name)


@contextmanager
def behind_proxy(folder: Path, prefix: str, *, demo_delay: float = 0, **settings: Any) -> Iterator[InProcessApp]:
    """An in-process app served under `prefix`, as `stepline serve --root-path` serves it; tools instant."""
    settings.setdefault("data_dir", folder / "stepline-data-proxied")
    previous = os.environ.get("STEPLINE_DEMO_DELAY")
    os.environ["STEPLINE_DEMO_DELAY"] = str(demo_delay)  # read once, when the app is built
    try:
        app = InProcessApp(Settings(root_path=prefix, **settings))
    finally:
        if previous is None:
            os.environ.pop("STEPLINE_DEMO_DELAY", None)
        else:
            os.environ["STEPLINE_DEMO_DELAY"] = previous
    app.app = BehindProxy(app.app, prefix)  # type: ignore[assignment]
    with app:
        yield app


def listed_run_ids(client: httpx.Client, **params: str) -> list[str]:
    """The ids of the runs the API lists (newest first), every page of them."""
    ids: list[str] = []
    query: dict[str, str] = {**params, "limit": "200"}
    while True:
        response = client.get("/api/runs", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        ids += [run["run_id"] for run in body["runs"]]
        if not body.get("next_cursor"):
            return ids
        query["cursor"] = body["next_cursor"]


def form_token(html: str) -> str:
    match = re.search(r'name="_csrf" value="([^"]+)"', html)
    assert match, "the page has no form token"
    return match.group(1)


def attribute(html: str, name: str) -> str:
    """The first value of attribute `name` in `html`, unescaped."""
    match = re.search(rf'{name}="([^"]*)"', html)
    assert match, f"no {name}= in the page"
    return unescape(match.group(1))
