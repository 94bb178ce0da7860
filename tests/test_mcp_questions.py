"""Questions a run asks, passed through to the MCP client that called the scenario, in both protocol eras.

A real `stepline serve` serves the scenarios at /mcp; the SDK's client calls them over streamable HTTP
with an API token ("agent"), declaring elicitation (form and URL) and sampling with callbacks that answer.
On protocol 2025 (`mode="legacy"`) Stepline asks over the open session, related to the call; on 2026-07-28
(the default) the call answers input-required and the SDK client calls the same callbacks, then sends the
call again with the answers. What is asked: an approval step, and the tests' form-asking server
(tests/servers/form_asker.py) asking for a form, a visit to a URL and a model's reply. A client that cannot
answer leaves the question to the run's page and API. Also over stdio, with `stepline mcp`.
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from conftest import StepServer
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_callers import (
    CALL_SECONDS,
    MODES,
    Answering,
    Slow,
    connected,
    in_flight,
    run_id_of,
    serve_home,
    stepline_mcp,
    text_of,
    the_run,
)
from mcp_process import asking_home
from runs import get_run, wait_finished
from sse import read_events
from test_tokens import create_token

pytestmark = pytest.mark.anyio

AGENT = {"name": "agent", "source": "token"}
ANONYMOUS = {"name": "anonymous", "source": "anonymous"}
SIGN_IN = "https://login.example.com/authorize?client=stepline-test"
COPIES_FORM = {
    "type": "object",
    "properties": {"copies": {"type": "integer", "minimum": 1}},
    "required": ["copies"],
}


def v2(scenario_id: str, *steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"schema_version": "2", "scenario_id": scenario_id, "name": scenario_id, "steps": list(steps), **extra}


def asker(tool: str, **arguments: Any) -> dict[str, Any]:
    return {"name": "ask", "tool": tool, "server": "asker", "input": arguments}


SCENARIOS = [
    v2(
        "print_run",
        {"name": "approve", "type": "approval", "message": "Print the run?", "schema": COPIES_FORM},
        output={"copies": "{{ steps.approve.output.values.copies }}", "by": "{{ steps.approve.output.answered_by }}"},
    ),
    v2(
        "print_editions",
        {
            "name": "approve",
            "type": "approval",
            "message": "Print the {{ item }} edition?",
            "schema": COPIES_FORM,
            "for_each": "{{ ['morning', 'evening'] }}",
        },
        output={"copies": "{{ steps.approve.output | map(attribute='values.copies') | list }}"},
    ),
    v2("order", asker("ask_form", message="How many copies?"), output={"got": "{{ steps.ask.output }}"}),
    v2("sign_in", asker("ask_url", message="Sign in first", url=SIGN_IN), output={"got": "{{ steps.ask.output }}"}),
    v2("motto", asker("ask_model", prompt="A motto for the team"), output={"got": "{{ steps.ask.output }}"}),
]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(scenario folder, mcpServers file, data directory) shared by the module's servers."""
    home = tmp_path_factory.mktemp("mcp-questions")
    folder, config = asking_home(home, SCENARIOS)
    return folder, config, home / "data"


@pytest.fixture(scope="module")
def token(home: tuple[Path, Path, Path]) -> str:
    return create_token(home[2], "agent", "operator")


@pytest.fixture(scope="module")
def server(home: tuple[Path, Path, Path], token: str) -> Iterator[StepServer]:
    started = serve_home(home)
    yield started
    started.stop()


async def answer_in_the_page(server: StepServer, run_id: str, content: dict[str, Any]) -> None:
    """A person answers the run's one open request with the API (anonymous: a loopback server's admin)."""
    run = get_run(server.url, run_id)
    assert run["status"] == "waiting"
    [request] = run["pending_requests"]
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as web:
        answered = await web.post(
            f"/api/runs/{run_id}/requests/{request['request_id']}", json={"action": "accept", "content": content}
        )
    assert answered.status_code == 200, answered.text


async def call(server: StepServer, token: str, mode: str, tool: str, answering: Answering) -> types.CallToolResult:
    async with connected(server, token, mode, **answering.callbacks()) as client:
        with anyio.fail_after(CALL_SECONDS):
            return await client.call_tool(tool, {})


# Approval steps


@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
async def test_an_approval_is_answered_by_the_clients_form(server: StepServer, token: str, mode: str) -> None:
    answering = Answering(types.ElicitResult(action="accept", content={"copies": 3}))
    result = await call(server, token, mode, "print_run", answering)

    [asked] = answering.asked
    assert isinstance(asked, types.ElicitRequestFormParams)
    assert asked.message == "Print the run?"
    assert asked.requested_schema["required"] == ["copies"]
    assert not result.is_error, text_of(result)
    assert result.structured_content == {"copies": 3, "by": AGENT}
    run_id = run_id_of(result)
    run = get_run(server.url, run_id)
    assert run["status"] == "success"
    assert run["steps"][0]["message"] == "Approved by agent"
    [answered] = [event for event in read_events(server.url, run_id) if event["type"] == "input_answered"]
    assert answered["action"] == "accept"
    assert answered["content"] == {"copies": 3}
    assert answered["answered_by"] == AGENT


