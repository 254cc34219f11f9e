"""The API describing itself: its root (the URL of each endpoint) and its OpenAPI
schema, each answering like the rest of the API (login, JSON errors)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import inline_serializer
from drf_spectacular.views import SpectacularAPIView
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from .schema import extend_schema
from .views import AUTH_ERRORS, APIMixin

# -- root ---------------------------------------------------------------------------

#: The endpoints the root lists: (key, URL name in the API's namespace).
ROOT_ENDPOINTS = (
    ("definitions", "definition-list"),
    ("instances", "instance-list"),
    ("tasks", "task-list"),
    ("substitutes", "substitution-list"),
    ("schema", "schema"),
)


class RootView(APIMixin, APIView):
    """``GET /``: the absolute URL of each of the API's endpoints."""

    @extend_schema(
        summary="The API's endpoints",
        description="The absolute URL of each collection and of the OpenAPI schema.",
        responses={
            200: inline_serializer(
                "Root", {key: serializers.URLField() for key, _ in ROOT_ENDPOINTS}
            ),
            **AUTH_ERRORS,
        },
    )
    def get(self, request: Request) -> Response:
        namespace = request.resolver_match.namespace  # the include's: django_workflows_api
        prefix = f"{namespace}:" if namespace else ""
        return Response(
            {key: reverse(prefix + name, request=request) for key, name in ROOT_ENDPOINTS}
        )


# -- schema -------------------------------------------------------------------------


class SchemaView(APIMixin, SpectacularAPIView):
    """The OpenAPI 3 schema (YAML, or JSON with ``?format=json`` / ``Accept``).

    Titled and versioned as this app unless the project's ``SPECTACULAR_SETTINGS`` say
    otherwise (drf-spectacular's defaults are an empty title and 0.0.0)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        from django.conf import settings

        from .. import __version__

        own = getattr(settings, "SPECTACULAR_SETTINGS", {})
        defaults = {"TITLE": "django-workflows API", "VERSION": __version__}
        self.custom_settings = {k: v for k, v in defaults.items() if k not in own} or None

    @extend_schema(exclude=True)  # the schema does not describe itself
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)
        # Errors are JSON like everywhere else, not an OpenAPI document.
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return response
