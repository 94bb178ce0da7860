"""Every kind of tool result drawn on the run page: text, images, audio, resource links, embedded resources,
annotations and outputs, each within the page's limits, and hostile results drawn as text, never run.

Real runs, in-process, against `tests/servers/results.py` (an SDK server answering with each kind of
block and hostile ones) and the MCP reference server from npm (`get-tiny-image` and its friends).
"""

from __future__ import annotations

import json
import re
from base64 import b64encode
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from inprocess import InProcessApp, in_process
from reference_server import reference_server
from runs import run_to_end
from servers.results import MARKUP, results_home

from web.result_view import web_address

MIB = 1024 * 1024
# The issue's own example: a 2.2 MB text output once made a 4.6 MB page.
BIG_TEXT = 2_200_000
DATA_URL = re.compile(r'\b(src|href)="(data:[^"]*)"')
DRAWN_DATA = re.compile(
    r"data:(image/(png|jpeg|gif|webp)|audio/(wav|mpeg|ogg|webm|flac|mp4|aac));base64,[A-Za-z0-9+/]*=*"
)
DOWNLOAD_DATA = re.compile(r"data:application/octet-stream;base64,[A-Za-z0-9+/]*=*")


def started(folder: Path, **settings: Any) -> Iterator[InProcessApp]:
    scenarios, config = results_home(folder, reference_server())
    with in_process(folder, scenarios=scenarios, mcp_config=config, **settings) as app:
        app.wait_ready()
        yield app


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessApp]:
    """Default limits: 64 KiB of text and 512 KiB per inline image on a page, 1 MiB of output kept."""
    yield from started(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def roomy_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessApp]:
    """Keeps outputs of up to 4 MiB whole: a 2.2 MB text is kept, and the page must still show only its start."""
    yield from started(tmp_path_factory.mktemp("results-roomy"), max_output_bytes=4 * MIB)


@pytest.fixture(scope="module")
def tight_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessApp]:
    """The page limits set low: 2 KiB of text and 1 KiB per data: URL."""
    yield from started(tmp_path_factory.mktemp("results-tight"), page_output_bytes=2048, max_inline_image_bytes=1024)


@pytest.fixture(scope="module")
def every_kind(app: InProcessApp) -> tuple[dict[str, Any], dict[str, str]]:
    run, html = run_page(app, "every_kind")
    assert run["status"] == "success", run
    return run, steps_of(html)


def run_page(
    app: InProcessApp, scenario_id: str, run_input: dict[str, Any] | None = None
) -> tuple[dict[str, Any], str]:
    run = run_to_end(app.client, scenario_id, run_input)
    page = app.get(f"/runs/{run['run_id']}")
    assert page.status_code == 200
    return run, page.text


def steps_of(html: str) -> dict[str, str]:
    """Each step's card on a run page, by step name."""
    cards = {}
    for card in re.findall(r'<article id="step-\d+".*?</article>', html, re.S):
        name = re.search(r'<h2 class="step-name">.*?</span>(.*?)</h2>', card, re.S)
        assert name, card[:300]
        cards[name.group(1)] = card
    return cards


def step_of(run: dict[str, Any], name: str) -> dict[str, Any]:
    return next(step for step in run["steps"] if step["node_id"] == name)


def texts(card: str) -> list[str]:
    """The text blocks and embedded text resources a card shows, as a reader sees them."""
    return [unescape(text) for text in re.findall(r'<pre class="block-body">(.*?)</pre>', card, re.S)]


# --- Each kind of block ----------------------------------------------------------------------------


def test_the_reference_servers_tiny_image_is_drawn_between_its_captions(every_kind: tuple[Any, Any]) -> None:
    run, cards = every_kind
    card = cards["tiny_image"]
    image = step_of(run, "tiny_image")["content"][1]
    assert image["type"] == "image" and image["mimeType"] == "image/png"
    assert f'<img class="block-picture" src="data:image/png;base64,{image["data"]}"' in card
    assert texts(card) == ["Here's the image you requested:", "The image above is the MCP logo."]
    # The caption's text, then the image, then the closing line: the tool's order.
    assert card.index("requested:") < card.index("<img") < card.index("MCP logo.")
    assert "Image</span> · <code>image/png</code>" in card


def test_audio_gets_a_player(every_kind: tuple[Any, Any]) -> None:
    card = every_kind[1]["sound"]
    assert re.search(r'<audio class="block-player" controls [^>]*src="data:audio/wav;base64,UklGR', card)
    assert texts(card) == ["A tone:"]


