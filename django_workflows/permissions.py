"""Who may complete a human task: written once, used by the engine, the admin and the API.

The assignee, a member of one of the task's candidate groups, or a superuser. A task
claimed by someone is theirs (and the superusers'). A task with neither assignee nor
candidate groups is open to staff.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Exists, OuterRef, Q, QuerySet

from .models import HumanTask, TaskStatus


def can_complete_task(task: HumanTask, user: Any, *, ignore_claim: bool = False) -> bool:
    """``ignore_claim``: whether the user could, were the task not claimed by someone."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    if user.is_superuser:
        return True
    if task.claimed_by_id is not None and not ignore_claim:
        return task.claimed_by_id == user.pk
    if task.assignee_id is not None:
        return task.assignee_id == user.pk
    group_ids = set(task.candidate_groups.values_list("pk", flat=True))
    if group_ids:
        return bool(group_ids & set(user.groups.values_list("pk", flat=True)))
    return user.is_staff


def completable_tasks(
    user: Any, queryset: QuerySet[HumanTask] | None = None
) -> QuerySet[HumanTask]:
    """The open tasks ``user`` may complete (the inbox), as one query."""
    tasks = HumanTask.objects.all() if queryset is None else queryset
    tasks = tasks.filter(status=TaskStatus.OPEN)
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return tasks.none()
    if user.is_superuser:
        return tasks
    memberships = HumanTask.candidate_groups.through.objects.filter(humantask_id=OuterRef("pk"))
    unassigned = Q(claimed_by__isnull=True, assignee__isnull=True)
    mine = (
        Q(claimed_by=user)
        | Q(claimed_by__isnull=True, assignee=user)
        | (unassigned & Q(Exists(memberships.filter(group__user=user))))
    )
    if user.is_staff:
        mine |= unassigned & ~Q(Exists(memberships))
    return tasks.filter(mine)
