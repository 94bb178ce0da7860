"""What one operation of an expression may build: each check refuses a memory bomb before it is built.

Values from a run's input or a tool's output reach expressions, so `'-' * n`, padding, joining,
replacing, printf-style and `str.format` formatting, big powers and jinja2's filters that grow their
result are all bounded by what their arguments say they would build.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from jinja2.filters import (
    do_batch,
    do_center,
    do_format,
    do_indent,
    do_replace,
    do_slice,
    do_wordwrap,
    make_attrgetter,
    sync_do_join,
    sync_do_sum,
)
from jinja2.sandbox import SandboxedEnvironment, SandboxedFormatter
from jinja2.utils import pass_environment, pass_eval_context

# The longest text or list one operation may build ('-' * n, padding, join, replace, % and format): values
# from a run's input or a tool's output must not turn an expression into a memory bomb.
MAX_BUILD_SIZE = 1024 * 1024
# What a result may weigh, in characters of text and items of lists; counts shared parts ([big] * n) again.
MAX_RESULT_SIZE = 4 * 1024 * 1024
# Integers past this many bits are slow to compute and cannot be written as JSON (Python stops at 4,300 digits).
MAX_INT_BITS = 4096
# jinja2's own cap on `range`, applied to `slice`, which builds one list per slice.
MAX_SLICES = 100_000


class TooLarge(Exception):
    pass


def type_name(value: Any) -> str:
    """A value's type as messages name it: `null` for None."""
    return "null" if value is None else type(value).__name__


def weigh(value: Any, limit: int) -> int:
    """About the length of `value` as text (characters plus items); stops counting once past `limit`."""
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, dict):
            total += len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            total += len(item)
            stack.extend(item)
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        else:
            total += 8
    return total


def refuse_build(size: int, what: str) -> None:
    if size > MAX_BUILD_SIZE:
        raise TooLarge(f"{what} would build {size:,} characters or items, more than the {MAX_BUILD_SIZE:,} allowed")


def check_int(number: int) -> None:
    if number.bit_length() > MAX_INT_BITS:
        raise TooLarge(f"a number larger than 2**{MAX_INT_BITS}")


def check_binop(operator: str, left: Any, right: Any) -> None:
    """`'a' * 10**10`, `2 ** 10**9`, `'%*s' % (10**9, x)`: refused before Python starts building them."""
    if operator == "*":
        _check_repeat(left, right)
        _check_repeat(right, left)
        if type(left) is int and type(right) is int and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise TooLarge(f"a number larger than 2**{MAX_INT_BITS}")
    elif operator == "**":
        if type(left) is int and type(right) is int and right > 0 and abs(left) > 1:
            if (abs(left).bit_length() - 1) * right > MAX_INT_BITS:
                raise TooLarge(f"a number larger than 2**{MAX_INT_BITS}")
    elif operator == "%":
        _check_percent(left, right)


