"""The sandboxed expressions of scenario values: typing, undefined, filters, limits and load-time problems."""

from __future__ import annotations

from typing import Any

import pytest

from web.expression_limits import MAX_BUILD_SIZE
from web.expressions import (
    OMIT,
    EvaluationError,
    ObjectNode,
    TemplateSyntaxProblem,
    compile_expression,
    compile_value,
)

FIELD = "steps.1 (b).input"
NAMES = "(names: input, steps, item, item_index, run)"

SCOPE: dict[str, Any] = {
    "input": {"url": "https://example.org/a", "count": 3, "tags": ["x", "y"], "deep": {"list": [{"id": 7}]}},
    "steps": {
        "a": {
            "output": {"url": "https://example.org/b", "items": {"k": 1}, "text": "one\n\n two \n"},
            "status": "success",
        },
        "skipped": {"output": None, "status": "skipped", "text": None},
        "a-b": {"output": [1, 2, 3], "status": "success", "text": "[1,2,3]"},
    },
    "run": {"id": "run-1"},
}


def compiled(raw: Any, *, templates: bool = True) -> Any:
    """The node of `raw` as one argument of a step's input."""
    return compile_value({"x": raw}, field=FIELD, templates=templates).items["x"]


def value(raw: Any, scope: dict[str, Any] = SCOPE, *, templates: bool = True) -> Any:
    return compiled(raw, templates=templates).evaluate(scope)


def failure(raw: Any, scope: dict[str, Any] = SCOPE) -> str:
    with pytest.raises(EvaluationError) as caught:
        value(raw, scope)
    return str(caught.value)


def problems(raw: Any, *, field: str = FIELD) -> list[str]:
    with pytest.raises(TemplateSyntaxProblem) as caught:
        compile_value(raw, field=field, templates=True)
    return caught.value.problems


# --- Typing -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("{{ input.tags }}", ["x", "y"]),
        ("{{ input.count }}", 3),
        ("{{ input.count * 2 + 0.5 }}", 6.5),
        ("{{ input.count > 2 }}", True),
        ("{{ input.deep }}", {"list": [{"id": 7}]}),
        ("{{ input.deep.list[0].id }}", 7),
        ("{{ input.deep.list.0.id }}", 7),
        ("{{ steps['a-b'].output[-1] }}", 3),
        ("{{ steps['a-b'].output[:2] }}", [1, 2]),
        ("{{ none }}", None),
        ("{{ (1, 2) }}", [1, 2]),
        ("{{ {'a': {'b': [1]}} }}", {"a": {"b": [1]}}),
        ("{{ run.id }}", "run-1"),
        ("{{ steps.a.output['items'] }}", {"k": 1}),
    ],
)
def test_a_whole_expression_keeps_its_json_type(raw: str, expected: Any) -> None:
    assert value(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("count: {{ input.count }}", "count: 3"),
        ("{{ input.tags }} and {{ input.deep }}", '["x","y"] and {"list":[{"id":7}]}'),
        ("ok={{ input.count > 2 }}, none={{ steps.skipped.output }}", "ok=true, none=null"),
        ("é {{ 'ü' }}", "é ü"),
        ("{{ input.count }} ", "3 "),
        ("{{ input.count }}{{ input.count }}", "33"),
        ("a {{- ' b ' -}}  c", "a b c"),
        ("no template }} here", "no template }} here"),
        ("{{ '<b>' }} & {{ '\"q\"' }}", '<b> & "q"'),
    ],
)
def test_other_strings_with_templates_are_text(raw: str, expected: str) -> None:
    assert value(raw) == expected


def test_strings_without_templates_and_version_1_strings_stay_literal() -> None:
    assert value("plain {% if %} text") == "plain {% if %} text"
    assert value("{{ input.url }}", templates=False) == "{{ input.url }}"
    assert compiled("{{ input.url }}", templates=False).references() == set()


def test_nested_objects_and_arrays_are_evaluated_everywhere() -> None:
    raw = {
        "entities": [
            {"name": "{{ input.url }}", "observations": ["{{ input.count }}", "fixed", "n={{ input.count }}"]},
            {"name": {"from": "steps.a.output.url"}, "nested": {"deeper": [{"from": "input.deep.list.0.id"}]}},
        ],
        "limit": 5,
    }
    assert value(raw) == {
        "entities": [
            {"name": "https://example.org/a", "observations": [3, "fixed", "n=3"]},
            {"name": "https://example.org/b", "nested": {"deeper": [7]}},
        ],
        "limit": 5,
    }


