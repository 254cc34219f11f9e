"""Who may see, cancel, retry and complete what: written once, used by the engine, the
admin, the API and the commands.

Instances
    A user sees the instances they started or hold a task in (as its assignee, as a
    member of one of its candidate groups, as the one who claimed or completed it).
    ``django_workflows.view_workflowinstance`` shows every instance, and so does the
    change permission (as in Django's admin: who may change may view).
    Cancel and retry need ``django_workflows.change_workflowinstance``; the user who
    started an instance may also cancel and retry it.
Tasks
    A user sees the tasks of the instances they see. ``view_humantask`` (and a
    permission that shows every instance, and ``complete_any_task``) shows every task.
    Completing and claiming follow the task rule: a task claimed by someone is
    theirs; else its assignee if it has one; else the members of its candidate groups,
    matched by name whenever the group is created. A task with neither assignee nor
    groups, or whose groups do not exist, is open to nobody else. A user with
    ``django_workflows.complete_any_task`` may complete any task.

Staff status grants nothing here (the admin needs it to be entered at all: that is
Django's). Superusers hold every permission (Django's ``has_perm``); inactive and
anonymous users hold none.
"""

from __future__ import annotations

from typing import Any

from django.db.models import OuterRef, Q, QuerySet, Subquery

from .models import HumanTask, HumanTaskGroup, TaskStatus, WorkflowInstance

VIEW_INSTANCES = "django_workflows.view_workflowinstance"
CHANGE_INSTANCES = "django_workflows.change_workflowinstance"
VIEW_TASKS = "django_workflows.view_humantask"
COMPLETE_ANY_TASK = "django_workflows.complete_any_task"
REASSIGN_ANY_TASK = "django_workflows.reassign_any_task"


def is_active_user(user: Any) -> bool:
    """Logged in and active: the only users any rule lets in."""
    return bool(user is not None and getattr(user, "is_authenticated", False) and user.is_active)


# -- instances ---------------------------------------------------------------------


def sees_every_instance(user: Any) -> bool:
    return is_active_user(user) and (
        user.has_perm(VIEW_INSTANCES) or user.has_perm(CHANGE_INSTANCES)
    )


def visible_instances(
    user: Any, queryset: QuerySet[WorkflowInstance] | None = None
) -> QuerySet[WorkflowInstance]:
    """The instances ``user`` may see.

    With the view permission the queryset unfiltered; else two queries (the user's group
    names, then the rows). "Holds a task" is a scalar subquery (``[:1]``), probed only
    for the rows a page walks; ``EXISTS`` under the ``OR`` would make PostgreSQL read
    every task each time.
    """
    instances = WorkflowInstance.objects.all() if queryset is None else queryset
    if not is_active_user(user):
        return instances.none()
    if sees_every_instance(user):
        return instances
    tasks = HumanTask.objects.filter(instance=OuterRef("pk"))
    holds = Q(assignee=user) | Q(claimed_by=user) | Q(completed_by=user)
    names = user_group_names(user)
    if names:
        tasks = tasks.alias(dwf_member=first_candidate_group(names))
        holds |= Q(dwf_member__isnull=False)
    held = Subquery(tasks.filter(holds).values("pk")[:1])
    return instances.alias(dwf_held=held).filter(Q(started_by=user) | Q(dwf_held__isnull=False))


def can_view_instance(user: Any, instance: WorkflowInstance) -> bool:
    """Whether ``user`` may see ``instance``: the rule of ``visible_instances``."""
    if not is_active_user(user):
        return False
    if sees_every_instance(user) or _started(user, instance):
        return True
    return visible_instances(user, WorkflowInstance.objects.filter(pk=instance.pk)).exists()


def can_manage_instance(user: Any, instance: WorkflowInstance | None = None) -> bool:
    """Whether ``user`` may cancel and retry ``instance`` (any instance, if None).

    The change permission, or having started the instance: the starter may take back
    what they started.
    """
    if not is_active_user(user):
        return False
    return user.has_perm(CHANGE_INSTANCES) or (instance is not None and _started(user, instance))


