"""OpenAPI details drf-spectacular needs help with.

Instances, step runs and tasks each have a ``status`` with its own choices. Each set
is published as its own named component (``WorkflowStatusEnum``...), so that the
schema needs no ``ENUM_NAME_OVERRIDES`` in the project's settings.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import ResolvedComponent, build_choice_description_list
from rest_framework import serializers


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
