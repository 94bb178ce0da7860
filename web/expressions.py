"""Scenario values with `{{ … }}` expressions: compiled once when a file loads, evaluated per run in a sandbox.

A value of a scenario (a step's `input`, its `when` and `for_each`, the run's `output`) becomes a Node.
Compiling finds every problem of the whole value at once (web.expression_syntax); evaluating reads the
run's scope (`input`, `steps`, `item`, `item_index`, `run`) in the sandbox (web.expression_sandbox) and
gives JSON:

- a string that is exactly one `{{ expr }}` gives the expression's value with its JSON type; undefined,
  it is OMIT (its argument is left out). Any other string with `{{` is text: undefined inside it fails.
- `{"value": x}` is x, unevaluated; `{"from": "input.a.0"}` reads a dotted path as version 1 files do.
- Objects and lists are walked: a key whose value is OMIT is left out, OMIT in a list becomes null.

A path that only reads (`{{ steps.a.output.items[0] }}`) is followed in plain Python, without Jinja: the
common case costs about a microsecond. Values returned may share structure with the scenario and the
scope; callers must not change them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Final, Protocol

from jinja2 import nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.runtime import Undefined
from jinja2.utils import missing

from web.expression_limits import MAX_RESULT_SIZE, TooLarge, type_name
from web.expression_sandbox import ENV, GLOBALS, ChainedUndefined, FilterError, UndefinedUsed, as_text, to_json
from web.expression_syntax import (
    SCOPE_NAMES,
    Segment,
    compiled_template,
    find,
    line_column,
    name_problems,
    parse,
    path_of,
    scan,
    step_references,
)


class _Omitted:
    def __repr__(self) -> str:
        return "OMIT"


OMIT: Final = _Omitted()


class TemplateSyntaxProblem(Exception):
    """Every problem of a value, each naming its field: raised by compile_value and compile_expression."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class EvaluationError(Exception):
    """`<field>: {{ source }}: <what went wrong>`."""


class Node(Protocol):
    def references(self) -> set[str]: ...

    def uses_item(self) -> bool: ...

    def evaluate(self, scope: Mapping[str, Any]) -> Any: ...

    def describe(self) -> str: ...


# --- Paths: a plain read of the scope, followed without Jinja ----------------------------------------------

# A key of a JSON object wins over a method of the same name, as in the sandbox; a method name that is not a
# key, or any attribute of a list, goes to Jinja.
_DICT_ATTRIBUTES = frozenset(name for name in dir(dict) if not name.startswith("_"))
_LIST_ATTRIBUTES = frozenset(name for name in dir(list) if not name.startswith("_"))
_SLOW = object()


def _follow(value: Any, segments: tuple[Segment, ...]) -> tuple[Any, int]:
    """(value found, -1), or (the container, index of the segment that found nothing), or (_SLOW, -1)."""
    for index, (_, key) in enumerate(segments):
        kind = type(value)
        if type(key) is str:
            if kind is dict:
                if key in value:
                    value = value[key]
                    continue
                if key in _DICT_ATTRIBUTES:
                    return _SLOW, -1
                return value, index
            if kind is list:
                return (_SLOW, -1) if key in _LIST_ATTRIBUTES else (value, index)
        elif type(key) is int and kind is list:
            if -len(value) <= key < len(value):
                value = value[key]
                continue
            return value, index
        elif type(key) is int and kind is dict:
            return value, index
        if value is None:
            return value, index
        return _SLOW, -1
    return value, -1


def _render_path(root: str, segments: tuple[Segment, ...]) -> str:
    text = root
    for is_attribute, key in segments:
        text += f".{key}" if is_attribute else f"[{key!r}]"
    return text


def _undefined_message(root: str, segments: tuple[Segment, ...], container: Any, index: int) -> str:
    # The first part of the path that has no value: the missing key, or the null it was looked for in.
    shown = segments[:index] if container is None else segments[: index + 1]
    return f"'{_render_path(root, shown)}' is undefined"


# --- One `{{ … }}` and the text around it ----------------------------------------------------------------


