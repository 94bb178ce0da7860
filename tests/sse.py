"""A small Server-Sent Events parser for the tests, following the HTML standard's rules.

Frames are dispatched on a blank line; a line starting with ':' is a comment; `field: value`
loses one space after the colon; several `data:` lines join with newlines.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Frame:
    event: str
    data: str
    id: str | None

    def json(self) -> dict[str, Any]:
        return json.loads(self.data)


@dataclass(frozen=True)
class Comment:
    text: str


Item = Frame | Comment


class Parser:
    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._has_fields = False

    def feed(self, line: str) -> Item | None:
        """One line without its line ending; a Frame when the line completes one."""
        if line == "":
            if not self._has_fields:
                return None
            frame = Frame(event=self._event or "message", data="\n".join(self._data), id=self._id)
            self._event, self._data, self._id, self._has_fields = "", [], None, False
            return frame
        if line.startswith(":"):
            return Comment(line[1:].removeprefix(" "))
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        self._has_fields = True
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None


def parse_lines(lines: Iterable[str]) -> Iterator[Item]:
    parser = Parser()
    for line in lines:
        item = parser.feed(line)
        if item is not None:
            yield item


async def aparse_lines(lines: AsyncIterable[str]) -> AsyncIterator[Item]:
    parser = Parser()
    async for line in lines:
        item = parser.feed(line)
        if item is not None:
            yield item


def parse_text(text: str) -> list[Item]:
    return list(parse_lines(text.splitlines()))


def frames(items: Iterable[Item]) -> Iterator[Frame]:
    """The frames among `items`, lazily: a live stream yields each as it arrives."""
    return (item for item in items if isinstance(item, Frame))


def read_events(
    target: httpx.Client | str, run_id: str, *, headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None, timeout: float = 20,
) -> list[dict[str, Any]]:
    """Every event of a run's stream, read until the server ends it.

    `target` is a client (an in-process app's, or one with a server's base_url) or a server's base URL.
    """
    with contextlib.ExitStack() as stack:
        if isinstance(target, httpx.Client):
            client = target
        else:
            client = stack.enter_context(httpx.Client(base_url=target, timeout=timeout))
        response = stack.enter_context(
            client.stream("GET", f"/api/runs/{run_id}/events", headers=headers, params=params)
        )
        assert response.status_code == 200, response.read()
        return [frame.json() for frame in frames(parse_lines(response.iter_lines()))]


async def aread_events(
    client: httpx.AsyncClient, run_id: str, *, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """`read_events` for an async client."""
    async with client.stream("GET", f"/api/runs/{run_id}/events", headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        return [item.json() async for item in aparse_lines(response.aiter_lines()) if isinstance(item, Frame)]