def test_annotations_are_told_in_words(every_kind: tuple[Any, Any]) -> None:
    cards = every_kind[1]
    assert '<span class="block-notes">for user, priority 0.9</span>' in cards["picture"]
    assert (
        '<span class="block-notes">for user and assistant, priority 0.7, modified 2025-01-12T15:00:58Z</span>'
        in cards["annotated"]
    )
    assert texts(cards["annotated"]) == ["Operation completed"]
    # The reference server annotates its message and its image apart.
    reference = cards["reference_annotated"]
    assert '<span class="block-notes">for user, priority 0.7</span>' in reference
    assert '<span class="block-notes">for user, priority 0.5</span>' in reference
    assert '<img class="block-picture" src="data:image/png;base64,' in reference


def test_resource_links_show_name_uri_and_type_and_link_only_to_the_web(every_kind: tuple[Any, Any]) -> None:
    card = every_kind[1]["links"]
    escaped = "&lt;img src=x onerror=&#34;window.__pwned=1&#34;&gt;&lt;script&gt;window.__pwned=2&lt;/script&gt;"
    assert f"<strong>Quarterly {escaped} report</strong>" in card
    assert '<a href="https://example.com/report.pdf" rel="noopener noreferrer nofollow">' in card
    assert "Resource link</span> · <code>application/pdf</code> · <span>12 KB</span>" in card
    assert '<a href="http://example.com/data.csv"' in card
    # Other schemes are shown as text, never as links.
    assert "<code>javascript:window.__pwned=6;alert(3)</code>" in card
    assert "<code>file:///etc/passwd</code>" in card
    hrefs = re.findall(r'href="([^"]*)"', card)
    assert hrefs == ["https://example.com/report.pdf", "http://example.com/data.csv"]
    assert MARKUP not in card
    # The reference server's links: its demo:// URIs as text, with their names and types.
    reference = every_kind[1]["reference_links"]
    assert "<strong>Blob Resource 1</strong>" in reference and "<strong>Text Resource 2</strong>" in reference
    assert "<code>demo://resource/dynamic/text/2</code>" in reference
    assert reference.count("Resource link</span> · <code>text/plain</code>") == 2


def test_embedded_resources_show_their_text_and_offer_their_blobs(every_kind: tuple[Any, Any]) -> None:
    card = every_kind[1]["embedded"]
    assert texts(card) == [f"Notes of the day\n{MARKUP}"]
    assert "<code>demo://notes/today.txt</code>" in card
    download = re.search(r'<a class="block-download" download="archive.bin" href="([^"]+)">Download archive.bin', card)
    assert download and download.group(1) == "data:application/octet-stream;base64," + b64encode(bytes(64)).decode()
    assert "Resource</span> · <code>application/zip</code> · <span>64 bytes</span>" in card
    assert '<span class="block-notes">for assistant, priority 0.2</span>' in card
    reference = every_kind[1]["reference_resource"]
    assert any(text.startswith("Resource 1: This is a plaintext resource") for text in texts(reference))


def test_a_result_of_one_link_is_that_link_not_an_empty_output(every_kind: tuple[Any, Any]) -> None:
    run, cards = every_kind
    card = cards["only_link"]
    assert '<a href="https://example.com/only"' in card and "<strong>the-only-one</strong>" in card
    # Its output is its list of blocks: drawn once, as the link.
    assert step_of(run, "only_link")["output"] == step_of(run, "only_link")["content"]
    assert "<summary>Output" not in card


def test_an_empty_result_says_so(every_kind: tuple[Any, Any]) -> None:
    card = every_kind[1]["nothing"]
    assert "The tool answered with no content." in card
    assert "<summary>Output" not in card


# --- Each text once --------------------------------------------------------------------------------


def test_prose_output_is_drawn_once_as_the_text(every_kind: tuple[Any, Any]) -> None:
    card = every_kind[1]["markup_text"]
    assert texts(card) == [f"Careful: {MARKUP}"]
    assert "<summary>Output" not in card
    assert card.count("Careful:") == 1


def test_json_output_is_drawn_as_json_and_its_text_not_again(every_kind: tuple[Any, Any]) -> None:
    cards = every_kind[1]
    # Parsed from the text: the tree and its raw JSON, not the text a second time.
    assert "<summary>Output" in cards["json_text"] and "<dt>answer</dt>" in cards["json_text"]
    assert texts(cards["json_text"]) == []
    # The reference server sends its structured content as text too (as the MCP specification advises).
    assert "<dt>humidity</dt>" in cards["reference_structured"]
    assert texts(cards["reference_structured"]) == []


def test_structured_output_and_different_prose_are_both_drawn(every_kind: tuple[Any, Any]) -> None:
    card = every_kind[1]["structured"]
    assert texts(card) == ["The forecast is sunny."]
    assert "<summary>Output" in card and "<dt>temperature</dt>" in card


