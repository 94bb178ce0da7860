"""What a tool's result becomes in a step: its status, message, output and content, as the history keeps them.

A step's output is the result's structured content if present, else its text content parsed as JSON if
it parses, else the text; a result with neither (an image, a resource, a link…) has its list of content
blocks as output. Only strict JSON is kept, each of output and content at most `max_output_bytes` as JSON;
a larger one is kept truncated (see `web.json_limits.bounded`) and the step says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mcp_types import CallToolResult, ContentBlock, TextContent

from web.json_limits import LONE_SURROGATE, Bounded, JsonProblem, bounded, check, parse, where
from web.mcp_server import describe


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """One call's result as a step records it; `retryable` when another attempt might fare better.

    `output` and `content` are as the history keeps them (maybe truncated). For the expressions of the steps
    after it: `value` is the output whole, `blocks` the content blocks whole, `text` the result's text blocks
    joined, `structured` its structured content.
    """

    ok: bool
    message: str
    output: Any = None
    content: Any = None
    text: str | None = None
    value: Any = None
    blocks: list[dict[str, Any]] | None = None
    structured: Any = None
    retryable: bool = False


# The JSON of a text block, `{"type":"text","text":""}`, besides its text and the comma between blocks.
TEXT_BLOCK_JSON_BYTES = 27
# The most bytes one character takes in JSON text: an escape such as \u001f.
MAX_JSON_BYTES_PER_CHAR = 6

# What a JSON document may begin with, after white space: other text is kept as text without asking the
# parser, which would only raise for it (most tools answer in prose).
JSON_STARTS = frozenset('{["-0123456789tfn')


def parse_text(text: str, *, max_depth: int) -> Any:
    """Text that is a JSON document as its value, other text as itself (the very object).

    Raises JsonProblem for JSON the history cannot keep: a non-finite number, a lone surrogate, nesting
    deeper than `max_depth`.
    """
    if text.lstrip(" \t\n\r")[:1] not in JSON_STARTS:
        return text
    try:
        return parse(text, max_depth=max_depth)
    except JsonProblem as problem:
        if problem.kind == "json_invalid":
            return text
        raise


def result_text(result: CallToolResult) -> str | None:
    texts = [block.text for block in result.content if block.type == "text"]
    return "\n".join(texts) if texts else None


class ResultReader:
    """Turns results into outcomes within the history's limits."""

    def __init__(self, *, max_depth: int, max_output_bytes: int) -> None:
        self.max_depth = max_depth
        self.max_output_bytes = max_output_bytes

    def outcome(self, tool: str, result: CallToolResult) -> ToolOutcome:
        texts = _plain_texts(result.content)
        if texts and not result.is_error and result.structured_content is None:
            outcome = self._text_outcome(texts)
            if outcome is not None:
                return outcome
        try:
            content = [block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in result.content]
            check(content, max_depth=self.max_depth)
        except JsonProblem as problem:
            return ToolOutcome(False, self._refusal(tool, "content", problem))
        except Exception as exc:  # a block the SDK parsed but cannot write back out
            return ToolOutcome(False, f"'{tool}' returned content that cannot be kept: {describe(exc)}")
        kept_content = bounded(content, max_bytes=self.max_output_bytes)
        text = result_text(result)
        structured = result.structured_content
        if structured is not None:
            try:
                check(structured, max_depth=self.max_depth)
            except JsonProblem as problem:
                if not result.is_error:
                    refusal = self._refusal(tool, "output", problem)
                    return ToolOutcome(False, refusal, content=kept_content.value, text=text, blocks=content)
                structured = None  # an error's own words matter more than its details
        if result.is_error:
            # The tool said it failed: another attempt may succeed (a retry policy decides).
            message = text or f"'{tool}' reported an error"
            return ToolOutcome(False, message, content=kept_content.value, text=text, blocks=content,
                               structured=structured, retryable=True)
        # Structured content if present, else the text content parsed as JSON, else the text, else the blocks.
        if structured is not None:
            output = structured
        elif text is not None:
            try:
                output = parse_text(text, max_depth=self.max_depth)
            except JsonProblem as problem:
                refusal = self._refusal(tool, "output", problem)
                return ToolOutcome(False, refusal, content=kept_content.value, text=text, blocks=content)
        else:
            output = content or None
        if output is content:
            kept_output = kept_content
        elif output is text and not kept_content.truncated:
            # The text was checked with the content, and as JSON it is smaller than the content is.
            kept_output = Bounded(text, kept_content.size, False)
        else:
            kept_output = bounded(output, max_bytes=self.max_output_bytes)
        # Output that is the content is one value: said once.
        kept_parts = [("Output", kept_output)]
        if kept_output is not kept_content:
            kept_parts.append(("Raw content", kept_content))
        notes = [self.truncation(what, kept) for what, kept in kept_parts if kept.truncated]
        message = "; ".join(notes)
        return ToolOutcome(True, message, kept_output.value, kept_content.value, text, output, content, structured)

    def _text_outcome(self, texts: list[str]) -> ToolOutcome | None:
        """The outcome of a result of plain text blocks (most are) when it is surely within the limits, found
        without writing its content out; None when that is not sure, or the result is refused (see `outcome`)."""
        text = "\n".join(texts)
        largest = MAX_JSON_BYTES_PER_CHAR * len(text) + TEXT_BLOCK_JSON_BYTES * len(texts) + 2
        if largest > self.max_output_bytes or self.max_depth < 2 or LONE_SURROGATE.search(text):
            return None
        try:
            output = parse_text(text, max_depth=self.max_depth)
        except JsonProblem:
            return None
        if output is text:
            kept_output = text
        else:
            kept = bounded(output, max_bytes=self.max_output_bytes)
            if kept.truncated:
                return None
            kept_output = kept.value
        content = [{"type": "text", "text": block} for block in texts]
        return ToolOutcome(True, "", kept_output, content, text, output, content)

    def _refusal(self, tool: str, what: str, problem: JsonProblem) -> str:
        if problem.kind == "json_too_deep":
            return f"'{tool}' returned {what} nested deeper than {self.max_depth} levels"
        at = f", at {where(problem.loc)}" if problem.loc else ""
        return f"'{tool}' returned {what} that cannot be stored ({problem.message}{at})"

    def truncation(self, what: str, kept: Bounded) -> str:
        return (
            f"{what} truncated: {kept.size:,} bytes as JSON, more than the {self.max_output_bytes:,} kept "
            '(it is stored as {"truncated": true, "bytes": ..., "preview": ...})'
        )


def _plain_texts(blocks: Sequence[ContentBlock]) -> list[str] | None:
    """The texts of a result whose blocks are all plain text (no annotations, no _meta); None otherwise."""
    texts = []
    for block in blocks:
        if type(block) is not TextContent or block.annotations is not None or block.meta is not None:
            return None
        texts.append(block.text)
    return texts
