"""Query parameters of the list endpoints, validated like request bodies (400 on bad input)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from rest_framework import exceptions, serializers
from rest_framework.filters import OrderingFilter
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response

from ..models import HumanTask, TaskStatus, WorkflowInstance, WorkflowStatus
from ..paging import COUNT_LIMIT, bounded_count
from ..permissions import completable_tasks, visible_tasks
from .schema import EnumField


class Pagination(LimitOffsetPagination):
    """``?limit=`` (default 50, at most 500) and ``?offset=``, with a bounded count.

    ``count`` is exact up to ``count_limit`` rows past the end of the page. Beyond that
    it is that bound and ``count_is_exact`` is false: counting every row on every page
    would make a page's cost grow with the table (and, for a user without the view permission,
    evaluate the permission filter on every row).
    """

    default_limit = 50
    max_limit = 500
    count_limit = COUNT_LIMIT

    def get_count(self, queryset: QuerySet | Rows) -> int:
        bound = self.get_offset(self.request) + self.limit + self.count_limit
        if isinstance(queryset, Rows):
            queryset = queryset.queryset
        count, self.count_is_exact = bounded_count(queryset, bound)
        return count

    def paginate_rows(
        self, queryset: QuerySet, columns: Sequence[str], request: Any, view: Any = None
    ) -> list[tuple] | None:
        """``paginate_queryset``, the page read as tuples of ``columns`` (``values_list``),
        the count on ``queryset`` alone (without the joins the columns need)."""
        return self.paginate_queryset(Rows(queryset, columns), request, view)

    def get_paginated_response(self, data: Any) -> Response:
        return Response(
            {
                "count": self.count,
                "count_is_exact": self.count_is_exact,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "results": data,
            }
        )

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        paginated = super().get_paginated_response_schema(schema)
        paginated["required"] = [*paginated["required"], "count_is_exact"]
        properties = paginated["properties"]
        paginated["properties"] = {
            "count": properties.pop("count"),
            "count_is_exact": {
                "type": "boolean",
                "description": (
                    "False when there are more rows than `count` says: the count stops "
                    f"{self.count_limit} rows past the page."
                ),
            },
            **properties,
        }
        return paginated


class Rows:
    """A queryset to paginate, sliced as tuples of ``columns``."""

    def __init__(self, queryset: QuerySet, columns: Sequence[str]) -> None:
        self.queryset, self.columns = queryset, columns

    def __getitem__(self, page: slice) -> list[tuple]:
        return list(self.queryset.values_list(*self.columns)[page])


class StableOrderingFilter(OrderingFilter):
    """``?ordering=field,-other``, with the primary key as the last tie-breaker so that
    pages never overlap or skip rows."""

    ordering_description = "Fields to sort by, comma-separated; `-field` sorts descending."

    def get_ordering(self, request, queryset, view):
        ordering = list(super().get_ordering(request, queryset, view) or ())
        if not {"pk", "-pk"} & set(ordering):
            ordering.append("-pk")
        return ordering

    def remove_invalid_fields(self, queryset, fields, view, request):
        # A field it cannot sort by is a 400 naming it, as for the other parameters,
        # not a list in another order than asked.
        kept = super().remove_invalid_fields(queryset, fields, view, request)
        unknown = [field for field in fields if field and field not in kept]
        if unknown:
            valid = self.get_valid_fields(queryset, view, {"request": request})
            known = ", ".join(name for name, _ in valid)
            raise exceptions.ValidationError(
                {self.ordering_param: [f"cannot sort by {', '.join(unknown)} (fields: {known})"]}
            )
        return kept


class DateOrDateTimeField(serializers.DateTimeField):
    """An ISO 8601 datetime, or a date meaning its midnight in the current time zone."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(input_formats=["iso-8601", "%Y-%m-%d"], **kwargs)

    def to_internal_value(self, value):
        try:
            return super().to_internal_value(value)
        except (OverflowError, ValueError):
            self.fail("invalid", format="YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss][+HH:MM|Z]")


class InstanceFilter(serializers.Serializer):
    status = EnumField(WorkflowStatus, required=False, help_text="Instances in this status.")
    workflow = serializers.CharField(
        required=False, max_length=200, help_text="Instances of this workflow (its name)."
    )
    version = serializers.CharField(
        required=False, max_length=50, help_text="Instances of this definition version."
    )
    business_key = serializers.CharField(
        required=False, max_length=200, help_text="Instances with this business key."
    )
    started_by = serializers.CharField(
        required=False,
        max_length=100,
        help_text="Instances started by this user: a user id, or `me`.",
    )
    parent = serializers.UUIDField(
        required=False, help_text="The sub-workflows (children) of this instance."
    )
    started_after = DateOrDateTimeField(
        required=False,
        help_text="Started at or after this time (a date: its midnight in the TIME_ZONE).",
    )
    started_before = DateOrDateTimeField(
        required=False,
        help_text="Started before this time (a date: its midnight in the TIME_ZONE).",
    )

    def validate_started_by(self, value: str) -> Any:
        if value == "me":
            return self.context["request"].user.pk
        try:
            pk = get_user_model()._meta.pk.to_python(value)
        except (DjangoValidationError, ValueError, TypeError):
            raise serializers.ValidationError("Enter a user id or `me`.") from None
        if isinstance(pk, int) and not -(2**63) <= pk < 2**63:  # no database stores more
            raise serializers.ValidationError("Enter a user id or `me`.")
        return pk

    def filter(self, queryset: QuerySet[WorkflowInstance]) -> QuerySet[WorkflowInstance]:
        params = self.validated_data
        lookups = {
            "status": "status",
            "workflow": "definition__name",
            "version": "definition__version",
            "business_key": "business_key",
            "started_by": "started_by",
            "parent": "parent_id",
            "started_after": "started_at__gte",
            "started_before": "started_at__lt",
        }
        return queryset.filter(
            **{lookup: params[name] for name, lookup in lookups.items() if name in params}
        )


class TaskFilter(serializers.Serializer):
    all = serializers.BooleanField(
        required=False,
        default=False,
        help_text=(
            "Every task you may see, in any status (the tasks of the instances you may "
            "see; with `view_humantask`, every task) instead of your inbox: the open tasks "
            "you may complete."
        ),
    )
    status = EnumField(
        TaskStatus,
        required=False,
        help_text="Tasks in this status (other than `open` only with `all=1`).",
    )
    instance = serializers.UUIDField(required=False, help_text="Tasks of this instance.")
    workflow = serializers.CharField(
        required=False, max_length=200, help_text="Tasks of this workflow (its name)."
    )
    step_name = serializers.CharField(
        required=False, max_length=200, help_text="Tasks of this step."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs["all"] and attrs.get("status", TaskStatus.OPEN) != TaskStatus.OPEN:
            raise serializers.ValidationError(
                {"status": ["Your inbox holds open tasks only; add all=1 to list the others."]}
            )
        return attrs

    def filter(self, queryset: QuerySet[HumanTask]) -> QuerySet[HumanTask]:
        params = self.validated_data
        user = self.context["request"].user
        if params["all"]:
            queryset = visible_tasks(user, queryset)
        else:
            queryset = completable_tasks(user, queryset)
        lookups = {
            "status": "status",
            "instance": "instance_id",
            "workflow": "instance__definition__name",
            "step_name": "step_name",
        }
        return queryset.filter(
            **{lookup: params[name] for name, lookup in lookups.items() if name in params}
        )
