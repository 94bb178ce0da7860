"""Every MCP result kept whole: each content block in the run's state and snapshot, readable in expressions
(`steps.X.content`, `.text`, `.structured`), a step's whole output at its own URL, and one copy of each result
in the history and the event stream.

Real servers: the npm reference server (`@modelcontextprotocol/server-everything`), the tests' SDK server that
answers each kind of block (tests/servers/result_shapes.py), and the workflow server's `echo` to show what a
later step received. One app in-process; the history is read again by a second app on the same data directory.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import wait_until
from inprocess import InProcessApp, in_process
from reference_server import reference_server
from runs import get_run, run_to_end, start_run, wait_finished
from servers.result_shapes import JSON_STYLES, JSON_VALUE, PIXEL_PNG, json_text, prose_of
from sse import read_events

SERVERS = Path(__file__).resolve().parent / "servers"
MIB = 1024 * 1024
# Above the 2.2 MB prose result, so that it is kept whole.
MAX_OUTPUT_BYTES = 4 * MIB
PROSE_SIZE = 2_200_000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CAPTION = "Here's the image you requested:\nThe image above is the MCP logo."
CHICAGO = {"temperature": 36, "conditions": "Light rain / drizzle", "humidity": 82}


def v2(scenario_id: str, *steps: dict[str, Any]) -> dict[str, Any]:
    return {"schema_version": "2", "scenario_id": scenario_id, "name": scenario_id, "steps": list(steps)}


def step(name: str, tool: str, **fields: Any) -> dict[str, Any]:
    fields.setdefault("input", {})
    return {"name": name, "tool": tool, **fields}


def echo(name: str, value: Any) -> dict[str, Any]:
    """A step that shows what it received: the workflow server's `echo` answers its arguments."""
    return step(name, "echo", server="workflow", input={"value": value})


SCENARIOS = [
    v2(
        "reference",
        step("image", "get-tiny-image", server="everything"),
        step("links", "get-resource-links", server="everything", input={"count": 2}),
        step("reference", "get-resource-reference", server="everything",
             input={"resourceType": "Text", "resourceId": 2}),
        step("annotated", "get-annotated-message", server="everything",
             input={"messageType": "success", "includeImage": True}),
        step("weather", "get-structured-content", server="everything", input={"location": "Chicago"}),
        echo(
            "use",
            {
                "caption": "{{ steps.image.text }}",
                "mime": "{{ steps.image.content[1].mimeType }}",
                "image": "{{ steps.image.content | selectattr('type', 'equalto', 'image')"
                " | map(attribute='data') | first }}",
                "link_names": "{{ steps.links.content | selectattr('type', 'equalto', 'resource_link')"
                " | map(attribute='name') | list }}",
                "resource_text": "{{ steps.reference.content[1].resource.text }}",
                "audience": "{{ steps.annotated.content[0].annotations.audience }}",
                "temperature": "{{ steps.weather.structured.temperature }}",
                "weather_text": "{{ steps.weather.text }}",
                "weather_output": "{{ steps.weather.output }}",
            },
        ),
    ),
    v2(
        "shapes",
        step("links", "links"),
        step("embedded", "embedded"),
        step("annotated", "annotated"),
        step("audio", "audio"),
        step("nothing", "nothing"),
        step("summary", "summary_and_data"),
        step("refused", "refuse", on_error="continue"),
        step("each", "prose", for_each="{{ [5, 7] }}", input={"size": "{{ item }}"}),
        echo(
            "read",
            {
                "first_link": "{{ steps.links.output[0].uri }}",
                "output_is_content": "{{ steps.links.output == steps.links.content }}",
                "links_text": "{{ steps.links.text }}",
                "blob": "{{ steps.embedded.content[1].resource.blob }}",
                "nothing": "{{ steps.nothing.content }}",
                "summary": "{{ [steps.summary.output, steps.summary.structured, steps.summary.text] }}",
                "refused": "{{ [steps.refused.output, steps.refused.text, steps.refused.structured] }}",
                "refused_image": "{{ steps.refused.content[1].mimeType }}",
                "each": "{{ [steps.each.output, steps.each.content, steps.each.text, steps.each.structured] }}",
            },
        ),
    ),
    v2("styles", *(step(style, "json_styled", input={"style": style}) for style in JSON_STYLES),
       step("weather", "weather")),
    v2("prose", step("prose", "prose", input={"size": PROSE_SIZE})),
    v2("huge_image", step("image", "image", input={"kind": "big", "size": 4 * MIB})),
    v2(
        "slow",
        step("wait", "sleep", server="workflow", input={"seconds": 30}),
        step("after", "echo", server="workflow", input={"value": "{{ steps.wait.output }}"}),
    ),
]


