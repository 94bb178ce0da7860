"""Reading the source of expressions: `{{ … }}` found in text, parsed, and checked for what it reads.

Everything here runs when a scenario file loads: syntax errors with their offset, names that are not in
scope, steps mentioned without their name, the steps an expression reads, and whether it is a plain read
(`steps.a.output[0].url`) that can be followed without Jinja.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from jinja2 import nodes
from jinja2.exceptions import TemplateSyntaxError
from jinja2.lexer import TokenStream
from jinja2.parser import Parser

from web.expression_sandbox import ENV, GLOBALS

SCOPE_NAMES = ("input", "steps", "item", "item_index", "run")
# What `steps.<name>` and `run` hold at run time: any other field is a typo that would silently be undefined.
STEP_FIELDS = ("output", "status", "text", "content", "structured")
RUN_FIELDS = ("id",)
_NAMES_ALLOWED = frozenset(SCOPE_NAMES) | frozenset(GLOBALS)

# --- Splitting a string into text and `{{ … }}` ---------------------------------------------------------


class Span:
    """One `{{ … }}` of a text: where it is, its body, and its whitespace control (`{{-`, `-}}`)."""

    __slots__ = ("start", "end", "body_start", "body", "strip_before", "strip_after")

    def __init__(self, text: str, start: int, end: int) -> None:
        self.start, self.end = start, end
        self.body_start, body_end = start + 2, end - 2
        self.strip_before = text.startswith("-", self.body_start)
        self.strip_after = body_end > self.body_start + self.strip_before and text[body_end - 1] == "-"
        self.body_start += self.strip_before
        self.body = text[self.body_start : body_end - self.strip_after]


def scan(text: str) -> tuple[list[str | Span], int | None]:
    """Literal text and `{{ … }}` spans; the offset of a `{{` never closed, if any.

    Like jinja2's lexer: quoted strings are skipped, and `}}` closes only outside brackets, so
    `{{ {'a': {'b': 1}} }}` is one expression.
    """
    parts: list[str | Span] = []
    position, length = 0, len(text)
    while (start := text.find("{{", position)) >= 0:
        if start > position:
            parts.append(text[position:start])
        index, depth, end = start + 2, 0, -1
        while index < length:
            char = text[index]
            if char in "'\"":
                closing = re.compile(rf"{char}|\\.", re.DOTALL)
                index += 1
                while (match := closing.search(text, index)) and match.group() != char:
                    index = match.end()
                index = match.end() if match else length
                continue
            if char in "([{":
                depth += 1
            elif char in ")]}":
                if depth == 0 and text.startswith("}}", index):
                    end = index + 2
                    break
                depth = max(depth - 1, 0)
            index += 1
        if end < 0:
            return parts, start
        parts.append(Span(text, start, end))
        position = end
    if position < length:
        parts.append(text[position:])
    return parts, None


def line_column(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - text.rfind("\n", 0, offset)


# --- Parsing one `{{ … }}` --------------------------------------------------------------------------------


def parse(body: str) -> tuple[nodes.Expr | None, tuple[int, str] | None]:
    """The expression's tree, or the offset in `body` of its syntax error and jinja2's message."""
    raw_position = [0]
    from_lexer = [False]
    kept: list[tuple[Any, int]] = []

    def raw_tokens() -> Iterable[tuple[int, str, str]]:
        # The lexer yields every token, spaces included, so the offset of each is the length of those before.
        tokens = ENV.lexer.tokeniter(body.replace("\r", " "), None, None, "variable")
        while True:
            try:
                token = next(tokens)
            except StopIteration:
                return
            except TemplateSyntaxError:
                from_lexer[0] = True
                raise
            yield token
            raw_position[0] += len(token[2])

    def tokens() -> Iterable[Any]:
        for token in ENV.lexer.wrap(raw_tokens()):
            kept.append((token, raw_position[0]))
            yield token

    parser = Parser(ENV, "", state="variable")
    try:
        parser.stream = TokenStream(tokens(), None, None)
        expr = parser.parse_expression()
        if not parser.stream.eos:
            parser.fail("chunk after expression", parser.stream.current.lineno)
        expr.set_environment(ENV)
    except TemplateSyntaxError as exc:
        message = re.sub(r" at \d+$", "", exc.message or "syntax error")
        if from_lexer[0]:
            return None, (raw_position[0], message)
        offset = next((position for token, position in kept if token is parser.stream.current), len(body.rstrip()))
        return None, (offset, message)
    return expr, None


@lru_cache(maxsize=4096)
def compiled_template(body: str) -> Any:
    """The jinja2 template that stores the expression's value in `result`: compiled once per distinct text."""
    expr, _ = parse(body)
    assert expr is not None
    return ENV.from_string(nodes.Template([nodes.Assign(nodes.Name("result", "store"), expr)], lineno=1))


