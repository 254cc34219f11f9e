"""The API's views: read-only viewsets over the rows, and one action per transition.

Every change of state is an engine call (``get_engine()``); the views only check who
may see the row, validate the input, and render the result. See ``docs/api.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.apps import apps
from django.db import transaction
from django.db.models import Prefetch, QuerySet
from django.http import Http404
from django.utils.decorators import method_decorator
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema_view,
)
from rest_framework import exceptions, mixins, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import BaseRenderer, BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from ..engine import get_engine
from ..exceptions import InvalidAssignee, StepNotFound, WorkflowNotFound
from ..forms import schema_for_step
from ..models import DefinitionVersion, HumanTask, TaskStatus, WorkflowInstance, WorkflowStatus
from ..permissions import can_complete_task, visible_instances, visible_tasks
from ..registry import version_key
from ..steps import BaseHumanStep
from . import idempotency, lists
from .exceptions import Conflict, exception_handler
from .filters import InstanceFilter, Pagination, StableOrderingFilter, TaskFilter
from .permissions import CanManageInstance
from .schema import extend_schema
from .serializers import (
    CancelSerializer,
    CompleteSerializer,
    DefinitionDetailSerializer,
    DefinitionSerializer,
    ErrorSerializer,
    InstanceDetailSerializer,
    InstanceSerializer,
    ReassignSerializer,
    RetrySerializer,
    StartSerializer,
    TaskDetailSerializer,
    TaskSerializer,
)


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


AUTH_ERRORS = {
    401: _error("Not logged in, or a bad token."),
    403: _error("Logged in, but not allowed."),
}
NOT_FOUND = {404: _error("No such object, or not one you may see.")}
INVALID = {400: _error("Invalid input (malformed JSON, or field errors in `errors`).")}


class APIMixin:
    """What every view of the API shares: JSON errors, auth, no request-wide transaction.

    Authentication is the project's (``DEFAULT_AUTHENTICATION_CLASSES``: session and
    token in the test project). Permission is not: the API always needs a logged-in user.
    Each engine call commits its own transaction, so ``ATOMIC_REQUESTS`` is turned off
    for these views (an outer transaction would run machine steps inside it).
    """

    permission_classes = [IsAuthenticated]
    not_found_message = "Not found."
    # drf-spectacular's, whatever the project's DEFAULT_SCHEMA_CLASS (see schema.extend_schema).
    schema = AutoSchema()

    def get_renderers(self) -> list[BaseRenderer]:
        renderers = super().get_renderers()
        if browsable_api_available():
            return renderers
        # The browsable API's templates come with the rest_framework app: without it
        # they are missing (a 500 for every browser), so the API answers JSON only.
        # The system check django_workflows.W101 says so.
        kept = [r for r in renderers if not isinstance(r, BrowsableAPIRenderer)]
        return kept or [JSONRenderer()]

    def perform_content_negotiation(self, request: Request, force: bool = False):
        # A browser asking for HTML, when there is no HTML to give, gets the JSON.
        return super().perform_content_negotiation(
            request, force=force or not browsable_api_available()
        )

    def get_exception_handler(self):
        return exception_handler

    def get_authenticate_header(self, request: Request) -> str | None:
        # 401 with a challenge when any authenticator has one (token), not only the first.
        for authenticator in self.get_authenticators():
            header = authenticator.authenticate_header(request)
            if header:
                return header
        return None

    def get_object(self):
        try:
            return super().get_object()
        except Http404:
            lookup = self.kwargs.get(self.lookup_url_kwarg or self.lookup_field)
            raise exceptions.NotFound(self.not_found_message.format(lookup)) from None

    def paginated(self, queryset: QuerySet, serializer_class: type) -> Response:
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(serializer_class(page, many=True).data)

    def paginated_rows(
        self, queryset: QuerySet, columns: Sequence[str], render: Callable, serializer: type
    ) -> Response:
        """A page of ``queryset`` as tuples of ``columns``, written by ``render`` (``lists``);
        through ``serializer`` under a paginator of a subclass's own."""
        if not isinstance(self.paginator, Pagination):
            return self.paginated(queryset, serializer)
        page = self.paginator.paginate_rows(queryset, columns, self.request, view=self)
        return self.get_paginated_response(render(page))

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        # Ordering applies to lists; a detail or an action looks up one row.
        return super().filter_queryset(queryset) if self.action == "list" else queryset


