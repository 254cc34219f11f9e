"""The API's comment endpoints (on an instance, on a task) and bulk completion.

Apart from ``views.py`` because they are URLs of their own, not actions of a row:
``instances/{id}/comments/``, ``tasks/{id}/comments/`` and ``tasks/bulk-complete/``.
Each is an engine call; the rows listed are those of an instance or task the user
may see (else 404, as for the row itself).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils.decorators import method_decorator
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, generics
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from ..engine import get_engine
from ..models import Comment, HumanTask, WorkflowInstance
from ..permissions import visible_instances, visible_tasks
from .filters import Pagination
from .schema import extend_schema
from .serializers import (
    BulkCompleteSerializer,
    BulkResultSerializer,
    CommentInputSerializer,
    CommentSerializer,
    ErrorSerializer,
)
from .views import AUTH_ERRORS, INVALID, NOT_FOUND, APIMixin

PARSERS = [JSONParser, MultiPartParser, FormParser]


class _Comments(APIMixin, generics.GenericAPIView):
    """GET: the comments, oldest first; POST: add one (JSON, or multipart with a file)."""

    serializer_class = CommentSerializer
    pagination_class = Pagination
    parser_classes = PARSERS

    def target(self) -> tuple[WorkflowInstance, HumanTask | None]:
        raise NotImplementedError

    def comments(self, instance: WorkflowInstance, task: HumanTask | None) -> QuerySet[Comment]:
        rows = Comment.objects.select_related("author").order_by("created_at", "id")
        return rows.filter(task=task) if task is not None else rows.filter(instance=instance)

    def get(self, request: Request, pk: str) -> Response:
        instance, task = self.target()
        return self.paginated(self.comments(instance, task), CommentSerializer)

    def paginated(self, queryset: QuerySet, serializer_class: type) -> Response:
        page = self.paginate_queryset(queryset)
        data = serializer_class(page, many=True, context={"request": self.request}).data
        return self.get_paginated_response(data)

    def post(self, request: Request, pk: str) -> Response:
        instance, task = self.target()
        params = CommentInputSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        comment = get_engine().add_comment(
            instance.pk,
            request.user,
            params.validated_data["text"],
            task_id=task.pk if task is not None else None,
            attachment=params.validated_data.get("attachment"),
        )
        return Response(CommentSerializer(comment, context={"request": request}).data, status=201)


def _list_schema(what: str) -> Any:
    return extend_schema(
        summary=f"Comments on {what}",
        description=f"The comments on {what}, oldest first (each with its author, time, "
        "text and attachment URL).",
        responses={200: CommentSerializer(many=True), **AUTH_ERRORS, **NOT_FOUND},
    )


def _add_schema(what: str) -> Any:
    return extend_schema(
        summary=f"Comment on {what}",
        description=f"Adds a comment on {what} you may see (JSON, or multipart/form-data "
        "with an `attachment`). Recorded as a `CommentAdded` event.",
        request={
            "application/json": CommentInputSerializer,
            "multipart/form-data": CommentInputSerializer,
        },
        responses={201: CommentSerializer, **INVALID, **AUTH_ERRORS, **NOT_FOUND},
    )


@method_decorator(transaction.non_atomic_requests, name="dispatch")
class InstanceCommentsView(_Comments):
    @_list_schema("an instance")
    def get(self, request: Request, pk: str) -> Response:
        return super().get(request, pk)

    @_add_schema("an instance")
    def post(self, request: Request, pk: str) -> Response:
        return super().post(request, pk)

    def target(self) -> tuple[WorkflowInstance, HumanTask | None]:
        pk = self.kwargs["pk"]
        try:
            return visible_instances(self.request.user).get(pk=pk), None
        except (WorkflowInstance.DoesNotExist, ValidationError, ValueError, TypeError):
            raise exceptions.NotFound(f"no workflow instance with id {pk!r}") from None


@method_decorator(transaction.non_atomic_requests, name="dispatch")
class TaskCommentsView(_Comments):
    @_list_schema("a task")
    def get(self, request: Request, pk: str) -> Response:
        return super().get(request, pk)

    @_add_schema("a task")
    def post(self, request: Request, pk: str) -> Response:
        return super().post(request, pk)

    def target(self) -> tuple[WorkflowInstance, HumanTask | None]:
        pk = self.kwargs["pk"]
        try:
            task = visible_tasks(self.request.user).select_related("instance").get(pk=pk)
        except (HumanTask.DoesNotExist, ValidationError, ValueError, TypeError):
            raise exceptions.NotFound(f"no human task with id {pk!r}") from None
        return task.instance, task


@method_decorator(transaction.non_atomic_requests, name="dispatch")
class BulkCompleteView(APIMixin, generics.GenericAPIView):
    serializer_class = BulkCompleteSerializer

    @extend_schema(
        summary="Complete many tasks",
        description="Completes each task the same way (`action`, `data`, `comment`), each "
        "in its own transaction, as if completed one by one: a refused task (not found, "
        "not yours, invalid, no longer open) is reported in `results` and rolls nothing "
        "back. 200 whatever each task's outcome; 400 only for a malformed request.",
        request=BulkCompleteSerializer,
        responses={
            200: BulkResultSerializer,
            **INVALID,
            **AUTH_ERRORS,
            413: OpenApiResponse(ErrorSerializer, description="The request body is too large."),
        },
    )
    def post(self, request: Request) -> Response:
        params = BulkCompleteSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        results = get_engine().complete_tasks(
            data["task_ids"],
            request.user,
            action=data["action"],
            data=data["data"],
            comment=data["comment"],
        )
        done = sum(result.completed for result in results)
        body = {"completed": done, "refused": len(results) - done, "results": results}
        return Response(BulkResultSerializer(body).data)