def test_value_form_is_kept_literal_and_unevaluated() -> None:
    node = compiled({"wrapped": {"value": {"template": "{{ input.url }}", "from": "input.url"}}})
    assert node.evaluate(SCOPE) == {"wrapped": {"template": "{{ input.url }}", "from": "input.url"}}
    assert node.references() == set()


def test_from_paths_work_nested_in_version_1_and_2() -> None:
    raw = {"pair": [{"from": "input.tags.1"}, {"from": "steps.a.output.url"}], "gone": {"from": "input.nope"}}
    for templates in (False, True):
        node = compiled(raw, templates=templates)
        assert node.evaluate(SCOPE) == {"pair": ["y", "https://example.org/b"]}
        assert node.references() == {"a"}
    assert compiled({"from": "input.url"}).describe() == "from input.url"


def test_a_top_level_object_is_always_the_arguments() -> None:
    """A tool may well take an argument named `value` or `from`: at the top they are plain keys."""
    node = compile_value({"value": "{{ input.count }}", "from": "input.url"}, field=FIELD, templates=True)
    assert isinstance(node, ObjectNode)
    assert node.evaluate(SCOPE) == {"value": 3, "from": "input.url"}
    assert isinstance(compile_value({}, field=FIELD, templates=True), ObjectNode)


# --- Undefined --------------------------------------------------------------------------------------------


def test_an_undefined_whole_value_leaves_its_argument_out() -> None:
    node = compile_value(
        {"url": "{{ steps.skipped.output.url }}", "deep": "{{ input.a.b.c }}", "path": {"from": "input.no"}, "k": 1},
        field=FIELD,
        templates=True,
    )
    assert node.evaluate(SCOPE) == {"k": 1}
    assert node.items["url"].evaluate(SCOPE) is OMIT
    assert node.items["url"].describe() == "{{ steps.skipped.output.url }}"


def test_undefined_inside_a_list_becomes_null_and_inside_an_object_is_left_out() -> None:
    assert value(["{{ input.nope }}", 1]) == [None, 1]
    assert value("{{ [input.nope, 1] }}") == [None, 1]
    assert value("{{ {'a': input.nope, 'b': 2} }}") == {"b": 2}


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ("url: {{ steps.skipped.output.url }}", "'steps.skipped.output' is undefined"),
        ("url: {{ input.nope }}", "'input.nope' is undefined"),
        ("id: {{ input.deep.list[3].id }}", "'input.deep.list[3]' is undefined"),
        ("{{ input.nope ~ '!' }}", "'input.nope' is undefined"),
        ("{{ (input.a | default('z')) ~ input.b.c }}", "'input.b' is undefined"),
        ("{{ input.nope | upper }}", "'input.nope' is undefined"),
        ("{{ input.nope + 1 }}", "'input.nope' is undefined"),
        ("{{ input.nope | length }}", "'input.nope' is undefined"),
        ("{{ input.nope | list }}", "'input.nope' is undefined"),
        ("item: {{ item }}", "'item' is undefined"),
    ],
)
def test_undefined_used_as_text_or_in_arithmetic_fails_naming_it(raw: str, named: str) -> None:
    source = raw[raw.index("{{") :]
    assert failure(raw) == f"{FIELD}.x: {source}: {named}"


def test_undefined_can_be_tested_and_defaulted() -> None:
    assert value("{{ steps.skipped.output or steps.a.output.url }}") == "https://example.org/b"
    assert value("{{ steps.a.output.url or steps.skipped.output }}") == "https://example.org/b"
    assert value("{{ input.nope | default('fallback') }}") == "fallback"
    assert value("{{ input.nope.deeper is defined }}") is False
    assert value("{{ input.nope == 1 }}") is False
    assert value("{{ input.nope if input.count else 'no' }}") is OMIT


# --- Filters ----------------------------------------------------------------------------------------------


def test_lines_fromjson_and_tojson() -> None:
    assert value("{{ 'a\n\n b \n' | lines }}") == ["a", "b"]
    assert value("{{ steps.a.output.text | lines | length }}") == 2
    assert value("{{ steps['a-b'].text | fromjson }}") == [1, 2, 3]
    assert value("{{ steps['a-b'].output | fromjson }}") == [1, 2, 3]  # already JSON: given back
    assert value("{{ {'é': '<b>', 'n': [1, 2]} | tojson }}") == '{"é":"<b>","n":[1,2]}'
    assert value("{{ {'a': 1} | tojson(indent=2) }}") == '{\n  "a": 1\n}'
    assert value("{{ input.tags | join(', ') }}") == "x, y"


