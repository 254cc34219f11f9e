"""External signals: ``send`` (``BaseExecutionEngine.send_signal``) and what the sweep
does for them (a wait's ``timeout``; signals left over by a finished instance).

Sending is one transition of the locked instance: the signal is stored (an
``idempotency_key`` seen before returns the stored signal instead: a no-op) and, if a
run of a ``WaitForSignal`` step of its name waits, consumed by the oldest such run,
which completes and routes on. Otherwise it is buffered until a wait for it starts
(``signalwait.activate``). Senders serialize on the instance's row lock, so two
concurrent sends of one key store one signal, and two signals racing one wait are
consumed one by it, the other buffered.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError
from django.db.models.functions import Now
from django.utils import timezone

from .. import events as ev
from ..context import check_json, check_size
from ..exceptions import ContextError, InstanceNotFound, SignalNotFound, StateConflict
from ..models import (
    ACTIVE_INSTANCE_STATUSES,
    StepRun,
    StepRunStatus,
    StepTypeChoices,
    WorkflowInstance,
    WorkflowSignal,
    WorkflowStatus,
)
from ..permissions import can_send_signal
from ..signal_steps import WaitForSignal
from . import runs, sweeping, transition
from .protocol import Engine
from .transition import Transition
from .users import acting_user, checked_pk


def clean(
    name: Any, data: Any, instance_id: Any, business_key: Any, idempotency_key: Any
) -> dict[str, Any]:
    """The arguments checked: a ``ValidationError`` naming each bad one."""
    errors: dict[str, list[str]] = {}
    if not isinstance(name, str) or not 1 <= len(name) <= 200:
        errors["name"] = ["a signal name of 1 to 200 characters"]
    if data is None:
        data = {}
    if not isinstance(data, dict):
        errors["data"] = ["must be a JSON object"]
    else:
        # Checked here, not when a wait consumes it: a signal that could never be
        # merged (NUL, NaN, too big) would fail the instance, or PostgreSQL the send.
        try:
            for key, value in data.items():
                if not isinstance(key, str):
                    raise ContextError(f"keys must be strings, not {type(key).__name__}")
                check_json(key, value)
            check_size(data, "the signal's data")
        except ContextError as exc:
            errors["data"] = [str(exc)]
    if (instance_id is None) == (business_key is None):
        errors["instance_id"] = ["give exactly one of instance_id and business_key"]
    elif business_key is not None and (not isinstance(business_key, str) or not business_key):
        errors["business_key"] = ["must be a non-empty string"]
    if idempotency_key is not None and (
        not isinstance(idempotency_key, str) or not 1 <= len(idempotency_key) <= 255
    ):
        errors["idempotency_key"] = ["must be 1 to 255 characters"]
    if errors:
        raise ValidationError(errors)
    return data


def target(
    instance_id: Any, business_key: str | None, name: str = "", idempotency_key: str | None = None
) -> Any:
    """The instance's id: given, or that of the one active instance with ``business_key``
    (or, for a replay of ``idempotency_key``, the finished one that took it)."""
    if business_key is None:
        return instance_id
    ids = list(
        WorkflowInstance.objects.filter(
            business_key=business_key, status__in=ACTIVE_INSTANCE_STATUSES
        ).values_list("pk", flat=True)[:2]
    )
    if not ids and idempotency_key is not None:
        # A webhook redelivered after the instance finished: the stored signal answers it.
        ids = list(
            WorkflowSignal.objects.filter(
                instance__business_key=business_key, name=name, idempotency_key=idempotency_key
            )
            .order_by("-id")
            .values_list("instance_id", flat=True)[:1]
        )
    if not ids:
        raise InstanceNotFound(f"no active workflow instance with business key {business_key!r}")
    if len(ids) > 1:
        raise StateConflict(
            f"several active instances have business key {business_key!r}: give instance_id"
        )
    return ids[0]


def send(
    engine: Engine,
    name: str,
    data: dict[str, Any] | None = None,
    *,
    instance_id: Any = None,
    business_key: str | None = None,
    idempotency_key: str | None = None,
    sent_by: Any = None,
) -> tuple[WorkflowSignal, bool]:
    """``BaseExecutionEngine.send_signal``: the signal, and whether it is new."""
    data = clean(name, data, instance_id, business_key, idempotency_key)
    sender = checked_pk(sent_by)
    found: list[tuple[WorkflowSignal, bool]] = []

    def body(tx: Transition) -> None:
        instance = tx.instance
        if idempotency_key is not None:
            earlier = replayed(instance.pk, name, idempotency_key)
            if earlier is not None:  # a concurrent send of the key committed first
                found.append((earlier, False))
                return
        if instance.status not in ACTIVE_INSTANCE_STATUSES:
            hint = "; retry it first" if instance.status == WorkflowStatus.FAILED else ""
            raise StateConflict(f"instance {instance.pk} is {instance.status}{hint}")
        signal = WorkflowSignal.objects.create(
            instance=instance,
            name=name,
            data=data,
            idempotency_key=idempotency_key or "",
            sent_by_id=sender,
        )
        found.append((signal, True))
        waiting = waiting_run(tx, name)
        tx.event(
            ev.SignalReceived,
            step_name=waiting.step_name if waiting else "",
            signal=name,
            signal_id=signal.pk,
            consumed=waiting is not None,
            idempotency_key=idempotency_key,
        )
        if waiting is not None:
            consume(tx, waiting, signal)

    target_id = target(instance_id, business_key, name, idempotency_key)
    if idempotency_key is not None:  # a replay, even to a finished instance: no-op
        earlier = replayed(target_id, name, idempotency_key)
        if earlier is not None:
            return earlier, False
    try:
        _, runnable, claimed = transition.run(
            engine,
            target_id,
            body,
            needs_definition=None,
            claim_next=engine.executes_inline(),
        )
    except IntegrityError:
        # The unique key's backstop (senders serialize on the instance lock first).
        earlier = replayed(target_id, name, idempotency_key)
        if earlier is None:
            raise
        return earlier, False
    runs.go_on(engine, runnable, claimed)
    signal, created = found[0]
    signal.refresh_from_db()
    return signal, created


def discard(engine: Engine, signal_id: Any, *, by: Any, reason: str = "") -> WorkflowSignal:
    """``BaseExecutionEngine.discard_signal``: a pending signal marked discarded by hand."""
    actor = acting_user(by)
    if len(reason) > 1000:
        raise ValidationError({"reason": ["at most 1000 characters"]})
    try:
        signal = WorkflowSignal.objects.get(pk=signal_id)
    except (WorkflowSignal.DoesNotExist, ValidationError, ValueError, TypeError):
        raise SignalNotFound(f"no signal with id {signal_id!r}") from None

    def body(tx: Transition) -> None:
        row = WorkflowSignal.objects.select_for_update().get(pk=signal.pk)
        if not can_send_signal(actor, tx.instance):
            raise PermissionDenied(f"you may not discard signal {row.pk} ({row.name})")
        if row.consumed_at is not None or row.discarded_at is not None:
            raise StateConflict(f"signal {row.pk} is {row.state}: only a pending one is discarded")
        row.discarded_at = timezone.now()
        row.save(update_fields=["discarded_at"])
        tx.event(
            ev.SignalDiscarded, signal=row.name, signal_id=row.pk, user_id=actor.pk, reason=reason
        )

    transition.run(engine, signal.instance_id, body, needs_definition=False)
    signal.refresh_from_db()
    return signal


def replayed(instance_id: Any, name: str, key: str | None) -> WorkflowSignal | None:
    """The signal stored earlier with ``key``, if any."""
    if key is None:
        return None
    try:
        return WorkflowSignal.objects.filter(
            instance_id=instance_id, name=name, idempotency_key=key
        ).first()
    except (ValidationError, ValueError, TypeError):  # a malformed instance id
        raise InstanceNotFound(f"no workflow instance with id {instance_id!r}") from None


def waiting_run(tx: Transition, name: str) -> StepRun | None:
    """The oldest run waiting for a signal ``name``, if the instance may go on now."""
    if tx.definition is None or tx.instance.status not in ACTIVE_INSTANCE_STATUSES:
        return None
    runs_ = StepRun.objects.filter(
        instance=tx.instance, step_type=StepTypeChoices.SIGNAL, status=StepRunStatus.WAITING
    ).order_by("id")
    for candidate in runs_:
        step = tx.definition.steps.get(candidate.step_name)
        if isinstance(step, WaitForSignal) and step.signal_name == name:
            return candidate
    return None


def consume(tx: Transition, run: StepRun, signal: WorkflowSignal) -> None:
    """``run`` takes ``signal``: it completes with the signal's data and routes on. If
    routing on fails (the instance fails), the signal stays pending for the retry."""
    step = tx.graph.steps[run.step_name]
    if not isinstance(step, WaitForSignal):  # waiting_run picked it as one
        raise StateConflict(f"step {run.step_name!r} is no longer a signal step")
    changes = step.changes(signal.data)
    StepRun.objects.filter(pk=run.pk).update(
        status=StepRunStatus.COMPLETED, changes=changes, finished_at=Now(), due_at=None
    )
    # Marked before routing on: a wait for the same name that routing starts must not
    # take this signal again.
    taken = WorkflowSignal.objects.filter(pk=signal.pk)
    taken.update(consumed_at=timezone.now(), consumed_by_step_run=run)
    tx.leave(run.step_name)
    if not tx.advance(run.step_name, run_pk=run.pk, step_type="signal", changes=changes):
        taken.update(consumed_at=None, consumed_by_step_run=None)


# -- the sweep ---------------------------------------------------------------------


def sweep(engine: Engine, limit: int = 500) -> int:
    """Fail the signal waits past their ``timeout``. Returns the runs handled."""
    due = StepRun.objects.filter(
        step_type=StepTypeChoices.SIGNAL,
        status=StepRunStatus.WAITING,
        due_at__lte=Now(),
        instance__status__in=ACTIVE_INSTANCE_STATUSES,
    ).values_list("pk", "instance_id")[:limit]
    return sweeping.each(due, partial(time_out, engine), "timing out signal wait %s failed")


def time_out(engine: Engine, run_id: int, instance_id: Any) -> None:
    """No signal came within the step's ``timeout``: the step and the instance fail."""

    def body(tx: Transition) -> None:
        if tx.instance.status not in ACTIVE_INSTANCE_STATUSES:
            return
        run = StepRun.objects.filter(
            pk=run_id, status=StepRunStatus.WAITING, due_at__lte=Now()
        ).first()
        if run is None:
            return  # a signal came first
        step = tx.graph.steps.get(run.step_name)
        name = step.signal_name if isinstance(step, WaitForSignal) else "?"
        error = f"no signal {name!r} came within the step's timeout"
        StepRun.objects.filter(pk=run_id).update(
            status=StepRunStatus.FAILED, finished_at=Now(), error=error
        )
        tx.leave(run.step_name)
        tx.event(
            ev.StepExecuted,
            step_name=run.step_name,
            step_type="signal",
            status="failed",
            error=error,
        )
        tx.fail_instance(run.step_name, error, "")

    transition.run(engine, instance_id, body)
