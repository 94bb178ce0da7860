"""The shipped workflow scenarios and every example of docs/scenarios.md, run on the bundled demo server.

The expected values come from the demo corpus (web/demo/corpus.json), never from a recorded run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from conftest import PROJECT_ROOT, wait_until
from inprocess import InProcessApp, in_process
from runs import get_run, run_to_end, start_run, wait_finished
from sse import read_events

from web.demo.server import Corpus, CorpusArticle, citation_path, load_corpus

DOC = PROJECT_ROOT / "docs" / "scenarios.md"
# A fenced block: its info string and its text.
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
# Doc examples of load errors are named so; every other example must load and run.
BROKEN_SUFFIX = "_broken"
ORIGINS = "outlet_story_origins_v2"
CHECK = "story_origin_check_v2"
APPROVAL = "outlet_brief_approval_v2"

Run = dict[str, Any]
Events = list[dict[str, Any]]


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return load_corpus()


# --- Reading the doc ----------------------------------------------------------------------------


def doc_blocks() -> list[tuple[str, str]]:
    return [(match[1], match[2]) for match in FENCE.finditer(DOC.read_text(encoding="utf-8"))]


def doc_scenarios() -> list[dict[str, Any]]:
    """The JSON blocks that are whole scenarios (fragments, such as one `retry` object, are not)."""
    found = []
    for info, text in doc_blocks():
        if info != "json":
            continue
        value = json.loads(text)
        if isinstance(value, dict) and "schema_version" in value and "steps" in value:
            found.append(value)
    return found


def runnable() -> list[dict[str, Any]]:
    return [s for s in doc_scenarios() if not s["scenario_id"].endswith(BROKEN_SUFFIX)]


def broken() -> list[dict[str, Any]]:
    return [s for s in doc_scenarios() if s["scenario_id"].endswith(BROKEN_SUFFIX)]


def write_scenarios(folder: Path, scenarios: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for scenario in scenarios:
        (folder / f"{scenario['scenario_id']}.json").write_text(json.dumps(scenario, indent=2), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def doc_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessApp]:
    """An app serving the doc's runnable examples alone, as a reader who pasted them into scenarios/ would."""
    root = tmp_path_factory.mktemp("doc-examples")
    with in_process(root, scenarios=write_scenarios(root / "scenarios", runnable())) as app:
        yield app


# --- Looking at a run ---------------------------------------------------------------------------


def steps_of(run: Run) -> dict[str, dict[str, Any]]:
    return {step["node_id"]: step for step in run["steps"]}


def statuses(run: Run) -> dict[str, str]:
    return {name: step["status"] for name, step in steps_of(run).items()}


def of_type(events: Events, kind: str, step: str | None = None) -> Events:
    return [e for e in events if e["type"] == kind and (step is None or e.get("step_name") == step)]


def plan_of(events: Events) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in of_type(events, "run_started")[0]["plan"]}


def run_with_events(app: InProcessApp, scenario_id: str, run_input: dict[str, Any]) -> tuple[Run, Events]:
    run_id = start_run(app.client, scenario_id, run_input)["run_id"]
    events = read_events(app.client, run_id)
    return wait_finished(app.client, run_id), events


def example_inputs(app: InProcessApp, scenario_id: str) -> list[dict[str, Any]]:
    response = app.get(f"/api/scenarios/{scenario_id}")
    assert response.status_code == 200, response.text
    return response.json()["input_schema"]["examples"]


# --- What the corpus says -----------------------------------------------------------------------


def outlet_articles(corpus: Corpus, domain: str) -> list[CorpusArticle]:
    """An outlet's articles, newest first, as list_outlet_articles gives them by default."""
    return sorted((a for a in corpus.articles.values() if a.domain == domain), key=lambda a: a.published, reverse=True)


def first_report(corpus: Corpus, article: CorpusArticle) -> CorpusArticle:
    """The earliest article of the story, compared as instants."""
    return min((a for a in corpus.articles.values() if a.story == article.story), key=lambda a: a.published)


# --- The doc's examples -------------------------------------------------------------------------


@dataclass(frozen=True)
class Expectation:
    """What the doc says a run of the example's first input does."""

    status: str = "success"
    check: Callable[[Run, Events, Corpus], None] | None = None


