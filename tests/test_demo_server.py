"""The bundled demo MCP server: a real process over stdio or HTTP, and the shipped scenarios run on it by Stepline."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import pytest
from conftest import DEMO_TOOLS
from inprocess import InProcessApp
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from runs import run_to_end

from web.demo.server import load_corpus, related_articles

ROOT = Path(__file__).resolve().parents[1]
NEWS = "news_source_discovery_v1"
OUTLET = "outlet_profile_v1"

QUERY_URL = "https://signal.example/culture/lighthouse-library-explainer"
ORIGIN_URL = "https://notes.example.net/2024/03/05/lighthouse-cottage-reading-room"
# Looks earliest when timestamps are compared as strings (2024-03-04T23:50-08:00), but is later in UTC.
DECOY_URL = "https://gazette.example.org/coast/2024/03/04/port-alder-lighthouse-library"



# Seconds each demo call takes in the shared session: long enough for progress to come in steps.
DELAY = 0.05


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Module-wide, so that one demo server session serves every test of the module."""
    return "asyncio"


@asynccontextmanager
async def demo_session(delay: float = 0) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "web.demo"],
        env={"STEPLINE_DEMO_DELAY": str(delay), "PATH": os.environ.get("PATH", "")},
        cwd=ROOT,
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


@pytest.fixture(scope="module")
async def demo() -> AsyncIterator[ClientSession]:
    async with demo_session(delay=DELAY) as session:
        yield session


def examples(app: InProcessApp, scenario_id: str) -> list[dict[str, Any]]:
    response = app.get(f"/api/scenarios/{scenario_id}")
    assert response.status_code == 200, response.text
    return response.json()["input_schema"]["examples"]


def outputs_of(run: dict[str, Any]) -> dict[str, Any]:
    """Each succeeded step's output, by step name, from a finished run's snapshot."""
    return {step["node_id"]: step["output"] for step in run["steps"] if step["status"] == "success"}


def run_ok(app: InProcessApp, scenario_id: str, run_input: dict[str, Any]) -> dict[str, Any]:
    run = run_to_end(app.client, scenario_id, run_input)
    assert run["status"] == "success", run
    return outputs_of(run)


def is_reserved(host: str) -> bool:
    bases = ("example.com", "example.org", "example.net")
    return host in bases or host.endswith(tuple(f".{b}" for b in bases)) or host.endswith(".example")


def test_corpus_is_fictional_and_consistent() -> None:
    corpus = load_corpus()
    assert 12 <= len(corpus.articles) <= 20
    assert 2 <= len(corpus.stories) <= 3
    for article in corpus.articles.values():
        assert is_reserved(article.domain), article.url
        for cited_url in article.cites:
            cited = corpus.articles[cited_url]
            assert cited.story == article.story, (article.url, cited_url)
            assert cited.published < article.published, (article.url, cited_url)
        # Searching from any article finds exactly its story.
        found = {source.url for source in related_articles(corpus, article)}
        assert found == {a.url for a in corpus.articles.values() if a.story == article.story}, article.url


@pytest.mark.anyio
async def test_lists_tools_with_described_inputs_and_typed_outputs(demo: ClientSession) -> None:
    tools = {tool.name: tool for tool in (await demo.list_tools()).tools}
    assert DEMO_TOOLS <= set(tools)
    for tool in tools.values():
        assert tool.description
        assert tool.output_schema is not None, tool.name
        for name, prop in tool.input_schema["properties"].items():
            assert prop.get("description"), f"{tool.name}.{name}"


def test_news_scenario_traces_the_story_to_its_earliest_source(demo_app: InProcessApp) -> None:
    assert examples(demo_app, NEWS)[0] == {"url": QUERY_URL}
    outputs = run_ok(demo_app, NEWS, {"url": QUERY_URL})

    sources = outputs["search_news_sources"]["sources"]
    assert {s["url"] for s in sources} >= {QUERY_URL, ORIGIN_URL, DECOY_URL}
    # A string comparison would pick the decoy; the tool must compare instants.
    assert min(sources, key=lambda s: s["published_at"])["url"] == DECOY_URL
    earliest = outputs["pick_earliest"]
    assert [e["url"] for e in earliest["earliest"]] == [ORIGIN_URL]
    assert earliest["considered"] == len(sources)
    trace = outputs["trace_citations"]
    assert trace["found"] is True
    assert (trace["chain"][0]["url"], trace["chain"][-1]["url"]) == (QUERY_URL, ORIGIN_URL)
    assert trace["hops"] == 3


@pytest.mark.anyio
async def test_every_news_example_reaches_a_first_hand_report(demo_app: InProcessApp, demo: ClientSession) -> None:
    runs = {example["url"]: run_ok(demo_app, NEWS, example) for example in examples(demo_app, NEWS)}
    assert len(runs) > 1
    for url, outputs in runs.items():
        origin = outputs["pick_earliest"]["earliest"][0]["url"]
        article = await demo.call_tool("fetch_article", {"url": origin})
        assert article.structured_content["cites"] == [], url
        assert outputs["trace_citations"]["found"] is True, url


