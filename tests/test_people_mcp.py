"""MCP servers asking people, through real runs: elicitation, sampling, URL visits and roots.

The servers are tests/servers/asking.py, over stdio and streamable HTTP, in both protocol eras: one that
only speaks the 2025 handshake and asks over the open session in the middle of a call, and the same
server at protocol 2026-07-28, which asks through input-required results instead. A run is started over
the API, the request shows in the run's state while it waits, a person's answer goes through the inbox,
and the step's output is what the server received.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until
from inprocess import InProcessApp, in_process
from mcp_process import HttpMcpServer
from reference_server import reference_server
from runs import get_run, start_run, wait_finished

from web.events import AnswerAction
from web.input_rounds import MAX_INPUT_ROUNDS
from web.mcp_server import ToolCallError

SERVERS = Path(__file__).resolve().parent / "servers"
ASKING = str(SERVERS / "asking.py")
SIGN_IN = "https://login.example.com/authorize?client=asking"
BAD_SCHEMA = {"type": "object", "properties": {"when": {"type": "sometime"}}}
# The call's own deadline: shorter than a person takes to answer.
SHORT_CALL = 1.0


def v2(scenario_id: str, *steps: dict[str, Any]) -> dict[str, Any]:
    return {"schema_version": "2", "scenario_id": scenario_id, "name": scenario_id, "steps": list(steps)}


def call(tool: str, server: str, name: str = "ask", **fields: Any) -> dict[str, Any]:
    return {"name": name, "tool": tool, "server": server, **fields}


def stdio(mode: str, **fields: Any) -> dict[str, Any]:
    return {"command": sys.executable, "args": [ASKING, mode], **fields}


SCENARIOS = [
    v2("confirm", call("confirm", "legacy", input={"question": "Ship the release?"})),
    v2("confirm_http", call("confirm", "web", input={"question": "Ship it over HTTP?"})),
    v2("confirm_short", call("confirm", "legacy", input={"question": "Take your time"}, timeout_seconds=SHORT_CALL)),
    v2("confirm_expiring", call("confirm", "legacy", input={"question": "Quick!"}, wait_timeout_seconds=0.5)),
    v2("confirm_cancel", call("confirm", "watched", input={"question": "Still there?"})),
    v2("bad_form", call("ask_form", "legacy", input={"message": "When?", "schema": BAD_SCHEMA})),
    v2("write", call("write", "legacy", input={"prompt": "A motto for the team"})),
    v2("visit", call("visit", "legacy", input={"url": SIGN_IN})),
    v2("signed_in", call("signed_in", "legacy", input={})),
    v2("as_task", call("as_task", "legacy", input={})),
    v2(
        "crowd",
        call("confirm", "crowd", input={"question": "Item {{ item }}?"}, for_each="{{ [1, 2] }}", max_parallel=2),
    ),
    v2("profile", call("profile", "modern", input={})),
    v2("profile_http", call("profile", "web_modern", input={})),
    v2("profile_expiring", call("profile", "modern", input={}, wait_timeout_seconds=0.5)),
    v2("forever", call("forever", "modern", input={})),
    v2("profile_retrying", call("profile", "modern", input={}, retry={"max_attempts": 3, "backoff_seconds": 0})),
]


def write_home(
    home: Path, scenarios: list[dict[str, Any]], servers: dict[str, Any], **config: Any
) -> tuple[Path, Path]:
    folder = home / "scenarios"
    folder.mkdir()
    for scenario in scenarios:
        (folder / f"{scenario['scenario_id']}.json").write_text(json.dumps(scenario), encoding="utf-8")
    path = home / "mcp.json"
    path.write_text(json.dumps({"mcpServers": servers, **config}), encoding="utf-8")
    return folder, path


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessApp]:
    home = tmp_path_factory.mktemp("people-mcp")
    web_server = HttpMcpServer("asking.py", "streamable-http", home).start()
    modern_web = HttpMcpServer("asking.py", "streamable-http", home).start()
    servers = {
        "legacy": stdio("legacy-stdio"),
        "watched": stdio("legacy-stdio"),
        "crowd": stdio("legacy-stdio"),
        "modern": stdio("stdio"),
        # The same server over HTTP, held to the 2025 protocol, where it asks over the session.
        "web": {"url": web_server.url, "protocol": "legacy"},
        "web_modern": {"url": modern_web.url},
    }
    folder, config = write_home(home, SCENARIOS, servers)
    try:
        with in_process(home, scenarios=folder, mcp_config=config) as started:
            started.wait_ready()
            yield started
    finally:
        web_server.kill()
        modern_web.kill()


def record(app: InProcessApp, run_id: str) -> Any:
    found = app.state["runs"].held(run_id)
    assert found is not None
    return found


def pending(app: InProcessApp, run_id: str, count: int = 1) -> list[dict[str, Any]]:
    """The run's open requests, once it has `count` of them and shows itself waiting."""

    def asked() -> bool:
        run = record(app, run_id)
        assert not run.is_finished, run.state.message
        return len(run.state.pending) == count

    wait_until(asked, 20, f"{count} request(s) in run {run_id}")
    assert get_run(app.client, run_id)["status"] == "waiting"
    return list(record(app, run_id).state.pending.values())


