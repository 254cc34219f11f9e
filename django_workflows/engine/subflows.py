"""Sub-workflows, planned and written with the parent's transition.

A ``SubWorkflowStep`` activated in a transition of the parent (``plan``) waits; when
that transition closes (``write``), its child instances are created in the same
transaction, each with its own first transition, and their runnable machine runs join
the parent's ``runnable``: they are dispatched once the parent's transaction has
committed, like any run it queued. A child that finishes puts its parent's waiting run
id among the runs its own transition made runnable (``notify_parent``); processing that
id (``runs.process_run``) joins the children in a transition of the parent
(``subflow_join``). So a child's transition never locks its parent: locks are always
taken parent first (cancel, join), and no two transitions can wait on each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import connections, router
from django.db.models.functions import Now

from .. import events as ev
from .. import versions
from ..context import check_json, check_size
from ..definition import WorkflowDefinition
from ..exceptions import DefinitionError
from ..models import (
    ACTIVE_INSTANCE_STATUSES,
    DefinitionVersion,
    StepRun,
    StepRunStatus,
    WorkflowInstance,
    WorkflowStatus,
)
from ..steps import SubWorkflowStep
from .sql import lock

if TYPE_CHECKING:
    from .transition import Transition

#: How deep sub-workflows may nest: a workflow that (indirectly) starts itself stops
#: there, its step failed, instead of starting instances without end.
MAX_DEPTH = 20

#: The statuses an instance does not leave by itself (a failed one waits for a retry).
FINISHED = (WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.CANCELED)


def definition_row(definition: WorkflowDefinition) -> DefinitionVersion:
    # Read without its graph (the checksum guards it), and the graph built only when the
    # row is created: a start needs neither the stored graph nor a fresh one.
    connection = connections[router.db_for_write(DefinitionVersion)]
    found = (
        lock.definition_row(connection, definition.name, definition.version)
        if connection.vendor in lock.VENDORS
        else DefinitionVersion.objects.defer("graph")
        .filter(name=definition.name, version=definition.version)
        .first()
    )
    row, created = found, False
    if row is None:
        row, created = DefinitionVersion.objects.get_or_create(
            name=definition.name,
            version=definition.version,
            defaults={
                "graph": definition.graph(),
                "checksum": definition.checksum,
                "description": definition.description,
            },
        )
    changed = not created and row.checksum != definition.checksum
    if changed and not versions.replace_stored_graph(row, definition):
        raise DefinitionError(
            f"the graph of workflow {definition} differs from the one stored for that "
            f"version; {versions.why_refused(row)}"
        )
    return row


def results_key(step_name: str, step: SubWorkflowStep) -> str:
    return step.results_key or step_name


def plan(tx: Transition, run: StepRun, step: SubWorkflowStep) -> bool:
    """Plan the children of ``run`` (written by ``write``). Returns False when there is
    nothing to wait for (``for_each`` gave no item): the step is completed at once."""
    _check_depth(tx.instance)
    ctx = tx.context(run.step_name)
    # Resolved now: an unknown workflow fails the parent's step, not the transaction.
    definition = tx.engine.registry.get_definition(step.workflow, step.version)
    items = step.get_items(ctx)
    base = step.get_input(ctx)
    data = [base] if items is None else [{**base, step.item_key: item} for item in items]
    for one in data:
        for key, value in one.items():
            if not isinstance(key, str):
                raise TypeError(f"context keys must be strings, not {type(key).__name__}")
            check_json(key, value)
        check_size(one, "a child's initial data")
    if not data:
        run.status = StepRunStatus.COMPLETED
        run.started_at = run.finished_at = Now()
        run.changes = {results_key(run.step_name, step): []}
        tx.instance.context.update(run.changes)
        return False
    run.status = StepRunStatus.WAITING
    run.started_at = Now()
    run._subflow = (definition, data)  # type: ignore[attr-defined]
    return True


def _check_depth(instance: WorkflowInstance) -> None:
    depth, parent = 0, instance.parent_id
    while parent is not None:
        depth += 1
        if depth >= MAX_DEPTH:
            raise DefinitionError(
                f"sub-workflows nest {MAX_DEPTH} deep here: does a workflow start itself?"
            )
        parent = WorkflowInstance.objects.filter(pk=parent).values_list("parent_id").get()[0]


def write(tx: Transition) -> None:
    """Create the planned children of the new runs (the runs have their ids now)."""
    for run in tx.new_runs:
        planned: tuple[WorkflowDefinition, list[dict[str, Any]]] | None = getattr(
            run, "_subflow", None
        )
        if planned is not None:
            definition, data = planned
            adopted = _adopt(tx, run, len(data))
            for index, initial in enumerate(data):
                if index not in adopted:
                    _start_child(tx, run, definition, index, initial)


def _adopt(tx: Transition, run: StepRun, count: int) -> set[int]:
    """A step activated again (a retry from it) while children of its earlier run still
    run: they are kept, now waited for by ``run``, instead of starting second ones."""
    running = list(
        WorkflowInstance.objects.filter(
            parent=tx.instance,
            parent_step_run__step_name=run.step_name,
            parent_item__lt=count,
            status__in=ACTIVE_INSTANCE_STATUSES,
        )
        .exclude(parent_step_run=run)
        .values_list("pk", "parent_item", "parent_step_run_id")
    )
    if not running:
        return set()
    WorkflowInstance.objects.filter(pk__in=[pk for pk, _, _ in running]).update(parent_step_run=run)
    earlier = {old for _, _, old in running}
    replaced = StepRun.objects.filter(pk__in=earlier, status=StepRunStatus.WAITING).update(
        status=StepRunStatus.CANCELED, finished_at=Now()
    )
    for _ in range(replaced):
        tx.leave(run.step_name)
    # The run's own activation put the step in current_steps: keep it there once.
    if run.step_name not in tx.instance.current_steps:
        tx.instance.current_steps.append(run.step_name)
    return {item for _, item, _ in running if item is not None}


def _start_child(
    tx: Transition,
    run: StepRun,
    definition: WorkflowDefinition,
    index: int,
    initial: dict[str, Any],
) -> None:
    parent = tx.instance
    child = WorkflowInstance.objects.create(
        definition=definition_row(definition),
        status=WorkflowStatus.RUNNING,
        context=initial,
        started_by_id=parent.started_by_id,
        parent=parent,
        parent_step_run=run,
        parent_item=index,
    )
    # The child's first transition, in the parent's transaction (the child's row is new:
    # nobody else can hold its lock). Its runnable runs go out after the commit.
    child_tx = type(tx)(tx.engine, child, definition)
    child_tx.event(ev.WorkflowStarted, user_id=parent.started_by_id, business_key="")
    child_tx.advance(definition.initial_step, activate=True)
    child_tx.close()
    tx.runnable.extend(child_tx.runnable)
    tx.event(
        ev.SubWorkflowStarted,
        step_name=run.step_name,
        child_id=str(child.pk),
        child_workflow=definition.name,
        item_index=index,
    )


def notify_parent(tx: Transition) -> None:
    """A child finished (completed, failed, canceled): its parent's waiting run id goes
    with the runs this transition made runnable; processing it joins the children."""
    instance = tx.instance
    if instance.parent_step_run_id is not None and instance.status in FINISHED:
        tx.runnable.append(instance.parent_step_run_id)
