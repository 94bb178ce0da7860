"""Who may use `/mcp`: the API's bearer tokens (made with the real `stepline token create`), a 401 that points
an MCP client at Stepline's protected-resource metadata, tools listed only to those who may run them, and
pages of other sites refused.

One real `stepline serve` for the module, bound to every address (so a request naming nobody is refused) and
under a root path, with the shipped scenarios and `guarded`: one whose `access.run` names `release-bot` alone.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import mcp_types as types
import pytest
from conftest import PROJECT_ROOT, StepServer, start_server
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from test_tokens import create_token

pytestmark = pytest.mark.anyio

PREFIX = "/stepline"
PUBLIC_URL = "https://portal.example.com/stepline"  # STEPLINE_PUBLIC_URL: the proxy in front of the server
CLIENT = types.Implementation(name="stepline-tests", version="3.1")
ERAS = ["legacy", "auto"]  # the 2025 initialize handshake; 2026-07-28, negotiated
PROFILE = "outlet_profile_v1"  # input {"domain": ...}
NEWS = "news_source_discovery_v1"  # input {"url": ...}
GUARDED = "guarded"  # outlet_profile_v1 that only release-bot may run
SHIPPED = {path.stem for path in (PROJECT_ROOT / "scenarios").glob("*.json")}
DOMAIN = {"domain": "daily.example.com"}
ARTICLE = "https://signal.example/culture/lighthouse-library-explainer"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "curl", "version": "8"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}
# The tokens made for the module: name → (role, extra `token create` arguments).
TOKENS = {
    "admin-ci": ("admin", ()),
    "ci": ("operator", ()),
    "outlet-bot": ("operator", ("--scenario", PROFILE)),
    "release-bot": ("operator", ()),
    "watcher": ("viewer", ()),
}


@dataclass
class Guarded:
    server: StepServer
    secrets: dict[str, str]

    @property
    def mcp(self) -> str:
        return f"{self.server.url}/mcp"

    def bearer(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets[name]}"}

    def api(self, path: str, token: str) -> Any:
        response = httpx.get(f"{self.server.url}/api{path}", headers=self.bearer(token), timeout=10)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    home = tmp_path_factory.mktemp("mcp-access")
    folder = home / "scenarios"
    shutil.copytree(PROJECT_ROOT / "scenarios", folder, ignore=shutil.ignore_patterns("__*"))
    scenario = json.loads((folder / f"{PROFILE}.json").read_text())
    scenario.update(scenario_id=GUARDED, name="Guarded profile", access={"run": ["release-bot"]})
    (folder / f"{GUARDED}.json").write_text(json.dumps(scenario))
    data_dir = home / "data"
    secrets = {name: create_token(data_dir, name, role, *extra) for name, (role, extra) in TOKENS.items()}
    args = ("--host", "0.0.0.0", "--data-dir", str(data_dir), "--scenarios", str(folder), "--root-path", PREFIX)
    server = start_server(home, *args, env={"STEPLINE_PUBLIC_URL": PUBLIC_URL})
    yield Guarded(server, secrets)
    server.stop()


@contextlib.asynccontextmanager
async def connected(guarded: Guarded, token: str, mode: str) -> AsyncIterator[Client]:
    async with create_mcp_http_client(headers=guarded.bearer(token)) as http:
        transport = streamable_http_client(guarded.mcp, http_client=http)
        async with Client(transport, mode=mode, client_info=CLIENT, read_timeout_seconds=60) as client:
            yield client


async def tool_names(client: Client) -> set[str]:
    return {tool.name for tool in (await client.list_tools()).tools}


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


def run_id_of(result: types.CallToolResult) -> str:
    [uri] = [b.uri for b in result.content if isinstance(b, types.ResourceLink) and b.uri.startswith("stepline:")]
    return uri.removeprefix("stepline://runs/")


# Who is refused, and how they learn where to go


def test_without_a_token_the_401_points_at_the_protected_resource_metadata(guarded: Guarded) -> None:
    response = httpx.post(guarded.mcp, json=INITIALIZE, headers=MCP_HEADERS, timeout=10)

    assert response.status_code == 401
    # Where clients reach Stepline (its public URL), not where the proxy reaches it.
    metadata = f"{PUBLIC_URL}/.well-known/oauth-protected-resource/mcp"
    assert response.headers["www-authenticate"] == f'Bearer resource_metadata="{metadata}"'
    assert response.json()["error_description"].startswith("Sign-in required: send 'Authorization: Bearer <token>'")
    # What the proxy in front makes of that address.
    document = httpx.get(metadata.replace(PUBLIC_URL, guarded.server.url), timeout=10)
    assert document.status_code == 200
    assert document.json()["resource"] == f"{PUBLIC_URL}/mcp"
    assert document.json()["bearer_methods_supported"] == ["header"]


@pytest.mark.parametrize("secret", ["stl_" + "A" * 43, "hunter2"], ids=["forged", "not a stepline token"])
def test_a_bad_token_is_401_invalid_token(guarded: Guarded, secret: str) -> None:
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {secret}"}
    response = httpx.post(guarded.mcp, json=INITIALIZE, headers=headers, timeout=10)

    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer resource_metadata="') and challenge.endswith(', error="invalid_token"')
    assert response.json()["error"] == "invalid_token"


def test_a_page_of_another_site_is_refused(guarded: Guarded) -> None:
    headers = {**MCP_HEADERS, **guarded.bearer("admin-ci")}
    evil = {**headers, "Origin": "http://evil.example"}
    posted = httpx.post(guarded.mcp, json=INITIALIZE, headers=evil, timeout=10)
    assert posted.status_code == 403
    assert posted.text.startswith("Refused: this request came from another site.")
    # The event stream too (a GET, which the app's forgery check lets through elsewhere).
    streamed = httpx.get(guarded.mcp, headers={**evil, "Accept": "text/event-stream"}, timeout=10)
    assert streamed.status_code == 403
    assert streamed.text.startswith("Refused: this request came from another site.")

    own = httpx.post(guarded.mcp, json=INITIALIZE, headers={**headers, "Origin": guarded.server.url}, timeout=10)
    assert own.status_code == 200, own.text


def test_a_session_answers_only_the_token_that_opened_it(guarded: Guarded) -> None:
    opened = httpx.post(guarded.mcp, json=INITIALIZE, headers={**MCP_HEADERS, **guarded.bearer("ci")}, timeout=10)
    assert opened.status_code == 200, opened.text
    session = {"Mcp-Session-Id": opened.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}

    def tools_list(token: str) -> httpx.Response:
        headers = {**MCP_HEADERS, **session, **guarded.bearer(token)}
        return httpx.post(guarded.mcp, json=listing, headers=headers, timeout=10)

    # Another token that learnt the session's id (and could read its questions and progress) is not let in.
    stolen = tools_list("admin-ci")
    assert stolen.status_code == 404
    assert stolen.json()["error"]["message"] == "Session not found"
    assert tools_list("ci").status_code == 200


# What each caller is offered


@pytest.mark.parametrize("mode", ERAS)
async def test_a_token_limited_to_a_scenario_is_offered_that_tool_alone(guarded: Guarded, mode: str) -> None:
    async with connected(guarded, "outlet-bot", mode) as client:
        assert await tool_names(client) == {PROFILE}
        with pytest.raises(MCPError) as refused:
            await client.call_tool(NEWS, {"url": ARTICLE})
        result = await client.call_tool(PROFILE, DOMAIN)

    assert refused.value.error.code == types.INVALID_PARAMS
    assert refused.value.error.message == f"Unknown tool: {NEWS}"
    assert not result.is_error, text_of(result)
    run_id = run_id_of(result)
    pages = [b.uri for b in result.content if isinstance(b, types.ResourceLink) and b.mime_type == "text/html"]
    assert pages == [f"{PUBLIC_URL}/runs/{run_id}"]
    snapshot = guarded.api(f"/runs/{run_id}", "outlet-bot")
    assert snapshot["started_by"] == {"name": "outlet-bot", "source": "token", "client": "stepline-tests 3.1"}
    listed = {run["run_id"]: run for run in guarded.api("/runs", "outlet-bot")["runs"]}
    assert listed[run_id]["started_by"] == "outlet-bot"


@pytest.mark.parametrize("mode", ERAS)
async def test_runs_of_scenarios_a_caller_may_not_see_are_not_resources_to_it(guarded: Guarded, mode: str) -> None:
    async with connected(guarded, "ci", mode) as client:
        news = run_id_of(await client.call_tool(NEWS, {"url": ARTICLE}))
        profile = run_id_of(await client.call_tool(PROFILE, DOMAIN))
    async with connected(guarded, "outlet-bot", mode) as client:
        listed = {str(resource.uri) for resource in (await client.list_resources()).resources}
        read = await client.read_resource(f"stepline://runs/{profile}")
        with pytest.raises(MCPError) as refused:
            await client.read_resource(f"stepline://runs/{news}")

    assert f"stepline://runs/{profile}" in listed and f"stepline://runs/{news}" not in listed
    [content] = read.contents
    assert isinstance(content, types.TextResourceContents) and json.loads(content.text)["run_id"] == profile
    assert refused.value.error.message == f"Unknown resource: stepline://runs/{news}: no such run"


@pytest.mark.parametrize("mode", ERAS)
async def test_a_scenario_whose_access_excludes_the_caller_is_not_offered(guarded: Guarded, mode: str) -> None:
    async with connected(guarded, "ci", mode) as client:
        offered = await tool_names(client)
        with pytest.raises(MCPError) as refused:
            await client.call_tool(GUARDED, DOMAIN)
    async with connected(guarded, "release-bot", mode) as client:
        allowed = await tool_names(client)
        result = await client.call_tool(GUARDED, DOMAIN)

    assert offered == SHIPPED, "every scenario but the guarded one"
    assert GUARDED in {s["id"] for s in guarded.api("/scenarios", "ci")}, "which ci may still see"
    assert refused.value.error.message == f"Unknown tool: {GUARDED}"
    assert allowed == SHIPPED | {GUARDED}
    assert not result.is_error, text_of(result)
    assert guarded.api(f"/runs/{run_id_of(result)}", "release-bot")["started_by"]["name"] == "release-bot"


@pytest.mark.parametrize("mode", ERAS)
async def test_a_viewer_is_offered_no_tool_and_may_call_none(guarded: Guarded, mode: str) -> None:
    async with connected(guarded, "watcher", mode) as client:
        offered = await tool_names(client)
        with pytest.raises(MCPError) as refused:
            await client.call_tool(PROFILE, DOMAIN)
        # Runs stay readable to a viewer.
        await client.list_resources()

    assert offered == set()
    assert refused.value.error.message == f"Unknown tool: {PROFILE}"


async def test_a_caller_who_may_not_run_a_scenario_cannot_go_on_with_its_call(guarded: Guarded) -> None:
    """A request_state naming a run the caller may see, sent with answers, by one who may not run it."""
    async with connected(guarded, "ci", "auto") as client:
        run_id = run_id_of(await client.call_tool(PROFILE, DOMAIN))
    state = json.dumps({"run_id": run_id, "after": 0})
    async with connected(guarded, "watcher", "auto") as client:
        with pytest.raises(MCPError) as refused:
            answers = {"r1": types.ElicitResult(action="decline")}
            await client.session.call_tool(PROFILE, DOMAIN, request_state=state, input_responses=answers)
    assert refused.value.error.code == types.INVALID_PARAMS
    assert refused.value.error.message == f"Unknown tool: {PROFILE}"


async def test_an_admin_is_offered_every_scenario(guarded: Guarded) -> None:
    async with connected(guarded, "admin-ci", "auto") as client:
        assert await tool_names(client) == SHIPPED | {GUARDED}
