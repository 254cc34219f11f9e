"""``/substitutes/``: out-of-office substitutes over the API.

Everyone lists the substitutions they are absent in or stand in for, names their own
substitutes, and ends or removes their own; ``django_workflows.change_substitution``
does so for everyone (``permissions.visible_substitutions`` and
``can_manage_substitution``). Writes go through ``django_workflows.substitutes``.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.decorators import method_decorator
from drf_spectacular.utils import extend_schema_view
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from ..models import Substitution
from ..permissions import (
    can_manage_substitution,
    manages_every_substitution,
    visible_substitutions,
)
from ..substitutes import add_substitute, end_substitution
from .filters import DateOrDateTimeField, Pagination, StableOrderingFilter
from .schema import extend_schema
from .views import AUTH_ERRORS, INVALID, NOT_FOUND, APIMixin, _error

NOT_YOURS = "only the absent user and holders of django_workflows.change_substitution may"


class SubstitutionSerializer(serializers.ModelSerializer):
    active = serializers.SerializerMethodField(help_text="Whether it is in force now.")

    class Meta:
        model = Substitution
        fields = (
            "id",
            "user",
            "substitute",
            "starts_at",
            "ends_at",
            "reason",
            "active",
            "created_at",
        )
        read_only_fields = fields

    def get_active(self, obj: Substitution) -> bool:
        return obj.starts_at <= timezone.now() < obj.ends_at


class AddSubstituteSerializer(serializers.Serializer):
    user = serializers.IntegerField(
        min_value=-(2**63),
        max_value=2**63 - 1,
        required=False,
        allow_null=True,
        default=None,
        help_text="The absent user's id; default: you (someone else needs `change_substitution`).",
    )
    substitute = serializers.IntegerField(
        min_value=-(2**63), max_value=2**63 - 1, help_text="The id of who stands in."
    )
    starts_at = DateOrDateTimeField(
        required=False, help_text="Default: now (a date: its midnight in the TIME_ZONE)."
    )
    ends_at = DateOrDateTimeField(help_text="The first moment it is over (a date: its midnight).")
    reason = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs.setdefault("starts_at", timezone.now())
        if attrs["ends_at"] <= attrs["starts_at"]:
            raise serializers.ValidationError({"ends_at": ["must come after starts_at"]})
        return attrs


@extend_schema_view(
    list=extend_schema(
        summary="List substitutions",
        description="The substitutions you are absent in or stand in for (with "
        "`change_substitution`, all), latest start first.",
        responses={200: SubstitutionSerializer(many=True), **AUTH_ERRORS},
    ),
    retrieve=extend_schema(
        summary="A substitution",
        responses={200: SubstitutionSerializer, **AUTH_ERRORS, **NOT_FOUND},
    ),
    destroy=extend_schema(
        summary="Remove a substitution",
        description="Deletes it and returns it as it was (to keep it, for the record, "
        "end it instead). Only the absent user and holders of `change_substitution`.",
        responses={200: SubstitutionSerializer, **AUTH_ERRORS, **NOT_FOUND},
    ),
)
@method_decorator(transaction.non_atomic_requests, name="dispatch")
class SubstitutionViewSet(
    APIMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = SubstitutionSerializer
    pagination_class = Pagination
    filter_backends = [StableOrderingFilter]
    ordering_fields = ["starts_at", "ends_at", "created_at"]
    ordering = ["-starts_at"]
    lookup_value_regex = "[^/]+"
    not_found_message = "no substitution with id {!r}"

    def get_queryset(self) -> QuerySet[Substitution]:
        return visible_substitutions(self.request.user)

    def get_object(self) -> Substitution:
        lookup = self.kwargs.get("pk")
        try:
            row = self.get_queryset().get(pk=int(lookup))
        except (Substitution.DoesNotExist, ValueError, TypeError, OverflowError):
            raise exceptions.NotFound(self.not_found_message.format(lookup)) from None
        if self.action != "retrieve" and not can_manage_substitution(self.request.user, row):
            raise exceptions.PermissionDenied(f"{NOT_YOURS} change it")
        return row

    @extend_schema(
        summary="Name a substitute",
        description="While it is in force, the substitute sees and may complete the "
        "absent user's tasks (not their permissions); completions record "
        "`completed_on_behalf_of`.",
        request=AddSubstituteSerializer,
        responses={201: SubstitutionSerializer, **INVALID, **AUTH_ERRORS},
    )
    def create(self, request: Request) -> Response:
        params = AddSubstituteSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        absent = request.user.pk if data["user"] is None else data["user"]
        if absent != request.user.pk and not manages_every_substitution(request.user):
            raise exceptions.PermissionDenied(f"{NOT_YOURS} name a substitute for someone else")
        row = add_substitute(
            absent, data["substitute"], data["starts_at"], data["ends_at"], data["reason"]
        )
        return Response(SubstitutionSerializer(row).data, status=status.HTTP_201_CREATED)

    def destroy(self, request: Request, pk: str) -> Response:
        row = self.get_object()
        data = SubstitutionSerializer(row).data
        row.delete()
        return Response(data)

    @extend_schema(
        summary="End a substitution now",
        description="Its end becomes now; it is kept, for the record. One already over "
        "is returned as it is; one not begun yet is a 409 (delete it instead).",
        request=None,
        responses={
            200: SubstitutionSerializer,
            **AUTH_ERRORS,
            **NOT_FOUND,
            409: _error("It has not begun."),
        },
    )
    @action(detail=True, methods=["post"])
    def end(self, request: Request, pk: str) -> Response:
        return Response(SubstitutionSerializer(end_substitution(self.get_object())).data)
