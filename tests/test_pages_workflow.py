"""Workflows in the fold and on the pages: attempts, items, skipped steps, the recorded plan and the run's output.

The fold is tested on events made by web/events.py's constructors; the pages on real runs of the
demo MCP server (and the tests' mirror server), served in-process.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from inprocess import InProcessApp, in_process
from runs import get_run, run_to_end, start_run, wait_finished
from sse import Frame, frames, parse_text
from ui_support import HOSTILE_TEXT, demo_and_mirror_config

from web import events
from web.events import EventType, RunStatus, StepStatus
from web.run_state import RunState
from web.templating import templates
from web.views import ITEMS_SHOWN, run_view

STARTED = "2026-04-24T09:00:00.000+00:00"
LATER = "2026-04-24T09:00:05.000+00:00"
RETRY_AT = "2026-04-24T12:00:04.000+00:00"
DOMAIN = "daily.example.com"


# --- The fold ------------------------------------------------------------------------------------


def fold(*made: dict[str, Any]) -> tuple[RunState, list[dict[str, Any]]]:
    """The state of a run whose events are `made`, numbered as a run's record numbers them."""
    state = RunState(run_id="r1", scenario_id="s", input={}, created_at=STARTED)
    numbered = []
    for seq, event in enumerate(made, start=1):
        numbered.append({"type": event["type"], "run_id": "r1", "seq": seq, **event})
        state.apply(numbered[-1])
    return state, numbered


def started(name: str = "a", index: int = 0, **fields: Any) -> dict[str, Any]:
    return events.step_started(step_name=name, index=index, started_at=fields.pop("started_at", STARTED),
                               input=fields.pop("input", {"n": 1}), **fields)


def finished(name: str = "a", index: int = 0, status: StepStatus = StepStatus.SUCCESS, **fields: Any) -> dict[str, Any]:
    return events.step_finished(step_name=name, index=index, status=status,
                                started_at=fields.pop("started_at", STARTED), finished_at=LATER,
                                message=fields.pop("message", ""), **fields)


def retrying(name: str = "a", index: int = 0, attempt: int = 2, **fields: Any) -> dict[str, Any]:
    return events.step_retrying(step_name=name, index=index, attempt=attempt, max_attempts=3,
                                message=fields.pop("message", "boom"), delay_seconds=4, retry_at=RETRY_AT, **fields)


def item(index: int, status: StepStatus = StepStatus.SUCCESS, **fields: Any) -> dict[str, Any]:
    return events.step_item_finished(step_name="each", index=0, item_index=index, status=status,
                                     message=fields.pop("message", ""), output=fields.pop("output", index * 10),
                                     input={"i": index}, **fields)


PLAN = [{"name": "a", "tool": "t", "server": None, "depends_on": [], "for_each": False, "when": None,
         "on_error": "fail", "max_attempts": 3, "description": ""}]


def test_the_fold_keeps_the_plan_and_the_output() -> None:
    state, _ = fold(
        events.run_started(scenario_id="s", started_at=STARTED, plan=PLAN),
        events.run_finished(status=RunStatus.SUCCESS, finished_at=LATER, message="", output={"answer": [1, 2]}),
    )
    assert state.plan == PLAN and state.output == {"answer": [1, 2]}
    assert state.status == "success" and state.is_finished


def test_a_run_recorded_before_plans_has_none() -> None:
    old_run_started = {"type": "run_started", "scenario_id": "s", "started_at": STARTED}
    state, _ = fold(old_run_started)
    assert state.plan is None and state.status == "running"


def test_a_retry_keeps_the_first_start_and_takes_the_new_attempts_input() -> None:
    state, _ = fold(started(input={"n": 1}), retrying(message="'t' did not answer within 5s"))
    step = state.steps["a"]
    assert (step.status, step.attempt, step.max_attempts) == ("running", 2, 3)
    assert (step.retry_message, step.retry_at, step.retry_delay) == ("'t' did not answer within 5s", RETRY_AT, 4)
    state.apply({**started(input={"n": 2}, attempt=2, started_at=LATER), "seq": 3})
    assert step.started_at == STARTED and step.input == {"n": 2} and step.attempt == 2
    assert step.retry_at is None and step.retry_message is None and step.retry is None


