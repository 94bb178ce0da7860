"""`stepline validate` on version 2 files, run as a user runs it: every problem on its own line, `file: problem`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import PROJECT_ROOT

GOOD = {
    "schema_version": "2",
    "scenario_id": "good",
    "name": "Good",
    "input_schema": {"type": "object", "required": ["domain"], "properties": {"domain": {"type": "string"}}},
    "defaults": {"retry": {"max_attempts": 2}},
    "steps": [
        {"name": "outlet", "tool": "lookup_outlet", "input": {"domain": "{{ input.domain }}"}},
        {"name": "articles", "tool": "list_outlet_articles", "input": {"domain": "{{ steps.outlet.output.domain }}"}},
        {"name": "sources", "tool": "search_news_sources", "for_each": "{{ steps.articles.output.articles[:3] }}",
         "input": {"url": "{{ item.url }}"}},
        {"name": "stats", "tool": "outlet_stats", "on_error": "continue",
         "input": {"articles": "{{ steps.articles.output.articles }}", "outlet": "{{ steps.outlet.output.name }}"}},
    ],
    "output": {"summary": "{{ steps.stats.output.summary }}", "searched": "{{ steps.sources.output | length }}"},
}

THREE_PROBLEMS = {
    "schema_version": "2",
    "scenario_id": "broken",
    "name": "Broken",
    "steps": [
        {"name": "outlet", "tool": "lookup_outlet", "input": {"domain": "{{ input.domain }"}},
        {"name": "left", "tool": "outlet_stats", "input": {"outlet": "{{ steps.right.output.name }}"}},
        {"name": "right", "tool": "lookup_outlet", "needs": ["left", "stast"], "input": {"domain": "x.example"}},
    ],
}


def validate(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "web", "validate", "--scenarios", str(folder), *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "STEPLINE_DEMO_DELAY": "0"},
    )


def write(folder: Path, scenario: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{scenario['scenario_id']}.json").write_text(json.dumps(scenario, indent=2), encoding="utf-8")


def test_every_problem_of_a_file_is_a_line_and_only_clean_files_count_as_valid(tmp_path: Path) -> None:
    write(tmp_path, GOOD)
    write(tmp_path, THREE_PROBLEMS)

    result = validate(tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "broken.json: steps.0 (outlet).input.domain: template syntax error at line 1, column 17: unexpected '}'",
        "broken.json: steps.2 (right).needs.1: unknown step 'stast' (steps: outlet, left, right)",
        "broken.json: cycle between steps: left → right → left",
    ]
    assert "1 valid scenario(s), 3 problem(s)" in result.stderr


def test_a_good_version_2_file_passes(tmp_path: Path) -> None:
    write(tmp_path, GOOD)

    result = validate(tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""
    assert "1 valid scenario(s), 0 problem(s)" in result.stderr


def test_the_tools_of_version_2_steps_are_checked_against_the_servers(tmp_path: Path) -> None:
    """The file loads, but its calls cannot work: it is not counted as valid."""
    steps = [
        {"name": "outlet", "tool": "lookup_outlet", "input": {"domaine": "{{ input.domain }}"}},
        {"name": "pick", "tool": "find_earliest_source", 
         "input": {"sources": "{{ steps.outlet.output }}", "limit": "1"}},
        {"name": "gone", "tool": "no_such_tool", "input": {}},
        {"name": "fine", "tool": "fetch_article", "input": {"url": "https://{{ input.domain }}/"}},
    ]
    write(tmp_path, {"schema_version": "2", "scenario_id": "calls", "name": "Calls", "steps": steps})

    result = validate(tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "calls.json: steps.0 (outlet).input: the tool requires 'domain', which is not given"
    assert lines[1] == "calls.json: steps.1 (pick).input.limit: '1' is not of type 'integer'"
    assert lines[2].startswith("calls.json: steps.2 (gone): unknown tool 'no_such_tool'")
    assert len(lines) == 3, lines
    assert "0 valid scenario(s), 3 problem(s)" in result.stderr