def test_filter_misuse_fails_with_the_filter_named() -> None:
    assert failure("{{ '{\"a\": ' | fromjson }}").startswith(f"{FIELD}.x: {{{{ '{{\"a\": ' | fromjson }}}}: fromjson: ")
    assert failure("{{ input.tags | lines }}").endswith(": lines: expects text, not list")
    assert failure("{{ input.nope | tojson }}").endswith(": 'input.nope' is undefined")
    assert failure("{{ ('[' * 100 + ']' * 100) | fromjson }}").endswith(
        "JSON nested deeper than 64 levels (line 1, column 65)"
    )


# --- Results must be JSON ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("{{ range(3) }}", "a range object is not a JSON value (add '| list')"),
        ("{{ input.tags | map('upper') }}", "a generator object is not a JSON value (add '| list')"),
        ("{{ input.url.upper }}", "a builtin_function_or_method object is not a JSON value"),
        ("{{ input.deep.items }}", "a builtin_function_or_method object is not a JSON value"),
        ("{{ namespace(a=1) }}", "a Namespace object is not a JSON value"),
        ("{{ {1: 'a'} }}", "an object key must be text, not int (1)"),
        ("{{ 1e308 * 10 }}", "inf is not a JSON number: numbers must be finite"),
        ("{{ 2 ** 5000 }}", "a number larger than 2**4096"),
        ("x {{ range(3) }}", "a range object is not a JSON value (add '| list')"),
        # A lone surrogate built by an expression: no tool, JSON reader or history could take it.
        ("{{ '\\ud800' }}", "text that is not valid Unicode (\\ud800)"),
        ("a {{ 'caf\\udce9' }} b", "text that is not valid Unicode (\\udce9)"),
        ("{{ {'\\udc00': 1} }}", "text that is not valid Unicode (\\udc00)"),
        ("{{ [input.url ~ '\\ud800'] }}", "text that is not valid Unicode (\\ud800)"),
    ],
)
def test_a_result_that_is_not_json_is_refused_by_type(raw: str, reason: str) -> None:
    assert failure(raw).endswith(f": {reason}")


def test_a_result_nested_too_deep_is_refused() -> None:
    deep = {"d": SCOPE["input"]}
    for _ in range(70):
        deep = {"d": deep}
    assert failure("{{ [input] }}", {**SCOPE, "input": deep}).endswith(": nested deeper than 64 levels")


def test_runtime_errors_name_field_and_expression() -> None:
    assert failure("{{ input.count / 0 }}") == f"{FIELD}.x: {{{{ input.count / 0 }}}}: division by zero"
    assert failure("{{ input.url + 1 }}").endswith('can only concatenate str (not "int") to str')


# --- The sandbox and its limits ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ input.__class__ }}",
        "{{ input.nope.__class__ }}",
        "{{ ''|attr('__class__') }}",
        "text {{ steps.a.output.url.__class__ }}",
        "{{ input.tags.append(1) }}",
        "{{ input.deep.items.__self__ }}",
        "{{ steps.a.output.items.__class__ }}",
    ],
)
def test_escaping_the_sandbox_fails_as_unsafe(raw: str) -> None:
    assert "unsafe" in failure(raw)