def test_a_step_cancelled_during_its_backoff_waits_for_nothing() -> None:
    state, _ = fold(started(), retrying(), finished(status=StepStatus.CANCELLED, message="Cancelled by request"))
    step = state.steps["a"]
    assert step.status == "cancelled" and step.retry is None and step.attempt == 2
    assert step.message == "Cancelled by request"


def test_a_skipped_step_has_only_its_end_and_its_reason() -> None:
    state, _ = fold(finished("b", 1, StepStatus.SKIPPED, started_at=None, message="Condition is false: {{ x }}"))
    step = state.steps["b"]
    assert (step.status, step.started_at, step.message) == ("skipped", None, "Condition is false: {{ x }}")
    assert step.index == 1 and step.finished_at == LATER


def test_for_each_items_count_once_each_and_make_the_progress() -> None:
    state, _ = fold(
        started("each", input=None, item_count=4),
        item(1),
        retrying("each", 0, item_index=3, message="flaky"),
        item(0, StepStatus.FAILED, message="nope", output=None),
        item(1),  # told twice: still one item
    )
    step = state.steps["each"]
    assert step.is_for_each and step.item_count == 4 and step.input is None
    assert (step.items_done, step.items_failed, step.progress, step.total) == (2, 1, 2, 4)
    assert step.items[0].message == "nope" and step.items[1].output == 10 and step.items[1].input == {"i": 1}
    assert list(step.item_retries) == [3] and step.item_retries[3].message == "flaky"
    assert step.retry is None  # an item's retry is not the step's
    state.apply({**item(3, attempt=2), "seq": 6})
    assert step.item_retries == {} and step.items[3].attempt == 2 and step.items_done == 3


def test_progress_folds_as_before() -> None:
    progress = events.step_progress(step_name="a", index=0, progress=2, total=4, message="half")
    state, _ = fold(started(), progress)
    step = state.steps["a"]
    assert (step.progress, step.total, step.progress_message) == (2, 4, "half")


def test_the_fold_from_history_is_the_live_fold() -> None:
    live, numbered = fold(
        events.run_started(scenario_id="s", started_at=STARTED, plan=PLAN),
        started("each", input=None, item_count=2),
        started("a", 1),
        retrying("a", 1),
        item(0),
        started("a", 1, attempt=2),
        item(1, StepStatus.FAILED, message="x"),
        finished("each", 0, StepStatus.FAILED, message="1 of 2 items failed; item 1: x", output=[0, None]),
        finished("a", 1),
        finished("c", 2, StepStatus.SKIPPED, started_at=None, message="Not run: step 'each' failed"),
        events.run_finished(status=RunStatus.FAILED, finished_at=LATER, message="Step 'each' failed"),
    )
    rebuilt = RunState(run_id="r1", scenario_id="s", input={}, created_at=STARTED)
    rebuilt.refold(numbered)
    assert rebuilt == live
    assert [s.seq for s in live.steps.values()] == [8, 9, 10]  # each step's last event


def test_a_running_for_each_step_draws_its_counts_and_first_failures_only() -> None:
    # Drawn again as each item ends, a running step must stay small however many items it has.
    made = [events.run_started(scenario_id="s", started_at=STARTED, plan=None), started("each", input=None,
                                                                                     item_count=1000)]
    made += [item(i, StepStatus.FAILED if i % 20 == 0 else StepStatus.SUCCESS) for i in range(500)]
    state, numbered = fold(*made)
    step = run_view(state, None, len(numbered)).step(0)
    assert [i.item_index for i in step.items_shown] == [0, 20, 40, 60, 80, 100, 120, 140, 160, 180]
    state.apply({**finished("each", 0, StepStatus.FAILED), "seq": len(numbered) + 1})
    step = run_view(state, None, len(numbered) + 1).step(0)
    assert [i.item_index for i in step.items_shown] == [*range(ITEMS_SHOWN), *range(ITEMS_SHOWN, 500, 20)]
    assert step.items_hidden == 500 - ITEMS_SHOWN - len(range(ITEMS_SHOWN, 500, 20))