def _check_repeat(sequence: Any, count: Any) -> None:
    if isinstance(sequence, str | bytes | list | tuple) and isinstance(count, int) and count > 1:
        refuse_build(weigh(sequence, MAX_BUILD_SIZE // count) * count, "'*'")


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0 +\-]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([a-zA-Z%])")


def _check_percent(template: Any, values: Any) -> None:
    """`'%*s' % (10**9, x)`, `'%(a)s' * 10**5 % {'a': big}`: the text printf-style formatting would make."""
    if not isinstance(template, str):
        return
    specs = _PERCENT_SPEC.findall(template)
    if not specs:
        return
    if isinstance(values, Mapping):
        values = list(values.values())
    elif not isinstance(values, tuple):
        values = [values]
    widest = max((weigh(value, MAX_BUILD_SIZE) for value in values), default=0)
    star = max((abs(value) for value in values if isinstance(value, int)), default=0)
    size = len(template)
    for width, precision, kind in specs:
        if kind != "%":
            pad = max((star if number == "*" else int(number or 0)) for number in (width, precision))
            size += pad + widest
            refuse_build(size, "formatting")


def _check_replace(text: Any, old: Any, new: Any, count: Any) -> None:
    if isinstance(text, str | bytes) and isinstance(old, str | bytes) and isinstance(new, str | bytes):
        found = text.count(old) if old else len(text) + 1
        if isinstance(count, int) and count >= 0:
            found = min(found, count)
        refuse_build(len(text) + found * max(len(new) - len(old), 0), "replace")


class BoundedFormatter(SandboxedFormatter):
    """str.format with a bound on every field's width and on the text built so far."""

    def __init__(self, env: SandboxedEnvironment) -> None:
        super().__init__(env)
        self.size = 0

    def format_field(self, value: Any, format_spec: str) -> Any:
        for number in re.findall(r"\d+", format_spec):
            refuse_build(int(number), "a format width")
        text = super().format_field(value, format_spec)
        self.size += len(text)
        refuse_build(self.size, "formatting")
        return text


def bounded_method(method: Any) -> Any:
    """A text or bytes method that can grow its result far past its inputs, with the growth checked first."""
    owner, name = method.__self__, method.__name__
    if isinstance(owner, int) and name == "to_bytes":

        def to_bytes(length: int = 1, *args: Any, **kwargs: Any) -> bytes:
            refuse_build(length if isinstance(length, int) else 0, "to_bytes")
            return method(length, *args, **kwargs)

        return to_bytes
    if not isinstance(owner, str | bytes):
        return method
    if name in ("center", "ljust", "rjust", "zfill"):

        def pad(width: int, *args: Any) -> Any:
            refuse_build(width if isinstance(width, int) else 0, name)
            return method(width, *args)

        return pad
    if name == "expandtabs":

        def expandtabs(tabsize: int = 8) -> Any:
            tabs = owner.count("\t" if isinstance(owner, str) else b"\t")
            refuse_build(len(owner) + tabs * (tabsize if isinstance(tabsize, int) else 0), name)
            return method(tabsize)

        return expandtabs
    if name == "join":

        def join(iterable: Iterable[Any]) -> Any:
            items = list(iterable)
            refuse_build(weigh(items, MAX_BUILD_SIZE) + len(owner) * len(items), name)
            return method(items)

        return join
    if name == "replace":

        def replace(old: Any, new: Any, count: int = -1) -> Any:
            _check_replace(owner, old, new, count)
            return method(old, new, count)

        return replace
    if name == "translate" and isinstance(owner, str):

        def translate(table: Any) -> str:
            values = table.values() if isinstance(table, Mapping) else table if isinstance(table, list | tuple) else ()
            longest = max((len(value) for value in values if isinstance(value, str)), default=1)
            refuse_build(len(owner) * longest, name)
            return method(table)

        return translate
    return method


# --- jinja2's filters that can grow without bound, checked ----------------------------------------------------


def _center(value: Any, width: int = 80) -> str:
    refuse_build(width if isinstance(width, int) else 0, "center")
    return do_center(value, width)


def _indent(text: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    prefix = width if isinstance(width, str) else " " * min(int(width), MAX_BUILD_SIZE + 1)
    refuse_build(len(str(text)) + (str(text).count("\n") + 1) * len(prefix), "indent")
    return do_indent(text, width, first, blank)


def _format(value: Any, *args: Any, **kwargs: Any) -> str:
    _check_percent(str(value), kwargs or args)
    return do_format(value, *args, **kwargs)


@pass_eval_context
def _join(eval_ctx: Any, value: Iterable[Any], d: str = "", attribute: str | int | None = None) -> str:
    if attribute is not None:
        value = map(make_attrgetter(eval_ctx.environment, attribute), value)
    items = list(value)
    refuse_build(weigh(items, MAX_BUILD_SIZE) + len(str(d)) * len(items), "join")
    return sync_do_join(eval_ctx, items, d)


@pass_eval_context
def _replace(eval_ctx: Any, text: Any, old: Any, new: Any, count: int | None = None) -> str:
    _check_replace(str(text), str(old), str(new), count)
    return do_replace(eval_ctx, text, old, new, count)


@pass_environment
def _wordwrap(
    environment: Any,
    text: Any,
    width: int = 79,
    break_long_words: bool = True,
    wrapstring: str | None = None,
    break_on_hyphens: bool = True,
) -> str:
    text = str(text)
    lines = len(text) // max(int(width), 1) + text.count("\n") + 1
    refuse_build(len(text) + lines * len(wrapstring or "\n"), "wordwrap")
    return do_wordwrap(environment, text, width, break_long_words, wrapstring, break_on_hyphens)


def _batch(value: Any, linecount: int, fill_with: Any = None) -> list[list[Any]]:
    refuse_build(int(linecount), "batch")
    return list(do_batch(value, linecount, fill_with))


def _slice(value: Any, slices: int, fill_with: Any = None) -> list[list[Any]]:
    if int(slices) > MAX_SLICES:
        raise TooLarge(f"slice: {slices:,} slices, more than the {MAX_SLICES:,} allowed")
    return list(do_slice(value, slices, fill_with))


@pass_environment
def _sum(environment: Any, iterable: Iterable[Any], attribute: str | int | None = None, start: Any = 0) -> Any:
    if not isinstance(start, list):
        return sync_do_sum(environment, iterable, attribute, start)
    # Adding lists one by one copies the total again each time: join them in one pass instead.
    if attribute is not None:
        iterable = map(make_attrgetter(environment, attribute), iterable)
    total = list(start)
    for part in iterable:
        if not isinstance(part, list):
            raise TypeError(f'can only concatenate list (not "{type_name(part)}") to list')
        refuse_build(len(total) + len(part), "sum")
        total.extend(part)
    return total


# jinja2's filters of the same names, replaced in the sandbox.
BOUNDED_FILTERS: dict[str, Callable[..., Any]] = {
    "center": _center,
    "indent": _indent,
    "format": _format,
    "join": _join,
    "replace": _replace,
    "wordwrap": _wordwrap,
    "batch": _batch,
    "slice": _slice,
    "sum": _sum,
}
