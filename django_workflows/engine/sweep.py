"""The sweep: everything that happens because time passed, in one ``sweep()``.

It fires due timers and the deadlines of human tasks (``deadlines``), recovers runs
whose lease expired (their worker died: a crash, re-run up to ``CRASH_LIMIT`` times),
and sends due retries and runs queued too long (a lost message). Each run (and task)
is handled in its own transition; one that fails is logged and the sweep goes on.
``qcluster`` runs it by itself (``sweeper``); otherwise ``manage.py workflow_sweep``.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Now

from ..conf import workflow_settings
from ..exceptions import StepCrashed
from ..models import ACTIVE_INSTANCE_STATUSES, StepRun, StepRunStatus, WorkflowStatus
from . import boundary, deadlines, retention, subflow_join, sweeping, transition
from .leases import fenced
from .protocol import Engine
from .transition import Transition

logger = logging.getLogger("django_workflows.engine")


def sweep(engine: Engine, limit: int = 500) -> int:
    """The sweep: fire due timers and the due reminders and escalations of human tasks,
    recover runs whose lease expired, send due retries and runs queued for longer than
    ``STALE_QUEUED_SECONDS``; with ``RETENTION`` set, purge one batch of old finished
    instances (not counted in the result).

    ``qcluster`` runs it by itself; otherwise ``manage.py workflow_sweep`` (cron,
    a loop, tests). Returns how many runs and tasks it handled.
    """
    due_timers = StepRun.objects.filter(
        status=StepRunStatus.SCHEDULED,
        due_at__lte=Now(),
        instance__status__in=ACTIVE_INSTANCE_STATUSES,
    ).values_list("pk", "instance_id")[:limit]
    handled = sweeping.each(
        due_timers,
        lambda run_id, instance_id: engine.dispatch(fire_timer(engine, run_id, instance_id)),
        "firing timer run %s failed",
    )
    handled += deadlines.sweep(engine, limit)  # human tasks' reminders and escalations
    handled += boundary.sweep(engine, limit)  # timeout edges
    handled += recover_expired_leases(engine, limit)
    # Sub-workflow steps whose children all finished but whose join was lost (a crash
    # between the child's commit and its parent's join): joining twice is harmless.
    joinable = subflow_join.joinable(limit)
    engine.dispatch(joinable)
    handled += len(joinable)
    # Due retries, and runs committed but never sent (a lost message, a crash after
    # commit): sending one twice is harmless, the claim takes it once.
    stale = Now() - timedelta(seconds=workflow_settings.STALE_QUEUED_SECONDS)
    due = list(
        StepRun.objects.filter(
            Q(due_at__lte=Now()) | Q(due_at__isnull=True, queued_at__lte=stale),
            status=StepRunStatus.QUEUED,
            instance__status=WorkflowStatus.RUNNING,
        ).values_list("pk", flat=True)[:limit]
    )
    if due:
        # Sent now: not stale again (nor sent again) for another STALE_QUEUED_SECONDS.
        StepRun.objects.filter(pk__in=due, status=StepRunStatus.QUEUED).update(
            queued_at=Now(), due_at=None
        )
    engine.dispatch(due)
    if workflow_settings.RETENTION is not None:  # one bounded batch of old history
        try:
            retention.sweep()
        except Exception:
            logger.exception("purging finished instances (RETENTION) failed")
    return handled + len(due)


def fire_timer(engine: Engine, run_id: int, instance_id: Any) -> list[int]:
    def body(tx: Transition) -> None:
        if tx.instance.status not in ACTIVE_INSTANCE_STATUSES:
            return  # a failed instance's timer waits for its retry
        fired = StepRun.objects.filter(
            pk=run_id, status=StepRunStatus.SCHEDULED, due_at__lte=Now()
        ).update(status=StepRunStatus.COMPLETED, started_at=Now(), finished_at=Now())
        if fired != 1:
            return
        step_name = StepRun.objects.values_list("step_name", flat=True).get(pk=run_id)
        tx.leave(step_name)
        tx.advance(step_name, run_pk=run_id, step_type="timer")

    return transition.run(engine, instance_id, body)[1]


def recover_expired_leases(engine: Engine, limit: int = 500) -> int:
    """Re-queue runs whose worker stopped answering; fail those that crashed their
    worker more than ``CRASH_LIMIT`` times."""
    expired = StepRun.objects.filter(
        status=StepRunStatus.RUNNING, lease_expires_at__lt=Now()
    ).values_list("pk", "instance_id")[:limit]
    return sweeping.each(
        expired,
        lambda run_id, instance_id: engine.dispatch(recover(engine, run_id, instance_id)),
        "recovering step run %s failed",
    )


def recover(engine: Engine, run_id: int, instance_id: Any) -> list[int]:
    def body(tx: Transition) -> None:
        run = StepRun.objects.filter(
            pk=run_id, status=StepRunStatus.RUNNING, lease_expires_at__lt=Now()
        ).first()
        if run is None:
            return
        # Re-checked in the update: a heartbeat may have renewed the lease meanwhile.
        runs = fenced(run_id, run.lease_token).filter(lease_expires_at__lt=Now())
        # A crash (the worker died: a deploy, the OOM killer) is not the step's
        # failure: the step runs again, up to CRASH_LIMIT times, whatever its policy.
        crashes = run.crashes + 1
        limit = workflow_settings.CRASH_LIMIT
        if crashes <= limit:
            if not runs.update(
                status=StepRunStatus.QUEUED,
                queued_at=Now(),
                lease_token=None,
                crashes=crashes,
            ):
                return
            tx.runnable.append(run_id)
            status = "retrying"
            error = "lease expired"
        else:
            error = (
                f"step {run.step_name!r} keeps killing its worker: the worker running it "
                f"died {crashes} times before it finished (lease expired; CRASH_LIMIT is "
                f"{limit})"
            )
            if not runs.update(
                status=StepRunStatus.FAILED,
                lease_token=None,
                finished_at=Now(),
                error=error,
                crashes=crashes,
            ):
                return
            tx.leave(run.step_name)
            status = "failed"
        if status == "failed":
            # The crash limit is failing for good: on_failure (here, in the sweep), then
            # an error edge or the instance fails.
            crashed = StepCrashed(error)
            step = tx.definition.steps.get(run.step_name) if tx.definition else None
            changes = boundary.on_failure(step, tx.context(run.step_name), crashed) if step else {}
            boundary.failed(tx, run, error, "", error=crashed, hook_changes=changes)
        else:
            tx.attempt_ended(run, status, error)
        text = error if status == "failed" else f"re-queued (re-run {crashes} of {limit})"
        transaction.on_commit(
            lambda: logger.warning(
                "the worker running step %r of instance %s died (lease expired): %s",
                run.step_name,
                instance_id,
                text,
            )
        )

    return transition.run(engine, instance_id, body, needs_definition=None)[1]
