"""What the page and browser tests share: scenario folders, MCP configs and reading pages.

`ui_fixtures(folder)` writes a scenario folder (the shipped scenarios plus two of the tests' own:
`hostile_v1`, whose text is markup throughout, and `forms_v1`, whose input uses every kind of
field) and an mcpServers file with the demo server and `tests/servers/mirror.py`.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from html import unescape
from pathlib import Path
from typing import Any

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
    config = folder / "mcp.json"
    servers = {
        "demo": {"command": sys.executable, "args": ["-m", "web.demo"], "cwd": str(PROJECT_ROOT),
                 "env": {"STEPLINE_DEMO_DELAY": "${STEPLINE_DEMO_DELAY}"}},
        "mirror": {"command": sys.executable, "args": [str(MIRROR_SERVER)]},
    }
    config.write_text(json.dumps({"mcpServers": servers}))
    return scenarios, config


def ui_server_args(folder: Path) -> tuple[str, ...]:
    scenarios, config = ui_fixtures(folder)
    return ("--scenarios", str(scenarios), "--mcp-config", str(config))


def form_token(html: str) -> str:
    match = re.search(r'name="_csrf" value="([^"]+)"', html)
    assert match, "the page has no form token"
    return match.group(1)


def attribute(html: str, name: str) -> str:
    """The first value of attribute `name` in `html`, unescaped."""
    match = re.search(rf'{name}="([^"]*)"', html)
    assert match, f"no {name}= in the page"
    return unescape(match.group(1))