@pytest.mark.parametrize(
    ("raw", "limited"),
    [
        ("{{ 'a' * 10**10 }}", "'*' would build 10,000,000,000 characters or items"),
        ("{{ [input] * 10**10 }}", "'*' would build"),
        ("{{ [input.url * 20000] * 100 }}", "'*' would build"),
        ("{{ 2 ** (10**9) }}", "a number larger than 2**4096"),
        ("{{ 7 ** (10**6) }}", "a number larger than 2**4096"),
        ("{{ range(10**9) | list }}", "Range too big"),
        ("{{ 'x'.center(10**10) }}", "center would build"),
        ("{{ 'x'.ljust(10**10) }}", "ljust would build"),
        ("{{ 'x' | center(10**10) }}", "center would build"),
        ("{{ 'x' | indent(10**10, true) }}", "indent would build"),
        ("{{ '%*s' % (10**10, 'a') }}", "formatting would build"),
        ("{{ '%.9999999999f' % 1 }}", "formatting would build"),
        ("{{ ('%(a)s' * 200000) % {'a': 'x' * 100000} }}", "formatting would build"),
        ("{{ '%*s' | format(10**10, 'a') }}", "formatting would build"),
        ("{{ '{:>9999999999}'.format(1) }}", "a format width would build"),
        ("{{ ('{0}' * 300000).format('x' * 100000) }}", "formatting would build"),
        ("{{ 'ab' | replace('', 'x' * 10**6) }}", "replace would build"),
        ("{{ 'ab'.replace('', 'x' * 10**6) }}", "replace would build"),
        ("{{ (['x' * 1000] * 1000) | join('y' * 10**6) }}", "join would build"),
        ("{{ ('y' * 1000).join(['x'] * 2000) }}", "join would build"),
        ("{{ input.tags | batch(10**10, 'x') | list }}", "batch would build"),
        ("{{ input.tags | slice(10**10) | list }}", "10,000,000,000 slices"),
        ("{{ ('x' * 10**6) | wordwrap(1, wrapstring='y' * 1000) }}", "wordwrap would build"),
        ("{{ (1).to_bytes(10**10, 'big') }}", "to_bytes would build"),
        ("{{ ('\t' * 1000).expandtabs(10**9) }}", "expandtabs would build"),
        ("{{ 'aaa'.translate({97: 'x' * 10**6}) }}", "translate would build"),
        ("{{ ([[''] * 1000] * 1000 + [[''] * 1000] * 100) | sum(start=[]) | length }}", "sum would build"),
    ],
)
def test_memory_bombs_are_refused_before_they_are_built(raw: str, limited: str) -> None:
    assert limited in failure(raw)


def test_results_and_text_have_a_size_limit() -> None:
    big = {**SCOPE, "input": {"s": "x" * 1_000_000}}
    assert failure("{{ [input.s, input.s, input.s, input.s, input.s] }}", big).endswith(
        ": the result is larger than the 4,194,304 characters and items allowed"
    )
    assert failure("{{ input.s }}" * 5, big).endswith(": the text is longer than the 4,194,304 characters allowed")
    assert value("{{ input.s }}", big) == "x" * 1_000_000  # a plain read hands the value on as it is


def test_limits_leave_ordinary_work_alone() -> None:
    assert value("{{ '-' * 40 }}") == "-" * 40
    assert value("{{ ([0] * 1000) | length }}") == 1000
    assert value("{{ 2 ** 64 }}") == 2**64
    assert value("{{ '%5.1f|%-4s|' % (3.14159, 'ab') }}") == "  3.1|ab  |"
    assert value("{{ '{:>6}'.format(input.count) }}") == "     3"
    assert value("{{ ([[1, 2]] * 3) | sum(start=[]) }}") == [1, 2, 1, 2, 1, 2]
    assert value("{{ input.tags | batch(3, 'z') | list }}") == [["x", "y", "z"]]
    assert len(value(f"{{{{ 'x' * {MAX_BUILD_SIZE} }}}}")) == MAX_BUILD_SIZE


# --- Problems found when a file is loaded ------------------------------------------------------------------