def _started(user: Any, instance: WorkflowInstance) -> bool:
    return instance.started_by_id is not None and instance.started_by_id == user.pk


# -- tasks -------------------------------------------------------------------------


def sees_every_task(user: Any) -> bool:
    return sees_every_instance(user) or (
        is_active_user(user) and (user.has_perm(VIEW_TASKS) or user.has_perm(COMPLETE_ANY_TASK))
    )


def visible_tasks(user: Any, queryset: QuerySet[HumanTask] | None = None) -> QuerySet[HumanTask]:
    """The tasks ``user`` may see: every task of an instance they may see."""
    tasks = HumanTask.objects.all() if queryset is None else queryset
    if not is_active_user(user):
        return tasks.none()
    if sees_every_task(user):
        return tasks
    return tasks.filter(instance__in=visible_instances(user).values("pk"))


def can_view_task(user: Any, task: HumanTask) -> bool:
    """Whether ``user`` may see ``task``: the rule of ``visible_tasks``."""
    if not is_active_user(user):
        return False
    return sees_every_task(user) or can_view_instance(user, task.instance)


def can_complete_task(task: HumanTask, user: Any, *, ignore_claim: bool = False) -> bool:
    """Whether ``user`` may complete (or claim) ``task``: the task rule.

    ``ignore_claim``: whether the user could, were the task not claimed by someone.
    """
    if not is_active_user(user):
        return False
    if user.has_perm(COMPLETE_ANY_TASK):
        return True
    if task.claimed_by_id is not None and not ignore_claim:
        return task.claimed_by_id == user.pk
    if task.assignee_id is not None:
        return task.assignee_id == user.pk
    # Names, so a group created after the task counts and a missing one lets nobody in.
    names = {group.name for group in task.candidate_groups.all()}
    return bool(names) and bool(names & set(user_group_names(user)))


def can_reassign_task(task: HumanTask, user: Any) -> bool:
    """Whether ``user`` may hand ``task`` to someone else: its assignee, the user who
    claimed it, or a holder of ``reassign_any_task`` (superusers)."""
    if not is_active_user(user):
        return False
    if user.has_perm(REASSIGN_ANY_TASK):
        return True
    return user.pk is not None and user.pk in (task.assignee_id, task.claimed_by_id)


def completable_tasks(
    user: Any, queryset: QuerySet[HumanTask] | None = None
) -> QuerySet[HumanTask]:
    """The open tasks ``user`` may complete (the inbox): the SQL form of ``can_complete_task``.

    Two queries: the user's group names, then the tasks (plus, once per user object,
    Django's permission cache). The group test is a scalar subquery (``[:1]``) on the
    unique (task, name) index, not ``EXISTS`` under an ``OR``, which PostgreSQL would
    hash by reading every candidate group on each call; a scalar subquery is probed only
    for the rows a page walks, so a page of 50 stays fast at any number of tasks.
    """
    tasks = HumanTask.objects.all() if queryset is None else queryset
    tasks = tasks.filter(status=TaskStatus.OPEN)
    if not is_active_user(user):
        return tasks.none()
    if user.has_perm(COMPLETE_ANY_TASK):
        return tasks
    mine = Q(claimed_by=user) | Q(claimed_by__isnull=True, assignee=user)
    names = user_group_names(user)
    if names:
        tasks = tasks.alias(dwf_member=first_candidate_group(names))
        mine |= Q(claimed_by__isnull=True, assignee__isnull=True, dwf_member__isnull=False)
    return tasks.filter(mine)


def user_group_names(user: Any) -> list[str]:
    """The names of ``user``'s groups, read once so the task filters need no join."""
    return list(user.groups.values_list("name", flat=True))


def first_candidate_group(names: list[str]) -> Subquery:
    """A candidate group of the outer task with one of ``names``, or NULL."""
    rows = HumanTaskGroup.objects.filter(task_id=OuterRef("pk"), name__in=names)
    return Subquery(rows.values("pk")[:1])