def test_a_failed_call_shows_its_picture_and_its_message_once(app: InProcessApp) -> None:
    run, html = run_page(app, "failing")
    assert run["status"] == "failed"
    card = steps_of(html)["failing"]
    assert card.count("The camera jammed") == 1
    assert '<p class="step-message">The camera jammed</p>' in card
    assert '<img class="block-picture" src="data:image/png;base64,iVBORw0KGgo' in card


# --- Hostile results -------------------------------------------------------------------------------


def test_hostile_media_and_links_are_described_never_drawn(app: InProcessApp) -> None:
    run, html = run_page(app, "hostile")
    assert run["status"] == "success", run
    card = steps_of(html)["hostile_media"]
    assert "<img" not in card and "<audio" not in card
    notes = [unescape(note) for note in re.findall(r'<p class="block-note">(.*?)</p>', card)]
    assert notes == [
        "Not shown: only PNG, JPEG, GIF and WebP images are shown here; SVG can carry script.",
        "Not shown: its data is not valid base64.",
        "Not shown: its bytes are not image/png data, whatever its type says.",
        "Not shown: only PNG, JPEG, GIF and WebP images are shown here; text/html is not one of them.",
        'Not shown: only PNG, JPEG, GIF and WebP images are shown here; image/png" onerror="window.__pwned=7 '
        "is not one of them.",
        "Not shown: its bytes are not audio/wav data, whatever its type says.",
        "Not shown: only WAV, MP3, Ogg, WebM, FLAC, MP4 and AAC audio are shown here; text/html is not one of them.",
        "No download: its data is not valid base64.",
    ]
    # What decodes is offered as a file to save, never as something the page opens or draws.
    downloads = re.findall(r'<a class="block-download" download="([^"]*)" href="([^"]*)"', card)
    assert [name for name, _ in downloads] == [
        "image.bin",
        "image.png",
        "image.bin",
        "image.bin",
        "audio.wav",
        "audio.bin",
    ]
    assert all(DOWNLOAD_DATA.fullmatch(href) for _, href in downloads)
    assert 'onerror="window' not in html and "<script>window" not in html


def test_huge_uris_and_names_are_cut_to_a_line(app: InProcessApp) -> None:
    run, html = run_page(app, "hostile")
    assert run["status"] == "success", run
    card = steps_of(html)["huge_link"]
    # Three values of 200,000 characters each, and a URL as long: the page shows the start of each.
    assert len(card) < 10_000 and "(199,000 more characters)" in card
    assert card.count("… (") == 4 and 'href="https://example.com/?q=' not in card


def test_the_only_data_urls_in_a_page_are_checked_media_and_downloads(app: InProcessApp) -> None:
    for scenario_id in ("hostile", "every_kind"):
        _, html = run_page(app, scenario_id)
        for attribute, url in DATA_URL.findall(html):
            allowed = DRAWN_DATA if attribute == "src" else DOWNLOAD_DATA
            assert allowed.fullmatch(url), (attribute, url[:80])
        assert not re.search(r'href="\s*(javascript|data:text|file:)', html, re.I)


def test_an_image_larger_than_the_limit_is_not_put_in_the_page(app: InProcessApp) -> None:
    run, html = run_page(app, "big_image", {"size": 600_000})
    assert run["status"] == "success", run
    card = steps_of(html)["big_image"]
    assert "<img" not in card and "data:" not in card
    assert "Not shown: 586 KB, more than the 512 KB a page carries." in card
    assert len(html) < 100_000


def test_a_blob_larger_than_the_limit_is_not_offered(app: InProcessApp) -> None:
    run, html = run_page(app, "big_blob", {"size": 600_000})
    assert run["status"] == "success", run
    card = steps_of(html)["big_blob"]
    assert "No download: 586 KB, more than the 512 KB a page carries." in card
    assert "data:" not in card and len(html) < 100_000


def test_the_page_limits_are_the_settings(tight_app: InProcessApp) -> None:
    _, html = run_page(tight_app, "every_kind")
    card = steps_of(html)["picture"]
    assert "<img" not in card and "Not shown: 6 KB, more than the 1 KB a page carries." in card
    # The reference server's tiny image is larger than 1 KiB too.
    assert "Not shown: 4 KB, more than the 1 KB a page carries." in steps_of(html)["tiny_image"]
    run, html = run_page(tight_app, "big_text", {"size": 10_000})
    card = steps_of(html)["big_text"]
    [shown] = texts(card)
    assert len(shown.encode()) == 2048 and shown.startswith("The quick brown fox")
    output_url = f"/api/runs/{run['run_id']}/steps/big_text/output"
    assert f'… 8 KB more not shown. The whole text is in <a href="{output_url}">the step\'s output</a>.' in unescape(
        card
    )


