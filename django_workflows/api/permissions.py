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

from django.db.models import Exists, OuterRef, Q, QuerySet
from rest_framework.permissions import BasePermission

from ..models import HumanTask, WorkflowInstance


def is_staff(user: Any) -> bool:
    return bool(
        user is not None
        and getattr(user, "is_authenticated", False)
        and user.is_active
        and (user.is_staff or user.is_superuser)
    )


def _involves(user: Any) -> Q:
    """Tasks ``user`` holds: assigned, claimed or completed by them, or in their groups."""
    memberships = HumanTask.candidate_groups.through.objects.filter(
        humantask_id=OuterRef("pk"), group__user=user
    )
    return Q(assignee=user) | Q(claimed_by=user) | Q(completed_by=user) | Q(Exists(memberships))


def visible_instances(
    user: Any, queryset: QuerySet[WorkflowInstance] | None = None
) -> QuerySet[WorkflowInstance]:
    """The instances ``user`` may see, as one query."""
    instances = WorkflowInstance.objects.all() if queryset is None else queryset
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return instances.none()
    if is_staff(user):
        return instances
    held = HumanTask.objects.filter(_involves(user), instance=OuterRef("pk"))
    return instances.filter(Q(started_by=user) | Q(Exists(held)))


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
