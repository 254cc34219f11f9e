"""Forms of human steps: a Django ``Form`` declared on the step, or one built from a JSON schema.

``form_for_step`` gives the form class the admin renders and the engine validates
with; ``schema_for_step`` gives the JSON schema the API publishes, so a client can
render the same form. The supported schema is the common subset: an object whose
``properties`` are ``string`` (with ``enum``, ``format: date``, ``maxLength``),
``integer``, ``number`` (``minimum``, ``maximum``) and ``boolean``, plus ``required``.
"""

from __future__ import annotations

import copy
from typing import Any

from django import forms

from .exceptions import DefinitionError

_SCHEMA_TYPES = {"string", "integer", "number", "boolean"}


def _field_from_schema(name: str, spec: dict[str, Any], required: bool) -> forms.Field:
    kind = spec.get("type", "string")
    common: dict[str, Any] = {
        "required": required and kind != "boolean",
        "label": spec.get("title", name.replace("_", " ").capitalize()),
        "help_text": spec.get("description", ""),
    }
    if "default" in spec:
        common["initial"] = spec["default"]
    if kind not in _SCHEMA_TYPES:
        raise DefinitionError(f"form field {name!r}: unsupported type {kind!r}")
    if "enum" in spec:
        return forms.TypedChoiceField(
            choices=[(v, str(v)) for v in spec["enum"]],
            coerce={"integer": int, "number": float}.get(kind, str),
            **common,
        )
    if kind == "boolean":
        return forms.BooleanField(**common)
    if kind == "integer":
        return forms.IntegerField(
            min_value=spec.get("minimum"), max_value=spec.get("maximum"), **common
        )
    if kind == "number":
        return forms.FloatField(
            min_value=spec.get("minimum"), max_value=spec.get("maximum"), **common
        )
    if spec.get("format") == "date":
        return forms.DateField(**common)
    if spec.get("format") == "email":
        return forms.EmailField(max_length=spec.get("maxLength"), **common)
    widget = forms.Textarea if spec.get("maxLength", 0) > 200 else None
    return forms.CharField(max_length=spec.get("maxLength"), widget=widget, **common)


def form_from_schema(schema: dict[str, Any], name: str = "StepForm") -> type[forms.Form]:
    if schema.get("type", "object") != "object" or not isinstance(schema.get("properties"), dict):
        raise DefinitionError("a form schema must be an object with 'properties'")
    required = set(schema.get("required", ()))
    fields = {
        key: _field_from_schema(key, spec, key in required)
        for key, spec in schema["properties"].items()
    }
    return type(name, (forms.Form,), fields)


def _schema_from_field(name: str, field: forms.Field) -> dict[str, Any]:
    spec: dict[str, Any] = {"title": str(field.label or name.replace("_", " ").capitalize())}
    if isinstance(field, forms.BooleanField):
        spec["type"] = "boolean"
    elif isinstance(field, forms.IntegerField):
        spec["type"] = "integer"
    elif isinstance(field, forms.FloatField | forms.DecimalField):
        spec["type"] = "number"
    else:
        spec["type"] = "string"
        if isinstance(field, forms.DateField):
            spec["format"] = "date"
        elif isinstance(field, forms.EmailField):
            spec["format"] = "email"
    if isinstance(field, forms.ChoiceField):
        spec["enum"] = [value for value, _ in field.choices if value != ""]
    for attr, key in (
        ("max_length", "maxLength"),
        ("min_value", "minimum"),
        ("max_value", "maximum"),
    ):
        if getattr(field, attr, None) is not None:
            spec[key] = getattr(field, attr)
    if field.help_text:
        spec["description"] = str(field.help_text)
    return {k: v for k, v in spec.items() if v is not None}


def _form(spec: Any, name: str) -> type[forms.Form]:
    return form_from_schema(spec, name) if isinstance(spec, dict) else spec


def form_for_step(step: Any, action: str | None = None) -> type[forms.Form] | None:
    """The form class that validates ``action`` (the button pressed, or None): the
    action's own form (``action_forms``), else ``form_class`` or one built from
    ``form_schema``, else None (no form)."""
    own = getattr(step, "action_forms", None) or {}
    if action is not None and action in own:
        return _form(own[action], f"{type(step).__name__}{action.title().replace(' ', '')}Form")
    if step.form_class is not None:
        return step.form_class
    if step.form_schema is not None:
        return form_from_schema(step.form_schema, f"{type(step).__name__}Form")
    return None


def page_form_for_step(step: Any) -> type[forms.Form] | None:
    """The form a page shows for a step's task: its form, plus the fields that only an
    action's own form asks for (optional here: which are required depends on the button
    pressed, and is checked with that action's form on submit)."""
    own = getattr(step, "action_forms", None) or {}
    base = form_for_step(step)
    if not own:
        return base
    fields: dict[str, forms.Field] = dict(base.base_fields) if base is not None else {}
    for action in own:
        for name, field in form_for_step(step, action).base_fields.items():
            if name not in fields:
                extra = copy.deepcopy(field)
                extra.required = False
                fields[name] = extra
    return type(f"{type(step).__name__}PageForm", (base or forms.Form,), fields)


def schema_for_step(step: Any, action: str | None = None) -> dict[str, Any]:
    """A JSON schema describing the data a step's task accepts for ``action`` (empty
    object: anything)."""
    own = getattr(step, "action_forms", None) or {}
    if action is not None and action in own:
        spec = own[action]
        return spec if isinstance(spec, dict) else _schema_from_form(spec)
    if step.form_schema is not None:
        return step.form_schema
    if step.form_class is None:
        return {"type": "object", "properties": {}}
    return _schema_from_form(step.form_class)


def _schema_from_form(form_class: type[forms.Form]) -> dict[str, Any]:
    fields = form_class.base_fields
    return {
        "type": "object",
        "properties": {name: _schema_from_field(name, field) for name, field in fields.items()},
        "required": [name for name, field in fields.items() if field.required],
    }