def v1_chain(run: Run, events: Events, corpus: Corpus) -> None:
    stats = steps_of(run)["stats"]["output"]
    assert stats["article_count"] == len(outlet_articles(corpus, "daily.example.com"))
    assert stats["summary"].startswith("Harbor Daily published")
    assert [e["depends_on"] for e in plan_of(events).values()] == [[], ["outlet"], ["articles"]]


def expressions(run: Run, events: Events, corpus: Corpus) -> None:
    latest = outlet_articles(corpus, "signal.example")[:2]
    assert steps_of(run)["stats"]["input"]["outlet"] == "Metro Signal, latest two"
    output = run["output"]
    assert output["article_count"] == 2
    # One article each: outlet_stats orders equally covered stories by id.
    story_ids = sorted(a.story for a in latest)
    assert output["stories"] == json.dumps(story_ids, separators=(",", ":"))
    title, stories, first_title, literal = output["brief_lines"]
    assert title.startswith("Metro Signal, latest two published 2 articles")
    assert stories == "- Stories: " + "; ".join(corpus.stories[story].title for story in story_ids)
    assert first_title == f"- {latest[0].title}"
    assert literal == "- Templates look like {{ this }}."


def optional_input(run: Run, events: Events, corpus: Corpus) -> None:
    assert steps_of(run)["articles"]["input"] == {"domain": "ledger.example.org"}  # newest_first left out
    assert run["output"] == [a.published_at for a in outlet_articles(corpus, "ledger.example.org")]


def missing_argument(run: Run, events: Events, corpus: Corpus) -> None:
    outlet = steps_of(run)["outlet"]
    assert outlet["status"] == "failed"
    assert outlet["message"] == "required argument 'domain' is missing: {{ input.outlet_domain }} is undefined"
    assert run["output"] is None


def parallel(run: Run, events: Events, corpus: Corpus) -> None:
    plan = plan_of(events)
    assert plan["first"]["depends_on"] == plan["second"]["depends_on"] == []
    assert plan["articles"]["depends_on"] == plan["compare"]["depends_on"] == ["first", "second"]
    older = min((corpus.outlets[d] for d in ("daily.example.com", "gazette.example.org")), key=lambda o: o.founded)
    assert run["output"] == {
        "older": older.name,
        "articles_of_first": len(outlet_articles(corpus, "daily.example.com")),
    }


def when(run: Run, events: Events, corpus: Corpus) -> None:
    transit = corpus.articles["https://transit.example.com/notices/2024-09-02-tram-pilot-paused"]
    assert transit.cites == []
    cited = steps_of(run)["cited"]
    assert cited["status"] == "skipped"
    assert cited["message"] == "Condition is false: {{ steps.article.output.cites | length > 0 }}"
    assert of_type(events, "step_started", "cited") == []
    assert run["output"] == {"source": transit.title, "cites_another": False}


def tolerated_failure(run: Run, events: Events, corpus: Corpus) -> None:
    url = "https://signal.example/city/kestrel-tram-pilot-paused"
    assert url not in corpus.archive
    assert statuses(run) == {"article": "success", "archive": "failed", "brief": "success"}
    assert f"No archived copy of {url}" in steps_of(run)["archive"]["message"]
    assert run["message"] == "Finished with 1 tolerated failure(s): archive"
    assert run["output"]["archived"] is False
    assert run["output"]["brief"].splitlines() == [
        corpus.articles[url].title,
        f"- Published {corpus.articles[url].published_at} by {corpus.articles[url].outlet}",
        "- Archived: no copy",
    ]


def for_each(run: Run, events: Events, corpus: Corpus) -> None:
    articles = outlet_articles(corpus, "signal.example")
    assert run["output"] == {"titles": [a.title for a in articles]}
    assert of_type(events, "step_started", "fetch")[0]["item_count"] == len(articles)
    finished = of_type(events, "step_item_finished", "fetch")
    assert sorted(e["item_index"] for e in finished) == list(range(len(articles)))
    assert plan_of(events)["fetch"]["for_each"] is True


def for_each_failures(run: Run, events: Events, corpus: Corpus) -> None:
    urls = run["input"]["urls"]
    archived = [url in corpus.archive for url in urls]
    assert archived == [True, False, True]
    archive = steps_of(run)["archive"]
    assert archive["status"] == "failed"
    first_failure = rf"1 of 3 items failed; item 1: .*No archived copy of {re.escape(urls[1])}.*"
    assert re.fullmatch(first_failure, archive["message"]), archive["message"]
    # The step's record keeps every item; expressions read a failed step's output as null.
    assert [copy and copy["url"] for copy in archive["output"]] == [urls[0], None, urls[2]]
    assert run["message"] == "Finished with 1 tolerated failure(s): archive"
    assert run["output"] == {"all_archived": False}


