"""Run forms: fields generated from input schemas, submissions read back to JSON, errors placed."""

from __future__ import annotations

import re
from typing import Any

import pytest

from web.form_input import add_errors, read_form
from web.forms import Field, RunForm, build_form
from web.templating import templates

PLACE = {
    "type": "object",
    "required": ["city"],
    "properties": {"city": {"type": "string"}, "zip": {"type": ["string", "null"]}},
}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["url", "count", "mode"],
    "$defs": {"Place": PLACE},
    "properties": {
        "url": {"type": "string", "format": "uri", "description": "Where to start"},
        "email": {"type": "string", "format": "email"},
        "day": {"type": "string", "format": "date"},
        "count": {"type": "integer", "minimum": 1, "maximum": 9, "default": 3},
        "ratio": {"type": "number"},
        "mode": {"enum": ["fast", "slow", 3]},
        "flag": {"type": "boolean"},
        "maybe": {"type": ["boolean", "null"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "sizes": {"type": "array", "items": {"type": "integer"}},
        "colors": {"type": "array", "items": {"enum": ["red", "green"]}},
        "place": {"$ref": "#/$defs/Place"},
        "target": {"oneOf": [{"type": "string", "title": "By name"}, {"$ref": "#/$defs/Place"}]},
        "limit": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        "extra": {"type": "object"},
        "kind": {"anyOf": [{"const": "a"}, {"const": "b"}]},
    },
}


def fields(form: RunForm) -> dict[str, Field]:
    return {f.name: f for f in form.root.walk()}


def selected(field: Field) -> list[str]:
    return [option.label for option in field.options if option.selected]


def test_each_schema_kind_gets_its_control() -> None:
    by_name = fields(build_form(SCHEMA))
    kinds = {name: (f.kind, f.input_type) for name, f in by_name.items()}
    assert kinds["in.url"] == ("text", "url")
    assert kinds["in.email"] == ("text", "email")
    assert kinds["in.day"] == ("text", "date")
    assert kinds["in.count"][0] == kinds["in.ratio"][0] == "number"
    assert by_name["in.count"].attrs == {"min": "1", "max": "9", "step": "1"}
    assert by_name["in.ratio"].attrs == {"step": "any"}  # or a browser refuses 0.5
    assert kinds["in.mode"][0] == kinds["in.kind"][0] == "select"
    assert [o.label for o in by_name["in.kind"].options] == ["a", "b"]
    assert kinds["in.flag"][0] == "checkbox"
    assert kinds["in.maybe"][0] == "select" and by_name["in.maybe"].nullable
    assert kinds["in.tags"][0] == kinds["in.sizes"][0] == "lines"
    assert kinds["in.colors"][0] == "checkboxes"
    assert kinds["in.place"][0] == "group"
    assert by_name["in.place.city"].required and not by_name["in.place.zip"].required
    assert by_name["in.place.zip"].nullable
    assert kinds["in.target"][0] == "choice"
    assert [alt.label for alt in by_name["in.target"].children] == ["By name", "Object with city, zip"]
    assert kinds["in.limit"][0] == "number" and by_name["in.limit"].nullable
    assert kinds["in.extra"][0] == "json"
    assert by_name["in.url"].help == "Where to start"


def test_browser_is_asked_to_insist_only_where_a_value_must_be_sent() -> None:
    by_name = fields(build_form(SCHEMA))
    assert by_name["in.url"].enforce and by_name["in.mode"].enforce
    # Inside an optional group, or in an alternative that may not be chosen, nothing is forced.
    assert not by_name["in.place.city"].enforce
    assert not by_name["in.target~alt0"].enforce
    assert not by_name["in.flag"].enforce  # `required` on a checkbox would mean "must be ticked"


def test_prefilled_from_examples_then_defaults() -> None:
    schema = {**SCHEMA, "examples": [{"url": "https://a.example/x", "mode": 3, "tags": ["a", "b"], "flag": True}]}
    by_name = fields(build_form(schema))
    assert by_name["in.url"].value == "https://a.example/x"
    assert selected(by_name["in.mode"]) == ["3"]
    assert by_name["in.tags"].value == "a\nb"
    assert by_name["in.flag"].checked
    assert by_name["in.count"].value == "3"  # not in the example: the property's default


def test_prefilled_from_a_previous_runs_input() -> None:
    previous = {
        "url": "https://b.example",
        "mode": "slow",
        "maybe": None,
        "place": {"city": "Oslo", "zip": None},
        "target": {"city": "Rome"},
        "extra": {"k": [1, 2]},
        "colors": ["green"],
    }
    by_name = fields(build_form(SCHEMA, previous))
    assert by_name["in.url"].value == "https://b.example"
    assert selected(by_name["in.maybe"]) == ["(none)"]
    assert by_name["in.place.city"].value == "Oslo"
    assert by_name["in.target"].chosen == 1
    assert by_name["in.target~alt1.city"].value == "Rome"
    assert '"k"' in by_name["in.extra"].value
    assert selected(by_name["in.colors"]) == ["green"]


def test_submission_reads_back_to_typed_json() -> None:
    submitted = {
        "in.url": [" https://a.example/x "],
        "in.count": ["4"],
        "in.ratio": ["0.5"],
        "in.mode": ["3"],
        "in.flag": ["true"],
        "in.maybe": ["null"],
        "in.tags": ["one\r\ntwo\n\n"],
        "in.sizes": ["1\n2"],
        "in.colors": ['"red"', '"green"'],
        "in.place.city": ["Paris"],
        "in.place.zip": [""],
        "in.target~choice": ["0"],
        "in.target~alt0": ["Rome"],
        "in.limit": [""],
        "in.extra": ['{"a": [1, null]}'],
        "in.kind": ['"b"'],
    }
    value, form = read_form(SCHEMA, submitted)
    assert not form.has_errors
    assert value == {
        "url": "https://a.example/x",
        "count": 4,
        "ratio": 0.5,
        "mode": 3,
        "flag": True,
        "maybe": None,
        "tags": ["one", "two"],
        "sizes": [1, 2],
        "colors": ["red", "green"],
        "place": {"city": "Paris"},
        "target": "Rome",
        "extra": {"a": [1, None]},
        "kind": "b",
    }


def test_blank_optional_parts_are_left_out() -> None:
    value, form = read_form(SCHEMA, {"in.url": ["https://a.example"], "in.count": ["1"], "in.mode": ['"fast"']})
    assert not form.has_errors
    # An untouched optional group or choice is absent even though its own fields are required.
    assert value == {"url": "https://a.example", "count": 1, "mode": "fast"}


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("in.count", "2.5", "Enter a whole number."),
        ("in.ratio", "lots", "Enter a number."),
        ("in.sizes", "1\nx", "Line 2: Enter a whole number."),
        ("in.extra", "{oops", "Not valid JSON"),
        ("in.mode", '"turbo"', "Choose one of the options."),
        ("in.url", "", "This field is required."),
    ],
)
def test_unreadable_controls_are_marked_and_keep_what_was_typed(name: str, raw: str, message: str) -> None:
    submitted = {"in.url": ["https://a.example"], "in.count": ["1"], "in.mode": ['"fast"'], name: [raw]}
    _, form = read_form(SCHEMA, submitted)
    field = fields(form)[name]
    assert any(error.startswith(message) for error in field.errors), field.errors
    if field.kind != "select":
        assert field.value == raw