class _Expression:
    """One `{{ … }}`: its source, what it reads, and how to evaluate it."""

    __slots__ = ("source", "field", "references", "uses_item", "_path", "_paths", "_body", "_template")

    def __init__(self, source: str, body: str, expr: nodes.Expr, field: str) -> None:
        self.source = source
        self.field = field
        self.references = step_references(expr)
        names = {name.name for name in find(expr, nodes.Name)}
        self.uses_item = bool(names & {"item", "item_index"})
        path = path_of(expr)
        # A private name is the sandbox's to refuse, even after a part that found nothing.
        plain = path is not None and path[0] in SCOPE_NAMES and not any(str(key)[:1] == "_" for _, key in path[1])
        self._path = path if plain else None
        # Every constant read inside, to say which one was undefined when the expression fails on it.
        self._paths = [p for node in find(expr, (nodes.Getattr, nodes.Getitem)) if (p := path_of(node))]
        self._body = body
        # Compiled when first needed: plain reads never need Jinja, and `stepline validate` never evaluates.
        self._template: Any = None

    def value(self, scope: Mapping[str, Any]) -> Any:
        """The expression's value: a scope value as it is, another result as JSON, or an Undefined."""
        if self._path is not None:
            root, segments = self._path
            start = scope.get(root, _SLOW)
            found, missing_at = _follow(start, segments) if start is not _SLOW else (_SLOW, -1)
            if found is not _SLOW:
                if missing_at >= 0:
                    return ChainedUndefined(hint=_undefined_message(root, segments, found, missing_at))
                return found
        try:
            template = self._template or self._compile()
            # What Template.new_context does, without merging a ChainMap of globals: a third of the cost.
            context = ENV.context_class(ENV, {**GLOBALS, **scope}, None, {})
            for _ in template.root_render_func(context):
                pass
            result = context.vars["result"]
            return result if isinstance(result, Undefined) else to_json(result)
        except UndefinedUsed as exc:
            raise self.error(self._explain(exc.undefined, scope)) from None
        except (UndefinedError, SecurityError, TooLarge, FilterError, ArithmeticError, TypeError, ValueError) as exc:
            raise self.error(str(exc)) from None
        except Exception as exc:  # anything the sandboxed code raised fails the step, never the service
            raise self.error(f"{type(exc).__name__}: {exc}") from None

    def _compile(self) -> Any:
        self._template = compiled_template(self._body)
        return self._template

    def error(self, reason: str) -> EvaluationError:
        return EvaluationError(f"{self.field}: {self.source}: {reason}")

    def undefined_error(self, undefined: Undefined, scope: Mapping[str, Any]) -> EvaluationError:
        return self.error(self._explain(undefined, scope))

    def _explain(self, undefined: Undefined, scope: Mapping[str, Any]) -> str:
        obj, name = undefined._undefined_obj, undefined._undefined_name
        if undefined._undefined_hint is None and obj is not missing:
            for root, segments in self._paths:
                if root not in scope:
                    continue
                container, missing_at = _follow(scope[root], segments)
                if missing_at >= 0 and container is obj and segments[missing_at][1] == name:
                    return _undefined_message(root, segments, container, missing_at)
        return undefined._undefined_message


def _compile_segments(text: str, field: str) -> list[str | _Expression]:
    """Text parts and compiled expressions, whitespace control (`{{-`, `-}}`) applied; or every problem."""
    problems: list[str] = []
    parts, unclosed = scan(text)
    compiled: list[str | _Expression] = []
    strip_next = False
    for part in parts:
        if isinstance(part, str):
            compiled.append(part.lstrip() if strip_next else part)
            continue
        if part.strip_before and compiled and isinstance(compiled[-1], str):
            compiled[-1] = compiled[-1].rstrip()
        strip_next = part.strip_after
        expr, error = parse(part.body)
        if error is not None:
            line, column = line_column(text, part.body_start + error[0])
            problems.append(f"{field}: template syntax error at line {line}, column {column}: {error[1]}")
            continue
        assert expr is not None
        found = name_problems(expr)
        if found:
            problems.extend(f"{field}: {problem}" for problem in found)
            continue
        compiled.append(_Expression(text[part.start : part.end], part.body, expr, field))
    if unclosed is not None:
        _, error = parse(text[unclosed + 2 :])
        offset, message = (unclosed + 2 + error[0], error[1]) if error else (unclosed, "'{{' is not closed by '}}'")
        line, column = line_column(text, offset)
        problems.append(f"{field}: template syntax error at line {line}, column {column}: {message}")
    if problems:
        raise TemplateSyntaxProblem(problems)
    return [part for part in compiled if not isinstance(part, str) or part]


# --- Nodes --------------------------------------------------------------------------------------------------


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class LiteralNode:
    """A value taken as it is: plain JSON, a `{"value": x}`, or a string without `{{`."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def references(self) -> set[str]:
        return set()

    def uses_item(self) -> bool:
        return False

    def evaluate(self, scope: Mapping[str, Any]) -> Any:
        return self.value

    def describe(self) -> str:
        return _compact(self.value)


class ValueNode:
    """A string that is exactly one `{{ expr }}`: the expression's value, with its JSON type."""

    __slots__ = ("expression",)

    def __init__(self, expression: _Expression) -> None:
        self.expression = expression

    def references(self) -> set[str]:
        return set(self.expression.references)

    def uses_item(self) -> bool:
        return self.expression.uses_item

    def evaluate(self, scope: Mapping[str, Any]) -> Any:
        result = self.expression.value(scope)
        return OMIT if isinstance(result, Undefined) else result

    def describe(self) -> str:
        return self.expression.source