def answer(app: InProcessApp, run_id: str, request_id: str, action: str, content: Any = None) -> None:
    async def answering() -> None:
        app.state["runner"].inbox.answer(record(app, run_id), request_id, AnswerAction(action), content, by=None)

    app.call(answering())


def finished_step(app: InProcessApp, run_id: str) -> dict[str, Any]:
    run = wait_finished(app.client, run_id)
    [step] = run["steps"]
    return {**step, "run": run}


def call_tool(app: InProcessApp, server: str, tool: str) -> Any:
    result = app.call(app.state["pool"].call(server, tool, {}, timeout=10))
    return result.structured_content["result"]


@pytest.mark.parametrize("scenario", ["confirm", "confirm_http"])
def test_a_form_the_server_asks_for_mid_call_is_answered_by_a_person(app: InProcessApp, scenario: str) -> None:
    run_id = start_run(app.client, scenario)["run_id"]
    [request] = pending(app, run_id)
    assert request["kind"] == "elicitation"
    assert request["step_name"] == "ask"
    assert request["message"].startswith("Ship")
    assert set(request["requested_schema"]["properties"]) == {"approved", "note"}
    assert request["durable"] is False

    answer(app, run_id, request["request_id"], "accept", {"approved": True, "note": "go"})
    step = finished_step(app, run_id)
    assert step["status"] == "success", step["run"]["message"]
    assert step["output"] == {"action": "accept", "content": {"approved": True, "note": "go"}}
    assert [given["action"] for given in step["answers"]] == ["accept"]


@pytest.mark.parametrize("action", ["decline", "cancel"])
def test_a_form_declined_or_cancelled_tells_the_server_so(app: InProcessApp, action: str) -> None:
    run_id = start_run(app.client, "confirm")["run_id"]
    [request] = pending(app, run_id)
    answer(app, run_id, request["request_id"], action)
    step = finished_step(app, run_id)
    assert step["status"] == "success", step["run"]["message"]
    assert step["output"] == {"action": action, "content": None}


def test_the_call_timeout_does_not_run_while_a_person_is_asked(app: InProcessApp) -> None:
    run_id = start_run(app.client, "confirm_short")["run_id"]
    [request] = pending(app, run_id)
    time.sleep(SHORT_CALL * 2)  # longer than the call may take: only the person's time has passed
    assert get_run(app.client, run_id)["status"] == "waiting"
    answer(app, run_id, request["request_id"], "accept", {"approved": False})
    step = finished_step(app, run_id)
    assert step["status"] == "success", step["run"]["message"]
    assert step["output"]["content"] == {"approved": False, "note": ""}


def test_a_request_nobody_answers_in_time_fails_the_step(app: InProcessApp) -> None:
    run_id = start_run(app.client, "confirm_expiring")["run_id"]
    step = finished_step(app, run_id)
    assert step["status"] == "failed"
    message = step["run"]["message"]
    assert "Nobody answered the elicitation request of MCP server 'legacy' within 0.5s" in message
    assert "wait_timeout_seconds" in message
    assert [given["action"] for given in step["answers"]] == ["expired"]
    assert record(app, run_id).state.pending == {}


def test_cancelling_a_waiting_run_cancels_the_servers_call(app: InProcessApp) -> None:
    run_id = start_run(app.client, "confirm_cancel")["run_id"]
    pending(app, run_id)
    response = app.post(f"/api/runs/{run_id}/cancel")
    assert response.status_code in (200, 202), response.text
    assert wait_finished(app.client, run_id)["status"] == "cancelled"
    wait_until(lambda: call_tool(app, "watched", "cancelled") == ["confirm"], 10, "the server to hear the cancel")
    assert record(app, run_id).state.pending == {}