def browsable_api_available() -> bool:
    """Whether DRF's browsable API can render: its templates are the rest_framework app's."""
    return apps.is_installed("rest_framework")


def _refuse_bad_assignee(instance: WorkflowInstance) -> None:
    """A 400, not a 2xx with a failed instance, when the request's own data named an
    assignee that is no user and a step the request ran on the way (the local engine
    runs machine steps inline) routed there: the instance failed at that step and is
    kept (its id is in the message); nothing runs again by itself."""
    prefix = f"{InvalidAssignee.__name__}: "
    if instance.status == WorkflowStatus.FAILED and instance.error.startswith(prefix):
        raise exceptions.ValidationError(
            {
                "data": [
                    f"{instance.error.removeprefix(prefix)}; instance {instance.pk} failed at "
                    f"step {instance.failed_step!r}"
                ]
            }
        )


def _definition_gone(exc: WorkflowNotFound) -> Conflict:
    """An existing instance whose definition is no longer registered: a conflict, not 404."""
    return Conflict(str(exc), code="definition_error")


# -- definitions -------------------------------------------------------------------


def _definitions(name: str | None = None) -> list[dict[str, Any]]:
    """Registered definitions merged with the stored versions, by name (one query)."""
    registered: dict[str, dict[str, Any]] = {}
    for definition in get_engine().registry.list_definitions(all_versions=True):
        registered.setdefault(definition.name, {})[definition.version] = definition
    stored: dict[str, dict[str, DefinitionVersion]] = {}
    rows = DefinitionVersion.objects.only("name", "version", "description", "graph")
    if name is not None:
        rows = rows.filter(name=name)
    for row in rows:
        stored.setdefault(row.name, {})[row.version] = row
    names = sorted(set(stored) | set(registered)) if name is None else [name]
    result = []
    for each in names:
        live, kept = registered.get(each, {}), stored.get(each, {})
        if not live and not kept:
            continue
        versions = []
        for version in sorted(set(live) | set(kept), key=version_key):
            source = live.get(version) or kept[version]
            versions.append(
                {
                    "version": version,
                    "registered": version in live,
                    "stored": version in kept,
                    "description": source.description,
                    "graph": source.graph() if version in live else source.graph,
                }
            )
        latest = max(live, key=version_key) if live else versions[-1]["version"]
        newest = next(v for v in versions if v["version"] == latest)
        result.append(
            {
                "name": each,
                "description": newest["description"],
                "latest_version": latest,
                "registered": bool(live),
                "versions": versions,
                "graph": newest["graph"],
            }
        )
    return result


@extend_schema_view(
    list=extend_schema(
        summary="List workflow definitions",
        description="Every registered workflow, with the versions registered or stored.",
        responses={200: DefinitionSerializer(many=True), **AUTH_ERRORS},
    ),
    retrieve=extend_schema(
        summary="A workflow definition",
        description="A workflow by name, with the graph of each of its versions.",
        responses={200: DefinitionDetailSerializer, **AUTH_ERRORS, **NOT_FOUND},
    ),
)
class DefinitionViewSet(APIMixin, viewsets.ViewSet):
    lookup_field = "name"
    lookup_value_regex = "[^/]+"

    def list(self, request: Request) -> Response:
        return Response(DefinitionSerializer(_definitions(), many=True).data)

    def retrieve(self, request: Request, name: str) -> Response:
        found = _definitions(name) if "\x00" not in name else []
        if not found:
            raise exceptions.NotFound(f"no workflow named {name!r}")
        return Response(DefinitionDetailSerializer(found[0]).data)


# -- instances -------------------------------------------------------------------


def _detail_queryset() -> QuerySet[WorkflowInstance]:
    """Instances with what the detail shows, in a constant number of queries."""
    open_tasks = (
        HumanTask.objects.filter(status=TaskStatus.OPEN)
        .select_related("instance__definition")
        .prefetch_related("candidate_groups")
    )
    children = WorkflowInstance.objects.select_related("definition", "parent_step_run").order_by(
        "started_at", "parent_item"
    )
    return WorkflowInstance.objects.select_related("definition").prefetch_related(
        "step_runs",
        "events",
        Prefetch("human_tasks", queryset=open_tasks, to_attr="open_tasks"),
        Prefetch("children", queryset=children),
    )


