"""The bundled offline demo MCP server: a small newsroom of fictional articles.

Everything comes from ``corpus.json`` next to this file: a few fictional outlets on reserved
example domains, three stories, articles that cite earlier articles on the same story, so
"where did this story start?" can be answered by following citations, and the captures of a web
archive that kept some of them. No network access.

Tools:

- ``fetch_article(url)``: one article, with the urls it cites.
- ``search_news_sources(url)``: the articles on the same story (citation graph and shared keywords).
- ``find_earliest_source(sources, limit)``: the earliest of those by publication time (in UTC).
- ``trace_citation_chain(from_url, to_url, max_hops)``: the shortest citation path between two articles.
- ``lookup_outlet(domain)``: an outlet's profile; fails with "Unknown outlet: …" for other domains.
- ``list_outlet_articles(domain, newest_first)``: the articles an outlet published.
- ``outlet_stats(articles, outlet)``: counts, date range, stories and citations for a list of articles.
- ``check_archive(url)``: the web archive's copy of an article; fails with "No archived copy of …" for the
  articles the archive never captured (about half of them), so a workflow can show a tolerated failure.
- ``write_brief(title, points)``: a short plain-text brief, one bullet per point: where a workflow's
  branches come together into one text.

Each call takes a visible moment and reports MCP progress a few times along the way, so a run
can be watched step by step. ``STEPLINE_DEMO_DELAY`` sets the seconds one call takes
(float, default 1.5); ``0`` makes calls instant, as tests and benchmarks want.
"""

from __future__ import annotations

import json
import math
import os
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field

CORPUS_PATH = Path(__file__).with_name("corpus.json")
DELAY_ENV = "STEPLINE_DEMO_DELAY"
DEFAULT_DELAY = 1.5
# Progress notifications per call: enough for a watcher to see a step move, few enough to read.
PROGRESS_STEPS = 4

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


# --- Corpus -------------------------------------------------------------------------------------


class Outlet(BaseModel):
    domain: str
    name: str
    kind: str
    founded: int
    description: str


class Story(BaseModel):
    id: str
    title: str


class Capture(BaseModel):
    url: str
    captured_at: str

    @property
    def captured(self) -> datetime:
        return parse_timestamp(self.captured_at)