def test_schema_errors_land_beside_their_fields() -> None:
    value, form = read_form(SCHEMA, {"in.url": ["x"], "in.count": ["1"], "in.mode": ['"fast"'], "in.tags": ["a\nb"],
                                      "in.place.city": ["Oslo"]})
    add_errors(
        form,
        [
            {"loc": ["body", "input", "count"], "msg": "1 is less than 2", "type": "jsonschema.minimum"},
            {"loc": ["body", "input", "tags", 1], "msg": "'b' is too short", "type": "jsonschema.minLength"},
            {"loc": ["body", "input", "place", "city"], "msg": "'city' is required", "type": "jsonschema.required"},
            {"loc": ["body", "input"], "msg": "Additional properties", "type": "jsonschema.additionalProperties"},
        ],
    )
    by_name = fields(form)
    assert by_name["in.count"].errors == ["1 is less than 2"]
    assert by_name["in.tags"].errors == ["Item 2: 'b' is too short"]
    assert by_name["in.place.city"].errors == ["This field is required."]
    assert form.errors == ["Additional properties"]


def test_a_schema_complaint_does_not_replace_an_unreadable_fields_own_message() -> None:
    _, form = read_form(SCHEMA, {"in.url": ["x"], "in.count": ["many"], "in.mode": ['"fast"']})
    add_errors(form, [{"loc": ["body", "input", "count"], "msg": "'count' is required", "type": "jsonschema.required"}])
    assert fields(form)["in.count"].errors == ["Enter a whole number."]


