"""Who sees what in the API, and who may cancel or retry.

- Staff (``is_staff`` or ``is_superuser``) see every definition, instance and task.
- Other users see the instances they started or hold a task in (as its assignee,
  as a member of one of its candidate groups, as the one who claimed it or who
  completed it), and the tasks of those instances.
- Cancel and retry: staff, or the user who started the instance.
- Claiming and completing a task follow the task rule in
  ``django_workflows.permissions`` (``can_complete_task``), applied by the engine:
  the API does not write it again.

Rows a user may not see answer 404, not 403, so ids of others' rows leak nothing.
"""

from __future__ import annotations

from typing import Any

from django.db.models import OuterRef, Q, QuerySet, Subquery
from rest_framework.permissions import BasePermission

from ..models import HumanTask, WorkflowInstance
from ..permissions import first_membership, user_group_ids


def is_staff(user: Any) -> bool:
    return bool(
        user is not None
        and getattr(user, "is_authenticated", False)
        and user.is_active
        and (user.is_staff or user.is_superuser)
    )


def visible_instances(
    user: Any, queryset: QuerySet[WorkflowInstance] | None = None
) -> QuerySet[WorkflowInstance]:
    """The instances ``user`` may see: two queries (the user's groups, then the rows).

    "Holds a task" is a scalar subquery (``[:1]``), probed only for the rows a page
    walks; ``EXISTS`` under the ``OR`` would make PostgreSQL read every task each time.
    """
    instances = WorkflowInstance.objects.all() if queryset is None else queryset
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return instances.none()
    if is_staff(user):
        return instances
    tasks = HumanTask.objects.filter(instance=OuterRef("pk"))
    holds = Q(assignee=user) | Q(claimed_by=user) | Q(completed_by=user)
    group_ids = user_group_ids(user)
    if group_ids:
        tasks = tasks.alias(dwf_member=first_membership(group_ids))
        holds |= Q(dwf_member__isnull=False)
    held = Subquery(tasks.filter(holds).values("pk")[:1])
    return instances.alias(dwf_held=held).filter(Q(started_by=user) | Q(dwf_held__isnull=False))


def visible_tasks(user: Any, queryset: QuerySet[HumanTask] | None = None) -> QuerySet[HumanTask]:
    """The tasks ``user`` may see: every task of an instance they may see."""
    tasks = HumanTask.objects.all() if queryset is None else queryset
    if is_staff(user):
        return tasks
    return tasks.filter(instance__in=visible_instances(user).values("pk"))


def can_manage_instance(user: Any, instance: WorkflowInstance) -> bool:
    """Cancel and retry: staff, or the user who started the instance."""
    if is_staff(user):
        return True
    return instance.started_by_id is not None and instance.started_by_id == getattr(
        user, "pk", None
    )


class CanManageInstance(BasePermission):
    message = "Only staff and the user who started the instance may cancel or retry it."

    def has_object_permission(self, request, view, obj) -> bool:
        return can_manage_instance(request.user, obj)
