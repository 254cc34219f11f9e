"""Who may complete a human task: written once, used by the engine, the admin and the API.

The assignee, a member of one of the task's candidate groups, or a superuser. A task
claimed by someone is theirs (and the superusers'). A task with neither assignee nor
candidate groups is open to staff.
"""

from __future__ import annotations

from typing import Any

from django.db.models import OuterRef, Q, QuerySet, Subquery

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
    """The open tasks ``user`` may complete (the inbox).

    Two queries: the user's group ids, then the tasks. The group tests are scalar
    subqueries (``[:1]``), not ``EXISTS`` under an ``OR``, which PostgreSQL would hash by
    reading every membership on each call; a scalar subquery is probed only for the rows
    a page walks, so a page of 50 stays fast at any number of tasks.
    """
    tasks = HumanTask.objects.all() if queryset is None else queryset
    tasks = tasks.filter(status=TaskStatus.OPEN)
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return tasks.none()
    if user.is_superuser:
        return tasks
    unassigned = Q(claimed_by__isnull=True, assignee__isnull=True)
    mine = Q(claimed_by=user) | Q(claimed_by__isnull=True, assignee=user)
    group_ids = user_group_ids(user)
    if group_ids:
        tasks = tasks.alias(dwf_member=first_membership(group_ids))
        mine |= unassigned & Q(dwf_member__isnull=False)
    if user.is_staff:
        tasks = tasks.alias(dwf_any_group=first_membership())
        mine |= unassigned & Q(dwf_any_group__isnull=True)
    return tasks.filter(mine)


def user_group_ids(user: Any) -> list[Any]:
    """The ids of ``user``'s groups, read once so the task filters need no join."""
    return list(user.groups.values_list("pk", flat=True))


def first_membership(group_ids: list[Any] | None = None) -> Subquery:
    """A candidate-group row of the outer task (in ``group_ids`` if given), or NULL."""
    rows = HumanTask.candidate_groups.through.objects.filter(humantask_id=OuterRef("pk"))
    if group_ids is not None:
        rows = rows.filter(group_id__in=group_ids)
    return Subquery(rows.values("pk")[:1])
