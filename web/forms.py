"""Run forms: HTML form fields generated from a scenario's `input_schema`, prefilled with a value.

One `Field` tree per form, built from the schema, serves both directions: the template draws it
(`_form_field.html`), and `web.form_input.read_form` reads the posted controls back with it.

Control names are JSON paths under `in` (or the root name a form is given): `in.url`, `in.address.city`.
Property names are escaped (`~` → `~0`, `.` → `~1`) so `~` followed by a letter is free for the form's own
controls: `~choice` picks a `oneOf`/`anyOf` alternative, `~alt<i>` holds that alternative's fields.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

ROOT = "in"
# Deeper (or recursive) schemas are edited as JSON rather than drawn as ever-nested fieldsets.
MAX_DEPTH = 6
FORMAT_INPUT_TYPES = {"uri": "url", "iri": "url", "email": "email", "idn-email": "email", "date": "date"}


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass
class Option:
    value: str  # the JSON text of the choice, so enums of any type survive the round trip
    label: str
    selected: bool = False


@dataclass
class Field:
    """One form control (or group of them) and the part of the schema it stands for."""

    kind: str  # text | number | checkbox | select | checkboxes | lines | group | choice | json
    name: str
    path: tuple[str | int, ...]
    label: str
    schema: dict[str, Any]
    help: str = ""
    required: bool = False
    nullable: bool = False
    # Whether the browser may insist on a value: not inside an optional group or an unchosen alternative.
    enforce: bool = False
    input_type: str = "text"
    item_type: str = "string"
    attrs: dict[str, str] = field(default_factory=dict)
    value: str = ""
    checked: bool = False
    options: list[Option] = field(default_factory=list)
    children: list[Field] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    chosen: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return "f-" + self.name

    @property
    def multiline(self) -> bool:
        return "\n" in self.value

    def walk(self) -> list[Field]:
        return [self, *(f for child in self.children for f in child.walk())]


@dataclass
class RunForm:
    root: Field
    errors: list[str] = field(default_factory=list)

    @property
    def fields(self) -> list[Field]:
        return self.root.children if self.root.kind == "group" else [self.root]

    @property
    def has_errors(self) -> bool:
        return bool(self.errors) or any(f.errors for f in self.root.walk())


# --- Schema → fields -----------------------------------------------------------------------------


def describe(schema: dict[str, Any], root_name: str = ROOT) -> Field:
    """The form's fields; `root_name` prefixes every control's name (and id), so several forms can share a page."""
    root = _field(schema, schema, (), root_name, "Input", required=True, enforce=True, depth=0)
    if root.kind != "group":
        root.help = root.help or "The whole input, as a JSON object."
    return root


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace(".", "~1")


def _field(
    raw: Any, root: dict[str, Any], path: tuple[str | int, ...], name: str, label: str,
    *, required: bool, enforce: bool, depth: int,
) -> Field:
    schema, nullable = normalize(raw, root)
    made = Field(
        kind="json", name=name, path=path, label=schema.get("title") or label, schema=schema,
        help=schema.get("description", ""), required=required, nullable=nullable,
        enforce=enforce and required and not nullable,
    )
    kind = _kind(schema)
    if depth > MAX_DEPTH and kind in ("object", "choice", "array"):
        return made
    if kind == "enum":
        made.kind = "select"
        values = list(schema["enum"]) + ([None] if nullable and None not in schema["enum"] else [])
        made.options = [Option(_dump(v), _option_label(v)) for v in values]
    elif kind == "choice":
        made.kind = "choice"
        alternatives = schema.get("oneOf") or schema.get("anyOf")
        for index, alternative in enumerate(alternatives):
            alt_label = _alternative_label(normalize(alternative, root)[0], index)
            made.children.append(
                _field(alternative, root, path, f"{name}~alt{index}", alt_label, required=True, enforce=False,
                       depth=depth + 1)
            )
    elif kind in ("string", "integer", "number"):
        made.kind = "text" if kind == "string" else "number"
        made.input_type = FORMAT_INPUT_TYPES.get(schema.get("format", ""), "text")
        made.attrs = _constraints(schema, kind)
    elif kind == "boolean":
        if nullable:
            made.kind = "select"
            made.options = [Option("true", "Yes"), Option("false", "No"), Option("null", "(none)")]
        else:
            made.kind = "checkbox"
            made.enforce = False  # `required` on a checkbox would mean "must be ticked"
    elif kind == "array":
        _array(made, schema, root)
    elif kind == "object":
        made.kind = "group"
        wanted = set(schema.get("required", []))
        for key, sub in schema["properties"].items():
            made.keys.append(key)
            made.children.append(
                _field(sub, root, (*path, key), f"{name}.{_escape(key)}", key, required=key in wanted,
                       enforce=made.enforce, depth=depth + 1)
            )
    return made


def _kind(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return "enum"
    if schema.get("oneOf") or schema.get("anyOf"):
        return "choice"
    kind = schema.get("type")
    if kind is None and "properties" in schema:
        kind = "object"
    if kind == "object" and "properties" not in schema:
        return "json"  # free-form object: only JSON can say what keys it has
    return kind if isinstance(kind, str) else "json"


def _array(made: Field, schema: dict[str, Any], root: dict[str, Any]) -> None:
    items, _ = normalize(schema.get("items", {}), root)
    if "enum" in items:
        made.kind = "checkboxes"
        made.options = [Option(_dump(v), _option_label(v)) for v in items["enum"]]
        made.enforce = False
    elif items.get("type") in ("string", "integer", "number") and "prefixItems" not in schema:
        made.kind = "lines"
        made.item_type = items["type"]
        made.enforce = made.enforce and schema.get("minItems", 0) > 0


def _constraints(schema: dict[str, Any], kind: str) -> dict[str, str]:
    attrs: dict[str, str] = {}
    if kind == "string":
        for key, attr in (("minLength", "minlength"), ("maxLength", "maxlength")):
            if key in schema:
                attrs[attr] = str(schema[key])
        return attrs
    for key, attr in (("minimum", "min"), ("maximum", "max")):
        if key in schema:
            attrs[attr] = str(schema[key])
    # Without step="any" a browser refuses 0.5 in a number box.
    attrs["step"] = str(schema.get("multipleOf", 1 if kind == "integer" else "any"))
    return attrs


def normalize(raw: Any, root: dict[str, Any], seen: int = 0) -> tuple[dict[str, Any], bool]:
    """`raw` with local `$ref`s and `allOf` merged in, and whether it also allows null."""
    schema = dict(raw) if isinstance(raw, dict) else {}
    if "$ref" in schema and seen < MAX_DEPTH:
        target = resolve_ref(schema.pop("$ref"), root)
        inner, nullable = normalize(target, root, seen + 1)
        schema = {**inner, **schema}
        if nullable:
            schema["nullable"] = True
    if "allOf" in schema and seen < MAX_DEPTH:
        parts = [normalize(part, root, seen + 1)[0] for part in schema.pop("allOf")]
        for part in parts:
            schema = _merge(schema, part)
    nullable = bool(schema.pop("nullable", False))
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        nullable = nullable or len(kinds) < len(kind)
        schema["type"] = kinds[0] if len(kinds) == 1 else kinds
    if kind == "null":
        schema["enum"] = [None]
    for key in ("oneOf", "anyOf"):
        alternatives = schema.get(key)
        if not alternatives:
            continue
        rest = [a for a in alternatives if not (isinstance(a, dict) and a.get("type") == "null")]
        nullable = nullable or len(rest) < len(alternatives)
        if len(rest) == 1:
            del schema[key]
            inner, inner_nullable = normalize(rest[0], root, seen + 1)
            schema = {**inner, **schema}
            nullable = nullable or inner_nullable
        elif all(isinstance(a, dict) and ("const" in a or "enum" in a) for a in rest):
            del schema[key]
            schema["enum"] = [v for a in rest for v in ([a["const"]] if "const" in a else a["enum"])]
        else:
            schema[key] = rest
    if "const" in schema:
        schema["enum"] = [schema["const"]]
    if isinstance(schema.get("type"), list):
        schema["anyOf"] = [{"type": k} for k in schema.pop("type")]
    return schema, nullable


def resolve_ref(ref: str, root: dict[str, Any]) -> Any:
    if not ref.startswith("#"):
        return {}  # remote references are not fetched: the field falls back to JSON
    target: Any = root
    for part in ref.lstrip("#").split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        target = target.get(part) if isinstance(target, dict) else None
    return target if isinstance(target, dict) else {}


def _merge(into: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    merged = {**part, **into}
    if "properties" in part or "properties" in into:
        # Fields in the order the parts list them; the first part to define one wins.
        merged["properties"] = {**part.get("properties", {}), **into.get("properties", {})}
        merged["properties"] = {
            key: merged["properties"][key] for key in [*into.get("properties", {}), *part.get("properties", {})]
        }
    if "required" in part or "required" in into:
        merged["required"] = list(dict.fromkeys([*into.get("required", []), *part.get("required", [])]))
    return merged


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _option_label(value: Any) -> str:
    return "(none)" if value is None else value if isinstance(value, str) else _dump(value)


def _alternative_label(schema: dict[str, Any], index: int) -> str:
    if schema.get("title"):
        return schema["title"]
    if "properties" in schema:
        return "Object with " + ", ".join(schema["properties"])
    kind = schema.get("type")
    return f"{kind.capitalize()}" if isinstance(kind, str) else f"Option {index + 1}"


# --- Filling fields with values ------------------------------------------------------------------


def fill(made: Field, value: Any) -> None:
    """Show `value` (a JSON value, or MISSING for the schema's default or first example)."""
    if value is MISSING:
        value = made.schema.get("default", (made.schema.get("examples") or [MISSING])[0])
    if made.kind == "group":
        for key, child in zip(made.keys, made.children, strict=True):
            fill(child, value.get(key, MISSING) if isinstance(value, dict) else MISSING)
    elif made.kind == "choice":
        made.chosen = next((i for i, alt in enumerate(made.children) if _looks_like(alt.schema, value)), 0)
        for index, alternative in enumerate(made.children):
            fill(alternative, value if index == made.chosen else MISSING)
    elif made.kind in ("select", "checkboxes"):
        if value is MISSING:
            wanted: set[str] = set()
        elif made.kind == "checkboxes":
            wanted = {_dump(v) for v in value} if isinstance(value, list) else set()
        else:
            wanted = {_dump(value)}
        for option in made.options:
            option.selected = option.value in wanted
    elif made.kind == "checkbox":
        made.checked = value is True
    elif made.kind == "lines":
        made.value = "\n".join(v if isinstance(v, str) else _dump(v) for v in value) if isinstance(value, list) else ""
    elif made.kind in ("text", "number"):
        made.value = "" if value is MISSING or value is None else value if isinstance(value, str) else _dump(value)
    else:
        made.value = "" if value is MISSING else json.dumps(value, indent=2, ensure_ascii=False)


def _looks_like(schema: dict[str, Any], value: Any) -> bool:
    """A cheap guess at which alternative a value was made from: its type, then its keys."""
    if value is MISSING:
        return False
    if "enum" in schema:
        return value in schema["enum"]
    kind = schema.get("type") or ("object" if "properties" in schema else None)
    checks = {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }
    if kind not in checks or not checks[kind]:
        return kind is None
    if kind == "object":
        properties = schema.get("properties", {})
        closed = schema.get("additionalProperties") is False
        return set(schema.get("required", [])) <= set(value) and (not closed or set(value) <= set(properties))
    return True


# --- Defaults for what was left out --------------------------------------------------------------


def with_defaults(schema: dict[str, Any], value: Any) -> Any:
    """`value` completed with the schema's defaults, as a form shows them: a property left out takes its
    `default`, in nested objects and array items too, and an object left out is made of its properties'
    defaults when they give it every property it requires. Returns a new value; `value` is unchanged.
    """
    return _with_defaults(schema, schema, value, 0)


def _with_defaults(raw: Any, root: dict[str, Any], value: Any, depth: int) -> Any:
    schema, _ = normalize(raw, root)
    properties = schema.get("properties")
    if isinstance(value, dict) and isinstance(properties, dict):
        completed = dict(value)
        for key, sub in properties.items():
            if key in completed:
                completed[key] = _with_defaults(sub, root, completed[key], depth + 1)
            elif (made := _left_out(sub, root, depth + 1)) is not MISSING:
                completed[key] = made
        return completed
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_with_defaults(schema["items"], root, item, depth + 1) for item in value]
    return value


def _left_out(raw: Any, root: dict[str, Any], depth: int) -> Any:
    """What a property left out becomes: its default, an object of its properties' defaults, or MISSING."""
    schema, _ = normalize(raw, root)
    if "default" in schema:
        return _with_defaults(raw, root, copy.deepcopy(schema["default"]), depth)
    # No deeper than the form draws fieldsets: a recursive schema would otherwise make objects forever.
    if depth > MAX_DEPTH or not isinstance(schema.get("properties"), dict):
        return MISSING
    made = _with_defaults(raw, root, {}, depth)
    required = schema.get("required", [])
    if not made or not isinstance(required, list) or any(key not in made for key in required):
        return MISSING
    return made


def build_form(schema: dict[str, Any], initial: Any = MISSING, *, root_name: str = ROOT) -> RunForm:
    """A fresh form showing `initial`, or the schema's first example when there is none."""
    root = describe(schema, root_name)
    if initial is MISSING and schema.get("examples"):
        initial = schema["examples"][0]
    fill(root, initial)
    return RunForm(root)
