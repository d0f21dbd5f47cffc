"""Submit forms built from a task's JSON Schema, and the keyword arguments they post.

Each parameter gets the input its schema allows: a text, number or date
field, a checkbox, a list of choices, a comma-separated list, or a JSON
text area for anything else. A task whose signature takes ``*args``,
``**kwargs`` or positional-only parameters gets one JSON text area for all
its keyword arguments. The values go through the normal submit path, so
the task's own validation decides what is accepted.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
from collections.abc import Mapping
from typing import Any

from werkzeug.datastructures import MultiDict

from .. import json_input
from ..task import Task

#: The name of the text area of a task that gets one for all its keyword arguments.
ALL_ARGUMENTS = "kwargs"
_SCALAR_TYPES = {"string", "integer", "number", "boolean"}
_DATE_FORMATS = {"date": "date", "date-time": "datetime-local"}
_VARIADIC = {
    inspect.Parameter.VAR_POSITIONAL,
    inspect.Parameter.VAR_KEYWORD,
    inspect.Parameter.POSITIONAL_ONLY,
}


@dataclasses.dataclass
class FormField:
    """One input of a submit form, for one parameter of the task."""

    #: The parameter's name.
    name: str
    #: ``text``, ``number``, ``date``, ``datetime-local``, ``checkbox``,
    #: ``select``, ``multiselect``, ``list`` or ``json``.
    widget: str
    #: Whether the task has no default for it.
    required: bool = False
    #: The schema's description, shown as a hint.
    description: str | None = None
    #: The text the input holds (or, for a checkbox, ``"on"`` when ticked).
    value: str = ""
    #: The values picked, for a ``select`` or ``multiselect``, as JSON text.
    selected: list[str] = dataclasses.field(default_factory=list)
    #: ``(value as JSON text, label)`` for a ``select`` or ``multiselect``.
    choices: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    #: For a ``number``: ``"1"`` for integers, ``"any"`` otherwise.
    step: str | None = None
    minimum: str | None = None
    maximum: str | None = None
    #: For a ``list``: the JSON type of its items.
    item_type: str | None = None
    #: What was wrong with the value last posted.
    error: str | None = None
    #: Whether it is the one text area for all the keyword arguments of a task.
    is_all_arguments: bool = False

    @property
    def input_name(self) -> str:
        """The name of the HTML input; prefixed, so no parameter clashes with the CSRF field."""
        return f"arg-{self.name}"


def form_fields(task: Task[Any, Any]) -> list[FormField]:
    """The inputs of *task*'s submit form, in the order of its parameters, with its defaults."""
    schema = task.parameters_schema()
    parameters = inspect.signature(task.func).parameters.values()
    if any(parameter.kind in _VARIADIC for parameter in parameters):
        return [
            FormField(
                ALL_ARGUMENTS,
                "json",
                description="All keyword arguments, as one JSON object.",
                value="{}",
                is_all_arguments=True,
            )
        ]
    definitions = schema.get("$defs", {})
    required = set(schema.get("required", []))
    return [
        _field(name, _resolve(spec, definitions), name in required, definitions)
        for name, spec in schema.get("properties", {}).items()
    ]


