"""``POST instances/migrate/``: plan, and unless ``dry_run`` run, a migration of
instances to another version of their workflow (``engine.plan_migration``,
``engine.migrate_instances``). Needs ``permissions.can_migrate_instances``."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils.decorators import method_decorator
from rest_framework import exceptions, generics, serializers
from rest_framework.request import Request
from rest_framework.response import Response

from ..engine import get_engine
from ..permissions import can_migrate_instances
from .schema import extend_schema
from .views import AUTH_ERRORS, INVALID, APIMixin

MAX_INSTANCES = 500


class MigrateSerializer(serializers.Serializer):
    workflow = serializers.CharField(max_length=200, help_text="The workflow's name.")
    from_version = serializers.CharField(max_length=50, help_text="The version they run.")
    to_version = serializers.CharField(max_length=50, help_text="The registered target.")
    step_map = serializers.DictField(
        child=serializers.CharField(max_length=200),
        required=False,
        default=dict,
        help_text="Old step name -> new step name; a step not named keeps its name.",
    )
    instance_ids = serializers.ListField(
        child=serializers.UUIDField(),
        required=False,
        allow_null=True,
        default=None,
        max_length=MAX_INSTANCES,
        help_text="Only these instances (default: every active instance of the version).",
    )
    dry_run = serializers.BooleanField(
        required=False, default=False, help_text="Return the plan; change nothing."
    )


class VerdictSerializer(serializers.Serializer):
    instance_id = serializers.UUIDField()
    movable = serializers.BooleanField()
    reason = serializers.CharField(help_text="Why it cannot move; empty if it can.")
    positions = serializers.ListField(child=serializers.CharField(), help_text="Its steps.")
    migrated = serializers.BooleanField(
        required=False, help_text="Not in a dry run: whether it moved."
    )
    skipped = serializers.CharField(
        required=False, help_text="Not in a dry run: why it did not move; empty if it did."
    )


class MigrationSerializer(serializers.Serializer):
    workflow = serializers.CharField()
    from_version = serializers.CharField()
    to_version = serializers.CharField()
    step_map = serializers.DictField(child=serializers.CharField())
    dry_run = serializers.BooleanField()
    migrated = serializers.IntegerField(help_text="Instances moved (0 in a dry run).")
    instances = VerdictSerializer(many=True)


@method_decorator(transaction.non_atomic_requests, name="dispatch")
class MigrateInstancesView(APIMixin, generics.GenericAPIView):
    serializer_class = MigrateSerializer

    @extend_schema(
        summary="Migrate instances to another version",
        description="Plans moving the active instances (waiting, failed, running) of "
        "`workflow` `from_version` (or of `instance_ids`) to the registered `to_version`, "
        "with `step_map` renaming steps: each instance is movable, or blocked with a "
        "`reason` (its step removed and not mapped, a step claimed by a worker). With "
        "`dry_run` the plan is returned and nothing changes; else each movable instance "
        "moves in its own transaction (`migrated`), or is skipped with the reason "
        "(`skipped`: it changed since the plan). 200 whatever each instance's outcome; "
        "400 for an unknown version or step. Needs `django_workflows.change_workflowinstance`. "
        "Each move is recorded as an `InstanceMigrated` event.",
        request=MigrateSerializer,
        responses={200: MigrationSerializer, **INVALID, **AUTH_ERRORS},
    )
    def post(self, request: Request) -> Response:
        if not can_migrate_instances(request.user):
            raise exceptions.PermissionDenied(
                "migrating instances needs the change_workflowinstance permission"
            )
        params = MigrateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        engine = get_engine()
        plan = engine.plan_migration(
            data["workflow"],
            data["from_version"],
            data["to_version"],
            step_map=data["step_map"],
            instance_ids=data["instance_ids"],
        )
        body: dict[str, Any] = {**plan.as_dict(), "dry_run": data["dry_run"], "migrated": 0}
        if not data["dry_run"]:
            results = {str(r.instance_id): r for r in engine.migrate_instances(plan)}
            for row in body["instances"]:
                outcome = results[row["instance_id"]]
                row["migrated"], row["skipped"] = outcome.migrated, outcome.reason
            body["migrated"] = sum(r.migrated for r in results.values())
        return Response(MigrationSerializer(body).data)