class CorpusArticle(BaseModel):
    url: str
    outlet: str
    story: str
    title: str
    published_at: str
    summary: str
    cites: list[str]
    keywords: list[str]

    @property
    def domain(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def published(self) -> datetime:
        return parse_timestamp(self.published_at)


def parse_timestamp(value: str) -> datetime:
    """An ISO 8601 timestamp with a UTC offset, as an aware datetime; ValueError otherwise."""
    stamp = datetime.fromisoformat(value)
    if stamp.tzinfo is None:
        raise ValueError(f"{value!r} has no UTC offset")
    return stamp


@dataclass(frozen=True)
class Corpus:
    outlets: dict[str, Outlet]
    stories: dict[str, Story]
    articles: dict[str, CorpusArticle]
    cited_by: dict[str, list[str]]
    archive: dict[str, Capture]

    def article(self, url: str) -> CorpusArticle:
        found = self.articles.get(normalize_url(url))
        if found is None:
            raise ToolError(f"Unknown article: {url} is not in the demo corpus")
        return found

    def outlet(self, domain: str) -> Outlet:
        found = self.outlets.get(normalize_domain(domain))
        if found is None:
            known = ", ".join(sorted(self.outlets))
            raise ToolError(f"Unknown outlet: {domain.strip()} (the demo corpus knows {known})")
        return found


def normalize_url(url: str) -> str:
    return url.strip().rstrip("/")


def normalize_domain(value: str) -> str:
    """Accept a bare domain or a whole url, in any case."""
    value = value.strip().lower()
    if "://" in value:
        value = urlsplit(value).hostname or ""
    return value.rstrip(".").removeprefix("www.")


def load_corpus(path: Path = CORPUS_PATH) -> Corpus:
    """Load and cross-check the corpus, so a broken edit fails at start-up, not mid-run."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    outlets = {o.domain: o for o in map(Outlet.model_validate, raw["outlets"])}
    stories = {s.id: s for s in map(Story.model_validate, raw["stories"])}
    articles = {a.url: a for a in map(CorpusArticle.model_validate, raw["articles"])}
    cited_by: dict[str, list[str]] = {url: [] for url in articles}
    for article in articles.values():
        outlet = outlets.get(article.domain)
        if outlet is None or outlet.name != article.outlet:
            raise ValueError(f"{article.url}: outlet {article.outlet!r} does not match its domain")
        if article.story not in stories:
            raise ValueError(f"{article.url}: unknown story {article.story!r}")
        parse_timestamp(article.published_at)  # raises on a timestamp without an offset
        for cited in article.cites:
            if cited not in articles:
                raise ValueError(f"{article.url}: cites {cited}, which is not in the corpus")
            cited_by[cited].append(article.url)
    archive = {c.url: c for c in map(Capture.model_validate, raw["archive"])}
    for capture in archive.values():
        captured = articles.get(capture.url)
        if captured is None:
            raise ValueError(f"archive: {capture.url} is not in the corpus")
        if capture.captured <= captured.published:
            raise ValueError(f"archive: {capture.url} is captured before it was published")
    return Corpus(outlets=outlets, stories=stories, articles=articles, cited_by=cited_by, archive=archive)


# --- Tool inputs and outputs --------------------------------------------------------------------


class Article(BaseModel):
    url: str = Field(description="Canonical url of the article.")
    outlet: str = Field(description="Name of the publishing outlet.")
    domain: str = Field(description="Domain of the publishing outlet.")
    title: str
    published_at: str = Field(description="ISO 8601 with UTC offset.")
    summary: str
    cites: list[str] = Field(description="Urls of the earlier articles this one cites.")
    story: str = Field(description="Id of the story the article belongs to.")
    keywords: list[str] = Field(description="Story keywords.")


class SourceRef(BaseModel):
    url: str
    outlet: str
    title: str
    published_at: str = Field(description="ISO 8601 with UTC offset.")


class FoundSource(SourceRef):
    found_via: Literal["query", "citation", "keywords"] = Field(
        description="How the article was found: it is the query, it is linked to it by citations, "
        "or it shares keywords with it."
    )


class SearchResult(BaseModel):
    query_url: str
    sources: list[FoundSource] = Field(description="Articles on the same story, the query first.")
    count: int


class SourceIn(BaseModel):
    """One candidate source; extra keys (e.g. found_via) are ignored, so search results fit as-is."""

    model_config = ConfigDict(extra="ignore")

    url: str
    published_at: str = Field(description="ISO 8601 with UTC offset.")
    outlet: str = ""
    title: str = ""


class DatedSource(SourceRef):
    published_utc: str = Field(description="published_at converted to UTC.")


class EarliestResult(BaseModel):
    earliest: list[DatedSource] = Field(description="Earliest first.")
    considered: int = Field(description="Distinct sources compared.")


class ChainResult(BaseModel):
    found: bool
    hops: int | None = Field(description="Citations followed; null when no path was found.")
    chain: list[SourceRef] = Field(description="From from_url to to_url; empty when no path was found.")
    summary: str


class OutletProfile(BaseModel):
    domain: str
    name: str
    kind: str
    founded: int
    description: str
    home_url: str
    article_count: int


class OutletArticle(BaseModel):
    url: str
    title: str
    published_at: str = Field(description="ISO 8601 with UTC offset.")
    story: str
    cites: list[str]


class OutletArticles(BaseModel):
    domain: str
    outlet: str
    articles: list[OutletArticle]
    count: int


class StatsArticleIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    url: str
    published_at: str = Field(description="ISO 8601 with UTC offset.")
    story: str | None = None
    cites: list[str] = Field(default_factory=list)


class StoryCount(BaseModel):
    story: str
    title: str
    articles: int


class OutletStats(BaseModel):
    article_count: int
    first_published: str | None
    last_published: str | None
    stories: list[StoryCount] = Field(description="Most covered first.")
    citations_made: int = Field(description="Citations these articles make.")
    times_cited: int = Field(description="Citations of these articles by other outlets' articles.")
    original_reports: int = Field(description="Articles that cite no one: first-hand reporting.")
    summary: str


class ArchivedCopy(BaseModel):
    url: str
    title: str
    captured_at: str = Field(description="When the archive captured the page, ISO 8601 with UTC offset.")
    snapshot_url: str = Field(description="Where the archived copy is kept.")


class Brief(BaseModel):
    text: str = Field(description="The title, then one line per point, each starting with '- '.")
    points: int = Field(description="Points in the brief (blank ones are dropped).")


# --- Pacing -------------------------------------------------------------------------------------


class Pacer:
    """Spreads one call's delay over a few progress notifications."""

    def __init__(self, ctx: Context, delay: float, total: int = PROGRESS_STEPS) -> None:
        self._ctx = ctx
        self._pause = delay / total
        self._total = total
        self._done = 0

    async def step(self, message: str) -> None:
        await self._ctx.report_progress(self._done, self._total, message)
        self._done += 1
        if self._pause > 0:
            await anyio.sleep(self._pause)

    async def finish(self, message: str) -> None:
        await self._ctx.report_progress(self._total, self._total, message)


def delay_from_env() -> float:
    raw = os.environ.get(DELAY_ENV, "").strip()
    if not raw:
        return DEFAULT_DELAY
    try:
        delay = float(raw)
    except ValueError:
        raise ValueError(f"{DELAY_ENV} must be a number of seconds, got {raw!r}") from None
    if not math.isfinite(delay) or delay < 0:
        raise ValueError(f"{DELAY_ENV} must be zero or a positive number of seconds, got {raw!r}")
    return delay


# --- Queries (pure, so tests can call them without a server) -----------------------------------


def count(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def ref(article: CorpusArticle) -> SourceRef:
    return SourceRef(
        url=article.url, outlet=article.outlet, title=article.title, published_at=article.published_at
    )


def related_articles(corpus: Corpus, query: CorpusArticle) -> list[FoundSource]:
    """The query, then everything linked to it by citations either way, then keyword matches."""
    found: dict[str, str] = {query.url: "query"}
    queue = deque([query.url])
    while queue:
        url = queue.popleft()
        for neighbour in [*corpus.articles[url].cites, *corpus.cited_by[url]]:
            if neighbour not in found:
                found[neighbour] = "citation"
                queue.append(neighbour)
    # Two shared keywords, not one: a single word like "solar" spans unrelated stories.
    wanted = set(query.keywords)
    for url, article in corpus.articles.items():
        if url not in found and len(wanted & set(article.keywords)) >= 2:
            found[url] = "keywords"
    return [
        FoundSource(**ref(corpus.articles[url]).model_dump(), found_via=via) for url, via in found.items()
    ]


def earliest_sources(sources: list[SourceIn], limit: int) -> EarliestResult:
    dated: dict[str, tuple[datetime, SourceIn]] = {}
    for source in sources:
        try:
            stamp = parse_timestamp(source.published_at)
        except ValueError:
            raise ToolError(
                f"Source {source.url} has an unreadable published_at {source.published_at!r}; "
                "expected ISO 8601 with a UTC offset"
            ) from None
        dated.setdefault(source.url, (stamp, source))
    # Compare instants, not strings: "2024-03-04T23:50-08:00" is later than "2024-03-05T06:05+00:00".
    ordered = sorted(dated.values(), key=lambda pair: (pair[0], pair[1].url))
    earliest = [
        DatedSource(
            url=source.url,
            outlet=source.outlet,
            title=source.title,
            published_at=source.published_at,
            published_utc=stamp.astimezone(UTC).isoformat(),
        )
        for stamp, source in ordered[:limit]
    ]
    return EarliestResult(earliest=earliest, considered=len(dated))


def citation_path(
    corpus: Corpus, start: CorpusArticle, goal: CorpusArticle, max_hops: int
) -> list[str] | None:
    """Shortest path from start to goal following cites, or None; breadth-first."""
    previous: dict[str, str | None] = {start.url: None}
    frontier = [start.url]
    for _ in range(max_hops + 1):
        if goal.url in previous:
            path = [goal.url]
            while (step := previous[path[-1]]) is not None:
                path.append(step)
            return path[::-1]
        next_frontier = []
        for url in frontier:
            for cited in corpus.articles[url].cites:
                if cited not in previous:
                    previous[cited] = url
                    next_frontier.append(cited)
        frontier = next_frontier
    return None


def archived_copy(corpus: Corpus, url: str) -> ArchivedCopy:
    capture = corpus.archive.get(normalize_url(url))
    if capture is None:
        raise ToolError(f"No archived copy of {url.strip()}: the archive never captured it")
    stamp = capture.captured.astimezone(UTC)
    return ArchivedCopy(
        url=capture.url,
        title=corpus.articles[capture.url].title,
        captured_at=capture.captured_at,
        snapshot_url=f"https://archive.example/snapshots/{stamp:%Y%m%d%H%M%S}/{capture.url}",
    )


def brief_text(title: str, points: list[str]) -> Brief:
    kept = [" ".join(point.split()) for point in points if point.strip()]
    return Brief(text="\n".join([" ".join(title.split()), *(f"- {point}" for point in kept)]), points=len(kept))


def stats_for(corpus: Corpus, articles: list[StatsArticleIn], outlet: str) -> OutletStats:
    who = outlet or "These articles"
    if not articles:
        return OutletStats(
            article_count=0,
            first_published=None,
            last_published=None,
            stories=[],
            citations_made=0,
            times_cited=0,
            original_reports=0,
            summary=f"{who}: no articles to summarise.",
        )
    try:
        by_time = sorted(articles, key=lambda a: parse_timestamp(a.published_at))
    except ValueError as exc:
        raise ToolError(f"Unreadable published_at: {exc}; expected ISO 8601 with a UTC offset") from None
    counts: dict[str, int] = {}
    for article in articles:
        story = article.story or "unknown"
        counts[story] = counts.get(story, 0) + 1
    stories = [
        StoryCount(
            story=story, title=corpus.stories[story].title if story in corpus.stories else story, articles=n
        )
        for story, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    ]
    own_domains = {urlsplit(a.url).hostname for a in articles}
    times_cited = sum(
        1
        for article in articles
        for citer in corpus.cited_by.get(article.url, [])
        if urlsplit(citer).hostname not in own_domains
    )
    first, last = by_time[0].published_at, by_time[-1].published_at
    return OutletStats(
        article_count=len(articles),
        first_published=first,
        last_published=last,
        stories=stories,
        citations_made=sum(len(a.cites) for a in articles),
        times_cited=times_cited,
        original_reports=sum(1 for a in articles if not a.cites),
        summary=(
            f"{who} published {count(len(articles), 'article')} on {count(len(stories), 'story', 'stories')} "
            f"between {first[:10]} and {last[:10]}; other outlets cite them {count(times_cited, 'time')}."
        ),
    )


# --- Server -------------------------------------------------------------------------------------

Url = Annotated[
    str, Field(description="Article url, e.g. https://signal.example/culture/lighthouse-library-explainer")
]
Domain = Annotated[
    str, Field(description="Outlet domain, e.g. daily.example.com (a full url works too).", min_length=1)
]
READ_ONLY = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)


def build_server(delay: float | None = None, log_level: LogLevel = "WARNING") -> MCPServer:
    """The demo server; `delay` (seconds per call) defaults to STEPLINE_DEMO_DELAY."""
    pace = delay_from_env() if delay is None else delay
    corpus = load_corpus()
    mcp = MCPServer(
        "demo",
        instructions="Offline demo newsroom: fictional outlets and articles on reserved example domains.",
        log_level=log_level,
    )

    @mcp.tool(annotations=READ_ONLY)
    async def fetch_article(url: Url, ctx: Context) -> Article:
        """Fetch one article: outlet, title, publication time, summary and the urls it cites."""
        pacer = Pacer(ctx, pace)
        await pacer.step(f"Resolving {url.strip()}…")
        await pacer.step(f"Looking it up among {len(corpus.articles)} articles…")
        article = corpus.article(url)
        await pacer.step(f"Reading “{article.title}”…")
        await pacer.step(f"Collecting {count(len(article.cites), 'citation')}…")
        await pacer.finish(f"Fetched an article from {article.outlet}")
        return Article(
            url=article.url,
            outlet=article.outlet,
            domain=article.domain,
            title=article.title,
            published_at=article.published_at,
            summary=article.summary,
            cites=article.cites,
            story=article.story,
            keywords=article.keywords,
        )

    @mcp.tool(annotations=READ_ONLY)
    async def search_news_sources(url: Url, ctx: Context) -> SearchResult:
        """Find the articles on the same story as `url`: linked to it by citations, or sharing keywords."""
        pacer = Pacer(ctx, pace)
        await pacer.step("Loading the query article…")
        query = corpus.article(url)
        sources = related_articles(corpus, query)
        linked = sum(1 for s in sources if s.found_via == "citation")
        await pacer.step(f"Following citations from {query.outlet}…")
        await pacer.step(f"Scanning {len(corpus.articles)} articles for shared keywords…")
        await pacer.step(f"{linked} linked by citations, {len(sources) - linked - 1} by keywords…")
        await pacer.finish(f"Found {len(sources)} articles on this story")
        return SearchResult(query_url=query.url, sources=sources, count=len(sources))

    @mcp.tool(annotations=READ_ONLY)
    async def find_earliest_source(
        sources: Annotated[
            list[SourceIn],
            Field(description="Candidate articles, e.g. search_news_sources' `sources`."),
        ],
        ctx: Context,
        limit: Annotated[int, Field(description="How many of the earliest to return.", ge=1, le=50)] = 1,
    ) -> EarliestResult:
        """Order sources by publication time (compared in UTC) and return the earliest `limit`."""
        pacer = Pacer(ctx, pace)
        await pacer.step(f"Comparing {len(sources)} publication times…")
        if not sources:
            raise ToolError("No sources to compare: `sources` is empty")
        result = earliest_sources(sources, limit)
        await pacer.step("Converting time zones to UTC…")
        await pacer.step(f"Sorting {result.considered} distinct sources…")
        first = result.earliest[0]
        await pacer.step(f"Earliest so far: {first.outlet or first.url}…")
        await pacer.finish(f"Earliest: {first.outlet or first.url} at {first.published_at}")
        return result

    @mcp.tool(annotations=READ_ONLY)
    async def trace_citation_chain(
        from_url: Annotated[str, Field(description="Article to start from (the later one).")],
        to_url: Annotated[
            str, Field(description="Article to reach by following citations (the earlier one).")
        ],
        ctx: Context,
        max_hops: Annotated[int, Field(description="Citations to follow at most.", ge=1, le=50)] = 10,
    ) -> ChainResult:
        """Follow citations from `from_url` back to `to_url` and return the shortest chain of articles."""
        pacer = Pacer(ctx, pace)
        await pacer.step("Loading both articles…")
        start, goal = corpus.article(from_url), corpus.article(to_url)
        path = citation_path(corpus, start, goal, max_hops)
        await pacer.step(f"Following citations from {start.outlet}…")
        await pacer.step(f"Searching up to {count(max_hops, 'hop')} deep…")
        await pacer.step("Assembling the chain…")
        if path is None:
            await pacer.finish("No citation path found")
            return ChainResult(
                found=False,
                hops=None,
                chain=[],
                summary=f"No citations lead from {start.url} to {goal.url} within {count(max_hops, 'hop')}.",
            )
        chain = [ref(corpus.articles[url]) for url in path]
        hops = len(chain) - 1
        await pacer.finish(f"Chain of {count(hops, 'hop')} found")
        route = " → ".join(link.outlet for link in chain)
        return ChainResult(
            found=True,
            hops=hops,
            chain=chain,
            summary=(
                f"{start.outlet} ({start.published_at[:10]}) traces back to {goal.outlet} "
                f"({goal.published_at[:10]}) in {count(hops, 'hop')}: {route}."
            ),
        )

    @mcp.tool(annotations=READ_ONLY)
    async def lookup_outlet(domain: Domain, ctx: Context) -> OutletProfile:
        """Profile of a news outlet by domain; fails with "Unknown outlet: …" for a domain it doesn't know."""
        pacer = Pacer(ctx, pace)
        await pacer.step(f"Normalising {domain.strip()}…")
        await pacer.step(f"Checking a directory of {len(corpus.outlets)} outlets…")
        outlet = corpus.outlet(domain)
        await pacer.step(f"Reading the profile of {outlet.name}…")
        count = sum(1 for a in corpus.articles.values() if a.domain == outlet.domain)
        await pacer.step(f"Counting articles: {count}…")
        await pacer.finish(f"Found {outlet.name}")
        return OutletProfile(**outlet.model_dump(), home_url=f"https://{outlet.domain}/", article_count=count)

    @mcp.tool(annotations=READ_ONLY)
    async def list_outlet_articles(
        domain: Domain,
        ctx: Context,
        newest_first: Annotated[bool, Field(description="Newest first (true) or oldest first.")] = True,
    ) -> OutletArticles:
        """List the articles an outlet published, with their stories and citations."""
        pacer = Pacer(ctx, pace)
        await pacer.step(f"Opening the archive of {domain.strip()}…")
        outlet = corpus.outlet(domain)
        mine = [a for a in corpus.articles.values() if a.domain == outlet.domain]
        mine.sort(key=lambda a: a.published, reverse=newest_first)
        await pacer.step(f"Scanning {len(corpus.articles)} articles…")
        await pacer.step(f"Keeping {len(mine)} from {outlet.name}…")
        await pacer.step("Sorting by publication time…")
        await pacer.finish(f"Listed {count(len(mine), 'article')}")
        articles = [
            OutletArticle(url=a.url, title=a.title, published_at=a.published_at, story=a.story, cites=a.cites)
            for a in mine
        ]
        return OutletArticles(
            domain=outlet.domain, outlet=outlet.name, articles=articles, count=len(articles)
        )

    @mcp.tool(annotations=READ_ONLY)
    async def outlet_stats(
        articles: Annotated[
            list[StatsArticleIn],
            Field(description="Articles to summarise, e.g. list_outlet_articles' `articles`."),
        ],
        ctx: Context,
        outlet: Annotated[str, Field(description="Outlet name, used in the summary sentence.")] = "",
    ) -> OutletStats:
        """Summarise a list of articles: date range, stories covered, citations made and received."""
        pacer = Pacer(ctx, pace)
        await pacer.step(f"Reading {count(len(articles), 'article')}…")
        stats = stats_for(corpus, articles, outlet)
        await pacer.step(f"Grouping by story: {len(stats.stories)}…")
        await pacer.step(f"Counting citations: {stats.citations_made} made…")
        await pacer.step(f"Checking who cites them: {stats.times_cited}…")
        await pacer.finish("Stats ready")
        return stats

    @mcp.tool(annotations=READ_ONLY)
    async def check_archive(url: Url, ctx: Context) -> ArchivedCopy:
        """The web archive's copy of an article; fails with "No archived copy of …" when it never captured it."""
        pacer = Pacer(ctx, pace)
        await pacer.step(f"Asking the archive for {url.strip()}…")
        await pacer.step(f"Searching {count(len(corpus.archive), 'capture')}…")
        copy = archived_copy(corpus, url)
        await pacer.step(f"Found a capture from {copy.captured_at[:10]}…")
        await pacer.step("Checking the snapshot…")
        await pacer.finish("Archived copy found")
        return copy

    @mcp.tool(annotations=READ_ONLY)
    async def write_brief(
        title: Annotated[str, Field(description="The brief's first line.", min_length=1)],
        points: Annotated[list[str], Field(description="One bullet each, in order; blank ones are dropped.")],
        ctx: Context,
    ) -> Brief:
        """Write a short plain-text brief: the title, then one bullet per point."""
        pacer = Pacer(ctx, pace)
        await pacer.step("Setting the title…")
        brief = brief_text(title, points)
        await pacer.step(f"Writing {count(brief.points, 'point')}…")
        await pacer.step("Checking the wording…")
        await pacer.step("Laying out the brief…")
        await pacer.finish(f"Brief of {count(brief.points, 'point')} ready")
        return brief

    return mcp