def retry(run: Run, events: Events, corpus: Corpus) -> None:
    archive = steps_of(run)["archive"]
    assert archive["status"] == "failed"
    assert "No archived copy of" in archive["message"]
    assert [e["attempt"] for e in of_type(events, "step_started", "archive")] == [1, 2, 3]
    retrying = of_type(events, "step_retrying", "archive")
    assert [(e["attempt"], e["max_attempts"], e["delay_seconds"]) for e in retrying] == [(2, 3, 0.5), (3, 3, 1.0)]
    assert all("No archived copy of" in e["message"] for e in retrying)
    assert run["message"] == "Finished with 1 tolerated failure(s): archive"


def timeouts(run: Run, events: Events, corpus: Corpus) -> None:
    story = corpus.articles[run["input"]["url"]].story
    assert steps_of(run)["related"]["output"]["count"] == sum(1 for a in corpus.articles.values() if a.story == story)


def defaults(run: Run, events: Events, corpus: Corpus) -> None:
    articles = outlet_articles(corpus, "daily.example.com")
    kept = [a.url in corpus.archive for a in articles]
    assert 0 < sum(kept) < len(kept)
    assert run["output"] == {"articles": len(articles), "archive": "failed"}
    assert statuses(run) == {"articles": "success", "archive": "failed"}  # tolerated by the default
    retried = of_type(events, "step_retrying", "archive")
    assert sorted(e["item_index"] for e in retried) == [i for i, ok in enumerate(kept) if not ok]
    assert all(e["delay_seconds"] == 0.5 and e["max_attempts"] == 2 for e in retried)
    plan = plan_of(events)
    assert (plan["articles"]["on_error"], plan["archive"]["on_error"]) == ("fail", "continue")


EXPECTED: dict[str, Expectation] = {
    "doc_v1_chain": Expectation(check=v1_chain),
    "doc_expressions": Expectation(check=expressions),
    "doc_optional_input": Expectation(check=optional_input),
    "doc_missing_argument": Expectation("failed", missing_argument),
    "doc_parallel": Expectation(check=parallel),
    "doc_when": Expectation(check=when),
    "doc_tolerated_failure": Expectation(check=tolerated_failure),
    "doc_for_each": Expectation(check=for_each),
    "doc_for_each_failures": Expectation(check=for_each_failures),
    "doc_retry": Expectation(check=retry),
    "doc_timeouts": Expectation(check=timeouts),
    "doc_defaults": Expectation(check=defaults),
}


def test_every_doc_example_is_checked_here() -> None:
    ids = [s["scenario_id"] for s in doc_scenarios()]
    assert len(ids) == len(set(ids)), ids
    assert {s["scenario_id"] for s in runnable()} == set(EXPECTED)
    assert broken(), "the validate section shows a broken file"


def test_every_runnable_doc_example_loads(doc_app: InProcessApp) -> None:
    listed = {s["id"] for s in doc_app.get("/api/scenarios").json()}
    assert listed == set(EXPECTED)


@pytest.mark.parametrize("scenario_id", sorted(EXPECTED))
def test_doc_example_runs_as_the_doc_says(doc_app: InProcessApp, corpus: Corpus, scenario_id: str) -> None:
    expectation = EXPECTED[scenario_id]
    run_input = example_inputs(doc_app, scenario_id)[0]

    run, events = run_with_events(doc_app, scenario_id, run_input)

    assert run["status"] == expectation.status, run
    if expectation.check is not None:
        expectation.check(run, events, corpus)


def test_doc_condition_example_follows_the_citation_when_there_is_one(doc_app: InProcessApp, corpus: Corpus) -> None:
    run_input = example_inputs(doc_app, "doc_when")[1]
    article = corpus.articles[run_input["url"]]

    run = run_to_end(doc_app.client, "doc_when", run_input)

    assert statuses(run) == {"article": "success", "cited": "success"}
    assert run["output"] == {"source": corpus.articles[article.cites[0]].title, "cites_another": True}


