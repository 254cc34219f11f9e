"""What a transition does for ``WaitForSignal`` steps (``transition`` calls in here): on
activation, consume the oldest buffered signal of the step's name at once or wait; when
the plan is written, mark the signals it consumed; when the instance finishes, discard
the signals nobody consumed. Sending a signal is ``engine/signals.py``."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, cast

from django.db import connections, router
from django.db.models import QuerySet
from django.db.models.functions import Now
from django.utils import timezone

from .. import events as ev
from ..context import check_size
from ..exceptions import DefinitionError
from ..models import ACTIVE_INSTANCE_STATUSES, StepRun, StepRunStatus, WorkflowSignal
from ..signal_steps import WaitForSignal
from ..steps import BaseStep
from .sql import fastpath

if TYPE_CHECKING:
    from .transition import Transition


def pending(instance_id: Any) -> QuerySet[WorkflowSignal]:
    """The instance's signals neither consumed nor discarded, oldest first."""
    return WorkflowSignal.objects.filter(
        instance_id=instance_id, consumed_at__isnull=True, discarded_at__isnull=True
    ).order_by("id")


def any_pending(instance_id: Any) -> bool:
    """Whether the instance has a signal neither consumed nor discarded: ``pending()``'s
    question, its SQL built once per connection (asked as every instance finishes)."""
    connection: Any = connections[router.db_for_read(WorkflowSignal)]
    sql = getattr(connection, "_workflows_any_pending", None)
    if sql is None:
        qn, meta = connection.ops.quote_name, WorkflowSignal._meta
        sql = connection._workflows_any_pending = (
            f"SELECT 1 FROM {qn(meta.db_table)} "  # noqa: S608 - our own table and columns
            f"WHERE {qn(meta.get_field('instance').column)} = %s "
            f"AND {qn('consumed_at')} IS NULL AND {qn('discarded_at')} IS NULL LIMIT 1"
        )
    pk = WorkflowSignal._meta.get_field("instance").get_db_prep_value(instance_id, connection)
    with connection.cursor() as cursor:
        cursor.execute(sql, [pk])
        return cursor.fetchone() is not None


def activate(tx: Transition, run: StepRun, step: BaseStep) -> bool:
    """Plan the activation of a signal step (a ``WaitForSignal``): it waits (``run``
    WAITING, until ``timeout`` if set), or, when a signal of its name is buffered,
    consumes the oldest one and routes on at once (True: the caller adds nothing more).
    One signal per activation."""
    if not isinstance(step, WaitForSignal):
        raise DefinitionError(f"step {run.step_name!r} of type signal is no WaitForSignal")
    run.status = StepRunStatus.WAITING
    if step.timeout is not None:
        run.due_at = Now() + step.timeout
    if tx.instance.status not in ACTIVE_INSTANCE_STATUSES:
        return False  # a failed instance consumes nothing until it is retried
    # Signals this plan consumed already (a loop through the step): FIFO, one each.
    taken = [planned._signal.pk for planned in tx.new_runs if hasattr(planned, "_signal")]
    signal = pending(tx.instance.pk).filter(name=step.signal_name).exclude(pk__in=taken).first()
    if signal is None:
        return False
    changes = step.changes(signal.data)
    run.status = StepRunStatus.COMPLETED
    run.due_at = None
    run.started_at = run.finished_at = Now()
    run.changes = changes
    run._signal = signal  # type: ignore[attr-defined]  # written by ``write`` in close()
    tx.new_runs.append(run)
    tx.event(
        ev.SignalReceived,
        step_name=run.step_name,
        signal=signal.name,
        signal_id=signal.pk,
        consumed=True,
        idempotency_key=signal.idempotency_key or None,
    )
    tx.event(
        ev.StepExecuted,
        step_name=run.step_name,
        step_type="signal",
        status="completed",
        changes=changes,
    )
    tx.instance.context.update(changes)
    check_size(tx.instance.context)
    tx.route(run.step_name)
    return True


def write(tx: Transition) -> None:
    """After the plan's runs are inserted: mark the signals they consumed."""
    for new_run in tx.new_runs:
        signal = getattr(new_run, "_signal", None)
        if signal is not None:
            WorkflowSignal.objects.filter(pk=signal.pk).update(
                consumed_at=timezone.now(), consumed_by_step_run=new_run.pk
            )


def discard(tx: Transition) -> None:
    """The instance finished (completed, canceled): its pending signals are discarded."""
    rows = list(pending(tx.instance.pk).values_list("pk", "name"))
    if not rows:
        return
    WorkflowSignal.objects.filter(pk__in=[pk for pk, _ in rows]).update(discarded_at=timezone.now())
    for pk, name in rows:
        tx.event(ev.SignalDiscarded, signal=name, signal_id=pk)


def write_instance(
    tx: Transition,
    connection: Any,
    rows: list[tuple[str, str, Any, Any]],
    finished: bool,
    last: bool,
) -> None:
    """PostgreSQL: the instance and its history rows in one statement
    (``fastpath.write_instance``, with the COMMIT when ``last`` allows); when it
    ``finished``, the signals nobody consumed are discarded in the same statement, as
    ``discard`` does (their ``SignalDiscarded`` events after the others)."""
    template = cast(ev.SignalDiscarded, tx.make_event(ev.SignalDiscarded)) if finished else None
    found = fastpath.write_instance(
        connection,
        tx.instance,
        rows,
        commit=last and fastpath.commits_in_statement(connection),
        discard_at=template.timestamp if template is not None else None,
    )
    if template is not None:
        tx.events.extend(dataclasses.replace(template, signal=n, signal_id=pk) for pk, n in found)


def blocks_fast_path(tx: Transition) -> bool:
    """The locked plan finishes the instance with signals pending: they are discarded in
    ``close()``'s ORM path, which the fast path's one statement does not take. Unlocked
    (``tx.expect``), a signal may still come before the statement locks: checked after
    it instead (``chained.discard_left``)."""
    instance = tx.instance
    if instance.status not in ACTIVE_INSTANCE_STATUSES or instance.current_steps:
        return False
    return tx.expect is None and any_pending(instance.pk)
