"""The fast path of a chained machine step: when it applies, and the unlocked finish.

A machine step whose completion can only start more machine steps (every outgoing edge
unconditional, to a machine step that is not a join) plans its transition without
surprises, so the plan's writes go out in SQL built once (``sql.fastpath``: one
statement on PostgreSQL). On PostgreSQL a worker going on with its own chain does not
even lock first: it plans from the instance as it last read or wrote it, and the
statement locks and writes only if the row still holds every value the plan read.
See ``docs/explanation/locking.md``.
"""

from __future__ import annotations

from typing import Any

from django.db import connections, router, transaction

from .. import tracing
from ..definition import WorkflowDefinition
from ..exceptions import DefinitionError, WorkflowNotFound
from ..models import StepRun, WorkflowInstance, WorkflowStatus
from ..steps import BaseMachineStep
from . import left, signalwait, transition
from .protocol import Engine
from .sql import fastpath, saves_unobserved
from .transition import ClaimedRun, Transition, definition_for


def chains_on(definition: WorkflowDefinition, step_name: str) -> bool:
    """Whether routing on from ``step_name`` can only start machine steps (or end the
    workflow) and runs no user code: every outgoing edge is unconditional and leads to a
    machine step that is not a join, and no boundary edge sends dead tokens on. The fast
    path's plan then holds no surprise."""
    if any(edge.on for edge in definition.edges_from(step_name)):
        return False
    for edge, condition in definition.outgoing(step_name):
        if condition is not None or not isinstance(definition.steps[edge.target], BaseMachineStep):
            return False
        back = (edge.source, edge.target) in definition.back_edges
        if not back and len(definition.forward_sources[edge.target]) > 1:
            return False
    return True


def applies(definition: WorkflowDefinition, run: StepRun, connection: Any) -> bool:
    """The fast path's conditions, but for the instance's own state (``applies_to``)."""
    return (
        fastpath.supports(connection)
        and chains_on(definition, run.step_name)
        and saves_unobserved(WorkflowInstance)
    )


def applies_to(tx: Transition, run: StepRun) -> bool:
    """Whether finishing ``run`` in the locked transition ``tx`` may take the fast path."""
    instance = tx.instance
    return (
        tx.definition is not None
        and instance.status == WorkflowStatus.RUNNING
        and applies(tx.definition, run, connections[instance._state.db or "default"])
    )


def finish_unlocked(
    engine: Engine, claimed: ClaimedRun, changes: dict[str, Any], claim_next: bool
) -> tuple[list[int], ClaimedRun | None] | None:
    """PostgreSQL, a plain chain: plan from the instance as this worker last read or
    wrote it, then lock and write in one statement that checks first that the row
    still holds every value the plan was made from (``fastpath.expectation``): the
    same result as locking first, one round trip less. None if it does not apply
    or the instance changed meanwhile (nothing written): lock and plan again."""
    run, token = claimed
    if not StepRun.instance.is_cached(run):
        return None
    instance = run.instance
    if not WorkflowInstance.definition.is_cached(instance):
        return None
    if (
        instance.status != WorkflowStatus.RUNNING
        or instance.finished_at is not None
        or instance._state.adding
    ):
        return None
    # Written where instances are written: the claim may have read it from a replica.
    alias = router.db_for_write(WorkflowInstance, instance=instance)
    connection = connections[alias]
    if connection.vendor != "postgresql":  # the rest: applies()
        return None
    try:
        definition = definition_for(engine.registry, instance)
    except (WorkflowNotFound, DefinitionError):
        return None
    if not applies(definition, run, connection):
        return None
    tx = Transition(engine, instance, definition, claim_next=claim_next)
    saved = tx.snapshot()
    tx.expect = fastpath.expectation(connection, instance)  # before planning
    tx.plan_fenced(run, token, changes)
    if tx.fenced is not None:
        if connection.get_autocommit():
            # Outside any transaction the one statement is a transaction of its own:
            # no BEGIN and no COMMIT to send, one round trip in all.
            with tracing.transition_span("finish", instance.pk, tx):
                tx.close()
        else:
            with (
                tracing.transition_span("finish", instance.pk, tx),
                transaction.atomic(using=alias),
            ):
                tx.close(last=True)  # the block's last statement: it may carry the COMMIT
        if not tx.changed:
            left.remember(tx.instance)
            if tx.instance.status == WorkflowStatus.COMPLETED:
                discard_left(engine, instance.pk)
            return tx.runnable, tx.claimed
    tx.restore(saved)  # nothing was written: the locked path starts over
    return None


def discard_left(engine: Engine, instance_id: Any) -> None:
    """The unlocked statement completed the instance: a signal buffered while it planned
    (before the statement took the lock) is discarded now, as ``close()`` does (a
    transition of the completed instance)."""
    if signalwait.any_pending(instance_id):
        transition.run(engine, instance_id, lambda tx: None, needs_definition=False)