class TextNode:
    """A string with `{{ … }}` among other text: always text; undefined inside it is an error."""

    __slots__ = ("source", "parts")

    def __init__(self, source: str, parts: list[str | _Expression]) -> None:
        self.source = source
        self.parts = parts

    def references(self) -> set[str]:
        return set().union(*(part.references for part in self.parts if isinstance(part, _Expression)))

    def uses_item(self) -> bool:
        return any(part.uses_item for part in self.parts if isinstance(part, _Expression))

    def evaluate(self, scope: Mapping[str, Any]) -> Any:
        pieces: list[str] = []
        size = 0
        for part in self.parts:
            if isinstance(part, str):
                piece = part
            else:
                value = part.value(scope)
                if isinstance(value, Undefined):
                    raise part.undefined_error(value, scope)
                try:
                    piece = as_text(value)
                except (FilterError, TooLarge) as exc:
                    raise part.error(str(exc)) from None
            size += len(piece)
            if size > MAX_RESULT_SIZE:
                raise part.error(f"the text is longer than the {MAX_RESULT_SIZE:,} characters allowed")
            pieces.append(piece)
        return "".join(pieces)

    def describe(self) -> str:
        return self.source


class PathNode:
    """`{"from": "input.a.0.b"}`: a dotted path, as version 1 files read it; finding nothing gives OMIT."""

    __slots__ = ("path", "segments")

    def __init__(self, path: str) -> None:
        self.path = path
        self.segments = path.split(".")

    def references(self) -> set[str]:
        return {self.segments[1]} if self.segments[0] == "steps" else set()

    def uses_item(self) -> bool:
        return False

    def evaluate(self, scope: Mapping[str, Any]) -> Any:
        current: Any = scope
        for segment in self.segments:
            if isinstance(current, Mapping) and segment in current:
                current = current[segment]
            elif isinstance(current, list) and segment.isdigit() and int(segment) < len(current):
                current = current[int(segment)]
            else:
                return OMIT
        return current

    def describe(self) -> str:
        return f"from {self.path}"


def _path_problem(path: str) -> str | None:
    segments = path.split(".")
    if any(segment == "" for segment in segments):
        return f"path '{path}' has an empty segment"
    if segments[0] == "input":
        return None
    if segments[0] != "steps":
        return f"path '{path}' must start with 'input.' or 'steps.'"
    if len(segments) < 3 or segments[2] != "output":
        return f"path '{path}' must read 'steps.<step name>.output…'"
    return None


class ObjectNode:
    """An object some of whose values are evaluated; a value that is OMIT leaves its key out."""

    __slots__ = ("items", "raw")

    def __init__(self, items: dict[str, Node], raw: Any) -> None:
        self.items = items
        self.raw = raw

    def references(self) -> set[str]:
        return set().union(*(node.references() for node in self.items.values()))

    def uses_item(self) -> bool:
        return any(node.uses_item() for node in self.items.values())

    def evaluate(self, scope: Mapping[str, Any]) -> dict[str, Any]:
        result = {}
        for key, node in self.items.items():
            value = node.evaluate(scope)
            if value is not OMIT:
                result[key] = value
        return result

    def describe(self) -> str:
        return _compact(self.raw)


class ListNode:
    """A list some of whose items are evaluated; an item that is OMIT becomes null."""

    __slots__ = ("nodes", "raw")

    def __init__(self, items: list[Node], raw: Any) -> None:
        self.nodes = items
        self.raw = raw

    def references(self) -> set[str]:
        return set().union(*(node.references() for node in self.nodes))

    def uses_item(self) -> bool:
        return any(node.uses_item() for node in self.nodes)

    def evaluate(self, scope: Mapping[str, Any]) -> list[Any]:
        return [None if (value := node.evaluate(scope)) is OMIT else value for node in self.nodes]

    def describe(self) -> str:
        return _compact(self.raw)


# --- Compiling --------------------------------------------------------------------------------------------


def compile_value(raw: Any, *, field: str, templates: bool) -> Node:
    """A scenario value as a Node; TemplateSyntaxProblem lists every problem found anywhere in it.

    The top-level object (a step's arguments, the output's fields) is always an ObjectNode; below it,
    `{"value": x}` and `{"from": path}` are the special forms. Strings become templates only when
    `templates` (version 2 files); version 1 strings stay literal.
    """
    problems: list[str] = []
    node = _compile(raw, field, templates, problems, top=True)
    if problems:
        raise TemplateSyntaxProblem(problems)
    return node