def test_outlet_scenario_profiles_examples_and_fails_cleanly_for_unknown_domain(demo_app: InProcessApp) -> None:
    for example in examples(demo_app, OUTLET):
        outputs = run_ok(demo_app, OUTLET, example)
        stats = outputs["coverage_stats"]
        assert stats["article_count"] == outputs["lookup_outlet"]["article_count"] > 0, example

    run = run_to_end(demo_app.client, OUTLET, {"domain": "nowhere.example.com"})

    assert run["status"] == "failed"
    assert outputs_of(run) == {}
    assert [(s["node_id"], s["status"]) for s in run["steps"]] == [
        ("lookup_outlet", "failed"),
        ("list_articles", "skipped"),
        ("coverage_stats", "skipped"),
    ]
    assert "Unknown outlet: nowhere.example.com" in run["steps"][0]["message"]
    assert {s["message"] for s in run["steps"][1:]} == {"Not run: step 'lookup_outlet' failed"}


def test_harbor_daily_stats(demo_app: InProcessApp) -> None:
    outputs = run_ok(demo_app, OUTLET, {"domain": "daily.example.com"})
    assert outputs["lookup_outlet"]["name"] == "Harbor Daily"
    published = [a["published_at"] for a in outputs["list_articles"]["articles"]]
    assert published == sorted(published, key=datetime.fromisoformat, reverse=True)
    stats = outputs["coverage_stats"]
    assert (stats["article_count"], len(stats["stories"]), stats["times_cited"]) == (3, 3, 3)
    assert stats["summary"].startswith("Harbor Daily published 3 articles on 3 stories")


@pytest.mark.anyio
async def test_unknown_article_is_a_tool_error_naming_the_url(demo: ClientSession) -> None:
    url = "https://daily.example.com/news/no-such-article"
    result = await demo.call_tool("fetch_article", {"url": url})
    assert result.is_error
    assert f"Unknown article: {url}" in result.content[0].text


@pytest.mark.anyio
async def test_archive_has_copies_of_some_articles_only(demo: ClientSession) -> None:
    corpus = load_corpus()
    assert 0 < len(corpus.archive) < len(corpus.articles)
    kept = next(iter(corpus.archive))
    missing = next(url for url in corpus.articles if url not in corpus.archive)

    found = await demo.call_tool("check_archive", {"url": f" {kept}/"})
    refused = await demo.call_tool("check_archive", {"url": missing})

    assert not found.is_error
    copy = found.structured_content
    assert (copy["url"], copy["title"]) == (kept, corpus.articles[kept].title)
    assert datetime.fromisoformat(copy["captured_at"]) > corpus.articles[kept].published
    assert urlsplit(copy["snapshot_url"]).hostname == "archive.example"
    assert refused.is_error
    assert f"No archived copy of {missing}" in refused.content[0].text


@pytest.mark.anyio
async def test_brief_is_the_title_then_one_bullet_per_point(demo: ClientSession) -> None:
    points = ["Three articles", "  ", "Cited\n3 times"]

    result = await demo.call_tool("write_brief", {"title": "Harbor  Daily", "points": points})

    assert not result.is_error
    assert result.structured_content == {"text": "Harbor Daily\n- Three articles\n- Cited 3 times", "points": 2}


@pytest.mark.anyio
async def test_calls_report_progress_while_they_run(demo: ClientSession) -> None:
    updates: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total, message))

    result = await demo.call_tool("search_news_sources", {"url": QUERY_URL}, progress_callback=on_progress)

    assert not result.is_error
    assert len(updates) >= 4
    progress = [p for p, _, _ in updates]
    assert progress == sorted(progress)
    assert all(total == updates[-1][1] and message for _, total, message in updates)
    assert updates[-1][0] == updates[-1][1]
    assert updates[-1][2] == "Found 7 articles on this story"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"demo server exited early: {process.stderr.read().decode()}")  # type: ignore[union-attr]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            await anyio.sleep(0.1)
    raise AssertionError(f"demo server did not listen on port {port} within {timeout}s")


@pytest.mark.anyio
async def test_serves_streamable_http() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "web.demo", "--transport", "streamable-http", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "STEPLINE_DEMO_DELAY": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        await wait_for_port(port, process)
        async with (
            streamable_http_client(f"http://127.0.0.1:{port}/mcp") as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            result = await session.call_tool("lookup_outlet", {"domain": "https://Daily.Example.com/news"})
            missing = await session.call_tool("lookup_outlet", {"domain": "nowhere.example.com"})
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()

    assert not result.is_error
    assert result.structured_content["name"] == "Harbor Daily"
    assert urlsplit(result.structured_content["home_url"]).hostname == "daily.example.com"
    assert missing.is_error
    assert "Unknown outlet: nowhere.example.com" in missing.content[0].text