def test_a_form_schema_no_person_can_be_shown_is_refused_to_the_server(app: InProcessApp) -> None:
    run_id = start_run(app.client, "bad_form")["run_id"]
    step = finished_step(app, run_id)
    assert step["status"] == "success", step["run"]["message"]
    error = step["output"]["error"]
    assert error.startswith("Stepline cannot show this elicitation request to a person: its requestedSchema")
    assert "'sometime' is not valid" in error
    assert step["output"]["code"] == -32602
    assert step["answers"] == []


def test_sampling_is_answered_with_what_a_person_wrote_and_a_refusal_is_the_user_rejected_error(
    app: InProcessApp,
) -> None:
    run_id = start_run(app.client, "write")["run_id"]
    [request] = pending(app, run_id)
    assert request["kind"] == "sampling"
    assert request["system_prompt"] == "Answer in one line."
    assert request["max_tokens"] == 60
    assert request["messages"] == [{"role": "user", "content": {"type": "text", "text": "A motto for the team"}}]
    answer(app, run_id, request["request_id"], "accept", {"text": "Ship small, ship often", "model": "gpt-test"})
    step = finished_step(app, run_id)
    assert step["output"] == {
        "role": "assistant",
        "text": "Ship small, ship often",
        "model": "gpt-test",
        "stop_reason": "endTurn",
    }

    run_id = start_run(app.client, "write")["run_id"]
    [request] = pending(app, run_id)
    answer(app, run_id, request["request_id"], "accept", {"text": "Written by hand"})
    assert finished_step(app, run_id)["output"]["model"] == "human"

    run_id = start_run(app.client, "write")["run_id"]
    [request] = pending(app, run_id)
    answer(app, run_id, request["request_id"], "decline")
    step = finished_step(app, run_id)
    assert step["output"]["code"] == -1
    assert "rejected" in step["output"]["error"]


def test_a_url_to_visit_is_shown_and_the_server_hears_it_was_visited(app: InProcessApp) -> None:
    run_id = start_run(app.client, "visit")["run_id"]
    [request] = pending(app, run_id)
    assert (request["kind"], request["url"], request["elicitation_id"]) == ("url", SIGN_IN, "visit-1")
    answer(app, run_id, request["request_id"], "accept")
    assert finished_step(app, run_id)["output"] == {"action": "accept"}


def test_a_call_refused_until_a_page_is_visited_is_sent_again_after_the_visit(app: InProcessApp) -> None:
    run_id = start_run(app.client, "signed_in")["run_id"]
    [request] = pending(app, run_id)
    assert (request["kind"], request["url"], request["message"]) == ("url", SIGN_IN, "Sign in to the archive")
    answer(app, run_id, request["request_id"], "accept")
    step = finished_step(app, run_id)
    assert step["status"] == "success", step["run"]["message"]
    assert step["output"] == {"result": "signed in"}


def test_a_tool_that_needs_mcp_tasks_fails_naming_stepline_limitation(app: InProcessApp) -> None:
    step = finished_step(app, start_run(app.client, "as_task")["run_id"])
    assert step["status"] == "failed"
    message = step["run"]["message"]
    assert "'as_task' on MCP server 'legacy' can only run as an MCP task" in message
    assert "Stepline does not support MCP tasks (a limitation of Stepline)" in message


def test_requests_from_concurrent_calls_on_one_session_are_refused_saying_why(app: InProcessApp) -> None:
    run_id = start_run(app.client, "crowd")["run_id"]
    run = wait_finished(app.client, run_id)
    assert run["status"] == "failed"
    text = json.dumps(run)
    assert "Stepline cannot tell which of the 2 calls in flight on 'crowd' asked" in text
    assert "a limitation of Stepline" in text
    assert record(app, run_id).state.pending == {}