def test_an_output_is_cut_to_the_page_limit_in_bytes_with_the_whole_a_link_away(tight_app: InProcessApp) -> None:
    run, html = run_page(tight_app, "big_structured", {"size": 5000})
    card = steps_of(html)["big_structured"]
    assert texts(card) == ["A long word."]
    output = card[card.index("<summary>Output") :]
    raw = re.search(r'<details class="json-raw">.*?<pre><code>(.*?)</code></pre>(.*?)</details>', output, re.S)
    assert raw
    shown = unescape(raw.group(1))
    assert shown.startswith('{\n  "word": "ééé') and 2040 < len(shown.encode()) <= 2048
    output_url = f"/api/runs/{run['run_id']}/steps/big_structured/output"
    assert f'are shown. <a href="{output_url}">The whole output</a> is one click away.' in raw.group(2)
    assert tight_app.get(output_url).json() == {"word": "é" * 5000}


# --- Big results -----------------------------------------------------------------------------------


def test_a_2_mb_text_output_makes_a_small_page(roomy_app: InProcessApp) -> None:
    run, html = run_page(roomy_app, "big_text", {"size": BIG_TEXT})
    assert run["status"] == "success", run
    assert len(step_of(run, "big_text")["output"]) == BIG_TEXT  # kept whole
    card = steps_of(html)["big_text"]
    [shown] = texts(card)
    assert len(shown.encode()) == 64 * 1024 and "THE END" not in html
    assert "<summary>Output" not in card  # the text is the output: drawn once
    assert len(html.encode()) < 100_000
    # The link leads to the whole.
    link = re.search(r'The whole text is in <a href="([^"]+)">the step\'s output</a>', unescape(card))
    assert link
    whole = roomy_app.get(link.group(1))
    assert whole.status_code == 200 and whole.headers["content-type"].startswith("application/json")
    assert json.loads(whole.content).endswith("THE END")
    # The live page gets the same small fragment.
    stream = roomy_app.get(f"/runs/{run['run_id']}/stream")
    assert stream.status_code == 200 and len(stream.content) < 150_000 and "THE END" not in stream.text


def test_a_text_too_large_to_keep_shows_its_start(app: InProcessApp) -> None:
    run, html = run_page(app, "big_text", {"size": BIG_TEXT})
    assert run["status"] == "success", run
    card = steps_of(html)["big_text"]
    assert "The tool's content was 2.1 MB as JSON, more than a step keeps: only its start is kept." in unescape(card)
    # The output's start, kept as the history keeps it, is drawn; the content's like start is not drawn again.
    assert "<dt>preview</dt>" in card and "The quick brown fox" in card and "block-body" not in card
    assert len(html.encode()) < 100_000


def test_a_result_of_many_blocks_draws_the_first_hundred(app: InProcessApp) -> None:
    run, html = run_page(app, "many_blocks", {"size": 150})
    card = steps_of(html)["many_blocks"]
    assert texts(card) == [f"block {n}" for n in range(100)]
    assert (
        f'50 more blocks not drawn here. Every block is in <a href="/api/runs/{run["run_id"]}">the run\'s JSON</a>'
        in card
    )


# --- The browser's rules ---------------------------------------------------------------------------


def test_the_policy_allows_data_urls_for_images_and_media_alone(app: InProcessApp) -> None:
    policy = dict(part.strip().split(" ", 1) for part in app.get("/").headers["content-security-policy"].split(";"))
    assert policy["img-src"] == "'self' data:" and policy["media-src"] == "data:"
    assert [name for name, sources in policy.items() if "data:" in sources] == ["img-src", "media-src"]
    assert policy["default-src"] == "'none'" and policy["script-src"] == "'self'"


@pytest.mark.parametrize(
    ("uri", "link"),
    [
        ("https://example.com/a?b=c#d", True),
        ("HTTP://EXAMPLE.COM/", True),
        ("javascript:alert(1)", False),
        (" javascript:alert(1)", False),
        ("java\tscript:alert(1)", False),
        ("https://example.com/\nx", False),
        ("data:text/html,<script>alert(1)</script>", False),
        ("file:///etc/passwd", False),
        ("//evil.example/x", False),
        ("https:evil", False),
        ("demo://resource/1", False),
        ("", False),
    ],
)
def test_only_web_addresses_become_links(uri: str, link: bool) -> None:
    assert (web_address(uri) == uri) is link