def test_every_syntax_problem_of_a_value_is_reported_with_field_and_position() -> None:
    raw = {
        "url": "{{ input.url }",
        "list": ["fine {{ input.url }}", "{{ 1 + }}"],
        "nested": {"text": "line one\n  then {{ ) }}"},
        "unclosed": "{{ inptu }} {{ input.url",
        "string": "{{ 'abc }}",
        "chunk": "{{ input.url input.count }}",
        "path": {"inner": {"from": "foo.bar"}},
    }
    assert problems(raw, field="steps.2 (chain).input") == [
        "steps.2 (chain).input.url: template syntax error at line 1, column 14: unexpected '}'",
        "steps.2 (chain).input.list.1: template syntax error at line 1, column 7: unexpected 'end of template'",
        "steps.2 (chain).input.nested.text: template syntax error at line 2, column 11: unexpected ')'",
        f"steps.2 (chain).input.unclosed: unknown name 'inptu' {NAMES}",
        "steps.2 (chain).input.unclosed: template syntax error at line 1, column 13: '{{' is not closed by '}}'",
        'steps.2 (chain).input.string: template syntax error at line 1, column 4: unexpected char "\'"',
        "steps.2 (chain).input.chunk: template syntax error at line 1, column 14: chunk after expression",
        "steps.2 (chain).input.path.inner: path 'foo.bar' must start with 'input.' or 'steps.'",
    ]


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("{{ inptu.url }}", f"unknown name 'inptu' {NAMES}"),
        ("a {{ input.url }} b {{ stpes.a.output }}", f"unknown name 'stpes' {NAMES}"),
        ("{{ lipsum(10**9) }}", f"unknown name 'lipsum' {NAMES}"),
        ("{{ steps | length }}", "refer to steps by name (steps.<name>…)"),
        ("{{ steps[input.url].output }}", "refer to steps by name (steps.<name>…)"),
        ("{{ steps.a.outptu }}", "steps.a has no field 'outptu' (fields: output, status, text, content, structured)"),
        ("{{ run.name }}", "run has no field 'name' (fields: id)"),
        ("{{ input.url | uper }}", "unknown filter 'uper' (did you mean 'upper'?)"),
        ("{{ input.url is strnig }}", "unknown test 'strnig' (did you mean 'string'?)"),
        ("{{ input.url | urlize }}", "unknown filter 'urlize'"),
    ],
)
def test_unknown_names_are_reported_when_the_file_loads(raw: str, problem: str) -> None:
    assert problems({"x": raw}) == [f"{FIELD}.x: {problem}"]


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"from": "input..a"}, "path 'input..a' has an empty segment"),
        ({"from": "steps.a"}, "path 'steps.a' must read 'steps.<step name>.output…'"),
        ({"from": "steps.a.status"}, "path 'steps.a.status' must read 'steps.<step name>.output…'"),
        ({"from": "env.HOME"}, "path 'env.HOME' must start with 'input.' or 'steps.'"),
    ],
)
def test_from_paths_are_checked_as_in_version_1(raw: dict[str, str], problem: str) -> None:
    with pytest.raises(TemplateSyntaxProblem) as caught:
        compile_value({"x": raw}, field=FIELD, templates=False)
    assert caught.value.problems == [f"{FIELD}.x: {problem}"]


def test_references_are_the_steps_read() -> None:
    node = compile_value(
        {
            "a": "{{ steps.first.output.url }}",
            "b": ["{{ steps['a-b'].output | length }} and {{ steps.third.status }}"],
            "c": {"deep": {"from": "steps.fourth.output.x"}},
            "d": "{{ steps.fifth.output[steps.sixth.output.i] if input.flag }}",
            "e": {"value": "{{ steps.literal.output }}"},
            "f": "{{ input.url }}",
        },
        field=FIELD,
        templates=True,
    )
    assert node.references() == {"first", "a-b", "third", "fourth", "fifth", "sixth"}
    assert node.items["f"].references() == set()


def test_uses_item_tells_for_each_steps_apart() -> None:
    assert compiled({"u": "{{ item.url }}"}).uses_item()
    assert compiled(["{{ item_index + 1 }}"]).uses_item()
    assert not compiled("{{ input.items }}").uses_item()
    in_item = {**SCOPE, "item": {"url": "u"}, "item_index": 4}
    assert value({"u": "{{ item.url }}", "i": "{{ item_index }}"}, in_item) == {"u": "u", "i": 4}


def test_describe_shows_what_the_scenario_says() -> None:
    assert compiled("{{input.url}}").describe() == "{{input.url}}"
    assert compiled("see {{ input.url }}").describe() == "see {{ input.url }}"
    assert compiled({"from": "steps.a.output.url"}).describe() == "from steps.a.output.url"
    assert compiled({"value": {"é": 1}}).describe() == '{"é":1}'
    assert compiled({"k": "{{ input.url }}", "n": 1}).describe() == '{"k":"{{ input.url }}","n":1}'
    assert compiled(5).describe() == "5"


# --- when and for_each --------------------------------------------------------------------------------------


def test_compile_expression_takes_one_expression_or_a_bool() -> None:
    assert compile_expression(True, field="steps.0 (a).when").evaluate({}) is True
    when = compile_expression(" {{ steps.a.output['items'].k > 0 }} ", field="steps.0 (a).when")
    assert when.references() == {"a"}
    assert when.evaluate(SCOPE) is True
    assert compile_expression("{{ steps.skipped.output.ok }}", field="w").evaluate(SCOPE) is OMIT
    each = compile_expression("{{ input.tags }}", field="steps.3 (c).for_each")
    assert each.evaluate(SCOPE) == ["x", "y"]


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("steps.a.output", 'must be a single {{ … }} expression, e.g. "{{ steps.check.output.ok }}", not text'),
        ("{{ input.a }} and {{ input.b }}", "must be a single {{ … }} expression"),
        ("{{ input.a ", "template syntax error at line 1, column 1: '{{' is not closed by '}}'"),
        ("{{ inptu }}", f"unknown name 'inptu' {NAMES}"),
    ],
)
def test_compile_expression_reports_what_is_wrong(raw: str, problem: str) -> None:
    with pytest.raises(TemplateSyntaxProblem) as caught:
        compile_expression(raw, field="steps.0 (a).when")
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(f"steps.0 (a).when: {problem}")