@pytest.mark.parametrize("scenario", ["profile", "profile_http"])
def test_input_required_rounds_ask_people_and_send_the_call_again(app: InProcessApp, scenario: str) -> None:
    run_id = start_run(app.client, scenario)["run_id"]
    first = {request["kind"]: request for request in pending(app, run_id, 2)}
    assert set(first) == {"elicitation", "sampling"}
    assert all(request["durable"] for request in first.values())
    assert first["elicitation"]["message"] == "Who is this for?"
    assert first["sampling"]["messages"][0]["content"]["text"] == "Write a motto"
    answer(app, run_id, first["sampling"]["request_id"], "accept", {"text": "Onwards"})
    assert get_run(app.client, run_id)["status"] == "waiting"  # the round goes on once all are answered
    answer(app, run_id, first["elicitation"]["request_id"], "accept", {"name": "Ada"})

    wait_until(lambda: first["elicitation"]["request_id"] not in record(app, run_id).state.pending, 10, "round 1")
    [second] = pending(app, run_id)
    assert second["message"] == "Publish the profile?"
    answer(app, run_id, second["request_id"], "accept", {"ok": True})

    step = finished_step(app, run_id)
    assert step["status"] == "success", step["run"]["message"]
    output = step["output"]
    assert output["name"] == {"action": "accept", "content": {"name": "Ada"}}
    assert output["motto"]["content"]["text"] == "Onwards"
    assert (output["motto"]["model"], output["motto"]["role"]) == ("human", "assistant")
    assert output["roots"] == []
    assert output["confirm"] == {"action": "accept", "content": {"ok": True}}
    assert [given["kind"] for given in step["answers"]] == ["sampling", "elicitation", "elicitation"]

    events = record(app, run_id).events
    resumes = [event["resume"] for event in events if event["type"] == "input_requested"]
    assert [(resume["round"], resume["key"]) for resume in resumes] == [(1, "name"), (1, "motto"), (2, "confirm")]
    assert resumes[0]["keys"] == ["name", "motto", "where"]


def test_a_declined_sampling_request_of_an_input_required_round_fails_the_step(app: InProcessApp) -> None:
    run_id = start_run(app.client, "profile")["run_id"]
    first = {request["kind"]: request for request in pending(app, run_id, 2)}
    answer(app, run_id, first["elicitation"]["request_id"], "accept", {"name": "Ada"})
    answer(app, run_id, first["sampling"]["request_id"], "decline")
    step = finished_step(app, run_id)
    assert step["status"] == "failed"
    assert "A person declined the sampling request of MCP server 'modern' (decline)" in step["run"]["message"]


def test_a_person_declining_fails_the_step_for_good_whatever_its_retry_policy(app: InProcessApp) -> None:
    run_id = start_run(app.client, "profile_retrying")["run_id"]
    first = {request["kind"]: request for request in pending(app, run_id, 2)}
    answer(app, run_id, first["elicitation"]["request_id"], "accept", {"name": "Ada"})
    answer(app, run_id, first["sampling"]["request_id"], "decline")
    step = finished_step(app, run_id)
    assert (step["status"], step["attempt"]) == ("failed", 1)
    asked = [event for event in record(app, run_id).events if event["type"] == "input_requested"]
    assert len(asked) == 2  # the first round only: nobody was asked again


def test_an_input_required_request_nobody_answers_in_time_fails_the_step(app: InProcessApp) -> None:
    step = finished_step(app, start_run(app.client, "profile_expiring")["run_id"])
    assert step["status"] == "failed"
    message = step["run"]["message"]
    assert "Nobody answered the " in message
    assert "of MCP server 'modern' within 0.5s (wait_timeout_seconds)" in message
    assert "expired" in {given["action"] for given in step["answers"]}
    assert record(app, step["run"]["run_id"]).state.pending == {}


def test_a_server_asking_round_after_round_is_stopped_at_the_limit(app: InProcessApp) -> None:
    step = finished_step(app, start_run(app.client, "forever")["run_id"])
    assert step["status"] == "failed"
    assert (
        f"'forever' on MCP server 'modern' still asked for input after {MAX_INPUT_ROUNDS} rounds, "
        "Stepline's limit for one call"
    ) in step["run"]["message"]


def test_a_request_outside_any_step_is_refused_to_the_server_saying_why(app: InProcessApp) -> None:
    with pytest.raises(ToolCallError, match="no call that may ask a person is in flight on 'legacy'"):
        app.call(app.state["pool"].call("legacy", "confirm", {"question": "Anyone?"}, timeout=10))


def test_roots_are_the_configured_folders_and_servers_hear_when_they_change(tmp_path: Path) -> None:
    folders = {name: tmp_path / name for name in ("reports", "archive", "drafts")}
    for folder in folders.values():
        folder.mkdir()
    scenarios = [v2("roots", call("roots", "legacy", input={}))]
    folder, config = write_home(tmp_path, scenarios, {"legacy": stdio("legacy-stdio")}, roots=["archive"])
    with in_process(tmp_path, scenarios=folder, mcp_config=config, roots=[folders["reports"]]) as app:
        app.wait_ready()
        step = finished_step(app, start_run(app.client, "roots")["run_id"])
        assert step["status"] == "success", step["run"]["message"]
        assert step["output"]["result"] == [
            {"uri": folders["reports"].as_uri(), "name": "reports"},
            {"uri": folders["archive"].as_uri(), "name": "archive"},
        ]
        assert call_tool(app, "legacy", "roots_changes") == 0

        config.write_text(
            json.dumps({"mcpServers": {"legacy": stdio("legacy-stdio")}, "roots": ["drafts"]}), encoding="utf-8"
        )
        app.call(app.state["pool"].reload_config(config))
        wait_until(lambda: call_tool(app, "legacy", "roots_changes") == 1, 10, "the server to hear of new roots")
        step = finished_step(app, start_run(app.client, "roots")["run_id"])
        assert [root["name"] for root in step["output"]["result"]] == ["reports", "drafts"]

        # A reload that changes nothing tells nobody.
        app.call(app.state["pool"].reload_config(config))
        assert call_tool(app, "legacy", "roots_changes") == 1


