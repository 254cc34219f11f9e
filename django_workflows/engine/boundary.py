"""Step hooks and boundary edges: what happens when a machine step fails for good
(``on_failure``, then an error edge or the instance fails) and when a waiting step's
timeout edge fires (the sweep cancels the waiting work and takes the edge).

A timeout is armed when the waiting step's run is created (``StepRun.timeout_at``, on
the database clock like timers; ``Transition.activate``) and fired by ``sweep`` in one
transition of the locked instance, only while the run still waits: a completion that
wins the lock first disarms it, one that comes after finds its task canceled
(``TaskNotOpen``).
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from asgiref.sync import async_to_sync
from django.db.models.functions import Now

from .. import events as ev
from ..context import WorkflowContext
from ..models import (
    ACTIVE_INSTANCE_STATUSES,
    HumanTask,
    StepRun,
    StepRunStatus,
    TaskStatus,
)
from ..steps import BaseMachineStep, BaseStep
from . import sweeping, transition
from .protocol import Engine
from .transition import Transition

logger = logging.getLogger("django_workflows.engine")

#: The context key an error edge puts the step's error under.
ERROR_KEY = "error"
#: The ``close_reason`` of the open tasks a timeout edge cancels.
TIMED_OUT = "timed out"
#: Run statuses in which a step waits (a timeout edge can fire).
WAITING_STATUSES = (StepRunStatus.WAITING, StepRunStatus.SCHEDULED)


# -- hooks -----------------------------------------------------------------------


def call_hook(hook: Any, *args: Any) -> Any:
    """Call a step hook, ``def`` or ``async def``, like ``execute``."""
    if inspect.iscoroutinefunction(hook):

        async def run() -> Any:
            return await hook(*args)

        return async_to_sync(run)()
    return hook(*args)


def on_failure(step: BaseStep, ctx: WorkflowContext, error: BaseException) -> dict[str, Any]:
    """Run ``step.on_failure(ctx, error)``; its context changes, or none if it raised
    (logged: the step's error stays ``error``)."""
    if not isinstance(step, BaseMachineStep):
        return {}
    try:
        call_hook(step.on_failure, ctx, error)
        return ctx.changes
    except Exception:
        logger.exception(
            "on_failure of step %r (instance %s) raised; the step's error is kept: %s",
            ctx.step_name,
            ctx.instance_id,
            error,
        )
        return {}


def failed_for_good(engine: Engine, step: BaseStep, run: StepRun) -> bool:
    """Whether this failed attempt of ``run`` is its last (the policy's attempts used)."""
    policy = engine.retry_policy(step) if isinstance(step, BaseMachineStep) else None
    return policy is None or run.attempt - run.crashes >= policy.max_attempts


# -- failing for good: an error edge, or the instance fails ---------------------


def failed(
    tx: Transition,
    run: StepRun,
    message: str,
    trace: str,
    *,
    error: BaseException | None = None,
    hook_changes: dict[str, Any] | None = None,
) -> None:
    """``run`` failed for good (its run row already FAILED): with an error edge, emit the
    failed ``StepExecuted`` and take the edge (the error in ``context["error"]``);
    else fail the instance. ``on_failure``'s changes are kept in the context either way."""
    hook_changes = hook_changes or {}
    edge = tx.definition.boundary(run.step_name, "error") if tx.definition else None
    if edge is None:
        tx.instance.context.update(hook_changes)
        tx.attempt_ended(run, "failed", message, trace)
        return
    step_type = run.step_type or "machine"
    failed_event = tx.make_event(
        ev.StepExecuted,
        step_name=run.step_name,
        step_type=step_type,
        status="failed",
        attempt=run.attempt,
        error=message,
    )
    tx.events.append(failed_event)
    details = {
        "step": run.step_name,
        "type": type(error).__name__ if error is not None else "",
        "message": str(error) if error is not None else message,
        "attempt": run.attempt,
    }
    changes = {**hook_changes, ERROR_KEY: details}
    if not take(tx, run.step_name, "error", step_type=step_type, changes=changes):
        # Routing on failed (advance() failed the instance with its own event).
        tx.events.remove(failed_event)


def take(
    tx: Transition,
    step_name: str,
    on: str,
    *,
    step_type: str,
    changes: dict[str, Any] | None = None,
) -> bool:
    """Route on from ``step_name`` down its ``on`` edge (live) and every other edge (dead
    tokens, so joins do not wait for them); the step's changes merged first. Returns
    whether it went on (else ``advance`` failed the instance)."""
    tx.taking = on
    try:
        return tx.advance(step_name, step_type=step_type, changes=changes, emit_done=False)
    finally:
        tx.taking = None


# -- timeouts ---------------------------------------------------------------------


def sweep(engine: Engine, limit: int = 500) -> int:
    """Fire the due timeout edges; returns how many fired (or were tried)."""
    due = StepRun.objects.filter(
        status__in=WAITING_STATUSES,
        timeout_at__lte=Now(),
        instance__status__in=ACTIVE_INSTANCE_STATUSES,
    ).values_list("pk", "instance_id")[:limit]
    return sweeping.each(
        due,
        lambda run_id, instance_id: engine.dispatch(fire(engine, run_id, instance_id)),
        "firing the timeout of step run %s failed",
    )


def fire(engine: Engine, run_id: int, instance_id: Any) -> list[int]:
    """One timeout, in one transition: cancel the waiting work, take the timeout edge.
    Nothing happens if the run stopped waiting meanwhile (a completion won)."""

    def body(tx: Transition) -> None:
        if tx.instance.status not in ACTIVE_INSTANCE_STATUSES:
            return
        run = StepRun.objects.filter(
            pk=run_id, status__in=WAITING_STATUSES, timeout_at__lte=Now()
        ).first()
        if run is None:
            return
        edge = tx.graph.boundary(run.step_name, "timeout")
        if edge is None or edge.after is None:
            return
        StepRun.objects.filter(pk=run.pk).update(status=StepRunStatus.CANCELED, finished_at=Now())
        tasks = HumanTask.objects.filter(step_run_id=run.pk, status=TaskStatus.OPEN)
        ids = list(tasks.order_by("slot").values_list("pk", flat=True))
        tasks.filter(pk__in=ids).update(status=TaskStatus.CANCELED, close_reason=TIMED_OUT)
        for pk in ids:
            tx.event(ev.HumanTaskCanceled, step_name=run.step_name, task_id=pk, reason=TIMED_OUT)
        tx.graph.steps[run.step_name].cancel_waiting(tx, run)
        tx.leave(run.step_name)
        tx.event(
            ev.StepTimedOut,
            step_name=run.step_name,
            step_type=run.step_type,
            after_seconds=edge.after.total_seconds(),
            target=edge.target,
        )
        take(tx, run.step_name, "timeout", step_type=run.step_type)

    return transition.run(engine, instance_id, body)[1]