def read_form(
    fields: list[FormField], form: MultiDict[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The keyword arguments a posted *form* gives, and the inputs that cannot be read.

    An empty input is left out, so the parameter keeps the task's default.
    The fields are updated to show what was posted.
    """
    kwargs: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for field in fields:
        try:
            present, value = _read(field, form)
        except ValueError as error:
            errors[field.name] = str(error)
            continue
        if not present:
            continue
        if field.is_all_arguments:
            if not isinstance(value, dict):
                errors[field.name] = "Enter a JSON object of keyword arguments."
                continue
            kwargs.update(value)
        else:
            kwargs[field.name] = value
    return kwargs, errors


def show_errors(fields: list[FormField], details: Any) -> list[str]:
    """Put each problem of an ``InvalidArguments`` on its field; return those that fit none."""
    by_name = {field.name: field for field in fields}
    everything = next((field for field in fields if field.is_all_arguments), None)
    left: list[str] = []
    for item in details if isinstance(details, list) else []:
        if not isinstance(item, Mapping):
            continue
        field = by_name.get(str(item.get("parameter")))
        path = [str(part) for part in item.get("path") or []]
        message = str(item.get("message", ""))
        if len(path) > 1:
            message = f"{'.'.join(path[1:])}: {message}"
        if everything is not None:
            field = everything
            message = f"'{item.get('parameter')}': {message}"
        if field is None:
            left.append(message)
        else:
            field.error = message if field.error is None else f"{field.error}; {message}"
    return left


# -- building --------------------------------------------------------------------------------


def _resolve(spec: Mapping[str, Any], definitions: Mapping[str, Any]) -> dict[str, Any]:
    """*spec* with its ``$ref`` followed and an ``Optional`` reduced to the type it wraps."""
    resolved = dict(spec)
    reference = resolved.pop("$ref", None)
    if isinstance(reference, str):
        resolved = {**definitions.get(reference.rsplit("/", 1)[-1], {}), **resolved}
    options = resolved.get("anyOf")
    if isinstance(options, list):
        kept = [option for option in options if option.get("type") != "null"]
        if len(kept) == 1:
            del resolved["anyOf"]
            resolved = {**_resolve(kept[0], definitions), **resolved}
    return resolved


def _is_scalar(spec: Mapping[str, Any]) -> bool:
    if "enum" in spec:
        return all(isinstance(value, (str, int, float, bool)) for value in spec["enum"])
    return spec.get("type") in _SCALAR_TYPES


def _field(
    name: str, spec: dict[str, Any], required: bool, definitions: Mapping[str, Any]
) -> FormField:
    field = FormField(name, "json", required=required, description=spec.get("description"))
    default = spec.get("default")
    has_default = "default" in spec
    kind = spec.get("type")
    if "enum" in spec and _is_scalar(spec):
        field.widget = "select"
        field.choices = [(json.dumps(value), str(value)) for value in spec["enum"]]
        field.selected = [json.dumps(default)] if has_default else []
    elif kind == "boolean":
        field.widget = "checkbox"
        field.value = "on" if default is True else ""
    elif kind in {"integer", "number"}:
        field.widget = "number"
        field.step = "1" if kind == "integer" else "any"
        field.minimum = _bound(spec, "minimum", "exclusiveMinimum")
        field.maximum = _bound(spec, "maximum", "exclusiveMaximum")
        field.value = "" if default is None else json.dumps(default)
    elif kind == "string":
        field.widget = _DATE_FORMATS.get(spec.get("format", ""), "text")
        field.value = default if isinstance(default, str) else ""
    elif kind == "array" and _is_scalar(items := _resolve(spec.get("items", {}), definitions)):
        if "enum" in items:
            field.widget = "multiselect"
            field.choices = [(json.dumps(value), str(value)) for value in items["enum"]]
            field.selected = [json.dumps(value) for value in default or []]
        else:
            field.widget = "list"
            field.item_type = items.get("type")
            field.value = _list_text(default) if isinstance(default, list) else ""
    else:
        field.value = "" if not has_default else json.dumps(default, indent=2)
    return field


def _bound(spec: Mapping[str, Any], inclusive: str, exclusive: str) -> str | None:
    # An exclusive bound is left to the server: an HTML input knows only inclusive ones.
    value = spec.get(inclusive)
    return None if value is None or exclusive in spec else json.dumps(value)


def _list_text(values: list[Any]) -> str:
    if any(isinstance(value, str) and ("," in value or value != value.strip()) for value in values):
        return json.dumps(values)
    return ", ".join(json.dumps(value) if not isinstance(value, str) else value for value in values)


# -- reading ---------------------------------------------------------------------------------


def _read(field: FormField, form: MultiDict[str, str]) -> tuple[bool, Any]:
    """Whether the form gives *field* a value, and the value, as the task receives it as JSON."""
    if field.widget == "checkbox":
        field.value = "on" if field.input_name in form else ""
        return True, bool(field.value)
    if field.widget in {"select", "multiselect"}:
        field.selected = form.getlist(field.input_name)
        values = [_choice(text) for text in field.selected if text != ""]
        if field.widget == "multiselect":
            return True, values
        return bool(values), values[0] if values else None
    text = form.get(field.input_name, "")
    field.value = text
    if text.strip() == "":
        return False, None
    if field.widget == "number":
        return True, _number(text.strip(), field.step == "1")
    if field.widget == "list":
        return True, _list(text, field.item_type)
    if field.widget == "json":
        return True, _json(text)
    return True, text


def _choice(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text  # not one of ours: the task's validation names it


def _number(text: str, integer: bool) -> Any:
    try:
        number = int(text) if integer else float(text)
    except ValueError:
        return text  # the task's validation says what it must be
    return number if isinstance(number, int) or math.isfinite(number) else text


def _list(text: str, item_type: str | None) -> list[Any]:
    if text.lstrip().startswith("["):
        value = _json(text)
        if not isinstance(value, list):
            raise ValueError("Enter a JSON array, or values separated by commas.")
        return value
    items = [item.strip() for item in text.split(",") if item.strip()]
    if item_type in {"integer", "number"}:
        return [_number(item, item_type == "integer") for item in items]
    return items


def _json(text: str) -> Any:
    try:
        return json_input.loads(text)
    except ValueError as error:
        raise ValueError(f"This is not valid JSON: {error}.") from None