def test_every_status_has_its_label_and_icon() -> None:
    badge = templates.env.get_template("_macros.html").module.badge  # type: ignore[attr-defined]
    labels = {status.value: str(badge(status)) for status in [*RunStatus, *StepStatus]}
    for status, html in labels.items():
        assert f'class="badge status-{status}"' in html, html
        assert "•" not in html, f"{status} has no label of its own: {html}"
    assert "Pending" in labels["pending"] and "Not run" in labels["skipped"]


# --- The pages of real runs ----------------------------------------------------------------------

# Parallel branches, a for_each, a condition, a tolerated failure retried, nested templates, an output.
DIGEST: dict[str, Any] = {
    "schema_version": "2",
    "scenario_id": "digest_v2",
    "name": "Outlet digest",
    "description": "An outlet's stories, their sources and its statistics.",
    "input_schema": {
        "type": "object",
        "required": ["domain"],
        "properties": {"domain": {"type": "string"}, "trace": {"type": "boolean", "default": False}},
        "examples": [{"domain": DOMAIN}],
    },
    "defaults": {"timeout_seconds": 120, "idle_timeout_seconds": 30},
    "steps": [
        {"name": "outlet", "tool": "lookup_outlet", "input": {"domain": "{{ input.domain }}"}},
        {"name": "articles", "tool": "list_outlet_articles", "input": {"domain": "{{ steps.outlet.output.domain }}"}},
        {"name": "sources", "tool": "search_news_sources", "for_each": "{{ steps.articles.output.articles }}",
         "max_parallel": 3, "input": {"url": "{{ item.url }}"}},
        {"name": "stats", "tool": "outlet_stats",
         "input": {"articles": "{{ steps.articles.output.articles }}", "outlet": "{{ steps.outlet.output.name }}"}},
        {"name": "earliest", "tool": "find_earliest_source",
         "input": {"sources": [{"url": "{{ steps.articles.output.articles[0].url }}",
                                "published_at": "{{ steps.articles.output.articles[0].published_at }}"}],
                   "limit": 1}},
        {"name": "chain", "tool": "trace_citation_chain", "when": "{{ input.trace }}",
         "input": {"from_url": "{{ steps.articles.output.articles[0].url }}",
                   "to_url": "{{ steps.sources.output[0].sources[-1].url }}"}},
        {"name": "guess", "tool": "lookup_outlet", "on_error": "continue",
         "retry": {"max_attempts": 2, "backoff_seconds": 0}, "input": {"domain": "{{ input.domain }}.invalid"}},
    ],
    "output": {"outlet": "{{ steps.outlet.output.name }}", "stories": "{{ steps.sources.output | length }}",
               "chain": "{{ steps.chain.status }}"},
}

# Markup in every text a scenario and its tools can carry.
HOSTILE_FLOW: dict[str, Any] = {
    "schema_version": "2",
    "scenario_id": "hostile_v2",
    "name": "Hostile <script>window.__pwned=5</script> flow",
    "description": 'Markup: <img src=x onerror="window.__pwned=6">',
    "input_schema": {"type": "object", "properties": {"texts": {"type": "array", "items": {"type": "string"}}}},
    "steps": [
        {"name": "each", "tool": "mirror", "description": "<b>bold</b> step", "for_each": "{{ input.texts }}",
         "input": {"text": "{{ item }}"}},
        {"name": "never", "tool": "mirror", "when": "{{ (input.texts | length > 99) and '<i>x</i>' }}",
         "input": {"text": "<u>u</u>"}},
        {"name": "bad", "tool": "refuse", "on_error": "continue",
         "input": {"text": "{{ input.texts[0] }}", "really": True}},
    ],
    "output": {"first": "{{ steps.each.output[0].markup }}", "said": "{{ input.texts[0] }}"},
}

