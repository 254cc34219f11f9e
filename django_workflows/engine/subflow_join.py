"""Sub-workflows, joined and canceled in transitions of the parent.

``join(run_id)``: a parent's waiting sub-workflow run whose child finished (its id was
made runnable by the child's last transition, ``subflows.notify_parent``). Under the
parent's lock it reads its children: all completed, their output is mapped back and the
parent routes on; one failed or canceled, the step fails through the failure path of a
machine step (``Transition.attempt_ended``) and the other children are canceled; else
nothing (a sibling still runs). Any number of notifications for one run, concurrent or
late, therefore join it once.

Locks go parent first: canceling an instance cancels its children (``cancel``) in
nested transitions while it holds its own lock; a child's transition never locks the
parent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.db.models import Exists, OuterRef
from django.db.models.functions import Now

from .. import events as ev
from ..context import check_json
from ..exceptions import StateConflict
from ..models import (
    ACTIVE_INSTANCE_STATUSES,
    ACTIVE_RUN_STATUSES,
    HumanTask,
    StepRun,
    StepRunStatus,
    StepTypeChoices,
    TaskStatus,
    WorkflowInstance,
    WorkflowStatus,
)
from ..steps import SubWorkflowStep
from . import transition
from .protocol import Engine
from .subflows import results_key
from .transition import ClaimedRun, Transition, error_text

logger = logging.getLogger("django_workflows.engine")


def join(
    engine: Engine, run_id: int, *, claim_next: bool = False
) -> tuple[list[int], ClaimedRun | None]:
    """Join the children of a waiting sub-workflow run if they all finished; any other
    run id is left alone. Returns the runs made runnable, and the one claimed."""
    instance_id = (
        StepRun.objects.filter(
            pk=run_id, status=StepRunStatus.WAITING, step_type=StepTypeChoices.SUBWORKFLOW
        )
        .values_list("instance_id", flat=True)
        .first()
    )
    if instance_id is None:
        return [], None

    def body(tx: Transition) -> None:
        # Read again under the parent's lock: a concurrent join may have done it.
        run = StepRun.objects.filter(pk=run_id, status=StepRunStatus.WAITING).first()
        if run is None or tx.instance.status not in ACTIVE_INSTANCE_STATUSES:
            return  # a failed parent joins when it is retried (instances.retry)
        step = tx.graph.steps.get(run.step_name)
        if not isinstance(step, SubWorkflowStep):
            return
        children = list(
            WorkflowInstance.objects.filter(parent_step_run=run)
            .select_related("definition")
            .order_by("parent_item")
        )
        bad = [c for c in children if c.status in (WorkflowStatus.FAILED, WorkflowStatus.CANCELED)]
        if bad:
            child = bad[0]
            message = (
                f"sub-workflow {child.definition.name!r} (instance {child.pk}) "
                f"{child.status}" + (f": {child.error}" if child.error else "")
            )
            _fail(tx, run, children, message)
            return
        if not children or any(c.status != WorkflowStatus.COMPLETED for c in children):
            return
        try:
            outputs = [step.get_output(child.context) for child in children]
            if step.for_each is not None:
                changes = {results_key(run.step_name, step): outputs}
            elif isinstance(outputs[0], dict):
                changes = outputs[0]
            else:
                raise TypeError(f"output must return a dict, not {type(outputs[0]).__name__}")
            for key, value in changes.items():
                check_json(key, value)
        except Exception as exc:
            message, _ = error_text(exc)
            _fail(tx, run, children, f"mapping the sub-workflow's output failed: {message}")
            return
        _finished_events(tx, run, children)
        StepRun.objects.filter(pk=run.pk).update(
            status=StepRunStatus.COMPLETED, changes=changes, finished_at=Now()
        )
        tx.leave(run.step_name)
        tx.advance(run.step_name, run_pk=run.pk, step_type="subworkflow", changes=changes)

    _, runnable, claimed = transition.run(engine, instance_id, body, claim_next=claim_next)
    return runnable, claimed


def joinable(limit: int) -> list[int]:
    """Waiting sub-workflow runs of live instances none of whose children still runs."""
    running = WorkflowInstance.objects.filter(
        parent_step_run=OuterRef("pk"), status__in=ACTIVE_INSTANCE_STATUSES
    )
    return list(
        StepRun.objects.filter(
            status=StepRunStatus.WAITING,
            step_type=StepTypeChoices.SUBWORKFLOW,
            instance__status__in=ACTIVE_INSTANCE_STATUSES,
        )
        .exclude(Exists(running))
        .values_list("pk", flat=True)[:limit]
    )


def _finished_events(tx: Transition, run: StepRun, children: list[WorkflowInstance]) -> None:
    for child in children:
        tx.event(
            ev.SubWorkflowFinished,
            step_name=run.step_name,
            child_id=str(child.pk),
            status=str(child.status),
        )


def _fail(tx: Transition, run: StepRun, children: list[WorkflowInstance], message: str) -> None:
    """The step fails like a machine step that ran out of attempts; its other children
    are canceled first."""
    cancel_children(tx, run=run, reason=f"step {run.step_name!r} of the parent failed")
    _finished_events(tx, run, children)
    StepRun.objects.filter(pk=run.pk).update(
        status=StepRunStatus.FAILED, error=message, finished_at=Now()
    )
    tx.leave(run.step_name)
    run.attempt = max(run.attempt, 1)
    tx.attempt_ended(run, "failed", message)


def cancel_children(
    tx: Transition, *, run: StepRun | None = None, reason: str = "", failed: bool = False
) -> int:
    """Cancel the running children of ``tx.instance`` (of ``run`` only, if given; and the
    failed ones with ``failed``), each in a nested transition taken while the parent is
    locked (parent first). Returns how many were canceled."""
    statuses = [*ACTIVE_INSTANCE_STATUSES, *([WorkflowStatus.FAILED] if failed else [])]
    children = WorkflowInstance.objects.filter(parent=tx.instance, status__in=statuses)
    if run is not None:
        children = children.filter(parent_step_run=run)
    canceled = 0
    for child_id in children.values_list("pk", flat=True):
        try:
            cancel(tx.engine, child_id, reason or f"parent {tx.instance.pk} canceled")
            canceled += 1
        except StateConflict:
            pass  # it finished meanwhile (its own transition does not need our lock)
    return canceled


def canceler(reason: str) -> Callable[[Transition], None]:
    """The body of canceling an instance: its open tasks, pending runs and children."""

    def body(tx: Transition) -> None:
        instance = tx.instance
        if instance.status not in (*ACTIVE_INSTANCE_STATUSES, WorkflowStatus.FAILED):
            raise StateConflict(f"instance {instance.pk} is already {instance.status}")
        cancel_children(tx, reason=f"parent {instance.pk} canceled", failed=True)
        StepRun.objects.filter(instance=instance, status__in=ACTIVE_RUN_STATUSES).update(
            status=StepRunStatus.CANCELED, lease_token=None, finished_at=Now()
        )
        HumanTask.objects.filter(instance=instance, status=TaskStatus.OPEN).update(
            status=TaskStatus.CANCELED
        )
        instance.status = WorkflowStatus.CANCELED
        instance.tokens = {}
        instance.current_steps = []
        tx.event(ev.WorkflowCanceled, reason=reason)

    return body


def cancel(
    engine: Engine, instance_id: Any, reason: str = ""
) -> tuple[WorkflowInstance, list[int]]:
    """Cancel one instance and, first, its unfinished children (a transition each).
    Returns it and its parent's waiting run, if it is a child (to join: it failed)."""
    # Canceling needs no step code: it works even when the definition is gone or changed.
    instance, runnable, _ = transition.run(
        engine, instance_id, canceler(reason), needs_definition=False
    )
    return instance, runnable
