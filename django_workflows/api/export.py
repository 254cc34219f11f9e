"""``GET instances/{id}/export/``: an instance's full history as one JSON document
(``django_workflows.export``), for an instance the user may see (else 404)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.decorators import method_decorator
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, generics
from rest_framework.request import Request
from rest_framework.response import Response

from ..export import FORMAT, documents
from ..permissions import visible_instances
from .schema import extend_schema
from .views import AUTH_ERRORS, NOT_FOUND, APIMixin


@method_decorator(transaction.non_atomic_requests, name="dispatch")
class InstanceExportView(APIMixin, generics.GenericAPIView):
    @extend_schema(
        summary="Export an instance's history",
        description=f"The full history of an instance you may see, as one JSON document "
        f"(`format` `{FORMAT}`): its context and status, every step run, human task "
        "(with candidate groups), event, comment (attachments by name) and signal, its "
        "parent and the ids of its sub-workflow children. Users appear as "
        '`{"id", "username"}`. The same document `manage.py workflow_export` writes '
        "one per line.",
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="The export document."),
            **AUTH_ERRORS,
            **NOT_FOUND,
        },
    )
    def get(self, request: Request, pk: str) -> Response:
        try:
            found = list(documents(visible_instances(request.user).filter(pk=pk)))
        except (ValidationError, ValueError, TypeError):
            found = []
        if not found:
            raise exceptions.NotFound(f"no workflow instance with id {pk!r}")
        return Response(found[0])