# --- What an expression reads -------------------------------------------------------------------------------


def name_problems(expr: nodes.Expr) -> list[str]:
    problems: list[str] = []
    named_steps: set[int] = set()
    for node in find(expr, (nodes.Getattr, nodes.Getitem)):
        target = node.node
        if isinstance(target, nodes.Name) and target.name == "steps":
            if isinstance(node, nodes.Getattr) or isinstance(node.arg, nodes.Const) and type(node.arg.value) is str:
                named_steps.add(id(target))
        elif isinstance(node, nodes.Getattr) and isinstance(target, nodes.Getattr | nodes.Getitem):
            owner = target.node
            if isinstance(owner, nodes.Name) and owner.name == "steps" and node.attr not in STEP_FIELDS:
                step = target.attr if isinstance(target, nodes.Getattr) else _const(target.arg)
                if step is not None:
                    fields = ", ".join(STEP_FIELDS)
                    problems.append(f"steps.{step} has no field '{node.attr}' (fields: {fields})")
        if isinstance(node, nodes.Getattr) and isinstance(target, nodes.Name) and target.name == "run":
            if node.attr not in RUN_FIELDS:
                problems.append(f"run has no field '{node.attr}' (fields: {', '.join(RUN_FIELDS)})")
    unknown: list[str] = []
    for name in find(expr, nodes.Name):
        if name.name == "steps" and id(name) not in named_steps:
            problems.append("refer to steps by name (steps.<name>…)")
        elif name.name not in _NAMES_ALLOWED and name.name not in unknown:
            unknown.append(name.name)
    for name in unknown:
        problems.append(f"unknown name '{name}' (names: {', '.join(SCOPE_NAMES)})")
    for kind, found, known in (("filter", nodes.Filter, ENV.filters), ("test", nodes.Test, ENV.tests)):
        for node in find(expr, found):
            if node.name not in known:
                close = difflib.get_close_matches(node.name, list(known), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                problems.append(f"unknown {kind} '{node.name}'{hint}")
    return list(dict.fromkeys(problems))


def find(expr: nodes.Node, kind: Any) -> list[Any]:
    """The nodes of `kind` in the tree, its root included (jinja2's find_all leaves the root out)."""
    found = list(expr.find_all(kind))
    return [expr, *found] if isinstance(expr, kind) else found


def _const(node: nodes.Node) -> Any:
    return node.value if isinstance(node, nodes.Const) else None


def step_references(expr: nodes.Expr) -> set[str]:
    found: set[str] = set()
    for node in find(expr, (nodes.Getattr, nodes.Getitem)):
        if isinstance(node.node, nodes.Name) and node.node.name == "steps":
            if isinstance(node, nodes.Getattr):
                found.add(node.attr)
            elif type(_const(node.arg)) is str:
                found.add(node.arg.value)
    return found


# A segment of a plain read: (is_attribute, key), `.a` or `['a']`.
Segment = tuple[bool, str | int]


def path_of(expr: nodes.Node) -> tuple[str, tuple[Segment, ...]] | None:
    """`steps.a.output[0].url` as ('steps', segments), or None when it is more than a constant read."""
    segments: list[Segment] = []
    while True:
        if isinstance(expr, nodes.Getattr):
            segments.append((True, expr.attr))
        elif isinstance(expr, nodes.Getitem):
            try:
                key = expr.arg.as_const()
            except nodes.Impossible:
                return None
            if type(key) not in (str, int):
                return None
            segments.append((False, key))
        elif isinstance(expr, nodes.Name):
            return expr.name, tuple(reversed(segments))
        else:
            return None
        expr = expr.node