@extend_schema_view(
    list=extend_schema(
        summary="List workflow instances",
        description="The instances you may see (the ones you started or hold a task in; "
        "with `view_workflowinstance`, all), newest first.",
        parameters=[InstanceFilter],
        responses={200: InstanceSerializer(many=True), **INVALID, **AUTH_ERRORS},
    ),
    retrieve=extend_schema(
        summary="A workflow instance",
        description="With its context, step runs, open tasks and history.",
        responses={200: InstanceDetailSerializer, **AUTH_ERRORS, **NOT_FOUND},
    ),
)
@method_decorator(transaction.non_atomic_requests, name="dispatch")
class InstanceViewSet(
    APIMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    serializer_class = InstanceSerializer
    pagination_class = Pagination
    filter_backends = [StableOrderingFilter]
    ordering_fields = ["started_at", "updated_at", "finished_at", "status", "business_key"]
    ordering = ["-started_at"]
    lookup_value_regex = "[^/]+"  # any malformed id reaches the view: a JSON 404
    not_found_message = "no workflow instance with id {!r}"

    def get_queryset(self) -> QuerySet[WorkflowInstance]:
        if self.action == "retrieve":
            queryset = _detail_queryset()
        else:
            queryset = WorkflowInstance.objects.select_related("definition")
        return visible_instances(self.request.user, queryset)

    def get_serializer_class(self):
        return InstanceDetailSerializer if self.action == "retrieve" else InstanceSerializer

    def list(self, request: Request) -> Response:
        params = InstanceFilter(data=request.query_params, context={"request": request})
        params.is_valid(raise_exception=True)
        queryset = self.filter_queryset(params.filter(self.get_queryset()))
        return self.paginated_rows(
            queryset, lists.INSTANCE_COLUMNS, lists.instances, InstanceSerializer
        )

    def _detail_response(self, instance: WorkflowInstance, code: int = 200, **kwargs) -> Response:
        data = InstanceDetailSerializer(_detail_queryset().get(pk=instance.pk)).data
        return Response(data, status=code, **kwargs)

    @extend_schema(
        summary="Start a workflow",
        description=(
            "Starts the workflow and runs it as far as it goes (201). Idempotent: a "
            "repeat with a business key you already started this workflow with, or with "
            "the same `Idempotency-Key` header, returns the first instance (200)."
        ),
        request=StartSerializer,
        parameters=[
            OpenApiParameter(
                idempotency.HEADER,
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                required=False,
                description="A key of yours (1 to 255 characters): a repeated request with "
                "the same key returns the instance the first one started (200). A key used "
                "to start another workflow is a 409.",
            )
        ],
        responses={
            201: InstanceDetailSerializer,
            200: OpenApiResponse(
                InstanceDetailSerializer, description="Started before: the first instance."
            ),
            **INVALID,
            **AUTH_ERRORS,
            409: _error("The Idempotency-Key was used to start another workflow."),
        },
    )
    def create(self, request: Request) -> Response:
        params = StartSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        key = self._idempotency_key(request)
        instance, created = self._start(params.validated_data, request.user, key)
        if not created:
            return self._detail_response(instance, headers={"Idempotent-Replayed": "true"})
        _refuse_bad_assignee(instance)
        location = request.build_absolute_uri(f"{instance.pk}/")
        return self._detail_response(instance, 201, headers={"Location": location})

    def _idempotency_key(self, request: Request) -> str | None:
        key = request.headers.get(idempotency.HEADER)
        if key is None:
            return None
        if not key.strip() or len(key) > idempotency.MAX_KEY_LENGTH:
            raise exceptions.ValidationError(
                {idempotency.HEADER: [f"1 to {idempotency.MAX_KEY_LENGTH} characters."]}
            )
        return key

    def _start(
        self, start: dict[str, Any], user: Any, key: str | None
    ) -> tuple[WorkflowInstance, bool]:
        engine = get_engine()
        name, business_key = start["workflow"], start["business_key"]
        params = {
            "version": start.get("version"),
            "initial_data": start["data"],
            "business_key": business_key,
            "started_by": user,
        }
        try:
            if key is None and not business_key:  # nothing to de-duplicate: no lock
                return engine.start_workflow(name, **params), True
            # The business-key check runs (under its lock) in the transaction that
            # creates the instance; the steps run after it commits.
            earlier = idempotency.earlier_start(user, name, business_key) if business_key else None
            return engine.get_or_start_workflow(
                name, **params, idempotency_key=key, existing=earlier
            )
        except WorkflowNotFound as exc:
            field = "version" if engine.registry.has_definition(name) else "workflow"
            raise exceptions.ValidationError({field: [str(exc)]}) from None

    @extend_schema(
        summary="Cancel an instance",
        description="Cancels the instance, its open tasks and pending steps. The user who "
        "started it and users with `change_workflowinstance` may. 409 if it already "
        "completed or was canceled.",
        request=CancelSerializer,
        responses={
            200: InstanceDetailSerializer,
            **INVALID,
            **AUTH_ERRORS,
            **NOT_FOUND,
            409: _error("The instance already finished."),
        },
    )
    @action(detail=True, methods=["post"], permission_classes=[IsAuthenticated, CanManageInstance])
    def cancel(self, request: Request, pk: str) -> Response:
        instance = self.get_object()
        params = CancelSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        instance = get_engine().cancel_workflow(instance.pk, reason=params.validated_data["reason"])
        return self._detail_response(instance)

    @extend_schema(
        summary="Retry a failed instance",
        description="Re-runs a failed instance from its failed step, or `from_step`. The "
        "user who started it and users with `change_workflowinstance` may. 409 unless the "
        "instance failed.",
        request=RetrySerializer,
        responses={
            200: InstanceDetailSerializer,
            **INVALID,
            **AUTH_ERRORS,
            **NOT_FOUND,
            409: _error("The instance has not failed."),
        },
    )
    @action(detail=True, methods=["post"], permission_classes=[IsAuthenticated, CanManageInstance])
    def retry(self, request: Request, pk: str) -> Response:
        instance = self.get_object()
        params = RetrySerializer(data=request.data)
        params.is_valid(raise_exception=True)
        from_step = params.validated_data["from_step"] or None
        try:
            instance = get_engine().retry(instance.pk, from_step=from_step)
        except StepNotFound as exc:
            if from_step is None:
                raise
            raise exceptions.ValidationError({"from_step": [str(exc)]}) from None
        except WorkflowNotFound as exc:
            raise _definition_gone(exc) from None
        return self._detail_response(instance)


# -- tasks ------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(
        summary="List human tasks",
        description="Your inbox: the open tasks you may complete, newest first. With "
        "`all=1`, every task you may see (with `view_humantask`: all tasks).",
        parameters=[TaskFilter],
        responses={200: TaskSerializer(many=True), **INVALID, **AUTH_ERRORS},
    ),
    retrieve=extend_schema(
        summary="A human task",
        description="With the JSON schema of its form and its actions, to render it.",
        responses={200: TaskDetailSerializer, **AUTH_ERRORS, **NOT_FOUND},
    ),
)
@method_decorator(transaction.non_atomic_requests, name="dispatch")
class TaskViewSet(
    APIMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    serializer_class = TaskSerializer
    pagination_class = Pagination
    filter_backends = [StableOrderingFilter]
    ordering_fields = ["created_at", "due_at", "completed_at", "status", "title"]
    ordering = ["-created_at"]
    lookup_value_regex = "[^/]+"
    not_found_message = "no human task with id {!r}"

    def get_queryset(self) -> QuerySet[HumanTask]:
        queryset = HumanTask.objects.select_related("instance__definition").prefetch_related(
            "candidate_groups"
        )
        return visible_tasks(self.request.user, queryset)

    def get_serializer_class(self):
        return TaskDetailSerializer if self.action == "retrieve" else TaskSerializer

    def list(self, request: Request) -> Response:
        params = TaskFilter(data=request.query_params, context={"request": request})
        params.is_valid(raise_exception=True)
        queryset = self.filter_queryset(params.filter(HumanTask.objects.all()))
        return self.paginated_rows(queryset, lists.TASK_COLUMNS, lists.tasks, TaskSerializer)

    def retrieve(self, request: Request, pk: str) -> Response:
        task = self.get_object()
        task.form_schema, task.actions, task.action_schemas, task.display = None, [], {}, []
        task.completion = None
        try:
            definition = get_engine().registry.get_definition(
                task.instance.definition.name, task.instance.definition.version
            )
        except WorkflowNotFound:
            definition = None
        step = definition.steps.get(task.step_name) if definition is not None else None
        if isinstance(step, BaseHumanStep):
            task.form_schema, task.actions = schema_for_step(step), list(step.actions)
            task.action_schemas = {label: schema_for_step(step, label) for label in step.actions}
            task.display = [
                {"key": key, "label": label, "value": value}
                for key, label, value in step.get_display(task.instance.context)
            ]
            if step.assignees is not None:  # one task per assignee: how far the step is
                task.completion = get_engine().task_progress(task.pk)
        task.can_complete = task.status == TaskStatus.OPEN and can_complete_task(task, request.user)
        return Response(TaskDetailSerializer(task).data)

    def _task_response(self, task: HumanTask) -> Response:
        task = self.get_queryset().get(pk=task.pk)
        return Response(TaskSerializer(task).data)

    @extend_schema(
        summary="Claim a task",
        description="Takes the task, so that others of its candidate groups leave it alone.",
        request=None,
        responses={
            200: TaskSerializer,
            **AUTH_ERRORS,
            **NOT_FOUND,
            409: _error("The task is not open, or someone else claimed it."),
        },
    )
    @action(detail=True, methods=["post"])
    def claim(self, request: Request, pk: str) -> Response:
        task = self.get_object()
        return self._task_response(get_engine().claim_task(task.pk, request.user))

    @extend_schema(
        summary="Reassign a task",
        description="Hands the open task to another user (`to`) or to groups (`groups`), "
        "releasing its claim. Its assignee, the user who claimed it, and holders of "
        "`reassign_any_task` may. Recorded as a `HumanTaskReassigned` event.",
        request=ReassignSerializer,
        responses={
            200: TaskSerializer,
            **INVALID,
            **AUTH_ERRORS,
            **NOT_FOUND,
            409: _error("The task is not open, or its instance is not running."),
        },
    )
    @action(detail=True, methods=["post"])
    def reassign(self, request: Request, pk: str) -> Response:
        task = self.get_object()
        params = ReassignSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        to = data["groups"] if data.get("groups") else data["to"]
        get_engine().reassign_task(task.pk, to, by=request.user, reason=data["reason"])
        # Not through the caller's visible tasks: handing a task on may end seeing it.
        reassigned = (
            HumanTask.objects.select_related("instance__definition")
            .prefetch_related("candidate_groups")
            .get(pk=task.pk)
        )
        return Response(TaskSerializer(reassigned).data)

    @extend_schema(
        summary="Unclaim a task",
        description="Gives a claimed task back to its candidate groups.",
        request=None,
        responses={
            200: TaskSerializer,
            **AUTH_ERRORS,
            **NOT_FOUND,
            409: _error("The task is not open, or not claimed."),
        },
    )
    @action(detail=True, methods=["post"])
    def unclaim(self, request: Request, pk: str) -> Response:
        task = self.get_object()
        return self._task_response(get_engine().unclaim_task(task.pk, request.user))

    @extend_schema(
        summary="Complete a task",
        description="Submits the task's form (`data`, validated by the step's form) and "
        "runs the workflow on. Returns the instance.",
        request=CompleteSerializer,
        responses={
            200: InstanceDetailSerializer,
            **INVALID,
            **AUTH_ERRORS,
            **NOT_FOUND,
            409: _error("The task is no longer open, or its instance is not running."),
        },
    )
    @action(detail=True, methods=["post"])
    def complete(self, request: Request, pk: str) -> Response:
        task = self.get_object()
        params = CompleteSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        try:
            instance = get_engine().complete_task(
                task.pk,
                request.user,
                params.validated_data["data"],
                action=params.validated_data["action"],
                check_permission=True,
                comment=params.validated_data["comment"],
            )
        except WorkflowNotFound as exc:
            raise _definition_gone(exc) from None
        _refuse_bad_assignee(instance)
        return Response(InstanceDetailSerializer(_detail_queryset().get(pk=instance.pk)).data)
