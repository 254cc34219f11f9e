"""Instances: start (idempotent on request), read, cancel, retry.

Each change is one transition (``transition.run``) of the locked instance; machine
steps it makes runnable go on through ``runs.go_on`` (executed here by the local
engine, dispatched by a worker backend).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from .. import events as ev
from .. import tracing
from ..context import check_json, check_size
from ..exceptions import (
    ContextError,
    InstanceNotFound,
    StateConflict,
    StepNotFound,
)
from ..models import (
    IdempotencyKey,
    StepRun,
    StepRunStatus,
    StepTypeChoices,
    WorkflowInstance,
    WorkflowStatus,
)
from . import left, runs, subflow_join, transition
from .protocol import Engine
from .subflows import definition_row
from .transition import Transition
from .users import checked_pk, user_pk


def start(
    engine: Engine,
    name: str,
    version: str | None,
    initial_data: dict[str, Any] | None,
    business_key: str,
    started_by: Any,
    idempotency: tuple[str, str] | None = None,
    existing: Callable[[], WorkflowInstance | None] | None = None,
) -> tuple[WorkflowInstance, bool]:
    """The started instance and True; or what ``existing()`` found, and False."""
    definition = engine.registry.get_definition(name, version)
    data = dict(initial_data or {})
    for key, value in data.items():
        if not isinstance(key, str):
            raise ContextError(f"context keys must be strings, not {type(key).__name__}")
        check_json(key, value)
    check_size(data, "the initial data")
    user_pk = checked_pk(started_by)
    # Asked before the start's own transaction opens (inside it, the local engine would
    # see a caller's transaction and leave its first step to a claim of its own).
    inline = engine.executes_inline()
    with tracing.transition_span("start", None) as span, transaction.atomic():
        if existing is not None:
            # The caller's check, in the transaction that would create the instance
            # (a lock it takes there ends with it, before any step runs).
            found = existing()
            if found is not None:
                return found, False
        # Inserted once, by close(), with the state the start's plan leaves it in (its
        # rows reference it before: the foreign keys are checked at commit).
        instance = WorkflowInstance(
            definition=definition_row(definition),
            status=WorkflowStatus.RUNNING,
            context=data,
            business_key=business_key or "",
            started_by_id=user_pk,
        )
        if idempotency is not None:
            owner, key = idempotency
            IdempotencyKey.objects.create(
                owner=owner, key=key, workflow_name=name, instance=instance
            )
        tx = Transition(engine, instance, definition, claim_next=inline)
        span.describe(tx)
        tx.event(ev.WorkflowStarted, user_id=user_pk, business_key=instance.business_key)
        tx.advance(definition.initial_step, activate=True, refuse_bad_input=True)
        tx.close(last=True)  # the block's last statement: it may carry the COMMIT
    left.remember(instance)
    runs.go_on(engine, tx.runnable, tx.claimed)
    return left.as_left(instance.pk), True


def get_or_start(
    engine: Engine,
    name: str,
    version: str | None = None,
    initial_data: dict[str, Any] | None = None,
    business_key: str = "",
    started_by: Any = None,
    *,
    idempotency_key: str | None = None,
    existing: Callable[[], WorkflowInstance | None] | None = None,
) -> tuple[WorkflowInstance, bool]:
    """``BaseExecutionEngine.get_or_start_workflow``: start once per key, or return what
    ``existing()`` finds in the start's transaction."""
    if idempotency_key is None and existing is None:
        raise TypeError("get_or_start_workflow() needs an idempotency_key or existing")
    if idempotency_key is not None and (not idempotency_key or len(idempotency_key) > 255):
        raise ValidationError({"idempotency_key": ["must be 1 to 255 characters"]})
    owner = "" if started_by is None else str(user_pk(started_by))

    def by_key() -> WorkflowInstance | None:
        if idempotency_key is None:
            return None
        row = IdempotencyKey.objects.filter(owner=owner, key=idempotency_key).first()
        if row is None:
            return None
        if row.workflow_name != name:
            raise StateConflict(
                f"idempotency key {idempotency_key!r} was used to start {row.workflow_name!r}"
            )
        return get_instance(row.instance_id)

    found = by_key()
    if found is not None:
        return found, False
    key = None if idempotency_key is None else (owner, idempotency_key)
    try:
        return start(engine, name, version, initial_data, business_key, started_by, key, existing)
    except IntegrityError:
        found = by_key()  # a concurrent call with the same key won
        if found is None:
            raise
        return found, False


def get_instance(instance_id: Any) -> WorkflowInstance:
    try:
        return WorkflowInstance.objects.select_related("definition").get(pk=instance_id)
    except (WorkflowInstance.DoesNotExist, ValidationError, ValueError, TypeError):
        # A malformed id (not a UUID) means "not found", not a server error.
        raise InstanceNotFound(f"no workflow instance with id {instance_id!r}") from None


def cancel(engine: Engine, instance_id: Any, reason: str = "") -> WorkflowInstance:
    """Cancel the instance, its open tasks, pending runs and unfinished children.
    Finished instances conflict."""
    instance, runnable = subflow_join.cancel(engine, instance_id, reason)
    engine.dispatch(runnable)  # a canceled child: its parent's step fails
    return get_instance(instance.pk)


def retry(engine: Engine, instance_id: Any, from_step: str | None = None) -> WorkflowInstance:
    """Re-run a FAILED instance from its failed step (or ``from_step``), context as kept."""

    def body(tx: Transition) -> None:
        instance = tx.instance
        if instance.status != WorkflowStatus.FAILED:
            raise StateConflict(
                f"instance {instance.pk} is {instance.status}; only a failed instance is retried"
            )
        step_name = from_step or instance.failed_step
        if step_name not in tx.graph.steps:
            raise StepNotFound(f"workflow {tx.graph} has no step {step_name!r}")
        instance.status = WorkflowStatus.RUNNING
        instance.failed_step = instance.error = instance.error_traceback = ""
        instance.finished_at = None
        tx.event(ev.WorkflowRetried, step_name=step_name)
        # Runs held while the instance was failed (siblings of the failed branch) go on.
        tx.runnable.extend(
            StepRun.objects.filter(
                instance=instance, status=StepRunStatus.QUEUED, due_at__isnull=True
            ).values_list("pk", flat=True)
        )
        tx.advance(step_name, activate=True)
        # Sub-workflow steps whose children finished while the instance was failed.
        tx.runnable.extend(
            StepRun.objects.filter(
                instance=instance,
                status=StepRunStatus.WAITING,
                step_type=StepTypeChoices.SUBWORKFLOW,
            ).values_list("pk", flat=True)
        )

    instance, runnable, claimed = transition.run(
        engine, instance_id, body, claim_next=engine.executes_inline()
    )
    runs.go_on(engine, runnable, claimed)
    return get_instance(instance.pk)
