"""The sandboxed Jinja environment expressions run in, its filters, and the conversion of results to JSON.

jinja2's ImmutableSandboxedEnvironment, with: undefined values that chain but never become text; every
operation that could build without bound checked first (web.expression_limits); unsafe attributes failing
at once; a JSON object's keys found before dict methods; and the filters MCP text outputs need.
"""

from __future__ import annotations

import json
import math
import types
from collections.abc import Iterable
from typing import Any, NoReturn

from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.runtime import ChainableUndefined, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from web.expression_limits import (
    BOUNDED_FILTERS,
    MAX_RESULT_SIZE,
    BoundedFormatter,
    TooLarge,
    bounded_method,
    check_binop,
    check_int,
    type_name,
)
from web.json_limits import DEFAULT_MAX_DEPTH, JsonProblem, parse

# --- Undefined: chains, tests false, but never becomes text -------------------------------------------------


class UndefinedUsed(UndefinedError):
    def __init__(self, undefined: Undefined) -> None:
        super().__init__(undefined._undefined_message)
        self.undefined = undefined


class ChainedUndefined(ChainableUndefined):
    """`input.a.b.c` stays undefined; `or`, `default` and `is defined` work; text, loops and arithmetic fail."""

    __slots__ = ()

    def _fail_with_undefined_error(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise UndefinedUsed(self)


_FAILING = [name for name, value in vars(Undefined).items() if value is Undefined._fail_with_undefined_error]
for _name in {"__str__", "__iter__", "__len__", *_FAILING} - set(vars(ChainableUndefined)):
    setattr(ChainedUndefined, _name, ChainedUndefined._fail_with_undefined_error)


# --- The environment --------------------------------------------------------------------------------------


class SandboxEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(__obj, types.BuiltinMethodType):
            __obj = bounded_method(__obj)
        result = super().call(__context, __obj, *args, **kwargs)
        if isinstance(result, str | bytes) and len(result) > MAX_RESULT_SIZE:
            raise TooLarge(f"text of {len(result):,} characters, more than the {MAX_RESULT_SIZE:,} allowed")
        return result

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Scenario data is JSON, and MCP results often hold an "items" key: on an object, `.items` is that key.
        # Only a name that is not a key reaches the dict method (`x.items() | list`), through the sandbox's checks.
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        # Fail at once: an unsafe attribute must not pass for an undefined one (and be left out quietly).
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")

    def wrap_str_format(self, value: Any) -> Any:
        if not isinstance(value, types.BuiltinMethodType) or value.__name__ not in ("format", "format_map"):
            return None
        text = value.__self__
        if not isinstance(text, str):
            return None
        is_format_map = value.__name__ == "format_map"

        def format_(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                args, kwargs = (), args[0]
            return str(BoundedFormatter(self).vformat(text, args, kwargs))

        return format_


# --- Filters: the three MCP text outputs need ---------------------------------------------------------------


class FilterError(ValueError):
    pass


def _fromjson(value: Any) -> Any:
    """Parse JSON text; a value that is already JSON (not text) is given back as it is."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if not isinstance(value, str):
        return value
    try:
        return parse(value, max_depth=DEFAULT_MAX_DEPTH)
    except JsonProblem as problem:
        raise FilterError(f"fromjson: {problem.message}") from None


def _tojson(value: Any, indent: int | None = None) -> str:
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if indent is not None and not 0 <= indent <= 16:
        raise FilterError("tojson: indent must be between 0 and 16")
    separators = None if indent is not None else (",", ":")
    return json.dumps(to_json(value), ensure_ascii=False, indent=indent, separators=separators)


def _lines(value: Any) -> list[str]:
    """Text → its non-empty lines, stripped: what a tool that answers one result per line needs."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if not isinstance(value, str):
        raise FilterError(f"lines: expects text, not {type_name(value)}")
    return [line.strip() for line in value.splitlines() if line.strip()]


def _make_environment() -> SandboxEnvironment:
    env = SandboxEnvironment(undefined=ChainedUndefined, autoescape=False)
    env.globals.pop("lipsum", None)  # builds text of any size; nothing a workflow needs
    env.filters.pop("urlize", None)  # HTML links, of a size its arguments decide
    env.filters.update(BOUNDED_FILTERS, fromjson=_fromjson, tojson=_tojson, lines=_lines)
    return env


ENV = _make_environment()
GLOBALS = dict(ENV.globals)


# --- Results: JSON only -----------------------------------------------------------------------------------


def to_json(value: Any) -> Any:
    """`value` as strict JSON: undefined parts left out (null in a list), anything else refused by name."""
    budget = [MAX_RESULT_SIZE]
    return _convert(value, 0, budget)


def _convert(value: Any, depth: int, budget: list[int]) -> Any:
    kind = type(value)
    if kind is str:
        check_text(value)
        budget[0] -= len(value)
    elif kind is int:
        check_int(value)
        budget[0] -= 1
    elif kind is bool or value is None:
        budget[0] -= 1
    elif kind is float:
        if not math.isfinite(value):
            raise FilterError(f"{value} is not a JSON number: numbers must be finite")
        budget[0] -= 1
    elif isinstance(value, list | tuple):
        if depth >= DEFAULT_MAX_DEPTH:
            raise FilterError(f"nested deeper than {DEFAULT_MAX_DEPTH} levels")
        budget[0] -= len(value)
        _check_budget(budget)
        value = [None if isinstance(item, Undefined) else _convert(item, depth + 1, budget) for item in value]
    elif isinstance(value, dict):
        if depth >= DEFAULT_MAX_DEPTH:
            raise FilterError(f"nested deeper than {DEFAULT_MAX_DEPTH} levels")
        budget[0] -= len(value)
        _check_budget(budget)
        converted = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise FilterError(f"an object key must be text, not {type_name(key)} ({key!r})")
            check_text(key)
            if not isinstance(item, Undefined):
                converted[str(key)] = _convert(item, depth + 1, budget)
        value = converted
    elif isinstance(value, str):  # Markup and other text types
        value = check_text(str(value))
        budget[0] -= len(value)
    elif isinstance(value, int):  # an int subclass, e.g. an IntEnum
        value = int(value)
        check_int(value)
    else:
        hint = " (add '| list')" if isinstance(value, Iterable) and not isinstance(value, bytes) else ""
        raise FilterError(f"a {type_name(value)} object is not a JSON value{hint}")
    _check_budget(budget)
    return value


def check_text(text: str) -> str:
    """`text` if UTF-8 can hold it: an expression may build a lone surrogate (`'\\ud800'`), which no JSON
    reader, tool or history takes."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            bad = text[exc.start : exc.end]
            raise FilterError(f"text that is not valid Unicode ({bad.encode('unicode_escape').decode()})") from None
    return text


def _check_budget(budget: list[int]) -> None:
    if budget[0] < 0:
        raise TooLarge(f"the result is larger than the {MAX_RESULT_SIZE:,} characters and items allowed")


def as_text(value: Any) -> str:
    """A value inside text: strings as they are, anything else as compact JSON (`true`, `null`, `[1,2]`)."""
    kind = type(value)
    if kind is str:
        return check_text(value)
    if kind is int:
        check_int(value)
        return str(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if isinstance(value, str):
        return check_text(str(value))
    return json.dumps(to_json(value), ensure_ascii=False, separators=(",", ":"))