@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
async def test_an_approval_the_client_declines_fails_the_run(server: StepServer, token: str, mode: str) -> None:
    result = await call(server, token, mode, "print_run", Answering(types.ElicitResult(action="decline")))

    assert result.is_error
    assert "failed at step 'approve'" in text_of(result)
    assert "Declined by agent" in text_of(result)
    run = get_run(server.url, run_id_of(result))
    assert run["status"] == "failed"
    assert run["steps"][0]["message"] == "Declined by agent"


@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
async def test_approvals_asked_at_once_are_each_answered_by_the_client(
    server: StepServer, token: str, mode: str
) -> None:
    class ByEdition(Answering):
        async def elicit(self, context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
            self.asked.append(params.message)
            return types.ElicitResult(action="accept", content={"copies": 1 if "morning" in params.message else 2})

    answering = ByEdition()
    result = await call(server, token, mode, "print_editions", answering)

    assert sorted(answering.asked) == ["Print the evening edition?", "Print the morning edition?"]
    assert not result.is_error, text_of(result)
    assert result.structured_content == {"copies": [1, 2]}


# An inner tool's questions


@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
async def test_a_servers_form_is_passed_to_the_client(server: StepServer, token: str, mode: str) -> None:
    answering = Answering(types.ElicitResult(action="accept", content={"copies": 2, "colour": "red"}))
    result = await call(server, token, mode, "order", answering)

    [asked] = answering.asked
    assert isinstance(asked, types.ElicitRequestFormParams)
    assert asked.message == "How many copies?"
    assert set(asked.requested_schema["properties"]) == {"copies", "colour", "note"}
    assert not result.is_error, text_of(result)
    # What the server's tool received, as it returned it.
    received = {"action": "accept", "values": {"copies": 2, "colour": "red", "note": ""}}
    assert result.structured_content == {"got": received}


@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
async def test_a_servers_form_the_client_declines_is_declined_to_the_server(
    server: StepServer, token: str, mode: str
) -> None:
    result = await call(server, token, mode, "order", Answering(types.ElicitResult(action="decline")))

    assert not result.is_error, text_of(result)
    assert result.structured_content == {"got": {"action": "decline", "values": None}}


@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
async def test_a_url_elicitation_is_forwarded_in_url_mode(server: StepServer, token: str, mode: str) -> None:
    answering = Answering(types.ElicitResult(action="accept"))
    result = await call(server, token, mode, "sign_in", answering)

    [asked] = answering.asked
    assert isinstance(asked, types.ElicitRequestURLParams)
    assert asked.url == SIGN_IN
    assert asked.message == "Sign in first"
    if mode == "legacy":  # the id is the server's own; protocol 2026-07-28 has none
        assert asked.elicitation_id == "visit-1"
    assert not result.is_error, text_of(result)
    assert result.structured_content == {"got": {"action": "accept"}}


@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
async def test_a_servers_sampling_request_is_answered_by_the_clients_model(
    server: StepServer, token: str, mode: str
) -> None:
    answering = Answering(reply="Ship small, ship often")
    result = await call(server, token, mode, "motto", answering)

    [asked] = answering.asked
    assert isinstance(asked, types.CreateMessageRequestParams)
    [message] = asked.messages
    assert isinstance(message.content, types.TextContent)
    assert message.content.text == "A motto for the team"
    assert asked.system_prompt == "Answer <b>briefly</b>."
    assert asked.max_tokens == 50
    assert not result.is_error, text_of(result)
    assert result.structured_content == {"got": {"text": "Ship small, ship often", "model": "test-model"}}


# Questions left to the page


# The progress message of a call whose question waits for a person, with why the client was not the one.
WAITING = re.compile(
    r"^step approve: waiting for a person to answer at (?P<page>\S+/runs/(?P<run_id>[0-9a-f-]{36}))"
    r"(?: \((?P<why>.+)\))?: Print the run\?$"
)


class Told:
    """The call's progress messages, as its caller is told them; `waiting` once one says a person must answer."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.waiting = anyio.Event()

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.messages.append(message or "")
        if message and WAITING.match(message):
            self.waiting.set()

    async def question(self) -> re.Match[str]:
        """The waiting line, once told."""
        with anyio.fail_after(CALL_SECONDS):
            await self.waiting.wait()
        [found] = [line for line in map(WAITING.match, self.messages) if line is not None]
        return found


@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
async def test_a_client_that_cannot_answer_is_told_where_the_question_waits(
    server: StepServer, token: str, mode: str
) -> None:
    told = Told()
    async with connected(server, token, mode) as client:  # no callbacks: no elicitation declared
        async with in_flight(client, "print_run", progress_callback=told) as results:
            found = await told.question()
            assert found["page"] == f"{server.url}/runs/{found['run_id']}"
            assert found["why"] is None
            await answer_in_the_page(server, found["run_id"], {"copies": 7})

    [result] = results
    assert not result.is_error, text_of(result)
    assert run_id_of(result) == found["run_id"]
    assert result.structured_content == {"copies": 7, "by": ANONYMOUS}
    assert told.messages[0] == "step 1/1 approve: started"
    assert told.messages[-1] == "step 1/1 approve: success"


@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
async def test_a_client_answer_that_breaks_the_form_leaves_the_question_to_the_page(
    server: StepServer, token: str, mode: str
) -> None:
    told = Told()
    answering = Answering(types.ElicitResult(action="accept", content={"copies": 0}))
    async with connected(server, token, mode, **answering.callbacks()) as client:
        async with in_flight(client, "print_run", progress_callback=told) as results:
            found = await told.question()
            assert found["why"] == "the client's answer was refused: copies: 0 is less than the minimum of 1"
            await answer_in_the_page(server, found["run_id"], {"copies": 1})

    [result] = results
    assert result.structured_content == {"copies": 1, "by": ANONYMOUS}


async def test_a_client_refusing_to_answer_over_the_session_leaves_the_question_to_the_page(
    server: StepServer, token: str
) -> None:
    async def refuse(context: Any, params: types.ElicitRequestParams) -> types.ErrorData:
        return types.ErrorData(code=types.INVALID_REQUEST, message="No person at this client")

    told = Told()
    async with connected(server, token, "legacy", elicitation_callback=refuse) as client:
        async with in_flight(client, "print_run", progress_callback=told) as results:
            found = await told.question()
            assert found["why"] == "the client could not answer: No person at this client"
            await answer_in_the_page(server, found["run_id"], {"copies": 6})

    [result] = results
    assert result.structured_content == {"copies": 6, "by": ANONYMOUS}


async def test_a_client_refusing_an_input_request_ends_its_call_and_the_run_waits(
    server: StepServer, token: str
) -> None:
    """On 2026-07-28 the SDK client itself gives the call up when a callback refuses; the run is left waiting."""

    async def refuse(context: Any, params: types.ElicitRequestParams) -> types.ErrorData:
        return types.ErrorData(code=types.INVALID_REQUEST, message="No person at this client")

    async with connected(server, token, "auto", elicitation_callback=refuse) as client:
        with anyio.fail_after(CALL_SECONDS), pytest.raises(MCPError, match="No person at this client"):
            await client.call_tool("print_run", {})

    run_id = the_run(server, "print_run", "waiting")
    await answer_in_the_page(server, run_id, {"copies": 8})
    run = wait_finished(server.url, run_id)
    assert run["status"] == "success"
    assert run["output"] == {"copies": 8, "by": ANONYMOUS}


@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
async def test_an_answer_in_the_page_wins_over_the_client_still_asking(
    server: StepServer, token: str, mode: str
) -> None:
    slow = Slow()
    async with connected(server, token, mode, **slow.callbacks()) as client:
        async with in_flight(client, "print_run") as results:
            await slow.shown.wait()
            run_id = the_run(server, "print_run", "waiting")
            await answer_in_the_page(server, run_id, {"copies": 5})
            if mode == "legacy":
                # Over the open session the client's question is withdrawn (notifications/cancelled).
                await slow.withdrawn.wait()
            else:
                slow.let_answer.set()  # its late answer is dropped: the first answer stands

    [result] = results
    assert not result.is_error, text_of(result)
    assert result.structured_content == {"copies": 5, "by": ANONYMOUS}
    events = read_events(server.url, run_id)
    assert [event["answered_by"] for event in events if event["type"] == "input_answered"] == [ANONYMOUS]


# Over stdio


@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
async def test_over_stdio_an_approval_is_answered_by_the_local_client(
    home: tuple[Path, Path, Path], tmp_path: Path, mode: str
) -> None:
    folder, config, _ = home
    command = stepline_mcp(folder, config, tmp_path / "data")
    answering = Answering(types.ElicitResult(action="accept", content={"copies": 4}))
    async with Client(command, mode=mode, **answering.callbacks()) as client:
        with anyio.fail_after(CALL_SECONDS):
            result = await client.call_tool("print_run", {})
        assert not result.is_error, text_of(result)
        local = {"name": getpass.getuser(), "source": "local"}
        assert result.structured_content == {"copies": 4, "by": local}
        read = await client.read_resource(f"stepline://runs/{run_id_of(result)}")

    [asked] = answering.asked
    assert isinstance(asked, types.ElicitRequestFormParams)
    [contents] = read.contents
    assert isinstance(contents, types.TextResourceContents)
    assert '"status":"success"' in contents.text.replace(" ", "")