def results_home(home: Path) -> dict[str, Any]:
    """The scenarios and an mcpServers file with the three servers: the settings of an app that runs them."""
    folder = home / "scenarios"
    folder.mkdir()
    for scenario in SCENARIOS:
        (folder / f"{scenario['scenario_id']}.json").write_text(json.dumps(scenario), encoding="utf-8")
    servers = {
        "everything": reference_server(),
        "shapes": {"command": sys.executable, "args": [str(SERVERS / "result_shapes.py"), "stdio"]},
        "workflow": {"command": sys.executable, "args": [str(SERVERS / "workflow.py"), "stdio"]},
    }
    config = home / "mcp.json"
    config.write_text(json.dumps({"mcpServers": servers}), encoding="utf-8")
    return {"scenarios": folder, "mcp_config": config, "data_dir": home / "data", "max_output_bytes": MAX_OUTPUT_BYTES}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return results_home(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def app(settings: dict[str, Any]) -> Iterator[InProcessApp]:
    with in_process(settings["data_dir"].parent, **settings) as app:
        app.wait_ready()
        yield app


def steps_of(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["node_id"]: step for step in run["steps"]}


def finished_events(app: InProcessApp, run_id: str) -> dict[str, dict[str, Any]]:
    return {e["step_name"]: e for e in read_events(app.client, run_id) if e["type"] == "step_finished"}


def validator(app: InProcessApp, component: str) -> jsonschema.Draft202012Validator:
    """A validator for one component of the app's OpenAPI document."""
    openapi = app.get("/openapi.json").json()
    return jsonschema.Draft202012Validator(
        {"$ref": f"#/components/schemas/{component}", "components": openapi["components"]}
    )


def output_of(app: InProcessApp, run_id: str, step_name: str) -> Any:
    response = app.get(f"/api/runs/{run_id}/steps/{step_name}/output")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


# --- The reference server ------------------------------------------------------------------------------


def test_the_reference_servers_blocks_are_kept_whole_and_read_by_later_steps(app: InProcessApp) -> None:
    run = run_to_end(app.client, "reference")

    assert run["status"] == "success", run["message"]
    steps = steps_of(run)
    image = steps["image"]
    assert image["output"] == CAPTION
    assert [block["type"] for block in image["content"]] == ["text", "image", "text"]
    assert image["content"][1]["mimeType"] == "image/png"
    assert base64.b64decode(image["content"][1]["data"]).startswith(PNG_SIGNATURE)

    links = steps["links"]
    assert links["output"] == "Here are 2 resource links to resources available in this server:"
    assert [(b["type"], b.get("name"), b.get("uri")) for b in links["content"][1:]] == [
        ("resource_link", "Blob Resource 1", "demo://resource/dynamic/blob/1"),
        ("resource_link", "Text Resource 2", "demo://resource/dynamic/text/2"),
    ]
    resource = steps["reference"]["content"][1]
    assert resource["type"] == "resource"
    assert resource["resource"]["uri"] == "demo://resource/dynamic/text/2"
    assert resource["resource"]["text"].startswith("Resource 2: This is a plaintext resource")

    annotated = steps["annotated"]
    assert annotated["output"] == "Operation completed successfully"
    assert [block["annotations"] for block in annotated["content"]] == [
        {"priority": 0.7, "audience": ["user"]},
        {"priority": 0.5, "audience": ["user"]},
    ]
    weather = steps["weather"]
    assert weather["output"] == CHICAGO
    assert weather["content"] == [{"type": "text", "text": json.dumps(CHICAGO, separators=(",", ":"))}]

    received = steps["use"]["output"]["value"]
    assert received == {
        "caption": CAPTION,
        "mime": "image/png",
        "image": image["content"][1]["data"],
        "link_names": ["Blob Resource 1", "Text Resource 2"],
        "resource_text": resource["resource"]["text"],
        "audience": ["user"],
        "temperature": 36,
        "weather_text": json.dumps(CHICAGO, separators=(",", ":")),
        "weather_output": CHICAGO,
    }
    assert list(validator(app, "ScenarioRunResponse").iter_errors(run)) == []


def test_the_events_carry_each_result_once_and_match_their_schema(app: InProcessApp) -> None:
    run = run_to_end(app.client, "reference")
    events = read_events(app.client, run["run_id"])
    finished = {e["step_name"]: e for e in events if e["type"] == "step_finished"}

    # The weather's one text block is its structured content as JSON.stringify writes it: a reference.
    assert finished["weather"]["output"] == CHICAGO
    assert finished["weather"]["content"] == [{"type": "text", "text_from": "output", "json": "compact"}]
    # One text block whose text is the output; the image stays.
    assert finished["annotated"]["content"][0] == {
        "type": "text", "text_from": "output", "annotations": {"priority": 0.7, "audience": ["user"]}
    }
    assert finished["annotated"]["content"][1]["type"] == "image"
    # Two text blocks are joined into the output: neither is it, so both are kept.
    assert [b.get("text") for b in finished["image"]["content"]] == [*CAPTION.split("\n")[:1], None,
                                                                     *CAPTION.split("\n")[1:]]
    check = validator(app, "RunEvent")
    for event in events:
        assert list(check.iter_errors(event)) == [], event


# --- Every kind of block --------------------------------------------------------------------------------


def test_a_result_without_text_has_its_blocks_as_output(app: InProcessApp) -> None:
    run = run_to_end(app.client, "shapes")
    steps = steps_of(run)
    finished = finished_events(app, run["run_id"])

    assert run["status"] == "success", run["message"]
    links = steps["links"]
    assert links["output"] == links["content"]
    assert links["output"] == [
        {"type": "resource_link", "name": "harbour.pdf", "title": "Harbour report", "uri": "file:///srv/reports/harbour.pdf",
         "description": "The engineers' report", "mimeType": "application/pdf", "size": 48213},
        {"type": "resource_link", "name": "click me", "uri": "javascript:alert(1)", "mimeType": "text/html"},
    ]
    assert finished["links"]["content"] == {"from": "output"}
    assert output_of(app, run["run_id"], "links") == links["output"]

    embedded = steps["embedded"]["output"]
    assert embedded[0]["resource"] == {"uri": "memo://notes/1", "mimeType": "text/markdown",
                                       "text": "# Notes\n\n- <b>bold</b> & more"}
    assert base64.b64decode(embedded[1]["resource"]["blob"]) == b"%PDF-1.4 tiny"

    annotated = steps["annotated"]
    assert annotated["output"] == "For people"
    assert annotated["content"][0] == {
        "type": "text", "text": "For people",
        "annotations": {"audience": ["user"], "priority": 0.9, "lastModified": "2026-04-24T09:00:00Z"},
        "_meta": {"source": "shapes"},
    }
    assert finished["annotated"]["content"][0] == {
        "type": "text", "text_from": "output",
        "annotations": {"audience": ["user"], "priority": 0.9, "lastModified": "2026-04-24T09:00:00Z"},
        "_meta": {"source": "shapes"},
    }
    assert [b["type"] for b in steps["audio"]["content"]] == ["text", "audio"]
    assert steps["audio"]["content"][1]["mimeType"] == "audio/wav"
    assert base64.b64decode(steps["audio"]["content"][1]["data"]).startswith(b"RIFF")
    assert (steps["nothing"]["output"], steps["nothing"]["content"]) == (None, [])

    refused = steps["refused"]
    assert (refused["status"], refused["message"], refused["output"]) == ("failed", "Quota exceeded", None)
    assert refused["content"] == [{"type": "text", "text": "Quota exceeded"},
                                  {"type": "image", "data": PIXEL_PNG, "mimeType": "image/png"}]
    assert steps["each"]["output"] == [prose_of(5), prose_of(7)]
    assert steps["each"]["content"] is None

    received = steps["read"]["output"]["value"]
    assert received == {
        "first_link": "file:///srv/reports/harbour.pdf",
        "output_is_content": True,
        "links_text": None,
        "blob": embedded[1]["resource"]["blob"],
        "nothing": [],
        "summary": [{"count": 3}, {"count": 3}, "3 sources found"],
        "refused": [None, "Quota exceeded", {"code": 429}],
        "refused_image": "image/png",
        "each": [[prose_of(5), prose_of(7)], None, None, None],
    }


def test_json_text_is_recorded_once_in_each_style_and_restored_byte_for_byte(app: InProcessApp) -> None:
    run = run_to_end(app.client, "styles")
    steps = steps_of(run)
    finished = finished_events(app, run["run_id"])

    assert run["status"] == "success", run["message"]
    for style in JSON_STYLES:
        assert steps[style]["output"] == JSON_VALUE, style
        assert steps[style]["content"] == [{"type": "text", "text": json_text(style)}], style
    recorded = {style: finished[style]["content"][0] for style in JSON_STYLES}
    assert recorded == {
        "indent2": {"type": "text", "text_from": "output", "json": "indent2"},
        "indent2_ascii": {"type": "text", "text_from": "output", "json": "indent2", "ascii": True},
        "compact": {"type": "text", "text_from": "output", "json": "compact"},
        "spaced": {"type": "text", "text_from": "output", "json": "spaced"},
        "spaced_ascii": {"type": "text", "text_from": "output", "json": "spaced", "ascii": True},
        # Spaced as no style writes it: kept as the tool sent it.
        "odd": {"type": "text", "text": json_text("odd")},
    }
    # The MCP SDK's own text for a structured result: indented by 2, non-ASCII kept.
    weather = steps["weather"]
    assert weather["content"] == [{"type": "text", "text": json.dumps(JSON_VALUE, indent=2, ensure_ascii=False)}]
    assert finished["weather"]["content"] == [{"type": "text", "text_from": "output", "json": "indent2"}]


def test_a_content_too_big_is_kept_truncated_and_said_once(app: InProcessApp) -> None:
    run = run_to_end(app.client, "huge_image")
    image = steps_of(run)["image"]

    assert (run["status"], image["status"]) == ("success", "success")
    assert image["message"].startswith("Output truncated: ")
    assert "Raw content" not in image["message"]
    assert image["output"]["truncated"] is True and image["output"]["bytes"] > 4 * MIB
    assert image["output"]["preview"].startswith('[{"type":"image","data":"iVBORw')
    assert image["content"] == image["output"]


# --- One copy ---------------------------------------------------------------------------------------------


def stored_event_bytes(data_dir: Path, run_id: str, events: int) -> int:
    """The bytes of the run's events in the history, once all `events` are written."""
    database = f"file:{data_dir / 'stepline.db'}?mode=ro"

    def query(sql: str) -> Any:
        with sqlite3.connect(database, uri=True) as connection:
            return connection.execute(sql, (run_id,)).fetchone()[0]

    wait_until(lambda: query("SELECT count(*) FROM events WHERE run_id = ?") == events, 10, "the events stored")
    return query("SELECT sum(length(CAST(data AS BLOB))) FROM events WHERE run_id = ?")


def test_a_big_text_output_is_stored_and_streamed_once(app: InProcessApp, settings: dict[str, Any]) -> None:
    run = run_to_end(app.client, "prose")
    prose = prose_of(PROSE_SIZE)

    assert run["status"] == "success", run["message"]
    step = steps_of(run)["prose"]
    assert step["output"] == prose
    assert step["content"] == [{"type": "text", "text": prose}]
    stream = app.get(f"/api/runs/{run['run_id']}/events")
    events = read_events(app.client, run["run_id"])
    assert PROSE_SIZE < len(stream.content) < PROSE_SIZE + 64 * 1024
    assert PROSE_SIZE < stored_event_bytes(settings["data_dir"], run["run_id"], len(events)) < PROSE_SIZE + 64 * 1024
    assert output_of(app, run["run_id"], "prose") == prose


# --- The output route -------------------------------------------------------------------------------------


def test_the_output_route_answers_only_for_a_step_that_has_ended(app: InProcessApp) -> None:
    run_id = start_run(app.client, "slow")["run_id"]
    wait_until(lambda: steps_of(get_run(app.client, run_id)).get("wait", {}).get("status") == "running", 10,
               "the slow step to start")

    running = app.get(f"/api/runs/{run_id}/steps/wait/output")
    pending = app.get(f"/api/runs/{run_id}/steps/after/output")
    unknown_step = app.get(f"/api/runs/{run_id}/steps/nope/output")
    unknown_run = app.get("/api/runs/no-such-run/steps/wait/output")
    assert (running.status_code, running.json()) == (
        409, {"detail": f"Step 'wait' of run {run_id} has not ended (running)"})
    assert (pending.status_code, pending.json()) == (
        409, {"detail": f"Step 'after' of run {run_id} has not ended (pending)"})
    assert (unknown_step.status_code, unknown_step.json()) == (
        404, {"detail": f"Run {run_id} has no step 'nope' (steps: wait, after)"})
    assert (unknown_run.status_code, unknown_run.json()) == (404, {"detail": "Unknown run_id: no-such-run"})

    assert app.post(f"/api/runs/{run_id}/cancel").status_code == 202
    wait_finished(app.client, run_id)
    assert output_of(app, run_id, "wait") is None
    assert output_of(app, run_id, "after") is None


# --- The history ------------------------------------------------------------------------------------------


def as_recorded_before(data_dir: Path, run_id: str) -> None:
    """Rewrite the run's step_finished events as the history wrote them before results were kept once:
    each content block whole."""
    with sqlite3.connect(data_dir / "stepline.db") as connection:
        rows = connection.execute(
            "SELECT seq, data FROM events WHERE run_id = ? AND type = 'step_finished'", (run_id,)
        ).fetchall()
        for seq, data in rows:
            event = json.loads(data)
            content = event.get("content")
            if content == {"from": "output"}:
                event["content"] = event["output"]
            elif isinstance(content, list):
                event["content"] = [whole_block(block, event["output"]) for block in content]
            connection.execute("UPDATE events SET data = ? WHERE run_id = ? AND seq = ?",
                               (json.dumps(event), run_id, seq))


# How the event schema documents each `json` hint of a reference.
DOCUMENTED_STYLES: dict[str, dict[str, Any]] = {
    "indent2": {"indent": 2},
    "compact": {"separators": (",", ":")},
    "spaced": {},
}


def whole_block(block: dict[str, Any], output: Any) -> dict[str, Any]:
    """A content block as recorded before references, from the reference as documented."""
    if "text_from" not in block:
        return block
    text = output
    if "json" in block:
        text = json.dumps(output, ensure_ascii=block.get("ascii", False), **DOCUMENTED_STYLES[block["json"]])
    return {("text" if key == "text_from" else key): (text if key == "text_from" else value)
            for key, value in block.items() if key not in ("json", "ascii")}


def test_a_run_read_back_from_the_history_shows_the_same_content(tmp_path: Path) -> None:
    settings = results_home(tmp_path)
    with in_process(tmp_path, **settings) as app:
        app.wait_ready()
        runs = {scenario_id: run_to_end(app.client, scenario_id) for scenario_id in ("reference", "shapes")}
        streams = {scenario_id: app.get(f"/api/runs/{run['run_id']}/events").content
                   for scenario_id, run in runs.items()}

    with in_process(tmp_path, **settings) as app:
        for scenario_id, run in runs.items():
            assert get_run(app.client, run["run_id"]) == run
            assert app.get(f"/api/runs/{run['run_id']}/events").content == streams[scenario_id]
        assert output_of(app, runs["shapes"]["run_id"], "links") == steps_of(runs["shapes"])["links"]["output"]
        assert output_of(app, runs["reference"]["run_id"], "weather") == CHICAGO

    # Runs recorded before content was kept once (whole blocks in step_finished) read back the same.
    as_recorded_before(settings["data_dir"], runs["shapes"]["run_id"])
    with in_process(tmp_path, **settings) as app:
        assert get_run(app.client, runs["shapes"]["run_id"]) == runs["shapes"]
        finished = finished_events(app, runs["shapes"]["run_id"])
        assert finished["links"]["content"] == steps_of(runs["shapes"])["links"]["output"]