def test_validate_reports_every_problem_the_doc_shows(tmp_path: Path) -> None:
    """The doc's broken file, checked by `stepline validate` as a user runs it."""
    (scenario,) = broken()
    shown = next(text for info, text in doc_blocks() if info == "console" and "$ stepline validate" in text)
    expected = [line for line in shown.splitlines() if line and not line.startswith("$")]
    folder = write_scenarios(tmp_path / "scenarios", [scenario])

    result = subprocess.run(
        [sys.executable, "-m", "web", "validate", "--scenarios", str(folder)],
        cwd=PROJECT_ROOT,
        env={**os.environ, "STEPLINE_DEMO_DELAY": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == expected
    assert f"0 valid scenario(s), {len(expected)} problem(s)" in result.stderr


# --- The shipped workflows ----------------------------------------------------------------------


@pytest.mark.parametrize("scenario_id", [ORIGINS, CHECK])
def test_shipped_workflow_page_offers_its_first_example(demo_app: InProcessApp, scenario_id: str) -> None:
    ((field, value),) = example_inputs(demo_app, scenario_id)[0].items()

    page = demo_app.get(f"/scenarios/{scenario_id}")

    assert page.status_code == 200
    assert re.search(rf'<input[^>]* name="in\.{field}" value="{re.escape(value)}"', page.text), page.text


def test_outlet_story_origins_fans_out_and_joins_for_every_example(demo_app: InProcessApp, corpus: Corpus) -> None:
    inputs = example_inputs(demo_app, ORIGINS)
    assert len(inputs) >= 2
    for run_input in inputs:
        domain = run_input["domain"]
        outlet = corpus.outlets[domain]
        articles = outlet_articles(corpus, domain)
        origins = [first_report(corpus, a) for a in articles]

        run, events = run_with_events(demo_app, ORIGINS, run_input)

        assert run["status"] == "success", run
        assert set(statuses(run).values()) == {"success"}
        output = run["output"]
        assert output["outlet"] == outlet.name
        assert output["articles"] == [a.url for a in articles]
        assert output["origins"] == [a.url for a in origins]
        assert output["times_cited"] == sum(
            1 for a in articles for citer in corpus.cited_by[a.url] if corpus.articles[citer].domain != domain
        )
        stats = steps_of(run)["stats"]["output"]
        reporters = list(dict.fromkeys(o.outlet for o in origins))
        first_hand = sum(1 for a in articles if not a.cites)
        assert output["brief"].splitlines() == [
            f"{outlet.name}: where its stories began",
            f"- {stats['summary']}",
            f"- Its stories were first reported by: {', '.join(reporters)}.",
            f"- {first_hand} of its {len(articles)} articles cite no one: first-hand reporting.",
        ]
        items = of_type(events, "step_item_finished", "related")
        assert sorted(e["item_index"] for e in items) == list(range(len(articles)))


def test_outlet_story_origins_plan_runs_stats_beside_the_fan_out(demo_app: InProcessApp) -> None:
    run_id = start_run(demo_app.client, ORIGINS, example_inputs(demo_app, ORIGINS)[0])["run_id"]
    plan = plan_of(read_events(demo_app.client, run_id))

    assert plan["related"]["depends_on"] == ["articles"]
    assert plan["stats"]["depends_on"] == ["outlet", "articles"]
    assert plan["related"]["for_each"] and plan["origins"]["for_each"] and not plan["stats"]["for_each"]
    assert plan["brief"]["depends_on"] == ["outlet", "origins", "stats"]


def test_outlet_story_origins_shows_its_branches_running_at_once(slow_demo_app: InProcessApp) -> None:
    """With the demo's delay the stats branch runs while the articles are still being searched."""
    run, events = run_with_events(slow_demo_app, ORIGINS, {"domain": "daily.example.com"})

    assert run["status"] == "success", run
    position = {(e["type"], e.get("step_name")): i for i, e in reversed(list(enumerate(events)))}
    assert position[("step_started", "stats")] < position[("step_finished", "related")]
    assert position[("step_started", "related")] < position[("step_finished", "stats")]


def test_story_origin_check_for_every_example(demo_app: InProcessApp, corpus: Corpus) -> None:
    inputs = example_inputs(demo_app, CHECK)
    seen = set()
    for run_input in inputs:
        article = corpus.articles[run_input["url"]]
        origin = first_report(corpus, article)
        origin_outlet = corpus.outlets[origin.domain]
        archived = corpus.archive.get(article.url)
        is_origin = origin.url == article.url

        run = run_to_end(demo_app.client, CHECK, run_input)

        assert run["status"] == "success", run
        steps = steps_of(run)
        output = run["output"]
        assert output["title"] == article.title
        assert output["first_report"] == origin.url
        assert output["is_first_report"] is is_origin
        assert output["first_outlet"] == f"{origin_outlet.name} ({origin_outlet.kind})"
        if is_origin:
            assert steps["trace"]["status"] == "skipped"
            assert steps["trace"]["message"].startswith("Condition is false: {{ steps.earliest.output.earliest[0].url")
            assert output["citation_hops"] == 0
        else:
            path = citation_path(corpus, article, origin, max_hops=10)
            assert path is not None
            assert steps["trace"]["status"] == "success"
            assert output["citation_hops"] == len(path) - 1
            assert output["chain"].endswith(" → ".join(corpus.articles[url].outlet for url in path) + ".")
        if archived is None:
            assert steps["archive"]["status"] == "failed"
            assert run["message"] == "Finished with 1 tolerated failure(s): archive"
            assert output["archived_copy"] is None
        else:
            assert steps["archive"]["status"] == "success"
            stamp = archived.captured.astimezone(UTC).strftime("%Y%m%d%H%M%S")
            assert output["archived_copy"] == f"https://archive.example/snapshots/{stamp}/{article.url}"
        seen.add((is_origin, archived is None))
    # The examples show both sides of the condition and of the tolerated failure, the first one at once.
    assert (False, True) in seen and (True, False) in seen
    first = corpus.articles[inputs[0]["url"]]
    assert first_report(corpus, first).url != first.url and first.url not in corpus.archive


def test_story_origin_check_fails_cleanly_for_an_unknown_article(demo_app: InProcessApp) -> None:
    url = "https://daily.example.com/news/no-such-article"

    run = run_to_end(demo_app.client, CHECK, {"url": url})

    assert run["status"] == "failed"
    assert statuses(run)["article"] == "failed"
    assert f"Unknown article: {url}" in steps_of(run)["article"]["message"]
    later = {name: step for name, step in steps_of(run).items() if name != "article"}
    assert later and all(step["status"] == "skipped" for step in later.values())
    assert all(step["message"] == "Not run: step 'article' failed" for step in later.values())
    assert run["output"] is None


def test_outlet_brief_waits_for_approval_and_writes_what_the_person_chose(
    demo_app: InProcessApp, corpus: Corpus
) -> None:
    outlet = corpus.outlets["daily.example.com"]
    run_id = start_run(demo_app.client, APPROVAL, {"domain": "daily.example.com"})["run_id"]
    wait_until(lambda: get_run(demo_app.client, run_id)["pending_requests"], 20, "the approval request")
    run = get_run(demo_app.client, run_id)
    [request] = run["pending_requests"]
    assert run["status"] == "waiting" and request["kind"] == "approval"
    assert request["message"].startswith(f"Write a brief on {outlet.name}? ")
    assert request["requested_schema"]["required"] == ["headline"]

    answer = demo_app.post(
        f"/api/runs/{run_id}/requests/{request['request_id']}",
        json={"action": "accept", "content": {"headline": "Daily, in brief", "note": "Checked by the desk"}},
    )
    assert answer.status_code == 200, answer.text

    run = wait_finished(demo_app.client, run_id)
    assert run["status"] == "success", run
    lines = run["output"].splitlines()
    assert lines[0] == "Daily, in brief"
    assert "- Checked by the desk" in lines and lines[-1].startswith("- Approved by ")


def test_outlet_brief_rejected_fails_saying_so(demo_app: InProcessApp) -> None:
    run_id = start_run(demo_app.client, APPROVAL, {"domain": "signal.example"})["run_id"]
    wait_until(lambda: get_run(demo_app.client, run_id)["pending_requests"], 20, "the approval request")
    [request] = get_run(demo_app.client, run_id)["pending_requests"]
    demo_app.post(f"/api/runs/{run_id}/requests/{request['request_id']}", json={"action": "decline"})

    run = wait_finished(demo_app.client, run_id)
    assert run["status"] == "failed"
    assert run["message"].startswith("Step 'approve' failed: Declined by")
    assert steps_of(run)["brief"]["status"] == "skipped"