def test_inexpressible_schema_is_one_json_box() -> None:
    schema = {"type": "object", "additionalProperties": {"type": "integer"}}
    form = build_form(schema, {"a": 1})
    assert [f.kind for f in form.fields] == ["json"]
    value, form = read_form(schema, {"in": ['{"a": 2}']})
    assert value == {"a": 2} and not form.has_errors
    value, form = read_form(schema, {"in": [""]})
    assert value == {} and not form.has_errors
    _, form = read_form(schema, {"in": ["[1]"]})
    assert form.fields[0].errors == ["The input must be a JSON object."]


def test_recursive_schema_ends_in_a_json_box() -> None:
    schema = {
        "type": "object",
        "$defs": {
            "Node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/Node"}, "name": {"type": "string"}}}
        },
        "properties": {"root": {"$ref": "#/$defs/Node"}},
    }
    kinds = [f.kind for f in build_form(schema).root.walk()]
    assert kinds.count("json") == 1 and kinds.count("group") > 3


def test_all_of_parts_are_merged() -> None:
    schema = {
        "type": "object",
        "properties": {
            "both": {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                               {"properties": {"b": {"type": "integer"}}}]}
        },
    }
    both = fields(build_form(schema))["in.both"]
    assert both.kind == "group" and both.keys == ["a", "b"] and both.children[0].required


def test_property_names_with_dots_and_tildes_get_distinct_controls() -> None:
    schema = {"type": "object", "properties": {"a.b": {"type": "string"}, "a~b": {"type": "string"}}}
    names = [f.name for f in build_form(schema).fields]
    assert names == ["in.a~1b", "in.a~0b"]
    value, _ = read_form(schema, {"in.a~1b": ["dot"], "in.a~0b": ["tilde"]})
    assert value == {"a.b": "dot", "a~b": "tilde"}


# The form as the scenario page draws it: the field macro called from a template, autoescaped.
FORM_PAGE = templates.env.from_string(
    '{% from "_form_field.html" import field %}<form>{% for f in fields %}{{ field(f) }}{% endfor %}</form>'
)


def render(form: RunForm) -> str:
    return FORM_PAGE.render(fields=form.fields)


def test_drawn_form_escapes_values_labels_and_help() -> None:
    hostile = '"><script>alert(1)</script>'
    schema = {
        "type": "object",
        "required": ["text"],
        "properties": {
            "text": {"type": "string", "title": "<b>Text</b>", "description": "<i>help</i>"},
            "pick": {"enum": [hostile]},
        },
    }
    html = render(build_form(schema, {"text": hostile, "pick": hostile}))
    assert "<script>" not in html and "<b>" not in html and "<i>" not in html
    assert "&lt;b&gt;Text&lt;/b&gt;" in html and "&lt;i&gt;help&lt;/i&gt;" in html
    assert 'value="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in html
    # Escaped once: the controls stay markup inside the page, and the text is not escaped twice.
    assert '<input type="text" id="f-in.text" name="in.text"' in html and "<select" in html
    assert "&lt;input" not in html and "&amp;" not in html


def test_drawn_form_has_labels_types_and_errors_tied_to_controls() -> None:
    _, form = read_form(SCHEMA, {"in.url": [""], "in.count": ["x"], "in.mode": ['"fast"']})
    html = render(form)
    assert '<label for="f-in.url">' in html
    assert 'type="url" id="f-in.url" name="in.url" value=""' in html
    assert 'aria-describedby="f-in.url-help f-in.url-error" aria-invalid="true"' in html
    assert 'id="f-in.count-error"' in html and "Enter a whole number." in html
    assert 'step="any"' in html  # ratio
    assert 'name="in.target~choice" value="0" checked' in html
    assert html.count(" required") >= 3  # url, count, mode are insisted on


def test_a_field_with_nothing_to_show_is_drawn_empty_and_left_out_when_blank() -> None:
    schema = {
        "type": "object",
        "properties": {
            "note": {"type": "string"},
            "count": {"type": "integer"},
            "extra": {"type": "object"},
            "mode": {"enum": ["fast", "slow"]},
        },
    }
    html = render(build_form(schema))
    assert 'name="in.note" value=""' in html and 'name="in.count" value=""' in html
    assert re.search(r'<textarea id="f-in.extra" name="in.extra"[^>]*></textarea>', html)
    assert " selected" not in html
    assert "MISSING" not in html and "None" not in html  # no placeholder object leaks into the page
    value, form = read_form(schema, {"in.note": [""], "in.count": [""], "in.extra": [""], "in.mode": [""]})
    assert value == {} and not form.has_errors
    assert build_form({"type": "object", "properties": {}}).fields == []
