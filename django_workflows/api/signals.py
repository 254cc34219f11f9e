"""The API's external signals: ``POST signals/`` sends one (``engine.send_signal``),
``GET instances/{id}/signals/`` lists an instance's.

Sending needs ``permissions.can_send_signal``; the instance is looked up among those
the user may send to (``permissions.signal_targets``), so others answer 404. A new
signal answers 201, a replay of its ``idempotency_key`` 200 with the stored signal.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils.decorators import method_decorator
from rest_framework import exceptions, generics, serializers
from rest_framework.request import Request
from rest_framework.response import Response

from ..engine import get_engine
from ..models import ACTIVE_INSTANCE_STATUSES, WorkflowInstance, WorkflowSignal
from ..permissions import can_send_signal, signal_targets, visible_instances
from .exceptions import Conflict
from .filters import Pagination
from .schema import extend_schema
from .views import AUTH_ERRORS, INVALID, NOT_FOUND, APIMixin, _error


class SignalSerializer(serializers.ModelSerializer):
    state = serializers.CharField(
        read_only=True, help_text="pending (buffered), consumed or discarded."
    )
    consumed_by_step = serializers.SerializerMethodField(
        help_text="The step that consumed it; empty while pending."
    )

    class Meta:
        model = WorkflowSignal
        fields = (
            "id",
            "instance",
            "name",
            "data",
            "idempotency_key",
            "state",
            "sent_by",
            "created_at",
            "consumed_at",
            "consumed_by_step",
            "discarded_at",
        )
        read_only_fields = fields

    def get_consumed_by_step(self, signal: WorkflowSignal) -> str:
        run = signal.consumed_by_step_run
        return run.step_name if run is not None else ""


class SendSignalSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, help_text="The signal's name.")
    data = serializers.JSONField(
        required=False, default=dict, help_text="A JSON object, merged into the context."
    )
    instance_id = serializers.UUIDField(required=False, help_text="The instance, or:")
    business_key = serializers.CharField(
        required=False,
        max_length=200,
        help_text="The business key of exactly one active instance.",
    )
    idempotency_key = serializers.CharField(
        required=False,
        max_length=255,
        help_text="Sending again with the key (same instance, same name) changes nothing.",
    )

    def validate_data(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise serializers.ValidationError("must be a JSON object")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("instance_id" in attrs) == ("business_key" in attrs):
            raise serializers.ValidationError(
                {"instance_id": ["give exactly one of instance_id and business_key"]}
            )
        return attrs


def target(user: Any, params: dict[str, Any]) -> WorkflowInstance:
    """The instance to signal, among those ``user`` may send to; 404 otherwise."""
    candidates = signal_targets(user)
    if "instance_id" in params:
        found = list(candidates.filter(pk=params["instance_id"])[:1])
        what = f"id {str(params['instance_id'])!r}"
    else:
        found = list(
            candidates.filter(
                business_key=params["business_key"], status__in=ACTIVE_INSTANCE_STATUSES
            )[:2]
        )
        what = f"business key {params['business_key']!r} (active)"
        if len(found) > 1:
            raise Conflict("several active instances have this business key: give instance_id")
        if not found and params.get("idempotency_key"):
            # A replay after the instance finished: the engine answers with the stored signal.
            found = list(
                candidates.filter(
                    business_key=params["business_key"],
                    signals__name=params["name"],
                    signals__idempotency_key=params["idempotency_key"],
                ).order_by("-started_at")[:1]
            )
    if not found:
        raise exceptions.NotFound(f"no workflow instance with {what}")
    return found[0]


@method_decorator(transaction.non_atomic_requests, name="dispatch")
class SendSignalView(APIMixin, generics.GenericAPIView):
    serializer_class = SendSignalSerializer

    @extend_schema(
        summary="Send a signal",
        description="Sends the external signal `name` to one instance (`instance_id`, or "
        "the `business_key` of one active instance). A `WaitForSignal` step waiting for it "
        "consumes it at once and the instance goes on; else it is kept (buffered) until "
        "one waits, and discarded if the instance finishes first. 201: a new signal; 200: "
        "a replay of its `idempotency_key`, nothing changed. Needs the "
        "`django_workflows.send_signal` permission, or what cancel needs (the change "
        "permission, or having started the instance). 409: the instance is finished or "
        "failed, or the business key names several.",
        request=SendSignalSerializer,
        responses={
            201: SignalSerializer,
            200: SignalSerializer,
            **INVALID,
            **AUTH_ERRORS,
            **NOT_FOUND,
            409: _error("The instance is finished or failed, or the key names several."),
        },
    )
    def post(self, request: Request) -> Response:
        params = SendSignalSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        instance = target(request.user, data)
        if not can_send_signal(request.user, instance):
            raise PermissionDenied(f"you may not send signals to instance {instance.pk}")
        signal, created = get_engine().send_signal(
            data["name"],
            data["data"],
            instance_id=instance.pk,
            idempotency_key=data.get("idempotency_key"),
            sent_by=request.user,
        )
        return Response(SignalSerializer(signal).data, status=201 if created else 200)


@method_decorator(transaction.non_atomic_requests, name="dispatch")
class InstanceSignalsView(APIMixin, generics.GenericAPIView):
    serializer_class = SignalSerializer
    pagination_class = Pagination

    @extend_schema(
        summary="Signals of an instance",
        description="The signals sent to an instance you may see, oldest first: pending "
        "(buffered), consumed (by `consumed_by_step`) or discarded.",
        responses={200: SignalSerializer(many=True), **AUTH_ERRORS, **NOT_FOUND},
    )
    def get(self, request: Request, pk: str) -> Response:
        try:
            instance = visible_instances(request.user).get(pk=pk)
        except (WorkflowInstance.DoesNotExist, ValidationError, ValueError, TypeError):
            raise exceptions.NotFound(f"no workflow instance with id {pk!r}") from None
        rows = WorkflowSignal.objects.filter(instance=instance).select_related(
            "consumed_by_step_run"
        )
        return self.paginated(rows.order_by("id"), SignalSerializer)