def _compile(raw: Any, field: str, templates: bool, problems: list[str], *, top: bool = False) -> Node:
    if isinstance(raw, dict):
        if not top and len(raw) == 1:
            if "value" in raw:
                return LiteralNode(raw["value"])
            if isinstance(raw.get("from"), str):
                problem = _path_problem(raw["from"])
                if problem:
                    problems.append(f"{field}: {problem}")
                return PathNode(raw["from"])
        items = {key: _compile(value, f"{field}.{key}", templates, problems) for key, value in raw.items()}
        if not top and all(isinstance(node, LiteralNode) for node in items.values()):
            return LiteralNode({key: node.evaluate({}) for key, node in items.items()})
        return ObjectNode(items, raw)
    if isinstance(raw, list):
        nodes_ = [_compile(value, f"{field}.{index}", templates, problems) for index, value in enumerate(raw)]
        if all(isinstance(node, LiteralNode) for node in nodes_):
            return LiteralNode([node.evaluate({}) for node in nodes_])
        return ListNode(nodes_, raw)
    if isinstance(raw, str) and templates and "{{" in raw:
        try:
            return _template(raw, field)
        except TemplateSyntaxProblem as problem:
            problems.extend(problem.problems)
            return LiteralNode(raw)
    return LiteralNode(raw)


def _template(text: str, field: str) -> ValueNode | TextNode:
    parts = _compile_segments(text, field)
    if len(parts) == 1 and isinstance(parts[0], _Expression) and parts[0].source == text:
        return ValueNode(parts[0])
    return TextNode(text, parts)


def compile_expression(raw: str | bool, *, field: str) -> Node:
    """`when` and `for_each`: a bool, or a string that is exactly one `{{ expr }}`."""
    if isinstance(raw, bool):
        return LiteralNode(raw)
    shape = f'{field}: must be a single {{{{ … }}}} expression, e.g. "{{{{ steps.check.output.ok }}}}"'
    if not isinstance(raw, str):
        raise TemplateSyntaxProblem([f"{shape}, not {type_name(raw)}"])
    node = _template(raw.strip(), field)
    if not isinstance(node, ValueNode):
        raise TemplateSyntaxProblem([f"{shape}, not text: {_compact(raw)}"])
    return node


# --- What a value reads, for checking it against schemas before any run -----------------------------------

# A plain read of the scope: its root name (`input`, `steps`, `item`…) and the keys after it.
ReadPath = tuple[str, tuple[Segment, ...]]


def read_paths(node: Node) -> list[ReadPath]:
    """The plain reads in `node` (`input.zone`, `steps.a.output[0].url`), each once and longest first found.

    A read stops where it stops being plain: `steps.a.output.items | first` reads `steps.a.output.items`,
    `input.get('zone')` reads only `input`.
    """
    if isinstance(node, PathNode):
        found = [(node.segments[0], tuple((True, segment) for segment in node.segments[1:]))]
    elif isinstance(node, ValueNode):
        found = _expression_reads(node.expression)
    elif isinstance(node, TextNode):
        found = [path for part in node.parts if isinstance(part, _Expression) for path in _expression_reads(part)]
    elif isinstance(node, ObjectNode):
        found = [path for child in node.items.values() for path in read_paths(child)]
    elif isinstance(node, ListNode):
        found = [path for child in node.nodes for path in read_paths(child)]
    else:
        found = []
    return list(dict.fromkeys(found))


def _expression_reads(expression: _Expression) -> list[ReadPath]:
    return list(_reads_of(expression._body))


@lru_cache(maxsize=4096)
def _reads_of(body: str) -> tuple[ReadPath, ...]:
    """Parsed once per distinct text: a scenario page checks its scenario on every view."""
    expr, _ = parse(body)
    if expr is None:  # compiled once already, so it parses
        return ()
    called = {id(call.node) for call in find(expr, nodes.Call)}
    reads: list[ReadPath] = []
    for read in find(expr, (nodes.Getattr, nodes.Getitem)):
        # A method called is no field read: its owner is.
        path = path_of(read.node if id(read) in called else read)
        if path is not None and path[0] in SCOPE_NAMES:
            reads.append(path)
    # `input.a.b` contains the read of `input.a`: keep the longest of each chain.
    return tuple(
        (root, keys)
        for root, keys in reads
        if not any(other[0] == root and len(other[1]) > len(keys) and other[1][: len(keys)] == keys for other in reads)
    )


def render_path(root: str, segments: tuple[Segment, ...]) -> str:
    """A read as an expression writes it: `steps.a.output[0].url`."""
    return _render_path(root, segments)


def bound_path(node: Node) -> ReadPath | None:
    """The read a whole value is, when it is nothing else: `"{{ input.zone }}"` or `{"from": "input.zone"}`."""
    if isinstance(node, PathNode):
        return node.segments[0], tuple((True, segment) for segment in node.segments[1:])
    if isinstance(node, ValueNode):
        return node.expression._path
    return None