def test_a_roots_entry_that_is_not_a_list_of_folders_is_a_config_error(tmp_path: Path) -> None:
    from web.mcp_config import McpConfigError, load_mcp_config

    _, config = write_home(tmp_path, [], {"legacy": stdio("legacy-stdio")}, roots="/srv")
    with pytest.raises(McpConfigError, match=r"roots: expected a list of folder paths"):
        load_mcp_config(config)


def test_a_tool_a_server_adds_later_is_listed_once_it_says_its_tools_changed(app: InProcessApp) -> None:
    pool = app.state["pool"]
    assert "dusk" not in {tool.name for tool in pool.known_tools()}
    app.call(pool.call("watched", "add_tool", {"name": "dusk"}, timeout=10))
    wait_until(lambda: "dusk" in {tool.name for tool in pool.known_tools()}, 10, "the new tool to be listed")
    result = app.call(pool.call("watched", "dusk", {}, timeout=10))
    assert result.structured_content == {"result": "dusk answers"}


def test_a_server_entry_speaks_auto_or_legacy_protocol(tmp_path: Path) -> None:
    from web.mcp_config import McpConfigError, load_mcp_config

    _, config = write_home(tmp_path, [], {"old": stdio("legacy-stdio", protocol="legacy"), "new": stdio("stdio")})
    loaded = load_mcp_config(config)
    assert (loaded["old"].protocol, loaded["new"].protocol) == ("legacy", "auto")
    config.write_text(json.dumps({"mcpServers": {"odd": stdio("stdio", protocol="2024")}}), encoding="utf-8")
    with pytest.raises(McpConfigError, match=r"mcpServers\.odd: .*protocol"):
        load_mcp_config(config)


def test_the_reference_server_offers_its_tools_for_clients_that_ask_people(tmp_path: Path) -> None:
    folder, config = write_home(tmp_path, [], {"everything": reference_server()})
    with in_process(tmp_path, scenarios=folder, mcp_config=config) as app:
        app.wait_ready()
        wanted = {
            "trigger-elicitation-request",
            "trigger-url-elicitation",
            "trigger-sampling-request",
            "get-roots-list",
        }

        def listed() -> bool:
            return wanted <= {tool.name for tool in app.state["pool"].known_tools()}

        wait_until(listed, 10, "the reference server's tools for clients that ask people")


def test_an_input_required_round_goes_on_after_a_restart_with_the_answers_given_before(tmp_path: Path) -> None:
    scenarios = [v2("profile", call("profile", "modern", input={}))]
    folder, config = write_home(tmp_path, scenarios, {"modern": stdio("stdio")})
    settings = {"scenarios": folder, "mcp_config": config, "data_dir": tmp_path / "data"}
    with in_process(tmp_path, **settings) as app:
        app.wait_ready()
        run_id = start_run(app.client, "profile")["run_id"]
        first = {request["kind"]: request for request in pending(app, run_id, 2)}
        answer(app, run_id, first["sampling"]["request_id"], "accept", {"text": "Before the restart"})

    with in_process(tmp_path, **settings) as app:
        app.wait_ready()
        [still_open] = pending(app, run_id)
        assert still_open["request_id"] == first["elicitation"]["request_id"]
        answer(app, run_id, still_open["request_id"], "accept", {"name": "Grace"})
        wait_until(lambda: still_open["request_id"] not in record(app, run_id).state.pending, 10, "round 1")
        [second] = pending(app, run_id)
        answer(app, run_id, second["request_id"], "accept", {"ok": False})
        step = finished_step(app, run_id)
        assert step["status"] == "success", step["run"]["message"]
        assert step["output"]["name"]["content"] == {"name": "Grace"}
        assert step["output"]["motto"]["content"]["text"] == "Before the restart"
        assert step["output"]["confirm"]["content"] == {"ok": False}