# Steps that start at once, a for_each one item at a time, and a retry that waits long: a run of it
# stays live with several steps running, then waiting to retry, until the test cancels it.
LIVE: dict[str, Any] = {
    "schema_version": "2",
    "scenario_id": "live_v2",
    "name": "Several at once",
    "input_schema": {"type": "object"},
    "steps": [
        {"name": "outlet", "tool": "lookup_outlet", "input": {"domain": DOMAIN}},
        {"name": "articles", "tool": "list_outlet_articles", "input": {"domain": DOMAIN}},
        {"name": "each", "tool": "lookup_outlet", "for_each": "{{ [1, 2, 3] }}", "max_parallel": 1,
         "input": {"domain": DOMAIN}},
        {"name": "unknown", "tool": "lookup_outlet", "retry": {"max_attempts": 3, "backoff_seconds": 600},
         "input": {"domain": "nowhere.example"}},
        {"name": "after", "tool": "lookup_outlet", "needs": ["outlet", "unknown"], "input": {"domain": DOMAIN}},
    ],
}

# A for_each over more items than the page draws; every fiftieth fails.
MANY: dict[str, Any] = {
    "schema_version": "2",
    "scenario_id": "many_v2",
    "name": "Many items",
    "input_schema": {"type": "object"},
    "steps": [
        {"name": "each", "tool": "lookup_outlet", "for_each": "{{ range(230) | list }}", "max_parallel": 16,
         "on_error": "continue",
         "input": {"domain": "{{ 'nowhere.example' if item % 50 == 0 else '" + DOMAIN + "' }}"}},
    ],
}


def write_scenarios(folder: Path, *scenarios: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for scenario in scenarios:
        (folder / f"{scenario['scenario_id']}.json").write_text(json.dumps(scenario, indent=2))
    return folder


@pytest.fixture(scope="module")
def flow_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessApp]:
    """The tests' workflows on the demo and mirror servers, tools instant."""
    folder = tmp_path_factory.mktemp("flows")
    scenarios = write_scenarios(folder / "scenarios", DIGEST, HOSTILE_FLOW, MANY)
    with in_process(folder, scenarios=scenarios, mcp_config=demo_and_mirror_config(folder)) as app:
        yield app


def page_steps(html: str) -> dict[str, str]:
    """Each step's article on a run page, by its id (`step-0`…)."""
    found = re.findall(r'(<article id="(step-\d+)".*?</article>)', html, re.S)
    return {step_id: article for article, step_id in found}


def status_of(article: str) -> str:
    match = re.search(r'data-status="(\w+)"', article)
    assert match, article[:200]
    return match.group(1)


def stream_frames(app: InProcessApp, run_id: str) -> list[Frame]:
    """The stream's frames but the graph's nodes (tests/test_graph.py)."""
    response = app.get(f"/runs/{run_id}/stream")
    assert response.status_code == 200, response.text
    return [frame for frame in frames(parse_text(response.text)) if not frame.event.startswith("node-")]


