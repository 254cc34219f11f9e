"""OpenAPI details drf-spectacular needs help with.

Instances, step runs and tasks each have a ``status`` with its own choices. Each set
is published as its own named component (``WorkflowStatusEnum``...), so that the
schema needs no ``ENUM_NAME_OVERRIDES`` in the project's settings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.db import models
from drf_spectacular import utils
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent, build_choice_description_list
from rest_framework import serializers

F = TypeVar("F", bound=Callable[..., Any])


class EnumField(serializers.ChoiceField):
    """A choice of a ``TextChoices``, published as the component ``<Name>Enum``."""

    def __init__(self, choices: type[models.TextChoices], **kwargs: Any) -> None:
        self.enum = choices
        super().__init__(choices=choices.choices, **kwargs)


class EnumFieldExtension(OpenApiSerializerFieldExtension):
    target_class = EnumField

    def map_serializer_field(self, auto_schema, direction):
        enum = self.target.enum
        component = ResolvedComponent(
            name=f"{enum.__name__}Enum",
            type=ResolvedComponent.SCHEMA,
            object=enum,
            schema={
                "type": "string",
                "enum": list(enum.values),
                "description": build_choice_description_list(enum.choices),
            },
        )
        auto_schema.registry.register_on_missing(component)
        return component.ref


def extend_schema(**kwargs: Any) -> Callable[[F], F]:
    """drf-spectacular's ``@extend_schema`` for a view method, built on its ``AutoSchema``.

    drf-spectacular's decorator builds a method's schema class on the project's
    ``DEFAULT_SCHEMA_CLASS`` as it was when the views were imported: DRF's own
    ``AutoSchema`` unless the project names drf-spectacular's, and then the schema view
    fails (500). Naming the base class here makes the API's schema independent of that
    setting. The views use this one under the same name.
    """
    extend = utils.extend_schema(**kwargs)

    def decorator(method: F) -> F:
        # extend_schema takes an existing ``kwargs["schema"]`` (what @action passes to
        # the view) as the base of the class it builds, before the setting.
        method.kwargs = {**getattr(method, "kwargs", {}), "schema": AutoSchema}  # type: ignore[attr-defined]
        return extend(method)

    return decorator
