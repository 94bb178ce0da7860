"""Each event is encoded once, for the run's history and for every JSON stream of the run.

What a run's stream sends while the run is in memory and what it sends again from the history after a
restart are the same bytes, whatever text the tools returned. Timestamps are ISO 8601, UTC, to the
millisecond.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inprocess import in_process
from mcp_process import workflow_home
from runs import get_run, run_to_end
from sse import frames, parse_text

from web.run_state import utc_now

# Quotes, escapes, a line break, accents, an emoji, markup, and characters JSON keeps as they are though
# line readers split on them (U+0085, U+2028, U+2029).
TRICKY = 'Zoë says "hi"\n\ttab \\ back\u2028sep\u2029para\u0085next 😀 </script>'

SCENARIO = {
    "schema_version": "2",
    "scenario_id": "tricky",
    "name": "Tricky text",
    "steps": [
        {"name": "text", "tool": "sleep", "input": {"seconds": 0, "label": "{{ input.text }}"}},
        {
            "name": "json_text",
            "tool": "sleep",
            "input": {"seconds": 0, "label": '{"n": 1.5, "s": {{ input.text | tojson }}}'},
        },
        {
            "name": "structured",
            "tool": "echo",
            "input": {"value": {"text": "{{ steps.text.output }}", "list": [1, 2.5, None, True]}},
        },
        {"name": "items", "tool": "echo", "for_each": "{{ [input.text, 'plain'] }}", "input": {"value": "{{ item }}"}},
    ],
    "output": {"all": "{{ steps.structured.output }}"},
}


def stream_bytes(client: Any, run_id: str) -> bytes:
    response = client.get(f"/api/runs/{run_id}/events")
    assert response.status_code == 200, response.text
    return response.content


def test_a_runs_stream_is_the_same_bytes_live_and_from_the_history(tmp_path: Path) -> None:
    folder, config = workflow_home(tmp_path, [SCENARIO])
    settings: dict[str, Any] = {"mcp_config": config, "scenarios": folder, "data_dir": tmp_path / "data"}

    with in_process(tmp_path, **settings) as app:
        app.wait_ready()
        run = run_to_end(app.client, "tricky", {"text": TRICKY})
        assert run["status"] == "success", run["message"]
        live = stream_bytes(app.client, run["run_id"])
    with in_process(tmp_path, **settings) as app:
        replayed = stream_bytes(app.client, run["run_id"])
        steps = {step["node_id"]: step for step in get_run(app.client, run["run_id"])["steps"]}

    assert replayed == live
    events = [frame.json() for frame in frames(parse_text(live.decode("utf-8")))]
    finished = {event["step_name"]: event for event in events if event["type"] == "step_finished"}
    assert finished["text"]["output"] == TRICKY
    # The text block is the output: the stream carries it once, the snapshot shows the block whole.
    assert finished["text"]["content"] == [{"type": "text", "text_from": "output"}]
    assert steps["text"]["content"] == [{"type": "text", "text": TRICKY}]
    assert finished["json_text"]["output"] == {"n": 1.5, "s": TRICKY}
    assert finished["structured"]["output"]["value"] == {"text": TRICKY, "list": [1, 2.5, None, True]}
    assert [item["value"] for item in finished["items"]["output"]] == [TRICKY, "plain"]
    assert events[-1]["output"] == {"all": finished["structured"]["output"]}


def test_timestamps_are_iso_8601_utc_to_the_millisecond() -> None:
    before = datetime.now(UTC).isoformat(timespec="milliseconds")
    now = utc_now()
    after = datetime.now(UTC).isoformat(timespec="milliseconds")

    assert len(now) == len(before)
    assert datetime.fromisoformat(now).tzinfo == UTC
    assert before <= now <= after