def wait_for_event(app: InProcessApp, run_id: str, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The run's first event for which `wanted` is true, waiting on the run's own event list."""

    async def follow() -> dict[str, Any]:
        record = app.state["runs"].held(run_id)
        async for event in record.follow():
            if wanted(event):
                return event
        raise AssertionError(f"run {run_id} ended without such an event")

    return app.call(follow(), timeout=30)


def test_a_workflow_run_page_shows_branches_conditions_items_retries_and_the_output(flow_app: InProcessApp) -> None:
    run = run_to_end(flow_app.client, "digest_v2", {"domain": DOMAIN})
    assert run["status"] == "success", run
    page = flow_app.get(f"/runs/{run['run_id']}").text
    steps = page_steps(page)
    assert {name: status_of(article) for name, article in steps.items()} == {
        "step-0": "success", "step-1": "success", "step-2": "success", "step-3": "success",
        "step-4": "success", "step-5": "skipped", "step-6": "failed",
    }
    # What each step waited for, linked to it.
    assert 'After <a href="#step-1">articles</a>.' in steps["step-2"]
    assert '<a href="#step-1">articles</a>, <a href="#step-2">sources</a>' in steps["step-5"]
    # The condition, and why the step did not run.
    assert "Runs if <code>{{ input.trace }}</code>" in steps["step-5"]
    assert "Condition is false: {{ input.trace }}" in steps["step-5"]
    # The for_each step: one call per article, each item there to open.
    articles = 3
    assert f"for each item ({articles} items)" in steps["step-2"]
    assert f"{articles} of {articles} items ran." in steps["step-2"]
    assert [int(i) for i in re.findall(r'<span class="item-index">item (\d+)</span>', steps["step-2"])] == [0, 1, 2]
    assert "old-lighthouse-solar-library" in steps["step-2"]  # an item's input
    # The tolerated failure, after its retry.
    assert "Attempt 2 of 2." in steps["step-6"] and "Unknown outlet: daily.example.com.invalid" in steps["step-6"]
    assert "Tolerated: the run goes on without it" in steps["step-6"]
    # The run's output, at the top.
    header = page[page.index('<header id="run-status"'):]
    header = header[: header.index("</header>")]
    assert "Finished with 1 tolerated failure(s): guess" in header
    assert "Output" in header and "Harbor Daily" in header and "skipped" in header


def test_the_live_stream_ends_on_each_steps_last_state_and_sends_no_sweep(flow_app: InProcessApp) -> None:
    run = run_to_end(flow_app.client, "digest_v2", {"domain": DOMAIN})
    sent = stream_frames(flow_app, run["run_id"])
    assert [f.id for f in sent] == [str(seq) for seq in range(1, len(sent) + 1)]  # every event, in order
    drawn = [f for f in sent if f.event.startswith("step-")]
    # A replay draws each step once, from its last event; the events before are sent as their ids alone.
    assert sorted(f.event for f in drawn) == sorted(f"step-{i}" for i in range(7))
    assert all(f.event == "message" and f.data == "" for f in sent if f not in drawn and f.event != "run-status"
               and f.event != "run-finished")
    page = page_steps(flow_app.get(f"/runs/{run['run_id']}").text)
    for frame in drawn:
        assert status_of(frame.data) == status_of(page[frame.event])
    # The skipped step had an event of its own: nothing is swept out of band at the end.
    assert sent[-1].event == "run-finished" and "hx-swap-oob" not in sent[-1].data


def test_the_scenario_page_shows_the_graph_and_how_each_step_runs(flow_app: InProcessApp) -> None:
    page = flow_app.get("/scenarios/digest_v2")
    assert page.status_code == 200
    html = page.text
    nodes = dict(re.findall(r'<li class="flow-node" id="flow-(\w+)">(.*?)</li>\s*(?=<li class="flow-node"|</ol>)',
                            html, re.S))
    assert list(nodes) == ["outlet", "guess", "articles", "sources", "stats", "earliest", "chain"]  # by stage
    assert "4 stages: the steps of a stage run at the same time" in html
    assert "Stage 1 · 2 steps at once" in html and "Stage 3 · 3 steps at once" in html
    assert "nothing: it starts with the run" in nodes["outlet"]
    assert '<a href="#flow-articles">articles</a>, <a href="#flow-sources">sources</a>' in nodes["chain"]
    assert "Runs if</dt><dd><code>{{ input.trace }}</code>" in nodes["chain"]
    assert "For each</dt><dd><code>{{ steps.articles.output.articles }}</code>, 3 at a time" in nodes["sources"]
    assert "up to 2 attempts" in nodes["guess"] and "the run goes on without it" in nodes["guess"]
    assert "per attempt" in nodes["outlet"] and "without progress" in nodes["outlet"]
    # Each argument's source: a nested template reads steps and is not fixed; a literal is.
    sources = dict(re.findall(r"<dt><code>(\w+)</code>.*?</dt>\s*<dd>(.*?)</dd>", nodes["earliest"], re.S))
    assert "fixed" not in sources["sources"] and '<a href="#flow-articles">articles</a>' in sources["sources"]
    assert "fixed" in sources["limit"]
    assert "per item" in nodes["sources"] and "{{ item.url }}" in nodes["sources"]


def test_the_page_of_many_items_draws_a_bounded_number(flow_app: InProcessApp) -> None:
    run = run_to_end(flow_app.client, "many_v2")
    assert run["status"] == "success", run
    page = flow_app.get(f"/runs/{run['run_id']}").text
    step = page_steps(page)["step-0"]
    drawn = [int(i) for i in re.findall(r'<span class="item-index">item (\d+)</span>', step)]
    assert drawn == [*range(ITEMS_SHOWN), 200]  # the first ones, then the failed ones past them
    assert "230 of 230 items ran, <strong>5 failed</strong>." in step
    assert f"{230 - ITEMS_SHOWN - 1} more items not drawn here" in step
    assert f'href="/api/runs/{run["run_id"]}/events"' in step
    assert step.count('<li class="item status-failed">') == 5
    assert "5 of 230 items failed; item 0: " in step  # the step's own message


def test_hostile_text_of_a_workflow_is_shown_as_text(flow_app: InProcessApp) -> None:
    run = run_to_end(flow_app.client, "hostile_v2", {"texts": [HOSTILE_TEXT, "<b>two</b>"]})
    assert run["status"] == "success", run
    pages = [flow_app.get(path).text for path in (f"/runs/{run['run_id']}", "/scenarios/hostile_v2")]
    pages += [f.data for f in stream_frames(flow_app, run["run_id"])]
    for html in pages:
        for markup in ("<img", "<script>window", "<b>", "<i>", "<u>"):
            assert markup not in html
    run_page, scenario_page = pages[:2]
    assert "&lt;img src=x onerror=&#34;window.__pwned=1&#34;&gt;" in run_page  # items, output, messages: text
    assert "&lt;b&gt;two&lt;/b&gt;" in run_page
    assert "Refused &lt;img" in run_page
    assert "Hostile &lt;script&gt;window.__pwned=5&lt;/script&gt; flow" in run_page
    assert "&lt;b&gt;bold&lt;/b&gt; step" in scenario_page and "&lt;i&gt;x&lt;/i&gt;" in scenario_page


def test_a_live_page_shows_steps_running_at_once_then_waiting_to_retry(tmp_path: Path) -> None:
    scenarios = write_scenarios(tmp_path / "scenarios", LIVE)
    with in_process(tmp_path, demo_delay=3, scenarios=scenarios, mcp_config=demo_and_mirror_config(tmp_path)) as app:
        run_id = start_run(app.client, "live_v2")["run_id"]
        begun: set[str] = set()

        def all_begun(event: dict[str, Any]) -> bool:
            if event["type"] == EventType.STEP_STARTED:
                begun.add(event["step_name"])
            return begun >= {"outlet", "articles", "each", "unknown"}

        wait_for_event(app, run_id, all_begun)
        steps = page_steps(app.get(f"/runs/{run_id}").text)
        assert [status_of(steps[f"step-{i}"]) for i in range(5)] == ["running"] * 4 + ["pending"]
        assert "0 of 3 items done" in steps["step-2"] and 'value="0"' in steps["step-2"]
        assert 'Waits for <a href="#step-0">outlet</a>, <a href="#step-3">unknown</a>.' in steps["step-4"]

        retry = wait_for_event(app, run_id, lambda e: e["type"] == EventType.STEP_RETRYING)
        step = page_steps(app.get(f"/runs/{run_id}").text)["step-3"]
        at = re.escape(retry["retry_at"][11:19])
        assert re.search(rf"Attempt 2 of 3, next at <time datetime=\"[^\"]+\">{at} UTC</time> — [^<]*Unknown outlet: "
                         r"nowhere\.example", step), step
        assert "<progress" not in step  # nothing is under way: the step waits
        assert status_of(step) == "running"

        response = app.post(f"/api/runs/{run_id}/cancel")
        assert response.status_code == 202, response.text
        assert wait_finished(app.client, run_id)["status"] == "cancelled"
        steps = page_steps(app.get(f"/runs/{run_id}").text)
        assert status_of(steps["step-3"]) == "cancelled" and "next at" not in steps["step-3"]
        assert status_of(steps["step-4"]) == "skipped" and "Not run: " in steps["step-4"]


# --- Runs whose scenario has changed, and runs from before plans ----------------------------------


def test_a_runs_page_shows_the_plan_it_ran_after_its_file_is_changed_or_removed(tmp_path: Path) -> None:
    folder = write_scenarios(tmp_path / "scenarios", DIGEST)
    settings = {"scenarios": folder, "mcp_config": demo_and_mirror_config(tmp_path), "data_dir": tmp_path / "data"}
    with in_process(tmp_path, **settings) as app:
        run_id = run_to_end(app.client, "digest_v2", {"domain": DOMAIN})["run_id"]
    renamed = {**DIGEST, "steps": [{"name": "only", "tool": "lookup_outlet", "input": {"domain": "x"}}], "output": None}
    write_scenarios(folder, renamed)
    with in_process(tmp_path, **settings) as app:
        steps = page_steps(app.get(f"/runs/{run_id}").text)
        assert len(steps) == len(DIGEST["steps"]) and "only" not in "".join(steps.values())
        assert ">sources</h2>" in steps["step-2"] and status_of(steps["step-5"]) == "skipped"
    (folder / "digest_v2.json").unlink()
    with in_process(tmp_path, **settings) as app:
        page = app.get(f"/runs/{run_id}").text
        steps = page_steps(page)
        assert [re.search(r'</span>(\w+)</h2>', a).group(1) for a in steps.values()] == [  # type: ignore[union-attr]
            step["name"] for step in DIGEST["steps"]
        ]
        assert "(no longer in the catalog)" in page and "Harbor Daily" in page


def test_a_run_recorded_before_plans_shows_the_scenario_and_sweeps_what_never_ran(flow_app: InProcessApp) -> None:
    # Runs recorded before this version have no plan and no events for the steps that never ran.
    registry = flow_app.state["runs"]

    async def record_old_run() -> str:
        record = registry.create("digest_v2", {"domain": DOMAIN})
        record.emit({"type": "run_started", "scenario_id": "digest_v2", "started_at": STARTED})
        record.emit(started("outlet", 0))
        record.emit(finished("outlet", 0, StepStatus.FAILED, message="Unknown outlet"))
        record.emit(events.run_finished(status=RunStatus.FAILED, finished_at=LATER, message="Step 'outlet' failed"))
        await registry.sync()
        return record.run_id

    run_id = flow_app.call(record_old_run())
    steps = page_steps(flow_app.get(f"/runs/{run_id}").text)
    assert [status_of(a) for a in steps.values()] == ["failed"] + ["skipped"] * 6
    assert "Did not run: the run ended before this step." in steps["step-1"]
    last = stream_frames(flow_app, run_id)[-1]
    swept = re.findall(r'<article id="(step-\d)"[^>]*data-status="skipped"\s+hx-swap-oob="true"', last.data)
    assert swept == [f"step-{i}" for i in range(1, 7)]
    assert get_run(flow_app.client, run_id)["status"] == "failed"
