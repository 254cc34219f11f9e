"""What a transition writes of a human task's own rows: its candidate groups, and its
completion (the task row and the ``HumanTaskCompleted`` event), the same for a task
alone on its step (``human``) and one of several (``nofm``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import connections, router
from django.utils import timezone

from .. import events as ev
from ..models import HumanTask, HumanTaskGroup, StepRun, StepRunStatus, TaskStatus
from .sql import concrete_field, taskdone

if TYPE_CHECKING:
    from .transition import Transition


def group_rows(task: HumanTask, names: Sequence[str]) -> list[HumanTaskGroup]:
    """The candidate-group rows of ``task``, once per name; a name longer than a group's
    can be is left out (no group can have it: nobody is let in)."""
    longest = concrete_field(HumanTaskGroup._meta, "name").max_length or 0
    return [
        HumanTaskGroup(task=task, name=name)
        for name in dict.fromkeys(names)
        if len(name) <= longest
    ]


def replace_groups(task: HumanTask, names: Sequence[str]) -> None:
    """``task``'s candidate groups become ``names`` (a reassignment, an escalation)."""
    task.candidate_groups.all().delete()
    HumanTaskGroup.objects.bulk_create(group_rows(task, names))


def record_completed(
    tx: Transition,
    task: HumanTask,
    changes: dict[str, Any],
    user_pk: Any,
    for_pk: Any,
    *,
    with_run: bool = False,
) -> datetime:
    """``task`` completed by ``user_pk`` (for ``for_pk``, a substitute's absent user) with
    ``changes``: its row saved and ``HumanTaskCompleted`` planned. ``with_run``: its step
    run completed too (a task alone on its step; one statement on PostgreSQL). Returns
    the time."""
    now = timezone.now()
    task.status = TaskStatus.COMPLETED
    task.completed_by_id = user_pk
    task.completed_on_behalf_of_id = for_pk
    task.completed_at = now
    task.result = changes
    connection = connections[router.db_for_write(HumanTask)]
    if with_run and taskdone.applies(connection):
        taskdone.write(connection, task, changes, now)
    else:
        task.save(update_fields=list(taskdone.TASK_FIELDS))
        if with_run:
            StepRun.objects.filter(pk=task.step_run_id).update(
                status=StepRunStatus.COMPLETED, changes=changes, finished_at=now
            )
    tx.event(
        ev.HumanTaskCompleted,
        step_name=task.step_name,
        task_id=task.pk,
        user_id=user_pk,
        data=changes,
        on_behalf_of_user_id=for_pk,
        waited_seconds=round(max((now - task.created_at).total_seconds(), 0.0), 3),
    )
    return now
