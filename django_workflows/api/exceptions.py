"""Errors as JSON: one body for every error the API returns.

``{"detail": "<message>", "code": "<code>"}``, plus ``"errors": {field: [messages]}``
on a 400 for invalid input. Engine exceptions map to status codes:

======================================================  =====================
``WorkflowNotFound``, ``InstanceNotFound``,             404 ``not_found``
``TaskNotFound``, ``StepNotFound`` (``NotFound``)
``StateConflict``, ``TaskNotOpen``                      409 ``conflict``,
                                                        ``task_not_open``
``DefinitionError`` (graph changed, not registered)     409 ``definition_error``
``ContextError``, ``InvalidAssignee``,                  400 ``invalid``
django ``ValidationError``
django ``PermissionDenied``                             403 ``permission_denied``
======================================================  =====================

The API's views use :func:`exception_handler` themselves (``get_exception_handler``),
so a project needs no setting. To use it for other views too, set
``REST_FRAMEWORK["EXCEPTION_HANDLER"] = "django_workflows.api.exceptions.exception_handler"``.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler as drf_exception_handler

from ..exceptions import (
    ContextError,
    DefinitionError,
    InvalidAssignee,
    NotFound,
    StateConflict,
    TaskNotOpen,
)


class Conflict(exceptions.APIException):
    """409: the object is not in a state that allows the operation."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = _("The object is not in a state that allows this operation.")
    default_code = "conflict"


class PayloadTooLarge(exceptions.APIException):
    """413: the request body is larger than the project accepts."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = _("The request body is too large.")
    default_code = "payload_too_large"


def translate(exc: Exception) -> Exception:
    """The DRF exception an engine or Django exception stands for (others unchanged)."""
    if isinstance(exc, NotFound):
        return exceptions.NotFound(str(exc))
    if isinstance(exc, TaskNotOpen):
        return Conflict(str(exc), code="task_not_open")
    if isinstance(exc, StateConflict):
        return Conflict(str(exc))
    if isinstance(exc, DefinitionError):
        return Conflict(str(exc), code="definition_error")
    if isinstance(exc, ContextError | InvalidAssignee):
        return exceptions.ValidationError({"data": [str(exc)]})
    if isinstance(exc, DjangoValidationError):
        return exceptions.ValidationError(as_serializer_error(exc))
    if isinstance(exc, DjangoPermissionDenied):
        return exceptions.PermissionDenied(str(exc) or None)
    if isinstance(exc, Http404):
        return exceptions.NotFound()
    if isinstance(exc, RequestDataTooBig):
        return PayloadTooLarge(str(exc))
    if isinstance(exc, RecursionError):  # a body nested deeper than the parser can follow
        return exceptions.ParseError(_("JSON parse error - nested too deeply."))
    return exc


def _flatten(errors: Any, path: str = "") -> list[str]:
    """``["field: message", ...]`` from DRF's nested error details."""
    if isinstance(errors, dict):
        return [m for key, value in errors.items() for m in _flatten(value, f"{path}{key}.")]
    if isinstance(errors, list):
        return [m for value in errors for m in _flatten(value, path)]
    prefix = path[:-1].replace("non_field_errors", "").strip(".")
    return [f"{prefix}: {errors}" if prefix else str(errors)]


def error_body(exc: exceptions.APIException) -> dict[str, Any]:
    if isinstance(exc, exceptions.ValidationError):
        errors = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        messages = _flatten(errors)
        detail = (
            "Invalid input: " + "; ".join(messages[:3]) + ("; ..." if len(messages) > 3 else "")
        )
        return {"detail": detail, "code": "invalid", "errors": errors}
    detail = exc.detail
    if isinstance(detail, list | dict):  # an APIException raised with a structure
        return {"detail": "; ".join(_flatten(detail)), "code": exc.default_code}
    return {"detail": str(detail), "code": getattr(detail, "code", exc.default_code)}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, with engine exceptions mapped and every error body in one shape."""
    exc = translate(exc)
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    response.data = error_body(exc)
    return response