# --- A JSON object's keys come before dict methods ------------------------------------------------------------

# Steps named like dict methods, and an MCP result with an `items` key.
METHOD_NAMED: dict[str, Any] = {
    "input": {"deep": {"list": [1]}},
    "steps": {
        name: {"output": {"items": [{"id": 1}, {"id": 2}], "keys": "k", "name": name}, "status": "success", "text": ""}
        for name in ("items", "keys", "values", "get", "pop", "copy", "a")
    },
}


@pytest.mark.parametrize("name", ["items", "keys", "values", "get", "pop", "copy"])
def test_a_step_named_like_a_dict_method_can_be_read(name: str) -> None:
    node = compile_value(
        {
            "whole": f"{{{{ steps.{name}.output.name }}}}",
            "computed": f"{{{{ steps.{name}.output.name | upper }}}}",
            "text": f"from {{{{ steps.{name}.status }}}}",
        },
        field=FIELD,
        templates=True,
    )
    assert node.references() == {name}
    assert node.evaluate(METHOD_NAMED) == {"whole": name, "computed": name.upper(), "text": "from success"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("{{ steps.a.output.items }}", [{"id": 1}, {"id": 2}]),
        ("{{ steps.a.output.items[1].id }}", 2),
        ("{{ steps.a.output.items | map(attribute='id') | list }}", [1, 2]),
        ("{{ steps.a.output.items | length }}", 2),
        ("{{ steps.items.output.items }}", [{"id": 1}, {"id": 2}]),
        ("{{ steps.a.output.keys ~ '!' }}", "k!"),
        ("{{ {'items': 3}.items }}", 3),
        ("{{ '{0.keys}'.format(steps.a.output) }}", "k"),
        ("n={{ steps.a.output.items | length }}", "n=2"),
    ],
)
def test_an_output_key_named_like_a_dict_method_gives_its_value(raw: str, expected: Any) -> None:
    assert value(raw, METHOD_NAMED) == expected


def test_an_attribute_that_is_not_a_key_still_reaches_the_dict_method() -> None:
    assert value("{{ input.deep.items() | list }}", METHOD_NAMED) == [["list", [1]]]
    assert value("{{ input.deep.keys() | list }}", METHOD_NAMED) == ["list"]
    assert value("{{ input.deep.get('nope', 5) }}", METHOD_NAMED) == 5
    assert value("{{ steps.a.output | items | list | length }}", METHOD_NAMED) == 3  # the pairs, whatever the keys
    each = compile_expression("{{ steps.a.output.items }}", field="steps.3 (c).for_each")
    assert each.evaluate(METHOD_NAMED) == [{"id": 1}, {"id": 2}]


# --- A plain read (the fast path) means what Jinja means ------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "input.url",
        "input.deep.list[0].id",
        "input.deep.list[-1]",
        "input.deep.list[5]",
        "input.tags.count",
        "input.tags.nope",
        "steps.a.output['items']",
        "steps.a.output.items",
        "steps.a.output['keys']",
        "steps.skipped.output.url",
        "steps['a-b'].output[1]",
        "input.url.upper",
        "input.count.real",
        "input.deep.items",
        "input.deep['items']",
        "item",
        "steps.items.output.items",
        "steps.get.output['items'][0]",
        "steps.copy.output.copy",
        "steps.values.output.keys",
    ],
)
def test_a_plain_read_gives_what_jinja_gives(path: str) -> None:
    plain = compiled(f"{{{{ {path} }}}}")
    through_jinja = compiled(f"{{{{ ({path}) | default(none, false) if ({path}) is defined }}}}")
    scope = {**SCOPE, "steps": {**SCOPE["steps"], **METHOD_NAMED["steps"]}}
    try:
        expected: Any = through_jinja.evaluate(scope)
    except EvaluationError as exc:
        expected = str(exc).rsplit(": ", 1)[-1]
    try:
        found: Any = plain.evaluate(scope)
    except EvaluationError as exc:
        found = str(exc).rsplit(": ", 1)[-1]
    assert found == expected
