"""Deadlines that act: the reminders and the escalation of open human tasks.

A human step's ``remind_every`` and ``escalate_after`` are armed when its task opens
(``Transition._plan_task`` sets ``HumanTask.remind_at`` and ``escalate_at``, on the
database clock); the sweep fires the due ones here. Each firing is one transition of
the locked instance that locks the task too and re-checks it there: two sweeps racing
fire a reminder once, and a completion at the same moment comes before (nothing fires)
or after it. Only open tasks are read, so completing or canceling a task disarms it;
reassigning it keeps both (the deadline is the task's, whoever holds it).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from django.db.models.functions import Now

from .. import events as ev
from ..models import ACTIVE_INSTANCE_STATUSES, HumanTask, TaskStatus
from ..steps import BaseHumanStep, are_group_names
from . import sweeping, taskrows, transition
from .protocol import Engine
from .transition import Transition

logger = logging.getLogger("django_workflows.engine")


def due_tasks(limit: int = 500) -> list[tuple[int, Any]]:
    """(task pk, instance id) of the open tasks whose reminder or escalation is due, in
    running instances (a failed instance's tasks wait for its retry). One query, read
    through the partial indexes ``dwf_task_remind`` and ``dwf_task_escalate`` (a UNION,
    so that each side is an index range, and a task due for both comes once)."""
    open_tasks = HumanTask.objects.filter(
        status=TaskStatus.OPEN, instance__status__in=ACTIVE_INSTANCE_STATUSES
    ).order_by()
    reminders = open_tasks.filter(remind_at__lte=Now()).values_list("pk", "instance_id")
    escalations = open_tasks.filter(escalate_at__lte=Now()).values_list("pk", "instance_id")
    return list(reminders.union(escalations)[:limit])


def sweep(engine: Engine, limit: int = 500) -> int:
    """Fire the due reminders and escalations, each in its own transition; one that fails
    is logged and the others go on. Returns how many tasks it handled."""
    return sweeping.each(
        due_tasks(limit), partial(fire, engine), "the deadline of human task %s failed"
    )


def fire(engine: Engine, task_id: int, instance_id: Any) -> None:
    """The due reminder and/or escalation of one task, if still due once locked.

    An escalation due at the same time as a reminder replaces it (the escalation groups
    hear of the task once); reminders missed while nothing swept are not sent in a
    burst: the next one is the next interval to come."""

    def body(tx: Transition) -> None:
        if tx.instance.status not in ACTIVE_INSTANCE_STATUSES:
            return
        task = (
            HumanTask.objects.select_for_update()
            .annotate(db_now=Now())
            .filter(pk=task_id, instance=tx.instance, status=TaskStatus.OPEN)
            .first()
        )
        if task is None:  # completed or canceled meanwhile: disarmed
            return
        now = task.db_now
        step = tx.graph.steps.get(task.step_name)
        changes: dict[str, Any] = {}
        escalated = False
        if task.escalate_at is not None and task.escalate_at <= now:
            changes["escalate_at"] = None  # once, whatever happens next
            escalated = isinstance(step, BaseHumanStep) and escalate(tx, task, step, now)
            if escalated:
                changes.update(assignee=None, claimed_by=None, escalated_at=now)
        if task.remind_at is not None and task.remind_at <= now:
            every = step.remind_every if isinstance(step, BaseHumanStep) else None
            if every is None:  # the step's code no longer reminds
                changes["remind_at"] = None
            else:
                passed = (now - task.remind_at) // every  # intervals missed meanwhile
                changes["remind_at"] = task.remind_at + every * (passed + 1)
                if not escalated:
                    changes["reminders_sent"] = task.reminders_sent + 1
                    tx.event(
                        ev.HumanTaskReminder,
                        step_name=task.step_name,
                        task_id=task.pk,
                        due_at=task.due_at.isoformat() if task.due_at else None,
                        reminder=task.reminders_sent + 1,
                    )
        if changes:
            HumanTask.objects.filter(pk=task.pk).update(**changes)

    transition.run(engine, instance_id, body)


def escalate(tx: Transition, task: HumanTask, step: BaseHumanStep, now: Any) -> bool:
    """Move ``task`` to the step's escalation groups (the caller clears its assignee and
    claim), with a ``HumanTaskEscalated`` event. A step that no longer escalates (its code
    changed) or an ``escalate_to`` that raises or names no group leaves the task where
    it is (logged); it is not tried again."""
    if step.escalate_after is None:
        return False
    try:
        groups = step.get_escalate_to(tx.context(task.step_name))
        if not are_group_names(groups):  # an overriding get_escalate_to is checked here
            raise ValueError(f"get_escalate_to() gave {groups!r}, not a list of group names")
        groups = list(dict.fromkeys(groups))
    except Exception:
        logger.exception(
            "human task %s (step %r) was not escalated: its escalate_to failed",
            task.pk,
            task.step_name,
        )
        return False
    before = list(task.candidate_groups.values_list("name", flat=True))
    taskrows.replace_groups(task, groups)
    tx.event(
        ev.HumanTaskEscalated,
        step_name=task.step_name,
        task_id=task.pk,
        due_at=task.due_at.isoformat() if task.due_at else None,
        from_user_id=task.assignee_id,
        from_groups=before,
        to_groups=groups,
    )
    return True
